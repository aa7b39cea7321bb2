//! The materialization use case: the newest row per entity with an event
//! time in a window, read from the offline sources (DuckDB) and written to
//! the online store view by view, with the outputs of write-time on-demand
//! views beside them; each completed window is recorded in the registry.
//!
//! A run first claims its views, so a second run of a view is refused
//! ([`Error::Busy`]) while the first goes on: in this process
//! ([`crate::store::Claims`]), and, with an online store other processes
//! share (Redis), in the store ([`online::OnlineStore::claim`]). The
//! embedded store needs no shared claim: redb locks its file (sled its
//! directory), so a second process cannot open it at all. A run that loses its
//! shared claim stops before its next write ([`MaterializeError::ClaimLost`]).
//!
//! Reading and writing overlap: DuckDB's chunks are turned into records on
//! the calling thread and gathered into large batches while a writer thread
//! stores the previous batch, with at most one batch waiting between them;
//! the store syncs at the end (redb also per large batch). The claim is
//! checked as each chunk is read, so up to two batches may still be written
//! after it is lost: the same newest rows the other run writes, which
//! newer-wins makes harmless.

pub use crate::error::MaterializeError;
use chrono::{DateTime, Utc};

use crate::registry::MaterializationRecord;
#[cfg(feature = "offline")]
use crate::registry::ViewSelection;
#[cfg(feature = "offline")]
use crate::Error;
#[cfg(feature = "offline")]
use crate::{
    codec::time::nanos,
    on_demand::write_time::WriteTimeViews,
    online::{self, ClaimOutcome, KeyedRecord, OnlineError, SharedClaim},
    registry::Definitions,
    store::Claim,
    view_rows::ViewRows,
    FeatureStore,
};

/// Progress of a materialization, for display.
pub trait MaterializeProgress {
    /// The run holds its views (no other run may start them) and begins.
    fn claimed(&self, _views: &[String]) {}
    /// A view starts, with its window.
    fn view_started(&self, view: &str, start: DateTime<Utc>, end: DateTime<Utc>);
    /// `rows` more rows of `view` are written.
    fn rows_written(&self, view: &str, rows: u64);
    fn view_finished(&self, record: &MaterializationRecord);
}

/// Progress that shows nothing.
pub struct NoProgress;

impl MaterializeProgress for NoProgress {
    fn view_started(&self, _: &str, _: DateTime<Utc>, _: DateTime<Utc>) {}
    fn rows_written(&self, _: &str, _: u64) {}
    fn view_finished(&self, _: &MaterializationRecord) {}
}

#[cfg(feature = "offline")]
impl FeatureStore {
    /// Copies the newest row per entity with an event time in `[start, end]`
    /// from the offline sources into the online store, view by view, and
    /// records each completed window.
    pub fn materialize(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        views: Option<&[String]>,
        progress: &dyn MaterializeProgress,
    ) -> Result<Vec<MaterializationRecord>, Error> {
        if start > end {
            return Err(MaterializeError::StartAfterEnd { start, end }.into());
        }
        let applied = self.applied()?;
        let selected = views_to_materialize(&applied.definitions, views)?;
        let claim = self.claim(&selected)?;
        progress.claimed(&names(&selected));
        let mut done = Vec::new();
        for (i, view) in selected.iter().enumerate() {
            let record =
                self.materialize_view(&applied.definitions, view, (start, end), &claim, progress);
            done.push(self.noted(record, &selected[i..])?);
        }
        Ok(done)
    }

    /// Materializes each view from where its last materialization ended (or
    /// `end` minus its TTL, or the epoch for an unbounded TTL) up to `end`.
    pub fn materialize_incremental(
        &self,
        end: DateTime<Utc>,
        views: Option<&[String]>,
        progress: &dyn MaterializeProgress,
    ) -> Result<Vec<MaterializationRecord>, Error> {
        let applied = self.applied()?;
        let selected = views_to_materialize(&applied.definitions, views)?;
        let claim = self.claim(&selected)?;
        progress.claimed(&names(&selected));
        let history = self.registry().materialization_summary()?;
        let mut done = Vec::new();
        for (i, view) in selected.iter().enumerate() {
            let last_end = history.last(&view.view.name).map(|r| r.end);
            let start = match last_end {
                Some(last) => last,
                None if view.view.ttl.is_unbounded() => DateTime::<Utc>::UNIX_EPOCH,
                // A TTL reaching past the epoch (apply refuses ones over
                // 100 years) starts at the epoch.
                None => chrono::TimeDelta::from_std(view.view.ttl.0)
                    .ok()
                    .and_then(|ttl| end.checked_sub_signed(ttl))
                    .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
                    .max(DateTime::<Utc>::UNIX_EPOCH),
            };
            let start = start.min(end);
            let record =
                self.materialize_view(&applied.definitions, view, (start, end), &claim, progress);
            done.push(self.noted(record, &selected[i..])?);
        }
        Ok(done)
    }

    /// Notes how a view's run ended, while the run still holds its views:
    /// a success clears the view's last failure; a failure is noted on it
    /// and the views the run had not reached (`rest`, the failed one
    /// first), so that nobody sees them released without the failure.
    fn noted(
        &self,
        record: Result<MaterializationRecord, Error>,
        rest: &[ViewSelection],
    ) -> Result<MaterializationRecord, Error> {
        match &record {
            Ok(done) => self.note_materialization(std::slice::from_ref(&done.view), None),
            Err(e) => self.note_materialization(&names(rest), Some(&e.to_string())),
        }
        record
    }

    /// One tick of scheduled materialization (`wafer serve
    /// --materialize-every`, every `every_ms`): if this process is the
    /// first of those sharing the online store to take tick number `tick`,
    /// every view is materialized incrementally up to `end`; `None` when
    /// another process took the tick. A run still holding a view's claim (a
    /// slow run, or a crashed one whose claim has not lapsed yet) fails
    /// this tick with [`Error::Busy`]; a later tick catches up.
    pub fn materialize_scheduled(
        &self,
        every_ms: u64,
        tick: u64,
        end: DateTime<Utc>,
    ) -> Result<Option<Vec<MaterializationRecord>>, Error> {
        // A server that has no registry version loaded leaves the tick to
        // one that has.
        self.applied()?;
        let project = &self.config().project;
        if !self.online_store()?.claim_tick(project, every_ms, tick)? {
            return Ok(None);
        }
        self.materialize_incremental(end, None, &NoProgress)
            .map(Some)
    }

    /// Claims `views` in this process, then in the online store when other
    /// processes share it.
    fn claim(&self, views: &[ViewSelection]) -> Result<RunClaim<'_>, Error> {
        let local = self.claims().claim(views)?;
        let names: Vec<String> = views.iter().map(|v| v.view.name.clone()).collect();
        let shared = match self.online_store()?.claim(&self.config().project, &names)? {
            ClaimOutcome::Local => None,
            ClaimOutcome::Held(claim) => Some(claim),
            ClaimOutcome::Busy(views) => return Err(Error::Busy(views)),
        };
        Ok(RunClaim {
            shared,
            _local: local,
        })
    }

    fn materialize_view(
        &self,
        definitions: &Definitions,
        view: &ViewSelection,
        (start, end): (DateTime<Utc>, DateTime<Utc>),
        claim: &RunClaim,
        progress: &dyn MaterializeProgress,
    ) -> Result<MaterializationRecord, Error> {
        progress.view_started(&view.view.name, start, end);
        let store = self.online_store()?;
        let project = &self.config().project;
        let write_time = WriteTimeViews::over(definitions, &view.view, || self.transforms())?;
        // DuckDB reads (and write-time transforms run) on this thread while
        // a writer thread stores the previous batch: a run costs about the
        // larger of the two, not their sum. The rows (DuckDB's chunks of
        // 2,048, or 4,096 from a window sorted in the process, in key
        // order) are gathered into batches of WRITE_BATCH_BYTES (the
        // first ones smaller, from FIRST_BATCH_BYTES), so an embedded store
        // writes few transactions, each over a key range.
        // The channel holds one batch, so the writer finds the next one
        // ready: four at most are held (the one being gathered, and up to
        // three handed over and not yet freed: waiting, being written or
        // written).
        let (to_writer, from_reader) = std::sync::mpsc::sync_channel::<Vec<KeyedRecord>>(1);
        // Written batches go back to this thread to be freed where they
        // were allocated, when it hands the next one over (a million
        // records are two million allocations: 0.035 s of the writer's
        // time when it freed them itself; more from a thread of their own;
        // benches/README.md).
        let (to_free, spent) = std::sync::mpsc::channel::<Vec<KeyedRecord>>();
        let mut batches = Batches {
            to_writer,
            spent,
            pending: Vec::new(),
            bytes: 0,
            full: FIRST_BATCH_BYTES,
        };
        let mut rows_written = 0;
        std::thread::scope(|scope| -> Result<(), Error> {
            let writer = std::thread::Builder::new()
                .name("materialize-writer".into())
                .spawn_scoped(scope, move || -> Result<(), OnlineError> {
                    for records in from_reader {
                        store.write(&records)?;
                        // Closed only once the reader is done: what it has
                        // not taken back is freed with the channel.
                        let _ = to_free.send(records);
                    }
                    Ok(())
                })
                .map_err(|e| OnlineError::Unavailable(format!("cannot start a writer: {e}")))?;
            let read = self.offline_store().latest_rows(
                view,
                nanos(start),
                nanos(end),
                |rows: ViewRows| {
                    let mut records = online::records_from_rows(project, view, &rows)?;
                    let count = records.len() as u64;
                    if !write_time.is_empty() {
                        records.extend(write_time.records(project, &rows)?);
                    }
                    claim.check()?;
                    // The writer ends early only when it failed: stop
                    // reading; its error is the one reported.
                    if writer.is_finished() {
                        return Err(OnlineError::Unavailable("the writer stopped".into()).into());
                    }
                    batches.add(records)?;
                    rows_written += count;
                    progress.rows_written(&view.view.name, count);
                    Ok::<(), Error>(())
                },
            );
            let read = read.and_then(|_| batches.hand_over());
            // The writer's channel closes: it ends once the last batch is written.
            drop(batches);
            let wrote = writer
                .join()
                .map_err(|_| OnlineError::Unavailable("the writer panicked".into()))?;
            wrote?;
            read.map(|_| ())
        })?;
        store.flush()?;
        let record = MaterializationRecord {
            view: view.view.name.clone(),
            start,
            end,
            rows_written,
            finished_at: Utc::now(),
        };
        claim.check()?;
        // Recorded only once the data is durable: a crash before this point
        // leaves the window to be done again, which rewrites the same rows.
        self.registry().record_materialization(&record)?;
        progress.view_finished(&record);
        Ok(record)
    }
}

/// Memory held by one batch of records written during a materialization
/// (four at most are held: the one being gathered, and up to three handed
/// over and not yet freed). DuckDB returns rows in the byte order of their keys
/// (`offline::latest`), so each batch covers a range of keys and touches
/// only its pages: batches of 8, 16, 32 and 128 MiB all wrote a million
/// records in 2.6-3.2 s. Without that order (key types whose order is
/// approximate), random keys touch most of the tree's pages per batch: redb
/// then wrote a million records in 7.0 s in batches of 65,536, 2.75 s in
/// batches of 524,288 and 2.2 s in one (benches/README.md).
#[cfg(feature = "offline")]
const WRITE_BATCH_BYTES: usize = 16 << 20;

/// The first batch's size, each next one twice the one before up to
/// [`WRITE_BATCH_BYTES`]: the writer starts after about 5,000 records of
/// the example's size instead of 80,000, and finds the next batch ready
/// instead of waiting for a full one. A view's first 15 MiB are four
/// commits instead of one; for keys whose order only approximates their
/// bytes, those small batches touch more pages each.
#[cfg(feature = "offline")]
const FIRST_BATCH_BYTES: usize = 1 << 20;

/// Records gathered for the writer thread.
#[cfg(feature = "offline")]
struct Batches {
    to_writer: std::sync::mpsc::SyncSender<Vec<KeyedRecord>>,
    /// Batches written, to be freed.
    spent: std::sync::mpsc::Receiver<Vec<KeyedRecord>>,
    pending: Vec<KeyedRecord>,
    bytes: usize,
    /// The size at which the batch being gathered is handed over.
    full: usize,
}

#[cfg(feature = "offline")]
impl Batches {
    /// Gathers `records`, handing the batch over once it is full (the
    /// first ones small, so the writer starts at once).
    fn add(&mut self, records: Vec<KeyedRecord>) -> Result<(), Error> {
        self.bytes += records.iter().map(held_bytes).sum::<usize>();
        self.pending.extend(records);
        if self.bytes >= self.full {
            self.full = (2 * self.full).min(WRITE_BATCH_BYTES);
            self.hand_over()?;
        }
        Ok(())
    }

    /// Hands what is gathered to the writer, waiting while a batch is
    /// already waiting. A closed channel means the writer failed: its error
    /// is the one reported.
    fn hand_over(&mut self) -> Result<(), Error> {
        self.bytes = 0;
        self.spent.try_iter().for_each(drop);
        let batch = std::mem::take(&mut self.pending);
        if batch.is_empty() {
            return Ok(());
        }
        self.to_writer
            .send(batch)
            .map_err(|_| OnlineError::Unavailable("the writer stopped".into()).into())
    }
}

/// The names of the views of a run.
#[cfg(feature = "offline")]
fn names(views: &[ViewSelection]) -> Vec<String> {
    views.iter().map(|v| v.view.name.clone()).collect()
}

/// Memory a record holds: its bytes, two vector headers and two
/// allocations' overhead.
#[cfg(feature = "offline")]
fn held_bytes((key, value): &KeyedRecord) -> usize {
    key.capacity() + value.capacity() + 2 * std::mem::size_of::<Vec<u8>>() + 32
}

/// A run's claim on its views, released when dropped.
#[cfg(feature = "offline")]
struct RunClaim<'a> {
    /// Released first (fields drop in order), then the in-process claim.
    shared: Option<Box<dyn SharedClaim>>,
    _local: Claim<'a>,
}

#[cfg(feature = "offline")]
impl RunClaim<'_> {
    /// Fails once another run has taken any of the views.
    fn check(&self) -> Result<(), Error> {
        match self.shared.as_ref().map(|claim| claim.lost()) {
            Some(lost) if !lost.is_empty() => Err(MaterializeError::ClaimLost(lost).into()),
            _ => Ok(()),
        }
    }
}

/// The views a materialization covers: those named, else every online view.
#[cfg(feature = "offline")]
fn views_to_materialize(
    definitions: &Definitions,
    views: Option<&[String]>,
) -> Result<Vec<ViewSelection>, Error> {
    let names: Vec<String> = match views {
        Some(names) => names.to_vec(),
        None => definitions
            .feature_views
            .iter()
            .filter(|v| v.online)
            .map(|v| v.name.clone())
            .collect(),
    };
    let mut selected = Vec::new();
    for name in names {
        let view = ViewSelection::for_view(definitions, &name)?;
        if !view.view.online {
            return Err(MaterializeError::NotOnline(name).into());
        }
        selected.push(view);
    }
    Ok(selected)
}

#[cfg(all(test, feature = "offline"))]
mod tests {
    use super::*;
    use crate::registry::Definitions;

    const DEFINITIONS: &str = "
entities: [{name: e, join_keys: [{name: k, type: int64}]}]
sources: [{name: s, path: s.parquet, timestamp_field: t}]
feature_views:
  - {name: a, entities: [e], source: s, features: [{name: x, type: int64}]}
  - {name: b, entities: [e], source: s, features: [{name: y, type: int64}]}
";

    #[test]
    fn a_view_being_materialized_is_refused_until_its_run_ends() {
        let claims = crate::store::Claims::default();
        let definitions: Definitions = serde_saphyr::from_str(DEFINITIONS).unwrap();
        let view = |name| ViewSelection::for_view(&definitions, name).unwrap();
        let first = claims.claim(&[view("a")]).unwrap();
        match claims.claim(&[view("b"), view("a")]) {
            Err(Error::Busy(views)) => assert_eq!(views, vec!["a".to_string()]),
            other => panic!("expected Busy, got {:?}", other.map(|_| ())),
        }
        // Another view is free meanwhile; `a` is free once the run ends.
        drop(claims.claim(&[view("b")]).unwrap());
        drop(first);
        assert!(claims.claim(&[view("a"), view("b")]).is_ok());
    }
}
