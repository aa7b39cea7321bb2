//! `POST /push`: Feast's push request, over [`FeatureStore::push`](crate::FeatureStore::push);
//! `POST /write-to-online-store`: Feast's rows of one view, over
//! [`FeatureStore::write_to_online_store`](crate::FeatureStore::write_to_online_store).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::push::PushTarget;
use crate::server::error::{ApiError, ErrorBody};
use crate::server::request::{check_rows, deadline, parse, run_store, run_transforming, Columns};
use crate::server::AppState;

#[derive(Debug, Deserialize, ToSchema)]
pub struct PushRequest {
    pub push_source_name: String,
    /// Columns: join keys, features, the source's timestamp column(s).
    pub df: Columns,
    #[serde(default)]
    #[schema(value_type = String, example = "online")]
    pub to: PushTarget,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PushResponse {
    /// Rows pushed.
    pub rows: usize,
    /// Online records written (rows times the views fed).
    pub online_records: usize,
    /// The Parquet file an offline push added, relative to the project.
    pub offline_file: Option<String>,
}

/// Writes rows to the online store, the offline source, or both; a batch
/// that fails validation writes nothing anywhere.
#[utoipa::path(
    post,
    path = "/push",
    request_body = PushRequest,
    responses(
        (status = 200, body = PushResponse),
        (status = 400, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, description = "Unknown push source, missing column or wrong type", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    tag = "ingestion"
)]
pub async fn push(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PushResponse>, ApiError> {
    let request: PushRequest = parse(&state, body).await?;
    let df = request.df.into_rows();
    check_rows(&state, &df)?;
    let name = request.push_source_name;
    let to = request.to;
    let project_dir = state.store.project_dir().to_path_buf();
    let outcome = if state.store.push_runs_transforms(&name, to) {
        run_transforming(&state, Some(deadline(&state)), move |store| {
            store.push(&name, &df, to)
        })
        .await?
    } else {
        run_store(&state, false, move |store| store.push(&name, &df, to)).await?
    };
    Ok(Json(PushResponse {
        rows: outcome.rows,
        online_records: outcome.online_records,
        offline_file: outcome.offline_file.map(|path| {
            path.strip_prefix(&project_dir)
                .unwrap_or(&path)
                .display()
                .to_string()
        }),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct WriteToOnlineStoreRequest {
    pub feature_view_name: String,
    /// Columns: join keys, features, `event_timestamp` (or the source's
    /// timestamp column) and optionally `created`.
    pub df: Columns,
    /// Accepted for Feast's client; the server always reads its loaded
    /// registry version.
    #[serde(default)]
    pub allow_registry_cache: Option<bool>,
    /// Accepted for Feast's client; write-time on-demand views over the
    /// view are always computed.
    #[serde(default)]
    pub transform_on_write: Option<bool>,
}

/// Feast's `write_to_online_store` (what its SDK's remote online store
/// sends for `write_to_online_store` and `push`): rows of one feature view
/// written online with the checks, coercion, newer-write-wins and
/// durability of a push to online. Answers `null`, as Feast does.
#[utoipa::path(
    post,
    path = "/write-to-online-store",
    request_body = WriteToOnlineStoreRequest,
    responses(
        (status = 200, description = "`null`"),
        (status = 400, body = ErrorBody),
        (status = 404, description = "Unknown feature view", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, description = "Missing column, wrong type, a view that is not online", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    tag = "ingestion"
)]
pub async fn write_to_online_store(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<()>, ApiError> {
    let request: WriteToOnlineStoreRequest = parse(&state, body).await?;
    let df = request.df.into_rows();
    check_rows(&state, &df)?;
    let view = request.feature_view_name;
    if state.store.view_write_runs_transforms(&view) {
        run_transforming(&state, Some(deadline(&state)), move |store| {
            store.write_to_online_store(&view, df)
        })
        .await?;
    } else {
        run_store(&state, false, move |store| {
            store.write_to_online_store(&view, df)
        })
        .await?;
    }
    Ok(Json(()))
}
