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

/// The series `/metrics` shows, in either format: each sample's name and labels (an exemplar's
/// labels, after ` # `, are not the series').
fn series(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let sample = line.split(" # ").next().unwrap();
        let Some((name, rest)) = sample.split_once('{') else {
            out.push((sample.split(' ').next().unwrap().to_owned(), Vec::new()));
            continue;
        };
        let mut labels = Vec::new();
        let mut chars = rest.chars().peekable();
        loop {
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            assert_eq!(chars.next(), Some('"'), "{line}");
            let mut value = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.push(chars.next().unwrap()),
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.push((key.trim_start_matches(',').to_owned(), value));
            match chars.peek() {
                Some(',') => {
                    chars.next();
                    if chars.peek() == Some(&'}') {
                        break;
                    }
                }
                _ => break,
            }
        }
        out.push((name.to_owned(), labels));
    }
    out
}

/// Whether a label value looks like something that must never be one: a number, a hash or other
/// long hex, or a URL.
fn unbounded_looking(value: &str) -> bool {
    let hex = value.trim_start_matches("0x");
    value.parse::<f64>().is_ok()
        || value.starts_with("0x")
        || (hex.len() >= 16 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        || value.contains("://")
        || value.contains('/')
}

/// Most series `/metrics` may show for one chain with three providers after every fault kind (see
/// "Cardinality" in docs/telemetry.md).
const SERIES_BOUND: usize = 1_200;

/// JSON-RPC codes and HTTP statuses the `code` label may carry, besides `other` and `none`.
const KNOWN_CODES: [&str; 25] = [
    "-32700", "-32600", "-32601", "-32602", "-32603", "-32000", "-32001", "-32002", "-32003",
    "-32004", "-32005", "-32006", "3", "400", "401", "403", "404", "405", "408", "413", "429",
    "500", "502", "503", "504",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_stay_bounded_through_every_fault_kind() {
    let mut scenario = Scenario::devnet(3, "200ms").start().await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    let api = agent.api_url().await;
    let scrape = |accept: &'static str| {
        let url = format!("{api}/metrics");
        async move {
            reqwest::Client::new()
                .get(url)
                .header("accept", accept)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    // Each fault on p0 until /metrics shows what it causes (the class and code of its errors).
    let faults = [
        (json!({"kind": "down"}), r#"error_type="connection""#),
        (
            json!({"kind": "http_error", "status": 503}),
            r#"code="503""#,
        ),
        (
            json!({"kind": "http_error", "status": 418}),
            r#"code="other""#,
        ),
        (
            json!({"kind": "rpc_error", "code": -32000}),
            r#"code="-32000""#,
        ),
        // A code nobody documents: `other`, not a new label value.
        (
            json!({"kind": "rpc_error", "code": -31337}),
            r#"error_type="rpc_error""#,
        ),
        (
            json!({"kind": "rate_limit", "retry_after_s": 1}),
            r#"code="429""#,
        ),
        (json!({"kind": "timeout"}), r#"error_type="timeout""#),
        (
            json!({"kind": "malformed"}),
            r#"error_type="invalid_response""#,
        ),
        (
            json!({"kind": "wrong_chain", "chain_id": 99}),
            r#"error_type="wrong_chain""#,
        ),
        (json!({"kind": "bad_hash"}), r#"error_type="invalid_block""#),
        (json!({"kind": "latency", "ms": 300}), r#"le="0.5""#),
        (json!({"kind": "stale"}), r#"provider="p0""#),
    ];
    for (fault, shows) in faults {
        devnet.set_fault("p0", fault.clone()).await;
        wait_for(
            CATCH_UP,
            &format!("/metrics to show {shows} under {fault}"),
            || {
                let text = scrape("text/plain");
                async move {
                    let text = text.await;
                    samples(&text, "blockwatch_rpc_errors_total")
                        .iter()
                        .chain(samples(&text, "blockwatch_rpc_duration_seconds_bucket").iter())
                        .any(|l| l.contains(r#"provider="p0""#) && l.contains(shows))
                        .then_some(())
                }
            },
        )
        .await;
        devnet.clear_faults().await;
    }
    devnet
        .control("devnet_skipBlock", json!({"provider": "p1"}))
        .await;
    devnet.reorg(2).await;
    let head = devnet.head().await;
    agent.wait_for_block(head + 3, CATCH_UP).await;

    for accept in ["text/plain", "application/openmetrics-text"] {
        let text = scrape(accept).await;
        let all = series(&text);
        assert!(
            all.len() > 100 && all.len() <= SERIES_BOUND,
            "{} series in {accept}:\n{text}",
            all.len()
        );
        for (name, labels) in &all {
            for (key, value) in labels {
                match key.as_str() {
                    // Bucket bounds are numbers by nature; the code is one of a known set; the
                    // instance id is one value per process, on `target_info` alone.
                    "le" => {}
                    "service_instance_id" => assert_eq!(name, "target_info"),
                    "code" => assert!(
                        KNOWN_CODES.contains(&value.as_str())
                            || value == "other"
                            || value == "none",
                        "{name} code={value}"
                    ),
                    _ => assert!(
                        !unbounded_looking(value),
                        "{name}: {key}={value:?} looks unbounded ({accept})"
                    ),
                }
            }
        }
        // Every error carries a code label, whatever its class.
        for (name, labels) in all
            .iter()
            .filter(|(n, _)| n == "blockwatch_rpc_errors_total")
        {
            assert!(labels.iter().any(|(k, _)| k == "code"), "{name} {labels:?}");
        }
    }
    scenario.finish();
}
