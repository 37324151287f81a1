//! Cluster mode on PostgreSQL: how long a chain goes without a new block when its leader dies, and
//! what the PostgreSQL state store and block table cost against SQLite and a file.
//!
//! PostgreSQL is the tests' own (Debian's, started as an unprivileged user in a temporary directory
//! with `fsync=off`); devnet runs in this process; every agent is the release binary as a process
//! of its own (`blockwatch run`), with JSON logs at info. Three parts:
//!
//! - `catch-up`: a backlog of blocks fetched from block 0 into a file and into the `blocks` table.
//! - `cost`: one agent following a block every 200 ms, with SQLite state and a file, then with
//!   PostgreSQL state and the table: CPU per block and the time from mining a block to reading it.
//! - `failover`: three agents on one database; the leader is SIGKILLed again and again, and the
//!   time from the kill to the next block in the table is measured, for two lease settings.
//!
//! Run with `make bench` (`cargo bench --bench cluster`; `-- failover` and the like run one part);
//! `cargo test` skips it. Prints Markdown. The failover part leaves the agents' logs in
//! `target/bench/cluster-logs/`.

mod support;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use blockwatch::devnet::{Devnet, DevnetConfig};
use support::{postgres::PgServer, *};

/// The chain's name in every agent's config.
const CHAIN: &str = "devnet";
/// The catch-up backlog.
const BACKLOG: u64 = 30_000;
/// Catch-up runs per output, alternating.
const CATCH_UP_RUNS: usize = 5;
/// The followed chain's block time, and how many blocks are measured.
const FOLLOW_BLOCK_TIME: Duration = Duration::from_millis(200);
const FOLLOW_BLOCKS: u64 = 300;
/// The failover part's block time.
const FAILOVER_BLOCK_TIME: Duration = Duration::from_secs(1);
/// How often the table is read while waiting for a failover to end.
const FAILOVER_POLL: Duration = Duration::from_millis(20);
/// How often the output is read when timing a block or a catch-up.
const FINE_POLL: Duration = Duration::from_millis(2);
const WAIT: Duration = Duration::from_secs(60);

/// A lease setting of the failover part.
struct Lease {
    ttl: Duration,
    renew_every: Duration,
    kills: usize,
}

const LEASES: [Lease; 2] = [
    Lease {
        ttl: Duration::from_secs(10),
        renew_every: Duration::from_secs(2),
        kills: 10,
    },
    Lease {
        ttl: Duration::from_secs(2),
        renew_every: Duration::from_millis(500),
        kills: 20,
    },
];

/// Where an agent keeps its state and writes its blocks.
enum Store<'a> {
    /// SQLite state, blocks to `blocks.jsonl`.
    Sqlite,
    /// The cluster's PostgreSQL at `url`, blocks to its table.
    Postgres {
        url: &'a str,
        instance: &'a str,
        lease: &'a Lease,
    },
}

const DEFAULT_LEASE: Lease = Lease {
    ttl: Duration::from_secs(10),
    renew_every: Duration::from_secs(2),
    kills: 0,
};

/// The config of an agent following `devnet` from `start`, its API on `api`.
fn agent_config(
    devnet: &Devnet,
    api: &str,
    store: Store,
    block_time: Duration,
    start: &str,
) -> String {
    let p = devnet_provider(devnet, 0, true);
    let (output, cluster) = match store {
        Store::Sqlite => ("blocks.jsonl".to_owned(), String::new()),
        Store::Postgres {
            url,
            instance,
            lease,
        } => (
            "postgres".to_owned(),
            format!(
                "[cluster]\nstore = \"postgres\"\nurl = \"{url}\"\ninstance = \"{instance}\"\n\
                 lease_ttl = \"{}ms\"\nrenew_every = \"{}ms\"\n",
                lease.ttl.as_millis(),
                lease.renew_every.as_millis()
            ),
        ),
    };
    format!(
        "[agent]\nstate_path = \"state.db\"\nblock_output = \"{output}\"\nhttp_listen = \"{api}\"\n\n\
         [telemetry]\notlp_endpoint = \"\"\nlog_format = \"json\"\nlog_level = \"info\"\n\n\
         [missed_block_log]\npath = \"\"\n\n\
         [pool]\nretry_initial_backoff = \"50ms\"\nretry_max_backoff = \"500ms\"\n\n\
         [[chains]]\nname = \"{CHAIN}\"\nchain_id = {}\nexpected_block_time = \"{}ms\"\nstart = {start}\n\n\
         [[chains.providers]]\nname = \"{}\"\nurl = \"{}\"\nws_url = \"{}\"\n\
         rate_limit = {{ requests_per_second = 1000000, burst = 1000000 }}\n\n{cluster}",
        devnet.info().chain_id,
        block_time.as_millis(),
        p.name,
        p.url,
        p.ws_url.expect("ws"),
    )
}

async fn devnet(block_time: Duration) -> Arc<Devnet> {
    Devnet::start(DevnetConfig {
        providers: 1,
        block_time,
        ..Default::default()
    })
    .await
    .expect("devnet")
}

/// What an agent has written, as a reader sees it: the file's block lines, or the table's
/// canonical rows through one connection.
enum Output {
    File {
        path: PathBuf,
        offset: u64,
        partial: Vec<u8>,
        top: Option<u64>,
    },
    Table {
        client: tokio_postgres::Client,
        /// The server process of this connection (not counted in the server's CPU).
        backend: u32,
        /// The postmaster.
        postmaster: u32,
    },
}

impl Output {
    fn file(path: PathBuf) -> Output {
        Output::File {
            path,
            offset: 0,
            partial: Vec::new(),
            top: None,
        }
    }

    async fn table(pg: &PgServer, db: &str) -> Output {
        let client = pg.client(db).await;
        let backend = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("backend pid")
            .get::<_, i32>(0) as u32;
        let postmaster = stat_fields(backend).expect("the backend's /proc")[1] as u32;
        Output::Table {
            client,
            backend,
            postmaster,
        }
    }

    /// The highest block written so far.
    async fn top(&mut self) -> Option<u64> {
        match self {
            Output::File {
                path,
                offset,
                partial,
                top,
            } => {
                use std::io::{Read, Seek, SeekFrom};
                if let Ok(mut f) = std::fs::File::open(&*path) {
                    if f.seek(SeekFrom::Start(*offset)).is_ok() {
                        let mut buf = Vec::new();
                        if f.read_to_end(&mut buf).is_ok() {
                            *offset += buf.len() as u64;
                            partial.extend_from_slice(&buf);
                        }
                    }
                }
                // Only the last complete line matters: blocks come in order.
                if let Some(end) = partial.iter().rposition(|&b| b == b'\n') {
                    let line = partial[..end]
                        .rsplit(|&b| b == b'\n')
                        .next()
                        .unwrap_or_default();
                    let v: serde_json::Value = serde_json::from_slice(line).expect("a JSON line");
                    if let Some(n) = v["block_number"].as_u64() {
                        *top = Some(n);
                    }
                    partial.drain(..=end);
                }
                *top
            }
            Output::Table { client, .. } => client
                .query_one(
                    "SELECT max(number) FROM blockwatch.blocks WHERE chain = $1 AND canonical",
                    &[&CHAIN],
                )
                .await
                .ok()? // no table yet
                .get::<_, Option<i64>>(0)
                .map(|n| n as u64),
        }
    }

    /// Polls every `every` until block `number` (or a later one) is written; when it was seen.
    async fn wait_for(&mut self, number: u64, every: Duration) -> Instant {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.top().await.is_some_and(|t| t >= number) {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "block {number} not written within {WAIT:?}"
            );
            tokio::time::sleep(every).await;
        }
    }

    /// The table reader's connection.
    fn client(&self) -> &tokio_postgres::Client {
        match self {
            Output::Table { client, .. } => client,
            Output::File { .. } => panic!("a file has no connection"),
        }
    }

    /// CPU seconds of the PostgreSQL server so far, this reader's own session left out: the
    /// postmaster with the children it has waited for, and its live children.
    fn server_cpu(&self, ticks: f64) -> Option<f64> {
        let Output::Table {
            backend,
            postmaster,
            ..
        } = self
        else {
            return None;
        };
        let f = stat_fields(*postmaster)?;
        let mut total = f[11] + f[12] + f[13] + f[14];
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
                continue;
            };
            if pid == *backend {
                continue;
            }
            if let Some(f) = stat_fields(pid) {
                if f[1] == u64::from(*postmaster) {
                    total += f[11] + f[12];
                }
            }
        }
        Some(total as f64 / ticks)
    }

    /// The canonical chain written: (number, hash, parent hash), in order.
    async fn chain(&self) -> Vec<(u64, String, String)> {
        match self {
            Output::File { path, .. } => std::fs::read_to_string(path)
                .expect("block output")
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
                .filter(|v| v["type"] == "block")
                .map(|v| {
                    (
                        v["block_number"].as_u64().expect("block_number"),
                        v["hash"].as_str().expect("hash").to_owned(),
                        v["parent_hash"].as_str().expect("parent_hash").to_owned(),
                    )
                })
                .collect(),
            Output::Table { client, .. } => client
                .query(
                    "SELECT number, hash, parent_hash FROM blockwatch.blocks
                     WHERE chain = $1 AND canonical ORDER BY number",
                    &[&CHAIN],
                )
                .await
                .expect("the blocks table")
                .iter()
                .map(|r| (r.get::<_, i64>(0) as u64, r.get(1), r.get(2)))
                .collect(),
        }
    }
}

/// Checks that `chain` is devnet's canonical chain, each height once, from its first block to its
/// last with no gap, each the child of the one before; returns (first, last).
fn check_chain(chain: &[(u64, String, String)], devnet: &Devnet, what: &str) -> (u64, u64) {
    assert!(!chain.is_empty(), "{what}: nothing written");
    for w in chain.windows(2) {
        assert!(
            w[1].0 == w[0].0 + 1,
            "{what}: {} after {}: a gap or a duplicate",
            w[1].0,
            w[0].0
        );
        assert_eq!(
            w[1].2, w[0].1,
            "{what}: block {} is not the child of block {}",
            w[1].0, w[0].0
        );
    }
    for (n, hash, _) in chain {
        let block = devnet
            .canonical_block(*n)
            .unwrap_or_else(|| panic!("{what}: devnet has no block {n}"));
        assert_eq!(
            *hash,
            block.hash.to_string(),
            "{what}: block {n} is not devnet's"
        );
    }
    (chain[0].0, chain[chain.len() - 1].0)
}

/// One catch-up run.
#[derive(Debug)]
struct CatchUp {
    /// Blocks per second from the first block read to the last.
    rate: f64,
    /// From the agent's start to the first block read.
    setup: Duration,
    /// The agent's CPU seconds.
    cpu: f64,
    /// The PostgreSQL server's CPU seconds (with the table).
    server: Option<f64>,
}

async fn catch_up_run(devnet: &Devnet, pg: &PgServer, postgres: bool, run: usize) -> CatchUp {
    let dir = tempfile::tempdir().expect("tempdir");
    let ticks = clock_ticks();
    let api = format!("127.0.0.1:{}", free_port());
    let db = format!("catchup{run}");
    let url = if postgres {
        pg.create_database(&db).await
    } else {
        String::new()
    };
    let store = if postgres {
        Store::Postgres {
            url: &url,
            instance: "a",
            lease: &DEFAULT_LEASE,
        }
    } else {
        Store::Sqlite
    };
    let mut out = if postgres {
        Output::table(pg, &db).await
    } else {
        Output::file(dir.path().join("blocks.jsonl"))
    };
    // The session that made the database has ended before the server's CPU is counted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server_before = out.server_cpu(ticks);
    let config = agent_config(devnet, &api, store, Duration::from_secs(1), "0");
    let t0 = Instant::now();
    let agent = AgentProcess::start(dir.path(), &config);
    let (first, first_at) = {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(n) = out.top().await {
                break (n, Instant::now());
            }
            assert!(Instant::now() < deadline, "nothing written within {WAIT:?}");
            tokio::time::sleep(FINE_POLL).await;
        }
    };
    let last_at = out.wait_for(BACKLOG, FINE_POLL).await;
    let cpu = sample(agent.pid(), ticks).expect("agent running").cpu_secs;
    let server = out.server_cpu(ticks).zip(server_before).map(|(a, b)| a - b);
    drop(agent);
    let what = if postgres { "the table" } else { "the file" };
    let (from, to) = check_chain(&out.chain().await, devnet, what);
    assert_eq!((from, to), (0, BACKLOG), "{what}");
    if postgres {
        // Its autovacuum would count in the next runs' server CPU.
        drop(out);
        pg.execute("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"), &[])
            .await;
    }
    let rate = (BACKLOG - first) as f64 / last_at.duration_since(first_at).as_secs_f64();
    CatchUp {
        rate,
        setup: first_at.duration_since(t0),
        cpu,
        server,
    }
}

async fn catch_up(pg: &PgServer) {
    let devnet = devnet(Duration::ZERO).await;
    devnet.mine(BACKLOG);
    // File, then table.
    let mut runs: [Vec<CatchUp>; 2] = [Vec::new(), Vec::new()];
    for run in 0..CATCH_UP_RUNS {
        for (i, postgres) in [false, true].into_iter().enumerate() {
            let r = catch_up_run(&devnet, pg, postgres, run).await;
            eprintln!(
                "cluster: catch-up run {run}, {}: {r:?}",
                if postgres { "table" } else { "file" },
            );
            runs[i].push(r);
        }
    }
    devnet.shutdown().await;
    println!("## Catch-up into PostgreSQL against a file\n");
    println!(
        "A backlog of {BACKLOG} blocks on devnet (in process, mined at once), fetched by one agent \
         from block 0 with the default fetch settings (batches of 32, 8 fetches at once): once with \
         SQLite state and the blocks to a file, once with PostgreSQL state and the blocks to \
         `blockwatch.blocks` (cluster mode, one agent), alternately, {CATCH_UP_RUNS} runs each. \
         Blocks per second from the first block a reader sees (polling the file or the table every \
         {} ms) to the last; set-up is the agent's start to the first block seen; CPU is the \
         agent's `utime + stime` over the whole run, and PostgreSQL's (every server process but \
         the reader's session), per 1,000 blocks. Median (min–max).\n",
        FINE_POLL.as_millis()
    );
    println!("| state / output | blocks/s | set-up (ms) | agent CPU-s per 1,000 blocks | PostgreSQL CPU-s per 1,000 blocks |");
    println!("| --- | --- | --- | --- | --- |");
    let mut medians = Vec::new();
    for (i, name) in ["SQLite / file", "PostgreSQL / table"].iter().enumerate() {
        let r = &runs[i];
        let rate = Stats(r.iter().map(|x| x.rate).collect());
        let setup = Stats(r.iter().map(|x| x.setup.as_secs_f64() * 1000.0).collect());
        let per_k = BACKLOG as f64 / 1000.0;
        let cpu = Stats(r.iter().map(|x| x.cpu / per_k).collect());
        let server = if r.iter().all(|x| x.server.is_some()) {
            let s = Stats(r.iter().map(|x| x.server.unwrap_or(0.0) / per_k).collect());
            format!("{:.2} ({:.2}–{:.2})", s.median(), s.min(), s.max())
        } else {
            "–".to_owned()
        };
        println!(
            "| {name} | {:.0} ({:.0}–{:.0}) | {:.0} ({:.0}–{:.0}) | {:.2} ({:.2}–{:.2}) | {server} |",
            rate.median(),
            rate.min(),
            rate.max(),
            setup.median(),
            setup.min(),
            setup.max(),
            cpu.median(),
            cpu.min(),
            cpu.max()
        );
        medians.push(rate.median());
    }
    println!(
        "\nInto PostgreSQL at {:.0} % of the file's rate (medians).\n",
        100.0 * medians[1] / medians[0]
    );
}

/// One agent following a block every 200 ms: (agent CPU seconds, PostgreSQL CPU seconds, and the
/// time from mining each block to reading it) over [`FOLLOW_BLOCKS`] blocks.
async fn follow(pg: &PgServer, postgres: bool) -> (f64, Option<f64>, Vec<Duration>) {
    let devnet = devnet(Duration::ZERO).await;
    devnet.mine(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let ticks = clock_ticks();
    let api = format!("127.0.0.1:{}", free_port());
    let url = if postgres {
        pg.create_database("follow").await
    } else {
        String::new()
    };
    let store = if postgres {
        Store::Postgres {
            url: &url,
            instance: "a",
            lease: &DEFAULT_LEASE,
        }
    } else {
        Store::Sqlite
    };
    let mut out = if postgres {
        Output::table(pg, "follow").await
    } else {
        Output::file(dir.path().join("blocks.jsonl"))
    };
    let config = agent_config(&devnet, &api, store, FOLLOW_BLOCK_TIME, "\"latest\"");
    let agent = AgentProcess::start(dir.path(), &config);
    out.wait_for(3, FINE_POLL).await;
    let mut tick = tokio::time::interval(FOLLOW_BLOCK_TIME);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Ten blocks of warm-up, then the measured ones.
    let mut times = Vec::new();
    let mut before = (0.0, None);
    for i in 0..10 + FOLLOW_BLOCKS {
        if i == 10 {
            before = (
                sample(agent.pid(), ticks).expect("agent running").cpu_secs,
                out.server_cpu(ticks),
            );
        }
        tick.tick().await;
        let t0 = Instant::now();
        let n = devnet.mine(1);
        let seen = out.wait_for(n, FINE_POLL).await;
        if i >= 10 {
            times.push(seen.duration_since(t0));
        }
    }
    let cpu = sample(agent.pid(), ticks).expect("agent running").cpu_secs - before.0;
    let server = out.server_cpu(ticks).zip(before.1).map(|(a, b)| a - b);
    drop(agent);
    check_chain(&out.chain().await, &devnet, "the followed chain");
    devnet.shutdown().await;
    (cpu, server, times)
}

async fn cost(pg: &PgServer) {
    let mut rows = Vec::new();
    for postgres in [false, true] {
        let (cpu, server, times) = follow(pg, postgres).await;
        let s = Stats::of_durations(&times, 1000.0);
        eprintln!(
            "cluster: following, {}: CPU {cpu:.2} s, server {server:?}, p50 {:.1} ms",
            if postgres { "table" } else { "file" },
            s.median()
        );
        rows.push((cpu, server, s));
    }
    println!("## Cost per block: PostgreSQL against SQLite, following\n");
    println!(
        "One agent following devnet (in process, one provider with `newHeads`), which mines a block \
         every {} ms: {FOLLOW_BLOCKS} blocks measured after 10 of warm-up. Once with SQLite state and \
         the blocks to a file, once with PostgreSQL state and the blocks to `blockwatch.blocks` \
         (cluster mode, one agent, lease_ttl 10 s, renewals every 2 s). CPU is the agent's `utime + \
         stime` over the measured blocks, and PostgreSQL's (every server process but the reader's \
         session), per 1,000 blocks: at 5 blocks/s it includes the background work (health \
         probes, lease renewals and heartbeats). Latency is the same definition for both: from \
         `devnet.mine(1)` returning to a reader seeing the block — its line in the file, its row \
         committed in the table — polling every {} ms (which adds about {} ms to both). \
         Milliseconds.\n",
        FOLLOW_BLOCK_TIME.as_millis(),
        FINE_POLL.as_millis(),
        FINE_POLL.as_millis() / 2,
    );
    println!("| state / output | agent CPU-s per 1,000 blocks | PostgreSQL CPU-s per 1,000 blocks | mine → seen p50 | p95 | max |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let per_k = FOLLOW_BLOCKS as f64 / 1000.0;
    for ((cpu, server, s), name) in rows.iter().zip(["SQLite / file", "PostgreSQL / table"]) {
        println!(
            "| {name} | {:.2} | {} | {:.1} | {:.1} | {:.1} |",
            cpu / per_k,
            server.map_or("–".to_owned(), |c| format!("{:.2}", c / per_k)),
            s.median(),
            s.q(0.95),
            s.max()
        );
    }
    println!(
        "\nAdded by PostgreSQL: {:+.1} ms at p50, {:+.1} ms at p95; {:+.2} agent CPU-s per 1,000 \
         blocks ({:+.2} with the server's).\n",
        rows[1].2.median() - rows[0].2.median(),
        rows[1].2.q(0.95) - rows[0].2.q(0.95),
        (rows[1].0 - rows[0].0) / per_k,
        (rows[1].0 + rows[1].1.unwrap_or(0.0) - rows[0].0) / per_k,
    );
}

/// An agent of the failover part.
struct Replica {
    instance: String,
    dir: tempfile::TempDir,
    api: String,
    config: String,
    process: Option<AgentProcess>,
}

impl Replica {
    fn start(&mut self) {
        assert!(self.process.is_none());
        self.process = Some(AgentProcess::start(self.dir.path(), &self.config));
    }

    /// Its chain's `/status` entry; `None` while it does not answer.
    async fn chain_status(&self, http: &reqwest::Client) -> Option<serde_json::Value> {
        let s: serde_json::Value = http
            .get(format!("http://{}/status", self.api))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        s["chains"]
            .as_array()?
            .iter()
            .find(|c| c["chain"] == CHAIN)
            .cloned()
    }
}

/// Waits until exactly one running replica says it leads; its index and epoch.
async fn leader(replicas: &[Replica], http: &reqwest::Client) -> (usize, u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut leaders = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            if r.process.is_none() {
                continue;
            }
            if let Some(c) = r.chain_status(http).await {
                if c["role"] == "leader" {
                    leaders.push((i, c["epoch"].as_u64().expect("a leader's epoch")));
                }
            }
        }
        if leaders.len() == 1 {
            return leaders[0];
        }
        assert!(Instant::now() < deadline, "no single leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The failover times of one lease setting, and what the table held after them.
async fn failover(pg: &PgServer, lease: &Lease) -> (Vec<Duration>, String) {
    let name = format!("failover{}ms", lease.ttl.as_millis());
    let url = pg.create_database(&name).await;
    let devnet = devnet(FAILOVER_BLOCK_TIME).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client");
    let mut replicas: Vec<Replica> = ["a", "b", "c"]
        .iter()
        .map(|instance| {
            let api = format!("127.0.0.1:{}", free_port());
            let store = Store::Postgres {
                url: &url,
                instance,
                lease,
            };
            Replica {
                instance: (*instance).to_owned(),
                dir: tempfile::tempdir().expect("tempdir"),
                config: agent_config(&devnet, &api, store, FAILOVER_BLOCK_TIME, "\"resume\""),
                api,
                process: None,
            }
        })
        .collect();
    for r in &mut replicas {
        r.start();
    }
    leader(&replicas, &http).await;
    let mut out = Output::table(pg, &name).await;
    out.wait_for(0, FAILOVER_POLL).await;
    let top = out.top().await.expect("a block");
    out.wait_for(top + 2, FAILOVER_POLL).await;
    let mut times = Vec::new();
    let mut killed_epochs = Vec::new();
    for k in 0..lease.kills {
        // Settled: the replicas have seen each other (a heartbeat each round) and a chain given up
        // for a returning replica's share has been taken by it (the next round). Then kills fall
        // anywhere between two renewals.
        let phase = lease.renew_every.mul_f64(2.0 + rand::random::<f64>());
        tokio::time::sleep(phase + Duration::from_millis(200)).await;
        let (i, epoch) = loop {
            let (i, epoch) = leader(&replicas, &http).await;
            // The store agrees: the lease was not just given up (or taken) under our eyes.
            let row = out
                .client()
                .query_one(
                    "SELECT holder, epoch FROM blockwatch.leases WHERE chain = $1",
                    &[&CHAIN],
                )
                .await
                .expect("the lease");
            let (holder, held): (Option<String>, i64) = (row.get(0), row.get(1));
            if holder.as_deref() == Some(replicas[i].instance.as_str()) && held == epoch as i64 {
                break (i, epoch);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let before = out.top().await.expect("a block") as i64;
        let killed_at = Instant::now();
        drop(replicas[i].process.take()); // SIGKILL, and waited for
        let before = before.max(out.top().await.expect("a block") as i64);
        // The next block, written by a later lease than the dead leader's.
        let deadline = killed_at + WAIT;
        let (number, next_epoch, took) = loop {
            let row = out
                .client()
                .query_opt(
                    "SELECT number, epoch FROM blockwatch.blocks
                     WHERE chain = $1 AND canonical AND number > $2 AND epoch > $3
                     ORDER BY number LIMIT 1",
                    &[&CHAIN, &before, &(epoch as i64)],
                )
                .await
                .expect("next block");
            if let Some(r) = row {
                break (r.get::<_, i64>(0), r.get::<_, i64>(1), killed_at.elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "lease_ttl {:?}: no block after {before} within {WAIT:?} of killing {}",
                lease.ttl,
                replicas[i].instance
            );
            tokio::time::sleep(FAILOVER_POLL).await;
        };
        eprintln!(
            "cluster: lease_ttl {:?}, kill {k} of {} (epoch {epoch}): block {number} under epoch \
             {next_epoch} after {:.3} s",
            lease.ttl,
            replicas[i].instance,
            took.as_secs_f64()
        );
        times.push(took);
        killed_epochs.push(epoch as i64);
        // The killed agent comes back as a standby before the next kill.
        replicas[i].start();
        let deadline = Instant::now() + WAIT;
        loop {
            let c = replicas[i].chain_status(&http).await;
            if c.is_some_and(|c| c["role"] == "standby") {
                break;
            }
            assert!(Instant::now() < deadline, "the restarted agent is not up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // A few blocks more, then the whole table against devnet.
    let top = out.top().await.expect("a block");
    out.wait_for(top + 3, FAILOVER_POLL).await;
    let chain = out.chain().await;
    let (from, to) = check_chain(&chain, &devnet, &name);
    let replaced: i64 = out
        .client()
        .query_one(
            "SELECT count(*) FROM blockwatch.blocks WHERE chain = $1 AND NOT canonical",
            &[&CHAIN],
        )
        .await
        .expect("count")
        .get(0);
    let epochs: i64 = out
        .client()
        .query_one(
            "SELECT count(DISTINCT epoch) FROM blockwatch.blocks WHERE chain = $1",
            &[&CHAIN],
        )
        .await
        .expect("count")
        .get(0);
    // Every change of leader in the table that was not a kill: the time from the last row of one
    // leader to the first of the next (a block every second when nothing happens).
    let handovers: Vec<Duration> = out
        .client()
        .query(
            "SELECT prev_epoch, extract(epoch FROM written_at - prev_at)::float8 FROM (
                 SELECT epoch, written_at, lag(epoch) OVER w AS prev_epoch,
                        lag(written_at) OVER w AS prev_at
                 FROM blockwatch.blocks WHERE chain = $1 AND canonical WINDOW w AS (ORDER BY number)
             ) t WHERE epoch <> prev_epoch",
            &[&CHAIN],
        )
        .await
        .expect("epoch changes")
        .iter()
        .filter(|r| !killed_epochs.contains(&r.get::<_, i64>(0)))
        .map(|r| Duration::from_secs_f64(r.get(1)))
        .collect();
    // The agents' logs, for a look at the slow takeovers.
    let logs = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/cluster-logs");
    std::fs::create_dir_all(&logs).expect("log directory");
    let mut rebalanced = 0;
    for r in &mut replicas {
        drop(r.process.take());
        let log = std::fs::read_to_string(r.dir.path().join("agent.log")).unwrap_or_default();
        rebalanced += log.matches("\"reason\":\"rebalance\"").count();
        std::fs::write(logs.join(format!("{name}-{}.log", r.instance)), log).expect("log copy");
    }
    devnet.shutdown().await;
    let summary = format!(
        "{} canonical rows, blocks {from}–{to}, written under {epochs} epochs: no gap, no \
         duplicate, each the child of the one before and devnet's block at its height; {replaced} \
         non-canonical rows. Leases given up for another replica's share (no kill): {rebalanced}; \
         the table paused {} between one leader's last row and the next one's first at such a \
         change",
        chain.len(),
        if handovers.is_empty() {
            "–".to_owned()
        } else {
            let h = Stats::of_durations(&handovers, 1.0);
            format!(
                "{:.2} s at the median, {:.2} s at most ({} changes)",
                h.median(),
                h.max(),
                handovers.len()
            )
        }
    );
    (times, summary)
}

async fn failovers(pg: &PgServer) {
    let mut rows = Vec::new();
    for lease in &LEASES {
        let (times, summary) = failover(pg, lease).await;
        rows.push((lease, times, summary));
    }
    println!("## Failover time\n");
    println!(
        "Three agents (instances a, b, c) on one PostgreSQL database following devnet (in process, \
         one provider with `newHeads`, a block every {} s) with `block_output = \"postgres\"`. \
         Repeatedly: after a pause of 2–3 × `renew_every` (the replicas see each other and settle; the \
         random part makes kills fall anywhere between two renewals), the leader (the one whose `/status` says `leader`, as the lease row does) is SIGKILLed; the time is \
         from the kill to the first canonical row in `blockwatch.blocks` above the highest before it, \
         written under a later epoch (the table read every {} ms); then the killed agent is started \
         again and the next kill waits until its `/status` says `standby`. Seconds.\n",
        FAILOVER_BLOCK_TIME.as_secs(),
        FAILOVER_POLL.as_millis()
    );
    println!("| lease_ttl | renew_every | kills | min | p50 | p95 | max | bound: lease_ttl + block time | p95 within |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (lease, times, _) in &rows {
        let s = Stats::of_durations(times, 1.0);
        let bound = (lease.ttl + FAILOVER_BLOCK_TIME).as_secs_f64();
        println!(
            "| {} s | {} ms | {} | {:.2} | {:.2} | {:.2} | {:.2} | {bound:.0} s | {} |",
            lease.ttl.as_secs(),
            lease.renew_every.as_millis(),
            times.len(),
            s.min(),
            s.median(),
            s.q(0.95),
            s.max(),
            if s.q(0.95) <= bound { "yes" } else { "**no**" }
        );
    }
    println!();
    for (lease, _, summary) in &rows {
        println!("- lease_ttl {} s: {summary}.", lease.ttl.as_secs());
    }
    println!();
}

fn main() {
    let Some(rt) = setup("cluster") else { return };
    println!("Machine: {}\n", machine());
    // `cargo bench --bench cluster -- NAME…` runs only the named parts.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let pg = PgServer::start();
    rt.block_on(async {
        if run("catch-up") {
            catch_up(&pg).await;
        }
        if run("cost") {
            cost(&pg).await;
        }
        if run("failover") {
            failovers(&pg).await;
        }
    });
}
