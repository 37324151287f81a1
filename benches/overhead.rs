//! What telemetry adds to one pool call: `eth_blockNumber` through the real provider pool (rate
//! limit, selection, health and latency bookkeeping) to devnet on loopback, with telemetry off (no
//! tracing subscriber, no-op instruments) and then fully on (the agent's own set-up: spans with the
//! RPC conventions, metrics, JSON logs at info, OTLP export of all three to a local gRPC receiver).
//! Off must run first: the tracing subscriber, once installed, is the process's for good.
//! Run with `make bench` (`cargo bench --bench overhead`); `cargo test` skips it.

mod support;

use std::{sync::Arc, time::Duration};

use blockwatch::{
    config::TelemetryConfig,
    pool::ProviderPool,
    telemetry::{Metrics, Telemetry},
};
use criterion::Criterion;
use support::*;

/// Median nanoseconds per iteration of a benchmark, from criterion's estimates.
fn median_ns(id: &str) -> Option<f64> {
    let dir = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| format!("{}/target", env!("CARGO_MANIFEST_DIR")));
    let path = format!("{dir}/criterion/{id}/new/estimates.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn main() {
    if !benchmarking("overhead") {
        return;
    }
    // devnet and the receiver on their own threads; the calls on a current-thread runtime.
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let devnet = servers.block_on(devnet_on_demand(1));
    devnet.mine(10);
    let receiver = servers.block_on(discard_receiver());
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = AgentConfig {
        dir: dir.path(),
        chain_id: devnet.info().chain_id,
        providers: vec![devnet_provider(&devnet, 0, false)],
        block_output: "none",
        pool: "",
        chain: "",
        // The limit is checked on every call but never waited for.
        provider: "rate_limit = { requests_per_second = 1000000, burst = 1000000 }",
    }
    .build();
    let calls = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pool = |metrics: Arc<Metrics>| {
        calls
            .block_on(ProviderPool::connect(
                &cfg.chains[0],
                &cfg.pool,
                Arc::new(Default::default()),
                metrics,
            ))
            .expect("pool")
    };
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(3))
        .measurement_time(Duration::from_secs(10))
        .configure_from_args();

    const OFF: &str = "pool call, telemetry off";
    const ON: &str = "pool call, telemetry on";
    let off = pool(Arc::new(Metrics::new(&opentelemetry::global::meter("off"))));
    c.bench_function(OFF, |b| {
        b.to_async(&calls)
            .iter(|| async { off.block_number().await.expect("call") })
    });

    // BENCH_NO_EXPORT=1: the same without OTLP (no span or log export, metrics kept for `/metrics`),
    // to tell the export's share.
    let export = std::env::var_os("BENCH_NO_EXPORT").is_none();
    let telemetry = Telemetry::init(
        &TelemetryConfig {
            otlp_endpoint: if export {
                format!("http://{receiver}")
            } else {
                String::new()
            },
            log_level: "info".into(),
            ..Default::default()
        },
        Arc::new(Default::default()),
    )
    .expect("telemetry");
    let on = pool(telemetry.handle().metrics);
    c.bench_function(ON, |b| {
        b.to_async(&calls)
            .iter(|| async { on.block_number().await.expect("call") })
    });
    c.final_summary();

    if let (Some(off_ns), Some(on_ns)) = (median_ns(OFF), median_ns(ON)) {
        println!("\nMachine: {}\n", machine());
        println!("| telemetry | median per call | added per call | ratio |");
        println!("| --- | --- | --- | --- |");
        println!("| off | {:.2} µs | | |", off_ns / 1000.0);
        let on = if export {
            "on (spans, metrics, logs, OTLP export)"
        } else {
            "on without OTLP (metrics, JSON logs; no span or log export)"
        };
        println!(
            "| {on} | {:.2} µs | {:.2} µs | {:.3} |",
            on_ns / 1000.0,
            (on_ns - off_ns) / 1000.0,
            on_ns / off_ns
        );
    } else {
        println!("(criterion's estimates not found under target/criterion)");
    }
    telemetry.shutdown(Duration::from_secs(1));
    calls.block_on(async { drop(on) });
    servers.block_on(devnet.shutdown());
}
