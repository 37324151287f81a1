//! Failover delay and the effect of hedging, measured on devnet with the real agent in-process.
//!
//! Each scenario: devnet mines only when told to; the leader (p0, under priority selection) gets a
//! fault; one block is mined and the time until the agent emits it is the *failover delay*; four more
//! blocks give the *steady* latency under the fault; the fault is cleared and p0 is waited back.
//! Repeated `REPS` times. Run with `make bench` (`cargo bench --bench failover`); `cargo test` skips it.

mod support;

use std::time::{Duration, Instant};

use blockwatch::{
    config::Config,
    devnet::{Devnet, Fault},
};
use support::{devnet_on_demand, emitted, setup, Emitted, RunningAgent, Stats};
use tokio::sync::mpsc;

const REPS: usize = 6;
const STEADY: usize = 4;

fn config(devnet: &Devnet, dir: &std::path::Path, hedge: bool) -> Config {
    let providers: String = devnet
        .providers()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "[[chains.providers]]\nname = \"{}\"\nurl = \"{}\"\nws_url = \"{}\"\npriority = {i}\ntimeout = \"1s\"\nrate_limit = {{ requests_per_second = 1000, burst = 1000 }}\n",
                p.name,
                p.http_url(),
                p.ws_url()
            )
        })
        .collect();
    let text = format!(
        r#"[agent]
state_path = "{}"
block_output = "none"
http_listen = "127.0.0.1:0"

[telemetry]
otlp_endpoint = ""
log_level = "error"

[pool]
failover_cooldown = "1s"
retry_initial_backoff = "20ms"
retry_max_backoff = "200ms"
probe_interval = "300ms"
circuit_open_for = "1s"
hedge_percentile = {}

[[chains]]
name = "devnet"
chain_id = {}
expected_block_time = "1s"
selection = "priority"
start = "latest"
{providers}"#,
        dir.join("bench.db").display(),
        if hedge { 95 } else { 0 },
        devnet.info().chain_id,
    );
    Config::from_toml_str(&text, std::path::Path::new("bench.toml"), &|_| None).expect("config")
}

/// p50 | p95 | max of `d`, in ms.
fn row(d: &[Duration]) -> String {
    let s = Stats::of_durations(d, 1000.0);
    format!("{:.1} | {:.1} | {:.1}", s.median(), s.q(0.95), s.max())
}

/// Mines one block and returns how long the agent took to emit it, and who served it.
async fn mine_and_time(
    devnet: &Devnet,
    rx: &mut mpsc::UnboundedReceiver<Emitted>,
) -> (Duration, String) {
    while rx.try_recv().is_ok() {}
    let t0 = Instant::now();
    let n = devnet.mine(1);
    let (provider, at) = emitted(rx, n, Duration::from_secs(30)).await;
    (at.duration_since(t0), provider)
}

async fn scenario(name: &str, fault: Option<Fault>, hedge: bool) -> String {
    let devnet = devnet_on_demand(2).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = RunningAgent::spawn(config(&devnet, dir.path(), hedge));
    let rx = &mut agent.rx;
    // Warm up: latency windows filled, p0 leading.
    for _ in 0..20 {
        mine_and_time(&devnet, rx).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut first, mut steady, mut healthy) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..REPS {
        // p0 leads again before each repetition.
        loop {
            let (d, p) = mine_and_time(&devnet, rx).await;
            if p == "p0" {
                healthy.push(d);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        devnet.set_fault(0, fault.clone()).await.expect("fault");
        first.push(mine_and_time(&devnet, rx).await.0);
        for _ in 0..STEADY {
            tokio::time::sleep(Duration::from_millis(50)).await;
            steady.push(mine_and_time(&devnet, rx).await.0);
        }
        devnet.set_fault(0, None).await.expect("clear");
    }
    agent.stop().await;
    devnet.shutdown().await;
    let h = if hedge { "on" } else { "off" };
    format!(
        "| {name} | {h} | {} | {} | {} |",
        row(&healthy),
        row(&first),
        row(&steady)
    )
}

fn main() {
    let Some(rt) = setup("failover") else { return };
    let scenarios: Vec<(&str, Option<Fault>, bool)> = vec![
        ("none", None, true),
        ("down (connection refused)", Some(Fault::Down), true),
        (
            "http_error 500",
            Some(Fault::HttpError { status: 500 }),
            true,
        ),
        (
            "timeout (never answers; timeout 1s)",
            Some(Fault::Timeout),
            false,
        ),
        (
            "timeout (never answers; timeout 1s)",
            Some(Fault::Timeout),
            true,
        ),
        ("latency 800ms", Some(Fault::Latency { ms: 800 }), false),
        ("latency 800ms", Some(Fault::Latency { ms: 800 }), true),
    ];
    println!("Time from `devnet_mine` to the agent emitting the block, in ms (p50 | p95 | max);");
    println!("2 providers, priority selection, fault on the leader p0, {REPS} repetitions.");
    println!();
    println!("| fault on p0 | hedging | healthy p50 | p95 | max | first block after fault p50 | p95 | max | next {STEADY} blocks p50 | p95 | max |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (name, fault, hedge) in scenarios {
        let row = rt.block_on(scenario(name, fault, hedge));
        println!("{row}");
    }
}
