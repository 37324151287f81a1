//! The agent's HTTP API, on `agent.http_listen`: `/health`, `/ready`, `/status`, `/stats`,
//! `/report`, `/export`, `/slow` and `/metrics` (the Prometheus text exposition of the agent's
//! OpenTelemetry metrics). Only `/export` and `/slow` take parameters, each at most once; any other
//! parameter, a repeated one, any other path and any other method is a 4xx with a JSON error. [`serve`] serves them
//! within [`Limits`]: a connection cap, header and request timeouts, a body limit.

mod page;
mod server;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::{
    extract::State,
    http::{header, HeaderMap},
    response::IntoResponse,
    routing::get,
    Json, Router,
};
use serde::Serialize;
pub use server::{
    bind, harden, serve, Limits, ACCEPT_BACKLOG, MAX_CONNECTION_BUFFER, MAX_REQUEST_BODY,
    MAX_REQUEST_HEAD,
};

use crate::{
    health::{judge, overall, ChainState, Snapshot, Verdict},
    telemetry::TelemetryHandle,
};

pub use crate::health::ChainView;

/// What handlers read.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// Metrics behind `/metrics`.
    pub telemetry: TelemetryHandle,
    /// Every chain.
    pub chains: Vec<ChainView>,
    /// The state database (missed-block records for `/export`).
    pub store: Arc<dyn crate::store::StateStore>,
    /// The alerts firing now.
    pub alerts: Arc<crate::alerts::Board>,
    /// `alerts.dashboard_url`: the status page links to the dashboards when set.
    pub dashboard_url: String,
    /// In cluster mode, this agent's instance name.
    pub instance: Option<String>,
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
        .route("/", get(page::index))
        .route("/ui/app.css", get(page::css))
        .route("/ui/app.js", get(page::js))
        .layer(axum::middleware::from_fn(no_parameters));
    Router::new()
        .route("/export", get(export))
        .route("/slow", get(slow))
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
            "error": format!("no route {}: try /health, /ready, /status, /stats, /report, /export, /slow, /metrics or / (the status page)", uri.path())
        })),
    )
        .into_response()
}

/// One chain in `/health`.
#[derive(Debug, Serialize)]
struct ChainHealth {
    chain: String,
    status: ChainState,
    reasons: Vec<String>,
    seconds_since_last_block: f64,
    behind_blocks: Option<u64>,
    usable_providers: usize,
    providers: usize,
}

/// Every chain's snapshot and verdict, read once for one answer.
fn judged(chains: &[ChainView]) -> Vec<(Snapshot, Verdict)> {
    chains
        .iter()
        .map(|c| {
            let s = Snapshot::of(c);
            let v = judge(&s);
            (s, v)
        })
        .collect()
}

fn round_ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// `GET /health`: 200 healthy, catching up or degraded, 503 unhealthy; with every reason.
async fn health(State(state): State<ApiState>) -> axum::response::Response {
    let judged = judged(&state.chains);
    let status = overall(judged.iter().map(|(_, v)| v));
    let reasons: Vec<&String> = judged.iter().flat_map(|(_, v)| &v.reasons).collect();
    let chains: Vec<ChainHealth> = judged
        .iter()
        .map(|(s, v)| ChainHealth {
            chain: s.name.clone(),
            status: v.state,
            reasons: v.reasons.clone(),
            seconds_since_last_block: round_ms(s.since_last_block),
            behind_blocks: s.behind_blocks,
            usable_providers: v.usable,
            providers: s.pool.providers.len(),
        })
        .collect();
    let code = if status == ChainState::Unhealthy {
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

/// Slowest calls per provider in `/report`.
const REPORT_SLOWEST: usize = 3;

/// The text of `/report` (and of `blockwatch status`): overall status and reasons, then per chain
/// its progress, a table of its providers, their slowest calls with their trace ids, and its
/// missed-block summary.
pub fn render_report(chains: &[ChainView]) -> String {
    use std::fmt::Write;
    let judged = judged(chains);
    let status = overall(judged.iter().map(|(_, v)| v));
    let mut out = String::new();
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let _ = writeln!(out, "blockwatch {} — {now}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "status: {}", status.as_str());
    for r in judged.iter().flat_map(|(_, v)| &v.reasons) {
        let _ = writeln!(out, "  - {r}");
    }
    for ((s, v), view) in judged.iter().zip(chains) {
        let pool = &s.pool;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "chain {} (id {}): {} — head {}, last block {}, {:.1}s since it, provider {}",
            s.name,
            s.chain_id,
            v.state.as_str(),
            pool.head.map_or("-".into(), |n| n.to_string()),
            s.last.map_or("-".into(), |l| format!(
                "{} {}",
                l.number,
                short_hash(&l.hash.to_string())
            )),
            round_ms(s.since_last_block),
            pool.current_provider.as_deref().unwrap_or("-"),
        );
        if let Some(r) = &s.role {
            let _ = writeln!(
                out,
                "  cluster: this agent is {}; leader {} (epoch {})",
                r.role,
                r.leader.as_deref().unwrap_or("none"),
                r.epoch.map_or("-".to_owned(), |e| e.to_string()),
            );
        }
        if let Some(c) = &s.catch_up {
            let total = (c.to + 1).saturating_sub(c.from).max(1);
            let _ = writeln!(
                out,
                "  catching up [{}] {} of {} blocks ({}..={}), {:.1} blocks/s, {} left",
                progress_bar(c.done, total, 30),
                c.done,
                total,
                c.from,
                c.to,
                c.blocks_per_second,
                c.eta_seconds.map_or("-".to_owned(), |e| format!("{e:.0}s"))
            );
        }
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
        render_slowest(&mut out, view);
        let st = &s.stats;
        let _ = writeln!(
            out,
            "  missed blocks: {} of {} processed ({:.2}%), {} recovered{}, streak {} (longest {}), reorgs {}",
            st.blocks_missed,
            st.blocks_processed,
            st.missed_block_rate * 100.0,
            st.blocks_recovered,
            st.average_recovery_seconds
                .map_or(String::new(), |a| format!(" in {a:.2}s on average")),
            st.current_missed_streak,
            st.longest_missed_streak,
            st.reorgs,
        );
    }
    out
}

/// The [`REPORT_SLOWEST`] slowest calls of each of `chain`'s providers, with their trace and span
/// ids (`GET /slow` has more).
fn render_slowest(out: &mut String, chain: &ChainView) {
    use std::fmt::Write;
    let providers = chain.pool.providers();
    let Some(first) = providers.first() else {
        return;
    };
    let now = std::time::Instant::now();
    let _ = writeln!(
        out,
        "  slowest calls of the last {} (trace and span ids):",
        humantime::format_duration(first.slow_calls().window())
    );
    for p in providers {
        let calls = p.slow_calls().view(now).slowest;
        if calls.is_empty() {
            let _ = writeln!(out, "    {:<16} -", p.name);
        }
        for c in calls.iter().take(REPORT_SLOWEST) {
            let outcome = match &c.error_type {
                Some(e) => format!("{} ({e})", c.outcome.as_str()),
                None => c.outcome.as_str().to_owned(),
            };
            let attempt = format!(
                "attempt {}{}",
                c.attempt,
                if c.hedged { " hedge" } else { "" }
            );
            let ids = match (&c.trace_id, &c.span_id) {
                (Some(t), Some(s)) => format!(
                    "trace {t} span {s}{}",
                    if c.sampled { "" } else { " (not sampled)" }
                ),
                _ => "no trace".to_owned(),
            };
            let _ = writeln!(
                out,
                "    {:<16} {:>10.1} ms  {:<24} {:<22} {:<17} {ids}  {}",
                p.name, c.duration_ms, c.method, outcome, attempt, c.at
            );
        }
    }
}

fn short_hash(h: &str) -> String {
    if h.len() > 12 {
        format!("{}…", &h[..10])
    } else {
        h.to_owned()
    }
}

/// A text progress bar `width` wide with its percentage: `#####-----  50%`.
fn progress_bar(done: u64, total: u64, width: usize) -> String {
    let share = (done.min(total) as f64 / total.max(1) as f64).clamp(0.0, 1.0);
    let filled = (share * width as f64).round() as usize;
    format!(
        "{}{} {:>3.0}%",
        "#".repeat(filled),
        "-".repeat(width - filled),
        share * 100.0
    )
}

/// `/status` of one chain.
#[derive(Debug, Serialize)]
struct ChainStatus {
    chain: String,
    chain_id: u64,
    /// The chain's state (the same verdict as `/health`'s), and why.
    status: ChainState,
    reasons: Vec<String>,
    head: Option<u64>,
    last_processed_block: Option<u64>,
    last_block_hash: Option<String>,
    /// How late the last block was emitted, in seconds.
    block_lag_seconds: Option<f64>,
    /// Seconds since the last block's timestamp.
    seconds_since_last_block: Option<f64>,
    /// Blocks between the chain head and the last block emitted.
    behind_blocks: Option<u64>,
    /// The catch-up under way, if any.
    catch_up: Option<crate::follower::progress::CatchUp>,
    current_provider: Option<String>,
    rpc_error_count: u64,
    reorgs: u64,
    providers: Vec<crate::rpc::provider::ProviderStatus>,
    forks: Vec<crate::heads::Fork>,
    /// The largest lag of each 5 s of the last ten minutes in which blocks were emitted.
    lag_history: Vec<crate::follower::progress::LagPoint>,
    /// The latest provider switches, newest first.
    recent_switches: Vec<crate::pool::Switch>,
    /// The latest reorgs, newest first.
    recent_reorgs: Vec<crate::follower::progress::RecentReorg>,
    /// The latest missed blocks, newest first.
    recent_missed: Vec<RecentMiss>,
    /// In cluster mode: this agent's `role` (`leader` or `standby`), the chain's `leader` and the
    /// `epoch` of its lease.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    cluster: Option<crate::cluster::RoleView>,
}

/// A missed block as `/status` lists it.
#[derive(Debug, Serialize)]
struct RecentMiss {
    block_number: u64,
    /// When it was found missed (Unix seconds).
    at: u64,
    reason: &'static str,
    severity: &'static str,
    recovered: bool,
    recovered_from: Option<String>,
    /// Seconds from the miss to the block's emission, when recovered.
    recovery_seconds: Option<f64>,
}

/// Missed blocks `/status` lists per chain.
const RECENT_MISSED: usize = 10;

#[derive(Debug, Serialize)]
struct StatusBody {
    status: ChainState,
    chains: Vec<ChainStatus>,
    /// The alerts firing now.
    alerts_firing: Vec<crate::alerts::FiringAlert>,
    /// `alerts.dashboard_url`, `null` when not set.
    dashboard_url: Option<String>,
    /// In cluster mode, this agent's instance name (the `leader` other agents show).
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<String>,
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
    let params = match parameters(query.as_deref(), &["format", "chain", "since"]) {
        Ok(params) => params,
        Err(e) => return bad_request(e),
    };
    for (key, value) in params {
        match key {
            "format" => match value.parse() {
                Ok(f) => format = f,
                Err(e) => return bad_request(e.to_string()),
            },
            "chain" => {
                if !state.chains.iter().any(|c| c.name == value) {
                    return bad_request(format!("no chain named {value:?} is configured"));
                }
                chain = Some(value.into_owned());
            }
            _ => match parse_since(&value) {
                Ok(s) => since = Some(s),
                Err(e) => return bad_request(e.to_string()),
            },
        }
    }
    let store = state.store.clone();
    let records =
        tokio::task::spawn_blocking(move || store.missed(chain.as_deref(), since, MAX_RECORDS))
            .await;
    let body = match records {
        Ok(Ok(records)) => render(&records, format).map_err(|e| e.to_string()),
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

/// Reads `query`'s parameters, each of them one of `known` and given at most once; else why not,
/// naming the unknown or repeated one.
fn parameters<'q>(
    query: Option<&'q str>,
    known: &[&'static str],
) -> Result<Vec<(&'static str, std::borrow::Cow<'q, str>)>, String> {
    let mut got: Vec<(&'static str, std::borrow::Cow<'q, str>)> = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let names = || match known.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
            _ => known.join(""),
        };
        let Some(&name) = known.iter().find(|k| **k == key) else {
            return Err(format!("unknown parameter {key:?}: use {}", names()));
        };
        // A repeated parameter has no one meaning: refuse it rather than pick one.
        if got.iter().any(|(k, _)| *k == name) {
            return Err(format!(
                "parameter {key:?} given more than once: give each of {} at most once",
                names()
            ));
        }
        got.push((name, value));
    }
    Ok(got)
}

/// One chain in `/slow`.
#[derive(Debug, Serialize)]
struct ChainSlow {
    chain: String,
    providers: Vec<ProviderSlow>,
}

/// One provider in `/slow`.
#[derive(Debug, Serialize)]
struct ProviderSlow {
    provider: String,
    #[serde(flatten)]
    calls: crate::rpc::slow::SlowView,
}

/// `GET /slow[?chain=][&provider=]`: per provider, its slowest and latest failed attempts of the
/// health window, with their trace ids.
async fn slow(
    State(state): State<ApiState>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> axum::response::Response {
    let (mut chain, mut provider) = (None, None);
    match parameters(query.as_deref(), &["chain", "provider"]) {
        Ok(params) => {
            for (key, value) in params {
                match key {
                    "chain" => chain = Some(value),
                    _ => provider = Some(value),
                }
            }
        }
        Err(e) => return bad_request(e),
    }
    let chains: Vec<&ChainView> = state
        .chains
        .iter()
        .filter(|c| chain.as_deref().is_none_or(|name| c.name == name))
        .collect();
    if let Some(name) = &chain {
        if chains.is_empty() {
            return bad_request(format!("no chain named {name:?} is configured"));
        }
    }
    let now = std::time::Instant::now();
    let chains: Vec<ChainSlow> = chains
        .into_iter()
        .map(|c| ChainSlow {
            chain: c.name.clone(),
            providers: c
                .pool
                .providers()
                .iter()
                .filter(|p| provider.as_deref().is_none_or(|name| p.name == name))
                .map(|p| ProviderSlow {
                    provider: p.name.clone(),
                    calls: p.slow_calls().view(now),
                })
                .collect(),
        })
        .filter(|c| provider.is_none() || !c.providers.is_empty())
        .collect();
    if let Some(name) = &provider {
        if chains.is_empty() {
            let of = chain
                .as_deref()
                .map_or(String::new(), |c| format!(" in chain {c:?}"));
            return bad_request(format!("no provider named {name:?} is configured{of}"));
        }
    }
    Json(serde_json::json!({ "kept": crate::rpc::slow::KEPT, "chains": chains })).into_response()
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
    let judged = judged(&state.chains);
    let status = overall(judged.iter().map(|(_, v)| v));
    // The store answers on a blocking thread; a failed read lists no misses rather than failing
    // the whole status.
    let store = state.store.clone();
    let names: Vec<String> = state.chains.iter().map(|c| c.name.clone()).collect();
    let mut missed = tokio::task::spawn_blocking(move || {
        names
            .iter()
            .map(|name| recent_missed(store.as_ref(), name))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default()
    .into_iter();
    let chains: Vec<ChainStatus> = judged
        .into_iter()
        .zip(&state.chains)
        .map(|((s, v), view)| ChainStatus {
            chain: s.name,
            chain_id: s.chain_id,
            status: v.state,
            reasons: v.reasons,
            head: s.pool.head,
            last_processed_block: s.last.map(|l| l.number),
            last_block_hash: s.last.map(|l| l.hash.to_string()),
            block_lag_seconds: s.last.map(|l| l.lag_ms as f64 / 1000.0),
            seconds_since_last_block: s.seconds_behind.map(|x| (x * 1000.0).round() / 1000.0),
            behind_blocks: s.behind_blocks,
            catch_up: s.catch_up,
            cluster: s.role.clone(),
            current_provider: s.pool.current_provider,
            rpc_error_count: s.pool.rpc_error_count,
            reorgs: s.stats.reorgs,
            providers: s.pool.providers,
            forks: s.pool.forks,
            lag_history: view.progress.lag_history(),
            recent_switches: view.pool.recent_switches(),
            recent_reorgs: view.progress.recent_reorgs(),
            recent_missed: missed.next().unwrap_or_default(),
        })
        .collect();
    Json(StatusBody {
        status,
        chains,
        alerts_firing: state.alerts.firing(),
        dashboard_url: (!state.dashboard_url.is_empty()).then(|| state.dashboard_url.clone()),
        instance: state.instance.clone(),
    })
}

/// The latest [`RECENT_MISSED`] missed blocks of `chain`, newest first.
fn recent_missed(store: &dyn crate::store::StateStore, chain: &str) -> Vec<RecentMiss> {
    store
        .latest_missed(chain, RECENT_MISSED)
        .unwrap_or_default()
        .into_iter()
        .map(|r| RecentMiss {
            block_number: r.block_number,
            at: r.timestamp,
            reason: r.reason.as_str(),
            severity: r.severity.as_str(),
            recovered: r.recovered,
            recovery_seconds: r
                .metadata
                .get("recovery_seconds")
                .and_then(serde_json::Value::as_f64),
            recovered_from: r.recovered_from,
        })
        .collect()
}

async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(crate::telemetry::openmetrics::preferred);
    let body = tokio::task::spawn_blocking(move || {
        if openmetrics {
            state.telemetry.openmetrics_text()
        } else {
            state.telemetry.prometheus_text()
        }
    })
    .await
    .unwrap_or_else(|e| format!("# cannot render metrics: {e}\n"));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    ([(header::CONTENT_TYPE, content_type)], body)
}
