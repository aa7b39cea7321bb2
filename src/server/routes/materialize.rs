//! `POST /materialize` and `POST /materialize-incremental`: Feast's
//! request shapes, over [`FeatureStore::materialize`](crate::FeatureStore)
//! and its incremental variant. A view already materializing answers 409
//! with Feast's body. With `?async=true` the answer is 202 as soon as the
//! run holds its views, and the run goes on in the background; the view's
//! `state` in `/registry/feature-views` says `MATERIALIZING` meanwhile, and
//! a failure shows there as `last_materialization_error`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
#[cfg(feature = "offline")]
use axum::http::StatusCode;
#[cfg(feature = "offline")]
use axum::response::IntoResponse;
use axum::response::Response;
#[cfg(feature = "offline")]
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::server::error::{ApiError, ErrorBody};
use crate::server::request::parse;
#[cfg(feature = "offline")]
use crate::server::request::timestamp;
use crate::server::AppState;

#[derive(Debug, Deserialize, ToSchema)]
pub struct MaterializeRequest {
    /// Window start: RFC 3339, or a naive date-time taken as UTC.
    pub start_ts: Option<String>,
    /// Window end.
    pub end_ts: Option<String>,
    /// Only these views; every online view by default.
    pub feature_views: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct MaterializeIncrementalRequest {
    pub end_ts: Option<String>,
    pub feature_views: Option<Vec<String>>,
}

/// Feast's query flags of both materialize endpoints.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct MaterializeFlags {
    /// Answer 202 `{"status": "accepted", "feature_views": [...]}` once
    /// the run holds its views, and run in the background.
    #[serde(default, rename = "async", deserialize_with = "flag")]
    #[param(rename = "async", value_type = bool)]
    pub run_async: bool,
    /// Accepted as Feast has it. Wafer has no stuck state to override: a
    /// run's claim ends with the run, or lapses when its server dies, so a
    /// view held by a live run still answers 409.
    #[serde(default, deserialize_with = "flag")]
    #[param(value_type = bool)]
    pub force: bool,
}

/// A query flag as Feast's server (pydantic) reads one: `true`, `True`,
/// `1`, `yes`, `on` and their opposites.
fn flag<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    let text = String::deserialize(deserializer)?;
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "t" | "y" => Ok(true),
        "false" | "0" | "no" | "off" | "f" | "n" => Ok(false),
        _ => Err(serde::de::Error::custom(format!(
            "'{text}' is not a boolean (true or false)"
        ))),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MaterializeResponse {
    pub feature_views: Vec<MaterializedView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MaterializedView {
    pub name: String,
    pub start: String,
    pub end: String,
    pub rows_written: u64,
}

/// Copies the latest values with event times in [start_ts, end_ts] into the
/// online store.
#[utoipa::path(
    post,
    path = "/materialize",
    request_body = MaterializeRequest,
    params(MaterializeFlags),
    responses(
        (status = 200, body = MaterializeResponse),
        (status = 202, description = "With ?async=true: the run holds its views and goes on in the background"),
        (status = 409, description = "A view is being materialized by another run (in any process sharing the online store), or another run took this run's claim"),
        (status = 422, body = ErrorBody),
        (status = 500, description = "Reading the sources failed", body = ErrorBody),
        (status = 501, description = "Built without the offline store", body = ErrorBody),
        (status = 503, description = "The online store failed during the run; nothing is recorded as materialized", body = ErrorBody),
    ),
    tag = "ingestion"
)]
pub async fn materialize(
    State(state): State<AppState>,
    flags: Result<Query<MaterializeFlags>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let flags = flags.map_err(|e| ApiError::bad_request(e.body_text()))?.0;
    let request: MaterializeRequest = parse(&state, body).await?;
    #[cfg(feature = "offline")]
    {
        let start = timestamp("start_ts", request.start_ts.as_deref())?;
        let end = timestamp("end_ts", request.end_ts.as_deref())?;
        let views = request.feature_views;
        run_materialization(&state, flags, move |store, progress| {
            store.materialize(start, end, views.as_deref(), progress)
        })
        .await
    }
    #[cfg(not(feature = "offline"))]
    {
        let _ = (state, request, flags);
        Err(super::no_offline_store())
    }
}

/// Materializes each view from where its last materialization ended up to
/// end_ts.
#[utoipa::path(
    post,
    path = "/materialize-incremental",
    request_body = MaterializeIncrementalRequest,
    params(MaterializeFlags),
    responses(
        (status = 200, body = MaterializeResponse),
        (status = 202, description = "With ?async=true: the run holds its views and goes on in the background"),
        (status = 409, description = "A view is being materialized by another run (in any process sharing the online store), or another run took this run's claim"),
        (status = 422, body = ErrorBody),
        (status = 500, description = "Reading the sources failed", body = ErrorBody),
        (status = 501, description = "Built without the offline store", body = ErrorBody),
        (status = 503, description = "The online store failed during the run; nothing is recorded as materialized", body = ErrorBody),
    ),
    tag = "ingestion"
)]
pub async fn materialize_incremental(
    State(state): State<AppState>,
    flags: Result<Query<MaterializeFlags>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let flags = flags.map_err(|e| ApiError::bad_request(e.body_text()))?.0;
    let request: MaterializeIncrementalRequest = parse(&state, body).await?;
    #[cfg(feature = "offline")]
    {
        let end = timestamp("end_ts", request.end_ts.as_deref())?;
        let views = request.feature_views;
        run_materialization(&state, flags, move |store, progress| {
            store.materialize_incremental(end, views.as_deref(), progress)
        })
        .await
    }
    #[cfg(not(feature = "offline"))]
    {
        let _ = (state, request, flags);
        Err(super::no_offline_store())
    }
}

/// Background runs (`?async=true`) running at once on one server; more get
/// 429.
pub const BACKGROUND_RUNS: usize = 2;

/// A background run's progress: says when it holds its views.
#[cfg(feature = "offline")]
struct Claimed {
    sender: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<Vec<String>>>>,
    views: std::sync::Mutex<Vec<String>>,
}

#[cfg(feature = "offline")]
impl crate::MaterializeProgress for Claimed {
    fn claimed(&self, views: &[String]) {
        *self.views.lock().unwrap_or_else(|e| e.into_inner()) = views.to_vec();
        if let Some(sender) = self.sender.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = sender.send(views.to_vec());
        }
    }
    fn view_started(
        &self,
        _: &str,
        _: chrono::DateTime<chrono::Utc>,
        _: chrono::DateTime<chrono::Utc>,
    ) {
    }
    fn rows_written(&self, _: &str, _: u64) {}
    fn view_finished(&self, _: &crate::registry::MaterializationRecord) {}
}

/// Feast's 409 body for views a run holds.
#[cfg(feature = "offline")]
fn busy(views: Vec<String>, background: bool) -> Response {
    let error = if background {
        format!(
            "Cannot start async materialization — the following feature views are already in MATERIALIZING state: {views:?}. A run's hold ends with the run (or lapses when its server dies)."
        )
    } else {
        format!("already materializing: {}", views.join(", "))
    };
    (
        StatusCode::CONFLICT,
        Json(serde_json::json!({"error": error, "feature_views": views})),
    )
        .into_response()
}

#[cfg(feature = "offline")]
async fn run_materialization(
    state: &AppState,
    flags: MaterializeFlags,
    work: impl FnOnce(
            &crate::FeatureStore,
            &dyn crate::MaterializeProgress,
        ) -> Result<Vec<crate::registry::MaterializationRecord>, crate::Error>
        + Send
        + 'static,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let metrics = state.metrics.clone();
    let (sender, claimed) = tokio::sync::oneshot::channel();
    let background = flags.run_async;
    // Background runs outlive their requests: at most a few at once.
    let permit = if background {
        Some(
            state
                .background_runs
                .clone()
                .try_acquire_owned()
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "TooManyRequests",
                        format!(
                            "{BACKGROUND_RUNS} background materializations are running on this server: retry when one is done"
                        ),
                    )
                })?,
        )
    } else {
        None
    };
    let run = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let progress = Claimed {
            sender: std::sync::Mutex::new(Some(sender)),
            views: std::sync::Mutex::default(),
        };
        // The library notes a failure on the views before it lets them go;
        // a panic is noted here.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&store, &progress)));
        let held = std::mem::take(&mut *progress.views.lock().unwrap_or_else(|e| e.into_inner()));
        let result = result.unwrap_or_else(|_| {
            store.note_materialization(&held, Some("the materialization panicked"));
            Err(crate::Error::Materialize(
                crate::error::MaterializeError::Panicked,
            ))
        });
        match &result {
            Ok(records) => {
                for record in records {
                    metrics.observe_materialization(record);
                }
            }
            // Refused before it held anything (409, a bad view): the
            // request says so.
            Err(e) if background && !held.is_empty() => {
                tracing::error!(views = ?held, error = %e, "background materialization failed");
            }
            Err(_) => {}
        }
        result
    });
    if background {
        // The run holds its views: accepted, it goes on without us.
        if let Ok(views) = claimed.await {
            return Ok((
                StatusCode::ACCEPTED,
                Json(serde_json::json!({"status": "accepted", "feature_views": views})),
            )
                .into_response());
        }
    }
    let result = run
        .await
        .map_err(|e| ApiError::internal(format!("materialization task failed: {e}")))?;
    match result {
        Ok(records) => Ok(Json(MaterializeResponse {
            feature_views: records
                .into_iter()
                .map(|r| MaterializedView {
                    name: r.view,
                    start: r.start.to_rfc3339(),
                    end: r.end.to_rfc3339(),
                    rows_written: r.rows_written,
                })
                .collect(),
        })
        .into_response()),
        Err(crate::Error::Busy(views)) => Ok(busy(views, background)),
        Err(e) => Err(e.into()),
    }
}
