//! The online store, against every implementation (redb and sled
//! embedded, a real redis-server): materialization agrees with point-in-time retrieval,
//! statuses, key coercion, no regressions, and Redis outages.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, StringArray,
    TimestampNanosecondArray, TimestampSecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, TimeDelta, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use wafer::codec::Value;
use wafer::example::{self, ExampleOptions};
use wafer::online::{EntityRows, FieldStatus};
use wafer::{FeatureRequest, FeatureStore, NoProgress};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sled,
    Redb,
    Redis,
    RedisCluster,
}

/// Points the project at the backend; the Redis server (or cluster) lives
/// as long as the returned guard.
fn use_backend(dir: &Path, backend: Backend) -> Option<Box<dyn std::any::Any>> {
    let config = std::fs::read_to_string(dir.join("wafer.yaml")).unwrap();
    // Whatever store an earlier call chose goes first.
    let base: String = config
        .replace("online_store:\n  type: redb\n", "")
        .lines()
        .filter(|line| !line.starts_with("online_store:"))
        .map(|line| format!("{line}\n"))
        .collect();
    let (config, server) = match backend {
        Backend::Sled => (format!("{base}online_store: {{type: sled}}\n"), None),
        Backend::Redb => (format!("{base}online_store: {{type: redb}}\n"), None),
        Backend::Redis => {
            let server = common::RedisServer::start();
            // A killed run's claim on its views lapses after 1 s.
            let config = format!(
                "{base}online_store: {{type: redis, url: \"{}\", claim_ttl_ms: 1000}}\n",
                server.url()
            );
            (config, Some(Box::new(server) as Box<dyn std::any::Any>))
        }
        Backend::RedisCluster => {
            let cluster = common::redis_cluster::RedisCluster::start(3);
            let config = format!(
                "{base}online_store: {{type: redis, cluster: {}, claim_ttl_ms: 1000}}\n",
                cluster.yaml_nodes()
            );
            (config, Some(Box::new(cluster) as Box<dyn std::any::Any>))
        }
    };
    std::fs::write(dir.join("wafer.yaml"), config).unwrap();
    server
}

fn rows(columns: Vec<(&str, Vec<serde_json::Value>)>) -> EntityRows {
    EntityRows {
        columns: columns
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect(),
    }
}

/// Materialize the example as of a random END, then every driver's online
/// lookup (as of END) equals a point-in-time retrieval at END.
fn parity(backend: Backend, seed: u64) -> usize {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let hours = rng.random_range(5..40);
    let end_of_data = DateTime::parse_from_rfc3339("2024-03-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let options = ExampleOptions {
        drivers: rng.random_range(20..300),
        hours,
        entity_rows: 10,
        seed,
        end: end_of_data,
    };
    example::scaffold(dir, &options, true).unwrap();
    let source = roughen(&dir.join(example::STATS_FILE), &mut rng);
    let _redis = use_backend(dir, backend);
    let store = FeatureStore::open(dir).unwrap();
    store.apply().unwrap();
    // END anywhere from before the data to a day and a half after it, at any second.
    let end = match seed % 3 {
        // Exactly at the TTL edge of the last rows (still fresh), and just past it.
        0 => end_of_data + TimeDelta::days(1),
        1 => end_of_data + TimeDelta::days(1) + TimeDelta::seconds(1),
        _ => {
            end_of_data - TimeDelta::hours(i64::from(hours))
                + TimeDelta::seconds(rng.random_range(0..(i64::from(hours) + 36) * 3600))
        }
    };
    store
        .materialize(end - TimeDelta::days(30), end, None, &NoProgress)
        .unwrap();

    let drivers: Vec<i64> = (example::FIRST_DRIVER_ID - 3
        ..example::FIRST_DRIVER_ID + i64::from(options.drivers) + 3)
        .collect();
    // The historical side: every driver at END.
    let entity_file = dir.join("at_end.parquet");
    let schema = Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Second, None),
            false,
        ),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(drivers.clone())),
        Arc::new(TimestampSecondArray::from(vec![
            end.timestamp();
            drivers.len()
        ])),
    ];
    common::write_parquet(
        &entity_file,
        &RecordBatch::try_new(Arc::new(schema), columns).unwrap(),
    );
    let request = FeatureRequest::Service("driver_activity".into());
    let output = dir.join("historical.parquet");
    store
        .get_historical_features(&entity_file, &request, false, &output)
        .unwrap();
    let historical = common::read_parquet(&output);

    let lookup = store
        .get_online_features_at(
            &request,
            false,
            &rows(vec![(
                "driver_id",
                drivers.iter().map(|d| json!(d)).collect(),
            )]),
            end,
        )
        .unwrap();
    assert_eq!(
        lookup.feature_names,
        ["driver_id", "conv_rate", "acc_rate", "avg_daily_trips"]
    );
    let conv = historical
        .column_by_name("conv_rate")
        .unwrap()
        .as_any()
        .downcast_ref::<Float32Array>()
        .unwrap()
        .clone();
    let acc = historical
        .column_by_name("acc_rate")
        .unwrap()
        .as_any()
        .downcast_ref::<Float32Array>()
        .unwrap()
        .clone();
    let trips = historical
        .column_by_name("avg_daily_trips")
        .unwrap()
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .clone();
    let end_ns = end.timestamp_nanos_opt().unwrap();
    let mut present = 0;
    for (row, driver) in drivers.iter().enumerate() {
        let context = format!("{backend:?} seed {seed}, driver {driver}, end {end}");
        assert_eq!(lookup.results[0].values[row], Value::Int64(*driver));
        let expect_f32 = |a: &Float32Array| {
            if a.is_valid(row) {
                Value::Float32(a.value(row))
            } else {
                Value::Null
            }
        };
        assert_eq!(
            lookup.results[1].values[row],
            expect_f32(&conv),
            "{context}: conv_rate"
        );
        assert_eq!(
            lookup.results[2].values[row],
            expect_f32(&acc),
            "{context}: acc_rate"
        );
        let expected_trips = if trips.is_valid(row) {
            Value::Int64(trips.value(row))
        } else {
            Value::Null
        };
        assert_eq!(
            lookup.results[3].values[row], expected_trips,
            "{context}: trips"
        );
        // Both sides against a plain reference: the newest row at or
        // before END (event time, then created time), within the 1-day TTL.
        let newest = source
            .iter()
            .filter(|r| r.driver == *driver && r.event <= end_ns)
            .max_by_key(|r| (r.event, r.created));
        let expected: [(Value, FieldStatus); 3] = match newest {
            None => std::array::from_fn(|_| (Value::Null, FieldStatus::NotFound)),
            Some(r) if r.event < end_ns - DAY_NS => {
                std::array::from_fn(|_| (Value::Null, FieldStatus::OutsideMaxAge))
            }
            Some(r) => {
                let at = |v: Value| {
                    let status = if v == Value::Null {
                        FieldStatus::NullValue
                    } else {
                        FieldStatus::Present
                    };
                    (v, status)
                };
                [
                    at(r.conv.map_or(Value::Null, Value::Float32)),
                    at(r.acc.map_or(Value::Null, Value::Float32)),
                    at(r.trips.map_or(Value::Null, Value::Int64)),
                ]
            }
        };
        for (f, (value, status)) in expected.iter().enumerate() {
            let result = &lookup.results[f + 1];
            assert_eq!(
                (&result.values[row], result.statuses[row]),
                (value, *status),
                "{context}: {} against the reference",
                lookup.feature_names[f + 1]
            );
            present += usize::from(*status == FieldStatus::Present);
        }
    }
    // Unless END lies past every row's TTL, values were compared, not only
    // nulls.
    if end <= end_of_data + TimeDelta::days(1) && end >= end_of_data {
        assert!(present > 0, "{backend:?} seed {seed}: no value present");
    }
    present
}

const DAY_NS: i64 = 86_400_000_000_000;

/// One row of the example's source, as the reference reads it.
#[derive(Clone, Debug)]
struct StatsRow {
    driver: i64,
    event: i64,
    created: i64,
    conv: Option<f32>,
    acc: Option<f32>,
    trips: Option<i64>,
}

/// Rewrites the example's source with what real data has and the example
/// lacks: null values, and rows of the same driver and event time that
/// differ in created time (newer or older, never equal), with other
/// values. Returns the rows written.
fn roughen(path: &Path, rng: &mut ChaCha8Rng) -> Vec<StatsRow> {
    let batch = common::read_parquet(path);
    let column = |name: &str| batch.column_by_name(name).unwrap().clone();
    let ids = column("driver_id");
    let ids = ids.as_any().downcast_ref::<Int64Array>().unwrap();
    let times = |name: &str| {
        let c = column(name);
        let c = c
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .unwrap()
            .clone();
        c
    };
    let (events, created) = (times("event_timestamp"), times("created"));
    let mut rows = Vec::new();
    let maybe = |rng: &mut ChaCha8Rng, p: f64| !rng.random_bool(p);
    for i in 0..batch.num_rows() {
        let row = StatsRow {
            driver: ids.value(i),
            event: events.value(i),
            created: created.value(i),
            conv: maybe(rng, 0.1).then(|| rng.random::<f32>()),
            acc: maybe(rng, 0.05).then(|| rng.random::<f32>()),
            trips: maybe(rng, 0.05).then(|| rng.random_range(0..1000)),
        };
        if rng.random_bool(0.2) {
            let shift = rng.random_range(1..600) * 1_000_000_000 * [-1, 1][rng.random_range(0..2)];
            rows.push(StatsRow {
                created: row.created + shift,
                conv: maybe(rng, 0.3).then(|| rng.random::<f32>()),
                acc: Some(rng.random::<f32>()),
                trips: Some(rng.random_range(1000..2000)),
                ..row.clone()
            });
        }
        rows.push(row);
    }
    let ts = |values: Vec<i64>| -> ArrayRef {
        Arc::new(TimestampNanosecondArray::from(values).with_timezone("UTC"))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.driver))),
        ts(rows.iter().map(|r| r.event).collect()),
        ts(rows.iter().map(|r| r.created).collect()),
        Arc::new(Float32Array::from_iter(rows.iter().map(|r| r.conv))),
        Arc::new(Float32Array::from_iter(rows.iter().map(|r| r.acc))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.trips))),
    ];
    let schema = Arc::new(Schema::new(
        batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    common::write_parquet(path, &RecordBatch::try_new(schema, columns).unwrap());
    rows
}

#[test]
fn sled_lookups_agree_with_historical_retrieval() {
    let present: usize = common::seeds(0, 8)
        .map(|seed| parity(Backend::Sled, seed))
        .sum();
    assert!(present > 1000, "{present}");
}

#[test]
fn redb_lookups_agree_with_historical_retrieval() {
    let present: usize = common::seeds(200, 6)
        .map(|seed| parity(Backend::Redb, seed))
        .sum();
    assert!(present > 1000, "{present}");
}

#[test]
fn redis_lookups_agree_with_historical_retrieval() {
    let present: usize = common::seeds(100, 6)
        .map(|seed| parity(Backend::Redis, seed))
        .sum();
    assert!(present > 1000, "{present}");
}

#[test]
fn redis_cluster_lookups_agree_with_historical_retrieval() {
    let present: usize = (300..304)
        .map(|seed| parity(Backend::RedisCluster, seed))
        .sum();
    assert!(present > 500, "{present}");
}

const STATUS_DEFINITIONS: &str = "
entities:
  - name: user
    join_keys: [{name: user_id, type: int32}]
sources:
  - name: s
    path: s.parquet
    timestamp_field: ts
feature_views:
  - name: fresh
    entities: [user]
    source: s
    ttl: 1h
    features: [{name: score, type: float64}, {name: tag, type: string}]
  - name: forever
    entities: [user]
    source: s
    ttl: 0
    features: [{name: level, type: int32}]
";

/// Users 1 (recent, null tag), 2 (two hours old), 3 (recent); as of BASE.
fn status_project(
    backend: Backend,
) -> (
    tempfile::TempDir,
    Option<Box<dyn std::any::Any>>,
    DateTime<Utc>,
) {
    let project = common::project(STATUS_DEFINITIONS);
    let now = DateTime::parse_from_rfc3339("2024-01-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let t = now.timestamp();
    let schema = Schema::new(vec![
        Field::new("user_id", DataType::Int32, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Second, None), false),
        Field::new("score", DataType::Float64, true),
        Field::new("tag", DataType::Utf8, true),
        Field::new("level", DataType::Int32, true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(vec![1, 2, 3, 3])),
        Arc::new(TimestampSecondArray::from(vec![
            t - 60,
            t - 7200,
            t - 600,
            t - 1200,
        ])),
        Arc::new(Float64Array::from(vec![
            Some(0.5),
            Some(2.0),
            Some(f64::NAN),
            Some(9.0),
        ])),
        Arc::new(StringArray::from(vec![
            None,
            Some("old"),
            Some(""),
            Some("older"),
        ])),
        Arc::new(Int32Array::from(vec![Some(7), Some(8), None, Some(1)])),
    ];
    common::write_parquet(
        &project.path().join("s.parquet"),
        &RecordBatch::try_new(Arc::new(schema), columns).unwrap(),
    );
    let redis = use_backend(project.path(), backend);
    let store = FeatureStore::open(project.path()).unwrap();
    store.apply().unwrap();
    store
        .materialize(now - TimeDelta::days(1), now, None, &NoProgress)
        .unwrap();
    (project, redis, now)
}

fn statuses(backend: Backend) {
    let (project, _redis, now) = status_project(backend);
    let store = FeatureStore::open(project.path()).unwrap();
    let request = FeatureRequest::Features(vec![
        "fresh:score".into(),
        "fresh:tag".into(),
        "forever:level".into(),
    ]);
    // Keys as numbers and as text: both coerce to int32. 4 is unknown.
    let entities = rows(vec![(
        "user_id",
        vec![json!(1), json!("2"), json!(3), json!(4)],
    )]);
    let r = store
        .get_online_features_at(&request, true, &entities, now)
        .unwrap();
    assert_eq!(
        r.feature_names,
        ["user_id", "fresh__score", "fresh__tag", "forever__level"]
    );
    use FieldStatus::*;
    assert_eq!(
        r.results[1].statuses,
        [Present, OutsideMaxAge, Present, NotFound],
        "{backend:?}"
    );
    assert_eq!(
        r.results[2].statuses,
        [NullValue, OutsideMaxAge, Present, NotFound]
    );
    assert_eq!(
        r.results[3].statuses,
        [Present, Present, NullValue, NotFound],
        "TTL 0 never expires"
    );
    assert_eq!(r.results[1].values[0], Value::Float64(0.5));
    assert!(
        matches!(r.results[1].values[2], Value::Float64(v) if v.is_nan()),
        "NaN survives"
    );
    assert_eq!(
        r.results[2].values[2],
        Value::String(String::new()),
        "the newest row of user 3 wins"
    );
    assert_eq!(r.results[3].values[1], Value::Int32(8));
    assert_eq!(
        r.results[1].event_timestamps[0],
        Some((now.timestamp() - 60) * 1_000_000_000)
    );

    // A key that cannot be an int32 is a clear error.
    let bad = rows(vec![("user_id", vec![json!("abc")])]);
    let e = store
        .get_online_features_at(&request, false, &bad, now)
        .unwrap_err()
        .to_string();
    assert!(e.contains("user_id") && e.contains("expected int32"), "{e}");
    let missing = rows(vec![("uid", vec![json!(1)])]);
    let e = store
        .get_online_features_at(&request, false, &missing, now)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing join key 'user_id'"), "{e}");
    let uneven = rows(vec![("user_id", vec![json!(1)]), ("x", vec![])]);
    assert!(store
        .get_online_features_at(&request, false, &uneven, now)
        .is_err());

    // An older window materialized later never regresses a newer value.
    store
        .materialize(
            now - TimeDelta::days(3),
            now - TimeDelta::minutes(15),
            None,
            &NoProgress,
        )
        .unwrap();
    let r = store
        .get_online_features_at(&request, false, &entities, now)
        .unwrap();
    assert_eq!(
        r.results[2].values[2],
        Value::String(String::new()),
        "{backend:?}: still the newest row"
    );
    assert_eq!(r.results[1].values[0], Value::Float64(0.5));

    // Freshness is recorded per view.
    let records = store.registry().materializations().unwrap();
    assert_eq!(records.iter().filter(|r| r.view == "fresh").count(), 2);
    assert_eq!(records[0].rows_written, 3);
}

#[test]
fn sled_statuses() {
    statuses(Backend::Sled);
}

#[test]
fn redb_statuses() {
    statuses(Backend::Redb);
}

#[test]
fn redis_statuses() {
    statuses(Backend::Redis);
}

#[test]
fn redis_cluster_statuses() {
    statuses(Backend::RedisCluster);
}

#[test]
fn incremental_materialization_continues_from_the_last_end() {
    let (project, _redis, now) = status_project(Backend::Sled);
    let store = FeatureStore::open(project.path()).unwrap();
    let done = store
        .materialize_incremental(
            now + TimeDelta::hours(1),
            Some(&["fresh".to_string()]),
            &NoProgress,
        )
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].start, now, "starts where the first run ended");
    assert_eq!(done[0].rows_written, 0, "nothing new");
}

#[test]
fn redis_down_is_a_clear_error_and_recovers() {
    let (project, server, now) = status_project(Backend::Redis);
    let port = server
        .as_ref()
        .and_then(|s| s.downcast_ref::<common::RedisServer>())
        .unwrap()
        .port;
    drop(server);
    let store = FeatureStore::open(project.path()).unwrap();
    let request = FeatureRequest::Features(vec!["forever:level".into()]);
    let entities = rows(vec![("user_id", vec![json!(1)])]);
    let e = store
        .get_online_features_at(&request, false, &entities, now)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("online store unavailable") && e.contains("Redis"),
        "{e}"
    );

    let _server = common::RedisServer::start_on(port);
    store
        .materialize(now - TimeDelta::days(1), now, None, &NoProgress)
        .unwrap();
    let r = store
        .get_online_features_at(&request, false, &entities, now)
        .unwrap();
    assert_eq!(r.results[1].values[0], Value::Int32(7));
}

#[test]
fn sled_killed_materialization_rerun_equals_a_clean_run() {
    killed_materialization_rerun_equals_a_clean_run(Backend::Sled);
}

#[test]
fn redb_killed_materialization_rerun_equals_a_clean_run() {
    killed_materialization_rerun_equals_a_clean_run(Backend::Redb);
}

#[test]
fn redis_killed_materialization_rerun_equals_a_clean_run() {
    killed_materialization_rerun_equals_a_clean_run(Backend::Redis);
}

/// Runs `wafer ARGS` in `dir` and SIGKILLs it once it has printed `lines`
/// progress lines, asserting it was still running. With Redis, a run
/// refused by an earlier killed run's claim is retried until the claim
/// lapses (polling, with a deadline).
fn kill_after_progress(dir: &Path, args: &[&str], lines: usize, backend: Backend) {
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut child = common::ChildGuard::new(
            std::process::Command::new(env!("CARGO_BIN_EXE_wafer"))
                .arg("-C")
                .arg(dir)
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let said = common::stderr_lines(child.child());
        let mut seen = 0;
        let mut heard = Vec::new();
        while seen < lines {
            let left = deadline.saturating_duration_since(Instant::now());
            match said.recv_timeout(left) {
                Ok(line) => {
                    seen += usize::from(line.ends_with(" rows read"));
                    heard.push(line);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!("{backend:?}: no progress in time: {heard:?}")
                }
            }
        }
        let busy = heard.iter().any(|l| l.contains("already materializing"));
        if seen < lines && busy && Instant::now() < deadline {
            // With Redis, a killed run's claim holds until it lapses.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert_eq!(
            seen, lines,
            "{backend:?}: the run ended before {lines} progress lines: {heard:?}"
        );
        let mut child = child.disarm();
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{backend:?}: the run ended ({status}) before it was killed: {heard:?}"
        );
        return;
    }
}

/// Retries while another run's claim (a killed run's, with Redis) holds.
fn when_free<T>(mut run: impl FnMut() -> Result<T, wafer::Error>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match run() {
            Err(wafer::Error::Busy(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            done => break done.unwrap(),
        }
    }
}

/// kill -9 a `wafer materialize` at several points, run it again, and the
/// store holds exactly what one clean run holds.
fn killed_materialization_rerun_equals_a_clean_run(backend: Backend) {
    let end = DateTime::parse_from_rfc3339("2024-03-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let options = ExampleOptions {
        drivers: 100_000,
        hours: 6,
        entity_rows: 10,
        seed: 9,
        end,
    };
    let clean = tempfile::tempdir().unwrap();
    example::scaffold(clean.path(), &options, true).unwrap();
    let _clean_redis = use_backend(clean.path(), backend);
    let clean_store = FeatureStore::open(clean.path()).unwrap();
    clean_store.apply().unwrap();
    let start = end - TimeDelta::days(2);
    clean_store
        .materialize(start, end, None, &NoProgress)
        .unwrap();
    let drivers: Vec<serde_json::Value> = (0..i64::from(options.drivers) + 5)
        .map(|d| json!(example::FIRST_DRIVER_ID + d))
        .collect();
    let request = FeatureRequest::Service("driver_activity".into());
    let expected = clean_store
        .get_online_features_at(
            &request,
            false,
            &rows(vec![("driver_id", drivers.clone())]),
            end,
        )
        .unwrap();

    let crashed = tempfile::tempdir().unwrap();
    example::scaffold(crashed.path(), &options, true).unwrap();
    let _crashed_redis = use_backend(crashed.path(), backend);
    FeatureStore::open(crashed.path()).unwrap().apply().unwrap();
    // Each run is killed once it has reported reading 10,000, 20,000,
    // 40,000 or 80,000 of its 100,000 rows (observed progress, not a guess
    // at timing).
    for lines in [1usize, 2, 3, 4] {
        kill_after_progress(
            crashed.path(),
            &["materialize", &start.to_rfc3339(), &end.to_rfc3339()],
            lines,
            backend,
        );
    }
    let store = FeatureStore::open(crashed.path()).unwrap();
    when_free(|| store.materialize(start, end, None, &NoProgress));
    let drivers_again = drivers.clone();
    let got = store
        .get_online_features_at(&request, false, &rows(vec![("driver_id", drivers)]), end)
        .unwrap();
    assert_eq!(got, expected, "{backend:?}");
    assert!(
        got.results[1]
            .statuses
            .iter()
            .filter(|s| **s == FieldStatus::Present)
            .count()
            > 1000,
        "{backend:?}: the clean run wrote little"
    );
    drop(store);

    // Incremental after a crash: a run killed mid-way records nothing, so
    // the next one starts where the last completed run ended, and the store
    // ends as a clean run leaves it.
    let incremental = tempfile::tempdir().unwrap();
    example::scaffold(incremental.path(), &options, true).unwrap();
    let _incremental_redis = use_backend(incremental.path(), backend);
    let mid = end - TimeDelta::hours(3);
    {
        let store = FeatureStore::open(incremental.path()).unwrap();
        store.apply().unwrap();
        store.materialize(start, mid, None, &NoProgress).unwrap();
    }
    kill_after_progress(
        incremental.path(),
        &["materialize-incremental", &end.to_rfc3339()],
        2,
        backend,
    );
    let store = FeatureStore::open(incremental.path()).unwrap();
    let records = store.registry().materializations().unwrap();
    assert_eq!(
        records.iter().map(|r| r.end).collect::<Vec<_>>(),
        [mid],
        "{backend:?}: only the completed run is recorded"
    );
    let done = when_free(|| store.materialize_incremental(end, None, &NoProgress));
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].start, done[0].end), (mid, end), "{backend:?}");
    let records = store.registry().materializations().unwrap();
    assert_eq!(
        records.iter().map(|r| (r.start, r.end)).collect::<Vec<_>>(),
        [(start, mid), (mid, end)],
        "{backend:?}"
    );
    let got = store
        .get_online_features_at(
            &request,
            false,
            &rows(vec![("driver_id", drivers_again)]),
            end,
        )
        .unwrap();
    assert_eq!(got, expected, "{backend:?}: incremental after a crash");
}

/// Equal event times: the newest created time wins, a null created time loses.
#[test]
fn materialization_breaks_event_time_ties_by_created_time() {
    let project = common::project(
        "
entities:
  - name: user
    join_keys: [{name: user_id, type: int64}]
sources:
  - name: s
    path: s.parquet
    timestamp_field: ts
    created_timestamp_column: created
feature_views:
  - name: v
    entities: [user]
    source: s
    features: [{name: x, type: int64}]
",
    );
    let t = 1_704_067_200;
    let schema = Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Second, None), false),
        Field::new("created", DataType::Timestamp(TimeUnit::Second, None), true),
        Field::new("x", DataType::Int64, true),
    ]);
    // User 1: of three created times, t+9 (the newest) wins; user 2: a
    // null created loses to any created time; user 3: an older event with a
    // newer created time still loses to the newer event.
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![1, 1, 1, 2, 2, 3, 3])),
        Arc::new(TimestampSecondArray::from(vec![t, t, t, t, t, t, t - 10])),
        Arc::new(TimestampSecondArray::from(vec![
            Some(t + 5),
            Some(t + 9),
            Some(t + 1),
            None,
            Some(t),
            Some(t),
            Some(t + 100),
        ])),
        Arc::new(Int64Array::from(vec![10, 11, 12, 20, 21, 30, 31])),
    ];
    common::write_parquet(
        &project.path().join("s.parquet"),
        &RecordBatch::try_new(Arc::new(schema), columns).unwrap(),
    );
    let now = DateTime::from_timestamp(t, 0).unwrap();
    for backend in [Backend::Sled, Backend::Redb, Backend::Redis] {
        let _redis = use_backend(project.path(), backend);
        let _ = std::fs::remove_dir_all(project.path().join(".wafer"));
        let store = FeatureStore::open(project.path()).unwrap();
        store.apply().unwrap();
        store
            .materialize(now - TimeDelta::days(1), now, None, &NoProgress)
            .unwrap();
        let r = store
            .get_online_features_at(
                &FeatureRequest::Features(vec!["v:x".into()]),
                false,
                &rows(vec![("user_id", vec![json!(1), json!(2), json!(3)])]),
                now,
            )
            .unwrap();
        assert_eq!(
            r.results[1].values,
            [Value::Int64(11), Value::Int64(21), Value::Int64(30)],
            "{backend:?}"
        );
    }
}
