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

/// Rows waiting to be written into one file.
struct Pending {
    layout: Arc<Layout>,
    date: String,
    rows: Vec<Rows>,
    count: usize,
    since: Instant,
}

/// How often the writer drains the queue. It polls instead of blocking on
/// the queue so that a lookup's send never has a sleeping thread to wake
/// (a futex wake and a context switch per lookup cost a fifth of
/// single-entity throughput on two cores; benches/README.md).
const POLL: Duration = Duration::from_millis(10);

pub(super) fn run(receiver: Receiver<Message>, settings: LogSettings) {
    // Keyed by service, version and day: one file never mixes layouts.
    let mut pending: HashMap<(String, u64, String), Pending> = HashMap::new();
    loop {
        let mut closed = false;
        let mut flushes = Vec::new();
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
                Ok(Message::Flush(ack)) => flushes.push(ack),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let due: Vec<_> = pending
            .iter()
            .filter(|(_, p)| {
                closed || !flushes.is_empty() || p.since.elapsed() >= settings.flush_interval
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some(group) = pending.remove(&key) {
                write(group);
            }
        }
        for ack in flushes {
            let _ = ack.send(());
        }
        if closed {
            return;
        }
        std::thread::sleep(POLL.min(settings.flush_interval));
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
        columns.push(array_from_values(&values, value_type).map_err(|e| format!("{name}: {e}"))?);
    }
    for (i, (name, value_type)) in layout.features.iter().enumerate() {
        let values: Vec<Value> = rows
            .iter_mut()
            .flat_map(|r| std::mem::take(&mut r.features[i].0))
            .collect();
        columns.push(array_from_values(&values, value_type).map_err(|e| format!("{name}: {e}"))?);
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
