//! The probe that picks how a window is read ([`ReadPlan`], see the
//! [parent module](super)): the window's first rows, then a sample of its
//! keys, the sample run beside a read of the window in the process.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::UInt64Array;
use arrow::error::ArrowError;
use duckdb::Connection;

use super::{keyed_rows_query, keys_present, window_rows, Read, ReadPlan, Sorted};
use crate::offline::sql::SourceInput;
use crate::offline::OfflineError;
use crate::registry::ViewSelection;

/// Rows the probe reads from the start of the window.
pub(super) const HEAD_ROWS: usize = 65_536;
/// More rows per key than this in the probe's rows: reduce.
pub(super) const MAX_ROWS_PER_KEY: usize = 2;
/// The probe's sample holds one entity in this many.
pub(super) const SAMPLE_SHARE: u64 = 64;
/// Sampled rows before the sample may decide that keys repeat.
const MIN_SAMPLED_ROWS: usize = 4_096;
/// Sampled keys at which the probe stops and decides on what it saw (16
/// bytes each, about 64 million keys in the window).
const MAX_SAMPLED_KEYS: usize = 1 << 20;

/// How to read a window (see the [parent module](super)), and about how
/// many rows it holds: exactly for a window of fewer than [`HEAD_ROWS`],
/// estimated from the sample for [`ReadPlan::SortAll`] (the rows sampled
/// times [`SAMPLE_SHARE`], at least [`HEAD_ROWS`]; a few percent either
/// way), else at least [`HEAD_ROWS`].
pub fn read_plan(connection: &Connection, window: Window) -> Result<(ReadPlan, u64), OfflineError> {
    match head_plan(connection, window)? {
        Some(decided) => Ok(decided),
        None => sample_plan(connection, window),
    }
}

/// [`read_plan`]'s first step, the window's first [`HEAD_ROWS`] rows:
/// [`ReadPlan::Reduce`] when they repeat keys or are all of it, `None` when
/// the sample must decide ([`sample_plan`]).
pub fn head_plan(
    connection: &Connection,
    window: Window,
) -> Result<Option<(ReadPlan, u64)>, OfflineError> {
    let (rows, present, hash) = window.probed();
    let head = format!("SELECT {hash} AS h FROM ({rows}) WHERE {present} LIMIT {HEAD_ROWS}");
    let mut seen = KeySample::default();
    probe(connection, &head, |h| {
        seen.add(h);
        true
    })?;
    Ok((seen.rows < HEAD_ROWS || seen.repeats()).then_some((ReadPlan::Reduce, seen.rows as u64)))
}

/// [`read_plan`]'s second step, the keys of one entity in
/// [`SAMPLE_SHARE`] over the whole window.
pub fn sample_plan(
    connection: &Connection,
    window: Window,
) -> Result<(ReadPlan, u64), OfflineError> {
    let (rows, present, hash) = window.probed();
    let sample =
        format!("SELECT {hash} AS h FROM ({rows}) WHERE {present} AND {hash} % {SAMPLE_SHARE} = 0");
    let mut seen = KeySample::default();
    probe(connection, &sample, |h| {
        seen.add(h);
        !(seen.rows >= MIN_SAMPLED_ROWS && seen.repeats()) && seen.keys.len() < MAX_SAMPLED_KEYS
    })?;
    Ok(if seen.repeats() {
        (ReadPlan::Reduce, HEAD_ROWS as u64)
    } else {
        let sampled = (seen.rows as u64).saturating_mul(SAMPLE_SHARE);
        (ReadPlan::SortAll, sampled.max(HEAD_ROWS as u64))
    })
}

/// The probe's sample ([`sample_plan`]) and, beside it on `reading` (a
/// second connection to the same database), a read of every row of the
/// window ordered in the process ([`Sorted::read`]), so a wide window's
/// rows do not wait for the sample. The read is stopped and its query
/// interrupted once the sample picks [`ReadPlan::Reduce`] or estimates more
/// rows than `fits` (a read that finished by then is used whatever the
/// plan: its order is exact for any window); its failure then is not the
/// window's.
pub fn sample_beside_read(
    connection: &Connection,
    reading: Connection,
    window: Window,
    budget: usize,
    fits: impl Fn(u64) -> bool,
) -> Result<(ReadPlan, Read), OfflineError> {
    let query = keyed_rows_query(window.view, window.input, window.start, window.end);
    tracing::debug!(%query, "latest rows: read in the process beside the probe's sample");
    let interrupt = reading.interrupt_handle();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| -> Result<(ReadPlan, Read), OfflineError> {
        let (query, stop) = (&query, &stop);
        let read = std::thread::Builder::new()
            .name("latest-read".into())
            .spawn_scoped(scope, move || {
                Sorted::read(&reading, query, window.view, budget, stop)
            })
            .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
        let probed = sample_plan(connection, window);
        let wanted = matches!(probed, Ok((ReadPlan::SortAll, rows)) if fits(rows));
        if !wanted {
            stop.store(true, Ordering::Release);
            interrupt.interrupt();
        }
        let read = read
            .join()
            .map_err(|_| ArrowError::ComputeError("the in-process read panicked".into()))?;
        let (plan, _) = probed?;
        let read = match read {
            Err(e) if !wanted => {
                tracing::debug!(error = %e, "latest rows: the read in the process, stopped");
                Read::Stopped
            }
            read => read?,
        };
        Ok((plan, read))
    })
}

/// One view's rows with an event time in `[start, end]` (UTC nanoseconds,
/// inclusive), as the probe reads them.
#[derive(Clone, Copy)]
pub struct Window<'a> {
    pub view: &'a ViewSelection,
    pub input: &'a SourceInput,
    pub start: i64,
    pub end: i64,
}

impl Window<'_> {
    /// What the probe reads: the window's rows, the condition that their
    /// keys are present, and the keys' hash.
    fn probed(&self) -> (String, String, String) {
        let rows = window_rows(self.view, self.input, self.start, self.end);
        let keys = (0..self.view.join_keys.len())
            .map(|k| format!("k{k}"))
            .collect::<Vec<_>>();
        (
            rows,
            keys_present(self.view),
            format!("hash({})", keys.join(", ")),
        )
    }
}

/// Keys (hashes) seen by the probe, and the rows they were seen in.
#[derive(Default)]
struct KeySample {
    rows: usize,
    keys: HashSet<u64>,
}

impl KeySample {
    fn add(&mut self, hash: u64) {
        self.rows += 1;
        self.keys.insert(hash);
    }

    /// More than [`MAX_ROWS_PER_KEY`] rows per key.
    fn repeats(&self) -> bool {
        self.rows > MAX_ROWS_PER_KEY * self.keys.len()
    }
}

/// Streams the probe's hashes to `visit` until it returns false (the rest
/// of the query is then dropped unread).
fn probe(
    connection: &Connection,
    query: &str,
    mut visit: impl FnMut(u64) -> bool,
) -> Result<(), OfflineError> {
    tracing::debug!(%query, "latest rows: probe");
    let mut statement = connection.prepare(query)?;
    for batch in statement.stream_arrow([])? {
        let batch = batch?;
        let hashes = batch
            .column(0)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .ok_or_else(|| {
                ArrowError::CastError("the probe's key hashes are not UBIGINT".into())
            })?;
        // hash() is never null.
        for &hash in hashes.values() {
            if !visit(hash) {
                return Ok(());
            }
        }
    }
    Ok(())
}
