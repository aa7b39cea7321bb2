//! The HTTP handlers, one module per endpoint group. Each turns a request
//! into one [`FeatureStore`](crate::FeatureStore) call and its answer into a
//! response; lookup, push and materialize keep the shapes of Feast's Python
//! feature server (`feast/feature_server.py`), so Feast clients work
//! unchanged.
//!
//! - [`lookup`]: `POST /get-online-features`;
//! - [`push`]: `POST /push`, `POST /write-to-online-store`;
//! - [`materialize`]: `POST /materialize`, `POST /materialize-incremental`;
//! - [`registry`]: `GET /registry/...`;
//! - [`transforms`]: `GET|POST /transforms/...`;
//! - [`operations`]: `GET /health`, `GET /metrics`;
//! - [`monitor`]: `POST /monitor/skew`, `POST /monitor/drift`;
//! - [`edge`]: `GET /edge/bundle`, what edge servers sync from.

pub mod edge;
pub mod lookup;
pub mod materialize;
pub mod monitor;
pub mod operations;
pub mod push;
pub mod registry;
pub mod transforms;

/// The answer of an endpoint that needs the offline store, in a build
/// without it (the edge build).
#[cfg(not(feature = "offline"))]
fn no_offline_store() -> crate::server::error::ApiError {
    crate::server::error::ApiError::new(
        axum::http::StatusCode::NOT_IMPLEMENTED,
        "NotImplemented",
        "this build has no offline store (built without the `offline` feature)",
    )
}
