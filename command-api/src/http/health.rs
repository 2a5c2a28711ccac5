//! `/healthz` (the process answers), `/readyz` (it can reach its database) and `/metrics`
//! (Prometheus text format, see [`crate::metrics`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::app::AppState;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// `GET /healthz`: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "`ok`.", content_type = "text/plain", body = String)),
)]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: the process can reach its database.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "`ready`.", content_type = "text/plain", body = String),
        (status = 503, description = "`database unreachable`.", content_type = "text/plain", body = String),
    ),
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.db.ping().await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
    }
}

/// `GET /metrics`: every metric of this process in the Prometheus text exposition format
/// (version 0.0.4), after reading the database gauges. Unauthenticated, like the health
/// endpoints: scrapers reach it on the operations network.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4.", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String)),
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    // The recorder is process-wide: when one process runs several servers (the test suite),
    // another server's refresh between ours and the render would show its database's gauges.
    static SCRAPE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let rendered = {
        let _one_at_a_time = SCRAPE.lock().await;
        crate::metrics::refresh_database_gauges(&state.db).await;
        crate::metrics::handle().render()
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        rendered,
    )
}
