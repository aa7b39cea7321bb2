//! Request and response shapes of the HTTP API, and its handlers. Lookup,
//! push and materialize follow Feast's Python feature server
//! (`feast/feature_server.py`), so Feast clients work unchanged.

use std::fmt;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value as Json_;
use utoipa::ToSchema;

use super::error::ApiError;
use super::AppState;
use crate::online::{format_timestamp, EntityRows, OnlineResponse, Value};
use crate::push::PushTarget;
use crate::FeatureRequest;

/// Entity (or pushed) columns: name to one value per row, in the order sent.
#[derive(Debug, Default, ToSchema)]
#[schema(value_type = Object, example = json!({"driver_id": [1001, 1002]}))]
pub struct Columns(pub Vec<(String, Vec<Json_>)>);

impl<'de> Deserialize<'de> for Columns {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ColumnsVisitor;
        impl<'de> Visitor<'de> for ColumnsVisitor {
            type Value = Columns;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of columns: {\"name\": [value, ...]}")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Columns, A::Error> {
                let mut columns: Vec<(String, Vec<Json_>)> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let values = match map.next_value::<Json_>()? {
                        Json_::Array(values) => values,
                        other => {
                            return Err(serde::de::Error::custom(format!(
                                "column '{name}' must be a list of values, got {other}"
                            )))
                        }
                    };
                    if columns.iter().any(|(n, _)| *n == name) {
                        return Err(serde::de::Error::custom(format!(
                            "column '{name}' appears twice"
                        )));
                    }
                    columns.push((name, values));
                }
                Ok(Columns(columns))
            }
        }
        deserializer.deserialize_map(ColumnsVisitor)
    }
}

impl Columns {
    fn into_rows(self) -> EntityRows {
        EntityRows { columns: self.0 }
    }
}

/// Parses a JSON body, answering 400 (malformed) or 413 (too large) with a
/// message naming the problem.
pub(super) fn parse<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(status, "PayloadTooLarge", "request body is too large")
        } else {
            ApiError::new(status, "BadRequest", rejection.body_text())
        }
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

fn check_rows(state: &AppState, rows: &EntityRows) -> Result<usize, ApiError> {
    let count = rows
        .len()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let cap = state.limits.max_entities_per_request;
    if count > cap {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!(
                "{count} rows in one request; the limit is {cap} (server.max_entities_per_request)"
            ),
        ));
    }
    Ok(count)
}

/// Runs blocking store work on the blocking pool, or inline when the
/// store answers in microseconds (moving it would cost more than it takes).
pub(super) async fn run_store<T: Send + 'static>(
    state: &AppState,
    inline: bool,
    work: impl FnOnce(&crate::FeatureStore) -> Result<T, crate::Error> + Send + 'static,
) -> Result<T, ApiError> {
    if inline {
        return work(&state.store).map_err(ApiError::from);
    }
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || work(&store))
        .await
        .map_err(|e| ApiError::internal(format!("request task failed: {e}")))?
        .map_err(ApiError::from)
}

// ---------------------------------------------------------------- lookups

#[derive(Debug, Deserialize, ToSchema)]
pub struct GetOnlineFeaturesRequest {
    /// Join key columns, and request data for on-demand views.
    pub entities: Columns,
    /// `view:feature` references.
    #[serde(default)]
    pub features: Vec<String>,
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
        (status = 400, description = "Malformed JSON, columns of unequal length, bad feature reference", body = super::error::ErrorBody),
        (status = 404, description = "Unknown feature, view or feature service", body = super::error::ErrorBody),
        (status = 413, description = "Body or entity count over the limit", body = super::error::ErrorBody),
        (status = 422, description = "Missing join key or a value of the wrong type", body = super::error::ErrorBody),
        (status = 503, description = "Online store unavailable", body = super::error::ErrorBody),
    ),
    tag = "serving"
)]
pub async fn get_online_features(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let request: GetOnlineFeaturesRequest = parse(body)?;
    let entities = request.entities.into_rows();
    check_rows(&state, &entities)?;
    let service = request.feature_service.clone();
    let selection = match request.feature_service {
        Some(name) => FeatureRequest::Service(name),
        None => FeatureRequest::Features(request.features),
    };
    let full_names = request.full_feature_names;
    let metrics = state.metrics.clone();
    let response = run_store(&state, !state.store_blocks, move |store| {
        let result = store.get_online_features(&selection, full_names, &entities);
        if let Err(crate::Error::OnDemand { view, source }) = &result {
            metrics.observe_on_demand_failure(view, source);
        }
        result
    })
    .await?;
    state.metrics.observe_lookup(&response, response.join_keys);
    state.metrics.observe_on_demand(&response.on_demand_runs);
    if let Some(service) = service {
        state.metrics.observe_service(&service, started.elapsed());
    }
    Ok(Json(OnlineFeaturesResponse::from(response)).into_response())
}

// ------------------------------------------------------------------- push

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
        (status = 400, body = super::error::ErrorBody),
        (status = 413, body = super::error::ErrorBody),
        (status = 422, description = "Unknown push source, missing column or wrong type", body = super::error::ErrorBody),
        (status = 503, body = super::error::ErrorBody),
    ),
    tag = "ingestion"
)]
pub async fn push(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PushResponse>, ApiError> {
    let request: PushRequest = parse(body)?;
    let df = request.df.into_rows();
    check_rows(&state, &df)?;
    let name = request.push_source_name;
    let to = request.to;
    let project_dir = state.store.project_dir().to_path_buf();
    let outcome = run_store(&state, false, move |store| store.push(&name, &df, to)).await?;
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

// ------------------------------------------------------------ materialize

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

#[cfg_attr(not(feature = "offline"), allow(dead_code))]
fn timestamp(field: &str, value: Option<&str>) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    let value = value.ok_or_else(|| ApiError::unprocessable(format!("missing field '{field}'")))?;
    if value.trim() == "now" {
        return Ok(chrono::Utc::now());
    }
    crate::online::parse_timestamp(value)
        .map(chrono::DateTime::from_timestamp_nanos)
        .ok_or_else(|| {
            ApiError::unprocessable(format!(
                "field '{field}': expected an RFC 3339 timestamp, got '{value}'"
            ))
        })
}

/// Copies the latest values with event times in [start_ts, end_ts] into the
/// online store.
#[utoipa::path(
    post,
    path = "/materialize",
    request_body = MaterializeRequest,
    responses(
        (status = 200, body = MaterializeResponse),
        (status = 409, description = "A view is already being materialized"),
        (status = 422, body = super::error::ErrorBody),
        (status = 501, description = "Built without the offline store", body = super::error::ErrorBody),
    ),
    tag = "ingestion"
)]
pub async fn materialize(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: MaterializeRequest = parse(body)?;
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
        Err(no_offline_store())
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
        (status = 409, description = "A view is already being materialized"),
        (status = 422, body = super::error::ErrorBody),
        (status = 501, description = "Built without the offline store", body = super::error::ErrorBody),
    ),
    tag = "ingestion"
)]
pub async fn materialize_incremental(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: MaterializeIncrementalRequest = parse(body)?;
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
        Err(no_offline_store())
    }
}

#[cfg(not(feature = "offline"))]
fn no_offline_store() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "NotImplemented",
        "this build has no offline store (built without the `offline` feature)",
    )
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

// ------------------------------------------------------------- operations

/// 200 when the online store answers, 503 otherwise.
#[utoipa::path(get, path = "/health", responses((status = 200), (status = 503)), tag = "operations")]
pub async fn health(State(state): State<AppState>) -> Response {
    let inline = !state.store_blocks;
    let checked = run_store(&state, inline, |store| {
        store.online_store()?.ping()?;
        Ok(())
    })
    .await;
    match checked {
        Ok(()) => Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unavailable", "message": e.message})),
        )
            .into_response(),
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain")), tag = "operations")]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let history = run_store(&state, false, |store| {
        Ok(store.registry().materializations()?)
    })
    .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&history),
    )
        .into_response())
}

// --------------------------------------------------------------- registry

#[derive(Debug, Serialize, ToSchema)]
pub struct RegistrySummary {
    pub project: String,
    pub version: u64,
    pub created_at: String,
    pub author: String,
    pub entities: usize,
    pub sources: usize,
    pub feature_views: usize,
    pub feature_services: usize,
    pub push_sources: usize,
    pub request_sources: usize,
    pub on_demand_feature_views: usize,
}

/// The applied registry version, in numbers.
#[utoipa::path(get, path = "/registry", responses((status = 200, body = RegistrySummary)), tag = "registry")]
pub async fn registry_summary(
    State(state): State<AppState>,
) -> Result<Json<RegistrySummary>, ApiError> {
    let applied = state.store.applied()?;
    let d = &applied.definitions;
    Ok(Json(RegistrySummary {
        project: state.store.config().project.clone(),
        version: applied.version,
        created_at: applied.created_at.to_rfc3339(),
        author: applied.author.clone(),
        entities: d.entities.len(),
        sources: d.sources.len(),
        feature_views: d.feature_views.len(),
        feature_services: d.feature_services.len(),
        push_sources: d.push_sources.len(),
        request_sources: d.request_sources.len(),
        on_demand_feature_views: d.on_demand_feature_views.len(),
    }))
}

/// Which list of registry objects a browsing endpoint returns.
#[derive(Clone, Copy)]
enum Kind {
    Entities,
    Sources,
    FeatureViews,
    FeatureServices,
    PushSources,
    RequestSources,
    OnDemandFeatureViews,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Entities => "entities",
            Kind::Sources => "sources",
            Kind::FeatureViews => "feature_views",
            Kind::FeatureServices => "feature_services",
            Kind::PushSources => "push_sources",
            Kind::RequestSources => "request_sources",
            Kind::OnDemandFeatureViews => "on_demand_feature_views",
        }
    }

    fn not_found(self, name: &str) -> ApiError {
        let (class, what) = match self {
            Kind::Entities => ("EntityNotFoundException", "entity"),
            Kind::Sources => ("DataSourceObjectNotFoundException", "source"),
            Kind::FeatureViews => ("FeatureViewNotFoundException", "feature view"),
            Kind::FeatureServices => ("FeatureServiceNotFoundException", "feature service"),
            Kind::PushSources => ("PushSourceNotFoundException", "push source"),
            Kind::RequestSources => ("DataSourceObjectNotFoundException", "request source"),
            Kind::OnDemandFeatureViews => {
                ("FeatureViewNotFoundException", "on-demand feature view")
            }
        };
        ApiError::not_found(class, format!("unknown {what} '{name}'"))
    }
}

fn list(state: &AppState, kind: Kind) -> Result<Json_, ApiError> {
    let applied = state.store.applied()?;
    let all = serde_json::to_value(&applied.definitions)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(all.get(kind.key()).cloned().unwrap_or(Json_::Array(vec![])))
}

fn one(state: &AppState, kind: Kind, name: &str) -> Result<Json_, ApiError> {
    list(state, kind)?
        .as_array()
        .and_then(|items| items.iter().find(|item| item["name"] == name))
        .cloned()
        .ok_or_else(|| kind.not_found(name))
}

macro_rules! browse {
    ($list:ident, $one:ident, $kind:expr, $path:literal, $what:literal) => {
        #[doc = concat!("Every ", $what, " of the applied registry version.")]
        #[utoipa::path(get, path = $path, responses((status = 200, body = Vec<Object>)), tag = "registry")]
        pub async fn $list(State(state): State<AppState>) -> Result<Json<Json_>, ApiError> {
            list(&state, $kind).map(Json)
        }

        #[doc = concat!("One ", $what, " by name.")]
        #[utoipa::path(
            get,
            path = concat!($path, "/{name}"),
            params(("name" = String, Path)),
            responses((status = 200, body = Object), (status = 404, body = super::error::ErrorBody)),
            tag = "registry"
        )]
        pub async fn $one(
            State(state): State<AppState>,
            Path(name): Path<String>,
        ) -> Result<Json<Json_>, ApiError> {
            one(&state, $kind, &name).map(Json)
        }
    };
}

browse!(
    list_entities,
    get_entity,
    Kind::Entities,
    "/registry/entities",
    "entity"
);
browse!(
    list_sources,
    get_source,
    Kind::Sources,
    "/registry/sources",
    "source"
);
browse!(
    list_feature_services,
    get_feature_service,
    Kind::FeatureServices,
    "/registry/feature-services",
    "feature service"
);
browse!(
    list_request_sources,
    get_request_source,
    Kind::RequestSources,
    "/registry/request-sources",
    "request source"
);
browse!(
    list_on_demand_feature_views,
    get_on_demand_feature_view,
    Kind::OnDemandFeatureViews,
    "/registry/on-demand-feature-views",
    "on-demand feature view"
);
browse!(
    list_push_sources,
    get_push_source,
    Kind::PushSources,
    "/registry/push-sources",
    "push source"
);

/// Every feature view, each with its newest materialization.
#[utoipa::path(get, path = "/registry/feature-views", responses((status = 200, body = Vec<Object>)), tag = "registry")]
pub async fn list_feature_views(State(state): State<AppState>) -> Result<Json<Json_>, ApiError> {
    let mut views = list(&state, Kind::FeatureViews)?;
    let history = run_store(&state, false, |store| {
        Ok(store.registry().materializations()?)
    })
    .await?;
    if let Some(items) = views.as_array_mut() {
        for item in items {
            add_freshness(item, &history);
        }
    }
    Ok(Json(views))
}

/// One feature view by name, with its newest materialization.
#[utoipa::path(
    get,
    path = "/registry/feature-views/{name}",
    params(("name" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = super::error::ErrorBody)),
    tag = "registry"
)]
pub async fn get_feature_view(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    let mut view = one(&state, Kind::FeatureViews, &name)?;
    let history = run_store(&state, false, |store| {
        Ok(store.registry().materializations()?)
    })
    .await?;
    add_freshness(&mut view, &history);
    Ok(Json(view))
}

fn add_freshness(view: &mut Json_, history: &[crate::registry::MaterializationRecord]) {
    let name = view["name"].as_str().unwrap_or_default().to_string();
    let newest = history
        .iter()
        .filter(|r| r.view == name)
        .max_by_key(|r| r.end);
    if let Some(object) = view.as_object_mut() {
        object.insert(
            "last_materialization".into(),
            serde_json::to_value(newest).unwrap_or(Json_::Null),
        );
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionSummary {
    pub version: u64,
    pub created_at: String,
    pub author: String,
    pub wafer_version: String,
    #[schema(value_type = Vec<Object>)]
    pub changes: Vec<crate::registry::Change>,
}

/// Every registry version, oldest first.
#[utoipa::path(get, path = "/registry/versions", responses((status = 200, body = Vec<VersionSummary>)), tag = "registry")]
pub async fn list_versions(
    State(state): State<AppState>,
) -> Result<Json<Vec<VersionSummary>>, ApiError> {
    let history = run_store(&state, false, |store| Ok(store.registry().history()?)).await?;
    Ok(Json(
        history
            .into_iter()
            .map(|v| VersionSummary {
                version: v.version,
                created_at: v.created_at.to_rfc3339(),
                author: v.author,
                wafer_version: v.wafer_version,
                changes: v.changes,
            })
            .collect(),
    ))
}

/// One registry version, with its full definitions.
#[utoipa::path(
    get,
    path = "/registry/versions/{version}",
    params(("version" = u64, Path)),
    responses((status = 200, body = Object), (status = 404, body = super::error::ErrorBody)),
    tag = "registry"
)]
pub async fn get_version(
    State(state): State<AppState>,
    Path(version): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    let number: u64 = version
        .parse()
        .map_err(|_| ApiError::bad_request(format!("'{version}' is not a version number")))?;
    let found = run_store(&state, false, move |store| {
        Ok(store.registry().version(number)?)
    })
    .await?;
    Ok(Json(
        serde_json::to_value(found).map_err(|e| ApiError::internal(e.to_string()))?,
    ))
}
