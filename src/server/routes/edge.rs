//! `GET /edge/bundle`: what an edge server syncs from (`wafer edge sync`,
//! `wafer serve --sync-from`): a bundle (see [`crate::bundle`]) of the
//! records changed since the edge's position, the registry snapshot and
//! the modules the edge lacks. Built off the event loop, one at a time.

use std::collections::HashSet;
use std::sync::OnceLock;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::bundle::BundleRequest;
use crate::server::error::{ApiError, ErrorBody};
use crate::server::AppState;

#[derive(Debug, Deserialize, IntoParams)]
pub struct BundleQuery {
    /// The change-log position the edge holds (its last bundle's
    /// `cursor.at`); with `log` and `registry_version`, only the records
    /// changed after it; omitted for everything.
    pub since: Option<u64>,
    /// The change log `since` is a position in (its last bundle's
    /// `cursor.log`).
    pub log: Option<u64>,
    /// The registry version of the edge's state: changes only when it is
    /// the current one, else everything.
    pub registry_version: Option<u64>,
    /// Feature services, comma-separated; every service by default.
    pub feature_services: Option<String>,
    /// Modules the edge holds, by sha256, comma-separated: not sent again.
    pub modules: Option<String>,
}

/// Bundles being built at once: one (each reads the whole store and is
/// held in memory).
fn builds() -> &'static std::sync::Arc<tokio::sync::Semaphore> {
    static BUILDS: OnceLock<std::sync::Arc<tokio::sync::Semaphore>> = OnceLock::new();
    BUILDS.get_or_init(|| std::sync::Arc::new(tokio::sync::Semaphore::new(1)))
}

/// A bundle for an edge server: every record of the selected services'
/// views, or, with `since`, only those written after it (everything again
/// when the change log no longer reaches back).
#[utoipa::path(
    get,
    path = "/edge/bundle",
    params(BundleQuery),
    responses(
        (status = 200, description = "The bundle (application/octet-stream)", content_type = "application/octet-stream"),
        (status = 400, description = "A malformed query", body = ErrorBody),
        (status = 404, description = "An unknown feature service", body = ErrorBody),
        (status = 501, description = "The online store cannot be scanned (Redis)", body = ErrorBody),
        (status = 503, description = "Another bundle is being built, or the store is unavailable", body = ErrorBody),
    ),
    tag = "edge"
)]
pub async fn edge_bundle(
    State(state): State<AppState>,
    query: Result<Query<BundleQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let split = |list: Option<String>| -> Vec<String> {
        list.iter()
            .flat_map(|l| l.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    let feature_services = split(query.feature_services);
    let modules_held: HashSet<String> = split(query.modules).into_iter().collect();
    if feature_services.len() > 1_000 || modules_held.len() > 10_000 {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            "too many feature services or modules in the query",
        ));
    }
    let request = BundleRequest {
        feature_services,
        views: Vec::new(),
        entities: None,
        since: query
            .since
            .zip(query.log)
            .map(|(at, log)| crate::online::LogPosition { log, at }),
        registry_version: query.registry_version,
        modules_held,
        source: "wafer serve".into(),
    };
    // One build at a time: a second request gets 503 at once (retrying is
    // safe). The permit goes with the build, so a client that disconnects
    // does not free it while the build still runs.
    let permit = builds()
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::unavailable("another edge bundle is being built: retry later"))?;
    let store = state.store.clone();
    let bytes = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        store.create_bundle(&request)
    })
    .await
    .map_err(|e| ApiError::internal(format!("bundle task failed: {e}")))??;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
