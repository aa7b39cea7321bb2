//! [`Error`]: every failure the library reports, one variant per module's
//! own error type; the use cases' own error types ([`PushError`],
//! [`MaterializeError`], [`BrowseError`]) live here too, so that this module
//! depends only on the layers below the use cases. The HTTP server maps each variant to a status with one
//! exhaustive match (`server/error.rs`), so a new variant cannot silently
//! become a 500.

use chrono::{DateTime, Utc};

use crate::config::ConfigError;
use crate::online::OnlineError;
use crate::registry::{ObjectKind, RegistryError, SelectionError};
use crate::transform::TransformError;

#[cfg(feature = "offline")]
use crate::offline::OfflineError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Selection(#[from] SelectionError),
    #[cfg(feature = "offline")]
    #[error(transparent)]
    Offline(#[from] OfflineError),
    #[error(transparent)]
    Online(#[from] OnlineError),
    #[error(transparent)]
    Push(#[from] PushError),
    #[error(transparent)]
    Transform(#[from] TransformError),
    /// An on-demand view's transform failed for this request.
    #[error("on-demand feature view '{view}': {source}")]
    OnDemand {
        view: String,
        source: TransformError,
    },
    /// A training set that cannot be built as asked.
    #[error("{0}")]
    Training(String),
    #[error(transparent)]
    Materialize(#[from] MaterializeError),
    /// These views are being materialized by another request.
    #[error("already materializing: {}", .0.join(", "))]
    Busy(Vec<String>),
    #[error(transparent)]
    Browse(#[from] BrowseError),
    #[error(transparent)]
    Bundle(#[from] crate::bundle::BundleError),
    #[error(transparent)]
    Monitor(#[from] MonitorError),
}

/// Why a skew or drift report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("unknown feature service '{0}'")]
    UnknownService(String),
    /// The report needs logged rows and the service logs none.
    #[error("feature service '{0}' has no `logging:`: nothing it served was logged")]
    NotLogged(String),
    /// A window, file or parameter that cannot be used, named.
    #[error("{0}")]
    Input(String),
    /// The data to compare is not there (no logged rows in the window, a
    /// file without the feature).
    #[error("{0}")]
    NoData(String),
    /// Reading or computing failed.
    #[error("{0}")]
    Engine(String),
    /// Another report is running in this server.
    #[error("a skew or drift report is running on this server: retry when it is done")]
    Busy,
}

/// Why a push failed: refused before anything was written, except
/// [`PushError::Publish`].
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("unknown push source '{0}'")]
    UnknownPushSource(String),
    #[error("{0}")]
    Malformed(String),
    /// A missing column or a value of the wrong type, named.
    #[error("{0}")]
    InvalidInput(String),
    #[error("push source '{push}': {message}")]
    Offline { push: String, message: String },
    /// The online write succeeded, publishing the offline file did not:
    /// retrying the same push is safe.
    #[error("push source '{push}': cannot publish the pushed file ({message}); retrying the push is safe")]
    Publish { push: String, message: String },
}

/// Why a materialization was refused before it started, or stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaterializeError {
    #[error("start {start} is after end {end}")]
    StartAfterEnd {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    #[error("feature view '{0}' is not online (online: false)")]
    NotOnline(String),
    /// The run could not renew its claim on these views in time and
    /// another run took them; it stopped without recording them.
    #[error("the claim on {} lapsed and another run took it; stopped", .0.join(", "))]
    ClaimLost(Vec<String>),
    /// A run panicked (a bug); nothing after the panic was written.
    #[error("the materialization panicked")]
    Panicked,
}

/// Why browsing found nothing to show.
#[derive(Debug, thiserror::Error)]
pub enum BrowseError {
    /// No object of that kind has that name in the applied version.
    #[error("unknown {kind} '{name}'")]
    NotFound { kind: ObjectKind, name: String },
    /// No object of any kind has that name in that version.
    #[error("no object named '{name}' in registry version {version}")]
    NoObjectNamed { name: String, version: u64 },
    /// A definition did not serialize to JSON.
    #[error("cannot encode the registry object as JSON: {0}")]
    Encode(#[from] serde_json::Error),
}
