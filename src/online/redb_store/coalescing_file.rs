//! The embedded store's file as redb sees it ([`CoalescingFile`]): redb's
//! own file backend, except that page writes are held until redb needs
//! them on the file, then written in offset order, each run of adjacent
//! pages with one `writev`.
//!
//! redb writes a commit's pages one call per page (4 KiB for the online
//! table's leaves), in the order of its cache's stripes, so no two
//! consecutive calls are adjacent: a million records are some 33,000
//! `pwrite`s. Here, 144 MB written 4 KiB per call took 0.25 s against
//! 0.09 s in calls of 64 KiB or more (benches/README.md).
//!
//! Held pages are written before anything that needs them on the file:
//! a sync (so a durable commit is exactly as durable as redb makes it), a
//! resize, a read of a held page, closing, and a new write overlapping a
//! held page other than by replacing it whole. At most [`HELD_BYTES`] are
//! held. A write redb made that was not synced may be lost in a crash,
//! with or without this file: redb's recovery does not depend on it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Bytes of pages held at most: more than one of a materialization's
/// durable commits writes (about 12 MB), half the store's page cache.
pub const HELD_BYTES: usize = 32 << 20;

/// Pages written in one `writev` at most (Linux takes 1,024).
const PAGES_PER_CALL: usize = 1_024;

/// redb's file backend, with its writes held and written in runs.
#[derive(Debug)]
pub struct CoalescingFile {
    /// Reads, resizes, syncs and locks.
    file: FileBackend,
    /// The same open file, for the held writes: its position is used
    /// only under the `held` lock (`FileBackend` reads and writes at an
    /// offset, never at the position).
    handle: File,
    held: Mutex<Held>,
}

/// Pages written by redb and not yet to the file: disjoint, by offset.
#[derive(Debug, Default)]
struct Held {
    pages: BTreeMap<u64, Vec<u8>>,
    bytes: usize,
}

impl Held {
    /// Whether a held page overlaps `len` bytes at `offset` (pages are
    /// disjoint: only the last one starting before the end can).
    fn overlaps(&self, offset: u64, len: usize) -> bool {
        let end = offset.saturating_add(len as u64);
        self.pages
            .range(..end)
            .next_back()
            .is_some_and(|(start, page)| start + page.len() as u64 > offset)
    }

    /// The end of the last held page.
    fn end(&self) -> u64 {
        self.pages
            .last_key_value()
            .map_or(0, |(start, page)| start + page.len() as u64)
    }
}

impl CoalescingFile {
    /// Wraps `file` (open for reading and writing).
    pub fn new(file: File) -> io::Result<Self> {
        let handle = file.try_clone()?;
        let file = FileBackend::new(file).map_err(io::Error::other)?;
        Ok(CoalescingFile {
            file,
            handle,
            held: Mutex::new(Held::default()),
        })
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        // The held pages stay consistent through a panic elsewhere: each
        // change to them is one insert or one take.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes every held page to the file (given up on a failure: redb
    /// then fails every later use of the database).
    fn write_held(&self, held: &mut Held) -> io::Result<()> {
        let pages = std::mem::take(&mut held.pages);
        held.bytes = 0;
        let mut run: Vec<IoSlice> = Vec::new();
        let (mut start, mut end) = (0, 0);
        for (&offset, page) in &pages {
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

    /// Writes the held pages, then holds the lock while the caller works.
    fn written(&self) -> io::Result<MutexGuard<'_, Held>> {
        let mut held = self.held();
        self.write_held(&mut held)?;
        Ok(held)
    }
}

impl StorageBackend for CoalescingFile {
    fn len(&self) -> io::Result<u64> {
        // What the file's length will be once the held pages are written.
        let held = self.held();
        Ok(self.file.len()?.max(held.end()))
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let mut held = self.held();
        if held.overlaps(offset, out.len()) {
            self.write_held(&mut held)?;
        }
        drop(held);
        match self.file.read(offset, out) {
            // Past the file's end, held pages may make it longer (redb
            // resizes before it writes past the end, so it never gets here).
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                drop(self.written()?);
                self.file.read(offset, out)
            }
            read => read,
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let _held = self.written()?;
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        let _held = self.written()?;
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut held = self.held();
        let replaces = held
            .pages
            .get(&offset)
            .is_some_and(|page| page.len() == data.len());
        if !replaces && held.overlaps(offset, data.len()) {
            self.write_held(&mut held)?;
        }
        if let Some(page) = held.pages.insert(offset, data.to_vec()) {
            held.bytes -= page.len();
        }
        held.bytes += data.len();
        if held.bytes >= HELD_BYTES {
            self.write_held(&mut held)?;
        }
        Ok(())
    }

    fn close(&self) -> io::Result<()> {
        let _held = self.written()?;
        self.file.close()
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
        CoalescingFile::new(file).unwrap()
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

    /// No more than [`HELD_BYTES`] are held: past them, the pages are on
    /// the file before any sync.
    #[test]
    fn at_most_held_bytes_are_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = open(&path);
        let page = vec![7u8; 4096];
        let pages = HELD_BYTES / page.len();
        // In the order redb writes a commit: no two consecutive pages adjacent.
        for n in (0..pages).step_by(2).chain((1..pages).step_by(2)) {
            if n == pages - 1 {
                assert!(std::fs::read(&path).unwrap().is_empty());
            }
            file.write((n * page.len()) as u64, &page).unwrap();
        }
        let on_file = std::fs::read(&path).unwrap();
        assert_eq!(on_file.len(), HELD_BYTES);
        assert!(on_file.iter().all(|&b| b == 7));
    }

    /// A write that cannot reach the file fails the sync after it, which
    /// redb then reports for the commit (a read-only file here).
    #[test]
    fn a_held_write_that_fails_fails_the_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        let file = CoalescingFile::new(std::fs::File::open(&path).unwrap()).unwrap();
        file.write(4096, &[1u8; 4096]).unwrap();
        assert!(file.sync_data().is_err());
        assert_eq!(std::fs::read(&path).unwrap(), vec![0u8; 8192]);
    }
}
