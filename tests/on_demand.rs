//! The product's promise for on-demand features: a lookup and a training set
//! at the same instant give bit-identical values, because both run the same
//! module on the same inputs. Randomized entities and request values.

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
use wafer::online::{EntityRows, Value};
use wafer::{FeatureRequest, FeatureStore, NoProgress};

const ON_DEMAND: &str = "
request_sources:
  - name: scoring_request
    fields: [{name: val_to_add, type: int64}]
on_demand_feature_views:
  - name: scored
    transform: conv
    sources: [driver_hourly_stats, scoring_request]
    features: [{name: conv_rate_plus_val, type: float64}]
";

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
    text.push_str(ON_DEMAND);
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

    for seed in 0..5 {
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
            // And both equal the function applied to the stored input.
            let stored = match &online.results[1].values[row] {
                Value::Float32(v) => Some(*v as f64),
                _ => None,
            };
            let expected = stored
                .zip(vals[row])
                .map(|(rate, val)| conv_rate_plus_val::conv_rate_plus_val(rate, val).to_bits());
            assert_eq!(online_value, expected, "seed {seed}, row {row}");
            present += usize::from(online_value.is_some());
        }
        assert!(rows < 5 || present > 0, "seed {seed}: every row was null");
    }
}
