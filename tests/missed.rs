//! The missed-block monitor on devnet: each injected miss is found once, with its reason, in the
//! database, `/stats` and the metrics; misses are recovered in order, and the stream still equals
//! devnet's canonical chain.

mod common;

use std::time::Duration;

use blockwatch::{
    model::{MissedBlock, Reason},
    store::{SqliteStore, StateStore},
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
    SqliteStore::open(&dir.join("state.db"))
        .unwrap()
        .missed(Some("anvil"), None, 10_000)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_the_leader_fails_is_a_recovered_miss_with_its_reason() {
    let mut scenario = Scenario::devnet(2, "200ms").start().await;
    let Scenario { devnet, agent, dir } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    assert!(records(dir.path()).is_empty(), "no miss while healthy");

    devnet
        .set_fault("p0", json!({"kind": "rpc_error", "code": -32000}))
        .await;
    let head = devnet.head().await;
    agent.wait_for_block(head + 3, CATCH_UP).await;
    devnet.clear_faults().await;
    settle_and_check(agent, devnet).await;

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
    let stats = get_json(agent, "/stats").await;
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
    assert!(agent.log().contains(r#""message":"missed block""#));

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
    agent.stop();
    // The log file got every record, once, at shutdown (the batch had not filled).
    assert_eq!(log_records(dir.path()), recs);
}

/// Every record in the missed-block log directory (rotated and compressed files included), sorted
/// by block.
fn log_records(dir: &std::path::Path) -> Vec<MissedBlock> {
    use std::io::Read;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir.join("logs")).unwrap() {
        let path = entry.unwrap().path();
        let mut text = String::new();
        let file = std::fs::File::open(&path).unwrap();
        if path.extension().is_some_and(|e| e == "gz") {
            flate2::read::GzDecoder::new(file)
                .read_to_string(&mut text)
                .unwrap();
        } else {
            std::io::BufReader::new(file)
                .read_to_string(&mut text)
                .unwrap();
        }
        for line in text.lines() {
            out.push(
                serde_json::from_str::<MissedBlock>(line)
                    .unwrap_or_else(|e| panic!("{}: {line}: {e}", path.display())),
            );
        }
    }
    out.sort_by_key(|r| (r.chain.clone(), r.block_number));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_rotates_compresses_and_drops_old_files() {
    // A rotated file from long ago: past retention, it goes at the next rotation.
    const OLD: &str = "logs/missed_blocks.jsonl.20200101T000000.gz";
    let mut scenario = Scenario::devnet(2, "200ms")
        .file(OLD, b"")
        .config(|devnet| {
            devnet.agent_config("").replace(
                "[pool]",
                "[missed_block_log]\nrotation_size = \"1KB\"\nbatch_size = 1\nbatch_timeout = \"100ms\"\nretention_days = 7\n\n[pool]",
            )
        })
        .start()
        .await;
    let Scenario { devnet, agent, dir } = &mut scenario;
    let old = dir.path().join(OLD);
    agent.wait_for_block(3, CATCH_UP).await;
    // The leader fails every call: every block is a (recovered) miss, about 350 bytes a line.
    devnet
        .set_fault("p0", json!({"kind": "rpc_error", "code": -32000}))
        .await;
    wait_for(CATCH_UP, "rotated, compressed log files", || {
        let n = std::fs::read_dir(dir.path().join("logs"))
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                let name = name.to_string_lossy();
                name.ends_with(".gz") && !name.contains("20200101")
            })
            .count();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    devnet.clear_faults().await;
    settle_and_check(agent, devnet).await;
    agent.stop();
    assert!(!old.exists(), "a file past retention_days was kept");
    let logged = log_records(dir.path());
    assert_eq!(
        logged,
        records(dir.path()),
        "every record once, across the files"
    );
    assert!(logged.len() >= 3, "{logged:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_before_the_log_flush_loses_no_record() {
    // Batches that never fill and never time out in this test: only a restart writes them.
    let mut scenario = Scenario::devnet(2, "200ms")
        .config(|devnet| {
            devnet.agent_config("").replace(
                "[pool]",
                "[missed_block_log]\nbatch_size = 1000\nbatch_timeout = \"1h\"\n\n[pool]",
            )
        })
        .start()
        .await;
    let Scenario { devnet, agent, dir } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    devnet
        .set_fault("p0", json!({"kind": "rpc_error", "code": -32000}))
        .await;
    let stored = wait_for(CATCH_UP, "misses in the database", || {
        let recs = records(dir.path());
        async move { (recs.len() >= 2).then_some(recs) }
    })
    .await;
    agent.signal_and_wait("KILL", Duration::from_secs(5));
    assert!(
        log_records(dir.path()).is_empty(),
        "nothing was flushed before the kill"
    );
    devnet.clear_faults().await;
    agent.restart();
    // The restart writes what the killed run stored.
    let want = stored.len();
    wait_for(CATCH_UP, "the stored records in the log", || {
        let n = log_records(dir.path()).len();
        async move { (n >= want).then_some(()) }
    })
    .await;
    settle_and_check(agent, devnet).await;
    agent.stop();
    assert_eq!(log_records(dir.path()), records(dir.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_nobody_can_serve_stays_open_until_it_is_recovered_in_order() {
    // The follower's debug lines say each recovery attempt that failed.
    let mut scenario = Scenario::devnet(2, "200ms")
        .config(|devnet| {
            with_sections(
                &devnet.agent_config("max_block_delay = \"1s\""),
                "[monitor]\nretry_attempts = 2\nretry_delay = \"300ms\"",
                "",
            )
        })
        .env(&[("RUST_LOG", "info,blockwatch::follower=debug")])
        .start()
        .await;
    let Scenario { devnet, agent, dir } = &mut scenario;
    // The block the stream waits for is recorded once overdue, unrecovered.
    let open = open_miss_on_every_provider(agent, devnet, "down").await;
    assert_eq!(open.reason, Reason::ConnectionLost, "{open:?}");
    assert_eq!(open.severity.as_str(), "Critical", "{open:?}");
    let stats = get_json(agent, "/stats").await;
    assert!(
        stats["chains"][0]["current_missed_streak"]
            .as_u64()
            .unwrap()
            >= 1
    );
    // Two recovery attempts, 300 ms apart, fail: the record says so, stored again.
    let exhausted = wait_for(CATCH_UP, "the retries used up", || {
        let recs = records(dir.path());
        let n = open.block_number;
        async move {
            recs.into_iter()
                .find(|r| r.block_number == n && r.metadata.get("retries_exhausted").is_some())
        }
    })
    .await;
    assert_eq!(exhausted.recovery_attempts, 2, "{exhausted:?}");
    assert!(!exhausted.recovered);
    assert!(agent.log().contains("missed block not recovered"));
    // Still asked for, every retry_delay, until a provider serves it: two more failed attempts
    // after the two that used the retries up.
    wait_for(
        CATCH_UP,
        "two recovery attempts after the retries were used up",
        || {
            let log = agent.log();
            let n = open.block_number;
            async move {
                log.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .any(|v| {
                        v["message"] == "recovery attempt failed"
                            && v["block_number"] == n
                            && v["attempt"].as_u64().is_some_and(|a| a >= 4)
                    })
                    .then_some(())
            }
        },
    )
    .await;

    // The last block made while every provider was down: the ones after it are made once the
    // outage is over, and one of them may still come late, for its own reason, while the providers
    // come back.
    let outage_head = devnet.head().await;
    devnet.clear_faults().await;
    settle_and_check(agent, devnet).await;
    let recs = records(dir.path());
    let rec = recs
        .iter()
        .find(|r| r.block_number == open.block_number)
        .unwrap();
    assert!(rec.recovered, "{rec:?}");
    assert!(rec.recovered_from.is_some());
    assert_eq!(rec.metadata["retries_exhausted"], true, "{rec:?}");
    assert!(rec.recovery_attempts >= 4, "2 + background ones: {rec:?}");
    // The blocks made during the outage came late: misses of the same outage, recovered.
    let late: Vec<_> = recs
        .iter()
        .filter(|r| r.block_number > open.block_number && r.block_number <= outage_head)
        .collect();
    assert!(!late.is_empty(), "{recs:#?}");
    assert!(
        late.iter()
            .all(|r| r.recovered && r.reason == Reason::ConnectionLost),
        "{late:#?}"
    );
    let stats = get_json(agent, "/stats").await;
    let s = &stats["chains"][0];
    assert_eq!(s["blocks_recovered"], s["blocks_missed"], "{stats:#}");
    assert!(
        s["average_recovery_seconds"].as_f64().unwrap() > 0.0,
        "{stats:#}"
    );
    // The open block waited out the outage (at least its four attempts, 300 ms apart).
    assert!(
        rec.metadata["recovery_seconds"].as_f64().unwrap() >= 1.0,
        "{rec:?}"
    );
    scenario.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_the_leader_skips_is_a_miss_served_by_another_provider() {
    let mut scenario = Scenario::devnet(2, "200ms").start().await;
    let Scenario { devnet, agent, dir } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;
    // p0 leads (priority) and will never announce nor serve the next block.
    let skipped = devnet
        .control("devnet_skipBlock", json!({"provider": "p0"}))
        .await["skipped"]
        .as_u64()
        .unwrap();
    agent.wait_for_block(skipped + 3, CATCH_UP).await;
    let rec = wait_for(CATCH_UP, "the skipped block's record", || {
        let recs = records(dir.path());
        async move { recs.into_iter().find(|r| r.block_number == skipped) }
    })
    .await;
    assert_eq!(rec.reason, Reason::NodeUnresponsive, "{rec:?}");
    assert_eq!(rec.metadata["skipped_by"], "p0", "{rec:?}");
    assert_eq!(rec.recovered_from.as_deref(), Some("p1"), "{rec:?}");
    assert!(rec.recovered);
    settle_and_check(agent, devnet).await;
    // Once, everywhere.
    let recs = records(dir.path());
    assert_eq!(recs.iter().filter(|r| r.block_number == skipped).count(), 1);
    let stats = get_json(agent, "/stats").await;
    assert_eq!(
        stats["chains"][0]["blocks_missed"].as_u64().unwrap(),
        recs.len() as u64
    );
    agent.stop();
    assert_eq!(log_records(dir.path()), recs);
}

/// Once the agent following `devnet` has emitted block 3, gives both of devnet's providers `fault`,
/// and returns the open miss stored for the block the agent then waits on.
async fn open_miss_on_every_provider(
    agent: &mut Agent,
    devnet: &DevnetProc,
    fault: &str,
) -> MissedBlock {
    let dir = agent.dir.clone();
    agent.wait_for_block(3, CATCH_UP).await;
    for p in ["p0", "p1"] {
        devnet.set_fault(p, json!({ "kind": fault })).await;
    }
    wait_for(CATCH_UP, "an open miss in the database", || {
        let recs = records(&dir);
        async move { recs.into_iter().find(|r| !r.recovered) }
    })
    .await
}

/// `cfg` with `section` (a whole TOML table) added before `[pool]`, and `pool` lines added to it.
fn with_sections(cfg: &str, section: &str, pool: &str) -> String {
    cfg.replace("[pool]", &format!("{section}\n\n[pool]\n{pool}"))
}

fn tip(agent: &Agent) -> u64 {
    canonical(&agent.stream())
        .last()
        .map_or(0, |b| b.block_number)
}

/// Checks that the agent's records `recs` (from the database, one per block) are the same
/// everywhere: `/stats`, the metrics (per reason), and — after a clean stop — the log file.
async fn stop_and_check_once_everywhere(
    agent: &mut Agent,
    dir: &std::path::Path,
    recs: &[MissedBlock],
) {
    let stats = get_json(agent, "/stats").await;
    let s = &stats["chains"][0];
    assert_eq!(
        s["blocks_missed"].as_u64().unwrap(),
        recs.len() as u64,
        "{stats:#}"
    );
    assert_eq!(
        s["blocks_recovered"].as_u64().unwrap(),
        recs.iter().filter(|r| r.recovered).count() as u64,
        "{stats:#}"
    );
    let m = http_get(&format!("{}/metrics", agent.api_url().await))
        .await
        .1;
    let mut reasons: Vec<&str> = recs.iter().map(|r| r.reason.as_str()).collect();
    reasons.sort();
    reasons.dedup();
    for reason in reasons {
        assert_eq!(
            metric_sum(&m, "blockwatch_blocks_missed_total", &[("reason", reason)]),
            recs.iter().filter(|r| r.reason.as_str() == reason).count() as f64,
            "{reason}: {m}"
        );
    }
    assert_eq!(
        metric_sum(&m, "blockwatch_blocks_missed_total", &[]),
        recs.len() as f64
    );
    agent.stop();
    assert_eq!(log_records(dir), recs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_kind_is_a_miss_with_its_reason_once_everywhere() {
    // No hedging: a slow leader's block is then a Timeout miss, not a hedge won in time.
    let mut scenario = Scenario::devnet(2, "200ms")
        .config(|devnet| with_sections(&devnet.agent_config(""), "", "hedge_percentile = 0"))
        .start()
        .await;
    let Scenario { devnet, agent, dir } = &mut scenario;
    agent.wait_for_block(3, CATCH_UP).await;

    // Each fault on the leader (p0) for a few blocks; p1 serves what p0 fails. `wrong_chain` comes
    // last: it takes p0 out for good.
    let faults = [
        (json!({"kind": "timeout"}), Some(Reason::Timeout)),
        (
            json!({"kind": "rate_limit", "retry_after_s": 1}),
            Some(Reason::RateLimitExceeded),
        ),
        (json!({"kind": "malformed"}), Some(Reason::Unknown)),
        (json!({"kind": "bad_hash"}), Some(Reason::InvalidBlock)),
        (
            json!({"kind": "http_error", "status": 502}),
            Some(Reason::RpcError),
        ),
        // Down, p0 is found unreachable by its own head polls as its subscription drops, often
        // before any block is asked of it: then no block is missed at all.
        (json!({"kind": "down"}), None),
        (json!({"kind": "wrong_chain", "chain_id": 5}), None),
    ];
    // (fault, reason, first block of the window - 1, last block, for wrong_chain the tip when p0
    // was found out).
    let mut windows = Vec::new();
    for (fault, reason) in &faults {
        // p0 leads (priority) once it has recovered from the previous fault.
        wait_for(CATCH_UP, "p0 to lead again", || {
            let p = canonical(&agent.stream()).last().unwrap().provider.clone();
            async move { (p == "p0").then_some(()) }
        })
        .await;
        let from = tip(agent);
        devnet.set_fault("p0", fault.clone()).await;
        // Blocks go on (p1 serves them).
        agent.wait_for_block(from + 5, CATCH_UP).await;
        let mut found_at = None;
        if reason.is_none() {
            // No miss need come of it, but p0 must be found out and set aside.
            let want = if fault["kind"] == "down" {
                ["unreachable", "circuit_open"].as_slice()
            } else {
                ["wrong_chain"].as_slice()
            };
            let api = agent.api_url().await;
            wait_for(CATCH_UP, &format!("p0 found out: {fault}"), || {
                let url = format!("{api}/status");
                async move {
                    let (_, body) = http_get(&url).await;
                    let v: Value = serde_json::from_str(&body).ok()?;
                    let p0 = v["chains"][0]["providers"]
                        .as_array()?
                        .iter()
                        .find(|p| p["name"] == "p0")?
                        .clone();
                    want.contains(&p0["state"].as_str()?).then_some(())
                }
            })
            .await;
            let found = tip(agent);
            found_at = Some(found);
            // Past its failover cooldown and its next chain-id check (1 s each): it stays aside.
            agent.wait_for_block(found + 10, CATCH_UP).await;
        }
        if fault["kind"] != "wrong_chain" {
            devnet.clear_faults().await;
        }
        // Time for any call made under the fault to finish.
        agent.wait_for_block(tip(agent) + 3, CATCH_UP).await;
        windows.push((fault, *reason, from, tip(agent), found_at));
    }
    devnet.clear_faults().await;
    settle_and_check(agent, devnet).await;

    let recs = records(dir.path());
    let emitted = canonical(&agent.stream());
    for (fault, reason, from, to, found_at) in &windows {
        let inside: Vec<_> = recs
            .iter()
            .filter(|r| r.block_number > *from && r.block_number <= *to)
            .collect();
        // Every miss of the window: p0's, with the fault's reason — for wrong_chain, a chain-id
        // check failing before a call is an InvalidBlock miss; for down, a refused connection a
        // ConnectionLost one.
        let want = reason.unwrap_or(if fault["kind"] == "down" {
            Reason::ConnectionLost
        } else {
            Reason::InvalidBlock
        });
        for r in &inside {
            assert_eq!(r.reason, want, "{fault}: {r:?}");
            assert!(r.recovered, "{fault}: {r:?}");
            assert_eq!(r.metadata["failed_provider"], "p0", "{fault}: {r:?}");
            assert_eq!(r.recovered_from.as_deref(), Some("p1"), "{fault}: {r:?}");
        }
        match found_at {
            None => assert!(!inside.is_empty(), "{fault}: no miss; {recs:#?}"),
            // A probe or a head poll may find p0 out first, and then no call fails (no miss).
            // Either way p0 is set aside: once it was found out (one block's call may have been in
            // flight), p1 serves every block of the window.
            Some(found_at) => {
                let after: Vec<_> = emitted
                    .iter()
                    .filter(|b| b.block_number > found_at + 1 && b.block_number <= *to)
                    .collect();
                assert!(
                    !after.is_empty(),
                    "{fault}: no block after p0 was found out"
                );
                for b in &after {
                    assert_eq!(
                        b.provider, "p1",
                        "{fault}: block {} served after p0 was found out",
                        b.block_number
                    );
                }
                eprintln!(
                    "{fault}: {} {want:?} misses before p0 was found out",
                    inside.len()
                );
            }
        }
    }
    // Severity from the streak (nothing here is late by max_block_delay): Low alone, Medium from
    // the 2nd miss in a row, High from the 5th.
    for r in &recs {
        let streak = (0..=r.block_number)
            .take_while(|k| recs.iter().any(|x| x.block_number == r.block_number - k))
            .count();
        let want = match streak {
            1 => "Low",
            2..=4 => "Medium",
            5..=9 => "High",
            _ => "Critical",
        };
        assert_eq!(r.severity.as_str(), want, "streak {streak}: {r:?}");
    }
    // Every emitted block once, every record once.
    let emitted = canonical(&agent.stream());
    assert!(!recs.is_empty());
    for r in &recs {
        assert_eq!(
            emitted
                .iter()
                .filter(|b| b.block_number == r.block_number)
                .count(),
            1
        );
    }
    stop_and_check_once_everywhere(agent, dir.path(), &recs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_a_reorg_replaced_are_chain_reorg_misses() {
    let mut scenario = Scenario::devnet(2, "200ms").start().await;
    let Scenario { devnet, agent, dir } = &mut scenario;
    agent.wait_for_block(5, CATCH_UP).await;
    // The agent starts at the head it finds (a later one on a busy machine): the 3 blocks the
    // reorg replaces and their ancestor must all be in the stream.
    let first = canonical(&agent.stream())[0].block_number;
    agent.wait_for_block(first + 3, CATCH_UP).await;
    let head = devnet.head().await;
    agent.wait_for_block(head, CATCH_UP).await;
    devnet.reorg(3).await;
    let reorg = wait_for(CATCH_UP, "the reorg line", || {
        let r = reorgs(&agent.stream());
        async move { r.into_iter().next() }
    })
    .await;
    settle_and_check(agent, devnet).await;
    assert_eq!(reorgs(&agent.stream()).len(), 1, "one reorg");

    let recs = records(dir.path());
    let replaced: Vec<_> = recs
        .iter()
        .filter(|r| r.reason == Reason::ChainReorg)
        .collect();
    let heights: Vec<u64> = replaced.iter().map(|r| r.block_number).collect();
    let want: Vec<u64> = (reorg.common_ancestor + 1..=reorg.old_head.number).collect();
    assert_eq!(heights, want, "one ChainReorg miss per replaced height");
    let stream = canonical(&agent.stream());
    for r in &replaced {
        assert!(r.recovered, "{r:?}");
        let canonical = stream
            .iter()
            .find(|b| b.block_number == r.block_number)
            .unwrap();
        assert_eq!(
            r.recovered_from.as_deref(),
            Some(canonical.provider.as_str())
        );
        assert_ne!(
            r.metadata["orphaned_hash"].as_str().unwrap(),
            canonical.hash.to_string(),
            "{r:?}"
        );
    }
    // The streak of replaced heights raises the severity of the later ones.
    assert_eq!(replaced[1].severity.as_str(), "Medium", "{replaced:#?}");
    let stats = get_json(agent, "/stats").await;
    assert_eq!(stats["chains"][0]["reorgs"], 1, "{stats:#}");
    stop_and_check_once_everywhere(agent, dir.path(), &recs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_recovery_a_block_nobody_serves_holds_the_stream_until_one_does() {
    let mut scenario = Scenario::devnet(2, "200ms")
        .config(|devnet| {
            with_sections(
                &devnet.agent_config(""),
                "[monitor]\nenable_recovery = false",
                "",
            )
        })
        .start()
        .await;
    let Scenario { devnet, agent, dir } = &mut scenario;
    // Every provider serves blocks whose hash does not match their header.
    let open = open_miss_on_every_provider(agent, devnet, "bad_hash").await;
    assert_eq!(open.reason, Reason::InvalidBlock, "{open:?}");
    // Nothing after it is emitted while it is missing, though the agent knows of blocks after it.
    let api = agent.api_url().await;
    wait_for(
        CATCH_UP,
        "the agent to know of blocks after the missing one",
        || {
            let url = format!("{api}/status");
            let want = open.block_number + 3;
            async move {
                let (_, body) = http_get(&url).await;
                let v: Value = serde_json::from_str(&body).ok()?;
                (v["chains"][0]["head"].as_u64()? >= want).then_some(())
            }
        },
    )
    .await;
    assert_eq!(tip(agent), open.block_number - 1);
    // A restart keeps the miss open (its attempts so far saved at shutdown), and completes it.
    agent.stop();
    let saved = records(dir.path());
    let before = saved
        .iter()
        .find(|r| r.block_number == open.block_number)
        .unwrap();
    assert!(
        !before.recovered && before.recovery_attempts >= 1,
        "{before:?}"
    );
    agent.restart();
    wait_for(CATCH_UP, "the restarted agent to reopen the miss", || {
        let log = agent.log();
        async move { log.contains("its record stays open").then_some(()) }
    })
    .await;
    devnet.clear_faults().await;
    settle_and_check(agent, devnet).await;
    let recs = records(dir.path());
    let mine: Vec<_> = recs
        .iter()
        .filter(|r| r.block_number == open.block_number)
        .collect();
    assert_eq!(mine.len(), 1, "one record, completed: {recs:#?}");
    let rec = mine[0];
    assert!(rec.recovered, "{rec:?}");
    assert_eq!(rec.reason, Reason::InvalidBlock);
    assert!(rec.metadata.get("retries_exhausted").is_none(), "{rec:?}");
    // The stream asked again at its polls, before and after the restart.
    assert!(rec.recovery_attempts > before.recovery_attempts, "{rec:?}");
    scenario.finish();
}
