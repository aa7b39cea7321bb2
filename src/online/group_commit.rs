//! Group commit for the embedded stores: writes are counted as they
//! complete, and a flush that finds an earlier flush already covering the
//! caller's writes returns at once, so concurrent pushes share one sync
//! instead of syncing one after another.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub(super) struct GroupCommit {
    /// Writes completed so far.
    writes: AtomicU64,
    /// How many of them the last finished sync covers.
    synced: Mutex<u64>,
}

impl GroupCommit {
    /// Records one completed write.
    pub(super) fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::AcqRel);
    }

    /// Makes every write completed before the call durable, running `sync`
    /// only when no finished sync covers them yet.
    pub(super) fn flush<E>(&self, sync: impl FnOnce() -> Result<(), E>) -> Result<(), E> {
        let wanted = self.writes.load(Ordering::Acquire);
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        if *synced >= wanted {
            return Ok(());
        }
        // Writes finished by now are in memory: this sync covers them.
        let covered = self.writes.load(Ordering::Acquire);
        sync()?;
        *synced = covered;
        Ok(())
    }
}
