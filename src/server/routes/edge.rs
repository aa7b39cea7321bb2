//! `GET /edge/bundle`: what an edge server syncs from (`wafer edge sync`,
//! `wafer serve --sync-from`): a bundle (see [`crate::bundle`]) of the
//! records changed since the edge's position, the registry snapshot and
//! the modules the edge lacks. Built off the event loop, one at a time.

use std::collections::HashSet;
use std::sync::OnceLock;

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
    /// `cursor`); omitted for everything.
    pub since: Option<u64>,
    /// Feature services, comma-separated; every service by default.
    pub feature_services: Option<String>,
    /// Modules the edge holds, by sha256, comma-separated: not sent again.
    pub modules: Option<String>,
}

/// Bundles being built at once: one (each reads the whole store).
fn builds() -> &'static tokio::sync::Semaphore {
    static BUILDS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    BUILDS.get_or_init(|| tokio::sync::Semaphore::new(1))
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
        (status = 404, description = "An unknown feature service", body = ErrorBody),
        (status = 501, description = "The online store cannot be scanned (Redis)", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    tag = "edge"
)]
pub async fn edge_bundle(
    State(state): State<AppState>,
    Query(query): Query<BundleQuery>,
) -> Result<Response, ApiError> {
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
        since: query.since,
        modules_held,
        source: "wafer serve".into(),
    };
    let _permit = builds()
        .acquire()
        .await
        .map_err(|_| ApiError::unavailable("the server is stopping"))?;
    let store = state.store.clone();
    let bytes = tokio::task::spawn_blocking(move || store.create_bundle(&request))
        .await
        .map_err(|e| ApiError::internal(format!("bundle task failed: {e}")))??;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
