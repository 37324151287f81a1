//! The missed-block monitor on devnet: each injected miss is found once, with its reason, in the
//! database, `/stats` and the metrics; misses are recovered in order, and the stream still equals
//! devnet's canonical chain.

mod common;

use std::time::Duration;

use blockwatch::{
    monitor::{MissedBlock, Reason},
    store::Store,
};
use common::*;
use serde_json::{json, Value};

const CATCH_UP: Duration = Duration::from_secs(30);

async fn get_json(agent: &Agent, path: &str) -> Value {
    let (code, body) = http_get(&format!("{}{path}", agent.api_url().await)).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn records(dir: &std::path::Path) -> Vec<MissedBlock> {
    Store::open(&dir.join("state.db"))
        .unwrap()
        .missed(Some("anvil"), None, 10_000)
        .unwrap()
}

fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn settle_and_check(agent: &mut Agent, devnet: &DevnetProc) {
    let head = devnet.head().await;
    agent.wait_for_block(head, CATCH_UP).await;
    let chain = canonical(&agent.stream());
    assert_matches_node(&chain, &devnet.info.control).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_the_leader_fails_is_a_recovered_miss_with_its_reason() {
    let devnet = DevnetProc::start(2, "200ms").await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(dir.path(), &devnet.agent_config(""));
    agent.wait_for_block(3, CATCH_UP).await;
    assert!(records(dir.path()).is_empty(), "no miss while healthy");

    devnet
        .set_fault("p0", json!({"kind": "rpc_error", "code": -32000}))
        .await;
    let head = devnet.head().await;
    agent.wait_for_block(head + 3, CATCH_UP).await;
    devnet.clear_faults().await;
    settle_and_check(&mut agent, &devnet).await;

    let recs = records(dir.path());
    let rpc: Vec<_> = recs
        .iter()
        .filter(|r| r.reason == Reason::RpcError)
        .collect();
    assert!(!rpc.is_empty(), "{recs:#?}");
    for r in &rpc {
        assert!(r.recovered, "{r:?}");
        assert_eq!(r.recovered_from.as_deref(), Some("p1"), "{r:?}");
        assert_eq!(r.metadata["failed_provider"], "p0", "{r:?}");
    }
    // Each record is one emitted block, once.
    let emitted: Vec<u64> = canonical(&agent.stream())
        .iter()
        .map(|b| b.block_number)
        .collect();
    for r in &recs {
        assert_eq!(emitted.iter().filter(|&&n| n == r.block_number).count(), 1);
    }
    let stats = get_json(&agent, "/stats").await;
    let s = &stats["chains"][0];
    assert_eq!(s["chain"], "anvil");
    assert_eq!(
        s["blocks_missed"].as_u64().unwrap(),
        recs.len() as u64,
        "{stats:#}"
    );
    assert_eq!(s["blocks_recovered"], s["blocks_missed"], "{stats:#}");
    assert_eq!(s["recovery_rate"], 1.0, "{stats:#}");
    let m = http_get(&format!("{}/metrics", agent.api_url().await))
        .await
        .1;
    assert_eq!(
        metric_sum(
            &m,
            "blockwatch_blocks_missed_total",
            &[("reason", "RpcError")]
        ),
        rpc.len() as f64,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "blockwatch_blocks_recovered_total", &[]),
        recs.len() as f64
    );
    assert!(agent.log().contains(r#""message":"missed_block""#));

    // Export: the same records as JSON and CSV, over HTTP and from the command line.
    let api = agent.api_url().await;
    let (code, json) = http_get(&format!("{api}/export?format=json&chain=anvil")).await;
    assert_eq!(code, 200, "{json}");
    let exported: Vec<MissedBlock> = serde_json::from_str(&json).unwrap();
    assert_eq!(exported, recs);
    let (code, csv) = http_get(&format!("{api}/export?format=csv")).await;
    assert_eq!(code, 200, "{csv}");
    assert_eq!(csv.lines().count(), recs.len() + 1, "{csv}");
    assert!(csv.starts_with("chain,block_number,reason,severity,"));
    let (code, none) = http_get(&format!("{api}/export?format=json&since=4000000000")).await;
    assert_eq!((code, none.trim()), (200, "[]"));
    for bad in ["format=xml", "chain=nope", "since=yesterday", "limit=3"] {
        let (code, body) = http_get(&format!("{api}/export?{bad}")).await;
        assert_eq!(code, 400, "{bad}: {body}");
        let err: Value = serde_json::from_str(&body).unwrap();
        assert!(err["error"].is_string(), "{body}");
    }
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_blockwatch"))
        .args(["export", "--format", "csv", "--config", "blockwatch.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let cli_csv = String::from_utf8(cli.stdout).unwrap();
    assert_eq!(cli_csv.lines().count(), recs.len() + 1, "{cli_csv}");
    assert_eq!(cli_csv.lines().next(), csv.lines().next());
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_blockwatch"))
        .args(["export", "--format", "xml", "--config", "blockwatch.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(agent
        .signal_and_wait("TERM", Duration::from_secs(5))
        .success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_nobody_can_serve_stays_open_until_it_is_recovered_in_order() {
    let devnet = DevnetProc::start(2, "200ms").await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(dir.path(), &devnet.agent_config("max_block_delay = \"1s\""));
    agent.wait_for_block(3, CATCH_UP).await;

    for p in ["p0", "p1"] {
        devnet.set_fault(p, json!({"kind": "down"})).await;
    }
    // The block the stream waits for is recorded once overdue, unrecovered.
    let open = wait_for(CATCH_UP, "an open miss in the database", || {
        let recs = records(dir.path());
        async move { recs.into_iter().find(|r| !r.recovered) }
    })
    .await;
    assert_eq!(open.reason, Reason::ConnectionLost, "{open:?}");
    assert_eq!(open.severity.as_str(), "Critical", "{open:?}");
    let stats = get_json(&agent, "/stats").await;
    assert!(
        stats["chains"][0]["current_missed_streak"]
            .as_u64()
            .unwrap()
            >= 1
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    devnet.clear_faults().await;
    settle_and_check(&mut agent, &devnet).await;
    let recs = records(dir.path());
    let rec = recs
        .iter()
        .find(|r| r.block_number == open.block_number)
        .unwrap();
    assert!(rec.recovered, "{rec:?}");
    assert!(rec.recovered_from.is_some());
    // The blocks made during the outage came late: misses of the same outage, recovered.
    let late: Vec<_> = recs
        .iter()
        .filter(|r| r.block_number > open.block_number)
        .collect();
    assert!(!late.is_empty(), "{recs:#?}");
    assert!(
        late.iter()
            .all(|r| r.recovered && r.reason == Reason::ConnectionLost),
        "{late:#?}"
    );
    let stats = get_json(&agent, "/stats").await;
    let s = &stats["chains"][0];
    assert_eq!(s["blocks_recovered"], s["blocks_missed"], "{stats:#}");
    assert!(
        s["average_recovery_seconds"].as_f64().unwrap() > 0.0,
        "{stats:#}"
    );
    // The open block waited out the outage (at least the second slept above).
    assert!(
        rec.metadata["recovery_seconds"].as_f64().unwrap() >= 1.0,
        "{rec:?}"
    );
    assert!(agent
        .signal_and_wait("TERM", Duration::from_secs(5))
        .success());
}
