//! `wafer serve`: the HTTP feature server (axum on tokio).
//!
//! Handlers ([`routes`], one module per endpoint group) translate HTTP to
//! [`FeatureStore`] calls and back; `request` turns bodies into typed
//! requests within the limits and runs store work off the event loop;
//! `pool` runs the requests that run transforms on a few bounded, niced
//! threads; `auth` guards route groups by role; `metrics` counts
//! everything. The OpenAPI document is
//! collected from the handlers' annotations as they are routed, so it
//! cannot drift from the routes.

mod auth;
mod error;
mod metrics;
mod pool;
mod request;
pub mod routes;
#[cfg(feature = "offline")]
mod schedule;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::Role;
pub use error::ApiError;

use crate::config::ServerConfig;
use crate::FeatureStore;
use error::ErrorClass;
use metrics::Metrics;

/// Per-request limits, from `server` in `wafer.yaml`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub max_entities_per_request: usize,
    pub max_columns_per_request: usize,
    pub max_values_per_request: usize,
}

impl From<&ServerConfig> for Limits {
    fn from(config: &ServerConfig) -> Self {
        Limits {
            max_body_bytes: config.max_body_bytes,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            max_entities_per_request: config.max_entities_per_request,
            max_columns_per_request: config.max_columns_per_request,
            max_values_per_request: config.max_values_per_request,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    store: Arc<FeatureStore>,
    metrics: Arc<Metrics>,
    limits: Limits,
    /// Whether store calls wait on the network (Redis), so they must leave
    /// the event loop; embedded lookups run inline.
    store_blocks: bool,
    /// Where requests that run transforms go.
    transforms: Arc<pool::TransformPool>,
    /// Module uploads (compile and self-check): one at a time, apart from
    /// the lookups' pool.
    uploads: Arc<pool::TransformPool>,
    /// Large bodies being parsed at once (one per core).
    large_parses: Arc<tokio::sync::Semaphore>,
    /// Skew and drift reports: one at a time.
    #[cfg_attr(not(feature = "offline"), allow(dead_code))]
    reports: Arc<tokio::sync::Semaphore>,
    /// Materializations running in the background (`?async=true`).
    #[cfg_attr(not(feature = "offline"), allow(dead_code))]
    background_runs: Arc<tokio::sync::Semaphore>,
}

#[derive(OpenApi)]
#[openapi(info(
    title = "Wafer feature server",
    description = "Feast-compatible online feature serving, push, materialization and registry browsing."
))]
struct ApiDoc;

/// Builds the router and its OpenAPI document.
pub fn router(
    store: Arc<FeatureStore>,
) -> Result<(Router, utoipa::openapi::OpenApi), crate::Error> {
    build(store).map(|(router, openapi, _)| (router, openapi))
}

/// The router, its OpenAPI document and the metrics its handlers record.
fn build(
    store: Arc<FeatureStore>,
) -> Result<(Router, utoipa::openapi::OpenApi, Arc<Metrics>), crate::Error> {
    let config = store.config().server.clone();
    let store_blocks = store.online_store()?.blocks_on_network();
    let workers = config.transform_workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
    });
    let full = format!(
        "the transform pool is full ({workers} running, {} waiting; server.transform_workers, server.transform_queue): retry later",
        config.transform_queue
    );
    let transforms =
        pool::TransformPool::new(workers, config.transform_queue, full).map_err(|e| {
            crate::transform::TransformError::Runtime(format!(
                "cannot start the transform pool: {e}"
            ))
        })?;
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let state = AppState {
        large_parses: Arc::new(tokio::sync::Semaphore::new(cores)),
        reports: Arc::new(tokio::sync::Semaphore::new(1)),
        background_runs: Arc::new(tokio::sync::Semaphore::new(
            routes::materialize::BACKGROUND_RUNS,
        )),
        store,
        metrics: Arc::new(Metrics::new()),
        limits: Limits::from(&config),
        store_blocks,
        transforms: Arc::new(transforms),
        uploads: Arc::new(
            pool::TransformPool::new(1, 2, "two uploads are waiting already: retry later".into())
                .map_err(|e| {
                crate::transform::TransformError::Runtime(format!(
                    "cannot start the upload pool: {e}"
                ))
            })?,
        ),
    };
    let tokens = Arc::new(auth::Tokens::new(&config.auth));
    let guard = |role| {
        middleware::from_fn_with_state(
            auth::Requirement {
                tokens: tokens.clone(),
                role,
            },
            auth::require,
        )
    };
    let timeout = middleware::from_fn_with_state(state.limits.request_timeout, with_timeout);

    let read = OpenApiRouter::new()
        .routes(routes!(routes::lookup::get_online_features))
        .routes(routes!(routes::registry::registry_summary))
        .routes(routes!(routes::registry::list_entities))
        .routes(routes!(routes::registry::get_entity))
        .routes(routes!(routes::registry::list_sources))
        .routes(routes!(routes::registry::get_source))
        .routes(routes!(routes::registry::list_feature_views))
        .routes(routes!(routes::registry::get_feature_view))
        .routes(routes!(routes::registry::list_feature_services))
        .routes(routes!(routes::registry::get_feature_service))
        .routes(routes!(routes::registry::list_push_sources))
        .routes(routes!(routes::registry::get_push_source))
        .routes(routes!(routes::registry::list_request_sources))
        .routes(routes!(routes::registry::get_request_source))
        .routes(routes!(routes::registry::list_on_demand_feature_views))
        .routes(routes!(routes::registry::get_on_demand_feature_view))
        .routes(routes!(routes::registry::list_versions))
        .routes(routes!(routes::registry::get_version))
        .routes(routes!(routes::operations::metrics))
        .routes(routes!(routes::transforms::list_transforms))
        .routes(routes!(routes::transforms::get_transform))
        .route_layer(timeout.clone())
        .route_layer(guard(Role::Read));
    let write = OpenApiRouter::new()
        .routes(routes!(routes::push::push))
        .routes(routes!(routes::push::write_to_online_store))
        .route_layer(timeout)
        .route_layer(guard(Role::Write));
    // Materialization runs as long as the data takes: no request timeout.
    let long_writes = OpenApiRouter::new()
        .routes(routes!(routes::materialize::materialize))
        .routes(routes!(routes::materialize::materialize_incremental))
        .route_layer(guard(Role::Write));
    // Reports read as much data as they are asked to: no request timeout
    // (one runs at a time).
    let reports = OpenApiRouter::new()
        .routes(routes!(routes::monitor::skew))
        .routes(routes!(routes::monitor::drift))
        .route_layer(guard(Role::Read));
    // Uploads compile and self-check the module: no request timeout.
    let admin = OpenApiRouter::new()
        .routes(routes!(routes::transforms::upload_transform))
        .routes(routes!(routes::transforms::rollback_transform))
        .route_layer(guard(Role::Admin));
    // A bundle is as large as the data: no request timeout.
    let edge = OpenApiRouter::new()
        .routes(routes!(routes::edge::edge_bundle))
        .route_layer(guard(Role::Edge));
    let open = OpenApiRouter::new().routes(routes!(routes::operations::health));

    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(read)
        .merge(write)
        .merge(long_writes)
        .merge(reports)
        .merge(admin)
        .merge(edge)
        .merge(open)
        .split_for_parts();
    let document = openapi.clone();
    let router = router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { axum::Json(document) }
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(axum::extract::DefaultBodyLimit::max(config.max_body_bytes))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .with_state(state.clone());
    Ok((router, openapi, state.metrics))
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(
        "NotFound",
        format!("no endpoint {} {}", request.method(), request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::internal("internal error").into_response()
}

/// Fails a request that runs longer than the configured timeout with 503.
async fn with_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "Timeout",
            format!(
                "the request took longer than {} ms (server.request_timeout_ms)",
                limit.as_millis()
            ),
        )
        .into_response(),
    }
}

/// Records every request's endpoint, status, latency and error kind.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    let class = response.extensions().get::<ErrorClass>().map(|c| c.0);
    state.metrics.observe_request(
        &endpoint,
        response.status().as_u16(),
        started.elapsed(),
        class,
    );
    if let Some(class) = class {
        tracing::debug!(
            endpoint,
            status = response.status().as_u16(),
            class,
            "request failed"
        );
    }
    response
}

/// Serves `store` on `address` until SIGINT or SIGTERM, then finishes the
/// requests in flight and flushes the online store. `ready` receives the
/// bound address (useful with port 0). With `materialize_every`, every
/// view is materialized on that timer ([`schedule`]).
pub async fn serve(
    store: Arc<FeatureStore>,
    address: SocketAddr,
    materialize_every: Option<Duration>,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), anyhow::Error> {
    #[cfg(not(feature = "offline"))]
    if materialize_every.is_some() {
        anyhow::bail!("scheduled materialization needs the offline store, which this build lacks (built without the `offline` feature)");
    }
    let (router, _, metrics) = build(store.clone())?;
    store
        .start_feature_log(store.config().server.feature_logging.settings())
        .map_err(|e| anyhow::anyhow!("cannot start the feature log writer: {e}"))?;
    // Loaded once before listening (a registry that cannot be read now is
    // loaded by the refresh below as soon as it can, and /health answers
    // 503 until then); from here on requests only read the loaded version.
    store.load_registry_in_background();
    {
        let store = store.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let loaded = store.refresh_registry();
            store.refresh_transforms(true);
            loaded
        });
        match loaded.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot load the registry yet"),
            Err(e) => tracing::warn!(error = %e, "registry load task failed"),
        }
    }
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))?;
    let bound = listener.local_addr()?;
    let shutdown = shutdown_signal();
    tracing::info!(%bound, "serving");
    ready(bound);
    let refresher = tokio::spawn(refresh_registry(
        store.clone(),
        Duration::from_millis(store.config().server.registry_refresh_ms.max(10)),
    ));
    #[cfg(feature = "offline")]
    let scheduler = materialize_every.map(|every| {
        tracing::info!(?every, "scheduled materialization on");
        tokio::spawn(schedule::materialize_every(store.clone(), metrics, every))
    });
    #[cfg(not(feature = "offline"))]
    let scheduler: Option<tokio::task::JoinHandle<()>> = {
        let _ = metrics;
        None
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    refresher.abort();
    // A run in progress goes on on its blocking thread, which the runtime
    // waits for before the process exits; it is recorded if it completes.
    if let Some(scheduler) = scheduler {
        scheduler.abort();
    }
    tracing::info!("shutting down: flushing the feature log and the online store");
    tokio::task::spawn_blocking(move || -> Result<(), crate::Error> {
        if let Some(log) = store.feature_log() {
            log.close();
        }
        store.online_store()?.flush()?;
        Ok(())
    })
    .await??;
    Ok(())
}

/// Picks up registry versions applied, and transforms uploaded or rolled
/// back, by other processes. Reading happens off the event loop, and
/// lookups keep using the previous version until the new one is swapped in.
async fn refresh_registry(store: Arc<FeatureStore>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let store = store.clone();
        let refreshed = tokio::task::spawn_blocking(move || {
            let changed = store.refresh_if_changed();
            store.refresh_transforms(matches!(changed, Ok(Some(_))));
            changed
        });
        match refreshed.await {
            Ok(Ok(Some(version))) => tracing::info!(version, "registry version loaded"),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot refresh the registry"),
            Err(e) => tracing::warn!(error = %e, "registry refresh task failed"),
        }
    }
}

fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    // The handlers are installed now, before the address is announced: a
    // signal sent as soon as the server answers must not kill it outright
    // (a future creating them would do so only when first polled).
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{signal, SignalKind};
        let install = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(stream) => Some(stream),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for {name}");
                None
            }
        };
        (
            install(SignalKind::interrupt(), "SIGINT"),
            install(SignalKind::terminate(), "SIGTERM"),
        )
    };
    async move {
        #[cfg(unix)]
        {
            async fn next(stream: Option<tokio::signal::unix::Signal>) {
                match stream {
                    Some(mut stream) => {
                        stream.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                _ = next(interrupt) => {},
                _ = next(terminate) => {},
            }
        }
        #[cfg(not(unix))]
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
        tracing::info!("signal received: finishing requests in flight");
    }
}
