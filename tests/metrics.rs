//! `GET /metrics` serves every metric the agent records, under the documented Prometheus names and
//! attributes, with `service_name` promoted to a label and no unbounded label values.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const CATCH_UP: Duration = Duration::from_secs(30);

/// The sample lines of `family` (exact metric name, or a histogram's `_bucket`/`_sum`/`_count`).
fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .collect()
}

/// The sum of `blockwatch_blocks_processed_total` over its series.
fn processed(text: &str) -> usize {
    samples(text, "blockwatch_blocks_processed_total")
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum::<f64>() as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_spec_names_and_bounded_labels() {
    let devnet = DevnetProc::start(3, "0s").await;
    devnet.mine(60).await;
    // p0 has a tight client-side rate limit, so catching up is throttled.
    let mut scenario = Scenario::on(devnet)
        .config(|devnet| {
            devnet.agent_config("start = 1").replacen(
                "priority = 0\n",
                "priority = 0\nrate_limit = { requests_per_second = 40, burst = 4 }\n",
                1,
            )
        })
        .start()
        .await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(60, CATCH_UP).await;

    // A provider serving bad blocks (integrity errors, a failover), then a reorg.
    devnet.set_fault("p0", json!({"kind": "bad_hash"})).await;
    devnet.mine(3).await;
    agent.wait_for_block(63, CATCH_UP).await;
    devnet.clear_faults().await;
    devnet.mine(2).await;
    agent.wait_for_block(65, CATCH_UP).await;
    devnet.reorg(2).await;
    devnet.mine(1).await;
    agent.wait_for_block(66, CATCH_UP).await;
    assert_eq!(reorgs(&agent.stream()).len(), 1);

    let api = agent.api_url().await;
    // A line is written before its block is counted (write, commit, then observers): scrape until
    // the count has caught up with the lines, as a scraper eventually would.
    let lines = agent
        .stream()
        .iter()
        .filter(|e| matches!(e, blockwatch::model::StreamEvent::Block(_)))
        .count();
    let text = wait_for(CATCH_UP, "blocks_processed to count every line", || {
        let url = format!("{api}/metrics");
        async move {
            let (status, text) = http_get(&url).await;
            assert_eq!(status, 200);
            (processed(&text) == lines).then_some(text)
        }
    })
    .await;

    for (name, labels) in [
        (
            "blockwatch_blocks_processed_total",
            &["chain=\"anvil\"", "provider=\"p"][..],
        ),
        ("blockwatch_block_lag_seconds", &["chain=\"anvil\""][..]),
        ("blockwatch_reorgs_total", &["chain=\"anvil\""][..]),
        // Away from p0 when it failed: in the call that failed (`failover`), or, when a hedge
        // answered that call first, in the next one while p0 cools down (`cooldown`).
        (
            "blockwatch_provider_switches_total",
            &["from=\"p0\"", "to=\"p", "reason=\""][..],
        ),
        (
            "blockwatch_rpc_errors_total",
            &[
                "provider=\"p0\"",
                "method=\"eth_getBlockByNumber\"",
                "error_type=\"invalid_block\"",
            ][..],
        ),
        (
            "blockwatch_rpc_duration_seconds_bucket",
            &["method=\"eth_getBlockByNumber\"", "outcome=\"ok\"", "le=\""][..],
        ),
        (
            "blockwatch_rpc_duration_seconds_count",
            &["outcome=\"error\""][..],
        ),
        ("blockwatch_provider_head", &["provider=\"p1\""][..]),
        (
            "blockwatch_ratelimit_throttled_total",
            &["provider=\"p0\""][..],
        ),
        (
            "blockwatch_block_integrity_errors_total",
            &["provider=\"p0\""][..],
        ),
    ] {
        let lines = samples(&text, name);
        assert!(!lines.is_empty(), "{name} missing from /metrics:\n{text}");
        assert!(
            lines
                .iter()
                .any(|l| labels.iter().all(|want| l.contains(want))),
            "{name} has no sample with {labels:?}:\n{}",
            lines.join("\n")
        );
        assert!(
            lines
                .iter()
                .all(|l| l.contains("service_name=\"blockwatch\"")),
            "{name} lacks service_name"
        );
    }
    let away = samples(&text, "blockwatch_provider_switches_total")
        .into_iter()
        .filter(|l| l.contains("from=\"p0\""))
        .collect::<Vec<_>>();
    assert!(
        away.iter()
            .any(|l| l.contains("reason=\"failover\"") || l.contains("reason=\"cooldown\"")),
        "no switch away from the failing p0: {away:?}"
    );
    // The reorg count is exact (and the processed count matched every block line above).
    assert!(samples(&text, "blockwatch_reorgs_total")[0].ends_with(" 1"));
    // No block number or hash ever becomes a label value.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(!line.contains("0x"), "hash-like label: {line}");
    }
    scenario.finish();
}
