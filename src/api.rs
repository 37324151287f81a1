//! The agent's HTTP API, on `agent.http_listen`: `GET /metrics`, the Prometheus text exposition of
//! the agent's OpenTelemetry metrics, and `GET /status`, every chain's progress and providers.
//!
//! Shutdown does not wait for slow clients: the agent's shutdown deadline aborts the server task.

use std::{net::SocketAddr, sync::Arc};

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Json, Router};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{
    chain::Progress,
    monitor::ChainStats,
    rpc::{pool::PoolHealth, ProviderPool},
    telemetry::TelemetryHandle,
};

/// One chain, as the API sees it.
#[derive(Clone, Debug)]
pub struct ChainView {
    /// Its name.
    pub name: String,
    /// Its chain id.
    pub chain_id: u64,
    /// Its providers.
    pub pool: Arc<ProviderPool>,
    /// Its stream's progress.
    pub progress: Arc<Progress>,
    /// Its missed-block statistics.
    pub stats: Arc<std::sync::Mutex<ChainStats>>,
}

/// What handlers read.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// Metrics behind `/metrics`.
    pub telemetry: TelemetryHandle,
    /// Every chain.
    pub chains: Vec<ChainView>,
    /// The state database (missed-block records for `/export`).
    pub store: Arc<crate::store::Store>,
}

/// The routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/stats", get(stats))
        .route("/export", get(export))
        .with_state(state)
}

/// `/status` of one chain.
#[derive(Debug, Serialize)]
struct ChainStatus {
    chain: String,
    chain_id: u64,
    /// healthy (a usable provider), degraded (only last-resort providers), unhealthy (none).
    status: PoolHealth,
    head: Option<u64>,
    last_processed_block: Option<u64>,
    last_block_hash: Option<String>,
    /// How late the last block was emitted, in seconds.
    block_lag_seconds: Option<f64>,
    /// Seconds since the last block's timestamp.
    seconds_since_last_block: Option<f64>,
    current_provider: Option<String>,
    rpc_error_count: u64,
    reorgs: u64,
    providers: Vec<crate::rpc::provider::ProviderStatus>,
    forks: Vec<crate::rpc::heads::Fork>,
}

#[derive(Debug, Serialize)]
struct StatusBody {
    status: PoolHealth,
    chains: Vec<ChainStatus>,
}

/// A 400 with a JSON body naming the problem.
fn bad_request(message: String) -> axum::response::Response {
    (
        axum::http::StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

/// `GET /export?format=json|csv[&chain=][&since=]`: missed-block records from the database.
async fn export(
    State(state): State<ApiState>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> axum::response::Response {
    use crate::monitor::export::{parse_since, render, Format, MAX_RECORDS};
    let mut format = Format::Json;
    let (mut chain, mut since) = (None, None);
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "format" => match value.parse() {
                Ok(f) => format = f,
                Err(e) => return bad_request(e),
            },
            "chain" => {
                if !state.chains.iter().any(|c| c.name == value) {
                    return bad_request(format!("no chain named {value:?} is configured"));
                }
                chain = Some(value.into_owned());
            }
            "since" => match parse_since(&value) {
                Ok(s) => since = Some(s),
                Err(e) => return bad_request(e),
            },
            other => {
                return bad_request(format!(
                    "unknown parameter {other:?}: use format, chain and since"
                ))
            }
        }
    }
    let store = state.store.clone();
    let records =
        tokio::task::spawn_blocking(move || store.missed(chain.as_deref(), since, MAX_RECORDS))
            .await;
    let body = match records {
        Ok(Ok(records)) => render(&records, format),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match body {
        Ok(body) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Err(e) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "error": e })),
        )
            .into_response(),
    }
}

/// `/stats` of one chain.
#[derive(Debug, Serialize)]
struct ChainStatsBody {
    chain: String,
    #[serde(flatten)]
    stats: crate::monitor::stats::StatsView,
}

async fn stats(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let chains: Vec<ChainStatsBody> = state
        .chains
        .iter()
        .map(|c| ChainStatsBody {
            chain: c.name.clone(),
            stats: c.stats.lock().unwrap_or_else(|p| p.into_inner()).view(),
        })
        .collect();
    Json(serde_json::json!({ "chains": chains }))
}

async fn status(State(state): State<ApiState>) -> Json<StatusBody> {
    let chains: Vec<ChainStatus> = state
        .chains
        .iter()
        .map(|c| {
            let pool = c.pool.status();
            let last = c.progress.last();
            ChainStatus {
                chain: c.name.clone(),
                chain_id: c.chain_id,
                status: pool.health,
                head: pool.head,
                last_processed_block: last.map(|l| l.number),
                last_block_hash: last.map(|l| l.hash.to_string()),
                block_lag_seconds: last.map(|l| l.lag_ms as f64 / 1000.0),
                seconds_since_last_block: c
                    .progress
                    .seconds_behind()
                    .map(|s| (s * 1000.0).round() / 1000.0),
                current_provider: pool.current_provider,
                rpc_error_count: pool.rpc_error_count,
                reorgs: c
                    .stats
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .view()
                    .reorgs,
                providers: pool.providers,
                forks: pool.forks,
            }
        })
        .collect();
    let status = chains
        .iter()
        .map(|c| c.status)
        .max_by_key(|s| match s {
            PoolHealth::Healthy => 0,
            PoolHealth::Degraded => 1,
            PoolHealth::Unhealthy => 2,
        })
        .unwrap_or(PoolHealth::Healthy);
    Json(StatusBody { status, chains })
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
