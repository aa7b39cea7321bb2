//! The embedded online store on redb: one file in the data directory
//! (`online.redb`), copy-on-write B-trees with checksums.
//!
//! Small writes (pushes) commit without a sync (`Durability::None`: a
//! crash returns the file to the last synced commit, never to a torn
//! state) and [`OnlineStore::flush`] commits durably; concurrent flushes
//! share one (group commit). So a push that the caller flushes before
//! answering is durable. Large writes (a materialization's batches, large
//! pushes) commit durably at once: redb frees the pages a commit replaced
//! only at the next durable commit, so a run of large non-durable commits
//! grows the file and leaves the final sync to write it all (measured: a
//! million records in eight batches took 4.7 s to write and 2.8 s more to
//! flush; with a sync per batch, see benches/README.md).

use std::path::Path;

use redb::{Builder, Database, Durability, ReadableDatabase, TableDefinition};

use super::group_commit::GroupCommit;
use super::record::{newest_per_key, supersedes};
use super::{KeyedRecord, OnlineError, OnlineStore};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("online");

/// Writes of at least this many records commit durably at once.
const DURABLE_WRITE: usize = 16_384;

/// Records per transaction: a large write (a materialization's batch) is
/// committed in parts of this many, in key order, so a push waits for one
/// part, not for the whole batch. Sorted parts touch disjoint leaf pages,
/// so parts cost about what one transaction would.
const TRANSACTION_RECORDS: usize = 65_536;

/// Records in one redb table.
pub struct RedbStore {
    db: Database,
    /// Shares one sync among concurrent flushes.
    commits: GroupCommit,
}

fn redb_error(e: impl std::fmt::Display) -> OnlineError {
    OnlineError::Unavailable(format!("embedded store (redb): {e}"))
}

impl RedbStore {
    /// Opens or creates the file, with a page cache of `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, OnlineError> {
        if let Some(dir) = path.parent() {
            crate::durable::create_dir_all(dir).map_err(redb_error)?;
        }
        let db = Builder::new()
            .set_cache_size(usize::try_from(cache_bytes).unwrap_or(usize::MAX))
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => super::in_use(path),
                e => OnlineError::Unavailable(format!(
                    "cannot open the embedded store at {}: {e}",
                    path.display()
                )),
            })?;
        Ok(RedbStore {
            db,
            commits: GroupCommit::default(),
        })
    }
}

impl OnlineStore for RedbStore {
    fn write(&self, records: &[KeyedRecord]) -> Result<(), OnlineError> {
        let newest = newest_per_key(records);
        let durable = newest.len() >= DURABLE_WRITE;
        let parts = newest.len().div_ceil(TRANSACTION_RECORDS);
        for (n, part) in newest.chunks(TRANSACTION_RECORDS).enumerate() {
            let mut txn = self.db.begin_write().map_err(redb_error)?;
            // A large write syncs with its last part (the parts before it
            // replace few pages: branches, as the leaves are disjoint). A
            // sync on every part was tried: materialization slower (1M
            // records 3.9-4.4 s against 3.2-3.7 s) and pushes meanwhile
            // slower at p99 (112 against 9 ms), faster at worst (0.75
            // against 1.4 s: a push's durable commit syncs the pages of
            // the parts before it).
            if !(durable && n + 1 == parts) {
                txn.set_durability(Durability::None).map_err(redb_error)?;
            }
            {
                let mut table = txn.open_table(TABLE).map_err(redb_error)?;
                // One B-tree descent per record: insert, and put the stored
                // record back in the rare case it was newer (readers never
                // see the swap: they read committed transactions only).
                for &(key, value) in part {
                    let kept = match table.insert(key, value).map_err(redb_error)? {
                        Some(previous) if !supersedes(value, previous.value()) => {
                            Some(previous.value().to_vec())
                        }
                        _ => None,
                    };
                    if let Some(previous) = kept {
                        table.insert(key, previous.as_slice()).map_err(redb_error)?;
                    }
                }
            }
            txn.commit().map_err(redb_error)?;
        }
        self.commits.wrote();
        Ok(())
    }

    fn read(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, OnlineError> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let table = match txn.open_table(TABLE) {
            Ok(table) => table,
            // Nothing written yet.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![None; keys.len()]),
            Err(e) => return Err(redb_error(e)),
        };
        keys.iter()
            .map(|key| {
                table
                    .get(key.as_slice())
                    .map(|v| v.map(|v| v.value().to_vec()))
                    .map_err(redb_error)
            })
            .collect()
    }

    /// Makes every write committed before the call durable, with one
    /// durable commit; a caller that finds one covering its writes already
    /// done returns at once.
    fn flush(&self) -> Result<(), OnlineError> {
        self.commits.flush(|| {
            let mut txn = self.db.begin_write().map_err(redb_error)?;
            txn.set_durability(Durability::Immediate)
                .map_err(redb_error)?;
            txn.commit().map_err(redb_error)
        })
    }

    fn ping(&self) -> Result<(), OnlineError> {
        self.db.begin_read().map_err(redb_error)?;
        Ok(())
    }

    fn blocks_on_network(&self) -> bool {
        false
    }
}
