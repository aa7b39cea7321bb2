//! An online store that fails in the middle of `POST /materialize`: Redis
//! takes the first chunks of a run, then refuses every write (its memory
//! limit is reached). The request answers 503 (the store is unavailable,
//! not the server broken), nothing is recorded as materialized, every
//! stored value is either the one from before or the one the run was
//! writing (the newer-row rule keeps the store consistent), and a rerun
//! once the store is back gives exactly a clean run's values.

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/server.rs"]
mod server;

use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Int64Array, TimestampNanosecondArray};
use arrow::record_batch::RecordBatch;
use serde_json::{json, Value};
use server::Server;

/// Drivers the failing run adds: enough records (tens of MB in Redis) that
/// the memory limit set below is reached part way through.
const NEW_DRIVERS: i64 = 100_000;
const FIRST_NEW_DRIVER: i64 = 2_000_000;
/// conv_rate of the newer rows: outside the generated values' [0, 1).
const NEWER_CONV_RATE: f32 = 3.0;
const NEW_DRIVER_CONV_RATE: f32 = 2.0;

use common::redis_command as redis;

fn used_memory(port: u16) -> u64 {
    let info = redis(port, &["INFO", "memory"]);
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no used_memory in {info}"))
}

/// (conv_rate, status) of every driver, looked up 10,000 at a time.
fn lookup(server: &Server, drivers: &[i64]) -> Vec<(Option<f32>, String)> {
    let mut out = Vec::with_capacity(drivers.len());
    for chunk in drivers.chunks(10_000) {
        let (status, body) = server.post(
            "/get-online-features",
            json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": chunk}}),
        );
        assert_eq!(status, 200, "{body}");
        let column = &body["results"][1];
        for i in 0..chunk.len() {
            out.push((
                column["values"][i].as_f64().map(|v| v as f32),
                column["statuses"][i]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ));
        }
    }
    out
}

fn last_materialization(server: &Server) -> Value {
    let (status, view) = server.get("/registry/feature-views/driver_hourly_stats");
    assert_eq!(status, 200, "{view}");
    view["last_materialization"].clone()
}

/// A Parquet file of newer rows in the example source's schema: the given
/// drivers at `event` with `conv_rate`.
fn newer_rows(dir: &std::path::Path, name: &str, drivers: &[i64], conv_rate: f32) {
    let existing = common::read_parquet(&dir.join("data/driver_stats/part-0000.parquet"));
    let schema = existing.schema();
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    let n = drivers.len();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| -> ArrayRef {
            match field.name().as_str() {
                "driver_id" => Arc::new(Int64Array::from(drivers.to_vec())),
                "event_timestamp" | "created" => {
                    Arc::new(TimestampNanosecondArray::from(vec![now; n]).with_timezone("UTC"))
                }
                "conv_rate" => Arc::new(Float32Array::from(vec![conv_rate; n])),
                "acc_rate" => Arc::new(Float32Array::from(vec![0.5f32; n])),
                "avg_daily_trips" => Arc::new(Int64Array::from(vec![7i64; n])),
                other => panic!("unexpected column {other}"),
            }
        })
        .collect();
    let batch = RecordBatch::try_new(schema, columns).unwrap();
    common::write_parquet(&dir.join("data/driver_stats").join(name), &batch);
}

#[test]
fn an_online_store_failing_during_materialize_is_503_and_leaves_the_store_consistent() {
    let project = cli::example_project();
    let dir = project.path();
    let redis_server = common::RedisServer::start();
    let port = redis_server.port;
    let url = redis_server.url();
    let env = [
        ("WAFER_ONLINE_STORE_TYPE", "redis"),
        ("WAFER_ONLINE_STORE_URL", url.as_str()),
    ];
    let server = Server::start(dir, &env);
    let window = json!({"start_ts": "1970-01-01T00:00:00Z", "end_ts": "now",
                        "feature_views": ["driver_hourly_stats"]});
    let (status, body) = server.post("/materialize", window.clone());
    assert_eq!(status, 200, "{body}");
    let first_run = last_materialization(&server);
    assert!(first_run.is_object(), "{first_run}");
    let old: Vec<i64> = (1001..=1050).collect();
    let expected = cli::newest_driver_stats(dir);
    let before = lookup(&server, &old);
    for (driver, (value, status)) in old.iter().zip(&before) {
        assert_eq!(
            (status.as_str(), *value),
            ("PRESENT", Some(expected[driver].0))
        );
    }

    // Newer rows for the old drivers and rows for many new ones.
    newer_rows(dir, "newer.parquet", &old, NEWER_CONV_RATE);
    let new: Vec<i64> = (FIRST_NEW_DRIVER..FIRST_NEW_DRIVER + NEW_DRIVERS).collect();
    newer_rows(dir, "new-drivers.parquet", &new, NEW_DRIVER_CONV_RATE);

    // Redis takes a few more MB, then refuses every write (reads go on).
    let limit = used_memory(port) + 4 * 1024 * 1024;
    assert!(redis(port, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]).starts_with("+OK"));
    assert!(redis(port, &["CONFIG", "SET", "maxmemory", &limit.to_string()]).starts_with("+OK"));
    let (status, body) = server.post("/materialize", window.clone());
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["class"], "Unavailable", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Redis"),
        "{body}"
    );
    assert_eq!(
        last_materialization(&server),
        first_run,
        "a failed run is not recorded"
    );

    // Every value is the one from before or the one the run was writing.
    for (driver, (value, status)) in old.iter().zip(lookup(&server, &old)) {
        assert_eq!(status, "PRESENT");
        assert!(
            value == Some(expected[driver].0) || value == Some(NEWER_CONV_RATE),
            "driver {driver}: {value:?}"
        );
    }
    let partial = lookup(&server, &new);
    let written = partial
        .iter()
        .filter(|(v, s)| s == "PRESENT" && *v == Some(NEW_DRIVER_CONV_RATE))
        .count();
    let missing = partial
        .iter()
        .filter(|(v, s)| s == "NOT_FOUND" && v.is_none())
        .count();
    assert_eq!(
        written + missing,
        new.len(),
        "only written or absent values"
    );
    assert!(
        written > 0,
        "the run failed part way, after writing some chunks"
    );
    assert!(missing > 0, "the run failed before its end");

    // Once Redis takes writes again, a rerun equals a clean run.
    assert!(redis(port, &["CONFIG", "SET", "maxmemory", "0"]).starts_with("+OK"));
    let (status, body) = server.post("/materialize", window);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["feature_views"][0]["rows_written"],
        json!(old.len() as i64 + NEW_DRIVERS),
        "{body}"
    );
    assert_ne!(last_materialization(&server), first_run);
    assert!(lookup(&server, &old)
        .iter()
        .all(|(v, s)| s == "PRESENT" && *v == Some(NEWER_CONV_RATE)));
    assert!(lookup(&server, &new)
        .iter()
        .all(|(v, s)| s == "PRESENT" && *v == Some(NEW_DRIVER_CONV_RATE)));
}
