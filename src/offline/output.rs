//! Writing retrieval results: Parquet or CSV, chosen by the file extension,
//! written to a temporary file and renamed into place only when complete.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::OfflineError;

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
    target: PathBuf,
    temporary: PathBuf,
    writer: Writer,
    rows: u64,
}

impl OutputFile {
    pub fn create(target: &Path, schema: SchemaRef) -> Result<Self, OfflineError> {
        let format = FileFormat::of(target)?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        let temporary = target.with_file_name(format!(".{name}.{}.partial", std::process::id()));
        let io = |source| OfflineError::Io {
            path: temporary.clone(),
            source,
        };
        let file = BufWriter::new(File::create(&temporary).map_err(io)?);
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
            target: target.to_path_buf(),
            temporary,
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
        let io = |source| OfflineError::Io {
            path: self.temporary.clone(),
            source,
        };
        let file = match self.writer {
            Writer::Parquet(w) => w
                .into_inner()
                .map_err(|e| OfflineError::Write(e.to_string()))?,
            Writer::Csv(w) => w.into_inner(),
        };
        let file = file.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&self.temporary, &self.target).map_err(|source| OfflineError::Io {
            path: self.target.clone(),
            source,
        })?;
        Ok(self.rows)
    }

    /// Removes the partial file after a failure.
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.temporary);
    }
}
