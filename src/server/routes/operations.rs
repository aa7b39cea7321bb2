//! Operations endpoints: `GET /health` (the online store answers) and
//! `GET /metrics` (Prometheus text).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::server::error::ApiError;
use crate::server::request::run_store;
use crate::server::AppState;

/// 200 when the online store answers (and the registry has been read), 503
/// otherwise.
#[utoipa::path(get, path = "/health", responses((status = 200), (status = 503)), tag = "operations")]
pub async fn health(State(state): State<AppState>) -> Response {
    let inline = !state.store_blocks;
    let checked = run_store(&state, inline, |store| {
        if !store.registry_ready() {
            return Err(crate::registry::RegistryError::Unavailable(
                "the registry has not been read yet".into(),
            )
            .into());
        }
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
    // The newest run per view is all freshness needs. A registry that
    // cannot be read (a shared one down) leaves the gauges as last set.
    let history = run_store(&state, false, |store| {
        let summary = store.registry().materialization_summary()?;
        Ok(summary.latest().cloned().collect::<Vec<_>>())
    })
    .await
    .unwrap_or_else(|e| {
        tracing::warn!(error = %e.message, "metrics: cannot read materialization records");
        Vec::new()
    });
    // The latest saved skew and drift reports of the loaded version's
    // services (small files, read off the event loop).
    let figures = run_store(&state, false, |store| Ok(store.latest_monitor_figures()))
        .await
        .unwrap_or_default();
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(
            &history,
            state.store.feature_log(),
            state.store.transform_loads(),
            &figures,
        ),
    )
        .into_response())
}
