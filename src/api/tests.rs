//! The routes called directly (`tower::ServiceExt::oneshot`), without a socket: status codes,
//! JSON shapes and headers as a client gets them.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Body,
    http::{Method, Request, StatusCode},
};
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::{
    config::Config,
    follower::Progress,
    model::{MissedBlock, Reason, Severity},
    monitor::ChainStats,
    pool::ProviderPool,
    store::SqliteStore,
    telemetry::Metrics,
};

/// The state of an agent following chain "anvil" through one provider, "p0", with a state database
/// in `dir`. Nothing listens on p0's port: the pool is built without it, its checks deferred.
async fn state(dir: &Path, max_block_delay: Duration) -> ApiState {
    let text = r#"[[chains]]
name = "anvil"
chain_id = 31337
expected_block_time = "1s"
[[chains.providers]]
name = "p0"
url = "http://127.0.0.1:1"
timeout = "200ms"
"#;
    let cfg = Config::from_toml_str(text, Path::new("x.toml"), &|_| None).unwrap();
    let meter = opentelemetry::global::meter("api-tests");
    let metrics = Arc::new(Metrics::new(&meter));
    let pool = ProviderPool::connect(
        &cfg.chains[0],
        &cfg.pool,
        Arc::new(cfg.redactor()),
        metrics.clone(),
    )
    .await
    .unwrap();
    ApiState {
        telemetry: TelemetryHandle::new(metrics, prometheus::Registry::new(), "blockwatch"),
        chains: vec![ChainView {
            name: "anvil".into(),
            chain_id: 31337,
            max_block_delay,
            pool: Arc::new(pool),
            progress: Arc::new(Progress::default()),
            stats: Arc::new(Mutex::new(ChainStats::default())),
            role: None,
        }],
        store: Arc::new(SqliteStore::open(&dir.join("state.db")).unwrap()),
        alerts: Arc::default(),
        instance: None,
        dashboard_url: String::new(),
    }
}

/// The answer of the hardened router (as it is served) to `method uri`: status, content type, body.
async fn call(state: &ApiState, method: Method, uri: &str) -> (StatusCode, String, String) {
    call_with(state, method, uri, &[]).await
}

/// [`call`] with request `headers`.
async fn call_with(
    state: &ApiState,
    method: Method,
    uri: &str,
    headers: &[(header::HeaderName, &str)],
) -> (StatusCode, String, String) {
    let app = harden(router(state.clone()), Limits::default());
    let mut req = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        req = req.header(name, *value);
    }
    let req = req.body(Body::empty()).unwrap();
    let res = app.oneshot(req).await.unwrap();
    let status = res.status();
    let content_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

async fn get_json(state: &ApiState, uri: &str) -> (StatusCode, Value) {
    let (status, content_type, body) = call(state, Method::GET, uri).await;
    assert_eq!(content_type, "application/json", "{uri}: {body}");
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{uri}: {body:?}: {e}"));
    (status, v)
}

fn missed(block_number: u64) -> MissedBlock {
    MissedBlock {
        timestamp: 1_700_000_000,
        chain: "anvil".into(),
        block_number,
        reason: Reason::RpcError,
        severity: Severity::Low,
        expected_timestamp: 1_700_000_000,
        actual_timestamp: 1_700_000_003,
        recovery_attempts: 1,
        recovered: true,
        recovered_from: Some("p0".into()),
        metadata: serde_json::Map::new(),
        alert_sent: false,
    }
}

/// Marks `state`'s provider p0 alive, as a call it answered does.
fn p0_answers(state: &ApiState) {
    let p0 = &state.chains[0].pool.providers()[0];
    p0.finish_attempt(
        &crate::rpc::AttemptSpan::detached("eth_blockNumber"),
        Duration::from_millis(5),
        None,
    );
    assert_eq!(p0.status().state, "alive");
}

fn has_reason(h: &Value, part: &str) -> bool {
    h["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r.as_str().unwrap().contains(part))
}

#[tokio::test]
async fn health_is_200_while_the_verdict_is_not_unhealthy_and_503_once_it_is() {
    let dir = tempfile::tempdir().unwrap();
    // A minute allowed without a block: the verdict turns on the provider.
    let st = state(dir.path(), Duration::from_secs(60)).await;
    // p0 could not be reached at start-up: no usable provider.
    let (code, h) = get_json(&st, "/health").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{h:#}");
    assert_eq!(h["status"], "unhealthy", "{h:#}");
    assert!(
        has_reason(&h, "chain anvil: no usable provider: p0 unreachable"),
        "{h:#}"
    );
    assert_eq!(h["chains"][0]["usable_providers"], 0, "{h:#}");

    p0_answers(&st);
    let (code, h) = get_json(&st, "/health").await;
    assert_eq!(code, StatusCode::OK, "{h:#}");
    assert_eq!(h["status"], "healthy", "{h:#}");
    assert_eq!(h["reasons"], serde_json::json!([]), "{h:#}");
    let chain = &h["chains"][0];
    assert_eq!(chain["chain"], "anvil");
    assert_eq!(chain["status"], "healthy");
    assert_eq!(
        (
            chain["usable_providers"].as_u64(),
            chain["providers"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert!(chain["seconds_since_last_block"].is_f64(), "{h:#}");

    // No time at all allowed without a block: overdue at once, unhealthy with p0 alive.
    let st = state(dir.path(), Duration::ZERO).await;
    p0_answers(&st);
    let (code, h) = get_json(&st, "/health").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{h:#}");
    assert_eq!(h["status"], "unhealthy", "{h:#}");
    assert!(has_reason(&h, "chain anvil: no new block for"), "{h:#}");
    assert!(!has_reason(&h, "no usable provider"), "{h:#}");
}

#[tokio::test]
async fn status_has_the_overall_state_and_each_chain_with_its_providers() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), Duration::from_secs(60)).await;
    p0_answers(&st);
    let (code, s) = get_json(&st, "/status").await;
    assert_eq!(code, StatusCode::OK, "{s:#}");
    let chains = s["chains"].as_array().expect("chains");
    assert_eq!(chains.len(), 1, "{s:#}");
    let c = &chains[0];
    assert_eq!(c["chain"], "anvil");
    assert_eq!(c["chain_id"], 31337);
    assert_eq!(s["status"], "healthy", "{s:#}");
    assert_eq!(c["status"], "healthy", "{s:#}");
    assert_eq!(c["reasons"], serde_json::json!([]), "{s:#}");
    // Nothing emitted yet, no head known.
    for key in [
        "head",
        "last_processed_block",
        "last_block_hash",
        "block_lag_seconds",
        "catch_up",
    ] {
        assert!(c[key].is_null(), "{key}: {s:#}");
    }
    assert_eq!(c["reorgs"], 0);
    assert!(c["rpc_error_count"].is_u64(), "{s:#}");
    assert!(c["forks"].is_array(), "{s:#}");
    let providers = c["providers"].as_array().expect("providers");
    assert_eq!(providers.len(), 1);
    let p0 = &providers[0];
    assert_eq!(p0["name"], "p0");
    assert_eq!(p0["state"], "alive", "{s:#}");
    assert!(p0["state_reason"].is_string(), "{s:#}");
    assert_eq!(p0["url"], "http://127.0.0.1:1/", "{s:#}");
}

#[tokio::test]
async fn export_as_csv_has_its_content_type_a_header_and_a_line_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), Duration::from_secs(60)).await;
    st.store.save_missed(&[missed(7), missed(8)], None).unwrap();
    let (code, content_type, body) = call(&st, Method::GET, "/export?format=csv&chain=anvil").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(content_type, "text/csv; charset=utf-8");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], MissedBlock::CSV_HEADER.join(","), "{body}");
    assert_eq!(lines.len(), 3, "{body}");
    assert!(lines[1].starts_with("anvil,7,RpcError,Low,"), "{body}");
    assert!(lines[2].starts_with("anvil,8,"), "{body}");
    // JSON by default, the same records.
    let (code, records) = get_json(&st, "/export").await;
    assert_eq!(code, StatusCode::OK);
    let records: Vec<MissedBlock> = serde_json::from_value(records).unwrap();
    assert_eq!(records, vec![missed(7), missed(8)]);
}

#[tokio::test]
async fn a_bad_parameter_is_a_400_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), Duration::from_secs(60)).await;
    for (uri, names) in [
        ("/export?format=xml", "xml"),
        ("/export?chain=nope", "\"nope\""),
        ("/export?since=yesterday", "yesterday"),
        ("/export?limit=3", "\"limit\""),
        (
            "/export?format=csv&format=json",
            "\"format\" given more than once",
        ),
        ("/status?verbose=1", "/status takes no parameters"),
    ] {
        let (code, v) = get_json(&st, uri).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{uri}: {v}");
        let error = v["error"].as_str().unwrap_or_else(|| panic!("{uri}: {v}"));
        assert!(error.contains(names), "{uri}: {error}");
    }
}

#[tokio::test]
async fn an_unknown_path_is_a_404_and_a_wrong_method_a_405_each_with_a_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), Duration::from_secs(60)).await;
    let (code, v) = get_json(&st, "/nope").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("no route /nope: try /health"),
        "{v}"
    );
    // The router alone answers the 404 in JSON too (the hardening adds nothing to it).
    let req = Request::builder().uri("/nope").body(Body::empty()).unwrap();
    let res = router(st.clone()).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");

    for (method, path) in [
        (Method::POST, "/health"),
        (Method::DELETE, "/export"),
        (Method::PUT, "/status"),
    ] {
        let (code, content_type, body) = call(&st, method.clone(), path).await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(content_type, "application/json", "{method} {path}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["error"],
            format!("method {method} not allowed on {path}: use GET or HEAD")
        );
    }
}

#[tokio::test]
async fn metrics_are_openmetrics_with_exemplars_when_asked_and_classic_otherwise() {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), Duration::from_secs(30)).await;
    let trace = SpanContext::new(
        TraceId::from(0xabcdu128),
        SpanId::from(0x12u64),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    );
    state.telemetry.metrics.rpc_duration.record(
        0.7,
        &[opentelemetry::KeyValue::new("provider", "p0")],
        &trace,
    );
    let (status, content_type, body) = call_with(
        &state,
        Method::GET,
        "/metrics",
        &[(
            header::ACCEPT,
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    let bucket = body
        .lines()
        // The series recorded above (the pool's own failing calls have more labels).
        .find(|l| {
            l.starts_with(
                "blockwatch_rpc_duration_seconds_bucket{le=\"1.0\",provider=\"p0\",service",
            )
        })
        .unwrap_or_else(|| panic!("{body}"));
    assert!(
        bucket.contains(&format!("trace_id=\"{}\"", TraceId::from(0xabcdu128))),
        "{bucket}"
    );
    let (status, content_type, body) = call(&state, Method::GET, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        !body.contains("# EOF") && !body.contains("trace_id"),
        "{body}"
    );
}
/// An attempt span of `p0` with real OpenTelemetry ids (a tracer provider behind a subscriber of
/// its own, as the agent installs one).
fn traced_attempt(
    p0: &crate::rpc::Provider,
    method: &'static str,
    hedge: bool,
) -> crate::rpc::AttemptSpan {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;
    let tracer = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .build()
        .tracer("api-tests");
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
    tracing::subscriber::with_default(subscriber, || p0.attempt_span(method, 2, hedge))
}

#[tokio::test]
async fn slow_lists_each_providers_slowest_and_failed_calls_with_their_trace_ids() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), Duration::from_secs(60)).await;
    // The chain-id check at start-up found nobody listening on p0's port.
    let (code, v) = get_json(&st, "/slow").await;
    assert_eq!(code, StatusCode::OK, "{v:#}");
    assert_eq!(v["kept"], 10, "{v:#}");
    assert_eq!(v["chains"][0]["chain"], "anvil", "{v:#}");
    let p = &v["chains"][0]["providers"][0];
    assert_eq!(
        (&p["provider"], &p["window_seconds"]),
        (&"p0".into(), &60.0.into()),
        "{v:#}"
    );
    assert_eq!(p["failed"], p["slowest"], "{v:#}");
    assert_eq!(p["failed"].as_array().unwrap().len(), 1, "{v:#}");
    let check = &p["failed"][0];
    assert_eq!(
        (&check["method"], &check["outcome"], &check["error_type"]),
        (&"eth_chainId".into(), &"error".into(), &"connection".into()),
        "{v:#}"
    );

    let p0 = &st.chains[0].pool.providers()[0];
    let slow = traced_attempt(p0, "eth_getBlockByNumber", false);
    let failed = traced_attempt(p0, "eth_blockNumber", true);
    let (slow_cx, failed_cx) = (slow.span_context(), failed.span_context());
    assert!(slow_cx.is_valid() && failed_cx.is_valid());
    p0.finish_attempt(&slow, Duration::from_millis(300), None);
    p0.finish_attempt(
        &failed,
        Duration::from_millis(200),
        Some(&crate::rpc::RpcError::Timeout(Duration::from_millis(200))),
    );
    p0_answers(&st);
    let (code, v) = get_json(&st, "/slow?chain=anvil&provider=p0").await;
    assert_eq!(code, StatusCode::OK, "{v:#}");
    let p = &v["chains"][0]["providers"][0];
    assert_eq!(p["provider"], "p0", "{v:#}");
    let slowest = p["slowest"].as_array().unwrap();
    assert_eq!(slowest.len(), 4, "{v:#}");
    let s = &slowest[0];
    assert_eq!(s["method"], "eth_getBlockByNumber");
    assert_eq!(s["duration_ms"], 300.0);
    assert_eq!(s["outcome"], "ok");
    assert!(s["error_type"].is_null(), "{s}");
    assert_eq!((&s["attempt"], &s["hedged"]), (&2.into(), &false.into()));
    assert_eq!(s["trace_id"], slow_cx.trace_id().to_string());
    assert_eq!(s["span_id"], slow_cx.span_id().to_string());
    assert_eq!(s["sampled"], true);
    assert!(
        humantime::parse_rfc3339(s["at"].as_str().unwrap()).is_ok(),
        "{s}"
    );
    assert_eq!(slowest[1]["duration_ms"], 200.0);
    assert_eq!(slowest[1]["outcome"], "error");
    // Outside a span: no ids.
    assert_eq!(slowest[2]["duration_ms"], 5.0);
    assert!(slowest[2]["trace_id"].is_null() && slowest[2]["span_id"].is_null());
    assert_eq!(slowest[3]["method"], "eth_chainId", "{v:#}");
    let failed = p["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 2, "{v:#}");
    assert_eq!(failed[1]["method"], "eth_chainId", "{v:#}");
    assert_eq!(failed[0]["method"], "eth_blockNumber");
    assert_eq!(failed[0]["error_type"], "timeout");
    assert_eq!(failed[0]["hedged"], true);
    assert_eq!(failed[0]["trace_id"], failed_cx.trace_id().to_string());
    // No error message is quoted.
    assert!(!v.to_string().contains("timed out"), "{v}");

    // /report lists them with their ids.
    let (code, content_type, report) = call(&st, Method::GET, "/report").await;
    assert_eq!(code, StatusCode::OK);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(
        report.contains("slowest calls of the last 1m (trace and span ids):"),
        "{report}"
    );
    let line = report
        .lines()
        .find(|l| l.contains(&slow_cx.trace_id().to_string()))
        .unwrap_or_else(|| panic!("no line with the slow call's trace id:\n{report}"));
    assert!(
        line.contains("p0") && line.contains("300.0 ms") && line.contains("eth_getBlockByNumber"),
        "{line}"
    );
    assert!(
        line.contains(&format!("span {}", slow_cx.span_id())),
        "{line}"
    );
    assert!(
        report.contains("error (timeout)") && report.contains("attempt 2 hedge"),
        "{report}"
    );
}

#[tokio::test]
async fn slow_refuses_an_unknown_chain_provider_or_parameter_and_a_repeated_one() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), Duration::from_secs(60)).await;
    for (uri, names) in [
        ("/slow?chain=nope", "no chain named \"nope\""),
        ("/slow?provider=p9", "no provider named \"p9\""),
        (
            "/slow?chain=anvil&provider=p9",
            "no provider named \"p9\" is configured in chain \"anvil\"",
        ),
        (
            "/slow?limit=3",
            "unknown parameter \"limit\": use chain and provider",
        ),
        (
            "/slow?provider=p0&provider=p0",
            "\"provider\" given more than once",
        ),
    ] {
        let (code, v) = get_json(&st, uri).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{uri}: {v}");
        let error = v["error"].as_str().unwrap_or_else(|| panic!("{uri}: {v}"));
        assert!(error.contains(names), "{uri}: {error}");
    }
    let (code, v) = get_json(&st, "/slow?provider=p0").await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["chains"][0]["providers"][0]["provider"], "p0", "{v}");
}

#[test]
fn the_text_progress_bar_fills_with_the_share_done() {
    assert_eq!(super::progress_bar(0, 10, 10), "----------   0%");
    assert_eq!(super::progress_bar(5, 10, 10), "#####-----  50%");
    assert_eq!(super::progress_bar(10, 10, 10), "########## 100%");
    // Never past full, whatever the counts say.
    assert_eq!(super::progress_bar(12, 10, 4), "#### 100%");
}
