//! The `wafer` binary run as a process, and the example project the CLI and
//! server tests share.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use arrow::array::{Array, Float32Array, Int64Array, StringArray, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;

/// Runs `wafer -C dir ARGS...` to completion.
pub fn wafer(dir: &Path, args: &[&str]) -> Output {
    wafer_with(dir, args, &[])
}

/// Runs `wafer -C dir ARGS...` with extra environment variables.
pub fn wafer_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wafer"))
        .arg("-C")
        .arg(dir)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// The stdout of a command that must succeed.
pub fn ok(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "command failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The stderr of a command that must fail.
pub fn fails(output: Output) -> String {
    assert!(!output.status.success(), "command should fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `wafer init .` in `dir`: the example project with `drivers` drivers and
/// `hours` hours of data, not applied.
pub fn init_example(dir: &Path, drivers: u32, hours: u32) {
    ok(wafer(
        dir,
        &[
            "init",
            ".",
            "--drivers",
            &drivers.to_string(),
            "--hours",
            &hours.to_string(),
            "--entity-rows",
            "10",
        ],
    ));
}

/// An on-demand view `scored` over the transform `conv`
/// (`conv_rate_plus_val`) and a request source, for a definitions file.
pub const SCORED_VIEW: &str = "request_sources:
  - name: scoring_request
    fields: [{name: conv_rate, type: float64}, {name: val_to_add, type: int64}]
on_demand_feature_views:
  - name: scored
    transform: conv
    sources: [scoring_request]
    features: [{name: conv_rate_plus_val, type: float64}]
";

/// An on-demand view `scored` over the transform `conv`
/// (`conv_rate_plus_val`) reading the stored `conv_rate` of
/// `driver_hourly_stats` and a request field `val_to_add`.
pub const SCORED_FROM_VIEW: &str = "
request_sources:
  - name: scoring_request
    fields: [{name: val_to_add, type: int64}]
on_demand_feature_views:
  - name: scored
    transform: conv
    sources: [driver_hourly_stats, scoring_request]
    features: [{name: conv_rate_plus_val, type: float64}]
";

/// Makes the example's `driver_activity` service also serve `extra`
/// (service items, one per line, e.g. `      - scored\n`) and log at
/// `rate` into `logs/driver_activity`, its files flushed every `flush_ms`.
pub fn log_example_service(dir: &Path, rate: f64, flush_ms: u64, extra: &str) {
    let path = dir.join("definitions.yaml");
    let items = "      - driver_hourly_stats: [conv_rate, acc_rate, avg_daily_trips]\n";
    let definitions = std::fs::read_to_string(&path).unwrap().replace(
        items,
        &format!(
            "{items}{extra}    logging: {{sample_rate: {rate}, path: logs/driver_activity}}\n"
        ),
    );
    assert!(definitions.contains("logging:"));
    std::fs::write(&path, definitions).unwrap();
    let config = std::fs::read_to_string(dir.join("wafer.yaml"))
        .unwrap()
        .replace(
            "  port: 6566\n",
            &format!("  port: 6566\n  feature_logging: {{flush_interval_ms: {flush_ms}}}\n"),
        );
    assert!(config.contains("feature_logging"));
    std::fs::write(dir.join("wafer.yaml"), config).unwrap();
}

/// Appends [`SCORED_VIEW`] to the project's `definitions.yaml`.
pub fn add_scored_view(dir: &Path) {
    let path = dir.join("definitions.yaml");
    let definitions = std::fs::read_to_string(&path).unwrap() + SCORED_VIEW;
    std::fs::write(path, definitions).unwrap();
}

const COMPOSITE: &str = "\
entities:
  - name: city
    join_keys:
      - {name: city, type: string}
sources:
  - name: city_trips_source
    path: data/city_trips.parquet
    timestamp_field: event_timestamp
feature_views:
  - name: driver_city_stats
    entities: [driver, city]
    source: city_trips_source
    ttl: 0
    features:
      - {name: trips, type: int64}
";

/// The example project (50 drivers x 30 hours), plus a view keyed by
/// (driver_id, city), applied and materialized.
pub fn example_project() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    ok(wafer(
        dir,
        &[
            "init",
            ".",
            "--drivers",
            "50",
            "--hours",
            "30",
            "--entity-rows",
            "20",
        ],
    ));
    std::fs::write(
        dir.join("wafer.yaml"),
        "project: driver_ranking\ndefinitions: [definitions.yaml, composite.yaml]\n",
    )
    .unwrap();
    std::fs::write(dir.join("composite.yaml"), COMPOSITE).unwrap();
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("city", DataType::Utf8, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("trips", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1001, 1001, 1002])),
            Arc::new(StringArray::from(vec!["paris", "rome", "paris"])),
            Arc::new(
                TimestampNanosecondArray::from(vec![now - 3_600_000_000_000; 3])
                    .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from(vec![7, 11, 13])),
        ],
    )
    .unwrap();
    crate::common::write_parquet(&dir.join("data/city_trips.parquet"), &batch);
    ok(wafer(dir, &["apply"]));
    ok(wafer(dir, &["materialize", "1970-01-01T00:00:00Z", "now"]));
    root
}

/// The newest row per driver in the example data (event time, then created
/// time): what a lookup must return, as (conv_rate, acc_rate,
/// avg_daily_trips, event time in nanoseconds).
pub fn newest_driver_stats(dir: &Path) -> HashMap<i64, (f32, f32, i64, i64)> {
    let mut newest: HashMap<i64, (i64, i64, f32, f32, i64)> = HashMap::new();
    for entry in std::fs::read_dir(dir.join("data/driver_stats")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        let batch = crate::common::read_parquet(&path);
        let column = |name: &str| batch.column_by_name(name).unwrap().clone();
        let ids = column("driver_id");
        let ids = ids.as_any().downcast_ref::<Int64Array>().unwrap();
        let events = column("event_timestamp");
        let events = events
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .unwrap();
        let created = column("created");
        let created = created
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .unwrap();
        let conv = column("conv_rate");
        let conv = conv.as_any().downcast_ref::<Float32Array>().unwrap();
        let acc = column("acc_rate");
        let acc = acc.as_any().downcast_ref::<Float32Array>().unwrap();
        let trips = column("avg_daily_trips");
        let trips = trips.as_any().downcast_ref::<Int64Array>().unwrap();
        for row in 0..batch.num_rows() {
            let candidate = (
                events.value(row),
                created.value(row),
                conv.value(row),
                acc.value(row),
                trips.value(row),
            );
            let slot = newest.entry(ids.value(row)).or_insert(candidate);
            if (candidate.0, candidate.1) > (slot.0, slot.1) {
                *slot = candidate;
            }
        }
    }
    newest
        .into_iter()
        .map(|(id, (event, _, conv, acc, trips))| (id, (conv, acc, trips, event)))
        .collect()
}
