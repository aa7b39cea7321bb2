//! Feature logging: what a feature service serves, written to Parquet in
//! the background.
//!
//! A service with `logging:` ([`crate::registry::FeatureLogging`]) has each
//! lookup's sampled rows handed to [`FeatureLog::record`], which never
//! waits: rows go into a bounded queue, and when it is full they are
//! dropped and counted. A writer thread ([`writer`]) gathers them per
//! service and day and publishes complete Parquet files (written beside
//! their target, synced, renamed) by size, by age and on
//! [`FeatureLog::close`], so a crash loses at most the rows not yet flushed
//! and readers never see a partial file.
//!
//! Rows are laid out as Feast's feature logs are: `__request_id`,
//! `__log_timestamp`, the join keys, the request data fields, and per
//! feature `view__feature`, `view__feature__timestamp` and
//! `view__feature__status`; files live under `PATH/__log_date=YYYY-MM-DD/`.
//! An entity is sampled by a hash of its join key values, so it is logged
//! on every lookup or never.

mod layout;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::codec::Value;
use crate::online::{EntityRows, FieldStatus, OnlineResponse};
use crate::registry::{FeatureService, RegistryVersion, RetrievalPlan};

pub use layout::{Layout, LOG_DATE, LOG_TIMESTAMP, REQUEST_ID, STATUS_SUFFIX, TIMESTAMP_SUFFIX};

/// How the writer batches and how much it queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    /// A service's pending rows are written at least this often.
    pub flush_interval: Duration,
    /// ... and as soon as this many are pending.
    pub flush_rows: usize,
    /// Lookups waiting for the writer; rows of more are dropped.
    pub queue: usize,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            flush_interval: Duration::from_secs(10),
            flush_rows: 100_000,
            queue: 10_000,
        }
    }
}

/// Rows counted per service: queued by lookups, dropped because the queue
/// was full, written in published files, lost to a failed write.
#[derive(Debug, Default)]
pub struct LogCounters {
    pub queued: AtomicU64,
    pub dropped: AtomicU64,
    pub written: AtomicU64,
    pub failed: AtomicU64,
}

/// One lookup's sampled rows, in the columns of its [`Layout`].
struct Rows {
    layout: Arc<Layout>,
    request_id: String,
    log_timestamp: i64,
    count: usize,
    /// Join keys, then request data fields: one column each.
    entity: Vec<Vec<Value>>,
    /// Per feature, in the layout's order.
    features: Vec<LoggedFeature>,
}

/// One feature's sampled values, statuses and event timestamps.
type LoggedFeature = (Vec<Value>, Vec<FieldStatus>, Vec<Option<i64>>);

enum Message {
    Rows(Box<Rows>),
}

/// The handle lookups log through; one per serving process.
pub struct FeatureLog {
    project_dir: PathBuf,
    /// `None` once closed. Lookups only take the read lock.
    sender: RwLock<Option<SyncSender<Message>>>,
    layouts: RwLock<HashMap<String, Arc<Layout>>>,
    counters: RwLock<HashMap<String, Arc<LogCounters>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl FeatureLog {
    /// Starts the writer thread.
    pub fn start(project_dir: &Path, settings: LogSettings) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::sync_channel(settings.queue.max(1));
        let writer = std::thread::Builder::new()
            .name("wafer-feature-log".into())
            .spawn(move || writer::run(receiver, settings))?;
        Ok(FeatureLog {
            project_dir: project_dir.to_path_buf(),
            sender: RwLock::new(Some(sender)),
            layouts: RwLock::new(HashMap::new()),
            counters: RwLock::new(HashMap::new()),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Logs the sampled rows of one lookup of `service` (planned as
    /// `plan`, served as `response`, at `now` in nanoseconds). Never blocks
    /// on the writer.
    pub fn record<M>(
        &self,
        registry: &RegistryVersion,
        service: &FeatureService,
        plan: &RetrievalPlan<M>,
        entities: &EntityRows,
        response: &OnlineResponse,
        now: i64,
    ) {
        let Some(logging) = &service.logging else {
            return;
        };
        let layout = self.layout(registry, service, logging, plan);
        let keys = response.join_keys;
        if layout.keys.len() != keys || layout.features.len() + keys != response.results.len() {
            tracing::warn!(service = %service.name, "a lookup's columns do not match the service's log layout; not logged");
            return;
        }
        let rows = entities.len().unwrap_or(0);
        let sampled: Vec<usize> = (0..rows)
            .filter(|&row| layout.samples(response.results[..keys].iter().map(|c| &c.values[row])))
            .collect();
        if sampled.is_empty() {
            return;
        }
        let pick = |values: &[Value]| sampled.iter().map(|&r| values[r].clone()).collect();
        let mut entity: Vec<Vec<Value>> = response.results[..keys]
            .iter()
            .map(|c| pick(&c.values))
            .collect();
        for (name, value_type) in &layout.request {
            let column = entities
                .column(name)
                .map(|json| {
                    sampled
                        .iter()
                        .map(|&r| {
                            json.get(r)
                                .and_then(|j| Value::from_json(j, value_type).ok())
                                .unwrap_or(Value::Null)
                        })
                        .collect()
                })
                .unwrap_or_else(|| vec![Value::Null; sampled.len()]);
            entity.push(column);
        }
        let features = response.results[keys..]
            .iter()
            .map(|c| {
                (
                    pick(&c.values),
                    sampled.iter().map(|&r| c.statuses[r]).collect(),
                    sampled.iter().map(|&r| c.event_timestamps[r]).collect(),
                )
            })
            .collect();
        let count = sampled.len();
        let counters = layout.counters.clone();
        let message = Message::Rows(Box::new(Rows {
            layout,
            request_id: format!("{:032x}", rand::random::<u128>()),
            log_timestamp: now,
            count,
            entity,
            features,
        }));
        let sent = match &*self.sender.read().unwrap_or_else(|e| e.into_inner()) {
            Some(sender) => match sender.try_send(message) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
            },
            None => false,
        };
        let counter = if sent {
            &counters.queued
        } else {
            &counters.dropped
        };
        counter.fetch_add(count as u64, Ordering::Relaxed);
    }

    /// The layout of `service`'s rows under `registry`'s version, built
    /// once per version.
    fn layout<M>(
        &self,
        registry: &RegistryVersion,
        service: &FeatureService,
        logging: &crate::registry::FeatureLogging,
        plan: &RetrievalPlan<M>,
    ) -> Arc<Layout> {
        if let Some(layout) = self
            .layouts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&service.name)
        {
            if layout.version == registry.version {
                return layout.clone();
            }
        }
        let counters = self
            .counters
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(service.name.clone())
            .or_default()
            .clone();
        let layout = Arc::new(Layout::new(
            &self.project_dir,
            registry,
            service,
            logging,
            plan,
            counters,
        ));
        self.layouts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(service.name.clone(), layout.clone());
        layout
    }

    /// Row counts per service, for metrics.
    pub fn counters(&self) -> Vec<(String, Arc<LogCounters>)> {
        let mut all: Vec<_> = self
            .counters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, counters)| (name.clone(), counters.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Writes every pending row and stops the writer; later rows are
    /// dropped and counted.
    pub fn close(&self) {
        let sender = self
            .sender
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(sender);
        if let Some(writer) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            if writer.join().is_err() {
                tracing::error!("the feature log writer panicked");
            }
        }
    }
}

impl Drop for FeatureLog {
    fn drop(&mut self) {
        self.close();
    }
}
