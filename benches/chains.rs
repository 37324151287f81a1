//! Many chains in one agent process: 1,000 chains × 3 providers at 12 s blocks, and 200 chains at
//! 2 s blocks, each provider with HTTP and a WebSocket `newHeads` subscription.
//!
//! The chains are devnets in this process (one [`Devnet`] per chain, chain id 100000 + i, three
//! providers each), mined by this benchmark on one schedule: every chain at its own block time, the
//! chains' blocks staggered evenly over it so that they do not all come in the same millisecond,
//! as with independent chains. The agent runs as its own process (the release binary, `blockwatch
//! run`) as a user would run it: a `[[chains]]` per chain with its three providers, the block
//! stream to one file, the state in one SQLite file, OTLP export of spans, metrics and logs to a
//! local receiver that discards them, JSON logs at info to a file, its HTTP API on.
//!
//! Every millisecond the benchmark mines the blocks that are due (remembering when) and reads the
//! lines the agent appended to the block file: the time from a block's mining to its line is its
//! head latency (the 1 ms polling adds up to 1 ms). Every second it reads the agent's CPU time and
//! memory from `/proc`. At the end, every chain's lines are checked against its devnet's head.
//!
//! Runs: `1000` (1,000 chains, 12 s blocks, `CHAINS_SECS` or 600 s), `200` (200 chains, 2 s
//! blocks, `CHAINS_SECS` or 180 s), `memory` (the resident memory once every chain follows, for
//! 1/250/500/1,000 chains with 3 providers and 1,000 with one). `cargo bench --bench chains -- 200
//! memory`, or `CHAINS=1000`, picks runs; all three by default. Prints Markdown.
//! `CHAINS_AGENT_WRAP="heaptrack -o /tmp/h"` starts the agent under a wrapper (a profiler);
//! `CHAINS_AGENT_BIN` runs another build of the agent (to compare two builds back to back).

mod support;

use std::{
    collections::{BinaryHeap, HashMap, HashSet},
    fs::File,
    io::Read,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use blockwatch::devnet::{Devnet, DevnetConfig};
use support::*;

/// The first chain's id; chain i is `FIRST_CHAIN_ID + i`.
const FIRST_CHAIN_ID: u64 = 100_000;
/// How often the block file is read and due blocks are mined.
const TICK: Duration = Duration::from_millis(1);
/// Longest wait for every chain's first block.
const STARTUP_LIMIT: Duration = Duration::from_secs(120);
/// How long after start-up the memory runs wait before reading the plateau.
const PLATEAU: Duration = Duration::from_secs(30);

/// One measured run.
struct Run {
    chains: usize,
    providers: usize,
    block_time: Duration,
    secs: u64,
}

fn main() {
    if !benchmarking("chains") {
        return;
    }
    let mut picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if let Ok(env) = std::env::var("CHAINS") {
        picked.extend(env.split(',').map(|s| s.trim().to_owned()));
    }
    if picked.is_empty() {
        picked = vec!["1000".into(), "200".into(), "memory".into()];
    }
    let secs = |default: u64| {
        std::env::var("CHAINS_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let most = if picked.iter().any(|p| p == "1000" || p == "memory") {
        1000
    } else {
        200
    };
    let started = Instant::now();
    let devnets = rt.block_on(start_devnets(most));
    eprintln!(
        "chains: {most} devnets × 3 providers started in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let receiver = rt.block_on(discard_receiver());
    println!("Machine: {}\n", machine());
    for p in &picked {
        match p.as_str() {
            "1000" => follow(
                &rt,
                &devnets,
                receiver,
                &Run {
                    chains: 1000,
                    providers: 3,
                    block_time: Duration::from_secs(12),
                    secs: secs(600),
                },
            ),
            "200" => follow(
                &rt,
                &devnets,
                receiver,
                &Run {
                    chains: 200,
                    providers: 3,
                    block_time: Duration::from_secs(2),
                    secs: secs(180),
                },
            ),
            "memory" => memory(&devnets, receiver),
            other => eprintln!("chains: unknown run {other:?} (1000, 200, memory)"),
        }
    }
}

/// `n` devnets of three providers, mined only when told to.
async fn start_devnets(n: usize) -> Vec<Arc<Devnet>> {
    let mut devnets = Vec::with_capacity(n);
    for i in 0..n {
        let d = Devnet::start(DevnetConfig {
            providers: 3,
            block_time: Duration::ZERO,
            chain_id: FIRST_CHAIN_ID + i as u64,
            seed: i as u64 + 1,
            ..Default::default()
        })
        .await
        .expect("devnet");
        devnets.push(d);
    }
    devnets
}

/// The agent's config: `chains` chains with their first `providers` providers each.
fn config(devnets: &[Arc<Devnet>], run: &Run, receiver: std::net::SocketAddr, api: &str) -> String {
    use std::fmt::Write;
    let mut text = format!(
        "[agent]\nstate_path = \"state.db\"\nblock_output = \"blocks.jsonl\"\nhttp_listen = \"{api}\"\n\n\
         [telemetry]\notlp_endpoint = \"http://{receiver}\"\nlog_format = \"json\"\nlog_level = \"info\"\n\n\
         [missed_block_log]\npath = \"missed.jsonl\"\n\n"
    );
    for (i, d) in devnets.iter().take(run.chains).enumerate() {
        let _ = write!(
            text,
            "[[chains]]\nname = \"c{i}\"\nchain_id = {}\nexpected_block_time = \"{}ms\"\n\n",
            FIRST_CHAIN_ID + i as u64,
            run.block_time.as_millis()
        );
        for p in 0..run.providers {
            let p = devnet_provider(d, p, true);
            let _ = write!(
                text,
                "[[chains.providers]]\nname = \"{}\"\nurl = \"{}\"\nws_url = \"{}\"\n\n",
                p.name,
                p.url,
                p.ws_url.expect("ws")
            );
        }
    }
    text
}

/// The agent as its own process (under `CHAINS_AGENT_WRAP`, if set), killed when dropped.
struct Agent {
    child: Child,
    /// The agent's own pid (the wrapper's child when wrapped).
    pid: u32,
}

impl Agent {
    fn start(dir: &Path, config: &str) -> Agent {
        let path = dir.join("blockwatch.toml");
        std::fs::write(&path, config).expect("config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("agent.log"))
            .expect("log");
        let wrap = std::env::var("CHAINS_AGENT_WRAP").unwrap_or_default();
        // Another build of the agent (for a comparison with the same benchmark).
        let bin = std::env::var("CHAINS_AGENT_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_blockwatch").to_owned());
        let mut words = wrap.split_whitespace();
        let mut cmd = match words.next() {
            Some(w) => {
                let mut c = Command::new(w);
                c.args(words).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = cmd
            .args(["run", "--config"])
            .arg(&path)
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the agent");
        let pid = if wrap.is_empty() {
            child.id()
        } else {
            agent_pid_under(child.id())
        };
        eprintln!("chains: agent pid {pid}");
        Agent { child, pid }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.pid != self.child.id() {
            // The wrapper writes its profile when the agent ends: ask the agent to stop.
            let _ = Command::new("kill")
                .args(["-INT", &self.pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The blockwatch process among the descendants of `root` (a wrapper's), once it runs; `root`
/// itself when the wrapper replaced itself with it (`env VAR=… blockwatch`).
fn agent_pid_under(root: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let mut parents: HashMap<u32, u32> = HashMap::new();
        let mut names: HashMap<u32, String> = HashMap::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Some(f) = stat_fields(pid) {
                parents.insert(pid, f[1] as u32);
            }
            if let Ok(c) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
                names.insert(pid, c.trim().to_owned());
            }
        }
        for (pid, name) in &names {
            if name != "blockwatch" {
                continue;
            }
            if *pid == root {
                return root;
            }
            let mut p = *pid;
            while let Some(&up) = parents.get(&p) {
                if up == root {
                    return *pid;
                }
                if up <= 1 {
                    break;
                }
                p = up;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no blockwatch process under the wrapper {root}");
}

/// Reads the lines the agent appends to its block file.
struct Tail {
    file: Option<File>,
    path: std::path::PathBuf,
    partial: Vec<u8>,
    buf: Vec<u8>,
}

#[derive(serde::Deserialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    chain: &'a str,
    block_number: Option<u64>,
}

impl Tail {
    fn new(path: std::path::PathBuf) -> Tail {
        Tail {
            file: None,
            path,
            partial: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// Calls `each(chain index, block number)` for every block line appended since the last call.
    fn read(&mut self, mut each: impl FnMut(usize, u64)) {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let Some(f) = self.file.as_mut() else { return };
        self.buf.clear();
        if f.read_to_end(&mut self.buf).is_err() || self.buf.is_empty() {
            return;
        }
        self.partial.extend_from_slice(&self.buf);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        for line in self.partial[..end].split(|&b| b == b'\n') {
            let Ok(l) = serde_json::from_slice::<Line<'_>>(line) else {
                eprintln!(
                    "chains: unreadable line {:?}",
                    String::from_utf8_lossy(line)
                );
                continue;
            };
            if l.kind != "block" {
                eprintln!("chains: a {} line for {}", l.kind, l.chain);
                continue;
            }
            let (Some(i), Some(n)) = (
                l.chain.strip_prefix('c').and_then(|i| i.parse().ok()),
                l.block_number,
            ) else {
                continue;
            };
            each(i, n);
        }
        self.partial.drain(..=end);
    }
}

/// When each chain's next block is due, soonest first.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Due(std::cmp::Reverse<Instant>, usize);

/// What one run saw.
struct Seen {
    /// Per chain: the block numbers written.
    blocks: Vec<HashSet<u64>>,
    /// Chains that have written a line.
    started: usize,
    /// When the last chain wrote its first line.
    all_started: Option<Instant>,
    /// Mined blocks not yet written: (chain, number) → when mined.
    pending: HashMap<(usize, u64), Instant>,
    /// Head latency (ms) of the blocks mined after `all_started`.
    latency: Vec<f64>,
}

impl Seen {
    fn new(chains: usize) -> Seen {
        Seen {
            blocks: vec![HashSet::new(); chains],
            started: 0,
            all_started: None,
            pending: HashMap::new(),
            latency: Vec::new(),
        }
    }

    fn line(&mut self, chain: usize, number: u64, at: Instant) {
        let chains = self.blocks.len();
        let Some(set) = self.blocks.get_mut(chain) else {
            return;
        };
        if set.is_empty() {
            self.started += 1;
            if self.started == chains {
                self.all_started = Some(at);
            }
        }
        set.insert(number);
        if let Some(mined) = self.pending.remove(&(chain, number)) {
            if self.all_started.is_some_and(|s| mined >= s) {
                self.latency.push((at - mined).as_secs_f64() * 1000.0);
            }
        }
    }

    /// Per chain, the blocks between its first line and its devnet's head with no line.
    fn missing(&self, devnets: &[Arc<Devnet>]) -> (u64, usize) {
        let mut missing = 0;
        let mut silent = 0;
        for (set, d) in self.blocks.iter().zip(devnets) {
            let head = d.head().number();
            match set.iter().min() {
                Some(&first) => {
                    missing += (first..=head).filter(|n| !set.contains(n)).count() as u64
                }
                None => silent += 1,
            }
        }
        (missing, silent)
    }
}

/// Mines the run's chains on their schedule and reads the agent's lines until `until` says stop
/// (called every second with the time since the agent started and what was seen).
fn drive(
    devnets: &[Arc<Devnet>],
    run: &Run,
    blocks_path: &Path,
    seen: &mut Seen,
    mut until: impl FnMut(u64, &Seen) -> bool,
) {
    let start = Instant::now();
    let mut due: BinaryHeap<Due> = (0..run.chains)
        .map(|i| {
            let offset = run.block_time.mul_f64(i as f64 / run.chains as f64);
            Due(std::cmp::Reverse(start + offset), i)
        })
        .collect();
    let mut tail = Tail::new(blocks_path.to_owned());
    let mut second = 0;
    loop {
        let now = Instant::now();
        while due.peek().is_some_and(|d| d.0 .0 <= now) {
            let Due(std::cmp::Reverse(at), i) = due.pop().expect("peeked");
            let number = devnets[i].mine(1);
            seen.pending.insert((i, number), Instant::now());
            due.push(Due(std::cmp::Reverse(at + run.block_time), i));
        }
        let read_at = Instant::now();
        tail.read(|chain, number| seen.line(chain, number, read_at));
        if start.elapsed() >= Duration::from_secs(second + 1) {
            second += 1;
            // Blocks not written after a minute count as missing at the end: stop timing them.
            seen.pending
                .retain(|_, mined| mined.elapsed() < Duration::from_secs(60));
            if !until(second, seen) {
                return;
            }
        }
        std::thread::sleep(TICK);
    }
}

/// Reads `/status` every 5 s (a `/status` of 1,000 chains is not free) from `from` on, and stores when every chain was first healthy
/// with every provider's `newHeads` subscription open or live (ms after `from`), into `at`; each read before that adds
/// what it found not yet so to `before`.
fn watch_status(
    rt: &tokio::runtime::Runtime,
    api: String,
    from: Instant,
    at: Arc<AtomicU64>,
    before: Arc<std::sync::Mutex<Vec<String>>>,
) {
    rt.spawn(async move {
        let client = reqwest::Client::new();
        while from.elapsed() < STARTUP_LIMIT {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let Ok(r) = client
                .get(format!("http://{api}/status"))
                .timeout(Duration::from_secs(10))
                .send()
                .await
            else {
                continue;
            };
            let Ok(body) = r.json::<serde_json::Value>().await else {
                continue;
            };
            let chains = body["chains"].as_array().cloned().unwrap_or_default();
            // Chains by status (no block yet counted apart), providers by state, subscriptions
            // not live.
            let mut not_yet: std::collections::BTreeMap<String, usize> = Default::default();
            for c in &chains {
                if !c["last_processed_block"].is_u64() {
                    *not_yet.entry("no block yet".into()).or_default() += 1;
                } else if c["status"] != "healthy" {
                    *not_yet
                        .entry(format!("chain {}", c["status"].as_str().unwrap_or("?")))
                        .or_default() += 1;
                }
                for p in c["providers"].as_array().into_iter().flatten() {
                    if p["state"] != "alive" {
                        *not_yet
                            .entry(format!("provider {}", p["state"].as_str().unwrap_or("?")))
                            .or_default() += 1;
                    }
                    if p["subscription"] != "live" && p["subscription"] != "open" {
                        *not_yet
                            .entry(format!(
                                "newHeads {}",
                                p["subscription"].as_str().unwrap_or("?")
                            ))
                            .or_default() += 1;
                    }
                }
            }
            if !chains.is_empty() && not_yet.is_empty() {
                at.store(from.elapsed().as_millis() as u64, Ordering::Relaxed);
                return;
            }
            let found: Vec<String> = not_yet.iter().map(|(k, n)| format!("{n} {k}")).collect();
            before.lock().unwrap().push(format!(
                "at {:.0} s: {}",
                from.elapsed().as_secs_f64(),
                if chains.is_empty() {
                    "no chains yet".to_owned()
                } else {
                    found.join(", ")
                }
            ));
        }
    });
}

/// One follow run: start-up, every block written, CPU, memory and head latency.
fn follow(
    rt: &tokio::runtime::Runtime,
    devnets: &[Arc<Devnet>],
    receiver: std::net::SocketAddr,
    run: &Run,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = format!("127.0.0.1:{}", free_port());
    let config = config(devnets, run, receiver, &api);
    let ticks = clock_ticks();
    let agent = Agent::start(dir.path(), &config);
    let launched = Instant::now();
    let following_ms = Arc::new(AtomicU64::new(0));
    let not_following = Arc::new(std::sync::Mutex::new(Vec::new()));
    watch_status(
        rt,
        api.clone(),
        launched,
        following_ms.clone(),
        not_following.clone(),
    );
    let mut seen = Seen::new(run.chains);
    // (elapsed s, sample) once a minute, and at the end; the sample at start-up.
    let mut marks: Vec<(u64, Sample)> = Vec::new();
    let mut at_startup: Option<(u64, Sample)> = None;
    let log = dir.path().join("agent.log");
    eprintln!(
        "chains: following {} chains × {} providers, {} s blocks, {} s",
        run.chains,
        run.providers,
        run.block_time.as_secs_f64(),
        run.secs
    );
    drive(
        devnets,
        run,
        &dir.path().join("blocks.jsonl"),
        &mut seen,
        |second, seen| {
            let Some(s) = sample(agent.pid, ticks) else {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: String = log.lines().rev().take(30).collect::<Vec<_>>().join("\n");
                panic!("the agent exited after {second} s; its log (last lines, newest first):\n{tail}");
            };
            if seen.all_started.is_none() && launched.elapsed() > STARTUP_LIMIT {
                panic!(
                    "only {} of {} chains wrote a block within {STARTUP_LIMIT:?}",
                    seen.started, run.chains
                );
            }
            if seen.all_started.is_some() && at_startup.is_none() {
                at_startup = Some((second, s));
                return true;
            }
            if second % 60 == 0 || second == run.secs {
                eprintln!(
                    "chains: {second} s, {} chains started, RSS {:.1} MiB, CPU {:.1} s, {} latencies",
                    seen.started,
                    s.rss_kib as f64 / 1024.0,
                    s.cpu_secs,
                    seen.latency.len()
                );
                marks.push((second, s));
            }
            second < run.secs
        },
    );
    // The last blocks' lines: wait (up to 10 s) for every chain to reach its devnet's head.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut tail = Tail::new(dir.path().join("blocks.jsonl"));
    let mut all: Vec<u64> = vec![0; run.chains];
    loop {
        tail.read(|c, n| {
            if let Some(h) = all.get_mut(c) {
                *h = (*h).max(n)
            }
        });
        let done = all
            .iter()
            .zip(devnets)
            .all(|(h, d)| *h >= d.head().number());
        if done || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The same file read again from the start has every line: count them all.
    let mut check = Seen::new(run.chains);
    let mut tail = Tail::new(dir.path().join("blocks.jsonl"));
    let now = Instant::now();
    tail.read(|c, n| check.line(c, n, now));
    let (missing, silent) = check.missing(devnets);
    let written: usize = check.blocks.iter().map(HashSet::len).sum();
    let last = sample(agent.pid, ticks);
    drop(agent);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let kept = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("target/bench/chains-{}.log", run.chains));
    let _ = std::fs::create_dir_all(kept.parent().expect("parent"));
    let _ = std::fs::write(&kept, &text);
    // Warnings and errors, counted by message.
    let mut by_message: HashMap<String, usize> = HashMap::new();
    for l in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        if matches!(v["level"].as_str(), Some("WARN" | "ERROR")) {
            let m = v["message"].as_str().unwrap_or("?").to_owned();
            *by_message.entry(m).or_default() += 1;
        }
    }
    let warnings: usize = by_message.values().sum();
    let mut top: Vec<_> = by_message.into_iter().collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.1));
    for (m, n) in top.iter().take(5) {
        eprintln!("chains: {n} × {m}");
    }

    let startup = seen
        .all_started
        .map(|s| (s - launched).as_secs_f64())
        .unwrap_or(f64::NAN);
    let following = following_ms.load(Ordering::Relaxed);
    println!(
        "## {} chains × {} providers, {} s blocks, {} s\n",
        run.chains,
        run.providers,
        run.block_time.as_secs_f64(),
        run.secs
    );
    println!(
        "`blockwatch run` (release) following {} devnet chains in the benchmark's process, each with {} \
         providers (HTTP and `newHeads`), a block every {} s per chain staggered over the chains; OTLP \
         export of spans, metrics and logs to a discarding receiver, JSON logs at info to a file, the \
         stream to one file, SQLite state.\n",
        run.chains,
        run.providers,
        run.block_time.as_secs_f64()
    );
    println!("| measure | value |");
    println!("| --- | --- |");
    println!("| start-up: agent start → every chain's first block | {startup:.2} s |");
    if following > 0 {
        println!(
            "| start-up: agent start → `/status` every chain healthy, every `newHeads` subscribed (read every 5 s) | {:.0} s |",
            following as f64 / 1000.0
        );
    } else {
        println!("| start-up: agent start → `/status` every chain healthy, every `newHeads` subscribed (read every 5 s) | not within {} s |", STARTUP_LIMIT.as_secs());
    }
    let before = not_following.lock().unwrap().clone();
    if !before.is_empty() {
        println!(
            "| start-up: what `/status` showed not yet so before | {} |",
            before.join("; ")
        );
    }
    println!("| blocks written | {written} |");
    println!("| blocks missing (first line → devnet head, every chain) | {missing} |");
    println!("| chains that wrote nothing | {silent} |");
    println!(
        "| warnings and errors in the agent's log (kept in `target/bench/chains-{}.log`) | {warnings}{} |",
        run.chains,
        top.first()
            .map_or(String::new(), |(m, n)| format!(" (most: {n} × \"{m}\")"))
    );
    if !seen.latency.is_empty() {
        let l = Stats(seen.latency.clone());
        println!(
            "| head latency, mined → line read ({} blocks after start-up) | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms |",
            l.0.len(),
            l.median(),
            l.q(0.99),
            l.max()
        );
    }
    if let (Some((t0, s0)), Some((t1, s1))) = (&at_startup, marks.last()) {
        let warm = marks.iter().find(|(t, _)| *t >= 60.min(run.secs / 2));
        let (tw, sw) = warm.map_or((*t0, s0), |(t, s)| (*t, s));
        println!(
            "| agent CPU from start-up ({t0} s) to the end ({t1} s) | {:.1} % of one core |",
            (s1.cpu_secs - s0.cpu_secs) / (*t1 - *t0).max(1) as f64 * 100.0
        );
        if tw != *t0 && tw < *t1 {
            println!(
                "| agent CPU from {tw} s to the end | {:.1} % of one core |",
                (s1.cpu_secs - sw.cpu_secs) / (*t1 - tw).max(1) as f64 * 100.0
            );
        }
        println!(
            "| agent CPU during start-up (0 → {t0} s) | {:.1} s |",
            s0.cpu_secs
        );
        println!(
            "| RSS at start-up / at the end / peak | {:.1} / {:.1} / {:.1} MiB |",
            s0.rss_kib as f64 / 1024.0,
            s1.rss_kib as f64 / 1024.0,
            last.as_ref().map_or(s1.peak_kib, |l| l.peak_kib) as f64 / 1024.0
        );
    }
    println!();
    println!(
        "| after | RSS (MiB) | peak RSS so far (MiB) | CPU (s) | CPU in the minute (% of a core) |"
    );
    println!("| --- | --- | --- | --- | --- |");
    let mut prev: Option<&(u64, Sample)> = at_startup.as_ref();
    for m in &marks {
        let (t, s) = m;
        let pct = prev.map_or(String::new(), |(pt, ps)| {
            format!(
                "{:.1}",
                (s.cpu_secs - ps.cpu_secs) / (*t - *pt).max(1) as f64 * 100.0
            )
        });
        println!(
            "| {t} s | {:.1} | {:.1} | {:.1} | {pct} |",
            s.rss_kib as f64 / 1024.0,
            s.peak_kib as f64 / 1024.0,
            s.cpu_secs
        );
        prev = Some(m);
    }
    println!();
}

/// Resident memory once every chain follows, for several chain and provider counts.
fn memory(devnets: &[Arc<Devnet>], receiver: std::net::SocketAddr) {
    let ticks = clock_ticks();
    let runs = [(1, 3), (250, 3), (500, 3), (1000, 3), (1000, 1)];
    println!("## Memory per chain and per provider\n");
    println!(
        "The agent as in the runs above (12 s blocks), for each count: RSS when every chain has \
         written its first block, and {} s later (the plateau).\n",
        PLATEAU.as_secs()
    );
    println!("| chains | providers each | start-up (s) | RSS at start-up (MiB) | RSS {} s later (MiB) | peak (MiB) |", PLATEAU.as_secs());
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut plateau: Vec<(usize, usize, f64)> = Vec::new();
    for (chains, providers) in runs {
        let run = Run {
            chains,
            providers,
            block_time: Duration::from_secs(12),
            secs: 0,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let api = format!("127.0.0.1:{}", free_port());
        let agent = Agent::start(dir.path(), &config(devnets, &run, receiver, &api));
        let launched = Instant::now();
        let mut seen = Seen::new(chains);
        let mut first: Option<(f64, Sample)> = None;
        let mut end: Option<Sample> = None;
        drive(
            devnets,
            &run,
            &dir.path().join("blocks.jsonl"),
            &mut seen,
            |_, seen| {
                let s = sample(agent.pid, ticks).expect("the agent runs");
                let Some(at) = seen.all_started else {
                    assert!(launched.elapsed() < STARTUP_LIMIT, "start-up");
                    return true;
                };
                if first.is_none() {
                    first = Some(((at - launched).as_secs_f64(), s));
                    return true;
                }
                if at.elapsed() >= PLATEAU {
                    end = Some(s);
                    return false;
                }
                true
            },
        );
        drop(agent);
        let (startup, s0) = first.expect("started");
        let s1 = end.expect("plateau");
        println!(
            "| {chains} | {providers} | {startup:.1} | {:.1} | {:.1} | {:.1} |",
            s0.rss_kib as f64 / 1024.0,
            s1.rss_kib as f64 / 1024.0,
            s1.peak_kib as f64 / 1024.0
        );
        eprintln!(
            "chains: memory {chains} × {providers}: {:.1} MiB",
            s1.rss_kib as f64 / 1024.0
        );
        plateau.push((chains, providers, s1.rss_kib as f64 / 1024.0));
    }
    let at = |c: usize, p: usize| {
        plateau
            .iter()
            .find(|(cc, pp, _)| *cc == c && *pp == p)
            .map(|x| x.2)
    };
    if let (Some(one), Some(k3), Some(k1)) = (at(1, 3), at(1000, 3), at(1000, 1)) {
        let per_chain_3 = (k3 - one) / 999.0;
        let per_provider = (k3 - k1) / 2000.0;
        println!(
            "\nPer chain with 3 providers: {:.0} KiB ((1,000 chains − 1) / 999); per provider beyond \
             the first: {:.0} KiB ((3 − 1) providers × 1,000 chains); so a chain with one provider \
             costs about {:.0} KiB plus {:.0} KiB per provider.\n",
            per_chain_3 * 1024.0,
            per_provider * 1024.0,
            (per_chain_3 - 3.0 * per_provider) * 1024.0,
            per_provider * 1024.0
        );
    }
}
