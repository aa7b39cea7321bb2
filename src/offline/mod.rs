//! The offline store: point-in-time correct historical retrieval, run by
//! DuckDB directly over the sources' Parquet files and streamed out in Arrow
//! batches.

mod latest;
mod output;
pub(crate) mod sql;

use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use duckdb::Connection;

use crate::config::OfflineStoreConfig;
use crate::registry::{FeatureSelection, ViewSelection};
use crate::view_rows::{LayoutError, ViewRows};

pub use latest::ReadPlan;
pub use output::{FileFormat, OutputFile};

/// Offline store failures.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: unknown file format (use .parquet or .csv)")]
    UnknownFormat(PathBuf),
    #[error("entity file {path}: {message}")]
    EntityFile { path: PathBuf, message: String },
    #[error("source '{source_name}': {message}")]
    Source {
        source_name: String,
        message: String,
    },
    #[error("DuckDB: {0}")]
    Engine(#[from] duckdb::Error),
    #[error("writing output: {0}")]
    Write(String),
    /// The latest-row query's result is not laid out as [`ViewRows`].
    #[error("materialization rows: {0}")]
    Layout(#[from] LayoutError),
    /// Arrow failed on the newest rows' read (the probe's key hashes, or
    /// dropping each key's older rows).
    #[error("materialization rows: {0}")]
    Rows(#[from] arrow::error::ArrowError),
}

/// Receives the result of a retrieval, batch by batch. A sink fails with
/// its own error type, which the store's own failures convert into, so a
/// caller gets back exactly what went wrong.
pub trait BatchSink {
    type Error: From<OfflineError>;
    /// Called once, before any batch.
    fn start(&mut self, schema: SchemaRef) -> Result<(), Self::Error>;
    fn write(&mut self, batch: &RecordBatch) -> Result<(), Self::Error>;
}

/// Counts from one retrieval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrievalSummary {
    pub rows: u64,
}

/// Counts from a read of a window's newest rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatestSummary {
    /// Rows handed on: one per key (under [`ReadPlan::Reduce`], ties on
    /// event and created time aside).
    pub rows: u64,
    /// Whether and how the window was read in the process.
    pub in_process: InProcess,
}

/// Whether and how a window's newest rows were read in the process
/// ([`latest::Sorted`]) rather than by DuckDB alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InProcess {
    /// Not tried: the probe's first rows decided, `sort_mb` is 0, or no
    /// second connection to DuckDB opened.
    NotTried,
    /// Read and ordered in the process.
    Sorted,
    /// Read until its rows passed `sort_mb`, then left to DuckDB.
    PastBudget,
    /// Stopped (or failed) unfinished when the probe's sample picked
    /// another plan or said the rows cannot fit, then left to DuckDB.
    Stopped,
}

/// Historical retrieval over a project's Parquet sources.
pub struct OfflineStore {
    project_dir: PathBuf,
    config: OfflineStoreConfig,
}

impl OfflineStore {
    pub fn new(project_dir: &Path, config: &OfflineStoreConfig) -> Self {
        OfflineStore {
            project_dir: project_dir.to_path_buf(),
            config: config.clone(),
        }
    }

    /// A DuckDB connection with the store's settings (memory, threads).
    pub(crate) fn connect(&self) -> Result<Connection, OfflineError> {
        // Never reach for the network to install an extension mid-query.
        let settings = duckdb::Config::default().enable_autoload_extension(false)?;
        let connection = Connection::open_in_memory_with_flags(settings)?;
        if let Some(limit) = &self.config.memory_limit {
            connection.execute_batch(&format!("SET memory_limit = {}", sql::literal(limit)))?;
        }
        if let Some(threads) = self.config.threads {
            connection.execute_batch(&format!("SET threads = {threads}"))?;
        }
        Ok(connection)
    }

    /// A view's source files, scanned as one relation.
    pub(crate) fn source_input(
        &self,
        connection: &Connection,
        view: &ViewSelection,
    ) -> Result<sql::SourceInput, OfflineError> {
        let fail = |message: String| OfflineError::Source {
            source_name: view.source.name.clone(),
            message,
        };
        let files = view
            .source
            .resolve_files(&self.project_dir)
            .map_err(|e| fail(e.to_string()))?;
        sql::SourceInput::describe(connection, &files).map_err(|e| fail(e.to_string()))
    }

    /// Joins every row of the entity file (Parquet or CSV) with the selected
    /// features as of the row's `event_timestamp`, streaming the result, in
    /// entity-file order, into `sink`.
    pub fn historical<S: BatchSink>(
        &self,
        selection: &FeatureSelection,
        entity_file: &Path,
        sink: &mut S,
    ) -> Result<RetrievalSummary, S::Error> {
        let connection = self.connect()?;
        let entities = sql::EntityInput::describe(&connection, entity_file)?;
        let mut sources = Vec::with_capacity(selection.views.len());
        for view in &selection.views {
            sources.push(self.source_input(&connection, view)?);
        }
        let query = sql::point_in_time_query(selection, &entities, &sources)?;
        tracing::debug!(%query, "historical retrieval");
        stream_into(&connection, &query, sink)
    }

    /// How [`OfflineStore::latest_rows`] would read this window (a probe of
    /// its keys: [`latest`]).
    pub fn latest_plan(
        &self,
        view: &ViewSelection,
        start: i64,
        end: i64,
    ) -> Result<ReadPlan, OfflineError> {
        let connection = self.connect()?;
        let input = self.source_input(&connection, view)?;
        let window = latest::Window {
            view,
            input: &input,
            start,
            end,
        };
        Ok(latest::read_plan(&connection, window)?.0)
    }

    /// Hands `write` the newest row per entity of `view` with an event time
    /// in `[start, end]` (UTC nanoseconds, inclusive), batch by batch, laid
    /// out as [`ViewRows`], in the byte order of the entities' online keys
    /// for integer and string keys (the plan is chosen by a probe of the
    /// window: [`latest`]). A wide window whose rows fit the offline
    /// store's `sort_mb` is read unsorted and ordered in the process
    /// instead, exactly for every key type ([`latest::Sorted`]).
    pub fn latest_rows<E: From<OfflineError>>(
        &self,
        view: &ViewSelection,
        start: i64,
        end: i64,
        write: impl FnMut(ViewRows) -> Result<(), E>,
    ) -> Result<LatestSummary, E> {
        let connection = self.connect()?;
        let input = self.source_input(&connection, view)?;
        let mut sink = RowsSink {
            join_keys: view.join_keys.len(),
            features: view.view.features.len(),
            first_per_key: None,
            rows: 0,
            write,
            error: std::marker::PhantomData,
        };
        let budget =
            usize::try_from(self.config.sort_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        // A window whose sampled rows alone would pass the budget is left
        // to DuckDB unless its read in the process already finished (an
        // estimate: a window at the budget may be left to DuckDB, which
        // costs time only).
        let fits = |rows: u64| {
            usize::try_from(rows)
                .is_ok_and(|rows| rows.saturating_mul(latest::MIN_ROW_BYTES) <= budget)
        };
        let window = latest::Window {
            view,
            input: &input,
            start,
            end,
        };
        let head = latest::head_plan(&connection, window)?;
        let (plan, in_process) = match head {
            Some((plan, _)) => (plan, None),
            None if self.config.sort_mb > 0 => match connection.try_clone() {
                Ok(reading) => {
                    let (plan, read) =
                        latest::sample_beside_read(&connection, reading, window, budget, fits)?;
                    (plan, Some(read))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "latest rows: no second connection to read the window in the process");
                    (latest::sample_plan(&connection, window)?.0, None)
                }
            },
            None => (latest::sample_plan(&connection, window)?.0, None),
        };
        let in_process = match in_process {
            None => InProcess::NotTried,
            Some(latest::Read::Sorted(sorted)) => {
                tracing::debug!(rows = sorted.rows(), "latest rows: sorted in the process");
                for batch in sorted.batches(SORTED_BATCH_ROWS) {
                    sink.write(&batch.map_err(OfflineError::from)?)?;
                }
                return Ok(LatestSummary {
                    rows: sink.rows,
                    in_process: InProcess::Sorted,
                });
            }
            Some(latest::Read::PastBudget) => InProcess::PastBudget,
            Some(latest::Read::Stopped) => InProcess::Stopped,
        };
        let query = latest::latest_query(view, &input, start, end, plan);
        tracing::debug!(?plan, %query, "latest rows");
        sink.first_per_key = (plan == latest::ReadPlan::SortAll).then(latest::FirstPerKey::default);
        stream_into(&connection, &query, &mut sink)?;
        Ok(LatestSummary {
            rows: sink.rows,
            in_process,
        })
    }

    /// [`OfflineStore::historical`] into a Parquet or CSV file, which appears
    /// only once complete.
    pub fn historical_to_file(
        &self,
        selection: &FeatureSelection,
        entity_file: &Path,
        output: &Path,
    ) -> Result<RetrievalSummary, OfflineError> {
        FileFormat::of(output)?;
        let mut sink = FileSink {
            path: output.to_path_buf(),
            file: None,
        };
        let result = self.historical(selection, entity_file, &mut sink);
        OutputFile::settle(sink.file.take(), result)
    }
}

/// Rows per batch handed on from a window sorted in the process (DuckDB's
/// own chunks are 2,048 rows).
const SORTED_BATCH_ROWS: usize = 4_096;

/// Runs `query`, handing its result to `sink` one Arrow batch at a time.
fn stream_into<S: BatchSink>(
    connection: &Connection,
    query: &str,
    sink: &mut S,
) -> Result<RetrievalSummary, S::Error> {
    let mut statement = connection.prepare(query).map_err(OfflineError::from)?;
    let stream = statement.stream_arrow([]).map_err(OfflineError::from)?;
    sink.start(stream.get_schema())?;
    let mut rows = 0;
    for batch in stream {
        let batch = batch.map_err(OfflineError::from)?;
        rows += batch.num_rows() as u64;
        sink.write(&batch)?;
    }
    Ok(RetrievalSummary { rows })
}

struct FileSink {
    path: PathBuf,
    file: Option<OutputFile>,
}

impl BatchSink for FileSink {
    type Error = OfflineError;

    fn start(&mut self, schema: SchemaRef) -> Result<(), OfflineError> {
        self.file = Some(OutputFile::create(&self.path, schema)?);
        Ok(())
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), OfflineError> {
        match &mut self.file {
            Some(file) => file.write(batch),
            None => Err(OfflineError::Write("batch before schema".into())),
        }
    }
}

/// The latest-row query's batches, read as [`ViewRows`]; with
/// [`latest::ReadPlan::SortAll`], each key's rows after its newest are
/// dropped first.
struct RowsSink<W, E> {
    join_keys: usize,
    features: usize,
    first_per_key: Option<latest::FirstPerKey>,
    /// Rows handed to `write`.
    rows: u64,
    write: W,
    error: std::marker::PhantomData<E>,
}

impl<W: FnMut(ViewRows) -> Result<(), E>, E: From<OfflineError>> BatchSink for RowsSink<W, E> {
    type Error = E;

    fn start(&mut self, _schema: SchemaRef) -> Result<(), E> {
        Ok(())
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), E> {
        let kept;
        let batch = match &mut self.first_per_key {
            Some(first) => {
                kept = first
                    .filter(batch, self.join_keys)
                    .map_err(OfflineError::from)?;
                &kept
            }
            None => batch,
        };
        self.rows += batch.num_rows() as u64;
        let rows = ViewRows::from_batch(batch, self.join_keys, self.features)
            .map_err(OfflineError::from)?;
        (self.write)(rows)
    }
}
