//! `POST /materialize` and `POST /materialize-incremental`: Feast's
//! request shapes, over [`FeatureStore::materialize`](crate::FeatureStore)
//! and its incremental variant. A view already materializing answers 409
//! with Feast's body.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
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
    responses(
        (status = 200, body = MaterializeResponse),
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
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: MaterializeRequest = parse(&state, body).await?;
    #[cfg(feature = "offline")]
    {
        let start = timestamp("start_ts", request.start_ts.as_deref())?;
        let end = timestamp("end_ts", request.end_ts.as_deref())?;
        let views = request.feature_views;
        run_materialization(&state, move |store| {
            store.materialize(start, end, views.as_deref(), &crate::NoProgress)
        })
        .await
    }
    #[cfg(not(feature = "offline"))]
    {
        let _ = (state, request);
        Err(super::no_offline_store())
    }
}

/// Materializes each view from where its last materialization ended up to
/// end_ts.
#[utoipa::path(
    post,
    path = "/materialize-incremental",
    request_body = MaterializeIncrementalRequest,
    responses(
        (status = 200, body = MaterializeResponse),
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
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: MaterializeIncrementalRequest = parse(&state, body).await?;
    #[cfg(feature = "offline")]
    {
        let end = timestamp("end_ts", request.end_ts.as_deref())?;
        let views = request.feature_views;
        run_materialization(&state, move |store| {
            store.materialize_incremental(end, views.as_deref(), &crate::NoProgress)
        })
        .await
    }
    #[cfg(not(feature = "offline"))]
    {
        let _ = (state, request);
        Err(super::no_offline_store())
    }
}

#[cfg(feature = "offline")]
async fn run_materialization(
    state: &AppState,
    work: impl FnOnce(
            &crate::FeatureStore,
        ) -> Result<Vec<crate::registry::MaterializationRecord>, crate::Error>
        + Send
        + 'static,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let result = tokio::task::spawn_blocking(move || work(&store))
        .await
        .map_err(|e| ApiError::internal(format!("materialization task failed: {e}")))?;
    match result {
        Ok(records) => {
            for record in &records {
                state.metrics.observe_materialization(record);
            }
            Ok(Json(MaterializeResponse {
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
            .into_response())
        }
        // Feast's body for a view already materializing.
        Err(crate::Error::Busy(views)) => Ok((
            StatusCode::CONFLICT,
            Json(serde_json::json!({
                "error": format!("already materializing: {}", views.join(", ")),
                "feature_views": views,
            })),
        )
            .into_response()),
        Err(e) => Err(e.into()),
    }
}
