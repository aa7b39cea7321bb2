//! Where modules live: bytes by sha256, and per name an append-only history
//! whose last entry is the active version. A small trait, so that a shared
//! backend (Redis) can replace the directory when several servers run.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::TransformError;
use crate::durable;

/// One event in a name's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleVersion {
    pub sha256: String,
    pub at: DateTime<Utc>,
    pub by: String,
    pub action: VersionAction,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionAction {
    Upload,
    Rollback,
}

/// Storage for modules and their named versions.
pub trait ModuleRepository: Send + Sync {
    /// Stores module bytes under their hash (idempotent).
    fn put_module(&self, sha256: &str, bytes: &[u8]) -> Result<(), TransformError>;
    fn module(&self, sha256: &str) -> Result<Option<Vec<u8>>, TransformError>;
    /// Appends to `name`'s history; the appended version becomes active.
    fn append(&self, name: &str, version: &ModuleVersion) -> Result<(), TransformError>;
    /// `name`'s history, oldest first; empty when unknown.
    fn history(&self, name: &str) -> Result<Vec<ModuleVersion>, TransformError>;
    /// Every name with a history, sorted.
    fn names(&self) -> Result<Vec<String>, TransformError>;
    /// The hash of every stored module.
    fn hashes(&self) -> Result<std::collections::HashSet<String>, TransformError>;
}

/// `DIR/modules/<sha256>.wasm` and `DIR/names/<name>.jsonl`. Module files
/// are replaced atomically; history lines are appended under an exclusive
/// lock and synced ([`durable`]).
pub struct FileModuleRepository {
    dir: PathBuf,
}

impl FileModuleRepository {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileModuleRepository { dir: dir.into() }
    }

    fn module_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("modules").join(format!("{sha256}.wasm"))
    }

    fn history_path(&self, name: &str) -> PathBuf {
        self.dir.join("names").join(format!("{name}.jsonl"))
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TransformError + '_ {
    move |source| TransformError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl ModuleRepository for FileModuleRepository {
    fn put_module(&self, sha256: &str, bytes: &[u8]) -> Result<(), TransformError> {
        let path = self.module_path(sha256);
        if path.exists() {
            return Ok(());
        }
        durable::write_atomic(&path, bytes).map_err(io(&path))
    }

    fn module(&self, sha256: &str) -> Result<Option<Vec<u8>>, TransformError> {
        let path = self.module_path(sha256);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn append(&self, name: &str, version: &ModuleVersion) -> Result<(), TransformError> {
        let path = self.history_path(name);
        durable::append_line(&path, version, true).map_err(io(&path))
    }

    fn history(&self, name: &str) -> Result<Vec<ModuleVersion>, TransformError> {
        let path = self.history_path(name);
        durable::read_lines(&path).map_err(io(&path))
    }

    fn names(&self) -> Result<Vec<String>, TransformError> {
        let mut names: Vec<String> = self.stems("names", ".jsonl")?;
        names.sort();
        Ok(names)
    }

    fn hashes(&self) -> Result<std::collections::HashSet<String>, TransformError> {
        Ok(self.stems("modules", ".wasm")?.into_iter().collect())
    }
}

impl FileModuleRepository {
    /// The names of `DIR/sub`'s files ending in `suffix`, without it.
    fn stems(&self, sub: &str, suffix: &str) -> Result<Vec<String>, TransformError> {
        let dir = self.dir.join(sub);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir)(e)),
        };
        Ok(entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let file = entry.file_name().into_string().ok()?;
                file.strip_suffix(suffix).map(str::to_string)
            })
            .collect())
    }
}
