//! The rows reports read: a service's feature logs, files given by the
//! user, or the offline sources over a window, each as a DuckDB relation.

use std::path::{Component, Path, PathBuf};

use duckdb::Connection;

use super::Window;
use crate::error::MonitorError;
use crate::offline::sql::{describe, ident, literal};
use crate::registry::FeatureService;

/// Where one side of a drift report reads its rows.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSpec {
    /// A Parquet file, a directory of them (searched recursively, as a
    /// logging path is laid out) or a glob.
    Files(PathBuf),
    /// The service's logged rows in a window: `logs:FROM..TO`.
    Logs(Window),
    /// The offline sources' rows in a window (by event time):
    /// `source:FROM..TO`.
    Source(Window),
}

impl DataSpec {
    /// Reads `logs:FROM..TO`, `source:FROM..TO` (either end may be left
    /// out) or a path, relative to `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, MonitorError> {
        let text = text.trim();
        if let Some(window) = text.strip_prefix("logs:") {
            return Ok(DataSpec::Logs(parse_window(window)?));
        }
        if let Some(window) = text.strip_prefix("source:") {
            return Ok(DataSpec::Source(parse_window(window)?));
        }
        if text.is_empty() {
            return Err(MonitorError::Input("an empty data path".into()));
        }
        Ok(DataSpec::Files(base.join(text)))
    }

    /// As [`DataSpec::parse`], for a client of the server: a path must be
    /// relative and stay inside the project.
    pub fn parse_confined(text: &str, project_dir: &Path) -> Result<Self, MonitorError> {
        let spec = Self::parse(text, project_dir)?;
        if let DataSpec::Files(_) = spec {
            let path = Path::new(text.trim());
            if path.is_absolute()
                || path
                    .components()
                    .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
            {
                return Err(MonitorError::Input(format!(
                    "'{text}': a path must be relative to the project and stay inside it"
                )));
            }
        }
        Ok(spec)
    }
}

/// `FROM..TO`, either end optional.
pub fn parse_window(text: &str) -> Result<Window, MonitorError> {
    let (from, to) = text.split_once("..").ok_or_else(|| {
        MonitorError::Input(format!(
            "'{text}' is not a window: use FROM..TO (2026-11-01..2026-11-08, 2026-11-25T00:00:00Z..now, ..now)"
        ))
    })?;
    Ok(Window {
        from: parse_end(from)?,
        to: parse_end(to)?,
    })
}

/// One end of a window: empty for open.
pub fn parse_end(text: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, MonitorError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    crate::codec::time::parse_instant(text)
        .map(Some)
        .ok_or_else(|| {
            MonitorError::Input(format!(
                "invalid time '{text}': use now, 2024-01-01T00:00:00Z or 2024-01-01"
            ))
        })
}

/// A SQL condition keeping `column` (nanoseconds) inside `window`.
pub fn window_condition(column: &str, window: &Window) -> String {
    let mut conditions = vec!["TRUE".to_string()];
    if let Some(from) = window.from {
        conditions.push(format!("{column} >= {}", crate::codec::time::nanos(from)));
    }
    if let Some(to) = window.to {
        conditions.push(format!("{column} <= {}", crate::codec::time::nanos(to)));
    }
    conditions.join(" AND ")
}

/// The directory a service logs into.
pub fn log_dir(project_dir: &Path, service: &FeatureService) -> Result<PathBuf, MonitorError> {
    match &service.logging {
        Some(logging) => Ok(project_dir.join(&logging.path)),
        None => Err(MonitorError::NotLogged(service.name.clone())),
    }
}

/// A scan of every Parquet file under `path` (a file, a directory searched
/// recursively, or a glob), columns united by name.
pub fn parquet_scan(path: &Path) -> Result<String, MonitorError> {
    let text = path.to_string_lossy();
    let pattern = if path.is_dir() {
        format!("{}/**/*.parquet", text.trim_end_matches('/'))
    } else if path.is_file() || text.contains(['*', '?', '[']) {
        text.into_owned()
    } else {
        return Err(MonitorError::NoData(format!(
            "{text}: no such file or directory"
        )));
    };
    Ok(format!(
        "read_parquet({}, union_by_name = true)",
        literal(&pattern)
    ))
}

/// The columns of a relation, or why its files cannot be read: none
/// there (no data), or not Parquet, or of clashing types (the input's
/// fault, not the server's).
pub fn columns(
    connection: &Connection,
    relation: &str,
) -> Result<Vec<(String, String)>, MonitorError> {
    describe(connection, relation).map_err(|e| {
        let message = e.to_string();
        if message.contains("No files found") {
            MonitorError::NoData(message)
        } else {
            MonitorError::Input(format!("cannot read the data: {message}"))
        }
    })
}

/// A scan of a service's logged files whose day (`__log_date=`) can hold
/// rows of `window`: a report over the last hour does not open every file
/// ever logged.
pub fn log_scan(dir: &Path, window: &Window) -> Result<String, MonitorError> {
    if window.from.is_none() && window.to.is_none() {
        return parquet_scan(dir);
    }
    let day =
        |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.format("%Y-%m-%d").to_string());
    let (first, last) = (day(window.from), day(window.to));
    let prefix = format!("{}=", crate::feature_log::LOG_DATE);
    let mut patterns = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| MonitorError::NoData(format!("{}: {e}", dir.display())))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(date) = name.strip_prefix(&prefix) else {
            continue;
        };
        let inside =
            first.as_deref().is_none_or(|f| date >= f) && last.as_deref().is_none_or(|l| date <= l);
        if inside && entry.path().is_dir() {
            patterns.push(literal(&format!(
                "{}/*.parquet",
                entry.path().to_string_lossy()
            )));
        }
    }
    if patterns.is_empty() {
        return Err(MonitorError::NoData(format!(
            "no rows logged in {} in {window}",
            dir.display()
        )));
    }
    patterns.sort();
    Ok(format!(
        "read_parquet([{}], union_by_name = true)",
        patterns.join(", ")
    ))
}

/// The epoch nanoseconds of `__log_timestamp` (however it was stored).
pub fn log_time_ns() -> String {
    format!("epoch_ns({})", ident(crate::feature_log::LOG_TIMESTAMP))
}

/// Runs a query for one row of numbers.
pub fn query_numbers(
    connection: &Connection,
    query: &str,
    count: usize,
) -> Result<Vec<Option<f64>>, MonitorError> {
    let mut statement = connection
        .prepare(query)
        .map_err(|e| MonitorError::Engine(format!("{e}: {query}")))?;
    let mut rows = statement
        .query([])
        .map_err(|e| MonitorError::Engine(e.to_string()))?;
    let row = rows
        .next()
        .map_err(|e| MonitorError::Engine(e.to_string()))?
        .ok_or_else(|| MonitorError::Engine("no result row".into()))?;
    (0..count)
        .map(|i| {
            row.get::<_, Option<f64>>(i)
                .map_err(|e| MonitorError::Engine(e.to_string()))
        })
        .collect()
}

/// A DuckDB failure as a report error.
pub fn engine(e: impl std::fmt::Display) -> MonitorError {
    MonitorError::Engine(e.to_string())
}
