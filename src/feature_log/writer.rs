//! The writer thread: gathers logged rows per service, registry version
//! and day, and publishes each group as one Parquet file when it is large
//! enough, old enough, or asked to.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, StringArray, TimestampNanosecondArray};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::{Layout, LogSettings, Message, Rows, LOG_DATE};
use crate::codec::arrow::array_from_values;
use crate::codec::Value;
use crate::durable::{self, Staged};
use crate::types::ValueType;

/// Rows waiting to be written into one file.
struct Pending {
    layout: Arc<Layout>,
    date: String,
    rows: Vec<Rows>,
    count: usize,
    since: Instant,
}

/// How often the writer drains the queue while rows are pending, and when
/// none are. It polls instead of blocking on the queue so that a lookup's
/// send never has a sleeping thread to wake (a futex wake and a context
/// switch per lookup cost a fifth of single-entity throughput on two
/// cores; benches/README.md).
const POLL: Duration = Duration::from_millis(10);
const IDLE_POLL: Duration = Duration::from_millis(100);

pub(super) fn run(receiver: Receiver<Message>, settings: LogSettings) {
    // Keyed by service, version and day: one file never mixes layouts.
    let mut pending: HashMap<(String, u64, String), Pending> = HashMap::new();
    loop {
        let mut closed = false;
        loop {
            match receiver.try_recv() {
                Ok(Message::Rows(rows)) => {
                    let date = log_date(rows.log_timestamp);
                    let key = (
                        rows.layout.service.clone(),
                        rows.layout.version,
                        date.clone(),
                    );
                    let group = pending.entry(key.clone()).or_insert_with(|| Pending {
                        layout: rows.layout.clone(),
                        date,
                        rows: Vec::new(),
                        count: 0,
                        since: Instant::now(),
                    });
                    group.count += rows.count;
                    group.rows.push(*rows);
                    if group.count >= settings.flush_rows {
                        if let Some(group) = pending.remove(&key) {
                            write(group);
                        }
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let due: Vec<_> = pending
            .iter()
            .filter(|(_, p)| closed || p.since.elapsed() >= settings.flush_interval)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some(group) = pending.remove(&key) {
                write(group);
            }
        }
        if closed {
            return;
        }
        let poll = if pending.is_empty() { IDLE_POLL } else { POLL };
        std::thread::sleep(poll.min(settings.flush_interval));
    }
}

/// `YYYY-MM-DD` of a log timestamp (UTC).
fn log_date(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos)
        .format("%Y-%m-%d")
        .to_string()
}

fn write(group: Pending) {
    let layout = group.layout.clone();
    let counters = layout.counters.clone();
    let count = group.count as u64;
    match publish(group) {
        Ok(path) => {
            counters.written.fetch_add(count, Ordering::Relaxed);
            tracing::debug!(path = %path.display(), rows = count, "feature log file written");
        }
        Err(e) => {
            counters.failed.fetch_add(count, Ordering::Relaxed);
            tracing::warn!(service = %layout.service, rows = count, error = %e, "cannot write the feature log");
        }
    }
}

/// Writes the group's rows as one Parquet file, published complete.
fn publish(group: Pending) -> Result<PathBuf, String> {
    let layout = group.layout.clone();
    let first = group.rows.first().map_or(0, |r| r.log_timestamp);
    let date = group.date.clone();
    let batch = batch(group)?;
    let dir = layout.dir.join(format!("{LOG_DATE}={date}"));
    durable::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let name = format!("part-{first:020}-{:016x}.parquet", rand::random::<u64>());
    let staged = Staged::new(&dir.join(name)).map_err(|e| e.to_string())?;
    let file = staged.reopen().map_err(|e| e.to_string())?;
    // Snappy: the writer shares the cores with lookups.
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(file, layout.schema.clone(), Some(properties))
        .map_err(|e| e.to_string())?;
    writer.write(&batch).map_err(|e| e.to_string())?;
    writer.close().map_err(|e| e.to_string())?;
    staged.publish().map_err(|e| e.to_string())
}

/// The group's rows as one batch of the layout's schema (values moved,
/// not copied).
fn batch(group: Pending) -> Result<RecordBatch, String> {
    let layout = &group.layout;
    let mut rows = group.rows;
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(layout.schema.fields().len());
    let ids: StringArray = rows
        .iter()
        .flat_map(|r| std::iter::repeat_n(Some(r.request_id.as_str()), r.count))
        .collect();
    columns.push(Arc::new(ids));
    let times: TimestampNanosecondArray = rows
        .iter()
        .flat_map(|r| std::iter::repeat_n(Some(r.log_timestamp), r.count))
        .collect();
    columns.push(Arc::new(times));
    let entity_types = layout.keys.iter().chain(&layout.request);
    for (i, (name, value_type)) in entity_types.enumerate() {
        let values: Vec<Value> = rows
            .iter_mut()
            .flat_map(|r| std::mem::take(&mut r.entity[i]))
            .collect();
        columns.push(column(name, values, value_type)?);
    }
    for (i, (name, value_type)) in layout.features.iter().enumerate() {
        let values: Vec<Value> = rows
            .iter_mut()
            .flat_map(|r| std::mem::take(&mut r.features[i].0))
            .collect();
        columns.push(column(name, values, value_type)?);
        let times: TimestampNanosecondArray = rows
            .iter()
            .flat_map(|r| r.features[i].2.iter().copied())
            .collect();
        columns.push(Arc::new(times));
        let statuses: StringArray = rows
            .iter()
            .flat_map(|r| r.features[i].1.iter().map(|s| Some(s.as_str())))
            .collect();
        columns.push(Arc::new(statuses));
    }
    RecordBatch::try_new(layout.schema.clone(), columns).map_err(|e| e.to_string())
}

/// One column of the file. A value of another type than the layout's (a
/// record stored before an apply changed the feature's type, still served)
/// is logged as null, so that it never costs the other rows of the file.
fn column(name: &str, mut values: Vec<Value>, value_type: &ValueType) -> Result<ArrayRef, String> {
    let mut unfit = 0;
    for value in &mut values {
        if !fits(value, value_type) {
            *value = Value::Null;
            unfit += 1;
        }
    }
    if unfit > 0 {
        tracing::warn!(column = name, values = unfit, expected = %value_type, "feature log: values of another type logged as null");
    }
    array_from_values(&values, value_type).map_err(|e| format!("{name}: {e}"))
}

fn fits(value: &Value, value_type: &ValueType) -> bool {
    match (value, value_type) {
        (Value::Null, _)
        | (Value::Bool(_), ValueType::Bool)
        | (Value::Int32(_), ValueType::Int32)
        | (Value::Int64(_), ValueType::Int64)
        | (Value::Float32(_), ValueType::Float32)
        | (Value::Float64(_), ValueType::Float64)
        | (Value::String(_), ValueType::String)
        | (Value::Bytes(_), ValueType::Bytes)
        | (Value::Timestamp(_), ValueType::Timestamp) => true,
        (Value::List(items), ValueType::List(item)) => {
            let item = ValueType::from_scalar_type(*item);
            items.iter().all(|v| fits(v, &item))
        }
        _ => false,
    }
}
