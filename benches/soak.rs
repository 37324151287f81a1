//! Memory and CPU of the agent following a fast chain for a long time, all telemetry on.
//!
//! devnet (in this process) mines a block every 10 ms (100 blocks/s) for two providers with HTTP and
//! `newHeads` (each limited to 500 requests/s: the default 25/s is for public endpoints); the agent runs as its own process (the release binary, `blockwatch run`) with spans,
//! metrics and logs exported over OTLP/gRPC to a local receiver that discards them, JSON logs at info
//! to a file, the block stream to a file, the missed-block log on, and its HTTP API scraped every 15 s
//! like Prometheus would. Every second the agent's resident memory (`VmRSS`), peak (`VmHWM`) and CPU
//! time (`utime + stime`) are read from `/proc`, and the blocks it has written are counted.
//!
//! Run with `make bench` (`cargo bench --bench soak`); `SOAK_SECS` shortens the default 600 s.
//! Prints Markdown.

mod support;

use std::time::{Duration, Instant};

use support::*;

const BLOCK_TIME: Duration = Duration::from_millis(10);

fn main() {
    if !benchmarking("soak") {
        return;
    }
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let devnet = rt
        .block_on(blockwatch::devnet::Devnet::start(
            blockwatch::devnet::DevnetConfig {
                providers: 2,
                block_time: BLOCK_TIME,
                ..Default::default()
            },
        ))
        .expect("devnet");
    let receiver = rt.block_on(discard_receiver());
    let dir = tempfile::tempdir().expect("tempdir");
    let api = format!("127.0.0.1:{}", free_port());
    let providers: String = (0..2)
        .map(|i| {
            let p = devnet_provider(&devnet, i, true);
            format!(
                "[[chains.providers]]\nname = \"{}\"\nurl = \"{}\"\nws_url = \"{}\"\npriority = {i}\n\
                 rate_limit = {{ requests_per_second = 500, burst = 500 }}\n\n",
                p.name,
                p.url,
                p.ws_url.expect("ws")
            )
        })
        .collect();
    let config = format!(
        "[agent]\nstate_path = \"state.db\"\nblock_output = \"blocks.jsonl\"\nhttp_listen = \"{api}\"\n\n\
         [telemetry]\notlp_endpoint = \"http://{receiver}\"\nlog_format = \"json\"\nlog_level = \"info\"\n\n\
         [missed_block_log]\npath = \"missed.jsonl\"\n\n\
         [[chains]]\nname = \"devnet\"\nchain_id = {}\nexpected_block_time = \"{}ms\"\n\n{providers}",
        devnet.info().chain_id,
        BLOCK_TIME.as_millis(),
    );
    let agent = AgentProcess::start(dir.path(), &config);
    let pid = agent.0.id();
    let ticks = clock_ticks();
    let blocks_path = dir.path().join("blocks.jsonl");
    let mut counter = LineCounter::default();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let first_head = devnet.head().number();
    // (elapsed s, blocks written, sample) once a minute, and the one at the end.
    let mut marks: Vec<(u64, u64, Sample)> = Vec::new();
    let mut scrape_failures = 0;
    for second in 1..=secs {
        std::thread::sleep(
            (started + Duration::from_secs(second)).saturating_duration_since(Instant::now()),
        );
        let written = counter.update(&blocks_path);
        let Some(s) = sample(pid, ticks) else {
            let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
            panic!("the agent exited after {second} s; its log:\n{log}");
        };
        if second % 15 == 0 {
            for path in ["metrics", "status"] {
                let ok = rt.block_on(async {
                    client
                        .get(format!("http://{api}/{path}"))
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                });
                scrape_failures += u32::from(!ok);
            }
        }
        if second % 60 == 0 || second == secs || second == 10 {
            eprintln!(
                "soak: {second} s, {written} blocks, RSS {:.1} MiB, CPU {:.1} s",
                s.rss_kib as f64 / 1024.0,
                s.cpu_secs
            );
            marks.push((second, written, s));
        }
    }
    let produced = devnet.head().number() - first_head;
    let written = counter.update(&blocks_path);
    drop(agent);

    println!("Machine: {}\n", machine());
    println!("## Memory and CPU over {secs} s at 100 blocks/s\n");
    println!(
        "`blockwatch run` (release) following devnet (a block every {} ms, 2 providers, HTTP and \
         `newHeads`, 500 requests/s each) with OTLP export of spans, metrics and logs to a discarding receiver, JSON logs \
         at info to a file, the stream to a file, and `/metrics` and `/status` fetched every 15 s. \
         devnet mined {produced} blocks; the agent wrote {written} lines ({:.1} blocks/s); scrapes \
         failed: {scrape_failures}.\n",
        BLOCK_TIME.as_millis(),
        written as f64 / secs as f64,
    );
    println!("| after | blocks written | RSS (MiB) | peak RSS so far (MiB) | CPU (s) |");
    println!("| --- | --- | --- | --- | --- |");
    for (t, n, s) in &marks {
        println!(
            "| {} s | {n} | {:.1} | {:.1} | {:.1} |",
            t,
            s.rss_kib as f64 / 1024.0,
            s.peak_kib as f64 / 1024.0,
            s.cpu_secs
        );
    }
    // CPU per 1,000 blocks and memory growth after the first minute (warm-up).
    let warm = marks.iter().find(|(t, ..)| *t >= 60.min(secs / 2));
    let last = marks.last();
    if let (Some((t0, n0, s0)), Some((t1, n1, s1))) = (warm, last) {
        if n1 > n0 {
            let per_1000 = (s1.cpu_secs - s0.cpu_secs) / ((n1 - n0) as f64 / 1000.0);
            println!(
                "\nCPU from {t0} s to {t1} s: {:.2} CPU-seconds per 1,000 blocks ({:.1} % of one core \
                 at 100 blocks/s). RSS from {t0} s to {t1} s: {:+.1} MiB.",
                per_1000,
                per_1000 / 10.0 * 100.0,
                (s1.rss_kib as f64 - s0.rss_kib as f64) / 1024.0
            );
        }
    }
}
