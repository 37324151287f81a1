//! Provider health on devnet: states, scores, switching, circuit breaking, hedging, silent
//! subscriptions and forks, each asserted on `/status`, `/metrics` and the emitted stream. Every
//! scenario ends with the stream equal to devnet's canonical chain: no block lost or repeated.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const CATCH_UP: Duration = Duration::from_secs(30);

/// Health knobs short enough for a test: decisions within a second or two.
const FAST_HEALTH: &str = r#"probe_interval = "300ms"
score_window = "3s"
switch_hold = "1s"
circuit_open_for = "1s"
"#;

fn config_with(devnet: &DevnetProc, selection: &str, pool: &str) -> String {
    devnet
        .agent_config("")
        .replace(
            "selection = \"priority\"",
            &format!("selection = \"{selection}\""),
        )
        .replace("[pool]\n", &format!("[pool]\n{FAST_HEALTH}{pool}"))
}

async fn metrics(agent: &Agent) -> String {
    http_get(&format!("{}/metrics", agent.api_url().await))
        .await
        .1
}

fn current(status: &Value) -> String {
    first_chain(status)["current_provider"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_provider_loses_the_lead_and_gets_it_back_after_recovering() {
    let mut scenario = Scenario::devnet(2, "200ms")
        .config(|devnet| config_with(devnet, "best", ""))
        .start()
        .await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    let s = wait_status(agent, "a current provider with a score", |s| {
        !current(s).is_empty()
            && first_chain(s)["providers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["score"].is_number())
    })
    .await;
    let leader = current(&s);
    let other = if leader == "p0" { "p1" } else { "p0" };
    // Two equal providers do not flap: with no fault, no switch for a few seconds.
    let before = metric_sum(
        &metrics(agent).await,
        "blockwatch_provider_switches_total",
        &[],
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let m = metrics(agent).await;
    let after = metric_sum(&m, "blockwatch_provider_switches_total", &[]);
    assert_eq!(
        before,
        after,
        "equal providers flapped: {}\n{}",
        m.lines()
            .filter(|l| l.starts_with("blockwatch_provider_switches_total"))
            .collect::<Vec<_>>()
            .join("\n"),
        agent.log()
    );

    devnet
        .set_fault(&leader, json!({"kind": "latency", "ms": 300}))
        .await;
    let score = |s: &Value, p: &str| provider_of(s, p)["score"].as_f64().unwrap_or(0.0);
    let s = wait_status(
        agent,
        "the fast provider to take the lead on a better score",
        |s| current(s) == other && score(s, &leader) < score(s, other),
    )
    .await;
    let slow = provider_of(&s, &leader);
    assert_eq!(slow["state"], "alive", "300 ms is slow, not broken: {s:#}");
    // Whichever came first: its score fell behind, or it lost calls to hedges and was passed over
    // (after which the score keeps it out of the lead).
    let m = metrics(agent).await;
    let switched = |reason| {
        metric_sum(
            &m,
            "blockwatch_provider_switches_total",
            &[("from", &leader), ("to", other), ("reason", reason)],
        )
    };
    assert!(switched("score") + switched("cooldown") >= 1.0, "{m}");

    // The old leader recovers, the new one slows down: the lead goes back.
    devnet.clear_faults().await;
    devnet
        .set_fault(other, json!({"kind": "latency", "ms": 300}))
        .await;
    wait_status(agent, "the recovered provider to lead again", |s| {
        current(s) == leader
    })
    .await;
    devnet.clear_faults().await;
    settle_and_check(agent, devnet).await;

    scenario.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_provider_is_demoted_and_says_it_is_syncing() {
    let mut scenario = Scenario::devnet(3, "200ms")
        .config(|devnet| config_with(devnet, "priority", ""))
        .start()
        .await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    wait_status(agent, "p0 to lead", |s| current(s) == "p0").await;

    devnet.set_fault("p0", json!({"kind": "stale"})).await;
    let s = wait_status(agent, "p0 to be lagging and demoted", |s| {
        provider_of(s, "p0")["state"] == "lagging" && current(s) != "p0"
    })
    .await;
    assert!(
        provider_of(&s, "p0")["lag_blocks"].as_u64().unwrap() > 5,
        "{s:#}"
    );
    // Degraded, as `/health` says too: a provider is not alive, another one is usable.
    assert_eq!(first_chain(&s)["status"], "degraded", "{s:#}");
    wait_status(agent, "eth_syncing to say p0 is syncing", |s| {
        provider_of(s, "p0")["syncing"] == true
    })
    .await;
    let m = metrics(agent).await;
    assert_eq!(
        metric_sum(
            &m,
            "blockwatch_provider_up",
            &[("provider", "p0"), ("state", "lagging")]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "blockwatch_provider_up",
            &[("provider", "p0"), ("state", "alive")]
        ),
        0.0
    );
    // The chain goes on meanwhile.
    let head = devnet.head().await;
    agent.wait_for_block(head + 5, CATCH_UP).await;

    devnet.clear_faults().await;
    wait_status(agent, "p0 to catch up and lead again", |s| {
        provider_of(s, "p0")["state"] == "alive" && current(s) == "p0"
    })
    .await;
    settle_and_check(agent, devnet).await;
    let log = agent.log();
    assert!(
        log.contains(r#""message":"provider_state""#) && log.contains(r#""to":"lagging""#),
        "the transition is logged:\n{log}"
    );
    scenario.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_opens_on_failures_and_a_half_open_probe_closes_it() {
    let mut scenario = Scenario::devnet(2, "200ms")
        .config(|devnet| config_with(devnet, "priority", "circuit_failures = 3\n"))
        .start()
        .await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    wait_status(agent, "p0 to lead", |s| current(s) == "p0").await;

    devnet
        .set_fault("p0", json!({"kind": "rpc_error", "code": -32000}))
        .await;
    let s = wait_status(agent, "p0's circuit to open", |s| {
        provider_of(s, "p0")["state"] == "circuit_open"
    })
    .await;
    assert_eq!(provider_of(&s, "p0")["score"], 0.0, "{s:#}");
    let head = devnet.head().await;
    agent.wait_for_block(head + 5, CATCH_UP).await;
    assert_eq!(current(&status_json(agent).await), "p1");

    devnet.clear_faults().await;
    wait_status(agent, "p0's circuit to close and p0 to lead", |s| {
        provider_of(s, "p0")["state"] == "alive" && current(s) == "p0"
    })
    .await;
    settle_and_check(agent, devnet).await;
    let log = agent.log();
    assert!(log.contains(r#""message":"circuit_open""#), "{log}");
    assert!(log.contains(r#""message":"circuit_closed""#), "{log}");
    let m = metrics(agent).await;
    assert!(
        metric_sum(
            &m,
            "blockwatch_provider_switches_total",
            &[("from", "p0"), ("to", "p1")]
        ) >= 1.0,
        "{m}"
    );
    scenario.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedge_wins_against_an_800ms_provider() {
    // Scores would move the lead away from a slow provider after `switch_hold`: held off here, so
    // that what carries the chain past the slow leader is the hedge. (Chain-id re-checks are
    // spaced out so that their slow answers do not become its p95, and the timeout is above
    // 800 ms so that it is slow, not failing.)
    let mut scenario = Scenario::devnet(2, "200ms")
        .config(|devnet| {
            config_with(devnet, "best", "hedge_min_delay = \"50ms\"\n")
                .replace("switch_hold = \"1s\"", "switch_hold = \"60s\"")
                .replace(
                    "chain_check_interval = \"1s\"",
                    "chain_check_interval = \"60s\"",
                )
                .replace("timeout = \"500ms\"", "timeout = \"2s\"")
        })
        .start()
        .await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    let s = wait_status(agent, "a leader", |s| !current(s).is_empty()).await;
    let slow = current(&s);
    let fast = if slow == "p0" { "p1" } else { "p0" };

    devnet
        .set_fault(&slow, json!({"kind": "latency", "ms": 800}))
        .await;
    let from = devnet.head().await + 1;
    agent.wait_for_block(from + 10, CATCH_UP).await;
    // After a few calls lost to hedges the slow leader is passed over: hedging does not hide it.
    let m = metrics(agent).await;
    assert!(
        metric_sum(
            &m,
            "blockwatch_provider_switches_total",
            &[("from", &slow), ("to", fast), ("reason", "cooldown")]
        ) >= 1.0,
        "{m}"
    );
    let during: Vec<_> = canonical(&agent.stream())
        .into_iter()
        .filter(|b| b.block_number >= from)
        .collect();
    let by_fast = during.iter().filter(|b| b.provider == fast).count();
    assert!(
        by_fast * 10 >= during.len() * 8,
        "hedged calls are answered by {fast}: {by_fast} of {}: {:?}",
        during.len(),
        during
            .iter()
            .map(|b| (b.block_number, &b.provider, &b.received_at))
            .collect::<Vec<_>>(),
    );
    let m = metrics(agent).await;
    assert!(
        metric_sum(
            &m,
            "blockwatch_rpc_hedges_total",
            &[("provider", fast), ("outcome", "won")]
        ) >= 3.0,
        "{m}"
    );
    devnet.clear_faults().await;
    settle_and_check(agent, devnet).await;
    scenario.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_open_until_its_first_head_and_live_from_it() {
    // Mining on demand: the subscriptions open while no block comes.
    let devnet = DevnetProc::start(2, "0s").await;
    devnet.mine(3).await;
    let mut scenario = Scenario::on(devnet).start().await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    let s = wait_status(agent, "both subscriptions open", |s| {
        provider_of(s, "p0")["subscription"] == "open"
            && provider_of(s, "p1")["subscription"] == "open"
    })
    .await;
    assert_eq!(first_chain(&s)["last_processed_block"], 3, "{s:#}");
    let head = devnet.mine(1).await;
    wait_status(agent, "both subscriptions live after a head", |s| {
        provider_of(s, "p0")["subscription"] == "live"
            && provider_of(s, "p1")["subscription"] == "live"
    })
    .await;
    agent.wait_for_block(head, CATCH_UP).await;
    scenario.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_subscription_is_noticed_and_polling_takes_over() {
    let mut scenario = Scenario::devnet(2, "200ms")
        .config(|devnet| config_with(devnet, "priority", ""))
        .start()
        .await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    wait_status(agent, "both subscriptions live", |s| {
        provider_of(s, "p0")["subscription"] == "live"
            && provider_of(s, "p1")["subscription"] == "live"
    })
    .await;

    devnet.set_fault("p0", json!({"kind": "ws_silent"})).await;
    wait_status(agent, "p0's subscription to be found silent", |s| {
        provider_of(s, "p0")["subscription"] == "silent"
    })
    .await;
    // Both silent: the head comes from polling, and the chain goes on.
    devnet.set_fault("p1", json!({"kind": "ws_silent"})).await;
    wait_status(agent, "p1's subscription to be found silent", |s| {
        provider_of(s, "p1")["subscription"] == "silent"
    })
    .await;
    let head = devnet.head().await;
    agent.wait_for_block(head + 5, CATCH_UP).await;

    devnet.clear_faults().await;
    wait_status(agent, "both subscriptions live again", |s| {
        provider_of(s, "p0")["subscription"] == "live"
            && provider_of(s, "p1")["subscription"] == "live"
    })
    .await;
    settle_and_check(agent, devnet).await;
    scenario.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_on_another_fork_is_counted_never_followed_or_emitted() {
    let mut scenario = Scenario::devnet(3, "200ms")
        .config(|devnet| config_with(devnet, "priority", ""))
        .start()
        .await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    wait_status(agent, "p0 to lead", |s| current(s) == "p0").await;

    // p0 announces and serves hashes the others do not: a disagreement at every height.
    devnet.set_fault("p0", json!({"kind": "bad_hash"})).await;
    let from = devnet.head().await + 1;
    let s = wait_status(agent, "the disagreement in /status", |s| {
        first_chain(s)["forks"].as_array().is_some_and(|f| {
            f.iter()
                .any(|f| f["providers"][0] == "p0" && f["count"].as_u64().unwrap_or(0) >= 3)
        })
    })
    .await;
    // The two providers that agree are not counted against each other.
    assert!(
        first_chain(&s)["forks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["providers"][0] == "p0" || f["providers"][1] == "p0"),
        "{s:#}"
    );
    agent.wait_for_block(from + 10, CATCH_UP).await;
    let during: Vec<_> = canonical(&agent.stream())
        .into_iter()
        .filter(|b| b.block_number >= from)
        .collect();
    assert!(
        during.iter().all(|b| b.provider != "p0"),
        "a block from the bad-hash provider was emitted"
    );
    let m = metrics(agent).await;
    assert!(
        metric_sum(
            &m,
            "blockwatch_block_integrity_errors_total",
            &[("provider", "p0")]
        ) >= 1.0,
        "{m}"
    );
    devnet.clear_faults().await;
    settle_and_check(agent, devnet).await;
    assert!(
        reorgs(&agent.stream()).is_empty(),
        "a disagreeing provider caused a reorg"
    );
    scenario.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catching_up_uses_batches_and_a_broken_block_is_fetched_elsewhere() {
    let devnet = DevnetProc::start(2, "0s").await;
    devnet.mine(100).await;
    // p0 leads and serves broken blocks: every batch it answers has one, and fails as a whole.
    devnet.set_fault("p0", json!({"kind": "bad_hash"})).await;
    // Default probing, and heads polled once a second (the chain mines nothing here, so every
    // provider is polled; a probe or a poll every 300 ms would dwarf the block requests counted
    // below).
    let mut scenario = Scenario::on(devnet)
        .chain("start = 1\npoll_interval = \"1s\"")
        .start()
        .await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(100, CATCH_UP).await;
    let requests = devnet.all_requests().await;
    assert!(
        requests < 60,
        "100 blocks took {requests} HTTP requests: not batched"
    );
    let chain = canonical(&agent.stream());
    assert_eq!(chain.first().map(|b| b.block_number), Some(1));
    assert!(
        chain.iter().all(|b| b.provider == "p1"),
        "a block from the bad-hash provider was emitted"
    );
    let m = metrics(agent).await;
    assert!(
        metric_sum(
            &m,
            "blockwatch_block_integrity_errors_total",
            &[("provider", "p0")]
        ) >= 1.0,
        "{m}"
    );
    devnet.clear_faults().await;
    settle_and_check(agent, devnet).await;
    scenario.finish();
}
