//! The product's promise for on-demand features: a lookup and a training set
//! at the same instant give bit-identical values, because both run the same
//! module on the same inputs. Randomized entities and request values.

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/wasm.rs"]
mod wasm;

use std::process::Command;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::Utc;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use wafer::codec::Value;
use wafer::online::{EntityRows, FieldStatus};
use wafer::{FeatureRequest, FeatureStore, NoProgress};

#[test]
fn lookups_and_training_sets_agree_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_wafer"))
        .args([
            "init",
            ".",
            "--drivers",
            "40",
            "--hours",
            "30",
            "--entity-rows",
            "10",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let definitions = dir.path().join("definitions.yaml");
    let mut text = std::fs::read_to_string(&definitions).unwrap();
    text.push_str(cli::SCORED_FROM_VIEW);
    std::fs::write(&definitions, text).unwrap();

    let store = FeatureStore::open(dir.path()).unwrap();
    store
        .upload_transform("conv", &wasm::transform_module("conv_rate_plus_val"))
        .unwrap();
    store.apply().unwrap();
    let now = Utc::now();
    store
        .materialize(now - chrono::Duration::days(10), now, None, &NoProgress)
        .unwrap();
    let request = FeatureRequest::Features(vec![
        "driver_hourly_stats:conv_rate".to_string(),
        "scored:conv_rate_plus_val".to_string(),
    ]);

    let reference = cli::newest_driver_stats(dir.path());
    for seed in common::seeds(0, 15) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let rows = rng.random_range(1..80);
        let drivers: Vec<i64> = (0..rows)
            .map(|_| {
                if rng.random_bool(0.1) {
                    99_999 // unknown: the transform sees a null input
                } else {
                    1001 + rng.random_range(0..40)
                }
            })
            .collect();
        let vals: Vec<Option<i64>> = (0..rows)
            .map(|_| match rng.random_range(0..12) {
                0 => None,
                1 => Some([i64::MAX, i64::MIN, 0][rng.random_range(0..3)]),
                _ => Some(rng.random_range(-1_000_000..1_000_000)),
            })
            .collect();

        let entities = EntityRows {
            columns: vec![
                (
                    "driver_id".to_string(),
                    drivers.iter().map(|d| json!(d)).collect(),
                ),
                (
                    "val_to_add".to_string(),
                    vals.iter().map(|v| json!(v)).collect(),
                ),
            ],
        };
        let online = store
            .get_online_features_at(&request, false, &entities, now)
            .unwrap();
        assert_eq!(
            online.feature_names,
            ["driver_id", "conv_rate", "conv_rate_plus_val"]
        );

        let schema = Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new(
                "event_timestamp",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
            Field::new("val_to_add", DataType::Int64, true),
        ]));
        let instant = now.timestamp_nanos_opt().unwrap();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(drivers.clone())),
            Arc::new(TimestampNanosecondArray::from(vec![instant; rows]).with_timezone("UTC")),
            Arc::new(Int64Array::from(vals.clone())),
        ];
        let entity_file = dir.path().join(format!("entities-{seed}.parquet"));
        common::write_parquet(
            &entity_file,
            &RecordBatch::try_new(schema, columns).unwrap(),
        );
        let output = dir.path().join(format!("training-{seed}.parquet"));
        store
            .get_historical_features(&entity_file, &request, false, &output)
            .unwrap();
        let training = common::read_parquet(&output);
        let names: Vec<&str> = training
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(
            names,
            [
                "driver_id",
                "event_timestamp",
                "val_to_add",
                "conv_rate",
                "conv_rate_plus_val"
            ]
        );
        let offline = training
            .column_by_name("conv_rate_plus_val")
            .unwrap()
            .as_primitive::<Float64Type>();

        let mut present = 0;
        for row in 0..rows {
            let online_value = match &online.results[2].values[row] {
                Value::Float64(v) => Some(v.to_bits()),
                Value::Null => None,
                other => panic!("unexpected {other:?}"),
            };
            let offline_value = (!offline.is_null(row)).then(|| offline.value(row).to_bits());
            assert_eq!(
                online_value, offline_value,
                "seed {seed}, row {row}: driver {}, val_to_add {:?}",
                drivers[row], vals[row]
            );
            // And both equal the function applied to the newest stored
            // rate, read from the source files (not from the lookup).
            let stored = reference.get(&drivers[row]).map(|s| s.0);
            assert_eq!(
                online.results[1].values[row],
                stored.map_or(Value::Null, Value::Float32),
                "seed {seed}, row {row}: the stored input"
            );
            let stored = stored.map(f64::from);
            let expected = stored
                .zip(vals[row])
                .map(|(rate, val)| conv_rate_plus_val::conv_rate_plus_val(rate, val).to_bits());
            assert_eq!(online_value, expected, "seed {seed}, row {row}");
            present += usize::from(online_value.is_some());
        }
        assert!(rows < 5 || present > 0, "seed {seed}: every row was null");
    }
}

const WRITE_TIME: &str = "
entities:
  - name: trip
    join_keys: [{name: trip_id, type: int64}]
sources:
  - name: trip_source
    path: data/trips.parquet
    timestamp_field: event_timestamp
    created_timestamp_column: created
feature_views:
  - name: trip_coords
    entities: [trip]
    source: trip_source
    ttl: 30d
    features:
      - {name: request_lat, type: float64}
      - {name: request_lon, type: float64}
      - {name: driver_lat, type: float64}
      - {name: driver_lon, type: float64}
push_sources:
  - name: trip_push
    source: trip_source
on_demand_feature_views:
  - name: trip_distance
    transform: haversine
    write_to_online_store: true
    sources: [trip_coords]
    features: [{name: distance_km, type: float64}]
";

#[derive(Clone, Copy, Debug)]
struct Trip {
    id: i64,
    event: i64,
    created: i64,
    coords: [Option<f64>; 4],
}

fn distance(coords: [Option<f64>; 4]) -> Option<f64> {
    let [Some(a), Some(b), Some(c), Some(d)] = coords else {
        return None;
    };
    haversine_distance::haversine_distance(a, b, c, d)
        .map(|v| if v.is_nan() { f64::NAN } else { v })
}

/// A write-time view: the module runs as rows are materialized and pushed,
/// lookups read the stored outputs (timed like the rows they came from),
/// and training sets recompute them with the same module.
#[test]
fn write_time_views_store_outputs_that_training_sets_recompute() {
    const HOUR: i64 = 3_600_000_000_000;
    let dir = common::project(WRITE_TIME);
    let t = (Utc::now() - chrono::Duration::hours(2))
        .timestamp_nanos_opt()
        .unwrap()
        / HOUR
        * HOUR;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut trips = Vec::new();
    for id in 0..40 {
        for _ in 0..rng.random_range(0..5) {
            let event = t + rng.random_range(-48..6) * HOUR; // some after T
            let mut coord = |range: f64| match rng.random_range(0..15) {
                0 => None,
                1 => Some(f64::NAN),
                2 => Some(range * 1.5), // out of range: a null distance
                _ => Some(rng.random_range(-range..range)),
            };
            let coords = [coord(90.0), coord(180.0), coord(90.0), coord(180.0)];
            trips.push(Trip {
                id,
                event,
                // Distinct per row: no exact (event, created) ties.
                created: event + rng.random_range(0..2) * HOUR + trips.len() as i64,
                coords,
            });
        }
    }
    let schema = Arc::new(Schema::new(
        [
            Field::new("trip_id", DataType::Int64, false),
            Field::new(
                "event_timestamp",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
            Field::new(
                "created",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
        ]
        .into_iter()
        .chain(
            ["request_lat", "request_lon", "driver_lat", "driver_lon"]
                .map(|name| Field::new(name, DataType::Float64, true)),
        )
        .collect::<Vec<_>>(),
    ));
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(trips.iter().map(|t| t.id))),
        Arc::new(
            TimestampNanosecondArray::from_iter_values(trips.iter().map(|t| t.event))
                .with_timezone("UTC"),
        ),
        Arc::new(
            TimestampNanosecondArray::from_iter_values(trips.iter().map(|t| t.created))
                .with_timezone("UTC"),
        ),
    ];
    for i in 0..4 {
        columns.push(Arc::new(arrow::array::Float64Array::from_iter(
            trips.iter().map(|t| t.coords[i]),
        )));
    }
    common::write_parquet(
        &dir.path().join("data/trips.parquet"),
        &RecordBatch::try_new(schema, columns).unwrap(),
    );

    let store = FeatureStore::open(dir.path()).unwrap();
    store
        .upload_transform("haversine", &wasm::transform_module("haversine_distance"))
        .unwrap();
    store.apply().unwrap();
    let end = chrono::DateTime::from_timestamp_nanos(t);
    store
        .materialize(end - chrono::Duration::days(10), end, None, &NoProgress)
        .unwrap();

    // The reference: the newest row per trip at T.
    let mut newest: std::collections::HashMap<i64, Trip> = Default::default();
    for trip in trips.iter().filter(|r| r.event <= t) {
        let newer = newest
            .get(&trip.id)
            .is_none_or(|seen| (trip.event, trip.created) >= (seen.event, seen.created));
        if newer {
            newest.insert(trip.id, *trip);
        }
    }
    let ids: Vec<i64> = (0..42).collect(); // two unknown trips
    let entities = EntityRows {
        columns: vec![(
            "trip_id".to_string(),
            ids.iter().map(|id| json!(id)).collect(),
        )],
    };
    let request = FeatureRequest::Features(vec!["trip_distance:distance_km".to_string()]);
    let online = store
        .get_online_features_at(&request, false, &entities, Utc::now())
        .unwrap();
    let column = &online.results[1];
    let mut present = 0;
    for (row, id) in ids.iter().enumerate() {
        let reference = newest.get(id);
        let expected = reference.and_then(|r| distance(r.coords));
        let served = match &column.values[row] {
            Value::Float64(v) => Some(*v),
            Value::Null => None,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(
            served.map(f64::to_bits),
            expected.map(f64::to_bits),
            "trip {id}: {reference:?}"
        );
        // Stored outputs carry the time of the row they were computed from.
        assert_eq!(
            column.event_timestamps[row],
            reference.map(|r| r.event),
            "trip {id}"
        );
        present += usize::from(served.is_some());
    }
    assert!(present > 10, "only {present} distances");

    // Stored outputs age with the source view's TTL (30 days): a day before
    // T's rows would all expire, the rows older than a day are outside it.
    const DAY: i64 = 24 * HOUR;
    let later = t + 30 * DAY - DAY;
    let aged = store
        .get_online_features_at(
            &request,
            false,
            &entities,
            chrono::DateTime::from_timestamp_nanos(later),
        )
        .unwrap();
    let mut seen = std::collections::HashSet::new();
    for (row, id) in ids.iter().enumerate() {
        let expected = match newest.get(id) {
            None => FieldStatus::NotFound,
            Some(r) if r.event < later - 30 * DAY => FieldStatus::OutsideMaxAge,
            Some(r) if distance(r.coords).is_some() => FieldStatus::Present,
            Some(_) => FieldStatus::NullValue,
        };
        assert_eq!(aged.results[1].statuses[row], expected, "trip {id}");
        seen.insert(format!("{expected:?}"));
    }
    assert!(
        seen.contains("OutsideMaxAge") && seen.contains("Present"),
        "{seen:?}"
    );

    // A training set at T recomputes the same values.
    let entity_schema = Arc::new(Schema::new(vec![
        Field::new("trip_id", DataType::Int64, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
    ]));
    let entity_file = dir.path().join("trips-entities.parquet");
    common::write_parquet(
        &entity_file,
        &RecordBatch::try_new(
            entity_schema,
            vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(TimestampNanosecondArray::from(vec![t; ids.len()]).with_timezone("UTC")),
            ],
        )
        .unwrap(),
    );
    let output = dir.path().join("trips-training.parquet");
    let request_with_input = FeatureRequest::Features(vec![
        "trip_coords:driver_lat".to_string(),
        "trip_distance:distance_km".to_string(),
    ]);
    store
        .get_historical_features(&entity_file, &request_with_input, false, &output)
        .unwrap();
    let training = common::read_parquet(&output);
    let offline = training
        .column_by_name("distance_km")
        .unwrap()
        .as_primitive::<Float64Type>();
    for (row, id) in ids.iter().enumerate() {
        let served = match &column.values[row] {
            Value::Float64(v) => Some(v.to_bits()),
            _ => None,
        };
        let recomputed = (!offline.is_null(row)).then(|| offline.value(row).to_bits());
        assert_eq!(served, recomputed, "trip {id}");
    }

    // A push runs the module too; an older push changes nothing.
    let pushed = t + 60_000_000_000;
    let push = |event: i64, lat: f64| {
        let rows = EntityRows {
            columns: vec![
                ("trip_id".to_string(), vec![json!(3)]),
                (
                    "event_timestamp".to_string(),
                    vec![json!(wafer::codec::time::format_timestamp(event))],
                ),
                ("request_lat".to_string(), vec![json!(lat)]),
                ("request_lon".to_string(), vec![json!(2.3522)]),
                ("driver_lat".to_string(), vec![json!(51.5074)]),
                ("driver_lon".to_string(), vec![json!(-0.1278)]),
            ],
        };
        store
            .push("trip_push", &rows, wafer::push::PushTarget::Online)
            .unwrap();
    };
    push(pushed, 48.8566);
    push(pushed - HOUR, 0.0);
    let entities = EntityRows {
        columns: vec![("trip_id".to_string(), vec![json!(3)])],
    };
    let online = store
        .get_online_features_at(&request, false, &entities, Utc::now())
        .unwrap();
    let expected = distance([Some(48.8566), Some(2.3522), Some(51.5074), Some(-0.1278)]).unwrap();
    assert_eq!(online.results[1].values[0], Value::Float64(expected));
    assert_eq!(online.results[1].event_timestamps[0], Some(pushed));
}
