//! The HTTP API against a running agent on devnet: `/health` through healthy, degraded and
//! unhealthy, `/ready`, `/report` and `blockwatch status`, and the 4xx answers to bad requests.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

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
    let devnet = DevnetProc::start(2, "200ms").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = devnet.agent_config("max_block_delay = \"1s\"").replace(
        "[pool]",
        "[pool]\nscore_window = \"3s\"\ncircuit_open_for = \"1s\"",
    );
    let mut agent = Agent::start(dir.path(), &cfg);
    agent.wait_for_block(3, CATCH_UP).await;
    let api = agent.api_url().await;

    let (code, ready) = get(&agent, "/ready").await;
    assert_eq!(code, 200, "{ready}");
    assert_eq!(
        serde_json::from_str::<Value>(&ready).unwrap()["ready"],
        true
    );
    let healthy = health_becomes(&agent, "healthy").await;
    assert_eq!(healthy["reasons"], json!([]));
    assert_eq!(healthy["chains"][0]["usable_providers"], 2);

    let (code, report) = get(&agent, "/report").await;
    assert_eq!(code, 200);
    for part in [
        "status: healthy",
        "chain anvil (id 1337)",
        "p50 ms",
        "p0 ",
        "p1 ",
        "missed blocks: ",
    ] {
        assert!(report.contains(part), "{part:?} not in:\n{report}");
    }
    let out = status_cmd(&["--url", &api]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{printed}");
    assert!(
        printed.contains("status: healthy") && printed.contains("chain anvil"),
        "{printed}"
    );

    // One provider down: degraded, still 200.
    devnet.set_fault("p0", json!({"kind": "down"})).await;
    let degraded = health_becomes(&agent, "degraded").await;
    assert_eq!(degraded["chains"][0]["usable_providers"], 1, "{degraded}");
    // Every provider down: no usable provider, then no new block for max_block_delay: 503.
    devnet.set_fault("p1", json!({"kind": "down"})).await;
    let unhealthy = health_becomes(&agent, "unhealthy").await;
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
    settle_and_check(&mut agent, &devnet).await;
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
        ("/nope", 404),
    ] {
        let (got, body) = get(&agent, path).await;
        assert_eq!(got, code, "{path}: {body}");
        let err: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {body}: {e}"));
        assert!(err["error"].is_string(), "{path}: {body}");
    }
    assert!(agent
        .signal_and_wait("TERM", Duration::from_secs(5))
        .success());

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
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(dir.path(), &devnet.agent_config(""));
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
    assert!(agent
        .signal_and_wait("TERM", Duration::from_secs(5))
        .success());
}
