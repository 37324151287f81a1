//! The block stream's speed: catch-up throughput against devnet and anvil compared with a plain
//! sequential client and a bare batched client on the same endpoint; the request rate achieved under
//! a 50 requests/s rate limit, as devnet counts it; and head latency with `newHeads` and with polling.
//! Run with `make bench` (`cargo bench --bench stream`); `cargo test` skips it. Prints Markdown.

mod support;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use support::*;

const BACKLOG: u64 = 10_000;
const REPS: usize = 5;
/// The sequential loop's rate is the same over any stretch: it is timed over the first blocks only.
const SEQUENTIAL: u64 = 2_000;
/// Transfers in every block of the backlog with transactions.
const TRANSFERS: u64 = 1;

/// Runs the agent on `providers` from block `from` until it has emitted `to`, and checks the output
/// file holds every block. Returns the time from its first emitted block to `to` (the blocks after
/// the first, at the agent's pace) and its set-up time (start to the first block: chain id and
/// genesis checks, the state database, the first fetch).
async fn agent_catch_up(
    providers: Vec<Provider>,
    chain_id: u64,
    from: u64,
    to: u64,
    provider_extra: &str,
) -> (Duration, Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("blocks.jsonl");
    let out_s = out.display().to_string();
    let chain = format!("expected_block_time = \"1s\"\nstart = {from}\nselection = \"priority\"");
    let cfg = AgentConfig {
        dir: dir.path(),
        chain_id,
        providers,
        block_output: &out_s,
        pool: "",
        chain: &chain,
        provider: provider_extra,
    }
    .build();
    let t0 = Instant::now();
    // Only the first and the last block are timed: the observer costs nothing in between.
    let mut agent = RunningAgent::spawn_timing(cfg, Some(vec![from, to]));
    let (_, first) = emitted(&mut agent.rx, from, Duration::from_secs(60)).await;
    let (_, at) = emitted(&mut agent.rx, to, Duration::from_secs(600)).await;
    let took = (at.duration_since(first), first.duration_since(t0));
    agent.stop().await;
    let lines = std::fs::read_to_string(&out)
        .expect("block output")
        .lines()
        .filter(|l| l.contains("\"type\":\"block\""))
        .count() as u64;
    assert!(
        lines == to - from + 1,
        "{lines} block lines for {from}..={to}"
    );
    took
}

fn block_request(id: u64, n: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "eth_getBlockByNumber", "params": [format!("{n:#x}"), false]})
}

/// One `eth_getBlockByNumber` after the other, each answer parsed.
async fn sequential(url: &str, from: u64, to: u64) -> Duration {
    let client = reqwest::Client::new();
    let t0 = Instant::now();
    for n in from..=to {
        let v: Value = client
            .post(url)
            .json(&block_request(n, n))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert!(v["result"]["hash"].is_string(), "block {n}: {v}");
    }
    t0.elapsed()
}

/// Batches of `batch` blocks over `conns` concurrent requests, each answer parsed into JSON values:
/// no verification, no output.
async fn bare_batched(url: &str, from: u64, to: u64, batch: u64, conns: usize) -> Duration {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(from));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (client, next, url) = (client.clone(), next.clone(), url.to_owned());
            tokio::spawn(async move {
                loop {
                    let start = next.fetch_add(batch, Ordering::Relaxed);
                    if start > to {
                        return;
                    }
                    let end = (start + batch - 1).min(to);
                    let body: Vec<Value> = (start..=end).map(|n| block_request(n, n)).collect();
                    let v: Vec<Value> = client
                        .post(&url)
                        .json(&body)
                        .send()
                        .await
                        .expect("send")
                        .json()
                        .await
                        .expect("json");
                    assert_eq!(v.len() as u64, end - start + 1);
                    assert!(v.iter().all(|b| b["result"]["hash"].is_string()));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    t0.elapsed()
}

/// blocks per second: median (min–max) over the runs.
fn rate_cell(blocks: u64, runs: &[Duration]) -> (f64, String) {
    let s = Stats(
        runs.iter()
            .map(|d| blocks as f64 / d.as_secs_f64())
            .collect(),
    );
    (
        s.median(),
        format!("{:.0} ({:.0}–{:.0})", s.median(), s.min(), s.max()),
    )
}

/// Median rates (blocks/s) of one endpoint's runs: blockwatch with defaults, the bare batched client.
struct Rates {
    agent: f64,
    bare: f64,
}

/// The three clients against one endpoint; prints one table row each.
async fn compare(
    endpoint: &str,
    url: &str,
    ws: Option<&str>,
    chain_id: u64,
    from: u64,
    to: u64,
) -> Rates {
    let blocks = to - from + 1;
    let generous =
        "timeout = \"10s\"\nrate_limit = { requests_per_second = 1000000, burst = 1000000 }";
    let mut runs: Vec<(&str, u64, Vec<Duration>)> = Vec::new();
    let mut agent_default = Vec::new();
    let mut agent_100 = Vec::new();
    let mut setup = Vec::new();
    let (mut seq, mut bare) = (Vec::new(), Vec::new());
    // CPU time of this process (the agent runs in it; devnet too, when it is the endpoint) over
    // each client's runs: what a client costs per block, however busy the machine is.
    let ticks = clock_ticks();
    let cpu = || {
        let f = stat_fields(std::process::id()).expect("/proc/self/stat");
        (f[11] + f[12]) as f64 / ticks
    };
    let mut cpu_secs = [0.0f64; 4];
    for _ in 0..REPS {
        let p = || {
            vec![Provider {
                name: "p0".into(),
                url: url.into(),
                ws_url: ws.map(str::to_owned),
            }]
        };
        let c0 = cpu();
        let (run, set_up) = agent_catch_up(p(), chain_id, from, to, generous).await;
        let c1 = cpu();
        agent_default.push(run);
        setup.push(set_up);
        let batch_100 = format!("{generous}\nmax_batch_size = 100");
        agent_100.push(agent_catch_up(p(), chain_id, from, to, &batch_100).await.0);
        let c2 = cpu();
        seq.push(sequential(url, from, from + SEQUENTIAL - 1).await);
        let c3 = cpu();
        bare.push(bare_batched(url, from, to, 100, 4).await);
        let c4 = cpu();
        for (i, d) in [c1 - c0, c2 - c1, c3 - c2, c4 - c3].into_iter().enumerate() {
            cpu_secs[i] += d;
        }
    }
    // The agent's time runs from its first block, so it is timed over one block less.
    runs.push((
        "blockwatch (defaults: batches of 32, 8 fetches at once)",
        blocks - 1,
        agent_default,
    ));
    runs.push(("blockwatch, max_batch_size = 100", blocks - 1, agent_100));
    runs.push((
        "sequential eth_getBlockByNumber loop (first 2,000 blocks)",
        SEQUENTIAL,
        seq,
    ));
    runs.push((
        "bare batched client (batches of 100, 4 at once)",
        blocks,
        bare,
    ));
    let bare_rate = rate_cell(blocks, &runs[3].2).0;
    for (i, (who, n, r)) in runs.iter().enumerate() {
        let (median, cell) = rate_cell(*n, r);
        // Whole runs (set-up and shutdown too), over every block fetched.
        let fetched = if i == 2 { SEQUENTIAL } else { blocks };
        let per_block = cpu_secs[i] * 1e6 / (fetched * REPS as u64) as f64;
        println!(
            "| {endpoint} | {who} | {cell} | {:.0} % | {per_block:.1} |",
            100.0 * median / bare_rate
        );
    }
    let s = Stats::of_durations(&setup, 1000.0);
    println!(
        "| {endpoint} | blockwatch set-up, start to first block (not in the rates above) | {:.0} ms ({:.0}–{:.0}) | | |",
        s.median(),
        s.min(),
        s.max()
    );
    Rates {
        agent: rate_cell(blocks - 1, &runs[0].2).0,
        bare: bare_rate,
    }
}

/// POSTs one JSON-RPC request or batch to anvil; an error answer fails the benchmark.
async fn anvil_call(client: &reqwest::Client, url: &str, body: &Value) -> Value {
    let v: Value = client
        .post(url)
        .json(body)
        .send()
        .await
        .expect("anvil")
        .json()
        .await
        .expect("json");
    let entries = v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]);
    assert!(
        entries.iter().all(|e| e.get("error").is_none()),
        "anvil: {v}"
    );
    v
}

/// Mines `blocks` blocks on anvil (started with `--no-mining`), each with `per_block` transfers
/// from its first dev account to its second: the transfers go to the pool in one batch (with
/// their nonces, so in any order), then `evm_mine` makes the block.
async fn mine_transfers(url: &str, blocks: u64, per_block: u64) {
    let client = reqwest::Client::new();
    let accounts = anvil_call(
        &client,
        url,
        &json!({"jsonrpc":"2.0","id":1,"method":"eth_accounts","params":[]}),
    )
    .await;
    let (from, to) = (&accounts["result"][0], &accounts["result"][1]);
    let mut nonce = 0u64;
    for _ in 0..blocks {
        let batch: Vec<Value> = (0..per_block)
            .map(|i| {
                nonce += 1;
                json!({"jsonrpc":"2.0","id":i,"method":"eth_sendTransaction",
                    "params":[{"from":from,"to":to,"value":"0x1","nonce":format!("{:#x}", nonce - 1)}]})
            })
            .collect();
        anvil_call(&client, url, &Value::Array(batch)).await;
        anvil_call(
            &client,
            url,
            &json!({"jsonrpc":"2.0","id":1,"method":"evm_mine","params":[]}),
        )
        .await;
    }
    // Every block holds its transfers (the pool took them all before the block was mined).
    for n in [1, blocks / 2, blocks] {
        let b = anvil_call(&client, url, &block_request(1, n)).await;
        let txs = b["result"]["transactions"].as_array().map_or(0, Vec::len);
        assert_eq!(txs as u64, per_block, "block {n}");
    }
}

/// Block `n`'s answer to `eth_getBlockByNumber(n, false)` (its `result`), as anvil serves it.
async fn block_text(url: &str, n: u64) -> String {
    let v = anvil_call(&reqwest::Client::new(), url, &block_request(1, n)).await;
    v["result"].to_string()
}

/// The decoder alone: microseconds to decode a block answer into blockwatch's block and check its
/// header hash, in this thread: `empty` as served, and with its `transactions` replaced by 1,000
/// transaction hashes (the header, and so its hash, stays the same). Returns (µs per block, µs per
/// transaction hash).
fn decoder_cost(empty: &str) -> (f64, f64) {
    use blockwatch::rpc::types::RpcBlock;
    const HASHES: usize = 1_000;
    const ROUNDS: u32 = 5_000;
    let mut v: Value = serde_json::from_str(empty).expect("block");
    v["transactions"] = (0..HASHES)
        .map(|i| Value::String(format!("{:#066x}", i + 1)))
        .collect();
    let full = v.to_string();
    let time = |text: &str| {
        let t0 = Instant::now();
        for _ in 0..ROUNDS {
            let b: RpcBlock = serde_json::from_str(std::hint::black_box(text)).expect("block");
            b.verify_hash().expect("hash");
            std::hint::black_box(&b);
        }
        t0.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS)
    };
    let (mut e, mut f) = (Vec::new(), Vec::new());
    for _ in 0..REPS {
        e.push(time(empty));
        f.push(time(&full));
    }
    let (e, f) = (Stats(e).median(), Stats(f).median());
    (e, (f - e) / HASHES as f64)
}

async fn catch_up() {
    println!("## Catch-up throughput\n");
    println!(
        "Blocks per second to fetch a backlog of {BACKLOG} blocks (blockwatch: fetch, verify each header hash and parent link, write the JSON line to a file, commit the cursor; timed from its first emitted block to its last, set-up shown apart), median (min–max) of {REPS} runs; then the median against the bare batched client's, and the CPU time of the benchmark's process per block over the client's runs (the agent runs in it, and so does devnet when it is the endpoint; anvil is a process of its own).\n"
    );
    println!("| endpoint | client | blocks/s | vs bare batched | CPU-µs per block |");
    println!("| --- | --- | --- | --- | --- |");
    // devnet, in process, no added latency.
    let devnet = devnet_on_demand(1).await;
    devnet.mine(BACKLOG);
    let p = &devnet.providers()[0];
    compare(
        "devnet",
        &p.http_url(),
        Some(&p.ws_url()),
        devnet.info().chain_id,
        1,
        BACKLOG,
    )
    .await;
    devnet.shutdown().await;
    // anvil, with the backlog mined by anvil_mine.
    let anvil = Anvil::start().await;
    let client = reqwest::Client::new();
    let v: Value = client
        .post(&anvil.url)
        .json(&json!({"jsonrpc":"2.0","id":1,"method":"anvil_mine","params":[format!("{BACKLOG:#x}")]}))
        .send()
        .await
        .expect("anvil_mine")
        .json()
        .await
        .expect("json");
    assert!(v.get("error").is_none(), "anvil_mine: {v}");
    let empty = compare("anvil", &anvil.url, None, 31337, 1, BACKLOG).await;
    let empty_block = block_text(&anvil.url, 1).await;
    // anvil again, every block with a transfer: the blocks carry transaction hashes.
    drop(anvil);
    let anvil = Anvil::start().await;
    let t0 = Instant::now();
    mine_transfers(&anvil.url, BACKLOG, TRANSFERS).await;
    let mined = t0.elapsed();
    let endpoint = if TRANSFERS == 1 {
        "anvil, a transfer in every block".to_owned()
    } else {
        format!("anvil, {TRANSFERS} transfers in every block")
    };
    let full = compare(&endpoint, &anvil.url, None, 31337, 1, BACKLOG).await;
    let (decode_block, decode_hash) = decoder_cost(&empty_block);
    println!(
        "\nWith transactions (the backlog mined in {:.0} s) blockwatch took {:+.2} µs per block against the empty blocks (the bare batched client {:+.2} µs): anvil serves more, on the same two cores. The decoder alone (one thread; anvil's block 1 decoded and its header hash checked, median of {REPS} × 5,000): {decode_block:.2} µs per block, {:.1} ns per transaction hash (1,000 hashes in the block).",
        mined.as_secs_f64(),
        1e6 / full.agent - 1e6 / empty.agent,
        1e6 / full.bare - 1e6 / empty.bare,
        decode_hash * 1000.0,
    );
    println!();
}

/// Only blockwatch (defaults) catching up on anvil's backlog, 30 times: what to profile
/// (`cargo bench --bench stream -- catch-up-profile`, a transfer in every block with
/// `-- catch-up-profile transfers`; attach `perf record -p` once it says the backlog is mined,
/// so that anvil's mining is not in the profile); prints its rates.
async fn catch_up_profile(transfers: bool) {
    let anvil = Anvil::start().await;
    if transfers {
        mine_transfers(&anvil.url, BACKLOG, TRANSFERS).await;
    } else {
        anvil_call(
            &reqwest::Client::new(),
            &anvil.url,
            &json!({"jsonrpc":"2.0","id":1,"method":"anvil_mine","params":[format!("{BACKLOG:#x}")]}),
        )
        .await;
    }
    let generous =
        "timeout = \"10s\"\nrate_limit = { requests_per_second = 1000000, burst = 1000000 }";
    println!("backlog mined");
    let mut runs = Vec::new();
    for _ in 0..30 {
        let p = vec![Provider {
            name: "p0".into(),
            url: anvil.url.clone(),
            ws_url: None,
        }];
        runs.push(agent_catch_up(p, 31337, 1, BACKLOG, generous).await.0);
    }
    println!(
        "blockwatch (defaults) on anvil: {} blocks/s",
        rate_cell(BACKLOG - 1, &runs).1
    );
}

/// anvil from `.tools/bin` (`make tools`), on a free loopback port; killed when dropped.
struct Anvil {
    child: std::process::Child,
    url: String,
}

impl Anvil {
    async fn start() -> Anvil {
        let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/anvil");
        assert!(bin.exists(), "{} missing: run `make tools`", bin.display());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(bin)
            // No state history: mining 10,000 blocks would otherwise persist gigabytes of old states
            // under ~/.foundry/anvil/tmp, which a killed anvil leaves behind.
            .args([
                "--port",
                &port.to_string(),
                "--silent",
                "--no-mining",
                "--prune-history",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("anvil");
        let anvil = Anvil {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            let ok = client
                .post(&anvil.url)
                .json(&json!({"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}))
                .send()
                .await
                .is_ok();
            if ok {
                return anvil;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("anvil did not start");
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent catching up under a 50 requests/s limit (batches of 1, so one request is one call):
/// the rate devnet counts, per second, after the burst is spent.
async fn rate_limited() {
    const LIMIT: u64 = 50;
    const WINDOW: u64 = 20;
    let devnet = devnet_on_demand(1).await;
    devnet.mine(5_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = &devnet.providers()[0];
    let cfg = AgentConfig {
        dir: dir.path(),
        chain_id: devnet.info().chain_id,
        providers: vec![devnet_provider(&devnet, 0, false)],
        block_output: "none",
        pool: "",
        chain: "expected_block_time = \"1s\"\nstart = 1",
        provider: &format!(
            "rate_limit = {{ requests_per_second = {LIMIT}, burst = {LIMIT} }}\nmax_batch_size = 1"
        ),
    }
    .build();
    let agent = RunningAgent::spawn(cfg);
    // The burst goes in the first second; measure after it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut per_second = Vec::new();
    let start = p.requests();
    let t0 = Instant::now();
    let mut last = start;
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    for _ in 0..WINDOW {
        tick.tick().await;
        let now = p.requests();
        per_second.push((now - last) as f64);
        last = now;
    }
    let total = (last - start) as f64 / t0.elapsed().as_secs_f64();
    agent.stop().await;
    devnet.shutdown().await;
    let s = Stats(per_second);
    println!("## Rate limit\n");
    println!(
        "The agent catching up (5,000 blocks behind, batches of 1) through one provider limited to `requests_per_second = {LIMIT}, burst = {LIMIT}`; HTTP requests devnet received over {WINDOW} s after a 3 s warm-up.\n"
    );
    println!("| limit | achieved (mean over {WINDOW} s) | fraction of the limit | per-second counts median (min–max) |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| {LIMIT}/s | {total:.1}/s | {:.1} % | {:.0} ({:.0}–{:.0}) |\n",
        100.0 * total / LIMIT as f64,
        s.median(),
        s.min(),
        s.max()
    );
}

/// Time from devnet making a block to the agent emitting it, with `newHeads` and with polling.
async fn head_latency() {
    const BLOCKS: usize = 60;
    println!("## Head latency\n");
    println!(
        "Time from `devnet.mine(1)` to the agent emitting that block, {BLOCKS} blocks 150–400 ms apart (random gaps, so polling is not in phase), after 10 warm-up blocks; `expected_block_time = \"1s\"`, so polling asks every 250 ms. Milliseconds.\n"
    );
    println!("| head from | p50 | p99 | max |");
    println!("| --- | --- | --- | --- |");
    for ws in [true, false] {
        let devnet = devnet_on_demand(1).await;
        devnet.mine(1);
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = AgentConfig {
            dir: dir.path(),
            chain_id: devnet.info().chain_id,
            providers: vec![devnet_provider(&devnet, 0, ws)],
            block_output: "none",
            pool: "",
            chain: "expected_block_time = \"1s\"\nstart = \"latest\"",
            provider: "rate_limit = { requests_per_second = 1000, burst = 1000 }",
        }
        .build();
        let mut agent = RunningAgent::spawn(cfg);
        let mut times = Vec::new();
        for i in 0..BLOCKS + 10 {
            let gap = 150 + rand::random::<u64>() % 250;
            tokio::time::sleep(Duration::from_millis(gap)).await;
            while agent.rx.try_recv().is_ok() {}
            let t0 = Instant::now();
            let n = devnet.mine(1);
            let (_, at) = emitted(&mut agent.rx, n, Duration::from_secs(10)).await;
            if i >= 10 {
                times.push(at.duration_since(t0));
            }
        }
        agent.stop().await;
        devnet.shutdown().await;
        let s = Stats::of_durations(&times, 1000.0);
        let how = if ws {
            "WebSocket `newHeads`"
        } else {
            "polling (`eth_blockNumber` every 250 ms)"
        };
        println!(
            "| {how} | {:.1} | {:.1} | {:.1} |",
            s.median(),
            s.q(0.99),
            s.max()
        );
    }
    println!();
}

fn main() {
    let Some(rt) = setup("stream") else { return };
    println!("Machine: {}\n", machine());
    // `cargo bench --bench stream -- NAME…` runs only the named parts.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    rt.block_on(async {
        if run("catch-up") {
            catch_up().await;
        }
        // Not part of a full run: only when named.
        if only.iter().any(|o| o == "catch-up-profile") {
            catch_up_profile(only.iter().any(|o| o == "transfers")).await;
        }
        if run("rate-limit") {
            rate_limited().await;
        }
        if run("head-latency") {
            head_latency().await;
        }
    });
}
