//! `blockwatch demo`: the devnet and the agent in one process, with a scripted scenario of provider
//! failures playing on a loop, told as it happens in plain words on stdout.
//!
//! The agent runs exactly as `blockwatch run` would, against the devnet's three providers; the demo
//! only adds an observer that narrates the stream and a task that injects faults.

use std::{
    io::Write,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use crate::{
    agent,
    config::{
        AgentConfig, BlockOutputTarget, ChainConfig, Config, HumanDuration, LogFormat, PoolConfig,
        ProviderConfig, RateLimitConfig, Selection, StartAt, TelemetryConfig,
    },
    devnet::{Devnet, DevnetConfig, Fault},
    model::StreamEvent,
    model::StreamObserver,
};

/// The chain id of the demo's devnet.
const DEMO_CHAIN_ID: u64 = 1337;
/// The demo's block time.
const DEMO_BLOCK_TIME: Duration = Duration::from_secs(1);

/// What `blockwatch demo` was asked for.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Stop after this long (runs until a signal otherwise).
    pub duration: Option<Duration>,
    /// Play the fault scenario (off: a healthy devnet only).
    pub faults: bool,
    /// Where the agent's HTTP API listens.
    pub http: std::net::SocketAddr,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The devnet could not start.
    #[error(transparent)]
    Devnet(#[from] crate::devnet::DevnetError),
    /// The agent failed.
    #[error(transparent)]
    Agent(#[from] agent::AgentError),
    /// The scratch state directory could not be made.
    #[error("cannot create the demo's state directory {path}: {source}")]
    State {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Prints a line of the story, with the time since the demo started.
struct Narrator {
    started: Instant,
}

impl Narrator {
    fn say(&self, text: impl AsRef<str>) {
        let t = self.started.elapsed().as_secs();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "[{:02}:{:02}] {}", t / 60, t % 60, text.as_ref());
        let _ = out.flush();
    }
}

/// Tallies and narrates the block stream.
struct StreamTeller {
    narrator: Arc<Narrator>,
    state: Mutex<Tally>,
}

#[derive(Default)]
struct Tally {
    last_provider: Option<String>,
    blocks: u64,
    reorgs: u64,
    switches: u64,
    per_provider: std::collections::BTreeMap<String, u64>,
}

impl StreamObserver for StreamTeller {
    fn on_events(&self, events: &[StreamEvent]) {
        let mut t = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for e in events {
            match e {
                StreamEvent::Block(b) => {
                    t.blocks += 1;
                    *t.per_provider.entry(b.provider.clone()).or_default() += 1;
                    if let Some(prev) = t.last_provider.as_ref().filter(|p| **p != b.provider) {
                        self.narrator
                            .say(format!("  ↪ agent switched from {prev} to {}", b.provider));
                        t.switches += 1;
                    }
                    t.last_provider = Some(b.provider.clone());
                    self.narrator.say(format!(
                        "block {:>5} {}… from {} ({} txs, {} ms after its timestamp)",
                        b.block_number,
                        &b.hash.to_string()[..10],
                        b.provider,
                        b.transactions,
                        b.lag_ms
                    ));
                }
                StreamEvent::Reorg(r) => {
                    t.reorgs += 1;
                    self.narrator.say(format!(
                        "  ⤺ reorg seen: {} block(s) replaced above common ancestor {}; re-emitting the new branch",
                        r.depth, r.common_ancestor
                    ));
                }
                StreamEvent::Error(x) => {
                    self.narrator.say(format!("  ✗ {}: {}", x.kind, x.message))
                }
            }
        }
    }
}

/// One step of the scenario.
struct Step {
    after: Duration,
    say: &'static str,
    act: Action,
}

enum Action {
    Fault(usize, Option<Fault>),
    Reorg(u64),
    Skip(usize),
}

fn scenario() -> Vec<Step> {
    let s = Duration::from_secs;
    vec![
        Step {
            after: s(4),
            say: "p0 goes down (connection refused)",
            act: Action::Fault(0, Some(Fault::Down)),
        },
        Step {
            after: s(6),
            say: "p0 is back up",
            act: Action::Fault(0, None),
        },
        Step {
            after: s(4),
            say: "p0 becomes slow: 800 ms per answer, above the agent's 500 ms timeout",
            act: Action::Fault(0, Some(Fault::Latency { ms: 800 })),
        },
        Step {
            after: s(6),
            say: "p0 is fast again",
            act: Action::Fault(0, None),
        },
        Step {
            after: s(4),
            say: "p0 starts rate limiting (HTTP 429, Retry-After: 2)",
            act: Action::Fault(0, Some(Fault::RateLimit { retry_after_s: 2 })),
        },
        Step {
            after: s(6),
            say: "p0 stops rate limiting",
            act: Action::Fault(0, None),
        },
        Step {
            after: s(4),
            say: "the chain reorganises: the last 2 blocks are replaced by a competing branch",
            act: Action::Reorg(2),
        },
        Step {
            after: s(4),
            say: "p0 will never serve the next block",
            act: Action::Skip(0),
        },
        Step {
            after: s(4),
            say: "p2 lies about its head: it claims 1,000 blocks more than it has",
            act: Action::Fault(2, Some(Fault::HeadOffset { blocks: 1000 })),
        },
        Step {
            after: s(6),
            say: "p2 tells the truth again",
            act: Action::Fault(2, None),
        },
    ]
}

/// Runs the demo until `options.duration` passes or `shutdown` completes.
pub async fn run(
    options: DemoOptions,
    telemetry: crate::telemetry::TelemetryHandle,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DemoError> {
    let narrator = Arc::new(Narrator {
        started: Instant::now(),
    });
    // A wildcard listener is reached on loopback from this machine.
    let mut page = options.http;
    if page.ip().is_unspecified() {
        page.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    narrator.say(format!(
        "status page: http://{page}/ (open it in a browser: it updates live; the API is there too: /health, /status, /report, /slow, /metrics)"
    ));
    let devnet = Devnet::start(DevnetConfig {
        providers: 3,
        block_time: DEMO_BLOCK_TIME,
        chain_id: DEMO_CHAIN_ID,
        ..Default::default()
    })
    .await?;
    let dir = std::env::temp_dir().join(format!("blockwatch-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| DemoError::State {
        path: dir.clone(),
        source,
    })?;
    narrator.say(format!(
        "devnet up: chain id {DEMO_CHAIN_ID}, a block every second, providers {}",
        devnet
            .providers()
            .iter()
            .map(|p| format!("{} at {}", p.name, p.http_url()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    narrator.say(format!(
        "control endpoint: {} (try devnet_status)",
        devnet.info().control
    ));
    let config = demo_config(&devnet, &dir, options.http);
    let teller = Arc::new(StreamTeller {
        narrator: narrator.clone(),
        state: Mutex::new(Tally::default()),
    });

    let stop = CancellationToken::new();
    let scenario_task = options.faults.then(|| {
        let (devnet, narrator, stop) = (devnet.clone(), narrator.clone(), stop.clone());
        tokio::spawn(async move { play(devnet, narrator, stop).await })
    });
    let deadline = options.duration;
    let stop_signal = stop.clone();
    let agent_stop = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        stop_signal.cancel();
    };
    let result =
        agent::run_with_observers(config, telemetry, vec![teller.clone()], agent_stop).await;
    stop.cancel();
    if let Some(t) = scenario_task {
        let _ = t.await;
    }
    devnet.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    let t = teller.state.lock().unwrap_or_else(|p| p.into_inner());
    narrator.say(format!(
        "done: {} blocks emitted in order, {} reorg(s) followed, {} provider switch(es); blocks per provider: {}",
        t.blocks,
        t.reorgs,
        t.switches,
        t.per_provider.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
    ));
    result.map_err(DemoError::from)
}

async fn play(devnet: Arc<Devnet>, narrator: Arc<Narrator>, stop: CancellationToken) {
    loop {
        for step in scenario() {
            tokio::select! {
                _ = stop.cancelled() => {
                    let _ = devnet.set_fault(0, None).await;
                    return;
                }
                _ = tokio::time::sleep(step.after) => {}
            }
            narrator.say(format!("▶ {}", step.say));
            match step.act {
                Action::Fault(p, f) => {
                    if let Err(e) = devnet.set_fault(p, f).await {
                        narrator.say(format!("  (devnet could not do that: {e})"));
                    }
                }
                Action::Reorg(depth) => {
                    devnet.reorg(depth);
                }
                Action::Skip(p) => {
                    if let Ok(n) = devnet.skip_next_block(p) {
                        narrator.say(format!(
                            "  (that is block {n}; the agent must get it from p1 or p2)"
                        ));
                    }
                }
            }
        }
    }
}

/// The demo's telemetry settings: readable errors only on stderr (the story is on stdout), and OTLP
/// export only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
pub fn telemetry_config() -> TelemetryConfig {
    TelemetryConfig {
        log_format: LogFormat::Pretty,
        log_level: "error".to_owned(),
        otlp_endpoint: String::new(),
        ..TelemetryConfig::default()
    }
}

fn demo_config(devnet: &Devnet, dir: &std::path::Path, http: std::net::SocketAddr) -> Config {
    let providers = devnet
        .providers()
        .iter()
        .enumerate()
        .map(|(i, p)| ProviderConfig {
            name: p.name.clone(),
            url: p.http_url(),
            ws_url: Some(p.ws_url()),
            public_url: false,
            priority: i as u32,
            timeout: HumanDuration::from_millis(500),
            rate_limit: RateLimitConfig::default(),
            headers: Default::default(),
            max_batch_size: crate::config::DEFAULT_MAX_BATCH_SIZE,
        })
        .collect();
    Config {
        agent: AgentConfig {
            state_path: dir.join("demo.db"),
            http_listen: http,
            block_output: BlockOutputTarget::None,
            ..AgentConfig::default()
        },
        telemetry: telemetry_config(),
        pool: PoolConfig {
            failover_cooldown: HumanDuration::from_secs(2),
            chain_check_interval: HumanDuration::from_secs(5),
            retry_initial_backoff: HumanDuration::from_millis(100),
            retry_max_backoff: HumanDuration::from_secs(1),
            probe_interval: HumanDuration::from_secs(2),
            score_window: HumanDuration::from_secs(10),
            switch_hold: HumanDuration::from_secs(2),
            circuit_open_for: HumanDuration::from_secs(3),
            ..PoolConfig::default()
        },
        chains: vec![ChainConfig {
            name: "devnet".to_owned(),
            chain_id: DEMO_CHAIN_ID,
            expected_block_time: HumanDuration(DEMO_BLOCK_TIME),
            max_block_delay: HumanDuration::from_secs(10),
            reorg_window: 16,
            start: StartAt::Latest,
            selection: Selection::Priority,
            poll_interval: None,
            genesis_hash: None,
            block_hash_check: Default::default(),
            providers,
        }],
        // Alerts on the console as the scenario's faults come and go.
        alerts: crate::config::AlertsConfig {
            no_new_block_after: HumanDuration::from_secs(10),
            throttle: HumanDuration::from_secs(60),
            channels: vec![crate::config::ChannelConfig {
                kind: crate::config::ChannelKind::Console,
                min_severity: crate::config::Tier::Warning,
                url: None,
                headers: Default::default(),
                path: None,
                smtp_url: None,
                smtp_ca_file: None,
                from: None,
                to: Vec::new(),
            }],
            ..Default::default()
        },
        monitor: crate::config::MonitorConfig {
            // Blocks come every second: recovery attempts keep that pace.
            retry_delay: HumanDuration::from_secs(1),
            ..Default::default()
        },
        missed_block_log: crate::config::MissedBlockLogConfig {
            path: dir.join("missed_blocks.jsonl"),
            ..Default::default()
        },
        cluster: Default::default(),
        secrets: Vec::new(),
    }
}
