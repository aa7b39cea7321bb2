//! `POST /get-online-features`: Feast's lookup request and response shapes
//! (`feast/feature_server.py`), over [`FeatureStore::get_online_features`](crate::FeatureStore::get_online_features).

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::codec::time::format_timestamp;
use crate::codec::Value;
use crate::online::OnlineResponse;
use crate::server::error::{ApiError, ErrorBody};
use crate::server::request::{
    check_rows, deadline, parse, run_store, run_transforming, Columns, References,
};
use crate::server::AppState;
use crate::FeatureRequest;

#[derive(Debug, Deserialize, ToSchema)]
pub struct GetOnlineFeaturesRequest {
    /// Join key columns, and request data for on-demand views.
    pub entities: Columns,
    /// `view:feature` references.
    #[serde(default)]
    pub features: References,
    /// A feature service; takes precedence over `features`, as in Feast.
    #[serde(default)]
    pub feature_service: Option<String>,
    /// Name features `view__feature`.
    #[serde(default)]
    pub full_feature_names: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OnlineFeaturesResponse {
    pub metadata: ResponseMetadata,
    /// `results[i]` belongs to `metadata.feature_names[i]`.
    pub results: Vec<ResultColumn>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResponseMetadata {
    /// Join keys first, then the features in the order requested.
    pub feature_names: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResultColumn {
    /// One value per entity row.
    #[schema(value_type = Vec<Object>)]
    pub values: Vec<Value>,
    /// `PRESENT`, `NULL_VALUE`, `NOT_FOUND` or `OUTSIDE_MAX_AGE`.
    pub statuses: Vec<&'static str>,
    /// RFC 3339; the epoch for join keys and values not found.
    pub event_timestamps: Vec<String>,
}

const EPOCH: &str = "1970-01-01T00:00:00Z";

impl From<OnlineResponse> for OnlineFeaturesResponse {
    fn from(response: OnlineResponse) -> Self {
        OnlineFeaturesResponse {
            metadata: ResponseMetadata {
                feature_names: response.feature_names,
            },
            results: response
                .results
                .into_iter()
                .map(|column| ResultColumn {
                    statuses: column.statuses.iter().map(|s| s.as_str()).collect(),
                    event_timestamps: column
                        .event_timestamps
                        .iter()
                        .map(|t| t.map_or_else(|| EPOCH.to_string(), format_timestamp))
                        .collect(),
                    values: column.values,
                })
                .collect(),
        }
    }
}

/// Looks up the latest feature values for entity rows.
#[utoipa::path(
    post,
    path = "/get-online-features",
    request_body = GetOnlineFeaturesRequest,
    responses(
        (status = 200, body = OnlineFeaturesResponse),
        (status = 400, description = "Malformed JSON, columns of unequal length, bad feature reference", body = ErrorBody),
        (status = 404, description = "Unknown feature, view or feature service", body = ErrorBody),
        (status = 413, description = "Body or entity count over the limit", body = ErrorBody),
        (status = 422, description = "Missing join key or a value of the wrong type", body = ErrorBody),
        (status = 503, description = "Online store unavailable", body = ErrorBody),
    ),
    tag = "serving"
)]
pub async fn get_online_features(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let request: GetOnlineFeaturesRequest = parse(&state, body).await?;
    let entities = request.entities.into_rows();
    let rows = check_rows(&state, &entities)?;
    let service = request.feature_service.clone();
    let selection = match request.feature_service {
        Some(name) => FeatureRequest::Service(name),
        None => FeatureRequest::Features(request.features.0),
    };
    let full_names = request.full_feature_names;
    let transforming = state.store.lookup_runs_transforms(&selection);
    // Small lookups in the embedded store take microseconds: inline. Larger
    // ones (and their serialization) leave the event loop.
    let cells = rows.saturating_mul(match &selection {
        FeatureRequest::Features(features) => features.len().max(1),
        FeatureRequest::Service(_) => SERVICE_WIDTH,
    });
    let inline = !state.store_blocks && cells <= INLINE_CELLS;
    let metrics = state.metrics.clone();
    // The lookup, its metrics and the response body, in one piece of work.
    let work = move |store: &crate::FeatureStore| {
        let result = store.get_online_features(&selection, full_names, &entities);
        if let Err(crate::Error::OnDemand { view, source }) = &result {
            metrics.observe_on_demand_failure(view, source);
        }
        let response = result?;
        metrics.observe_lookup(&response, response.join_keys);
        metrics.observe_on_demand(&response.on_demand_runs);
        if let Some(service) = &service {
            metrics.observe_service(service, started.elapsed());
        }
        Ok(serde_json::to_vec(&OnlineFeaturesResponse::from(response)))
    };
    let body = if transforming {
        run_transforming(&state, Some(deadline(&state)), work).await?
    } else {
        run_store(&state, inline, work).await?
    };
    let body = body.map_err(|e| ApiError::internal(format!("cannot encode the response: {e}")))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// Lookups of at most this many cells (rows x features) run on the event
/// loop: about a millisecond of work at most. Measured: moving 100 x 3
/// lookups to the blocking pool cost them a fifth of their throughput.
const INLINE_CELLS: usize = 1024;

/// The features a service counts as per row (its width is not known
/// before it is resolved).
const SERVICE_WIDTH: usize = 16;
