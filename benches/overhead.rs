//! What telemetry adds to one pool call: `eth_blockNumber` through the real provider pool (rate
//! limit, selection, health and latency bookkeeping) to devnet on loopback, with telemetry off (no
//! tracing subscriber, no-op instruments) and then fully on (the agent's own set-up: spans with the
//! RPC conventions, metrics, JSON logs at info, OTLP export of all three to a local gRPC receiver),
//! once with the default `telemetry.routine_call_share` (routine calls' spans mostly left out) and
//! once exporting every call's spans. Off must run first: the tracing subscriber, once installed,
//! is the process's for good. For each configuration the CPU time of the process's threads is read
//! from `/proc` before and after, per group (the calling thread, the telemetry export threads, the
//! rest: devnet and the receiver), and divided by the requests devnet served.
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

/// CPU seconds of this process's threads so far, by group: (calling thread, export threads, rest).
fn thread_cpu() -> (f64, f64, f64) {
    let ticks = clock_ticks();
    let me = std::process::id();
    let mut groups = (0.0, 0.0, 0.0);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{me}/task")) else {
        return groups;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let (Ok(stat), Ok(comm)) = (
            std::fs::read_to_string(path.join("stat")),
            std::fs::read_to_string(path.join("comm")),
        ) else {
            continue;
        };
        // After the ")" that closes the name: state is field 3, utime 14 and stime 15.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let cpu = f
            .get(11)
            .zip(f.get(12))
            .and_then(|(u, s)| Some(u.parse::<f64>().ok()? + s.parse::<f64>().ok()?))
            .unwrap_or(0.0)
            / ticks;
        let tid: u32 = task.file_name().to_string_lossy().parse().unwrap_or(0);
        let comm = comm.trim();
        if tid == me {
            groups.0 += cpu;
        } else if comm.starts_with("otel") || comm.starts_with("OpenTelemetry") {
            groups.1 += cpu;
        } else {
            groups.2 += cpu;
        }
    }
    groups
}

/// CPU per request, in µs, by thread group, over one configuration's run.
struct CpuPerCall {
    calling: f64,
    export: f64,
    rest: f64,
}

/// Runs `f` and returns the CPU its run took per request devnet served.
fn cpu_per_call(devnet: &blockwatch::devnet::Devnet, f: impl FnOnce()) -> CpuPerCall {
    let (requests, before) = (devnet.providers()[0].requests(), thread_cpu());
    f();
    let (requests, after) = (devnet.providers()[0].requests() - requests, thread_cpu());
    let per = |a: f64, b: f64| (a - b) * 1e6 / requests.max(1) as f64;
    CpuPerCall {
        calling: per(after.0, before.0),
        export: per(after.1, before.1),
        rest: per(after.2, before.2),
    }
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
    const SAMPLED: &str = "pool call, telemetry on";
    const ALL: &str = "pool call, telemetry on, every span exported";
    let off = pool(Arc::new(Metrics::new(&opentelemetry::global::meter("off"))));
    let cpu_off = cpu_per_call(&devnet, || {
        c.bench_function(OFF, |b| {
            b.to_async(&calls)
                .iter(|| async { off.block_number().await.expect("call") })
        });
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
    let cpu_sampled = cpu_per_call(&devnet, || {
        c.bench_function(SAMPLED, |b| {
            b.to_async(&calls)
                .iter(|| async { on.block_number().await.expect("call") })
        });
    });
    let dropped = blockwatch::telemetry::sampling::dropped();
    blockwatch::telemetry::sampling::set_routine_share(1.0);
    let cpu_all = cpu_per_call(&devnet, || {
        c.bench_function(ALL, |b| {
            b.to_async(&calls)
                .iter(|| async { on.block_number().await.expect("call") })
        });
    });
    c.final_summary();

    println!("\nMachine: {}\n", machine());
    let default_share = TelemetryConfig::default().routine_call_share;
    let rows = [
        (OFF, "off".to_owned(), &cpu_off),
        (
            SAMPLED,
            if export {
                format!(
                    "on, default: routine call spans of {:.0} % of traces exported",
                    default_share * 100.0
                )
            } else {
                "on without OTLP (metrics, JSON logs; no span or log export)".to_owned()
            },
            &cpu_sampled,
        ),
        (
            ALL,
            if export {
                "on, every call's spans exported (`routine_call_share = 1`)".to_owned()
            } else {
                "on without OTLP, share 1 (nothing exported either way)".to_owned()
            },
            &cpu_all,
        ),
    ];
    let Some(off_ns) = median_ns(OFF) else {
        println!("(criterion's estimates not found under target/criterion)");
        return;
    };
    println!("| telemetry | median per call | added per call | ratio | CPU per call: calling thread | export threads | devnet and receiver |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (id, label, cpu) in rows {
        let Some(ns) = median_ns(id) else { continue };
        let added = if id == OFF {
            String::new()
        } else {
            format!("{:.2} µs", (ns - off_ns) / 1000.0)
        };
        println!(
            "| {label} | {:.2} µs | {added} | {:.3} | {:.1} µs | {:.1} µs | {:.1} µs |",
            ns / 1000.0,
            ns / off_ns,
            cpu.calling,
            cpu.export,
            cpu.rest
        );
    }
    println!(
        "\nCall spans sampled out in the default run: {dropped} (`blockwatch_spans_sampled_out_total`)."
    );
    telemetry.shutdown(Duration::from_secs(1));
    calls.block_on(async { drop(on) });
    servers.block_on(devnet.shutdown());
}
