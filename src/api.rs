//! The agent's HTTP API, on `agent.http_listen`. Today: `GET /metrics`, the Prometheus text
//! exposition of the agent's OpenTelemetry metrics. Later routes share this router.
//!
//! Shutdown does not wait for slow clients: the agent's shutdown deadline aborts the server task.

use std::net::SocketAddr;

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
use tokio_util::sync::CancellationToken;

use crate::telemetry::TelemetryHandle;

/// What handlers read.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// Metrics behind `/metrics`.
    pub telemetry: TelemetryHandle,
}

/// The routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    let body = tokio::task::spawn_blocking(move || state.telemetry.prometheus_text())
        .await
        .unwrap_or_else(|e| format!("# cannot render metrics: {e}\n"));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// Binds `addr`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves `router` on `listener` until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}
