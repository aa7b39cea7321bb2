//! Project files read one way everywhere: glob patterns expanded (sources,
//! definition files) and Parquet schemas read (validation, pushes).

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Whether a path names a glob pattern rather than one file or directory.
pub fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// The files (not directories) a glob pattern matches, sorted; unreadable
/// entries are skipped.
pub fn expand_glob(pattern: &Path) -> Result<Vec<PathBuf>, glob::PatternError> {
    let pattern = pattern.to_string_lossy();
    let mut files: Vec<PathBuf> = glob::glob(&pattern)?
        .flatten()
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Why a Parquet file's schema cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ParquetSchemaError {
    #[error("{0}")]
    Open(#[from] std::io::Error),
    #[error("{0}")]
    Unreadable(#[from] parquet::errors::ParquetError),
}

/// The Arrow schema of a Parquet file, from its footer.
pub fn parquet_schema(path: &Path) -> Result<SchemaRef, ParquetSchemaError> {
    let file = File::open(path)?;
    Ok(ParquetRecordBatchReaderBuilder::try_new(file)?
        .schema()
        .clone())
}
