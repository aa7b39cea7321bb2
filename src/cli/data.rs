//! Data commands: `materialize`, `materialize-incremental`, `online`
//! lookups, `historical` training sets, and a preview of the rows written.

use std::path::Path;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};

use crate::online::EntityRows;
use crate::{FeatureRequest, FeatureStore};

/// Reads a time argument: `now`, RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC) or a
/// date (midnight UTC).
pub(super) fn parse_time(text: &str) -> Result<DateTime<Utc>> {
    let text = text.trim();
    match crate::codec::time::parse_instant(text) {
        Some(time) => Ok(time),
        None => bail!("invalid time '{text}': use now, 2024-01-01T00:00:00Z or 2024-01-01"),
    }
}

/// Materializes `[start, end]`, or incrementally up to `end` without a start.
#[cfg(feature = "offline")]
pub(super) fn materialize(
    store: &FeatureStore,
    start: Option<DateTime<Utc>>,
    end: DateTime<Utc>,
    views: Option<&[String]>,
) -> Result<()> {
    let progress = super::progress::Progress::new();
    let records = match start {
        Some(start) => store.materialize(start, end, views, &progress)?,
        None => store.materialize_incremental(end, views, &progress)?,
    };
    if records.is_empty() {
        println!("No online feature views to materialize.");
    }
    Ok(())
}

#[cfg(not(feature = "offline"))]
pub(super) fn materialize(
    _: &FeatureStore,
    _: Option<DateTime<Utc>>,
    _: DateTime<Utc>,
    _: Option<&[String]>,
) -> Result<()> {
    bail!("this build of wafer has no offline store to materialize from (built without the `offline` feature)")
}

pub(super) fn online(
    store: &FeatureStore,
    request: &FeatureRequest,
    entities: &[String],
    full_feature_names: bool,
) -> Result<()> {
    let mut rows = EntityRows::default();
    for entity in entities {
        let (key, value) = entity
            .split_once('=')
            .with_context(|| format!("invalid --entity '{entity}': write KEY=VALUE"))?;
        // Numbers and booleans as JSON, anything else as text; values are
        // coerced to the join key's declared type.
        let json = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
        rows.columns.push((key.to_string(), vec![json]));
    }
    let response = store.get_online_features(request, full_feature_names, &rows)?;
    let width = response
        .feature_names
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(0);
    for (name, column) in response.feature_names.iter().zip(&response.results) {
        let time = column.event_timestamps[0]
            .map(crate::codec::time::format_timestamp)
            .unwrap_or_default();
        println!(
            "{name:<width$}  {:<24} {:<16} {time}",
            column.values[0].to_string(),
            column.statuses[0].as_str()
        );
    }
    Ok(())
}

#[cfg(feature = "offline")]
pub(super) fn historical(
    store: &FeatureStore,
    entities: &Path,
    request: &FeatureRequest,
    full_feature_names: bool,
    output: &Path,
) -> Result<()> {
    let started = std::time::Instant::now();
    let summary = store.get_historical_features(entities, request, full_feature_names, output)?;
    println!(
        "Wrote {} rows to {} in {:.2}s.",
        summary.rows,
        output.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(not(feature = "offline"))]
pub(super) fn historical(
    _: &FeatureStore,
    _: &Path,
    _: &FeatureRequest,
    _: bool,
    _: &Path,
) -> Result<()> {
    bail!("this build of wafer has no offline store (built without the `offline` feature)")
}

/// Prints the first rows of a Parquet file as a table.
#[cfg(feature = "offline")]
pub(super) fn preview(path: &Path, rows: usize) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?
        .with_batch_size(rows)
        .build()?;
    if let Some(batch) = reader.next().transpose()? {
        println!("{}", arrow::util::pretty::pretty_format_batches(&[batch])?);
    }
    Ok(())
}
