//! Registry browsing over HTTP: `GET /registry` (the applied version in
//! numbers), `/registry/{kind}` and `/registry/{kind}/{name}` for every
//! kind of object, and `/registry/versions[/{version}]` (the list a page at
//! a time: `?offset=&limit=`). Objects come from
//! the same browsing use case as `wafer registry list|show`; feature views
//! carry `last_materialization`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json_;
use utoipa::{IntoParams, ToSchema};

use crate::registry::ObjectKind;
use crate::server::error::{ApiError, ErrorBody};
use crate::server::request::run_store;
use crate::server::AppState;

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

impl From<crate::browse::RegistrySummary> for RegistrySummary {
    fn from(summary: crate::browse::RegistrySummary) -> Self {
        RegistrySummary {
            entities: summary.count(ObjectKind::Entity),
            sources: summary.count(ObjectKind::Source),
            feature_views: summary.count(ObjectKind::FeatureView),
            feature_services: summary.count(ObjectKind::FeatureService),
            push_sources: summary.count(ObjectKind::PushSource),
            request_sources: summary.count(ObjectKind::RequestSource),
            on_demand_feature_views: summary.count(ObjectKind::OnDemandFeatureView),
            project: summary.project,
            version: summary.version,
            created_at: summary.created_at.to_rfc3339(),
            author: summary.author,
        }
    }
}

/// The applied registry version, in numbers.
#[utoipa::path(get, path = "/registry", responses((status = 200, body = RegistrySummary)), tag = "registry")]
pub async fn registry_summary(
    State(state): State<AppState>,
) -> Result<Json<RegistrySummary>, ApiError> {
    let summary = run_store(&state, false, |store| store.registry_summary()).await?;
    Ok(Json(RegistrySummary::from(summary)))
}

async fn list(state: &AppState, kind: ObjectKind) -> Result<Json<Json_>, ApiError> {
    let objects = run_store(state, false, move |store| store.list_objects(kind)).await?;
    Ok(Json(Json_::Array(objects)))
}

async fn one(state: &AppState, kind: ObjectKind, name: String) -> Result<Json<Json_>, ApiError> {
    let object = run_store(state, false, move |store| store.find_object(kind, &name)).await?;
    Ok(Json(object))
}

macro_rules! browse {
    ($list:ident, $one:ident, $kind:expr, $path:literal, $what:literal) => {
        #[doc = concat!("Every ", $what, " of the applied registry version.")]
        #[utoipa::path(get, path = $path, responses((status = 200, body = Vec<Object>)), tag = "registry")]
        pub async fn $list(State(state): State<AppState>) -> Result<Json<Json_>, ApiError> {
            list(&state, $kind).await
        }

        #[doc = concat!("One ", $what, " by name.")]
        #[utoipa::path(
            get,
            path = concat!($path, "/{name}"),
            params(("name" = String, Path)),
            responses((status = 200, body = Object), (status = 404, body = ErrorBody)),
            tag = "registry"
        )]
        pub async fn $one(
            State(state): State<AppState>,
            Path(name): Path<String>,
        ) -> Result<Json<Json_>, ApiError> {
            one(&state, $kind, name).await
        }
    };
}

browse!(
    list_entities,
    get_entity,
    ObjectKind::Entity,
    "/registry/entities",
    "entity"
);
browse!(
    list_sources,
    get_source,
    ObjectKind::Source,
    "/registry/sources",
    "source"
);
browse!(
    list_feature_services,
    get_feature_service,
    ObjectKind::FeatureService,
    "/registry/feature-services",
    "feature service"
);
browse!(
    list_request_sources,
    get_request_source,
    ObjectKind::RequestSource,
    "/registry/request-sources",
    "request source"
);
browse!(
    list_on_demand_feature_views,
    get_on_demand_feature_view,
    ObjectKind::OnDemandFeatureView,
    "/registry/on-demand-feature-views",
    "on-demand feature view"
);
browse!(
    list_push_sources,
    get_push_source,
    ObjectKind::PushSource,
    "/registry/push-sources",
    "push source"
);

/// Every feature view, each with its newest materialization.
#[utoipa::path(get, path = "/registry/feature-views", responses((status = 200, body = Vec<Object>)), tag = "registry")]
pub async fn list_feature_views(State(state): State<AppState>) -> Result<Json<Json_>, ApiError> {
    list(&state, ObjectKind::FeatureView).await
}

/// One feature view by name, with its newest materialization.
#[utoipa::path(
    get,
    path = "/registry/feature-views/{name}",
    params(("name" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)),
    tag = "registry"
)]
pub async fn get_feature_view(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    one(&state, ObjectKind::FeatureView, name).await
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

/// Versions listed per page by default, and at most.
const VERSIONS_PAGE: usize = 100;
const VERSIONS_PAGE_MAX: usize = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionsPage {
    /// How many of the oldest versions to skip. Without it, the page is
    /// the newest `limit` versions.
    pub offset: Option<usize>,
    /// Versions per page: 100 by default, at most 1000 (more is cut to 1000).
    pub limit: Option<usize>,
}

/// Registry versions, oldest first, a page at a time: the newest 100 by
/// default; `X-Total-Count` tells how many there are. Only the page's
/// versions are read.
#[utoipa::path(
    get,
    path = "/registry/versions",
    params(VersionsPage),
    responses(
        (status = 200, body = Vec<VersionSummary>, headers(("X-Total-Count" = u64, description = "How many versions there are"))),
        (status = 400, body = ErrorBody),
    ),
    tag = "registry"
)]
pub async fn list_versions(
    State(state): State<AppState>,
    page: Result<Query<VersionsPage>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(page) = page.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page.limit.unwrap_or(VERSIONS_PAGE).min(VERSIONS_PAGE_MAX);
    let (total, history) = run_store(&state, false, move |store| {
        Ok(store.registry().history_page(page.offset, limit)?)
    })
    .await?;
    let versions: Vec<VersionSummary> = history
        .into_iter()
        .map(|v| VersionSummary {
            version: v.version,
            created_at: v.created_at.to_rfc3339(),
            author: v.author,
            wafer_version: v.wafer_version,
            changes: v.changes,
        })
        .collect();
    Ok(([("x-total-count", total.to_string())], Json(versions)).into_response())
}

/// One registry version, with its full definitions.
#[utoipa::path(
    get,
    path = "/registry/versions/{version}",
    params(("version" = u64, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)),
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
