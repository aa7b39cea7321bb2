//! Where registry versions are kept. The file backend is the default; the
//! trait is small so that a shared backend (Redis) can stand in for it when
//! several servers share one registry.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

/// Completed materializations per view: how many, and the newest by window
/// end (of equal ends, the one recorded last).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MaterializationSummary {
    views: BTreeMap<String, ViewRuns>,
}

#[derive(Debug, Clone, PartialEq)]
struct ViewRuns {
    runs: usize,
    last: MaterializationRecord,
}

impl MaterializationSummary {
    /// The summary of `records`, oldest first.
    pub fn of(records: impl IntoIterator<Item = MaterializationRecord>) -> Self {
        let mut summary = Self::default();
        for record in records {
            summary.add(record);
        }
        summary
    }

    /// Counts one more completed run.
    pub fn add(&mut self, record: MaterializationRecord) {
        match self.views.get_mut(&record.view) {
            Some(runs) => {
                runs.runs += 1;
                if record.end >= runs.last.end {
                    runs.last = record;
                }
            }
            None => {
                self.views.insert(
                    record.view.clone(),
                    ViewRuns {
                        runs: 1,
                        last: record,
                    },
                );
            }
        }
    }

    /// How many runs of `view` completed.
    pub fn runs(&self, view: &str) -> usize {
        self.views.get(view).map_or(0, |v| v.runs)
    }

    /// The newest run of `view` by window end.
    pub fn last(&self, view: &str) -> Option<&MaterializationRecord> {
        self.views.get(view).map(|v| &v.last)
    }

    /// The newest run of every view materialized, by view name.
    pub fn latest(&self) -> impl Iterator<Item = &MaterializationRecord> {
        self.views.values().map(|v| &v.last)
    }
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
    /// The newest version's number: servers poll it, so backends should
    /// answer it without listing every version.
    fn latest_number(&self) -> Result<Option<u64>, RegistryError> {
        Ok(self.versions()?.into_iter().max())
    }
    /// Stores `next` (numbered `parent + 1`) if `parent` is still the newest
    /// version, else fails with [`RegistryError::Conflict`].
    fn commit(&self, parent: Option<u64>, next: &RegistryVersion) -> Result<(), RegistryError>;
    /// Appends a completed materialization.
    fn record_materialization(&self, record: &MaterializationRecord) -> Result<(), RegistryError>;
    /// Every completed materialization, oldest first.
    fn materializations(&self) -> Result<Vec<MaterializationRecord>, RegistryError>;
    /// The completed materializations, summed up per view. Backends should
    /// keep it up to date as runs are recorded rather than re-read them all.
    fn materialization_summary(&self) -> Result<MaterializationSummary, RegistryError> {
        Ok(MaterializationSummary::of(self.materializations()?))
    }
}

/// Versions as JSON files in a directory, one per version, each replaced
/// atomically ([`durable::write_atomic`]): a crash leaves either the old set
/// of versions or the new one. Commits hold an exclusive file lock;
/// materializations are appended as JSON lines, and their summary is kept
/// up to date by reading only the lines appended since the last read
/// ([`durable::LineTail`]), whichever process appended them.
pub struct FileRegistry {
    dir: PathBuf,
    summary: Mutex<(durable::LineTail, MaterializationSummary)>,
}

impl FileRegistry {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileRegistry {
            dir: dir.into(),
            summary: Mutex::default(),
        }
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
        crate::durable::create_dir_all(&self.dir).map_err(self.io(&self.dir))?;
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

    fn materialization_summary(&self) -> Result<MaterializationSummary, RegistryError> {
        let path = self.dir.join(MATERIALIZATIONS);
        // A panic mid-update leaves the pair out of step: start over.
        let mut guard = self.summary.lock().unwrap_or_else(|poisoned| {
            let mut guard = poisoned.into_inner();
            *guard = Default::default();
            guard
        });
        let (tail, summary) = &mut *guard;
        let appended = tail.read(&path).map_err(self.io(&path))?;
        if appended.from_start {
            *summary = MaterializationSummary::default();
        }
        for record in appended.values {
            summary.add(record);
        }
        Ok(summary.clone())
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::io::Write;

    /// Runs recorded by another process (another `FileRegistry` on the same
    /// directory), torn lines among them, and ties on window end: the
    /// summary kept up to date equals one computed from a full re-read, and
    /// the newest run of a view is the last of those with the latest end,
    /// as `max_by_key` over the whole history gives.
    #[test]
    fn the_incremental_summary_equals_a_full_re_read() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(14);
        let dir = tempfile::tempdir().unwrap();
        let reader = FileRegistry::new(dir.path());
        let writer = FileRegistry::new(dir.path());
        let base = DateTime::<Utc>::UNIX_EPOCH;
        for i in 0..300u64 {
            if rng.random_bool(0.1) {
                let mut file = File::options()
                    .create(true)
                    .append(true)
                    .open(dir.path().join(MATERIALIZATIONS))
                    .unwrap();
                file.write_all(b"{\"view\":\"torn").unwrap();
            }
            let view = ["a", "b", "c"][rng.random_range(0..3)].to_string();
            writer
                .record_materialization(&MaterializationRecord {
                    view,
                    start: base,
                    end: base + chrono::TimeDelta::hours(rng.random_range(0..20)),
                    rows_written: i,
                    finished_at: base,
                })
                .unwrap();
            if rng.random_bool(0.3) {
                let all = reader.materializations().unwrap();
                let summary = reader.materialization_summary().unwrap();
                assert_eq!(summary, MaterializationSummary::of(all.clone()));
                for view in ["a", "b", "c"] {
                    let runs = all.iter().filter(|r| r.view == view);
                    assert_eq!(summary.runs(view), runs.clone().count());
                    assert_eq!(summary.last(view), runs.max_by_key(|r| r.end));
                }
            }
        }
        assert!(reader.materializations().unwrap().len() == 300);
    }
}
