//! Where registry versions are kept. The file backend is the default; the
//! trait is small so that a shared backend (Redis) can stand in for it when
//! several servers share one registry.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::definitions::Definitions;
use super::plan::Change;
use super::RegistryError;
use crate::durable;

/// One applied state of the definitions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistryVersion {
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub author: String,
    pub wafer_version: String,
    pub changes: Vec<Change>,
    pub definitions: Definitions,
}

/// One completed materialization of a view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaterializationRecord {
    pub view: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub rows_written: u64,
    pub finished_at: DateTime<Utc>,
}

/// Storage for registry versions with compare-and-swap commits, so that two
/// concurrent applies cannot both build on the same parent.
pub trait RegistryBackend: Send + Sync {
    /// The newest version, if anything was ever applied.
    fn latest(&self) -> Result<Option<RegistryVersion>, RegistryError>;
    /// One version by number.
    fn version(&self, number: u64) -> Result<Option<RegistryVersion>, RegistryError>;
    /// Every version number, oldest first.
    fn versions(&self) -> Result<Vec<u64>, RegistryError>;
    /// Stores `next` (numbered `parent + 1`) if `parent` is still the newest
    /// version, else fails with [`RegistryError::Conflict`].
    fn commit(&self, parent: Option<u64>, next: &RegistryVersion) -> Result<(), RegistryError>;
    /// Appends a completed materialization.
    fn record_materialization(&self, record: &MaterializationRecord) -> Result<(), RegistryError>;
    /// Every completed materialization, oldest first.
    fn materializations(&self) -> Result<Vec<MaterializationRecord>, RegistryError>;
}

/// Versions as JSON files in a directory, one per version, each replaced
/// atomically ([`durable::write_atomic`]): a crash leaves either the old set
/// of versions or the new one. Commits hold an exclusive file lock;
/// materializations are appended as JSON lines.
pub struct FileRegistry {
    dir: PathBuf,
}

impl FileRegistry {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileRegistry { dir: dir.into() }
    }

    fn path_of(&self, number: u64) -> PathBuf {
        self.dir.join(format!("v{number:010}.json"))
    }

    fn io(&self, path: &Path) -> impl Fn(std::io::Error) -> RegistryError + '_ {
        let path = path.to_path_buf();
        move |source| RegistryError::Io {
            path: path.clone(),
            source,
        }
    }
}

impl FileRegistry {
    fn lock(&self) -> Result<File, RegistryError> {
        fs::create_dir_all(&self.dir).map_err(self.io(&self.dir))?;
        let lock_path = self.dir.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(self.io(&lock_path))?;
        lock.lock().map_err(self.io(&lock_path))?;
        Ok(lock)
    }
}

const MATERIALIZATIONS: &str = "materializations.jsonl";

impl RegistryBackend for FileRegistry {
    fn record_materialization(&self, record: &MaterializationRecord) -> Result<(), RegistryError> {
        let _lock = self.lock()?;
        let path = self.dir.join(MATERIALIZATIONS);
        durable::append_line(&path, record, false).map_err(self.io(&path))
    }

    fn materializations(&self) -> Result<Vec<MaterializationRecord>, RegistryError> {
        let path = self.dir.join(MATERIALIZATIONS);
        durable::read_lines(&path).map_err(self.io(&path))
    }

    fn latest(&self) -> Result<Option<RegistryVersion>, RegistryError> {
        match self.versions()?.last() {
            Some(&number) => self.version(number),
            None => Ok(None),
        }
    }

    fn version(&self, number: u64) -> Result<Option<RegistryVersion>, RegistryError> {
        let path = self.path_of(number);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(&path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RegistryError::Corrupt {
                path,
                message: e.to_string(),
            })
    }

    fn versions(&self) -> Result<Vec<u64>, RegistryError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(&self.dir)(e)),
        };
        let mut numbers: Vec<u64> = entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                name.strip_prefix('v')?.strip_suffix(".json")?.parse().ok()
            })
            .collect();
        numbers.sort_unstable();
        Ok(numbers)
    }

    fn commit(&self, parent: Option<u64>, next: &RegistryVersion) -> Result<(), RegistryError> {
        let lock = self.lock()?;
        let newest = self.versions()?.last().copied();
        if newest != parent || next.version != parent.unwrap_or(0) + 1 {
            return Err(RegistryError::Conflict);
        }
        let target = self.path_of(next.version);
        let bytes = serde_json::to_vec_pretty(next).map_err(|e| RegistryError::Corrupt {
            path: target.clone(),
            message: e.to_string(),
        })?;
        durable::write_atomic(&target, &bytes).map_err(self.io(&target))?;
        drop(lock);
        Ok(())
    }
}
