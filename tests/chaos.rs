//! The chaos suite: devnet faults injected through its control API while the real agent follows it.
//! After every scenario the emitted stream must be devnet's canonical chain exactly (no gap, no
//! repeat, parents linked) and the agent must still be running.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const CATCH_UP: Duration = Duration::from_secs(30);

/// Waits until the agent has caught up with devnet's head, then checks the whole stream.
async fn settle_and_check(agent: &mut Agent, devnet: &DevnetProc, what: &str) {
    let head = devnet.head().await;
    agent.wait_for_block(head, CATCH_UP).await;
    assert!(
        agent.is_running(),
        "agent died during {what}; log:\n{}",
        agent.log()
    );
    let chain = canonical(&agent.stream());
    assert_matches_node(&chain, &devnet.info.control).await;
}

/// The provider that served the newest block.
fn active_provider(agent: &Agent) -> String {
    canonical(&agent.stream())
        .last()
        .map(|b| b.provider.clone())
        .expect("no block yet")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_kind_on_the_active_provider() {
    let mut scenario = Scenario::devnet(3, "200ms").start().await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    // Each fault, with what the agent's log must show before it is cleared for the faults that
    // take a closer look than a failed call to notice (a chain-id re-check, a hash recomputation).
    let faults = [
        (json!({"kind": "down"}), None),
        (json!({"kind": "http_error", "status": 500}), None),
        (json!({"kind": "rpc_error", "code": -32000}), None),
        (json!({"kind": "latency", "ms": 800}), None),
        (json!({"kind": "rate_limit", "retry_after_s": 2}), None),
        (json!({"kind": "timeout"}), None),
        (json!({"kind": "stale"}), None),
        (json!({"kind": "malformed"}), None),
        (
            json!({"kind": "wrong_chain", "chain_id": 999}),
            Some("serves another chain"),
        ),
        (json!({"kind": "bad_hash"}), Some("hashes to")),
    ];
    for (fault, evidence) in faults {
        // p0 leads under priority selection once it has recovered from the previous fault (a
        // Retry-After or a cooldown may keep it out for a while): that is the provider to hit.
        wait_for(CATCH_UP, "p0 to lead again", || {
            let p = active_provider(agent);
            async move { (p == "p0").then_some(()) }
        })
        .await;
        let target = active_provider(agent);
        devnet.set_fault(&target, fault.clone()).await;
        // The chain goes on while the fault lasts: the agent must keep up through the others.
        let head = devnet.head().await;
        agent.wait_for_block(head + 5, CATCH_UP).await;
        if let Some(evidence) = evidence {
            wait_for(CATCH_UP, evidence, || {
                let seen = agent.log().contains(evidence);
                async move { seen.then_some(()) }
            })
            .await;
        }
        devnet.clear_faults().await;
        settle_and_check(agent, devnet, &format!("{fault} on {target}")).await;
    }
    let log = agent.log();
    assert!(
        log.contains("serves another chain"),
        "wrong_chain was not noticed:\n{log}"
    );
    assert!(
        log.contains("hashes to"),
        "bad_hash was not noticed:\n{log}"
    );
    scenario.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_killed_restarted_failing_together_and_flapping() {
    let mut scenario = Scenario::devnet(3, "200ms").start().await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;

    // Killed (until the agent has moved to another provider) and restarted.
    let target = active_provider(agent);
    devnet.set_fault(&target, json!({"kind": "down"})).await;
    wait_for(CATCH_UP, "blocks from another provider", || {
        let p = active_provider(agent);
        let target = target.clone();
        async move { (p != target).then_some(()) }
    })
    .await;
    devnet.clear_faults().await;
    settle_and_check(agent, devnet, "a provider killed and restarted").await;

    // Two providers failing at once.
    devnet.set_fault("p0", json!({"kind": "down"})).await;
    devnet
        .set_fault("p1", json!({"kind": "http_error", "status": 503}))
        .await;
    let head = devnet.head().await;
    agent.wait_for_block(head + 5, CATCH_UP).await;
    devnet.clear_faults().await;
    settle_and_check(agent, devnet, "two providers failing at once").await;

    // A provider that flaps every 300 ms.
    for i in 0..12 {
        if i % 2 == 0 {
            devnet.set_fault("p0", json!({"kind": "down"})).await;
        } else {
            devnet.clear_faults().await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    devnet.clear_faults().await;
    settle_and_check(agent, devnet, "a flapping provider").await;
    scenario.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorgs_of_depth_1_3_and_the_window() {
    // Mining on demand, so that the depth the agent sees is exactly the depth made.
    let devnet = DevnetProc::start(3, "0s").await;
    devnet.mine(20).await;
    let mut scenario = Scenario::on(devnet).chain("start = 1").start().await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(20, CATCH_UP).await;
    for depth in [1u64, 3, 16] {
        let head = devnet.head().await;
        agent.wait_for_block(head, CATCH_UP).await;
        let before = reorgs(&agent.stream()).len();
        devnet.reorg(depth).await;
        devnet.mine(1).await;
        settle_and_check(agent, devnet, &format!("a reorg of depth {depth}")).await;
        let seen = reorgs(&agent.stream());
        assert_eq!(
            seen.len(),
            before + 1,
            "one reorg line for depth {depth}; log:\n{}",
            agent.log()
        );
        assert_eq!(seen.last().unwrap().depth, depth);
        devnet.mine(3).await;
    }
    scenario.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_under_the_backlog_being_fetched_ahead() {
    // Catching up 600 blocks in batches of 10 at 300 blocks/s, so that the reorg below lands while
    // blocks of the old branch are fetched ahead and not yet emitted (or already emitted).
    let devnet = DevnetProc::start(2, "0s").await;
    devnet.mine(600).await;
    // The hashes of the blocks the reorg will replace (201..=600), before the agent sees any.
    let mut dead_branch = std::collections::HashMap::new();
    for n in 201..=600u64 {
        let b = rpc(
            &devnet.info.control,
            "eth_getBlockByNumber",
            json!([format!("0x{n:x}"), false]),
        )
        .await;
        dead_branch.insert(b["hash"].as_str().unwrap().to_owned(), n);
    }
    let mut scenario = Scenario::on(devnet)
        .config(|devnet| {
            devnet
                .agent_config("start = 1")
                .replace("reorg_window = 16", "reorg_window = 512")
                .replace(
                    "timeout = \"500ms\"",
                    "timeout = \"500ms\"\nmax_batch_size = 10\nrate_limit = { requests_per_second = 300, burst = 10 }",
                )
        })
        .start()
        .await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(150, CATCH_UP).await;
    // Blocks 201..=600 replaced, whatever the agent holds of them.
    devnet.reorg(400).await;
    devnet.mine(1).await;
    settle_and_check(agent, devnet, "a reorg under the backlog").await;
    let errors = agent
        .stream()
        .iter()
        .filter(|e| matches!(e, blockwatch::model::StreamEvent::Error(_)))
        .count();
    assert_eq!(errors, 0, "log:\n{}", agent.log());
    // One reorg if blocks of the old branch were emitted, none if not; never back and forth (a
    // block fetched before the reorg, answered after a fresher one, is not taken for a reorg).
    let events = agent.stream();
    let chain = canonical(&events);
    let mut dead = Vec::new();
    let mut seen = Vec::new();
    for (i, e) in events.iter().enumerate() {
        match e {
            blockwatch::model::StreamEvent::Block(b) => {
                if let Some(&n) = dead_branch.get(&b.hash.to_string()) {
                    assert_eq!(n, b.block_number, "{b:?}");
                    dead.push((i, b.clone()));
                }
            }
            blockwatch::model::StreamEvent::Reorg(r) => seen.push((i, r.clone())),
            blockwatch::model::StreamEvent::Error(_) => {}
        }
    }
    match (dead.last(), seen.as_slice()) {
        // Absorbed before emission: no block of the dead branch, no reorg line.
        (None, []) => eprintln!("the reorg landed before any replaced block was emitted"),
        // Blocks 201..=k of the dead branch were emitted: one reorg line, after all of them, from
        // k back to block 200, revealed by a block of the branch the stream then followed.
        (Some((last_i, last)), [(i, r)]) => {
            let numbers: Vec<u64> = dead.iter().map(|(_, b)| b.block_number).collect();
            assert_eq!(
                numbers,
                (201..=last.block_number).collect::<Vec<_>>(),
                "the dead branch's blocks emitted"
            );
            assert!(i > last_i, "a dead-branch block after the reorg line: {r:?}");
            assert_eq!(r.common_ancestor, 200, "{r:?}");
            assert_eq!(
                (r.old_head.number, r.old_head.hash),
                (last.block_number, last.hash),
                "{r:?}"
            );
            assert_eq!(r.depth, last.block_number - 200, "{r:?}");
            let revealed = chain
                .iter()
                .find(|b| b.block_number == r.new_head.number)
                .unwrap_or_else(|| panic!("new_head not in the stream: {r:?}"));
            assert_eq!(revealed.hash, r.new_head.hash, "{r:?}");
            eprintln!(
                "the reorg replaced blocks 201..={} already emitted",
                last.block_number
            );
        }
        (last_dead, seen) => panic!(
            "reorg lines {seen:?} do not match the dead branch's emitted blocks (last {last_dead:?})"
        ),
    }
    scenario.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_killed_and_restarted_mid_fault() {
    let mut scenario = Scenario::devnet(3, "200ms").start().await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    let target = active_provider(agent);
    devnet
        .set_fault(&target, json!({"kind": "http_error", "status": 500}))
        .await;
    // Killed once it is working around the fault (blocks from another provider)...
    wait_for(CATCH_UP, "blocks from another provider", || {
        let p = active_provider(agent);
        let target = target.clone();
        async move { (p != target).then_some(()) }
    })
    .await;
    agent.signal_and_wait("KILL", Duration::from_secs(5));
    // ...and restarted, the fault still on, after the chain has moved on without it.
    let killed_at = devnet.head().await;
    wait_for(CATCH_UP, "devnet to move on", || async {
        (devnet.head().await >= killed_at + 3).then_some(())
    })
    .await;
    agent.restart();
    let head = devnet.head().await;
    agent.wait_for_block(head + 3, CATCH_UP).await;
    devnet.clear_faults().await;
    settle_and_check(agent, devnet, "a SIGKILL mid-fault").await;
    scenario.finish();
}

/// HTTP requests devnet has received on provider `i`.
async fn requests(devnet: &DevnetProc, i: usize) -> u64 {
    devnet.control("devnet_status", json!({})).await["providers"][i]["requests"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_honoured() {
    let mut scenario = Scenario::devnet(2, "200ms").start().await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    assert_eq!(active_provider(agent), "p0");

    let before = requests(devnet, 0).await;
    devnet
        .set_fault("p0", json!({"kind": "rate_limit", "retry_after_s": 2}))
        .await;
    // The first 429 arrives...
    wait_for(CATCH_UP, "a request to hit the 429", || async {
        (requests(devnet, 0).await > before).then_some(())
    })
    .await;
    // ...and from then on p0 hears nothing until its Retry-After has passed (requests already in
    // flight when the first 429 came back are given 300 ms to land).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quiet_from = requests(devnet, 0).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        requests(devnet, 0).await,
        quiet_from,
        "p0 was called during its Retry-After"
    );
    // Meanwhile the chain is followed through p1.
    let head = devnet.head().await;
    agent.wait_for_block(head, CATCH_UP).await;
    devnet.clear_faults().await;
    // After the pause p0 is used again.
    wait_for(CATCH_UP, "p0 to serve blocks again", || {
        let p = active_provider(agent);
        async move { (p == "p0").then_some(()) }
    })
    .await;
    settle_and_check(agent, devnet, "a 429 with Retry-After").await;
    scenario.finish();
}

/// Requests per second the agent sends while every provider answers HTTP 500, with `budget` and
/// `floor` as its retry budget.
async fn load_during_outage(budget: &str, floor: &str) -> f64 {
    // Without recovery's `retry_delay` pacing, the stream asks for the missing block at every
    // poll: the load a retry budget is for.
    let budget = format!(
        "chain_check_interval = \"1s\"\nretry_budget = {budget}\nretry_budget_floor = {floor}"
    );
    let mut scenario = Scenario::devnet(3, "200ms")
        .config(move |devnet| {
            devnet
                .agent_config("")
                .replace("chain_check_interval = \"1s\"", &budget)
                .replace("[pool]", "[monitor]\nenable_recovery = false\n\n[pool]")
        })
        .start()
        .await;
    let Scenario { devnet, agent, .. } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    for p in ["p0", "p1", "p2"] {
        devnet
            .set_fault(p, json!({"kind": "http_error", "status": 500}))
            .await;
    }
    // Let a full bank drain, then measure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = devnet.all_requests().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rate = (devnet.all_requests().await - from) as f64 / 3.0;
    devnet.clear_faults().await;
    settle_and_check(agent, devnet, "an outage of every provider").await;
    scenario.finish();
    rate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_budget_keeps_an_outage_from_multiplying_load() {
    let unbounded = load_during_outage("10.0", "10000").await;
    let budgeted = load_during_outage("0.0", "1").await;
    eprintln!(
        "requests/s during a full outage: {unbounded:.1} without a budget, {budgeted:.1} with one"
    );
    assert!(
        budgeted * 2.0 < unbounded,
        "the budget should at least halve the load: {budgeted:.1}/s vs {unbounded:.1}/s"
    );
}
