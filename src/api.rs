//! The agent's HTTP API, on `agent.http_listen`: `/health`, `/ready`, `/status`, `/stats`,
//! `/report`, `/export` and `/metrics` (the Prometheus text exposition of the agent's OpenTelemetry
//! metrics). Only `/export` takes parameters, each at most once; any other parameter, a repeated
//! one, any other path and any other method is a 4xx with a JSON error. [`serve`] serves them
//! within [`Limits`]: a connection cap, header and request timeouts, a body limit.

mod server;

use std::sync::Arc;

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Json, Router};
use serde::Serialize;
pub use server::{
    bind, harden, serve, Limits, ACCEPT_BACKLOG, MAX_CONNECTION_BUFFER, MAX_REQUEST_BODY,
    MAX_REQUEST_HEAD,
};

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
    /// No new block for this long makes it unhealthy.
    pub max_block_delay: std::time::Duration,
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
    let plain = Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/stats", get(stats))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/report", get(report))
        .layer(axum::middleware::from_fn(no_parameters));
    Router::new()
        .route("/export", get(export))
        .merge(plain)
        .fallback(not_found)
        .with_state(state)
}

/// Routes without parameters refuse any (a typo must not pass for a filter that was applied).
async fn no_parameters(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match req.uri().query() {
        Some(q) if !q.is_empty() => bad_request(format!(
            "{} takes no parameters (got {q:?})",
            req.uri().path()
        )),
        _ => next.run(req).await,
    }
}

async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    (
        axum::http::StatusCode::NOT_FOUND,
        Json(serde_json::json!({
            "error": format!("no route {}: try /health, /ready, /status, /stats, /report, /export or /metrics", uri.path())
        })),
    )
        .into_response()
}

/// One chain's health, as `/health` judges it.
#[derive(Debug, Serialize)]
struct ChainHealth {
    chain: String,
    status: &'static str,
    seconds_since_last_block: f64,
    usable_providers: usize,
    providers: usize,
}

/// `/health` (and `/report`): unhealthy when a chain has had no new block for `max_block_delay`
/// or has no usable provider; degraded when a chain runs on last-resort providers only or some
/// provider is not alive; else healthy. Returns the overall status, the reasons, and each chain.
fn judge_health(chains: &[ChainView]) -> (&'static str, Vec<String>, Vec<ChainHealth>) {
    let mut reasons = Vec::new();
    let mut degraded = false;
    let mut per_chain = Vec::new();
    for c in chains {
        let pool = c.pool.status();
        let since = c.progress.since_last_block();
        let usable = pool
            .providers
            .iter()
            .filter(|p| matches!(p.state, "alive" | "degraded"))
            .count();
        let mut status = "healthy";
        if since >= c.max_block_delay {
            reasons.push(format!(
                "chain {}: no new block for {}s (max_block_delay {}s)",
                c.name,
                since.as_secs(),
                c.max_block_delay.as_secs_f64()
            ));
            status = "unhealthy";
        }
        if pool.health == PoolHealth::Unhealthy || usable == 0 {
            reasons.push(format!("chain {}: no usable provider", c.name));
            status = "unhealthy";
        }
        if status == "healthy"
            && (pool.health != PoolHealth::Healthy
                || pool.providers.iter().any(|p| p.state != "alive"))
        {
            status = "degraded";
            degraded = true;
        }
        per_chain.push(ChainHealth {
            chain: c.name.clone(),
            status,
            seconds_since_last_block: (since.as_secs_f64() * 1000.0).round() / 1000.0,
            usable_providers: usable,
            providers: pool.providers.len(),
        });
    }
    let status = if !reasons.is_empty() {
        "unhealthy"
    } else if degraded {
        "degraded"
    } else {
        "healthy"
    };
    (status, reasons, per_chain)
}

/// `GET /health`: 200 healthy or degraded, 503 unhealthy with the reasons.
async fn health(State(state): State<ApiState>) -> axum::response::Response {
    let (status, reasons, chains) = judge_health(&state.chains);
    let code = if status == "unhealthy" {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    } else {
        axum::http::StatusCode::OK
    };
    (
        code,
        Json(serde_json::json!({ "status": status, "reasons": reasons, "chains": chains })),
    )
        .into_response()
}

/// `GET /ready`: 200 once every chain has a head, else 503 naming the chains still waiting.
async fn ready(State(state): State<ApiState>) -> axum::response::Response {
    let waiting: Vec<&str> = state
        .chains
        .iter()
        .filter(|c| c.pool.heads().best().is_none())
        .map(|c| c.name.as_str())
        .collect();
    let code = if waiting.is_empty() {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(serde_json::json!({ "ready": waiting.is_empty(), "waiting_for": waiting })),
    )
        .into_response()
}

/// `GET /report`: a plain-text health report.
async fn report(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        render_report(&state.chains),
    )
}

/// The text of `/report` (and of `blockwatch status`): overall status and reasons, then per chain
/// its progress, a table of its providers, and its missed-block summary.
pub fn render_report(chains: &[ChainView]) -> String {
    use std::fmt::Write;
    let (status, reasons, health) = judge_health(chains);
    let mut out = String::new();
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let _ = writeln!(out, "blockwatch {} — {now}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "status: {status}");
    for r in &reasons {
        let _ = writeln!(out, "  - {r}");
    }
    for (c, h) in chains.iter().zip(&health) {
        let pool = c.pool.status();
        let last = c.progress.last();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "chain {} (id {}): {} — head {}, last block {}, {:.1}s since it, provider {}",
            c.name,
            c.chain_id,
            h.status,
            pool.head.map_or("-".into(), |n| n.to_string()),
            last.map_or("-".into(), |l| format!(
                "{} {}",
                l.number,
                short_hash(&l.hash.to_string())
            )),
            h.seconds_since_last_block,
            pool.current_provider.as_deref().unwrap_or("-"),
        );
        let _ = writeln!(
            out,
            "  {:<16} {:<13} {:>6} {:>9} {:>9} {:>9} {:>7} {:>9} {:>10}",
            "provider",
            "state",
            "score",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "errors",
            "requests",
            "head"
        );
        for p in &pool.providers {
            let ms = |f: fn(&crate::rpc::provider::LatencyMs) -> f64| {
                p.latency_ms
                    .as_ref()
                    .map_or("-".to_owned(), |l| format!("{:.1}", f(l)))
            };
            let _ = writeln!(
                out,
                "  {:<16} {:<13} {:>6} {:>9} {:>9} {:>9} {:>6.1}% {:>9} {:>10}",
                p.name,
                p.state,
                p.score.map_or("-".to_owned(), |s| format!("{s:.1}")),
                ms(|l| l.p50),
                ms(|l| l.p95),
                ms(|l| l.p99),
                p.error_rate * 100.0,
                p.requests,
                p.head.map_or("-".to_owned(), |n| n.to_string()),
            );
        }
        let s = c.stats.lock().unwrap_or_else(|p| p.into_inner()).view();
        let _ = writeln!(
            out,
            "  missed blocks: {} of {} processed ({:.2}%), {} recovered{}, streak {} (longest {}), reorgs {}",
            s.blocks_missed,
            s.blocks_processed,
            s.missed_block_rate * 100.0,
            s.blocks_recovered,
            s.average_recovery_seconds
                .map_or(String::new(), |a| format!(" in {a:.2}s on average")),
            s.current_missed_streak,
            s.longest_missed_streak,
            s.reorgs,
        );
    }
    out
}

fn short_hash(h: &str) -> String {
    if h.len() > 12 {
        format!("{}…", &h[..10])
    } else {
        h.to_owned()
    }
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
    let mut seen = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        // A repeated parameter has no one meaning: refuse it rather than pick one.
        if seen.contains(&key) {
            return bad_request(format!(
                "parameter {key:?} given more than once: give each of format, chain and since at most once"
            ));
        }
        seen.push(key.clone());
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
