//! The coalescing file against a plain byte vector, its hold, its failures
//! and its write-outs beside reads.

use super::*;
use rand::{Rng, SeedableRng};

fn open(path: &std::path::Path) -> CoalescingFile {
    open_with_cache(path, 64 << 20)
}

fn open_with_cache(path: &std::path::Path, cache_bytes: u64) -> CoalescingFile {
    CoalescingFile::open(path, cache_bytes).unwrap()
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

/// No more than half the cache, and [`MAX_HELD_BYTES`], is held: past
/// it, the pages are on the file, each at its offset, before any sync.
#[test]
fn at_most_half_the_cache_is_held() {
    for (cache, hold) in [(16 << 20, 8 << 20), (128 << 20, MAX_HELD_BYTES)] {
        at_most_held(cache, hold);
    }
}

fn at_most_held(cache: u64, hold: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let file = open_with_cache(&path, cache);
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

/// A write-out under way (its pages in flight, `writing` taken, as
/// `write_out` leaves them while it writes): reads answer from the
/// newest of held and in-flight pages, the length counts both, a write
/// overlapping an in-flight page at another length is held, and a sync
/// waits for the write-out, then writes the rest, in order.
#[test]
fn a_write_out_under_way_is_read_from_and_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let file = open(&path);
    let page = |v: u8, len: usize| vec![v; len];
    file.write(0, &page(1, 4096)).unwrap();
    file.write(8192, &page(1, 4096)).unwrap();
    let writing = file.writing.lock().unwrap();
    let in_flight = {
        let mut held = file.held();
        held.bytes = 0;
        held.in_flight = Arc::new(std::mem::take(&mut held.pages));
        file.settle(&held);
        held.in_flight.clone()
    };
    let read = |offset: u64, len: usize| {
        let mut out = vec![0; len];
        file.read(offset, &mut out).unwrap();
        out
    };
    assert_eq!(read(8192, 4096), page(1, 4096));
    assert_eq!(file.len().unwrap(), 12288);
    // Newer than the page in flight at 0, and longer.
    file.write(0, &page(2, 8192)).unwrap();
    assert_eq!(read(0, 4096), page(2, 4096));
    assert_eq!(read(4096, 4096), page(2, 4096));
    assert_eq!(read(8192, 4096), page(1, 4096));
    std::thread::scope(|scope| {
        let sync = scope.spawn(|| file.sync_data());
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!sync.is_finished(), "a sync must wait for the write-out");
        // The write-out finishes: the older pages reach the file first.
        file.write_pages(&in_flight).unwrap();
        let mut held = file.held();
        held.in_flight = Arc::default();
        file.settle(&held);
        drop(held);
        drop(writing);
        sync.join().unwrap().unwrap();
    });
    let mut expected = page(2, 8192);
    expected.extend(page(1, 4096));
    assert_eq!(std::fs::read(&path).unwrap(), expected);
}

/// Readers on other threads never read a page older than the newest
/// write to it that returned before the read began, whatever the
/// writer is doing meanwhile (holding, writing out, syncing). Pages
/// carry their version in every 4 bytes; a read racing the kernel's
/// copy of a newer version may mix two versions, both new enough.
#[test]
fn reads_beside_writes_and_syncs_are_never_older_than_a_finished_write() {
    use std::sync::atomic::AtomicU32;
    const PAGES: u64 = 64;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    // A small hold: write-outs happen often, beside the reads.
    let file = open_with_cache(&path, 512 << 10);
    let page = |version: u32| -> Vec<u8> { version.to_le_bytes().repeat(1024) };
    for n in 0..PAGES {
        file.write(n * 4096, &page(0)).unwrap();
    }
    file.sync_data().unwrap();
    let written: Vec<AtomicU32> = (0..PAGES).map(|_| AtomicU32::new(0)).collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for reader in 0..2u64 {
            let (file, done, written) = (&file, &done, &written);
            scope.spawn(move || {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(reader);
                let mut out = vec![0u8; 4096];
                let mut reads = 0;
                while !done.load(Ordering::Acquire) || reads < 1000 {
                    let n = rng.random_range(0..PAGES);
                    let finished = written[n as usize].load(Ordering::Acquire);
                    file.read(n * 4096, &mut out).unwrap();
                    for word in out.chunks(4) {
                        let version = u32::from_le_bytes(word.try_into().unwrap());
                        assert!(version >= finished, "page {n}: {version} < {finished}");
                    }
                    reads += 1;
                }
            });
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
        for version in 1..4000u32 {
            let n = rng.random_range(0..PAGES);
            file.write(n * 4096, &page(version)).unwrap();
            written[n as usize].store(version, Ordering::Release);
            if version % 97 == 0 {
                file.sync_data().unwrap();
            }
        }
        file.sync_data().unwrap();
        done.store(true, Ordering::Release);
    });
}
