//! The online store: the latest feature values per entity, for lookups in
//! milliseconds. Three implementations share one interface: redb, embedded
//! as one file in the data directory (the default), sled, embedded as a
//! directory (the default before redb; still supported), and Redis, shared
//! by several servers.
//!
//! Layouts are documented in [`record`]; a view's rows become records in
//! [`records`]; lookups, with statuses and TTL enforced on read, are in
//! [`lookup`]. A store shared by several processes (Redis) also holds the
//! claims on views being materialized ([`OnlineStore::claim`]), so that
//! two processes do not materialize one view at once.

mod group_commit;
pub mod lookup;
pub mod record;
mod records;
pub mod redb_store;
#[cfg(feature = "redis")]
mod redis_claim;
#[cfg(feature = "redis")]
mod redis_store;
mod sled_store;

use std::path::Path;

use crate::config::{OnlineStoreConfig, OnlineStoreKind};

pub use lookup::{EntityRows, FeatureColumn, FieldStatus, OnDemandRun, OnlineResponse};
pub use records::records_from_rows;

/// Online store failures.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    /// The store cannot be reached or opened; lookups should report 503.
    #[error("online store unavailable: {0}")]
    Unavailable(String),
    #[error("online store configuration: {0}")]
    Config(String),
    /// A request whose shape is wrong (columns of unequal length).
    #[error("{0}")]
    Malformed(String),
    /// A request naming a missing column or holding a value of the wrong type.
    #[error("{0}")]
    InvalidInput(String),
    /// A lookup lacks request data an on-demand view needs (Feast's
    /// `RequestDataNotFoundInEntityRowsException`).
    #[error("{0}")]
    MissingRequestData(String),
    #[error("cannot convert materialized data: {0}")]
    Data(String),
    /// An operation this kind of store does not offer.
    #[error("{0}")]
    Unsupported(String),
}

/// Views claimed for a materialization in every process that shares the
/// store, until dropped (which releases the claim). The claim is kept alive
/// while held and lapses on its own when its holder dies.
pub trait SharedClaim: Send {
    /// Views whose claim another holder has taken since (this holder could
    /// not renew it in time); empty while the claim holds.
    fn lost(&self) -> Vec<String>;
}

/// What [`OnlineStore::claim`] found.
pub enum ClaimOutcome {
    /// The store belongs to this process (an embedded store locks its file
    /// or directory, so no other process can open it): the in-process
    /// claim is enough.
    Local,
    /// Claimed for every process sharing the store.
    Held(Box<dyn SharedClaim>),
    /// Another holder is materializing these views.
    Busy(Vec<String>),
}

/// An encoded key and record, as written to a store.
pub type KeyedRecord = (Vec<u8>, Vec<u8>);

/// Key-value access to encoded records ([`record`]).
pub trait OnlineStore: Send + Sync {
    /// Stores records; each replaces the stored one only if its (event,
    /// created) time is not older.
    fn write(&self, records: &[KeyedRecord]) -> Result<(), OnlineError>;
    /// Reads many keys in one go; `None` where a key is absent.
    fn read(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, OnlineError>;
    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), OnlineError>;
    /// Checks that the store answers (for health checks).
    fn ping(&self) -> Result<(), OnlineError>;
    /// Whether calls wait on the network, so that async callers should move
    /// them off their event loop; an embedded store answers in microseconds.
    fn blocks_on_network(&self) -> bool;
    /// Claims `views` of `project` for a materialization, all or none.
    fn claim(&self, _project: &str, _views: &[String]) -> Result<ClaimOutcome, OnlineError> {
        Ok(ClaimOutcome::Local)
    }
    /// Takes tick `tick` of `project`'s materialization scheduled every
    /// `every_ms`: true for exactly one caller per tick among every process
    /// sharing the store (the first to ask), false for the others. An
    /// embedded store belongs to one process: always true.
    fn claim_tick(&self, _project: &str, _every_ms: u64, _tick: u64) -> Result<bool, OnlineError> {
        Ok(true)
    }
    /// Every record whose key starts with one of `prefixes`, from one
    /// snapshot, to `visit`; returns the snapshot's position in the change
    /// log ([`OnlineStore::changed_since`]), `None` for a store keeping
    /// none. Bundles and edge sync read stores through this.
    fn scan(
        &self,
        _prefixes: &[Vec<u8>],
        _visit: &mut ScanVisitor,
    ) -> Result<Option<LogPosition>, OnlineError> {
        Err(OnlineError::Unsupported(
            "bundles and edge sync read the embedded stores (redb, sled); this project's online store cannot be scanned".into(),
        ))
    }
    /// The records under `prefixes` written after change-log position
    /// `since` (their current values) and the position they reach, from
    /// one snapshot; `None` when the store keeps no log or the log no
    /// longer reaches back to `since`, or is another log (the caller then
    /// scans everything).
    fn changed_since(
        &self,
        _since: LogPosition,
        _prefixes: &[Vec<u8>],
    ) -> Result<Option<(Vec<KeyedRecord>, LogPosition)>, OnlineError> {
        Ok(None)
    }
}

/// A position in a store's change log: the log's identity (a random
/// number drawn when the log starts, so a store rebuilt or replaced starts
/// another) and the last entry seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogPosition {
    pub log: u64,
    pub at: u64,
}

/// What [`OnlineStore::scan`] hands each record to (key, record); an error
/// stops the scan.
pub type ScanVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), OnlineError> + 'a;

/// The error for an embedded store another process holds open.
fn in_use(path: &Path) -> OnlineError {
    OnlineError::Unavailable(format!(
        "the embedded store at {} is in use by another process (a running `wafer serve`?): stop it, or send the command to it over HTTP",
        path.display()
    ))
}

/// Opens the configured online store (see [`OnlineStoreConfig::kind_in`]
/// for the default); redb lives in `data_dir/online.redb`, sled in
/// `data_dir/online`.
pub fn open(
    config: &OnlineStoreConfig,
    data_dir: &Path,
) -> Result<Box<dyn OnlineStore>, OnlineError> {
    match config.kind_in(data_dir).map_err(OnlineError::Config)? {
        OnlineStoreKind::Sled => Ok(Box::new(sled_store::SledStore::open(
            &data_dir.join("online"),
        )?)),
        OnlineStoreKind::Redb => Ok(Box::new(redb_store::RedbStore::open(
            &data_dir.join("online.redb"),
            config.cache_mb.saturating_mul(1 << 20),
        )?)),
        #[cfg(feature = "redis")]
        OnlineStoreKind::Redis => {
            let target = crate::redis_client::RedisTarget::from_config(
                "online_store",
                config.url.as_deref(),
                &config.cluster,
            )
            .map_err(OnlineError::Config)?;
            Ok(Box::new(redis_store::RedisStore::open(
                &target,
                config.key_ttl_seconds,
                std::time::Duration::from_millis(config.claim_ttl_ms),
            )?))
        }
        #[cfg(not(feature = "redis"))]
        OnlineStoreKind::Redis => Err(OnlineError::Config(
            "this build has no Redis support (built without the `redis` feature)".into(),
        )),
    }
}
