//! Writing retrieval results: Parquet or CSV, chosen by the file extension,
//! staged beside the target and published only when complete
//! ([`crate::durable::Staged`]).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::OfflineError;
use crate::durable::Staged;

/// A tabular file format Wafer reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Parquet,
    Csv,
}

impl FileFormat {
    /// The format a path's extension names.
    pub fn of(path: &Path) -> Result<Self, OfflineError> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("parquet") | Some("pq") => Ok(FileFormat::Parquet),
            Some("csv") => Ok(FileFormat::Csv),
            _ => Err(OfflineError::UnknownFormat(path.to_path_buf())),
        }
    }
}

enum Writer {
    Parquet(ArrowWriter<BufWriter<File>>),
    Csv(arrow::csv::Writer<BufWriter<File>>),
}

/// Streams record batches into a file.
pub struct OutputFile {
    staged: Staged,
    writer: Writer,
    rows: u64,
}

impl OutputFile {
    pub fn create(target: &Path, schema: SchemaRef) -> Result<Self, OfflineError> {
        let format = FileFormat::of(target)?;
        let io = |source| OfflineError::Io {
            path: target.to_path_buf(),
            source,
        };
        let staged = Staged::new(target).map_err(io)?;
        let file = BufWriter::new(staged.reopen().map_err(io)?);
        let writer = match format {
            FileFormat::Parquet => {
                let properties = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .build();
                Writer::Parquet(
                    ArrowWriter::try_new(file, schema, Some(properties))
                        .map_err(|e| OfflineError::Write(e.to_string()))?,
                )
            }
            FileFormat::Csv => Writer::Csv(
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(file),
            ),
        };
        Ok(OutputFile {
            staged,
            writer,
            rows: 0,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), OfflineError> {
        self.rows += batch.num_rows() as u64;
        match &mut self.writer {
            Writer::Parquet(w) => w
                .write(batch)
                .map_err(|e| OfflineError::Write(e.to_string())),
            Writer::Csv(w) => w
                .write(batch)
                .map_err(|e| OfflineError::Write(e.to_string())),
        }
    }

    /// Completes the file and moves it into place; returns the rows written.
    pub fn finish(self) -> Result<u64, OfflineError> {
        let path = self.staged.target().to_path_buf();
        let io = |source| OfflineError::Io {
            path: path.clone(),
            source,
        };
        let mut file = match self.writer {
            Writer::Parquet(w) => w
                .into_inner()
                .map_err(|e| OfflineError::Write(e.to_string()))?,
            Writer::Csv(w) => w.into_inner(),
        };
        file.flush().map_err(io)?;
        self.staged.publish().map_err(io)?;
        Ok(self.rows)
    }

    /// Removes the partial file after a failure.
    pub fn abandon(self) {
        self.staged.discard();
    }

    /// Ends a retrieval that wrote into `file` (if it started one): the file
    /// is published when `result` is a success, removed otherwise.
    pub fn settle<T, E: From<OfflineError>>(
        file: Option<OutputFile>,
        result: Result<T, E>,
    ) -> Result<T, E> {
        match (file, result) {
            (Some(file), Ok(value)) => {
                file.finish()?;
                Ok(value)
            }
            (Some(file), Err(error)) => {
                file.abandon();
                Err(error)
            }
            (None, result) => result,
        }
    }
}
