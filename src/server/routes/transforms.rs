//! Transform modules over HTTP: upload (admin), browse (read), rollback
//! (admin). Uploads are validated completely before anything is stored.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::server::error::{ApiError, ErrorBody};
use crate::server::request::{parse, run_store, run_upload};

/// Time an upload's self-check may take beyond compiling.
const UPLOAD_SECONDS: u64 = 60;
use crate::server::AppState;
use crate::transform::{ModuleVersion, TransformSummary, UploadOutcome};

/// Every transform with its active version and schema.
#[utoipa::path(
    get,
    path = "/transforms",
    responses((status = 200, body = Object)),
    tag = "transforms"
)]
pub async fn list_transforms(
    State(state): State<AppState>,
) -> Result<Json<Vec<TransformSummary>>, ApiError> {
    let list = run_store(&state, false, |store| Ok(store.transforms()?.list()?)).await?;
    Ok(Json(list))
}

#[derive(Debug, Serialize)]
pub struct TransformDetail {
    #[serde(flatten)]
    summary: TransformSummary,
    history: Vec<ModuleVersion>,
}

/// One transform: active version, schema and full history.
#[utoipa::path(
    get,
    path = "/transforms/{name}",
    params(("name" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)),
    tag = "transforms"
)]
pub async fn get_transform(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<TransformDetail>, ApiError> {
    let detail = run_store(&state, false, move |store| {
        let transforms = store.transforms()?;
        Ok(TransformDetail {
            summary: transforms.summary(&name)?,
            history: transforms.history(&name)?,
        })
    })
    .await?;
    Ok(Json(detail))
}

/// Uploads a module (the request body, `application/wasm`) as the
/// transform's new active version. Size, structure, imports, exports,
/// schema, compilation and a row-wise self-check are all checked first: a
/// rejected module changes nothing.
#[utoipa::path(
    post,
    path = "/transforms/{name}",
    params(("name" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    responses(
        (status = 200, description = "The same module was already active", body = Object),
        (status = 201, description = "Stored as the new active version", body = Object),
        (status = 413, body = ErrorBody),
        (status = 422, description = "The module is invalid; the message says why", body = ErrorBody),
    ),
    tag = "transforms"
)]
pub async fn upload_transform(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<UploadOutcome>), ApiError> {
    let bytes = body.map_err(|rejection| {
        ApiError::new(rejection.status(), "BadRequest", rejection.body_text())
    })?;
    // Compiling and self-checking cost what the module makes them cost:
    // one upload at a time, on its own niced thread, the self-check's calls
    // ending within UPLOAD_SECONDS of the compile's own limit.
    let deadline = std::time::Instant::now()
        + std::time::Duration::from_millis(state.store.config().transforms.compile_timeout_ms)
        + std::time::Duration::from_secs(UPLOAD_SECONDS);
    let outcome = run_upload(&state, deadline, move |store| {
        store.upload_transform(&name, &bytes)
    })
    .await?;
    let status = if outcome.unchanged {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(outcome)))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RollbackRequest {
    /// A version number from the history (1 is the first), or
    /// `sha256:HEX` (a unique prefix of 8 or more digits will do).
    pub version: String,
}

/// Makes an earlier version active again.
#[utoipa::path(
    post,
    path = "/transforms/{name}/rollback",
    params(("name" = String, Path)),
    request_body = RollbackRequest,
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)),
    tag = "transforms"
)]
pub async fn rollback_transform(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ModuleVersion>, ApiError> {
    let request: RollbackRequest = parse(&state, body).await?;
    let event = run_store(&state, false, move |store| {
        store.rollback_transform(&name, &request.version)
    })
    .await?;
    Ok(Json(event))
}
