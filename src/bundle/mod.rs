//! Bundles: one file carrying what an edge server needs to answer lookups
//! without its central store: a registry snapshot, the transform modules
//! its on-demand views pin, and the online records of its views, with a
//! manifest hashing every part ([`format`]). [`create`] makes them from a
//! project; the edge reads them in [`crate::edge`]. Edge sync fetches the
//! same format from a central server, holding only what changed.

pub mod create;
pub mod format;

pub use create::BundleRequest;
pub use format::{Bundle, Manifest, FORMAT_VERSION};

/// Why a bundle cannot be made or used.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Damaged, truncated or not a bundle at all.
    #[error("bundle refused: {0}")]
    Corrupt(String),
    #[error("bundle refused: format version {found}; this wafer reads version {supported}")]
    Version { found: u32, supported: u32 },
    /// A service or view the request names does not exist.
    #[error("{0}")]
    Selection(String),
    /// The source project cannot provide what the bundle needs.
    #[error("cannot make the bundle: {0}")]
    Source(String),
    /// The edge's own state cannot be read or written.
    #[error("edge state: {0}")]
    State(String),
    /// Fetching from the central server failed.
    #[error("sync from {url}: {message}")]
    Sync { url: String, message: String },
}
