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
//! flush; with a sync per batch, see benches/README.md). A write's keys go
//! in key order; runs of them that fall into one gap of the tree are
//! spliced in through a cursor there (`write_in_order`). redb's page
//! writes reach the file through [`coalescing_file`] (on Unix): held
//! until a sync (or a resize, closing, half the cache held, at most 32
//! MiB) and then written in offset order, adjacent pages with one call.
//!
//! Every write transaction also appends the keys it wrote to a change log
//! (table `changes.v2`, one entry per transaction, each key stored as the
//! bytes it does not share with the one before), so an edge can fetch only
//! what changed since its last sync ([`OnlineStore::changed_since`]). The
//! log keeps its newest [`CHANGE_LOG_BYTES`] of entries; an edge further
//! behind gets everything again. A file whose log has the first layout
//! (table `changes`, whole keys) gets a new, empty log when it is opened. An edge's own state (the registry
//! snapshot it serves, its sync position) lives in table `edge`, written
//! in the same transaction as the records it belongs to
//! ([`RedbStore::replace_state`]).

#[cfg(unix)]
mod coalescing_file;

use std::ops::Bound;
use std::path::Path;

use redb::{
    Builder, Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};

#[cfg(unix)]
use self::coalescing_file::CoalescingFile;
use super::group_commit::GroupCommit;
use super::record::{newest_per_key, supersedes};
use super::{KeyedRecord, LogPosition, OnlineError, OnlineStore, ScanVisitor};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("online");
/// Change-log position -> the keys one transaction wrote, in the order
/// written, each as a LEB128 count of the bytes it shares with the key
/// before, a LEB128 count of the bytes that follow, and those bytes (a
/// materialization's keys share about 40 bytes of project and view name).
const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes.v2");
/// The change log's first layout (u32 LE length, key; repeated), as files
/// written before `changes.v2` hold it: replaced when the store opens by an
/// empty log of a new identity, so edges positioned in it fetch everything
/// once (an older wafer, reading none of `changes.v2`, always does).
const CHANGES_V1: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
/// The change log's identity (`id`), its newest position (`at`) and the
/// bytes of entries it holds (`bytes`).
const LOG_META: TableDefinition<&str, u64> = TableDefinition::new("changes_meta");
/// An edge's own state, by name.
const EDGE: TableDefinition<&str, &[u8]> = TableDefinition::new("edge");

/// Bytes of change-log entries kept (some eight million of the example's
/// keys written in key order, about 8 bytes each once their shared
/// prefixes are left out; fewer from pushes, whose first key in each
/// transaction is stored whole); older entries are dropped, the newest one
/// always kept.
pub const CHANGE_LOG_BYTES: u64 = 64 << 20;

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
        let cannot_open = |e: &dyn std::fmt::Display| {
            OnlineError::Unavailable(format!(
                "cannot open the embedded store at {}: {e}",
                path.display()
            ))
        };
        let mut builder = Builder::new();
        builder.set_cache_size(usize::try_from(cache_bytes).unwrap_or(usize::MAX));
        let refused = |e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => super::in_use(path),
            e => cannot_open(&e),
        };
        #[cfg(unix)]
        let file = CoalescingFile::open(path, cache_bytes).map_err(|e| cannot_open(&e))?;
        #[cfg(unix)]
        let db = builder.create_with_backend(file).map_err(refused)?;
        // Elsewhere `FileBackend` writes at the file's position, which
        // `CoalescingFile` moves.
        #[cfg(not(unix))]
        let db = builder.create(path).map_err(refused)?;
        replace_first_log_layout(&db)?;
        Ok(RedbStore {
            db,
            commits: GroupCommit::default(),
        })
    }
}

/// Replaces a change log of the first layout ([`CHANGES_V1`]) by an empty
/// one of a new identity, its positions going on from the old log's newest,
/// in one durable transaction.
fn replace_first_log_layout(db: &Database) -> Result<(), OnlineError> {
    let old = match db.begin_read().map_err(redb_error)?.open_table(CHANGES_V1) {
        Ok(_) => true,
        Err(redb::TableError::TableDoesNotExist(_)) => false,
        Err(e) => return Err(redb_error(e)),
    };
    if !old {
        return Ok(());
    }
    let txn = db.begin_write().map_err(redb_error)?;
    txn.delete_table(CHANGES_V1).map_err(redb_error)?;
    txn.delete_table(CHANGES).map_err(redb_error)?;
    {
        txn.open_table(CHANGES).map_err(redb_error)?;
        let mut meta = txn.open_table(LOG_META).map_err(redb_error)?;
        let at = meta.get("at").map_err(redb_error)?.map_or(0, |v| v.value());
        meta.insert("id", rand::random::<u64>())
            .map_err(redb_error)?;
        meta.insert("at", at).map_err(redb_error)?;
        meta.insert("bytes", 0).map_err(redb_error)?;
    }
    txn.commit().map_err(redb_error)
}

impl OnlineStore for RedbStore {
    fn write(&self, records: &[KeyedRecord]) -> Result<(), OnlineError> {
        let newest = newest_per_key(records);
        let durable = newest.len() >= DURABLE_WRITE;
        let parts = newest.len().div_ceil(TRANSACTION_RECORDS);
        // Keys are listed as each is inserted, while its bytes are in the
        // CPU's cache: listing them after the part read a million keys
        // again in 0.06-0.07 s of the writer's 1 s (benches/README.md).
        // One list for every part: it grows once, not per part.
        let mut changed = ChangedKeys::default();
        for (n, part) in newest.parts(TRANSACTION_RECORDS).enumerate() {
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
                write_in_order(&mut table, part, &mut changed)?;
            }
            changed.log(&txn)?;
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

    fn scan(
        &self,
        prefixes: &[Vec<u8>],
        visit: &mut ScanVisitor,
    ) -> Result<Option<LogPosition>, OnlineError> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let position = log_position(&txn)?;
        let table = match txn.open_table(TABLE) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(position),
            Err(e) => return Err(redb_error(e)),
        };
        for prefix in prefixes {
            for entry in table.range(prefix.as_slice()..).map_err(redb_error)? {
                let (key, value) = entry.map_err(redb_error)?;
                if !key.value().starts_with(prefix) {
                    break;
                }
                visit(key.value(), value.value())?;
            }
        }
        Ok(position)
    }

    fn changed_since(
        &self,
        since: LogPosition,
        prefixes: &[Vec<u8>],
    ) -> Result<Option<(Vec<KeyedRecord>, LogPosition)>, OnlineError> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let Some(now) = log_position(&txn)? else {
            return Ok(None);
        };
        let changes = match txn.open_table(CHANGES) {
            Ok(changes) => changes,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(redb_error(e)),
        };
        let first = changes
            .first()
            .map_err(redb_error)?
            .map_or(now.at + 1, |(k, _)| k.value());
        // Another log (the store was rebuilt or replaced), entries after
        // `since` dropped, or a position this log never reached: the log
        // cannot say what changed.
        if since.log != now.log || since.at.saturating_add(1) < first || since.at > now.at {
            return Ok(None);
        }
        let mut keys = Vec::new();
        for entry in changes
            .range(since.at.saturating_add(1)..)
            .map_err(redb_error)?
        {
            let (_, list) = entry.map_err(redb_error)?;
            let read = logged_keys(list.value(), |key| {
                if prefixes.iter().any(|p| key.starts_with(p)) {
                    keys.push(key.to_vec());
                }
            });
            // A damaged entry cannot say what changed.
            if read.is_none() {
                return Ok(None);
            }
        }
        keys.sort_unstable();
        keys.dedup();
        let mut records = Vec::with_capacity(keys.len());
        if !keys.is_empty() {
            let table = txn.open_table(TABLE).map_err(redb_error)?;
            for key in keys {
                if let Some(value) = table.get(key.as_slice()).map_err(redb_error)? {
                    let value = value.value().to_vec();
                    records.push((key, value));
                }
            }
        }
        Ok(Some((records, now)))
    }

    fn blocks_on_network(&self) -> bool {
        false
    }
}

impl RedbStore {
    /// One value of the edge's own state, as last committed.
    pub fn edge_state(&self, name: &str) -> Result<Option<Vec<u8>>, OnlineError> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let table = match txn.open_table(EDGE) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(redb_error(e)),
        };
        let value = table.get(name).map_err(redb_error)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// Applies an edge's new state in one durable transaction: with
    /// `replace`, every record is removed first (a full bundle); the
    /// records are then written newer-wins, and `state` is stored beside
    /// them. A crash leaves the old state or the new one, never a mix.
    pub fn replace_state(
        &self,
        replace: bool,
        records: &[KeyedRecord],
        state: &[(&str, &[u8])],
    ) -> Result<(), OnlineError> {
        let mut txn = self.db.begin_write().map_err(redb_error)?;
        txn.set_durability(Durability::Immediate)
            .map_err(redb_error)?;
        if replace {
            txn.delete_table(TABLE).map_err(redb_error)?;
            // Another store's records: positions in the old log mean
            // nothing for them.
            txn.delete_table(CHANGES).map_err(redb_error)?;
            txn.delete_table(CHANGES_V1).map_err(redb_error)?;
            txn.delete_table(LOG_META).map_err(redb_error)?;
        }
        {
            // After a replace the table is empty: every record is new
            // (and spliced in, `write_in_order`).
            let mut table = txn.open_table(TABLE).map_err(redb_error)?;
            let mut changed = ChangedKeys::default();
            write_in_order(&mut table, newest_per_key(records).iter(), &mut changed)?;
            changed.log(&txn)?;
            let mut edge = txn.open_table(EDGE).map_err(redb_error)?;
            for (name, value) in state {
                edge.insert(*name, *value).map_err(redb_error)?;
            }
        }
        crate::durable::crash_point("edge.before_commit");
        txn.commit().map_err(redb_error)?;
        self.commits.wrote();
        Ok(())
    }

    /// How many records the store holds.
    pub fn records(&self) -> Result<u64, OnlineError> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        match txn.open_table(TABLE) {
            Ok(table) => table.len().map_err(redb_error),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(redb_error(e)),
        }
    }
}

/// Keys checked at once for a gap of the tree they all fall into
/// ([`write_in_order`]).
const GAP_RUN: usize = 4_096;

/// Stores each (key, record) of `records` (keys strictly ascending)
/// newer-wins, listing each key in `changed`, in runs of [`GAP_RUN`]. A run
/// whose keys all fall between two stored keys (typically every run of a
/// view's first materialization, and keys past the last stored one) is
/// inserted through a cursor at that gap, which redb buffers and splices in
/// when the cursor closes, or every 1 MiB of pending entries, instead of
/// descending the tree for each key: redb's own insert of a million
/// records in key order took 0.14-0.23 s through a cursor against
/// 0.65-0.79 s through `insert` (benches/README.md). Any other run is
/// written key by key ([`insert_newest`]); finding that out costs one
/// descent per run.
fn write_in_order<'k>(
    table: &mut redb::Table<&[u8], &[u8]>,
    records: impl Iterator<Item = (&'k [u8], &'k [u8])>,
    changed: &mut ChangedKeys<'k>,
) -> Result<(), OnlineError> {
    let mut records = records.peekable();
    let mut run = Vec::with_capacity(GAP_RUN);
    while records.peek().is_some() {
        run.clear();
        run.extend(records.by_ref().take(GAP_RUN));
        write_run(table, &run, changed)?;
    }
    Ok(())
}

/// How [`write_run`] wrote a run.
#[derive(Debug, PartialEq, Eq)]
enum RunWritten {
    /// Through a cursor at the one gap all its keys fall into.
    Spliced,
    /// Key by key: a stored key lies at or between its first and last.
    KeyByKey,
}

/// One run of [`write_in_order`] (keys strictly ascending; an empty run
/// writes nothing).
fn write_run<'k>(
    table: &mut redb::Table<&[u8], &[u8]>,
    run: &[(&'k [u8], &'k [u8])],
    changed: &mut ChangedKeys<'k>,
) -> Result<RunWritten, OnlineError> {
    let (Some((first, _)), Some((last, _))) = (run.first(), run.last()) else {
        return Ok(RunWritten::Spliced);
    };
    // The gap before the smallest stored key at or past `first`.
    let mut gap = table
        .lower_bound_mut(Bound::Included(*first))
        .map_err(redb_error)?;
    let free = match gap.peek_next().map_err(redb_error)? {
        Some((next, _)) => next.value() > *last,
        None => true,
    };
    if free {
        for (key, value) in run {
            changed.push(key);
            gap.insert_before(*key, *value).map_err(redb_error)?;
        }
        gap.close().map_err(redb_error)?;
        return Ok(RunWritten::Spliced);
    }
    gap.close().map_err(redb_error)?;
    for (key, value) in run {
        changed.push(key);
        insert_newest(table, key, value)?;
    }
    Ok(RunWritten::KeyByKey)
}

/// Stores `value` under `key` unless the record stored there is newer
/// ([`supersedes`]), with one B-tree descent per record: insert, and put
/// the stored record back in the rare case it was newer (readers never see
/// the swap: they read committed transactions only).
fn insert_newest(
    table: &mut redb::Table<&[u8], &[u8]>,
    key: &[u8],
    value: &[u8],
) -> Result<(), OnlineError> {
    let kept = match table.insert(key, value).map_err(redb_error)? {
        Some(previous) if !supersedes(value, previous.value()) => Some(previous.value().to_vec()),
        _ => None,
    };
    if let Some(previous) = kept {
        table.insert(key, previous.as_slice()).map_err(redb_error)?;
    }
    Ok(())
}

/// The keys one transaction wrote, as its change-log entry lists them.
#[derive(Default)]
struct ChangedKeys<'k> {
    list: Vec<u8>,
    before: &'k [u8],
}

impl<'k> ChangedKeys<'k> {
    fn push(&mut self, key: &'k [u8]) {
        let shared = crate::codec::shared_prefix(self.before, key);
        push_varint(&mut self.list, shared as u64);
        push_varint(&mut self.list, (key.len() - shared) as u64);
        self.list.extend(&key[shared..]);
        self.before = key;
    }

    /// Appends the entry to the change log, in `txn`, drops the oldest
    /// entries beyond [`CHANGE_LOG_BYTES`] (never the newest), and starts
    /// the next entry.
    fn log(&mut self, txn: &WriteTransaction) -> Result<(), OnlineError> {
        let list = &self.list;
        if list.is_empty() {
            return Ok(());
        }
        let mut changes = txn.open_table(CHANGES).map_err(redb_error)?;
        let mut meta = txn.open_table(LOG_META).map_err(redb_error)?;
        if meta.get("id").map_err(redb_error)?.is_none() {
            meta.insert("id", rand::random::<u64>())
                .map_err(redb_error)?;
        }
        let next = meta
            .get("at")
            .map_err(redb_error)?
            .map_or(1, |v| v.value() + 1);
        meta.insert("at", next).map_err(redb_error)?;
        let mut bytes = meta
            .get("bytes")
            .map_err(redb_error)?
            .map_or(0, |v| v.value());
        bytes += list.len() as u64;
        changes.insert(next, list.as_slice()).map_err(redb_error)?;
        while bytes > CHANGE_LOG_BYTES {
            let Some((first, size)) = changes
                .first()
                .map_err(redb_error)?
                .map(|(k, v)| (k.value(), v.value().len() as u64))
            else {
                break;
            };
            if first == next {
                break;
            }
            changes.remove(first).map_err(redb_error)?;
            bytes -= size;
        }
        meta.insert("bytes", bytes).map_err(redb_error)?;
        self.list.clear();
        self.before = &[];
        Ok(())
    }
}

fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn read_varint(input: &mut &[u8]) -> Option<usize> {
    let mut n: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        n |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return usize::try_from(n).ok();
        }
    }
    None
}

/// Visits the keys of one change-log entry in the order they were written;
/// `None` when the entry is damaged.
fn logged_keys(mut list: &[u8], mut visit: impl FnMut(&[u8])) -> Option<()> {
    let mut key = Vec::new();
    while !list.is_empty() {
        let shared = read_varint(&mut list)?;
        let len = read_varint(&mut list)?;
        if shared > key.len() || len > list.len() {
            return None;
        }
        key.truncate(shared);
        key.extend_from_slice(&list[..len]);
        list = &list[len..];
        visit(&key);
    }
    Some(())
}

/// The change log's identity and newest position, as `txn` sees them;
/// `None` before anything was written.
fn log_position(txn: &redb::ReadTransaction) -> Result<Option<LogPosition>, OnlineError> {
    let meta = match txn.open_table(LOG_META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(redb_error(e)),
    };
    let id = meta.get("id").map_err(redb_error)?.map(|v| v.value());
    let at = meta.get("at").map_err(redb_error)?.map(|v| v.value());
    Ok(id.zip(at).map(|(log, at)| LogPosition { log, at }))
}

#[cfg(test)]
mod tests;
