//! The embedded online store: a sled tree in the data directory.

use std::path::Path;

use super::record::supersedes;
use super::{KeyedRecord, OnlineError, OnlineStore};

/// Records in one sled tree. Writes go through a merge operator that keeps
/// the newer record, so racing writers cannot regress a value.
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
}

fn keep_newest(_key: &[u8], current: Option<&[u8]>, candidate: &[u8]) -> Option<Vec<u8>> {
    match current {
        Some(current) if !supersedes(candidate, current) => Some(current.to_vec()),
        _ => Some(candidate.to_vec()),
    }
}

impl SledStore {
    pub fn open(path: &Path) -> Result<Self, OnlineError> {
        let db = sled::Config::new().path(path).open().map_err(|e| {
            OnlineError::Unavailable(format!(
                "cannot open the embedded store at {}: {e}",
                path.display()
            ))
        })?;
        let tree = db.open_tree("online").map_err(sled_error)?;
        tree.set_merge_operator(keep_newest);
        Ok(SledStore { db, tree })
    }
}

fn sled_error(e: sled::Error) -> OnlineError {
    OnlineError::Unavailable(format!("embedded store: {e}"))
}

impl OnlineStore for SledStore {
    fn write(&self, records: &[KeyedRecord]) -> Result<(), OnlineError> {
        for (key, value) in records {
            self.tree.merge(key, value.as_slice()).map_err(sled_error)?;
        }
        Ok(())
    }

    fn read(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, OnlineError> {
        keys.iter()
            .map(|key| {
                self.tree
                    .get(key)
                    .map(|v| v.map(|v| v.to_vec()))
                    .map_err(sled_error)
            })
            .collect()
    }

    fn flush(&self) -> Result<(), OnlineError> {
        self.db.flush().map_err(sled_error)?;
        Ok(())
    }
}
