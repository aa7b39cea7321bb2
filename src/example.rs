//! The example project `wafer init` scaffolds: driver statistics in the
//! style of Feast's quickstart, generated deterministically from a seed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float32Array, Int64Array, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::codec::time::nanos;
use crate::config::CONFIG_FILE;

/// Size and shape of the generated example data.
#[derive(Debug, Clone)]
pub struct ExampleOptions {
    pub drivers: u32,
    pub hours: u32,
    /// Rows of the sample entity file.
    pub entity_rows: u32,
    pub seed: u64,
    /// The last hour of data; the current hour by default.
    pub end: DateTime<Utc>,
}

impl Default for ExampleOptions {
    fn default() -> Self {
        ExampleOptions {
            drivers: 10_000,
            hours: 100,
            entity_rows: 1_000,
            seed: 42,
            end: current_hour(),
        }
    }
}

/// Now, rounded down to the hour.
pub fn current_hour() -> DateTime<Utc> {
    let now = Utc::now();
    now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now)
}

/// The first driver id; drivers are numbered from here.
pub const FIRST_DRIVER_ID: i64 = 1001;
/// The example's source is a directory, so offline pushes can add files.
pub const STATS_DIR: &str = "data/driver_stats";
pub const STATS_FILE: &str = "data/driver_stats/part-0000.parquet";
pub const ENTITY_FILE: &str = "data/entities.parquet";

const CONFIG: &str = "\
# Wafer project settings. Every setting can be overridden by an environment
# variable named after its path, e.g. WAFER_SERVER_PORT=7000.
project: driver_ranking
data_dir: .wafer
definitions:
  - definitions.yaml
online_store:
  type: redb
server:
  host: 127.0.0.1
  port: 6566
";

const DEFINITIONS: &str = "\
entities:
  - name: driver
    description: A driver of the ride-hailing fleet
    join_keys:
      - name: driver_id
        type: int64

sources:
  - name: driver_stats_source
    path: data/driver_stats
    timestamp_field: event_timestamp
    created_timestamp_column: created

feature_views:
  - name: driver_hourly_stats
    description: Hourly conversion and acceptance statistics per driver
    entities: [driver]
    source: driver_stats_source
    ttl: 1d
    online: true
    owner: ml-platform@example.com
    tags:
      team: driver_performance
    features:
      - name: conv_rate
        type: float32
      - name: acc_rate
        type: float32
      - name: avg_daily_trips
        type: int64

feature_services:
  - name: driver_activity
    description: Features the driver ranking model reads
    features:
      - driver_hourly_stats: [conv_rate, acc_rate, avg_daily_trips]

push_sources:
  - name: driver_stats_push
    description: Fresh statistics pushed by the streaming job
    source: driver_stats_source
";

/// Creates an example project in `dir`: `wafer.yaml`, `definitions.yaml`,
/// the driver statistics and a sample entity file. Existing files are kept
/// unless `overwrite`.
pub fn scaffold(
    dir: &Path,
    options: &ExampleOptions,
    overwrite: bool,
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir.join(STATS_DIR))?;
    let mut written = Vec::new();
    let mut write_text = |name: &str, text: &str| -> std::io::Result<()> {
        let path = dir.join(name);
        if overwrite || !path.exists() {
            std::fs::write(&path, text)?;
            written.push(path);
        }
        Ok(())
    };
    write_text(CONFIG_FILE, CONFIG)?;
    write_text("definitions.yaml", DEFINITIONS)?;
    write_text(".gitignore", ".wafer/\n")?;
    let stats = dir.join(STATS_FILE);
    if overwrite || !stats.exists() {
        write_driver_stats(&stats, options)?;
        written.push(stats);
    }
    let entities = dir.join(ENTITY_FILE);
    if overwrite || !entities.exists() {
        write_entity_rows(&entities, options)?;
        written.push(entities);
    }
    Ok(written)
}

fn utc_ns() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn write_parquet(
    path: &Path,
    schema: Arc<Schema>,
    batches: impl Iterator<Item = RecordBatch>,
) -> std::io::Result<()> {
    let staged = crate::durable::Staged::new(path)?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(staged.reopen()?, schema, Some(properties))
        .map_err(std::io::Error::other)?;
    for batch in batches {
        writer.write(&batch).map_err(std::io::Error::other)?;
    }
    writer.close().map_err(std::io::Error::other)?;
    staged.publish().map(|_| ())
}

/// `driver_id, event_timestamp, created, conv_rate, acc_rate,
/// avg_daily_trips`: one row per driver per hour, nanosecond UTC timestamps
/// as pandas writes them. Streams hour by hour, so memory stays flat.
pub fn write_driver_stats(path: &Path, options: &ExampleOptions) -> std::io::Result<()> {
    let schema = stats_schema();
    let batch_schema = schema.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let start = options.end - TimeDelta::hours(i64::from(options.hours.saturating_sub(1)));
    let drivers = options.drivers as usize;
    let batches = (0..options.hours).map(move |hour| {
        let event = nanos(start + TimeDelta::hours(i64::from(hour)));
        let ids = Int64Array::from_iter_values((0..drivers as i64).map(|d| FIRST_DRIVER_ID + d));
        let events = TimestampNanosecondArray::from(vec![event; drivers]).with_timezone("UTC");
        let created = TimestampNanosecondArray::from_iter_values(
            (0..drivers).map(|_| event + rng.random_range(0..600) * 1_000_000_000),
        )
        .with_timezone("UTC");
        let conv = Float32Array::from_iter_values((0..drivers).map(|_| rng.random::<f32>()));
        let acc = Float32Array::from_iter_values((0..drivers).map(|_| rng.random::<f32>()));
        let trips = Int64Array::from_iter_values((0..drivers).map(|_| rng.random_range(0..1000)));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(ids),
            Arc::new(events),
            Arc::new(created),
            Arc::new(conv),
            Arc::new(acc),
            Arc::new(trips),
        ];
        RecordBatch::try_new(batch_schema.clone(), columns).expect("columns match the schema")
    });
    write_parquet(path, schema, batches)
}

fn stats_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("event_timestamp", utc_ns(), false),
        Field::new("created", utc_ns(), false),
        Field::new("conv_rate", DataType::Float32, true),
        Field::new("acc_rate", DataType::Float32, true),
        Field::new("avg_daily_trips", DataType::Int64, true),
    ]))
}

/// `driver_id, event_timestamp, trip_completed`: random drivers (a few
/// unknown) at random times from an hour before the data to two days after
/// it, so some rows find no fresh value.
pub fn write_entity_rows(path: &Path, options: &ExampleOptions) -> std::io::Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("event_timestamp", utc_ns(), false),
        Field::new("trip_completed", DataType::Boolean, false),
    ]));
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed ^ 0x5eed);
    let start = nanos(options.end - TimeDelta::hours(i64::from(options.hours)));
    let end = nanos(options.end + TimeDelta::hours(48));
    let rows = options.entity_rows as usize;
    let max_driver = i64::from(options.drivers) + i64::from(options.drivers / 20).max(1);
    let ids = Int64Array::from_iter_values(
        (0..rows).map(|_| FIRST_DRIVER_ID + rng.random_range(0..max_driver)),
    );
    let times =
        TimestampNanosecondArray::from_iter_values((0..rows).map(|_| rng.random_range(start..end)))
            .with_timezone("UTC");
    let labels = BooleanArray::from_iter((0..rows).map(|_| Some(rng.random_bool(0.5))));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(ids), Arc::new(times), Arc::new(labels)],
    )
    .map_err(std::io::Error::other)?;
    write_parquet(path, schema, std::iter::once(batch))
}
