//! The emitted stream equals a real anvil node's canonical chain, block for block, through reorgs,
//! bursts of blocks, kills and restarts.

mod common;

use std::time::Duration;

use common::*;

const CATCH_UP: Duration = Duration::from_secs(30);

/// Waits until the agent's tip equals anvil's head.
async fn caught_up(agent: &mut Agent, anvil: &Anvil) {
    let head = anvil.head().await;
    agent.wait_for_block(head, CATCH_UP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_anvil_through_reorgs_and_bursts() {
    let anvil = Anvil::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &provider("anvil", &anvil.url(), Some(&anvil.ws_url()), 0),
        "",
    );
    let mut agent = Agent::start(dir.path(), &cfg);
    agent.wait_for_block(3, CATCH_UP).await;

    // Reorgs of depth 1 and 5, with mining paused so the depth seen is exactly the depth made.
    for depth in [1u64, 5] {
        anvil.set_interval_mining(0).await;
        caught_up(&mut agent, &anvil).await;
        if anvil.head().await < depth + 1 {
            anvil.mine(depth + 1).await;
            caught_up(&mut agent, &anvil).await;
        }
        let before = reorgs(&agent.stream()).len();
        anvil.reorg(depth).await;
        anvil.mine(1).await;
        caught_up(&mut agent, &anvil).await;
        let seen = reorgs(&agent.stream());
        assert_eq!(
            seen.len(),
            before + 1,
            "expected one new reorg line; log:\n{}",
            agent.log()
        );
        assert_eq!(seen.last().unwrap().depth, depth);
        anvil.set_interval_mining(1).await;
    }

    // Fifty blocks at once.
    anvil.mine(50).await;
    caught_up(&mut agent, &anvil).await;

    agent.stop();
    let chain = canonical(&agent.stream());
    assert_is_canonical(&chain, &anvil).await;
    assert!(chain.len() >= 60, "only {} blocks", chain.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_sigkill_resumes_with_no_gap_and_no_repeat() {
    let anvil = Anvil::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&provider("anvil", &anvil.url(), None, 0), "");
    let mut agent = Agent::start(dir.path(), &cfg);
    agent.wait_for_block(4, CATCH_UP).await;

    // Killed while following; the chain moves on while it is down.
    agent.signal_and_wait("KILL", Duration::from_secs(5));
    anvil.mine(5).await;
    agent.restart();
    caught_up(&mut agent, &anvil).await;

    // Killed again, and this time the chain reorganises while it is down.
    anvil.set_interval_mining(0).await;
    caught_up(&mut agent, &anvil).await;
    agent.signal_and_wait("KILL", Duration::from_secs(5));
    anvil.reorg(3).await;
    anvil.mine(2).await;
    agent.restart();
    caught_up(&mut agent, &anvil).await;
    let r = reorgs(&agent.stream());
    assert_eq!(
        r.len(),
        1,
        "the reorg made while the agent was down must be found; log:\n{}",
        agent.log()
    );
    assert_eq!(r[0].depth, 3);
    anvil.set_interval_mining(1).await;
    let head = anvil.head().await;
    agent.wait_for_block(head + 2, CATCH_UP).await;

    agent.stop();
    // `canonical` panics on any gap or repeated block.
    let chain = canonical(&agent.stream());
    assert_is_canonical(&chain, &anvil).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_when_a_provider_goes_away() {
    let anvil = Anvil::start(1).await;
    let a = Proxy::start(anvil.port).await;
    let b = Proxy::start(anvil.port).await;
    let dir = tempfile::tempdir().unwrap();
    let providers = format!(
        "{}{}",
        provider("a", &a.url(), None, 0),
        provider("b", &b.url(), None, 1)
    );
    let cfg = config(&providers, "selection = \"priority\"");
    let mut agent = Agent::start(dir.path(), &cfg);
    agent.wait_for_block(3, CATCH_UP).await;
    let cut_at = canonical(&agent.stream()).last().unwrap().block_number;
    a.cut();
    let head = anvil.head().await;
    agent.wait_for_block(head + 4, CATCH_UP).await;

    agent.stop();
    let chain = canonical(&agent.stream());
    assert_is_canonical(&chain, &anvil).await;
    assert!(chain
        .iter()
        .any(|b| b.provider == "a" && b.block_number <= cut_at));
    let after: Vec<_> = chain
        .iter()
        .filter(|b| b.block_number > cut_at + 2)
        .collect();
    assert!(!after.is_empty(), "no block after the cut");
    for b in after {
        assert_eq!(
            b.provider, "b",
            "block {} after the cut must come from b",
            b.block_number
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_on_another_chain_is_refused_at_start() {
    let anvil = Anvil::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&provider("anvil", &anvil.url(), None, 0), "")
        .replace("chain_id = 31337", "chain_id = 1");
    let mut agent = Agent::start(dir.path(), &cfg);
    let status = agent.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(2));
    let log = agent.log();
    assert!(
        log.contains("answered chain id 31337") && log.contains("chain_id = 1"),
        "{log}"
    );
    assert!(
        agent.stream().is_empty(),
        "nothing may be emitted from a refused provider"
    );
}

fn errors(events: &[blockwatch::model::StreamEvent]) -> Vec<blockwatch::model::ErrorLine> {
    events
        .iter()
        .filter_map(|e| match e {
            blockwatch::model::StreamEvent::Error(x) => Some(x.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_deeper_than_the_window_is_reported_not_followed() {
    let anvil = Anvil::start(0).await;
    anvil.mine(10).await;
    let proxy = Proxy::start(anvil.port).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&provider("anvil", &proxy.url(), None, 0), "start = 1")
        .replace("reorg_window = 16", "reorg_window = 4");
    let mut agent = Agent::start(dir.path(), &cfg);
    agent.wait_for_block(10, CATCH_UP).await;
    anvil.reorg(6).await;
    anvil.mine(2).await;
    let error = wait_for(CATCH_UP, "an error line", || {
        let found = errors(&agent.stream()).pop();
        async move { found }
    })
    .await;
    assert_eq!(error.kind, "deep_reorg");
    assert_eq!(error.block_number, Some(11));

    // Not followed: nothing after the error line, one error line only, the agent keeps running,
    // and a blocked chain does not hammer its provider (head polls every 250 ms and one look at the
    // next block per step: about 24 requests in 3 s, against 75 when it kept re-walking at the rate limit).
    let before = proxy.requests();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let blocked_requests = proxy.requests() - before;
    assert!(
        blocked_requests < 40,
        "{blocked_requests} requests in 3 s while blocked"
    );
    let events = agent.stream();
    assert!(
        matches!(
            events.last(),
            Some(blockwatch::model::StreamEvent::Error(_))
        ),
        "{events:?}"
    );
    assert_eq!(errors(&events).len(), 1);
    assert!(agent.is_running());
    agent.stop();

    // A larger window after the fact does not make the stored history deeper: still reported,
    // never followed with a made-up ancestor.
    let wider = cfg.replace("reorg_window = 4", "reorg_window = 64");
    std::fs::write(&agent.config, &wider).unwrap();
    agent.restart();
    wait_for(CATCH_UP, "a second error line", || {
        let n = errors(&agent.stream()).len();
        async move { (n == 2).then_some(()) }
    })
    .await;
    assert!(reorgs(&agent.stream()).is_empty());
    agent.stop();

    // The way out the error line names: start = "latest" accepts the new chain from its head.
    std::fs::write(
        &agent.config,
        wider.replace("start = 1", "start = \"latest\""),
    )
    .unwrap();
    agent.restart();
    anvil.mine(2).await;
    let head = anvil.head().await;
    wait_for(CATCH_UP, "the new chain to be followed", || {
        let last = agent.stream().last().cloned();
        async move {
            match last {
                Some(blockwatch::model::StreamEvent::Block(b)) if b.block_number == head => {
                    Some(())
                }
                _ => None,
            }
        }
    })
    .await;
    agent.stop();
}
