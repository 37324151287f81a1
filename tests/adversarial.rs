//! Verdicts an operator can trust, under ordinary and adversarial conditions, on devnet: a catch-up
//! is lag and never a miss; a provider that lies about its head, goes back, skips a block or serves
//! another block than asked is found out, never leads and never moves the stream; every skip is
//! recorded once whoever leads; every health surface gives the same answer; a chain that hashes
//! blocks its own way is followed with `block_hash_check = "consensus"` and reported once, plainly,
//! with the default check. Each scenario ends with the stream equal to devnet's canonical chain.

mod common;

use std::time::{Duration, Instant};

use blockwatch::{
    model::MissedBlock,
    store::{SqliteStore, StateStore},
};
use common::*;
use serde_json::{json, Value};

const CATCH_UP: Duration = Duration::from_secs(60);

fn records(dir: &std::path::Path) -> Vec<MissedBlock> {
    SqliteStore::open(&dir.join("state.db"))
        .unwrap()
        .missed(Some("anvil"), None, 100_000)
        .unwrap()
}

async fn get_json(agent: &Agent, path: &str) -> (u16, Value) {
    let (code, body) = http_get(&format!("{}{path}", agent.api_url().await)).await;
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {body}: {e}"));
    (code, v)
}

/// `cfg` with every `ws_url` removed: heads by polling only.
fn polling_only(cfg: &str) -> String {
    cfg.lines()
        .filter(|l| !l.starts_with("ws_url"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `cfg` with `pool` lines added to its `[pool]` table.
fn with_pool(cfg: &str, pool: &str) -> String {
    cfg.replace("[pool]\n", &format!("[pool]\n{pool}\n"))
}

/// The agent's log lines at warn and error, but the first 200 at most.
fn warnings(agent: &Agent) -> String {
    agent
        .log()
        .lines()
        .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
        .take(200)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `provider_inconsistent` log records of the agent.
fn inconsistencies(agent: &Agent) -> Vec<Value> {
    agent
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "provider_inconsistent")
        .collect()
}

/// Health knobs short enough for a test, and a liar set aside for 3 s after its last lie.
const FAST: &str = r#"probe_interval = "300ms"
score_window = "3s"
switch_hold = "1s"
circuit_open_for = "1s"
inconsistent_for = "3s""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_a_thousand_blocks_is_lag_not_misses_and_so_is_a_restart() {
    // The default rate limit (25 requests/s, burst 50) and max_block_delay of 5 s: the backlog
    // takes far longer than that to fetch.
    // Timeouts of 3 s: a debug-built devnet announcing 1,000 blocks at once is slow to answer
    // for a moment, and a timeout would be a real miss.
    let mut scenario = Scenario::devnet(3, "200ms")
        .config(|devnet| {
            devnet
                .agent_config("max_block_delay = \"5s\"")
                .replace("timeout = \"500ms\"", "timeout = \"3s\"")
                .replace(
                    "[pool]",
                    "[alerts]\nno_new_block_after = \"30s\"\n  [[alerts.channels]]\n  kind = \"file\"\n  path = \"alerts.jsonl\"\n\n[pool]",
                )
        })
        .start()
        .await;
    let Scenario { devnet, agent, dir } = &mut scenario;
    agent.wait_for_block(devnet.head().await, CATCH_UP).await;
    let burst_from = devnet.mine(1000).await - 999;

    // While it lasts: lag, shown as such on every surface.
    let s = wait_status(agent, "the chain catching up to the burst's end", |s| {
        first_chain(s)["catch_up"]["to"].as_u64().unwrap_or(0) >= burst_from + 999
            && first_chain(s)["behind_blocks"].as_u64().unwrap_or(0) > 100
    })
    .await;
    let all_alive = first_chain(&s)["providers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["state"] == "alive");
    if all_alive {
        assert_eq!(first_chain(&s)["status"], "catching_up", "{s:#}");
    }
    let c = &first_chain(&s)["catch_up"];
    assert!(c["from"].as_u64().unwrap() >= burst_from - 1, "{s:#}");
    assert!(c["to"].as_u64().unwrap() >= burst_from + 999, "{s:#}");
    let (code, h) = get_json(agent, "/health").await;
    assert_eq!(code, 200, "a catch-up is not unhealthy: {h:#}");
    assert!(
        h["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap_or_default().contains("catching up")),
        "{h:#}"
    );
    wait_for(CATCH_UP, "blockwatch_blocks_behind", || {
        let agent = &agent;
        async move {
            let m = http_get(&format!("{}/metrics", agent.api_url().await))
                .await
                .1;
            (metric_sum(&m, "blockwatch_blocks_behind", &[]) > 100.0).then_some(())
        }
    })
    .await;
    let head = devnet.head().await;
    agent.wait_for_block(head, CATCH_UP).await;
    wait_status(agent, "the catch-up to end", |s| {
        first_chain(s)["status"] == "healthy" && first_chain(s)["catch_up"].is_null()
    })
    .await;
    let lag: f64 = canonical(&agent.stream())
        .iter()
        .filter(|b| b.block_number > burst_from + 900)
        .map(|b| b.lag_ms as f64)
        .fold(0.0, f64::max);
    assert!(
        lag > 5000.0,
        "the burst was fetched within max_block_delay ({lag} ms): it proves nothing"
    );

    // A restart after downtime: the blocks made meanwhile are lag too.
    agent.stop();
    devnet.mine(500).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    agent.restart();
    settle_and_check(agent, devnet).await;

    let recs = records(dir.path());
    assert!(
        recs.is_empty(),
        "no block was ever unavailable, yet {} records, the first {:?}; warnings:\n{}",
        recs.len(),
        recs.first(),
        warnings(agent)
    );
    let (_, stats) = get_json(agent, "/stats").await;
    assert_eq!(stats["chains"][0]["blocks_missed"], 0, "{stats:#}");
    assert_eq!(stats["chains"][0]["longest_missed_streak"], 0, "{stats:#}");
    let (_, export) = get_json(agent, "/export?format=json").await;
    assert_eq!(export, json!([]));
    let alerts = std::fs::read_to_string(dir.path().join("alerts.jsonl")).unwrap_or_default();
    assert!(
        !alerts.contains("missed_blocks"),
        "a missed-blocks alert fired: {alerts}"
    );
    scenario.finish();
}

/// Samples how far the emitted tip is behind devnet's head, every 100 ms for `for_how_long`;
/// returns the worst.
async fn worst_behind(agent: &Agent, devnet: &DevnetProc, for_how_long: Duration) -> u64 {
    let until = Instant::now() + for_how_long;
    let mut worst = 0;
    while Instant::now() < until {
        let head = devnet.head().await;
        let tip = first_chain(&status_json(agent).await)["last_processed_block"]
            .as_u64()
            .unwrap_or(0);
        worst = worst.max(head.saturating_sub(tip));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_leader_that_lies_about_its_head_is_found_out_and_never_moves_the_stream() {
    // Heads by polling only, every 500 ms; p0 leads (priority).
    let mut scenario = Scenario::devnet(3, "200ms")
        .config(|devnet| {
            with_pool(
                &polling_only(&devnet.agent_config("poll_interval = \"500ms\"")),
                FAST,
            )
        })
        .start()
        .await;
    let Scenario { devnet, agent, dir } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    wait_status(agent, "p0 to lead", |s| {
        first_chain(s)["current_provider"] == "p0"
    })
    .await;

    // The lie starts once devnet has answered; it is found out when the agent logs it (its own
    // clock, not this test's polling of /status).
    devnet
        .set_fault("p0", json!({"kind": "head_offset", "blocks": 1000}))
        .await;
    let lied_at = std::time::SystemTime::now();
    let s = wait_status(agent, "p0 inconsistent", |s| {
        provider_of(s, "p0")["state"] == "inconsistent"
    })
    .await;
    assert_eq!(
        provider_of(&s, "p0")["state_reason"],
        "head ahead of every other provider, not served"
    );
    let lie = inconsistencies(agent);
    assert_eq!(lie[0]["provider"], "p0", "{lie:?}");
    assert_eq!(lie[0]["reason"], "head_ahead", "{lie:?}");
    let caught_at = humantime::parse_rfc3339(lie[0]["timestamp"].as_str().unwrap()).unwrap();
    let found_in = caught_at.duration_since(lied_at).unwrap_or_default();
    assert!(
        found_in < Duration::from_millis(1500),
        "found out after {found_in:?}, more than 3 poll intervals"
    );
    // Never the leader while inconsistent; its head is not the chain's.
    let s = wait_status(agent, "another leader", |s| {
        first_chain(s)["current_provider"] != "p0"
    })
    .await;
    let real = devnet.head().await;
    assert!(
        first_chain(&s)["head"].as_u64().unwrap() <= real + 1,
        "the liar's head was believed: {s:#}"
    );
    // The stream keeps up within one poll interval (500 ms = 2.5 blocks) of the real head.
    let worst = worst_behind(agent, devnet, Duration::from_secs(4)).await;
    assert!(worst <= 5, "the stream fell {worst} blocks behind");
    let s = status_json(agent).await;
    assert_eq!(provider_of(&s, "p0")["state"], "inconsistent", "{s:#}");
    assert_ne!(first_chain(&s)["current_provider"], "p0");
    let m = http_get(&format!("{}/metrics", agent.api_url().await))
        .await
        .1;
    assert!(
        metric_sum(
            &m,
            "blockwatch_provider_inconsistencies_total",
            &[("provider", "p0"), ("reason", "head_ahead")]
        ) >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "blockwatch_provider_up",
            &[("provider", "p0"), ("state", "inconsistent")]
        ),
        1.0,
        "{m}"
    );

    devnet.clear_faults().await;
    settle_and_check(agent, devnet).await;
    let recs = records(dir.path());
    assert!(
        recs.iter()
            .all(|r| r.recovered_from.as_deref() != Some("p0")),
        "a miss names the liar as its source: {recs:#?}"
    );
    // Back once it stops lying.
    wait_status(agent, "p0 consistent again", |s| {
        provider_of(s, "p0")["state"] == "alive"
    })
    .await;
    scenario.finish();
}

/// Gives `who` `fault` while the agent follows devnet; waits until `who` is inconsistent for
/// `reason` and not leading, and the stream has gone on; then clears it and checks the stream.
async fn found_out(devnet: &DevnetProc, agent: &mut Agent, who: &str, fault: Value, reason: &str) {
    devnet.set_fault(who, fault.clone()).await;
    let s = wait_status(agent, &format!("{who} inconsistent for {fault}"), |s| {
        provider_of(s, who)["state"] == "inconsistent" && first_chain(s)["current_provider"] != who
    })
    .await;
    let lies = inconsistencies(agent);
    assert!(
        lies.iter()
            .any(|l| l["provider"] == who && l["reason"] == reason),
        "{fault}: {lies:?}\n{s:#}"
    );
    // Every other provider is left alone.
    for p in first_chain(&s)["providers"].as_array().unwrap() {
        if p["name"] != who {
            assert_ne!(p["state"], "inconsistent", "{fault}: {s:#}");
        }
    }
    let head = devnet.head().await;
    agent.wait_for_block(head + 5, CATCH_UP).await;
    devnet.clear_faults().await;
    settle_and_check(agent, devnet).await;
    wait_status(agent, &format!("{who} consistent again"), |s| {
        provider_of(s, who)["state"] != "inconsistent"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_gone_back_a_follower_far_ahead_and_a_wrong_block_are_each_found_out() {
    let mut scenario = Scenario::devnet(3, "200ms")
        .config(|devnet| with_pool(&polling_only(&devnet.agent_config("")), FAST))
        .start()
        .await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    wait_status(agent, "p0 to lead", |s| {
        first_chain(s)["current_provider"] == "p0"
    })
    .await;

    // The leader's head goes back by 50, beyond the reorg window (16).
    devnet.mine(100).await;
    agent.wait_for_block(devnet.head().await, CATCH_UP).await;
    found_out(
        devnet,
        agent,
        "p0",
        json!({"kind": "head_offset", "blocks": -50}),
        "head_backwards",
    )
    .await;
    // A provider that does not lead jumps 1,000 ahead.
    found_out(
        devnet,
        agent,
        "p2",
        json!({"kind": "head_offset", "blocks": 1000}),
        "head_ahead",
    )
    .await;
    // The leader serves a real block, with its right hash, for another number than asked.
    wait_status(agent, "p0 to lead again", |s| {
        first_chain(s)["current_provider"] == "p0"
    })
    .await;
    found_out(
        devnet,
        agent,
        "p0",
        json!({"kind": "wrong_block"}),
        "wrong_block",
    )
    .await;
    assert!(
        reorgs(&agent.stream()).is_empty(),
        "a lie made the stream reorg"
    );
    scenario.finish();
}

/// Skips the next block on the provider leading under `selection = "best"` (or, with `leader`
/// false, on one that does not lead), and checks that it is recorded exactly once, attributed to it.
async fn a_skip_is_recorded_once(websocket: bool, on_leader: bool) {
    let mut scenario = Scenario::devnet(3, "200ms")
        .config(move |devnet| {
            let cfg = with_pool(
                &devnet
                    .agent_config("")
                    .replace("selection = \"priority\"", "selection = \"best\""),
                FAST,
            );
            if websocket {
                cfg
            } else {
                polling_only(&cfg)
            }
        })
        .start()
        .await;
    let Scenario { devnet, agent, dir } = &mut scenario;
    agent.wait_for_block(5, CATCH_UP).await;
    let status = wait_status(agent, "a leader", |s| {
        first_chain(s)["current_provider"].is_string()
    })
    .await;
    let leading = first_chain(&status)["current_provider"]
        .as_str()
        .unwrap()
        .to_owned();
    // The provider that skips: the leader, or one that does not lead (the selection may also move
    // away from the leader before its skip is seen).
    let skipper = if on_leader {
        leading
    } else {
        ["p0", "p1", "p2"]
            .into_iter()
            .find(|p| *p != leading)
            .unwrap()
            .to_owned()
    };
    let skipped = devnet
        .control("devnet_skipBlock", json!({ "provider": skipper }))
        .await["skipped"]
        .as_u64()
        .unwrap();
    agent.wait_for_block(skipped + 5, CATCH_UP).await;
    let rec = wait_for(CATCH_UP, "the skipped block's record", || {
        let recs = records(dir.path());
        async move { recs.into_iter().find(|r| r.block_number == skipped) }
    })
    .await;
    assert_eq!(rec.metadata["skipped_by"], skipper.as_str(), "{rec:?}");
    assert_eq!(rec.reason.as_str(), "NodeUnresponsive", "{rec:?}");
    assert!(rec.recovered, "{rec:?}");
    assert_ne!(rec.recovered_from.as_deref(), Some(skipper.as_str()));
    settle_and_check(agent, devnet).await;
    // Time for a late second report (a recheck, a gap seen twice) to be stored, if one comes.
    agent.wait_for_block(skipped + 15, CATCH_UP).await;
    let recs = records(dir.path());
    assert_eq!(
        recs.iter().filter(|r| r.block_number == skipped).count(),
        1,
        "{recs:#?}"
    );
    let (_, stats) = get_json(agent, "/stats").await;
    assert_eq!(
        stats["chains"][0]["blocks_missed"].as_u64().unwrap(),
        recs.len() as u64,
        "{stats:#}"
    );
    scenario.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skip_on_the_leader_is_recorded_once_with_newheads() {
    a_skip_is_recorded_once(true, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skip_on_the_leader_is_recorded_once_when_polling() {
    a_skip_is_recorded_once(false, true).await
}

/// Found through the provider's `newHeads` gap: nobody asks a provider that does not lead for the
/// block, so with polling alone such a skip goes unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skip_by_a_provider_that_does_not_lead_is_recorded_once_with_newheads() {
    a_skip_is_recorded_once(true, false).await
}

/// What every health surface says, read once each.
#[derive(Debug)]
struct Surfaces {
    health_code: u16,
    health: String,
    status: String,
    chain_status: String,
    report: String,
    cli_exit: Option<i32>,
    cli: String,
    metric: Vec<String>,
    provider_states: Vec<(String, String)>,
    provider_up: Vec<(String, String)>,
}

async fn surfaces(agent: &Agent) -> Surfaces {
    let api = agent.api_url().await;
    let (health_code, h) = get_json(agent, "/health").await;
    let s = status_json(agent).await;
    let report = http_get(&format!("{api}/report")).await.1;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_blockwatch"))
        .args(["status", "--url", &api])
        .output()
        .unwrap();
    let m = http_get(&format!("{api}/metrics")).await.1;
    let metric = ["healthy", "catching_up", "degraded", "unhealthy"]
        .into_iter()
        .filter(|st| metric_sum(&m, "blockwatch_chain_state", &[("state", st)]) == 1.0)
        .map(str::to_owned)
        .collect();
    let provider_states = first_chain(&s)["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let provider_up = m
        .lines()
        .filter(|l| l.starts_with("blockwatch_provider_up{") && l.ends_with(" 1"))
        .filter_map(|l| {
            let label = |k: &str| {
                let at = l.find(&format!("{k}=\""))? + k.len() + 2;
                Some(l[at..].split('"').next()?.to_owned())
            };
            Some((label("provider")?, label("state")?))
        })
        .collect::<Vec<_>>();
    let mut provider_up = provider_up;
    provider_up.sort();
    Surfaces {
        health_code,
        health: h["status"].as_str().unwrap_or_default().to_owned(),
        status: s["status"].as_str().unwrap_or_default().to_owned(),
        chain_status: first_chain(&s)["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        report,
        cli_exit: out.status.code(),
        cli: String::from_utf8_lossy(&out.stdout).into_owned(),
        metric,
        provider_states,
        provider_up,
    }
}

impl Surfaces {
    /// Whether every surface says `state`.
    fn agree_on(&self, state: &str) -> bool {
        let code = if state == "unhealthy" { 503 } else { 200 };
        let exit = if state == "unhealthy" { 1 } else { 0 };
        let line = format!("status: {state}\n");
        let mut states = self.provider_states.clone();
        states.sort();
        self.health_code == code
            && self.health == state
            && self.status == state
            && self.chain_status == state
            && self.report.contains(&line)
            && self.report.contains(&format!("): {state} — head"))
            && self.cli_exit == Some(exit)
            && self.cli.contains(&line)
            && self.metric == [state]
            && self.provider_up == states
    }
}

/// The `providers_down` alerts the file channel has got: (tier, status).
fn providers_down_alerts(dir: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join("alerts.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["rule"] == "providers_down")
        .map(|v| {
            (
                v["tier"].as_str().unwrap_or_default().to_owned(),
                v["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_health_surface_gives_one_answer_through_every_transition() {
    let mut scenario = Scenario::devnet(2, "200ms")
        .config(|devnet| {
            with_pool(
                &devnet.agent_config("max_block_delay = \"3s\"").replace(
                    "[pool]",
                    "[alerts]\nthrottle = \"1s\"\n  [[alerts.channels]]\n  kind = \"file\"\n  path = \"alerts.jsonl\"\n\n[pool]",
                ),
                FAST,
            )
        })
        .start()
        .await;
    let Scenario { devnet, agent, dir } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    let mut seen = Vec::new();
    // healthy → degraded (one provider down) → unhealthy (the other one's circuit opens too: no
    // usable provider) → healthy.
    let steps: [(&str, Option<&str>); 4] = [
        ("healthy", None),
        ("degraded", Some("p0")),
        ("unhealthy", Some("p1")),
        ("healthy", None),
    ];
    for (state, down) in steps {
        match down {
            Some(p) => devnet.set_fault(p, json!({"kind": "down"})).await,
            None => devnet.clear_faults().await,
        }
        let agreed = wait_for(CATCH_UP, &format!("every surface to say {state}"), || {
            let agent = &agent;
            async move {
                let s = surfaces(agent).await;
                s.agree_on(state).then_some(s)
            }
        })
        .await;
        seen.push((state, agreed));
        // The alert rule reads the same verdict: the tier follows it.
        let want = match state {
            "degraded" => Some("warning"),
            "unhealthy" => Some("emergency"),
            _ => None,
        };
        if let Some(tier) = want {
            wait_for(CATCH_UP, &format!("providers_down {tier}"), || {
                let alerts = providers_down_alerts(dir.path());
                async move {
                    alerts
                        .iter()
                        .any(|(t, s)| t == tier && s == "firing")
                        .then_some(())
                }
            })
            .await;
        }
    }
    // Back to healthy: the alert resolved.
    wait_for(CATCH_UP, "providers_down resolved", || {
        let alerts = providers_down_alerts(dir.path());
        async move { (alerts.last().map(|(_, s)| s.as_str()) == Some("resolved")).then_some(()) }
    })
    .await;
    assert_eq!(seen.len(), 4);
    settle_and_check(agent, devnet).await;
    scenario.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_that_hashes_blocks_its_own_way_is_followed_by_consensus() {
    let mut scenario = Scenario::devnet(3, "200ms")
        .devnet_args(&["--hashing", "rollup"])
        .chain("block_hash_check = \"consensus\"")
        .start()
        .await;
    let Scenario { devnet, agent, dir } = &mut scenario;
    agent.wait_for_block(10, CATCH_UP).await;
    // A reorg on such a chain is followed by parent links all the same.
    devnet.reorg(3).await;
    wait_for(CATCH_UP, "the reorg line", || {
        let r = reorgs(&agent.stream());
        async move { r.into_iter().next() }
    })
    .await;
    settle_and_check(agent, devnet).await;
    assert_eq!(
        records(dir.path())
            .iter()
            .filter(|r| r.reason.as_str() != "ChainReorg")
            .count(),
        0
    );
    let m = http_get(&format!("{}/metrics", agent.api_url().await))
        .await
        .1;
    assert_eq!(
        metric_sum(&m, "blockwatch_block_integrity_errors_total", &[]),
        0.0,
        "{m}"
    );
    // Asking a second provider for a block's hash is no switch: p0 led throughout.
    assert_eq!(
        metric_sum(&m, "blockwatch_provider_switches_total", &[]),
        0.0,
        "{m}"
    );
    assert!(
        canonical(&agent.stream())
            .iter()
            .all(|b| b.provider == "p0"),
        "not every block came from the leader"
    );
    scenario.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_that_hashes_blocks_its_own_way_is_reported_once_with_the_header_check() {
    let mut scenario = Scenario::devnet(3, "200ms")
        .devnet_args(&["--hashing", "rollup"])
        .start()
        .await;
    let Scenario { agent, dir, .. } = &mut scenario;
    let (_, h) = wait_for(CATCH_UP, "the verdict in /health", || {
        let agent = &agent;
        async move {
            let (code, h) = get_json(agent, "/health").await;
            h["reasons"]
                .as_array()?
                .iter()
                .any(|r| r.as_str().is_some_and(|r| r.contains("block_hash_check")))
                .then_some((code, h))
        }
    })
    .await;
    assert_eq!(h["status"], "unhealthy", "{h:#}");
    let reason = h["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|r| r.contains("block_hash_check"))
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("chain anvil") && reason.contains("\"consensus\""),
        "{reason}"
    );
    // Given time to flood (several of its 5 s retries), it does not.
    let deadline = Instant::now() + Duration::from_secs(12);
    while Instant::now() < deadline {
        assert!(agent.is_running(), "{}", agent.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = agent.log();
    let reported = log
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\"") && l.contains("block_hash_check"))
        .count();
    assert_eq!(reported, 1, "reported once, plainly:\n{log}");
    let s = status_json(agent).await;
    for p in first_chain(&s)["providers"].as_array().unwrap() {
        assert!(
            matches!(p["state"].as_str(), Some("alive" | "degraded")),
            "a provider was blamed for the chain's hashing: {s:#}"
        );
    }
    let m = http_get(&format!("{}/metrics", agent.api_url().await))
        .await
        .1;
    assert!(
        metric_sum(&m, "blockwatch_block_integrity_errors_total", &[]) <= 3.0,
        "a flood of integrity errors: {m}"
    );
    assert_eq!(records(dir.path()), vec![], "not a provider's miss");
    assert!(agent.stream().is_empty(), "nothing unverified was emitted");
    scenario.finish();
}
