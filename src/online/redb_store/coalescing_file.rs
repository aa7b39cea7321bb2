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
//! A write redb made that was not synced may be lost in a crash. Before,
//! such a write survived a kill -9 (it was in the OS's page cache); now
//! it may not. redb never needs it: every commit it reports durable is
//! synced, and a non-durable commit is only in redb's memory anyway.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

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
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
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
            match copy_from(&held.pages, offset, out) {
                Some(true) => return Ok(()),
                Some(false) => {
                    drop(held);
                    self.write_held()?;
                }
                None => match copy_from(&held.in_flight, offset, out) {
                    Some(true) => return Ok(()),
                    Some(false) => {
                        drop(held);
                        // Waits for the write-out under way.
                        self.write_held()?;
                    }
                    None => {}
                },
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
        let full = {
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
            if let Some(page) = held.pages.insert(offset, data.to_vec()) {
                held.bytes -= page.len();
            }
            held.bytes += data.len();
            self.settle(&held);
            held.bytes >= self.hold
        };
        if full {
            self.write_held()?;
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
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn open(path: &std::path::Path) -> CoalescingFile {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap();
        CoalescingFile::new(file, 64 << 20).unwrap()
    }

    /// A plain byte vector as the file: writes past the end extend it with
    /// zeros, as `pwrite` does.
    fn write_model(model: &mut Vec<u8>, offset: usize, data: &[u8]) {
        if model.len() < offset + data.len() {
            model.resize(offset + data.len(), 0);
        }
        model[offset..offset + data.len()].copy_from_slice(data);
    }

    /// Random writes (whole pages, replaced pages, pages overlapping held
    /// ones at other offsets and lengths, small unaligned writes), reads,
    /// resizes and syncs give what a plain byte vector gives; after each
    /// sync the file itself, read around the backend, is that vector.
    #[test]
    fn held_writes_read_and_sync_like_a_plain_file() {
        for seed in 0..40 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            let file = open(&path);
            let mut model: Vec<u8> = Vec::new();
            for step in 0..400 {
                match rng.random_range(0..20) {
                    0..=11 => {
                        // Offsets within 24 pages, so that writes overlap.
                        let (offset, len) = if rng.random_range(0..4) == 0 {
                            (rng.random_range(0..24 * 4096), rng.random_range(1..6000))
                        } else {
                            (
                                rng.random_range(0..24) * 4096,
                                rng.random_range(1..4) * 4096,
                            )
                        };
                        let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                        file.write(offset as u64, &data).unwrap();
                        write_model(&mut model, offset, &data);
                    }
                    12..=15 if !model.is_empty() => {
                        let offset = rng.random_range(0..model.len());
                        let len = rng.random_range(0..=(model.len() - offset).min(9000));
                        let mut out = vec![0; len];
                        file.read(offset as u64, &mut out).unwrap();
                        assert_eq!(out, model[offset..offset + len], "seed {seed} step {step}");
                    }
                    16 => {
                        let len = rng.random_range(0..30 * 4096);
                        file.set_len(len as u64).unwrap();
                        model.resize(len, 0);
                    }
                    17 => assert_eq!(file.len().unwrap(), model.len() as u64, "seed {seed}"),
                    _ => {
                        file.sync_data().unwrap();
                        assert_eq!(
                            std::fs::read(&path).unwrap(),
                            model,
                            "seed {seed} step {step}"
                        );
                    }
                }
            }
            assert_eq!(file.len().unwrap(), model.len() as u64, "seed {seed}");
            file.close().unwrap();
            drop(file);
            assert_eq!(std::fs::read(&path).unwrap(), model, "seed {seed}");
        }
    }

    /// No more than half the cache is held: past it, the pages are on the
    /// file, each at its offset, before any sync.
    #[test]
    fn at_most_half_the_cache_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = open(&path);
        let hold = 32 << 20;
        let page = |n: usize| -> Vec<u8> { (0..4096).map(|i| (n * 7 + i / 512) as u8).collect() };
        let pages = hold / 4096;
        // In the order redb writes a commit: consecutive pages rarely adjacent.
        for n in (0..pages).step_by(2).chain((1..pages).step_by(2)) {
            if n == pages - 1 {
                assert!(std::fs::read(&path).unwrap().is_empty());
            }
            file.write((n * 4096) as u64, &page(n)).unwrap();
        }
        let on_file = std::fs::read(&path).unwrap();
        assert_eq!(on_file.len(), hold);
        for (n, bytes) in on_file.chunks(4096).enumerate() {
            assert_eq!(bytes, page(n), "page {n}");
        }
    }

    /// A write that cannot reach the file fails the sync after it, and
    /// every call after that (a read-only file here): redb does not see
    /// every failed write itself, so no later sync may succeed without it.
    #[test]
    fn a_held_write_that_fails_fails_every_later_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        let file = CoalescingFile::new(std::fs::File::open(&path).unwrap(), 64 << 20).unwrap();
        file.write(4096, &[1u8; 4096]).unwrap();
        assert!(file.sync_data().is_err());
        assert!(file.sync_data().is_err());
        assert!(file.write(0, &[2u8; 4096]).is_err());
        assert!(file.read(0, &mut [0u8; 4096]).is_err());
        assert!(file.len().is_err());
        assert!(file.set_len(4096).is_err());
        assert!(file.close().is_err());
        assert_eq!(std::fs::read(&path).unwrap(), vec![0u8; 8192]);
    }

    /// Readers on other threads read what was written whatever the
    /// writer is doing meanwhile (holding, writing out, syncing): pages
    /// synced before they start, and pages the writer rewrites, each of
    /// which holds one value throughout (so any version read is whole).
    #[test]
    fn reads_beside_writes_and_syncs_see_whole_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // A small hold: write-outs happen often, beside the reads.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        let file = CoalescingFile::new(file, 256 << 10).unwrap();
        let stable = |n: u64| vec![(n % 251) as u8; 4096];
        for n in 0..64 {
            file.write(n * 4096, &stable(n)).unwrap();
        }
        // Grown first, as redb does before writing past the end.
        file.set_len(128 * 4096).unwrap();
        file.sync_data().unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            for reader in 0..2u64 {
                let (file, done) = (&file, &done);
                scope.spawn(move || {
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(reader);
                    let mut out = vec![0u8; 4096];
                    let mut reads = 0;
                    while !done.load(std::sync::atomic::Ordering::Acquire) || reads < 1000 {
                        let n = rng.random_range(0..128u64);
                        file.read(n * 4096, &mut out).unwrap();
                        if n < 64 {
                            assert_eq!(out, stable(n), "page {n}");
                        } else {
                            // Rewritten pages: one byte value per version.
                            assert!(out.iter().all(|&b| b == out[0]), "page {n} torn");
                        }
                        reads += 1;
                    }
                });
            }
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
            for step in 0..3000u32 {
                let n = rng.random_range(64..128u64);
                file.write(n * 4096, &[step as u8; 4096]).unwrap();
                if step % 97 == 0 {
                    file.sync_data().unwrap();
                }
            }
            file.sync_data().unwrap();
            done.store(true, std::sync::atomic::Ordering::Release);
        });
    }
}
