//! The embedded store's file as redb sees it ([`CoalescingFile`]): redb's
//! own file backend, except that page writes are held until redb needs
//! them on the file, then written in offset order, each run of adjacent
//! pages with one `writev`.
//!
//! redb writes a commit's pages one call per page (4 KiB for the online
//! table's leaves), in the order of its cache's stripes, so consecutive
//! calls are almost never adjacent: a million records are some 33,000
//! `pwrite`s, against about 260 `writev`s here (benches/README.md).
//!
//! Held pages are written before anything that needs them on the file: a
//! sync (so a durable commit is exactly as durable as redb makes it), a
//! resize, closing, a read that overlaps a held page without lying within
//! one (a read within one is answered from memory), a new write
//! overlapping a held page other than by replacing it whole, and reaching
//! the hold's size (half the store's cache, at most [`MAX_HELD_BYTES`]).
//! Pages are written outside the lock that guards them, so reads of other
//! pages (lookups missing redb's cache) do not wait for a write-out or a
//! sync. Once a write-out fails, every later call fails: redb does not
//! record every failed write itself (its best-effort write-back on the
//! read path ignores the error), so a later sync must not report pages
//! durable that were dropped.
//!
//! Pages keep arriving while a write-out is under way: up to twice the
//! hold is in memory then. The write-out runs on the thread whose write
//! crosses the hold (when no other is under way) or that needs the pages
//! on the file: redb's writer, a sync, or a reader evicting pages of a
//! non-durable commit from redb's cache, which before wrote them one
//! `pwrite` each.
//!
//! This holds for redb's default concurrency mode (one process, one
//! writer), whose only reader of the file is this process, through this
//! backend; the modes shared between processes need every write on the
//! file when it returns.
//!
//! A write redb made that was not synced may be lost in a crash. Before,
//! such a write survived a kill -9 (it was in the OS's page cache); now
//! it may not. redb never needs it: every commit it reports durable is
//! synced, and a non-durable commit is only in redb's memory anyway.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Bytes of pages held at most: more than one of a materialization's
/// durable commits writes (about 12 MB).
pub const MAX_HELD_BYTES: usize = 32 << 20;

/// Pages written in one `writev` at most (Linux takes 1,024).
const PAGES_PER_CALL: usize = 1_024;

/// Pages by offset, disjoint.
type Pages = BTreeMap<u64, Vec<u8>>;

/// redb's file backend, with its writes held and written in runs.
#[derive(Debug)]
pub struct CoalescingFile {
    /// Reads, resizes, syncs and locks.
    file: FileBackend,
    /// The same open file, for the held pages: its position is used only
    /// by a write-out, one at a time (`writing`); on Unix `FileBackend`
    /// reads and writes at an offset, never at the position.
    handle: File,
    /// Bytes held at most.
    hold: usize,
    held: Mutex<Held>,
    /// Pages held or in flight, plus one after a failure, as last set
    /// under `held`'s lock: a read while it is 0 goes straight to the
    /// file, without the lock (a read of a page redb wrote comes after
    /// the write in redb's own order, so it sees the count the write left).
    busy: AtomicUsize,
    /// Taken for a whole write-out, so that write-outs go one at a time,
    /// in order.
    writing: Mutex<()>,
}

#[derive(Debug, Default)]
struct Held {
    /// Written by redb, not yet given to the file.
    pages: Pages,
    bytes: usize,
    /// Being written to the file (by the write-out holding `writing`).
    in_flight: Arc<Pages>,
    /// The first failed write-out: every later call fails with it.
    failed: Option<(io::ErrorKind, String)>,
}

/// The page of `pages` that overlaps `len` bytes at `offset`, if any
/// (pages are disjoint: only the last one starting before the end can).
fn overlapping(pages: &Pages, offset: u64, len: usize) -> Option<(u64, &[u8])> {
    let end = offset.saturating_add(len as u64);
    pages
        .range(..end)
        .next_back()
        .filter(|(start, page)| *start + page.len() as u64 > offset)
        .map(|(start, page)| (*start, page.as_slice()))
}

/// Fills `out` (at `offset`) from the one page of `pages` it lies within:
/// `None` when it overlaps none, `Some(false)` when it overlaps one
/// without lying within it.
fn copy_from(pages: &Pages, offset: u64, out: &mut [u8]) -> Option<bool> {
    let (start, page) = overlapping(pages, offset, out.len())?;
    let bytes = offset
        .checked_sub(start)
        .and_then(|from| usize::try_from(from).ok())
        .and_then(|from| page.get(from..from.checked_add(out.len())?));
    let Some(bytes) = bytes else {
        return Some(false);
    };
    out.copy_from_slice(bytes);
    Some(true)
}

/// The end of the last page of `pages`.
fn end(pages: &Pages) -> u64 {
    pages
        .last_key_value()
        .map_or(0, |(start, page)| start + page.len() as u64)
}

impl Held {
    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, message)) => Err(io::Error::new(
                *kind,
                format!("an earlier write to the embedded store failed: {message}"),
            )),
            None => Ok(()),
        }
    }
}

impl CoalescingFile {
    /// Opens or creates the file at `path`, as redb's `Builder::create`
    /// does ([`CoalescingFile::new`]).
    pub fn open(path: &Path, cache_bytes: u64) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Self::new(file, cache_bytes)
    }

    /// Wraps `file` (open for reading and writing), holding at most half
    /// of `cache_bytes` (the store's cache) and [`MAX_HELD_BYTES`].
    pub fn new(file: File, cache_bytes: u64) -> io::Result<Self> {
        let handle = file.try_clone()?;
        let file = FileBackend::new(file).map_err(io::Error::other)?;
        let hold =
            usize::try_from(cache_bytes / 2).map_or(MAX_HELD_BYTES, |h| h.min(MAX_HELD_BYTES));
        Ok(CoalescingFile {
            file,
            handle,
            hold,
            held: Mutex::new(Held::default()),
            busy: AtomicUsize::new(0),
            writing: Mutex::new(()),
        })
    }

    /// Sets [`CoalescingFile::busy`] from `held` (under its lock).
    fn settle(&self, held: &Held) {
        let busy = held.pages.len() + held.in_flight.len() + usize::from(held.failed.is_some());
        self.busy.store(busy, Ordering::Release);
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        // Each change to the held pages is one insert or one swap: they
        // stay consistent through a panic elsewhere.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes every page held when it is called to the file, after any
    /// write-out already under way; fails once any write-out failed.
    fn write_held(&self) -> io::Result<()> {
        let writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        self.write_out(&writing)
    }

    /// [`CoalescingFile::write_held`], `writing` taken.
    fn write_out(&self, _writing: &MutexGuard<'_, ()>) -> io::Result<()> {
        let pages = {
            let mut held = self.held();
            held.check()?;
            held.bytes = 0;
            held.in_flight = Arc::new(std::mem::take(&mut held.pages));
            self.settle(&held);
            held.in_flight.clone()
        };
        let written = self.write_pages(&pages);
        let mut held = self.held();
        held.in_flight = Arc::default();
        if let Err(e) = &written {
            held.failed = Some((e.kind(), e.to_string()));
        }
        self.settle(&held);
        written
    }

    /// Writes `pages`, each run of adjacent ones with one call.
    fn write_pages(&self, pages: &Pages) -> io::Result<()> {
        let mut run: Vec<IoSlice> = Vec::new();
        let (mut start, mut end) = (0, 0);
        for (&offset, page) in pages {
            if offset != end || run.len() == PAGES_PER_CALL {
                self.write_run(start, &mut run)?;
                run.clear();
                start = offset;
            }
            run.push(IoSlice::new(page));
            end = offset + page.len() as u64;
        }
        self.write_run(start, &mut run)
    }

    /// Writes `run` (adjacent pages) from `offset`.
    fn write_run(&self, offset: u64, mut run: &mut [IoSlice]) -> io::Result<()> {
        if run.is_empty() {
            return Ok(());
        }
        let mut handle = &self.handle;
        handle.seek(SeekFrom::Start(offset))?;
        while !run.is_empty() {
            match handle.write_vectored(run) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut run, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl StorageBackend for CoalescingFile {
    fn len(&self) -> io::Result<u64> {
        // What the file's length will be once the held pages are written.
        let (pages, in_flight) = {
            let held = self.held();
            held.check()?;
            (end(&held.pages), end(&held.in_flight))
        };
        Ok(self.file.len()?.max(pages).max(in_flight))
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        if self.busy.load(Ordering::Acquire) > 0 {
            let held = self.held();
            held.check()?;
            // The newest first: a held page replaces one in flight.
            let answered = copy_from(&held.pages, offset, out)
                .or_else(|| copy_from(&held.in_flight, offset, out));
            drop(held);
            match answered {
                Some(true) => return Ok(()),
                // Overlapping without lying within: from the file, once
                // the pages (and any write-out under way) are there.
                Some(false) => self.write_held()?,
                None => {}
            }
        }
        match self.file.read(offset, out) {
            // Past the file's end, held pages may make it longer (redb
            // resizes before it writes past the end, so only a damaged
            // file gets here).
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.write_held()?;
                self.file.read(offset, out)
            }
            read => read,
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.write_held()?;
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        // No lock is held through the sync: redb makes a commit's writes
        // from the thread that syncs it, before it syncs.
        self.write_held()?;
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let page = data.to_vec();
        let held_bytes = {
            let mut held = self.held();
            loop {
                held.check()?;
                let replaces = held
                    .pages
                    .get(&offset)
                    .is_some_and(|page| page.len() == data.len());
                if replaces || overlapping(&held.pages, offset, data.len()).is_none() {
                    break;
                }
                drop(held);
                self.write_held()?;
                held = self.held();
            }
            if let Some(page) = held.pages.insert(offset, page) {
                held.bytes -= page.len();
            }
            held.bytes += data.len();
            self.settle(&held);
            held.bytes
        };
        if held_bytes >= 2 * self.hold {
            // Pages came in faster than a write-out under way took them.
            self.write_held()?;
        } else if held_bytes >= self.hold {
            // Past the hold, unless another thread is writing out already
            // (it may be a lookup evicting pages of a non-durable commit:
            // better it goes on than waits).
            let writing = match self.writing.try_lock() {
                Ok(writing) => writing,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                Err(TryLockError::WouldBlock) => return Ok(()),
            };
            self.write_out(&writing)?;
        }
        Ok(())
    }

    fn close(&self) -> io::Result<()> {
        // The file's locks are released whether or not the pages got out.
        let written = self.write_held();
        let closed = self.file.close();
        written.and(closed)
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests;
