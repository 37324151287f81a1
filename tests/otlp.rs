//! What the agent exports over OTLP/gRPC, received by a real in-process gRPC receiver while the
//! agent follows devnet through faults: spans as docs/telemetry.md describes them (names, kinds, attributes, parent links,
//! error status, events), every metric with its attributes, log records with trace ids, the
//! `traceparent` devnet saw matching an exported span — and a provider secret nowhere (exported,
//! logged, written, served or printed by `check-config`), whether it came from the environment, a
//! `${file:…}` or was written in the URL path; `/slow` pointing at exported spans.

mod common;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::*;
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::{
            logs_service_server::{LogsService, LogsServiceServer},
            ExportLogsServiceRequest, ExportLogsServiceResponse,
        },
        metrics::v1::{
            metrics_service_server::{MetricsService, MetricsServiceServer},
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        },
        trace::v1::{
            trace_service_server::{TraceService, TraceServiceServer},
            ExportTraceServiceRequest, ExportTraceServiceResponse,
        },
    },
    common::v1::{any_value::Value as AnyValue, KeyValue},
    trace::v1::{span::SpanKind, status::StatusCode, Span},
};
use serde_json::json;
use tonic::{Request, Response, Status};

/// Everything received, kept as the protobuf messages.
#[derive(Clone, Default)]
struct Received {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    logs: Arc<Mutex<Vec<ExportLogsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        r: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.traces.lock().unwrap().push(r.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        r: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.metrics.lock().unwrap().push(r.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Received {
    async fn export(
        &self,
        r: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.logs.lock().unwrap().push(r.into_inner());
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

/// A running receiver; [`Receiver::stop`] shuts it down for good (connections included).
struct Receiver {
    received: Received,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let received = Received::default();
        let incoming =
            tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = incoming.local_addr().unwrap();
        let r = received.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(r.clone()))
                .add_service(MetricsServiceServer::new(r.clone()))
                .add_service(LogsServiceServer::new(r))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Receiver {
            received,
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn attr_str(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key)? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn spans(r: &Received) -> Vec<Span> {
    r.traces
        .lock()
        .unwrap()
        .iter()
        .flat_map(|t| t.resource_spans.iter())
        .flat_map(|rs| rs.scope_spans.iter())
        .flat_map(|ss| ss.spans.iter().cloned())
        .collect()
}

/// p0's API key in its query, from the environment.
const SECRET_KEY: &str = "Zk3yS3cr3tPathSegment0123456789";
/// p0's header value, from the environment.
const SECRET_HEADER: &str = "header-secret-value-42";
/// p0's key in its URL path, read with `${file:…}` (devnet's providers answer on any path).
const FILE_KEY: &str = "f1le0b7c9e2d4a6f8b1c";
/// A short key written out in p0's URL path: only its shape (no known route word) gives it away.
const SHORT_KEY: &str = "SECRET123abc";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_spans_metrics_and_logs_per_spec_without_secrets() {
    let mut receiver = Receiver::start().await;
    let (received, addr) = (receiver.received.clone(), receiver.addr);
    // p0's URL carries keys in its path (one read from a file beside the config, one short and
    // written out) and its query, and a header: none may leak.
    let mut scenario = Scenario::devnet(3, "200ms")
        .file("provider.key", format!("{FILE_KEY}\n"))
        .config(move |devnet| {
            let config = devnet.agent_config("").replacen(
                &format!("url = \"{}\"", devnet.info.providers[0].http),
                &format!(
                    "url = \"{}/v3/${{file:provider.key}}/{SHORT_KEY}?apikey=${{TEST_KEY}}\"\nheaders = {{ \"x-api-key\" = \"${{TEST_HEADER}}\" }}",
                    devnet.info.providers[0].http
                ),
                1,
            );
            // Every call's spans: the traceparent of any call names an exported span.
            exporting(&config, addr, "routine_call_share = 1.0")
                // One failed call is an alert: its span event is exported too.
                .replace("[pool]", "[alerts]\nconsecutive_failures = 1\n\n[pool]")
        })
        .env(&[
            ("TEST_KEY", SECRET_KEY),
            ("TEST_HEADER", SECRET_HEADER),
            ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "200"),
        ])
        .start()
        .await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(5, Duration::from_secs(30)).await;

    // A failing provider (error spans, a switch) and a reorg (a span event).
    devnet
        .set_fault("p0", json!({"kind": "http_error", "status": 500}))
        .await;
    let head = devnet.head().await;
    agent
        .wait_for_block(head + 3, Duration::from_secs(30))
        .await;
    devnet.clear_faults().await;
    devnet.reorg(2).await;
    let head = devnet.head().await;
    agent
        .wait_for_block(head + 2, Duration::from_secs(30))
        .await;
    // A slow leader (300 ms, under its 500 ms timeout): calls are hedged to the next provider.
    wait_for(Duration::from_secs(30), "p0 to lead again", || {
        let p = canonical(&agent.stream())
            .last()
            .map(|b| b.provider.clone());
        async move { (p.as_deref() == Some("p0")).then_some(()) }
    })
    .await;
    devnet
        .set_fault("p0", json!({"kind": "latency", "ms": 300}))
        .await;
    let head = devnet.head().await;
    agent
        .wait_for_block(head + 3, Duration::from_secs(30))
        .await;
    devnet.clear_faults().await;
    let status = devnet.control("devnet_status", json!({})).await;
    let traceparent = status["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|p| p["last_traceparent"].as_str().map(str::to_owned))
        .expect("devnet saw a traceparent header");
    let api = agent.api_url().await;
    let (_, metrics_text) = http_get(&format!("{api}/metrics")).await;
    let (status_code, status_text) = http_get(&format!("{api}/status")).await;
    let (report_code, report_text) = http_get(&format!("{api}/report")).await;
    assert_eq!((status_code, report_code), (200, 200));
    // /status shows p0's URL, keys hidden.
    assert!(
        status_text.contains("/v3/<redacted>/<redacted>?apikey=<redacted>"),
        "{status_text}"
    );
    agent.stop();

    // Spans.
    let spans = spans(&received);
    assert!(!spans.is_empty(), "no span exported");
    let by_id = |id: &[u8]| spans.iter().find(|s| s.span_id == id);
    let attempts: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "eth_getBlockByNumber")
        .collect();
    assert!(!attempts.is_empty());
    for s in &attempts {
        assert_eq!(
            s.kind,
            SpanKind::Client as i32,
            "attempt spans are CLIENT spans"
        );
        assert_eq!(
            attr_str(&s.attributes, "rpc.system.name").as_deref(),
            Some("jsonrpc")
        );
        assert_eq!(
            attr_str(&s.attributes, "rpc.system").as_deref(),
            Some("jsonrpc")
        );
        assert_eq!(
            attr_str(&s.attributes, "rpc.method").as_deref(),
            Some("eth_getBlockByNumber")
        );
        assert_eq!(
            attr_str(&s.attributes, "server.address").as_deref(),
            Some("127.0.0.1")
        );
        assert!(attr_str(&s.attributes, "server.port").is_some());
        assert!(attr_str(&s.attributes, "blockwatch.provider").is_some_and(|p| p.starts_with('p')));
        assert_eq!(
            attr_str(&s.attributes, "blockwatch.chain").as_deref(),
            Some("anvil")
        );
        // attempt → pool_request → process_block (one block) or fetch_blocks (a batch while
        // catching up); or attempt → probe (a background probe of an idle provider) or
        // check_provider (chain id and genesis block at start-up).
        let parent = by_id(&s.parent_span_id).expect("attempt span has an exported parent");
        if parent.name == "probe" || parent.name == "check_provider" {
            continue;
        }
        assert_eq!(parent.name, "pool_request");
        let grandparent = by_id(&parent.parent_span_id).expect("pool span has an exported parent");
        match grandparent.name.as_str() {
            "process_block" => {
                assert!(attr_str(&grandparent.attributes, "blockwatch.block.number").is_some())
            }
            "fetch_blocks" => {
                assert!(attr_str(&grandparent.attributes, "blockwatch.block.from").is_some())
            }
            other => panic!("pool_request under {other}"),
        }
    }
    assert!(
        attempts.iter().any(|s| by_id(&s.parent_span_id)
            .and_then(|p| by_id(&p.parent_span_id))
            .is_some_and(|g| g.name == "process_block")),
        "block fetches are traced under their process_block span"
    );
    let blocks: Vec<&Span> = spans.iter().filter(|s| s.name == "process_block").collect();
    assert!(blocks
        .iter()
        .any(|s| attr_str(&s.attributes, "blockwatch.block.hash")
            .is_some_and(|h| h.starts_with("0x"))));
    assert!(blocks
        .iter()
        .all(|s| attr_str(&s.attributes, "blockwatch.chain").as_deref() == Some("anvil")));
    // Every attempt on p0 during the fault failed: the block fetches, or the chain-id re-check that
    // came due first (its own CLIENT span). Other failures may be there too (a timeout on a loaded
    // machine), so only the presence of the injected ones is required.
    let failed: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .filter(|s| {
            s.status
                .as_ref()
                .is_some_and(|st| st.code == StatusCode::Error as i32)
        })
        .collect();
    assert!(
        failed.iter().any(
            |s| attr_str(&s.attributes, "error.type").as_deref() == Some("http_5xx")
                && attr_str(&s.attributes, "blockwatch.provider").as_deref() == Some("p0")
        ),
        "the injected HTTP 500s must be error spans of p0 with error.type http_5xx"
    );
    // Hedges are visible: the pool span says it hedged, the hedge's attempt span says it is one.
    assert!(
        spans.iter().any(|s| s.name == "pool_request"
            && attr_str(&s.attributes, "blockwatch.hedged").as_deref() == Some("true")),
        "no hedged pool_request span"
    );
    assert!(
        spans.iter().any(|s| s.kind == SpanKind::Client as i32
            && attr_str(&s.attributes, "blockwatch.hedge").as_deref() == Some("true")),
        "no hedge attempt span"
    );
    let events: Vec<_> = spans.iter().flat_map(|s| s.events.iter()).collect();
    // Span events are the agent's own log events at the log level, not library trace events
    // (jsonrpsee's quote whole HTTP bodies).
    assert!(
        events.iter().all(|e| !e.name.starts_with("HTTP body")),
        "library trace events exported as span events"
    );
    let reorg = events
        .iter()
        .find(|e| e.name == "reorg")
        .expect("a reorg span event");
    // Depth 2 when the agent had emitted both replaced blocks, 1 if it was one behind.
    assert!(matches!(
        attr_str(&reorg.attributes, "depth").as_deref(),
        Some("1" | "2")
    ));
    assert!(attr_str(&reorg.attributes, "common_ancestor").is_some());
    // Missed blocks (p0's HTTP 500s, the reorg's replaced heights) are events of their block's
    // process_block span, with the documented attributes.
    let missed: Vec<(&Span, _)> = spans
        .iter()
        .flat_map(|s| s.events.iter().map(move |e| (s, e)))
        .filter(|(_, e)| e.name == "missed_block")
        .collect();
    assert!(!missed.is_empty(), "no missed_block span event");
    for (span, e) in &missed {
        assert_eq!(span.name, "process_block");
        assert_eq!(
            attr_str(&e.attributes, "block_number"),
            attr_str(&span.attributes, "blockwatch.block.number"),
            "the event is on its own block's span"
        );
        assert!(attr_str(&e.attributes, "severity").is_some());
        assert_eq!(
            attr_str(&e.attributes, "recovered").as_deref(),
            Some("true")
        );
    }
    let reasons: Vec<String> = missed
        .iter()
        .filter_map(|(_, e)| attr_str(&e.attributes, "reason"))
        .collect();
    assert!(reasons.iter().any(|r| r == "RpcError"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "ChainReorg"), "{reasons:?}");
    let alert = events
        .iter()
        .find(|e| {
            e.name == "alert"
                && attr_str(&e.attributes, "rule").as_deref() == Some("consecutive_failures")
        })
        .expect("an alert span event");
    assert_eq!(
        attr_str(&alert.attributes, "provider").as_deref(),
        Some("p0")
    );
    assert!(attr_str(&alert.attributes, "tier").is_some());
    let switch = events
        .iter()
        .find(|e| e.name == "provider_switch")
        .expect("a provider_switch span event");
    assert!(
        attr_str(&switch.attributes, "from").is_some()
            && attr_str(&switch.attributes, "to").is_some()
    );
    // The traceparent devnet received names an exported attempt span.
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert!(
        spans.iter().any(|s| hex(&s.trace_id) == parts[1]
            && hex(&s.span_id) == parts[2]
            && s.kind == SpanKind::Client as i32),
        "traceparent {traceparent} matches no exported CLIENT span; same trace: {:?}",
        spans
            .iter()
            .filter(|s| hex(&s.trace_id) == parts[1])
            .map(|s| (s.name.clone(), hex(&s.span_id), s.kind))
            .collect::<Vec<_>>()
    );

    // Metrics.
    let names: std::collections::BTreeSet<String> = received
        .metrics
        .lock()
        .unwrap()
        .iter()
        .flat_map(|m| m.resource_metrics.iter())
        .flat_map(|rm| rm.scope_metrics.iter())
        .flat_map(|sm| sm.metrics.iter().map(|m| m.name.clone()))
        .collect();
    for name in [
        "blockwatch.blocks.processed",
        "blockwatch.block.lag",
        "blockwatch.rpc.duration",
        "blockwatch.rpc.errors",
        "blockwatch.provider.switches",
        "blockwatch.provider.head",
        "blockwatch.reorgs",
    ] {
        assert!(names.contains(name), "{name} not exported; got {names:?}");
    }
    let resource = received.metrics.lock().unwrap()[0].resource_metrics[0]
        .resource
        .clone();
    let res_attrs = &resource.as_ref().unwrap().attributes;
    assert_eq!(
        attr_str(res_attrs, "service.name").as_deref(),
        Some("blockwatch")
    );
    assert!(
        attr_str(res_attrs, "service.version").is_some()
            && attr_str(res_attrs, "service.instance.id").is_some()
    );

    // Logs: processed blocks, with the trace they belong to.
    let logs = received.logs.lock().unwrap().clone();
    let records: Vec<_> = logs
        .iter()
        .flat_map(|l| l.resource_logs.iter())
        .flat_map(|rl| rl.scope_logs.iter())
        .flat_map(|sl| sl.log_records.iter())
        .collect();
    let block_logs: Vec<_> = records
        .iter()
        .filter(|r| format!("{:?}", r.body).contains("block processed"))
        .collect();
    assert!(
        !block_logs.is_empty(),
        "no 'block processed' log record exported"
    );
    assert!(block_logs
        .iter()
        .all(|r| r.trace_id.len() == 16 && r.trace_id.iter().any(|b| *b != 0)));

    // No secret anywhere: exported, logged or served.
    let exported = format!(
        "{:?}{:?}{:?}",
        received.traces.lock().unwrap(),
        received.metrics.lock().unwrap(),
        logs
    );
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_blockwatch"))
        .args(["check-config", "--config"])
        .arg(&agent.config)
        .env("TEST_KEY", SECRET_KEY)
        .env("TEST_HEADER", SECRET_HEADER)
        .output()
        .unwrap();
    assert!(check.status.success());
    let checked = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        checked.contains("/v3/<redacted>/<redacted>?apikey=<redacted>"),
        "{checked}"
    );
    // Every file the agent wrote (its log, the block output, the missed-block log, the state
    // database) but the config and the key file it was given.
    let written = files_under(&agent.dir)
        .into_iter()
        .filter(|p| p != &agent.config && !p.ends_with("provider.key"))
        .collect::<Vec<_>>();
    assert!(written.contains(&agent.blocks_path()), "{written:?}");
    for secret in [SECRET_KEY, SECRET_HEADER, FILE_KEY, SHORT_KEY] {
        assert!(!exported.contains(secret), "{secret} exported");
        assert!(!agent.log().contains(secret), "{secret} logged");
        assert!(
            !metrics_text.contains(secret),
            "{secret} served on /metrics"
        );
        assert!(!status_text.contains(secret), "{secret} served on /status");
        assert!(!report_text.contains(secret), "{secret} served on /report");
        assert!(
            !checked.contains(secret),
            "{secret} printed by check-config"
        );
        for path in &written {
            let bytes = std::fs::read(path).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} written to {}",
                path.display()
            );
        }
    }
    receiver.stop().await;
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The resident set size of process `pid`, in kB (panics if it cannot be read: a missing reading
/// must not pass for a small one).
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
}

/// Blocks followed with telemetry going nowhere before memory is taken as warm.
const WARM_UP_BLOCKS: u64 = 40;
/// Blocks followed after warm-up, with the RSS read every [`RSS_EVERY`] of them.
const MEASURED_BLOCKS: u64 = 80;
const RSS_EVERY: u64 = 10;
/// How far the RSS may rise above its warm reading.
const RSS_SLACK_KB: u64 = 16 * 1024;

/// The agent follows with telemetry going nowhere: memory stays flat after warm-up (the RSS, read
/// every few blocks, never rises more than [`RSS_SLACK_KB`] above its warm reading), the stream is
/// canonical and SIGTERM is prompt (exit 0).
async fn check_unaffected(agent: &mut Agent, devnet: &DevnetProc) {
    let head = devnet.head().await;
    agent
        .wait_for_block(head + WARM_UP_BLOCKS, Duration::from_secs(60))
        .await;
    let warm = rss_kb(agent.pid());
    let mut readings = Vec::new();
    let from = devnet.head().await;
    for k in 1..=MEASURED_BLOCKS / RSS_EVERY {
        agent
            .wait_for_block(from + k * RSS_EVERY, Duration::from_secs(60))
            .await;
        readings.push(rss_kb(agent.pid()));
    }
    assert_eq!(readings.len() as u64, MEASURED_BLOCKS / RSS_EVERY);
    let peak = *readings.iter().max().unwrap();
    assert!(
        peak < warm + RSS_SLACK_KB,
        "memory grew from {warm} kB to {peak} kB with the collector unreachable: {readings:?}"
    );
    let started = std::time::Instant::now();
    agent.stop();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        started.elapsed()
    );
    assert_matches_node(&canonical(&agent.stream()), &devnet.info.control).await;
}

/// The OpenTelemetry SDK's export-failure event of each exporter (its `name` field on the stderr
/// line), and the OTLP client its error text names.
const EXPORT_ERRORS: [(&str, &str); 3] = [
    ("BatchSpanProcessor.ExportError", "TonicTracesClient"),
    ("BatchLogProcessor.ExportError", "TonicLogsClient"),
    ("PeriodicReader.ExportError", "TonicMetricsClient"),
];

/// The agent's JSON log lines from byte `offset` of its log on.
fn log_lines_from(agent: &Agent, offset: usize) -> Vec<serde_json::Value> {
    agent.log()[offset..]
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The export-failure reports among `lines`, per exporter of [`EXPORT_ERRORS`], with their time.
fn export_failure_reports(
    lines: &[serde_json::Value],
) -> Vec<(
    &'static str,
    Vec<(std::time::SystemTime, serde_json::Value)>,
)> {
    EXPORT_ERRORS
        .iter()
        .map(|(name, _)| {
            let reports = lines
                .iter()
                .filter(|l| l["name"] == *name)
                .map(|l| {
                    let at = l["timestamp"]
                        .as_str()
                        .and_then(|t| humantime::parse_rfc3339(t).ok())
                        .unwrap_or_else(|| panic!("log line without a timestamp: {l}"));
                    (at, l.clone())
                })
                .collect();
            (*name, reports)
        })
        .collect()
}

/// Waits until every exporter has reported its export failures on stderr (after byte `offset` of
/// the log), each report an error of the SDK naming its exporter's OTLP client.
async fn wait_for_export_failure_reports(agent: &Agent, offset: usize) {
    wait_for(
        Duration::from_secs(20),
        "every exporter's export failure reported on stderr",
        || {
            let reports = export_failure_reports(&log_lines_from(agent, offset));
            async move { reports.iter().all(|(_, r)| !r.is_empty()).then_some(()) }
        },
    )
    .await;
    for ((name, reports), (_, client)) in export_failure_reports(&log_lines_from(agent, offset))
        .iter()
        .zip(EXPORT_ERRORS)
    {
        let (_, line) = &reports[0];
        assert_eq!(line["level"], "ERROR", "{name}: {line}");
        assert!(
            line["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("opentelemetry")),
            "{name}: {line}"
        );
        assert!(
            line["error"].as_str().is_some_and(|e| e.contains(client)),
            "{name} should name {client}: {line}"
        );
    }
}

/// After the agent stopped: each exporter's failures were reported at most once a minute, over a
/// run long enough for its exporter to have failed (and, unthrottled, reported) many times.
fn reported_at_most_once_a_minute(agent: &Agent, offset: usize, stopped: std::time::SystemTime) {
    for (name, reports) in export_failure_reports(&log_lines_from(agent, offset)) {
        assert!(!reports.is_empty(), "{name} never reported");
        let first = reports[0].0;
        let ran = stopped.duration_since(first).unwrap_or_default();
        // The slowest exporter tries every second (logs; spans every 100 ms, metrics every 500 ms).
        assert!(
            ran >= Duration::from_secs(5),
            "the run after {name}'s first report ({ran:?}) is too short to show a throttle"
        );
        for pair in reports.windows(2) {
            let gap = pair[1].0.duration_since(pair[0].0).unwrap_or_default();
            assert!(
                gap >= Duration::from_secs(60),
                "{name} reported twice within {gap:?}: {:?}",
                reports.iter().map(|(_, l)| l).collect::<Vec<_>>()
            );
        }
    }
}

/// With `routine_call_share = 0`, routine calls leave no span, and every call that failed, was
/// retried, hedged, abandoned or slow does: each exported call span says why it was kept, its
/// parent was exported with it, the injected failures are there, and what was dropped is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routine_call_spans_are_sampled_out_and_every_interesting_call_is_exported() {
    let mut receiver = Receiver::start().await;
    let (received, addr) = (receiver.received.clone(), receiver.addr);
    let mut scenario = Scenario::devnet(3, "100ms")
        .config(move |devnet| exporting(&devnet.agent_config(""), addr, "routine_call_share = 0.0"))
        .env(&[("OTEL_BSP_SCHEDULE_DELAY", "200")])
        .start()
        .await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(5, Duration::from_secs(30)).await;
    let api = agent.api_url().await;
    let sampled_out = || async {
        let (_, text) = http_get(&format!("{api}/metrics")).await;
        text.lines()
            .find(|l| l.starts_with("blockwatch_spans_sampled_out_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    wait_for(
        Duration::from_secs(30),
        "routine call spans sampled out",
        || async { sampled_out().await.filter(|n| *n >= 10.0) },
    )
    .await;
    devnet
        .set_fault("p0", json!({"kind": "http_error", "status": 500}))
        .await;
    let head = devnet.head().await;
    agent
        .wait_for_block(head + 3, Duration::from_secs(30))
        .await;
    devnet.clear_faults().await;
    let head = devnet.head().await;
    agent
        .wait_for_block(head + 10, Duration::from_secs(30))
        .await;
    // Routine calls again, enough of them to outnumber what the fault's calls exported.
    let before = sampled_out().await.unwrap_or(0.0);
    wait_for(
        Duration::from_secs(60),
        "routine call spans sampled out after the fault",
        || async { sampled_out().await.filter(|n| *n >= before + 100.0) },
    )
    .await;
    let dropped = sampled_out().await.expect("the count of spans sampled out") as usize;
    agent.stop();

    let spans = spans(&received);
    let by_id = |id: &[u8]| spans.iter().find(|s| s.span_id == id);
    let call_spans: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32 || s.name == "pool_request")
        .collect();
    assert!(!call_spans.is_empty(), "no call span exported");
    for s in &call_spans {
        let kept = attr_str(&s.attributes, "blockwatch.kept");
        assert!(
            matches!(
                kept.as_deref(),
                Some("error" | "retry" | "hedge" | "abandoned" | "slow")
            ),
            "{} kept for {kept:?}",
            s.name
        );
        if !s.parent_span_id.is_empty() {
            assert!(
                by_id(&s.parent_span_id).is_some(),
                "{} kept for {kept:?} without its parent",
                s.name
            );
        }
    }
    assert!(
        call_spans.iter().any(|s| s.kind == SpanKind::Client as i32
            && attr_str(&s.attributes, "error.type").as_deref() == Some("http_5xx")
            && attr_str(&s.attributes, "blockwatch.provider").as_deref() == Some("p0")
            && attr_str(&s.attributes, "blockwatch.kept").as_deref() == Some("error")),
        "p0's failed attempts are exported"
    );
    // Routine calls are most calls.
    assert!(
        call_spans.len() < dropped,
        "{} call spans exported, {dropped} sampled out",
        call_spans.len()
    );
    // Blocks are traced whatever the share.
    assert!(spans.iter().any(|s| s.name == "process_block"));
    receiver.stop().await;
}

/// `config` exporting to the receiver at `addr`, with `more` telemetry settings.
fn exporting(config: &str, addr: SocketAddr, more: &str) -> String {
    config.replace(
        "otlp_endpoint = \"\"",
        &format!("otlp_endpoint = \"http://{addr}\"\n{more}"),
    )
}

/// Small export queues and quick batches, so that a collector going away fills them fast.
const PRESSURE: [(&str, &str); 4] = [
    ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "256"),
    ("OTEL_BLRP_MAX_QUEUE_SIZE", "256"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
];

/// Devnet and an agent exporting to `addr` under export pressure.
async fn exporting_to(addr: std::net::SocketAddr) -> Scenario {
    Scenario::devnet(3, "100ms")
        .config(move |devnet| exporting(&devnet.agent_config(""), addr, ""))
        .env(&PRESSURE)
        .start()
        .await
}

/// The receiver goes away mid-run: every exporter's failures are reported on stderr (once a minute
/// at most), memory stays flat and the stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_goes_away_costs_the_stream_nothing() {
    let mut receiver = Receiver::start().await;
    let addr = receiver.addr;
    let mut scenario = exporting_to(addr).await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(5, Duration::from_secs(30)).await;
    let received = receiver.received.clone();
    // Every signal reaches the receiver while it is up, and nothing fails.
    wait_for(
        Duration::from_secs(10),
        "every signal at the receiver",
        || {
            let (t, m, l) = (
                received.traces.lock().unwrap().len(),
                received.metrics.lock().unwrap().len(),
                received.logs.lock().unwrap().len(),
            );
            async move { (t > 0 && m > 0 && l > 0).then_some(()) }
        },
    )
    .await;
    assert!(
        export_failure_reports(&log_lines_from(agent, 0))
            .iter()
            .all(|(_, r)| r.is_empty()),
        "export failures while the receiver was up:\n{}",
        agent.log()
    );
    // The collector goes away: its connections close and new ones are refused.
    let offset = agent.log().len();
    receiver.stop().await;
    wait_for_export_failure_reports(agent, offset).await;
    check_unaffected(agent, devnet).await;
    reported_at_most_once_a_minute(agent, offset, std::time::SystemTime::now());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_costs_the_stream_nothing() {
    // A black hole: it accepts connections and never reads nor answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let mut scenario = exporting_to(addr).await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(5, Duration::from_secs(30)).await;
    // Every export times out (after 3 s): reported, once a minute at most.
    wait_for_export_failure_reports(agent, 0).await;
    check_unaffected(agent, devnet).await;
    reported_at_most_once_a_minute(agent, 0, std::time::SystemTime::now());
    hole.abort();
}

/// Waits until Prometheus has stored exemplars of at least `min` on the series of `query`, and
/// returns those.
async fn stored_exemplars(
    prometheus: &common::prometheus::Prometheus,
    query: &str,
    min: f64,
) -> Vec<serde_json::Value> {
    wait_for(
        Duration::from_secs(60),
        &format!("exemplars of {query} of at least {min}"),
        || async {
            let found: Vec<_> = prometheus
                .exemplars(query)
                .await
                .ok()?
                .into_iter()
                .filter(|e| {
                    e["value"]
                        .as_str()
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(|v| v >= min)
                })
                .collect();
            (!found.is_empty()).then_some(found)
        },
    )
    .await
}

/// Waits until the receiver got the span exemplar `e` names (exports are batched).
async fn exemplar_span(received: &Received, e: &serde_json::Value) -> Span {
    let id = |k: &str| e["labels"][k].as_str().unwrap_or_default().to_owned();
    let (trace, span) = (id("trace_id"), id("span_id"));
    assert_eq!(trace.len(), 32, "{e}");
    wait_for(Duration::from_secs(20), "the exemplar's span", || {
        let found = spans(received)
            .into_iter()
            .find(|s| hex(&s.trace_id) == trace && hex(&s.span_id) == span);
        async move { found }
    })
    .await
}

/// From a latency bucket to the slow call: a real Prometheus with exemplar storage scrapes the
/// agent's `/metrics` (it asks for OpenMetrics) while a provider is slow; the exemplars it stores on
/// the RPC duration histogram name trace and span ids of that provider's attempt spans, as the
/// receiver got them, and those on the block delay histogram name `process_block` spans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exemplars_in_prometheus_lead_to_exported_spans() {
    let mut receiver = Receiver::start().await;
    let addr = receiver.addr;
    // A block later than a second is a miss: the outage below makes some.
    let mut s = Scenario::devnet(3, "100ms")
        .config(move |devnet| exporting(&devnet.agent_config("max_block_delay = \"1s\""), addr, ""))
        .env(&PRESSURE)
        .start()
        .await;
    let Scenario { devnet, agent, dir } = &mut s;
    devnet
        .set_fault("p0", json!({"kind": "latency", "ms": 300}))
        .await;
    let api = agent.api_url().await;
    let target = api.trim_start_matches("http://").to_owned();
    let prometheus = common::prometheus::Prometheus::start(dir.path(), &[target], &[]);

    // Exemplars of p0's calls slower than its fault, as Prometheus stored them; each names an
    // attempt span of p0 the receiver got, for the method of its series.
    let slow = stored_exemplars(
        &prometheus,
        r#"blockwatch_rpc_duration_seconds_bucket{provider="p0"}"#,
        0.3,
    )
    .await;
    for e in &slow {
        let got = exemplar_span(&receiver.received, e).await;
        assert_eq!(got.kind, SpanKind::Client as i32, "{got:?}");
        assert_eq!(
            attr_str(&got.attributes, "blockwatch.provider").as_deref(),
            Some("p0")
        );
        assert_eq!(
            attr_str(&got.attributes, "rpc.method"),
            e["seriesLabels"]["method"].as_str().map(str::to_owned),
            "{e}"
        );
        let took = (got.end_time_unix_nano - got.start_time_unix_nano) as f64 / 1e9;
        assert!(took >= 0.3, "the span took {took}s: {e}");
    }
    for e in &stored_exemplars(&prometheus, "blockwatch_block_delay_seconds_bucket", 0.0).await {
        let got = exemplar_span(&receiver.received, e).await;
        assert_eq!(got.name, "process_block", "{got:?}");
    }

    // Blocks made while every provider is down are misses, recovered once they are back: their
    // recovery time's exemplar names the recovered block's span too.
    for p in ["p0", "p1", "p2"] {
        devnet.set_fault(p, json!({"kind": "down"})).await;
    }
    // The chain goes on meanwhile (devnet's control answers through the outage): three seconds of
    // blocks, later than max_block_delay by the end.
    let from = devnet.head().await;
    wait_for(
        Duration::from_secs(30),
        "blocks made during the outage",
        || async { (devnet.head().await >= from + 30).then_some(()) },
    )
    .await;
    devnet.clear_faults().await;
    let recoveries = stored_exemplars(
        &prometheus,
        "blockwatch_missed_block_recovery_duration_seconds_bucket",
        0.0,
    )
    .await;
    for e in &recoveries {
        let got = exemplar_span(&receiver.received, e).await;
        assert_eq!(got.name, "process_block", "{got:?}");
    }
    drop(prometheus);
    s.finish();
    receiver.stop().await;
}

/// A provider made slow: `GET /slow` lists its slow calls, each with the trace and span ids of an
/// attempt span of that provider that the receiver got; `/report` shows them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_lists_a_slow_providers_calls_by_the_ids_of_their_exported_spans() {
    const LATENCY_MS: f64 = 300.0;
    let mut receiver = Receiver::start().await;
    let (received, addr) = (receiver.received.clone(), receiver.addr);
    let mut scenario = Scenario::devnet(3, "200ms")
        .config(move |devnet| exporting(&devnet.agent_config(""), addr, ""))
        .env(&[("OTEL_BSP_SCHEDULE_DELAY", "200")])
        .start()
        .await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(3, Duration::from_secs(30)).await;
    // p0 leads (priority 0); 300 ms is under its 500 ms timeout.
    devnet
        .set_fault("p0", json!({"kind": "latency", "ms": LATENCY_MS as u64}))
        .await;
    let api = agent.api_url().await;
    let slow_of_p0 = || async {
        let (code, body) = http_get(&format!("{api}/slow?provider=p0")).await;
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("/slow is JSON");
        let chain = &v["chains"][0];
        assert_eq!(chain["chain"], "anvil", "{v:#}");
        assert_eq!(chain["providers"][0]["provider"], "p0", "{v:#}");
        chain["providers"][0]["slowest"]
            .as_array()
            .expect("slowest")
            .clone()
    };
    let slowest = wait_for(
        // Hedges soon overtake p0 (its attempts are listed as abandoned) and it is passed over:
        // its next full-length call may be a later probe or check.
        Duration::from_secs(60),
        "p0's calls slower than its latency fault on /slow",
        || async {
            let slowest = slow_of_p0().await;
            slowest
                .iter()
                .any(|c| c["duration_ms"].as_f64().unwrap() >= LATENCY_MS)
                .then_some(slowest)
        },
    )
    .await;
    let (_, report) = http_get(&format!("{api}/report")).await;
    devnet.clear_faults().await;
    // Slowest first, each with its ids (a tracer provider is always installed).
    let durations: Vec<f64> = slowest
        .iter()
        .map(|c| c["duration_ms"].as_f64().unwrap())
        .collect();
    assert!(durations.windows(2).all(|w| w[0] >= w[1]), "{durations:?}");
    assert!(durations[0] >= LATENCY_MS, "{durations:?}");
    let ids: Vec<(String, String, String)> = slowest
        .iter()
        .map(|c| {
            assert_eq!(c["sampled"], true, "{c}");
            assert!(["ok", "error", "abandoned"].contains(&c["outcome"].as_str().unwrap()));
            let id = |k: &str| {
                c[k].as_str()
                    .unwrap_or_else(|| panic!("no {k}: {c}"))
                    .to_owned()
            };
            (id("trace_id"), id("span_id"), id("method"))
        })
        .collect();
    // /report names the slowest of them.
    assert!(
        report.contains(&format!("trace {} span {}", ids[0].0, ids[0].1)),
        "{report}"
    );
    // Every listed call is an exported attempt span of p0, of its method.
    let exported = wait_for(
        Duration::from_secs(20),
        "every call /slow listed among the exported spans",
        || {
            let spans = spans(&received);
            let found: Vec<Span> = ids
                .iter()
                .filter_map(|(t, s, _)| {
                    spans
                        .iter()
                        .find(|x| hex(&x.trace_id) == *t && hex(&x.span_id) == *s)
                        .cloned()
                })
                .collect();
            let all = found.len() == ids.len();
            async move { all.then_some(found) }
        },
    )
    .await;
    for (span, (_, _, method)) in exported.iter().zip(&ids) {
        assert_eq!(span.kind, SpanKind::Client as i32, "{span:?}");
        assert_eq!(span.name, *method, "{span:?}");
        assert_eq!(
            attr_str(&span.attributes, "blockwatch.provider").as_deref(),
            Some("p0"),
            "{span:?}"
        );
        assert_eq!(
            attr_str(&span.attributes, "rpc.method").as_deref(),
            Some(method.as_str())
        );
    }
    scenario.finish();
    receiver.stop().await;
}
