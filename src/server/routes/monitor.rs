//! `POST /monitor/skew` and `POST /monitor/drift`: the reports of `wafer
//! monitor`, over [`FeatureStore::skew_report`](crate::FeatureStore) and
//! [`FeatureStore::drift_report`](crate::FeatureStore). One report runs at
//! a time, on one DuckDB thread, off the event loop (another gets 429);
//! paths must be relative to the project and stay inside it.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
#[cfg(feature = "offline")]
use axum::response::IntoResponse;
use axum::response::Response;
#[cfg(feature = "offline")]
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::server::error::{ApiError, ErrorBody};
use crate::server::request::parse;
use crate::server::AppState;

/// Most logged rows one skew report compares.
pub const MAX_SKEW_ROWS: usize = 1_000_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SkewRequestBody {
    pub feature_service: String,
    /// Logged rows from this time (RFC 3339 or a date); open when absent.
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    /// The newest this many logged rows (100,000 by default, at most
    /// 1,000,000).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DriftRequestBody {
    pub feature_service: String,
    /// A Parquet file, directory or glob relative to the project,
    /// `logs:FROM..TO` or `source:FROM..TO`.
    pub reference: String,
    pub current: String,
}

/// Replays a feature service's logged lookups offline and compares.
#[utoipa::path(
    post,
    path = "/monitor/skew",
    request_body = SkewRequestBody,
    responses(
        (status = 200, body = crate::monitor::SkewReport),
        (status = 404, description = "Unknown feature service, or no logged rows in the window", body = ErrorBody),
        (status = 422, description = "The service has no logging, or a bad window", body = ErrorBody),
        (status = 429, description = "Another report is running", body = ErrorBody),
        (status = 501, description = "Built without the offline store", body = ErrorBody),
    ),
    tag = "monitoring"
)]
pub async fn skew(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: SkewRequestBody = parse(&state, body).await?;
    #[cfg(feature = "offline")]
    {
        use crate::monitor::{parse_end, skew::SkewRequest, Window};
        let limit = request.limit.unwrap_or(100_000);
        if limit == 0 || limit > MAX_SKEW_ROWS {
            return Err(
                crate::Error::from(crate::error::MonitorError::Input(format!(
                    "limit {limit} is not in 1..={MAX_SKEW_ROWS}"
                )))
                .into(),
            );
        }
        let window = Window {
            from: parse_end(request.from.as_deref().unwrap_or(""))
                .map_err(|e| ApiError::from(crate::Error::from(e)))?,
            to: parse_end(request.to.as_deref().unwrap_or(""))
                .map_err(|e| ApiError::from(crate::Error::from(e)))?,
        };
        let request = SkewRequest {
            feature_service: request.feature_service,
            window,
            limit,
            threads: Some(1),
        };
        run_report(&state, move |store| {
            serde_json::to_value(store.skew_report(&request)?)
                .map_err(|e| crate::error::MonitorError::Engine(e.to_string()).into())
        })
        .await
    }
    #[cfg(not(feature = "offline"))]
    {
        let _ = (state, request);
        Err(super::no_offline_store())
    }
}

/// Compares a feature service's feature distributions.
#[utoipa::path(
    post,
    path = "/monitor/drift",
    request_body = DriftRequestBody,
    responses(
        (status = 200, body = crate::monitor::DriftReport),
        (status = 404, description = "Unknown feature service, or no such data", body = ErrorBody),
        (status = 422, description = "A path outside the project, a bad window, or logs asked of a service without logging", body = ErrorBody),
        (status = 429, description = "Another report is running", body = ErrorBody),
        (status = 501, description = "Built without the offline store", body = ErrorBody),
    ),
    tag = "monitoring"
)]
pub async fn drift(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: DriftRequestBody = parse(&state, body).await?;
    #[cfg(feature = "offline")]
    {
        use crate::monitor::{drift::DriftRequest, DataSpec};
        let project = state.store.project_dir().to_path_buf();
        let spec = |text: &str| {
            DataSpec::parse_confined(text, &project)
                .map_err(|e| ApiError::from(crate::Error::from(e)))
        };
        let request = DriftRequest {
            reference: spec(&request.reference)?,
            current: spec(&request.current)?,
            feature_service: request.feature_service,
            reference_text: request.reference,
            current_text: request.current,
            threads: Some(1),
        };
        run_report(&state, move |store| {
            serde_json::to_value(store.drift_report(&request)?)
                .map_err(|e| crate::error::MonitorError::Engine(e.to_string()).into())
        })
        .await
    }
    #[cfg(not(feature = "offline"))]
    {
        let _ = (state, request);
        Err(super::no_offline_store())
    }
}

/// Runs a report on the blocking pool if none is running.
#[cfg(feature = "offline")]
async fn run_report(
    state: &AppState,
    work: impl FnOnce(&crate::FeatureStore) -> Result<serde_json::Value, crate::Error> + Send + 'static,
) -> Result<Response, ApiError> {
    let permit = state
        .reports
        .clone()
        .try_acquire_owned()
        .map_err(|_| crate::Error::from(crate::error::MonitorError::Busy))?;
    let store = state.store.clone();
    // The permit lives as long as the work, even if the client leaves.
    let result = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work(&store)
    })
    .await
    .map_err(|e| ApiError::internal(format!("report task failed: {e}")))?;
    Ok(Json(result?).into_response())
}
