//! Cluster mode: several agents on one real PostgreSQL (Debian's, started as an unprivileged user),
//! following a devnet. Each chain is led by one agent at a time under a fenced lease; the `blocks`
//! table must hold each chain's canonical chain exactly once — no gap, no duplicate — whatever
//! happens to the leader or the database.

mod common;

use std::time::Duration;

use common::{postgres::PgServer, webhook::*, *};
use serde_json::{json, Value};

/// Lease settings of the tests: a dead leader's chains move within about two seconds.
const LEASE: &str = "lease_ttl = \"2s\"\nrenew_every = \"500ms\"";
const LEASE_TTL: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(60);

/// The config of agent `instance` in a cluster on `url`, following `devnet` as chain `anvil`
/// (and as `c00`…, when `chains` > 1), `extra` added at the top level.
fn cluster_config(
    devnet: &DevnetProc,
    url: &str,
    instance: &str,
    chains: usize,
    extra: &str,
) -> String {
    let one = devnet.agent_config("").replace(
        "block_output = \"blocks.jsonl\"",
        "block_output = \"postgres\"",
    );
    let mut config = if chains <= 1 {
        one
    } else {
        // The same providers under several chain names: each name is a chain of its own to lead.
        let start = one.find("[[chains]]").unwrap();
        let (head, chain) = one.split_at(start);
        let mut text = head.to_owned();
        for i in 0..chains {
            text.push_str(&chain.replace("name = \"anvil\"", &format!("name = \"c{i:02}\"")));
        }
        text
    };
    config.push_str(&format!(
        "\n[cluster]\nstore = \"postgres\"\nurl = \"{url}\"\ninstance = \"{instance}\"\n{LEASE}\n{extra}\n"
    ));
    config
}

/// Agents `names`, each in a directory of its own, on `url`.
fn start_agents(
    devnet: &DevnetProc,
    url: &str,
    names: &[&str],
    chains: usize,
    extra: &str,
) -> (Vec<tempfile::TempDir>, Vec<Agent>) {
    let dirs: Vec<_> = names.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let agents = names
        .iter()
        .zip(&dirs)
        .map(|(n, d)| Agent::start(d.path(), &cluster_config(devnet, url, n, chains, extra)))
        .collect();
    (dirs, agents)
}

/// This agent's role for `chain` in its `/status`.
fn role_in(status: &Value, chain: &str) -> Option<String> {
    status["chains"]
        .as_array()?
        .iter()
        .find(|c| c["chain"] == chain)?["role"]
        .as_str()
        .map(str::to_owned)
}

/// Waits until exactly one of the running agents (`skip`: those not to ask, stopped ones) says it
/// leads `chain`; returns its index.
async fn leader_of(agents: &[Agent], skip: &[usize], chain: &str) -> usize {
    wait_for(WAIT, &format!("one leader of {chain}"), || async {
        let mut leaders = Vec::new();
        for (i, a) in agents.iter().enumerate() {
            if skip.contains(&i) {
                continue;
            }
            if role_in(&status_json(a).await, chain).as_deref() == Some("leader") {
                leaders.push(i);
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await
}

/// `chain`'s canonical rows: number, hash, parent hash, epoch.
async fn canonical_rows(pg: &PgServer, db: &str, chain: &str) -> Vec<(i64, String, String, i64)> {
    pg.query(
        db,
        "SELECT number, hash, parent_hash, epoch FROM blockwatch.blocks
         WHERE chain = $1 AND canonical ORDER BY number",
        &[&chain],
    )
    .await
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

/// The highest canonical block in the table.
async fn top(pg: &PgServer, db: &str, chain: &str) -> i64 {
    pg.query(
        db,
        "SELECT coalesce(max(number), -1) FROM blockwatch.blocks WHERE chain = $1 AND canonical",
        &[&chain],
    )
    .await[0]
        .get(0)
}

/// Waits until the table holds a canonical block at `number` or above.
async fn wait_top(pg: &PgServer, db: &str, chain: &str, number: i64) {
    wait_for(
        WAIT,
        &format!("block {number} of {chain} in the table"),
        || async { (top(pg, db, chain).await >= number).then_some(()) },
    )
    .await;
}

/// Waits until the table holds `count` canonical blocks of `chain`, however high the first: an agent
/// starts at the chain's head, which a loaded machine lets run ahead before it does.
async fn wait_rows(pg: &PgServer, db: &str, chain: &str, count: usize) {
    wait_for(
        WAIT,
        &format!("{count} blocks of {chain} in the table"),
        || async { (canonical_rows(pg, db, chain).await.len() >= count).then_some(()) },
    )
    .await;
}

/// The table holds `chain`'s canonical chain exactly once: one row per height, from the first to
/// the last with no gap, each the devnet's block at that height and the child of the one before.
async fn assert_table_is_the_chain(pg: &PgServer, db: &str, chain: &str, devnet: &DevnetProc) {
    let rows = canonical_rows(pg, db, chain).await;
    assert!(rows.len() >= 5, "too few rows to say anything: {rows:?}");
    for w in rows.windows(2) {
        assert_eq!(w[1].0, w[0].0 + 1, "a gap or a duplicate at {}", w[1].0);
        assert_eq!(
            w[1].2, w[0].1,
            "block {} is not the child of block {}",
            w[1].0, w[0].0
        );
    }
    let node = &devnet.info.providers[0].http;
    for (number, hash, _, _) in &rows {
        let block = rpc(
            node,
            "eth_getBlockByNumber",
            json!([format!("0x{number:x}"), false]),
        )
        .await;
        assert_eq!(
            block["hash"].as_str(),
            Some(hash.as_str()),
            "block {number} is not the devnet's"
        );
    }
    // The database itself refuses a second canonical row at a height; every height once.
    let dup: i64 = pg
        .query(
            db,
            "SELECT count(*) FROM (SELECT number FROM blockwatch.blocks WHERE chain = $1 AND canonical
             GROUP BY number HAVING count(*) > 1) d",
            &[&chain],
        )
        .await[0]
        .get(0);
    assert_eq!(dup, 0);
}

/// The agent's `/metrics`.
async fn metrics(agent: &Agent) -> String {
    http_get(&format!("{}/metrics", agent.api_url().await))
        .await
        .1
}

/// Starts `agent` again and waits until its new HTTP API listens (its log holds the old address
/// until then).
async fn restart(agent: &mut Agent) {
    let listening = |a: &Agent| a.log().matches("\"HTTP API listening\"").count();
    let before = listening(agent);
    agent.restart();
    wait_for(WAIT, "the restarted agent's HTTP API", || async {
        (listening(agent) > before).then_some(())
    })
    .await;
}

fn signal(agent: &Agent, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &agent.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocks_table_is_the_chain_once_through_every_failover() {
    let pg = PgServer::start();
    let url = pg.create_database("failover").await;
    let devnet = DevnetProc::start(2, "200ms").await;
    let (_dirs, mut agents) = start_agents(&devnet, &url, &["a", "b", "c"], 1, "");
    let chain = "anvil";
    leader_of(&agents, &[], chain).await; // the schema exists once a lease was taken
    wait_top(&pg, "failover", chain, 5).await;

    // 1. The leader is killed: another takes over from the committed cursor.
    let first = leader_of(&agents, &[], chain).await;
    let before = top(&pg, "failover", chain).await;
    agents[first].kill();
    let second = leader_of(&agents, &[first], chain).await;
    assert_ne!(second, first);
    wait_top(&pg, "failover", chain, before + 10).await;
    assert_table_is_the_chain(&pg, "failover", chain, &devnet).await;
    restart(&mut agents[first]).await;

    // 2. The leader is paused for three lease periods, then woken: another leads meanwhile, and
    // the woken one commits nothing more under its old lease.
    let paused = leader_of(&agents, &[], chain).await;
    let old_epoch = canonical_rows(&pg, "failover", chain)
        .await
        .last()
        .unwrap()
        .3;
    signal(&agents[paused], "STOP");
    let stopped_at = std::time::Instant::now();
    let next = leader_of(&agents, &[paused], chain).await;
    let resumed_from = top(&pg, "failover", chain).await;
    wait_top(&pg, "failover", chain, resumed_from + 5).await;
    if let Some(left) = (LEASE_TTL * 3).checked_sub(stopped_at.elapsed()) {
        tokio::time::sleep(left).await; // the pause itself is the fault: three lease periods
    }
    signal(&agents[paused], "CONT");
    wait_status(&agents[paused], "the woken agent standing by", |s| {
        role_in(s, chain).as_deref() == Some("standby")
    })
    .await;
    let m = metrics(&agents[paused]).await;
    let lost = metric_sum(
        &m,
        "blockwatch_cluster_lease_losses_total",
        &[("chain", chain)],
    );
    assert!(lost >= 1.0, "the woken agent counts its lost lease:\n{m}");

    wait_top(
        &pg,
        "failover",
        chain,
        top(&pg, "failover", chain).await + 5,
    )
    .await;
    // Nothing under the old epoch was written after the new leader's first row.
    let late: i64 = pg
        .query(
            "failover",
            "SELECT count(*) FROM blockwatch.blocks o WHERE o.chain = $1 AND o.epoch = $2
             AND o.written_at > (SELECT min(written_at) FROM blockwatch.blocks n
                                 WHERE n.chain = $1 AND n.epoch > $2)",
            &[&chain, &old_epoch],
        )
        .await[0]
        .get(0);
    assert_eq!(
        late, 0,
        "the paused leader committed after it lost its lease"
    );
    assert_ne!(next, paused);
    assert_table_is_the_chain(&pg, "failover", chain, &devnet).await;

    // 3. The leader's database sessions are killed: it stands down or reconnects; no gap.
    let leader = leader_of(&agents, &[], chain).await;
    let instance = ["a", "b", "c"][leader];
    let before = top(&pg, "failover", chain).await;
    assert!(pg.terminate(&format!("blockwatch/{instance}")).await >= 1);
    wait_top(&pg, "failover", chain, before + 10).await;
    assert_table_is_the_chain(&pg, "failover", chain, &devnet).await;

    // 4. PostgreSQL itself restarts mid-stream.
    let before = top(&pg, "failover", chain).await;
    pg.restart();
    wait_top(&pg, "failover", chain, before + 10).await;
    assert_table_is_the_chain(&pg, "failover", chain, &devnet).await;

    // 5. PostgreSQL is down for three lease periods: the leader stops leading before its lease
    // can run out (its HTTP API stays up and says so), and the stream resumes once it is back.
    let leader = leader_of(&agents, &[], chain).await;
    let before = top(&pg, "failover", chain).await;
    pg.stop_now();
    let down_at = std::time::Instant::now();
    wait_status(
        &agents[leader],
        "the leader standing by without its database",
        |s| role_in(s, chain).as_deref() == Some("standby"),
    )
    .await;
    let m = metrics(&agents[leader]).await;
    // Its own writes failing (`store_error`) or its lease's clock running out (`expired`),
    // whichever it meets first.
    let stood_down = ["expired", "store_error"]
        .iter()
        .map(|r| {
            metric_sum(
                &m,
                "blockwatch_cluster_lease_losses_total",
                &[("chain", chain), ("reason", r)],
            )
        })
        .sum::<f64>();
    assert!(stood_down >= 1.0, "{m}");
    assert_eq!(
        metric_sum(&m, "blockwatch_cluster_leader", &[("chain", chain)]),
        0.0
    );
    if let Some(left) = (LEASE_TTL * 3).checked_sub(down_at.elapsed()) {
        tokio::time::sleep(left).await; // the outage itself is the fault: three lease periods
    }
    pg.start_again();
    wait_top(&pg, "failover", chain, before + 10).await;
    assert_table_is_the_chain(&pg, "failover", chain, &devnet).await;

    // 6. A reorg while the leader is being replaced: the next leader finds it from its cursor.
    let leader = leader_of(&agents, &[], chain).await;
    let before = top(&pg, "failover", chain).await;
    agents[leader].kill();
    devnet.reorg(3).await;
    leader_of(&agents, &[leader], chain).await;
    wait_top(&pg, "failover", chain, before + 10).await;
    assert_table_is_the_chain(&pg, "failover", chain, &devnet).await;
    let reorgs: i64 = pg
        .query(
            "failover",
            "SELECT count(*) FROM blockwatch.reorgs WHERE chain = $1",
            &[&chain],
        )
        .await[0]
        .get(0);
    assert!(reorgs >= 1, "the reorg is recorded");
    let replaced: i64 = pg
        .query(
            "failover",
            "SELECT count(*) FROM blockwatch.blocks WHERE chain = $1 AND NOT canonical",
            &[&chain],
        )
        .await[0]
        .get(0);
    assert!(
        replaced >= 1,
        "the replaced blocks stay, marked non-canonical"
    );

    for (i, a) in agents.iter_mut().enumerate() {
        if i != leader {
            a.stop();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_under_a_lease_taken_over_is_refused_by_its_fence_and_counted() {
    let pg = PgServer::shared();
    let url = pg.create_database("fenced").await;
    let devnet = DevnetProc::start(1, "200ms").await;
    let dir = tempfile::tempdir().unwrap();
    // Long renewals: the lease is taken from under the leader between two of them, so that its
    // next batch (a block every 200 ms) meets the store's fence before a renewal notices.
    let config = cluster_config(&devnet, &url, "a", 1, "")
        .replace(LEASE, "lease_ttl = \"30s\"\nrenew_every = \"10s\"");
    let mut agent = Agent::start(dir.path(), &config);
    let chain = "anvil";
    leader_of(std::slice::from_ref(&agent), &[], chain).await;
    wait_top(&pg, "fenced", chain, 5).await;
    // Just after a renewal, another holder takes the lease with the next epoch.
    let before = lease_expiry(&pg, "fenced", chain).await;
    wait_for(WAIT, "a renewal", || async {
        (lease_expiry(&pg, "fenced", chain).await != before).then_some(())
    })
    .await;
    let rows = pg
        .query(
            "fenced",
            "UPDATE blockwatch.leases SET holder = 'intruder', epoch = epoch + 1,
                 expires_at = now() + interval '1 hour'
             WHERE chain = $1 RETURNING epoch - 1, now()::text",
            &[&chain],
        )
        .await;
    let (old_epoch, taken_at): (i64, String) = (rows[0].get(0), rows[0].get(1));
    let fenced = wait_for(WAIT, "a fenced write", || async {
        let m = metrics(&agent).await;
        let n = metric_sum(
            &m,
            "blockwatch_cluster_fenced_writes_total",
            &[("chain", chain)],
        );
        (n >= 1.0).then_some(m)
    })
    .await;
    assert!(
        metric_sum(
            &fenced,
            "blockwatch_cluster_lease_losses_total",
            &[("chain", chain), ("reason", "fenced")]
        ) >= 1.0,
        "{fenced}"
    );
    wait_status(&agent, "the fenced agent standing by", |s| {
        role_in(s, chain).as_deref() == Some("standby") && first_chain(s)["leader"] == "intruder"
    })
    .await;
    let late: i64 = pg
        .query(
            "fenced",
            "SELECT count(*) FROM blockwatch.blocks WHERE chain = $1 AND written_at > $2::text::timestamptz",
            &[&chain, &taken_at],
        )
        .await[0]
        .get(0);
    assert_eq!(
        late, 0,
        "nothing was committed under epoch {old_epoch} once the lease was taken"
    );
    agent.stop();
}

/// When `chain`'s lease expires, as PostgreSQL says.
async fn lease_expiry(pg: &PgServer, db: &str, chain: &str) -> String {
    pg.query(
        db,
        "SELECT expires_at::text FROM blockwatch.leases WHERE chain = $1",
        &[&chain],
    )
    .await[0]
        .get(0)
}

/// How many chains each running agent leads, sorted.
async fn shares(agents: &[Agent], skip: &[usize], chains: usize) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, a) in agents.iter().enumerate() {
        if skip.contains(&i) {
            continue;
        }
        let s = status_json(a).await;
        out.push(
            (0..chains)
                .filter(|c| role_in(&s, &format!("c{c:02}")).as_deref() == Some("leader"))
                .count(),
        );
    }
    out.sort();
    out
}

async fn wait_shares(agents: &[Agent], skip: &[usize], chains: usize, want: &[usize]) {
    wait_for(WAIT, &format!("chains spread {want:?}"), || async {
        (shares(agents, skip, chains).await == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_chains_spread_over_three_agents_and_move_when_one_dies_and_returns() {
    let pg = PgServer::shared();
    let url = pg.create_database("spread").await;
    let devnet = DevnetProc::start(1, "1s").await;
    let (_dirs, mut agents) = start_agents(&devnet, &url, &["a", "b", "c"], 10, "");
    wait_shares(&agents, &[], 10, &[3, 3, 4]).await;
    agents[2].kill();
    wait_shares(&agents, &[2], 10, &[5, 5]).await;
    restart(&mut agents[2]).await;
    wait_shares(&agents, &[], 10, &[3, 3, 4]).await;
    // Every chain led by one agent only, as the store says.
    let held: i64 = pg
        .query(
            "spread",
            "SELECT count(DISTINCT chain) FROM blockwatch.leases WHERE holder IS NOT NULL AND expires_at > now()",
            &[],
        )
        .await[0]
        .get(0);
    assert_eq!(held, 10);
    for a in &mut agents {
        a.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_fired_before_a_failover_is_not_sent_again_and_resolves_once() {
    let pg = PgServer::shared();
    let url = pg.create_database("alerts").await;
    let receiver = Receiver::start(0).await;
    let devnet = DevnetProc::start(2, "200ms").await;
    let alerts = format!(
        "[alerts]\nthrottle = \"10m\"\nconsecutive_failures = 3\n[[alerts.channels]]\nkind = \"webhook\"\nurl = \"{}\"\nmin_severity = \"warning\"\n",
        receiver.url("/hook")
    );
    let (_dirs, mut agents) = start_agents(&devnet, &url, &["a", "b"], 1, &alerts);
    let chain = "anvil";
    let first = leader_of(&agents, &[], chain).await;
    let p1 = devnet.info.providers[1].name.clone();
    devnet.set_fault(&p1, json!({"kind": "down"})).await;
    let fired = |r: &Receiver| {
        webhook_alerts(r, "/hook")
            .into_iter()
            .filter(|(rule, _, status)| rule == "providers_down" && status == "firing")
            .count()
    };
    wait_for(WAIT, "providers_down firing", || async {
        (fired(&receiver) >= 1).then_some(())
    })
    .await;
    agents[first].kill();
    let second = leader_of(&agents, &[first], chain).await;
    // The new leader has taken the alert over: it shows it firing…
    wait_status(&agents[second], "the alert firing on the new leader", |s| {
        s["alerts_firing"]
            .as_array()
            .is_some_and(|a| a.iter().any(|f| f["rule"] == "providers_down"))
    })
    .await;
    // …without sending it again.
    assert_eq!(
        fired(&receiver),
        1,
        "{:?}",
        webhook_alerts(&receiver, "/hook")
    );
    devnet.clear_faults().await;
    let resolved = |r: &Receiver| {
        webhook_alerts(r, "/hook")
            .into_iter()
            .filter(|(rule, _, status)| rule == "providers_down" && status == "resolved")
            .count()
    };
    wait_for(WAIT, "providers_down resolved", || async {
        (resolved(&receiver) >= 1).then_some(())
    })
    .await;
    wait_status(&agents[second], "no alert firing", |s| {
        s["alerts_firing"].as_array().is_some_and(|a| a.is_empty())
    })
    .await;
    assert_eq!(resolved(&receiver), 1);
    assert_eq!(fired(&receiver), 1);
    agents[second].stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_started_together_on_an_empty_database_both_come_up() {
    // Chromium starts while the agents do: its start is seconds of CPU the waits below leave idle.
    let browser = tokio::spawn(common::browser::Browser::start());
    let pg = PgServer::shared();
    let url = pg.create_database("together").await;
    let devnet = DevnetProc::start(1, "200ms").await;
    let (_dirs, mut agents) = start_agents(&devnet, &url, &["a", "b"], 1, "");
    leader_of(&agents, &[], "anvil").await; // the schema exists once a lease was taken
    for a in &agents {
        let s = wait_status(a, "the lease as the store says", |s| {
            first_chain(s)["leader"].is_string()
        })
        .await;
        assert_eq!(first_chain(&s)["epoch"], 1, "one lease, taken once: {s}");
        assert!(first_chain(&s)["leader"].is_string());
    }
    wait_rows(&pg, "together", "anvil", 5).await;
    assert_table_is_the_chain(&pg, "together", "anvil", &devnet).await;
    // Each status page says who leads the chain.
    let leader = leader_of(&agents, &[], "anvil").await;
    let name = ["a", "b"][leader];
    let browser = browser.await.expect("Chromium started");
    for (i, a) in agents.iter().enumerate() {
        let page = browser
            .open(&format!("{}/", a.api_url().await), 1280, 800)
            .await;
        let want = if i == leader {
            "this agent (epoch 1)".to_owned()
        } else {
            format!("{name} (epoch 1); this agent stands by")
        };
        let js = format!(
            "document.querySelector('[data-field=\"cluster\"]')?.textContent === {want:?} && \
             !document.querySelector('[data-field=\"cluster-row\"]').hidden"
        );
        page.wait_for(WAIT, &format!("the page of agent {i} saying {want:?}"), &js)
            .await;
        page.assert_no_errors();
    }
    for a in &mut agents {
        a.stop();
    }
}

#[test]
fn an_unreachable_database_at_start_up_is_exit_2_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "{}\n[cluster]\nstore = \"postgres\"\nurl = \"postgres://bw:hunter2-Secret@127.0.0.1:{port}/bw\"\n",
        config(&provider("p0", "http://127.0.0.1:1", None, 0), "")
    );
    std::fs::write(dir.path().join("blockwatch.toml"), config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_blockwatch"))
        .args(["run", "--config", "blockwatch.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot open state database"), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")),
        "names the server: {stderr}"
    );
    assert!(!stderr.contains("hunter2-Secret"), "{stderr}");
}
