//! The HTTP API against a running agent on devnet: `/health` through healthy, degraded and
//! unhealthy, `/ready`, `/report` and `blockwatch status`, the 4xx answers to bad requests, and its
//! limits against clients that hold connections open.

mod common;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::*;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const CATCH_UP: Duration = Duration::from_secs(30);

async fn get(agent: &Agent, path: &str) -> (u16, String) {
    http_get(&format!("{}{path}", agent.api_url().await)).await
}

/// Waits until `/health` says `want`, and returns its body.
async fn health_becomes(agent: &Agent, want: &str) -> Value {
    let url = format!("{}/health", agent.api_url().await);
    wait_for(CATCH_UP, &format!("/health {want}"), || {
        let url = url.clone();
        async move {
            let (code, body) = http_get(&url).await;
            let v: Value = serde_json::from_str(&body).unwrap();
            let expected_code = if want == "unhealthy" { 503 } else { 200 };
            (v["status"] == want && code == expected_code).then_some(v)
        }
    })
    .await
}

fn status_cmd(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_blockwatch"))
        .arg("status")
        .args(args)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_report_and_status_follow_the_providers() {
    let mut scenario = Scenario::devnet(2, "200ms")
        .config(|devnet| {
            devnet.agent_config("max_block_delay = \"1s\"").replace(
                "[pool]",
                "[pool]\nscore_window = \"3s\"\ncircuit_open_for = \"1s\"",
            )
        })
        .start()
        .await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    let api = agent.api_url().await;

    let (code, ready) = get(agent, "/ready").await;
    assert_eq!(code, 200, "{ready}");
    assert_eq!(
        serde_json::from_str::<Value>(&ready).unwrap()["ready"],
        true
    );
    let healthy = health_becomes(agent, "healthy").await;
    assert_eq!(healthy["reasons"], json!([]));
    assert_eq!(healthy["chains"][0]["usable_providers"], 2);

    let (code, report) = get(agent, "/report").await;
    assert_eq!(code, 200);
    for part in [
        "status: healthy",
        "chain anvil (id 1337)",
        "p50 ms",
        "p0 ",
        "p1 ",
        // The health window (`score_window`) is the slow-call lists' window too.
        "slowest calls of the last 3s (trace and span ids):",
        "missed blocks: ",
    ] {
        assert!(report.contains(part), "{part:?} not in:\n{report}");
    }
    // /slow: every provider, its lists over the same window, each call with its trace id.
    let (code, slow) = get(agent, "/slow?chain=anvil").await;
    assert_eq!(code, 200, "{slow}");
    let slow: Value = serde_json::from_str(&slow).unwrap();
    assert_eq!(slow["kept"], 10, "{slow:#}");
    let providers = slow["chains"][0]["providers"].as_array().unwrap();
    let names: Vec<&str> = providers
        .iter()
        .map(|p| p["provider"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["p0", "p1"], "{slow:#}");
    assert!(
        providers.iter().all(|p| p["window_seconds"] == 3.0),
        "{slow:#}"
    );
    // p0 leads: it has calls in the window.
    let calls = providers[0]["slowest"].as_array().unwrap();
    assert!(!calls.is_empty(), "{slow:#}");
    assert!(
        calls
            .iter()
            .all(|c| c["trace_id"].as_str().is_some_and(|t| t.len() == 32)),
        "{slow:#}"
    );
    let out = status_cmd(&["--url", &api]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{printed}");
    assert!(
        printed.contains("status: healthy") && printed.contains("chain anvil"),
        "{printed}"
    );

    // One provider down: degraded, still 200.
    devnet.set_fault("p0", json!({"kind": "down"})).await;
    let degraded = health_becomes(agent, "degraded").await;
    assert_eq!(degraded["chains"][0]["usable_providers"], 1, "{degraded}");
    // Every provider down: no usable provider, then no new block for max_block_delay: 503.
    devnet.set_fault("p1", json!({"kind": "down"})).await;
    let unhealthy = health_becomes(agent, "unhealthy").await;
    wait_for(CATCH_UP, "both reasons", || {
        let url = format!("{api}/health");
        async move {
            let (_, body) = http_get(&url).await;
            (body.contains("no usable provider") && body.contains("no new block for")).then_some(())
        }
    })
    .await;
    assert_eq!(unhealthy["status"], "unhealthy");
    let out = status_cmd(&["--url", &api]);
    assert_eq!(out.status.code(), Some(1), "an unhealthy agent is exit 1");
    assert!(String::from_utf8_lossy(&out.stdout).contains("status: unhealthy"));

    devnet.clear_faults().await;
    settle_and_check(agent, devnet).await;
    wait_for(CATCH_UP, "/health 200 again", || {
        let url = format!("{api}/health");
        async move { (http_get(&url).await.0 == 200).then_some(()) }
    })
    .await;

    // Bad requests: a JSON error naming the problem.
    for (path, code) in [
        ("/status?verbose=1", 400),
        ("/health?x", 400),
        ("/report?chain=anvil", 400),
        ("/metrics?name=x", 400),
        ("/export?format=yaml", 400),
        ("/slow?chain=nope", 400),
        ("/slow?provider=p9", 400),
        ("/slow?limit=1", 400),
        ("/nope", 404),
    ] {
        let (got, body) = get(agent, path).await;
        assert_eq!(got, code, "{path}: {body}");
        let err: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {body}: {e}"));
        assert!(err["error"].is_string(), "{path}: {body}");
    }
    agent.stop();

    // Nobody there: exit 1 with a message; a bad URL: exit 2.
    let out = status_cmd(&["--url", &api]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agent answers"));
    let out = status_cmd(&["--url", "ftp://example.com"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_a_head_is_known() {
    // A provider that accepts connections and never answers: no head, so not ready.
    let devnet = DevnetProc::start(1, "200ms").await;
    devnet.set_fault("p0", json!({"kind": "timeout"})).await;
    let mut scenario = Scenario::on(devnet).start().await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    let api = agent.api_url().await;
    let (code, body) = http_get(&format!("{api}/ready")).await;
    assert_eq!(code, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["waiting_for"], json!(["anvil"]));
    devnet.clear_faults().await;
    wait_for(CATCH_UP, "ready", || {
        let url = format!("{api}/ready");
        async move { (http_get(&url).await.0 == 200).then_some(()) }
    })
    .await;
    agent.wait_for_block(3, CATCH_UP).await;
    scenario.finish();
}

/// Sends `head` (a request head without its final blank line) with `Connection: close` to `addr`
/// and returns the status, the response head in lower case, and the body.
async fn raw(addr: &str, head: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("no answer within 10s")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// The `error` string of a JSON error body.
fn error_of(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON: {body:?}: {e}"));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error string: {body}"))
        .to_owned()
}

/// The header timeout the limits test configures.
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// Waits for the agent to disconnect `s`: within 3 header timeouts, and not before half of one.
async fn closed_by_the_header_timeout(s: &mut TcpStream, what: &str) {
    let t0 = Instant::now();
    let closed = closed_within(s, 3 * HEADER_TIMEOUT)
        .await
        .unwrap_or_else(|| panic!("{what} was not disconnected within 3 header timeouts"));
    assert!(
        closed - t0 >= HEADER_TIMEOUT / 2,
        "{what}: disconnected after {:?}",
        closed - t0
    );
}

/// Reads until the peer closes the connection (EOF or reset) and returns when; `None` if it is
/// still open after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Instant> {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// Reads one answer with a `Content-Length` from a connection that stays open.
async fn read_answer(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or_else(|| panic!("no Content-Length: {head}"));
            if body.len() >= length {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("no whole answer within 5s")
            .unwrap();
        assert!(n > 0, "closed before its answer: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// A process's open file descriptors and resident memory in kB, from /proc.
fn fds_and_rss_kb(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    (fds, rss)
}

/// How many client sockets this process can open besides what it already uses: up to `want`,
/// within its soft limit of open files (raised to the hard limit with prlimit(1) when too low).
fn sockets_to_open(want: usize) -> usize {
    fn soft_and_hard() -> (u64, u64) {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("Max open files in /proc/self/limits");
        let mut n = line["Max open files".len()..]
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(u64::MAX));
        (n.next().unwrap(), n.next().unwrap())
    }
    let headroom = 128;
    let (soft, hard) = soft_and_hard();
    if soft < (want + headroom) as u64 && hard > soft {
        let _ = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={hard}:{hard}"))
            .status();
    }
    let (soft, _) = soft_and_hard();
    want.min((soft as usize).saturating_sub(headroom))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_bad_requests_with_json_and_holds_up_against_idle_clients() {
    const CAP: usize = 32;
    // File descriptors the agent may open or close meanwhile on its own (provider connections).
    const SLACK: usize = 16;
    let mut scenario = Scenario::devnet(1, "200ms")
        .config(|devnet| {
            devnet.agent_config("").replace(
                "http_listen = \"127.0.0.1:0\"",
                &format!(
                    "http_listen = \"127.0.0.1:0\"\nhttp_max_connections = {CAP}\n\
                     http_header_timeout = \"{}s\"\nhttp_request_timeout = \"5s\"",
                    HEADER_TIMEOUT.as_secs()
                ),
            )
        })
        .start()
        .await;
    let Scenario { agent, .. } = &mut scenario;
    let api = agent.api_url().await;
    let addr = api.trim_start_matches("http://").to_owned();
    wait_for(CATCH_UP, "ready", || {
        let url = format!("{api}/ready");
        async move { (http_get(&url).await.0 == 200).then_some(()) }
    })
    .await;

    // A wrong method: 405 with Allow and a JSON error.
    for (method, path) in [
        ("POST", "/health"),
        ("DELETE", "/export"),
        ("PUT", "/status"),
    ] {
        let (code, head, body) = raw(&addr, &format!("{method} {path} HTTP/1.1\r\nHost: x")).await;
        assert_eq!(code, 405, "{method} {path}: {head}");
        let allow = head
            .lines()
            .find_map(|l| l.strip_prefix("allow:"))
            .unwrap_or_else(|| panic!("{method} {path}: no Allow in {head}"));
        let allowed: Vec<&str> = allow.split(',').map(str::trim).collect();
        assert!(allowed.contains(&"get"), "{method} {path}: allow: {allow}");
        assert!(
            !allowed.contains(&method.to_ascii_lowercase().as_str()),
            "{allow}"
        );
        assert!(head.contains("content-type: application/json"), "{head}");
        assert_eq!(
            error_of(&body),
            format!("method {method} not allowed on {path}: use GET or HEAD")
        );
    }

    // A repeated parameter has no one meaning: 400 naming it.
    for (path, param) in [
        ("/export?format=csv&format=json", "format"),
        ("/export?chain=anvil&chain=anvil", "chain"),
        ("/export?since=0&since=1", "since"),
        ("/slow?provider=p0&provider=p0", "provider"),
    ] {
        let (code, body) = get(agent, path).await;
        assert_eq!(code, 400, "{path}: {body}");
        let err = error_of(&body);
        assert!(
            err.contains(&format!("{param:?} given more than once")),
            "{path}: {err}"
        );
    }
    let (code, body) = get(agent, "/export?format=csv&chain=anvil&since=0").await;
    assert_eq!(code, 200, "each parameter once is fine: {body}");
    // An unknown path, a body (no route reads one).
    let (code, body) = get(agent, "/nope").await;
    assert_eq!(code, 404);
    assert!(error_of(&body).starts_with("no route /nope"), "{body}");
    let (code, _, body) = raw(
        &addr,
        "GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000",
    )
    .await;
    assert_eq!(code, 413, "{body}");
    assert!(error_of(&body).contains("request body too large"), "{body}");

    // Half a request head: disconnected once the header timeout has passed, not before.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    closed_by_the_header_timeout(&mut s, "half a request head").await;

    // A kept-alive connection idle after its answer: the same.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    closed_by_the_header_timeout(&mut s, "an idle kept-alive connection").await;

    // Many idle connections, half of them with half a request head: the agent holds at most CAP
    // of them (the rest wait in the kernel's accept queue), so its descriptors and memory stay
    // bounded until the ones it holds time out.
    let pid = agent.pid();
    let (fds0, rss0) = fds_and_rss_kb(pid);
    // No more than the agent's accept queue holds besides the ones it serves: a connection past it
    // would wait for its handshake, which is the kernel's business, not the agent's.
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(128);
    let queue = somaxconn.min(blockwatch::api::ACCEPT_BACKLOG as usize);
    let n = sockets_to_open(1000).min(queue + CAP);
    assert!(n >= 8 * CAP, "only {n} sockets can be opened");
    let closed = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..n {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        if i % 2 == 1 {
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        let closed = closed.clone();
        clients.spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok(1..) = s.read(&mut buf).await {}
            closed.fetch_add(1, Ordering::SeqCst);
        });
    }
    let (mut max_fds, mut max_rss) = (0, 0);
    wait_for(
        5 * HEADER_TIMEOUT,
        "the agent to disconnect the idle connections it holds",
        || {
            let (fds, rss) = fds_and_rss_kb(pid);
            (max_fds, max_rss) = (max_fds.max(fds), max_rss.max(rss));
            let done = closed.load(Ordering::SeqCst) >= CAP;
            async move { done.then_some(()) }
        },
    )
    .await;
    assert!(
        max_fds >= fds0 + CAP / 2,
        "the agent never held the idle connections: {max_fds} descriptors, {fds0} before"
    );
    assert!(
        max_fds <= fds0 + CAP + SLACK,
        "{max_fds} descriptors with {n} idle clients, {fds0} before, cap {CAP}"
    );
    assert!(
        max_rss <= rss0 + 16 * 1024,
        "resident memory {max_rss} kB with {n} idle clients, {rss0} kB before"
    );
    eprintln!("{n} idle clients: descriptors {fds0} -> at most {max_fds}, RSS {rss0} -> at most {max_rss} kB");

    // Once they are gone the API answers as before, and the descriptors are given back.
    clients.abort_all();
    while clients.join_next().await.is_some() {}
    wait_for(CATCH_UP, "/health 200 after the idle clients", || {
        let url = format!("{api}/health");
        async move { (http_get(&url).await.0 == 200).then_some(()) }
    })
    .await;
    wait_for(CATCH_UP, "the agent's descriptors back to before", || {
        let fds = fds_and_rss_kb(pid).0;
        async move { (fds <= fds0 + SLACK).then_some(()) }
    })
    .await;
    assert!(agent.is_running(), "log:\n{}", agent.log());
    scenario.finish();
}
