//! What the benchmarks share: an observer that timestamps emitted blocks, the agent's config,
//! summary statistics, the agent binary as a process with its CPU and memory from `/proc`, and a
//! PostgreSQL server (the tests' own harness). Each benchmark includes it with `mod support;` and
//! uses part of it.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::{
    io::{Read, Seek, SeekFrom},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A real PostgreSQL in a temporary directory, run as an unprivileged user: the tests' harness.
#[path = "../../tests/common/postgres.rs"]
pub mod postgres;
#[path = "../../tests/common/process.rs"]
mod process;

use blockwatch::{
    config::Config,
    model::{StreamEvent, StreamObserver},
};
use tokio::sync::mpsc;

/// (block number, provider that served it, when it was emitted).
pub type Emitted = (u64, String, Instant);

/// Sends every emitted block (or only the blocks in `only`) with the moment it was emitted.
pub struct Timer {
    pub tx: mpsc::UnboundedSender<Emitted>,
    /// Only these blocks, when given: a benchmark that times a run by its first and last block
    /// does not pay a channel send and a wake-up for every block in between.
    pub only: Option<Vec<u64>>,
}

impl StreamObserver for Timer {
    fn on_events(&self, events: &[StreamEvent]) {
        for e in events {
            if let StreamEvent::Block(b) = e {
                if self
                    .only
                    .as_ref()
                    .is_some_and(|o| !o.contains(&b.block_number))
                {
                    continue;
                }
                let _ = self
                    .tx
                    .send((b.block_number, b.provider.clone(), Instant::now()));
            }
        }
    }
}

/// Waits for the agent to emit block `number` (or a later one), within `within`.
pub async fn emitted(
    rx: &mut mpsc::UnboundedReceiver<Emitted>,
    number: u64,
    within: Duration,
) -> (String, Instant) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (n, provider, at) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("block {number} not emitted within {within:?}"))
            .expect("agent running");
        if n >= number {
            return (provider, at);
        }
    }
}

/// A provider of the benchmarked chain.
pub struct Provider {
    pub name: String,
    pub url: String,
    pub ws_url: Option<String>,
}

/// The agent's config for one chain: `pool`, `chain` and `provider` are extra TOML lines for
/// `[pool]`, `[[chains]]` and every `[[chains.providers]]`.
pub struct AgentConfig<'a> {
    pub dir: &'a std::path::Path,
    pub chain_id: u64,
    pub providers: Vec<Provider>,
    pub block_output: &'a str,
    pub pool: &'a str,
    pub chain: &'a str,
    pub provider: &'a str,
}

impl AgentConfig<'_> {
    pub fn build(&self) -> Config {
        let providers: String = self
            .providers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let ws = p
                    .ws_url
                    .as_ref()
                    .map(|w| format!("ws_url = \"{w}\"\n"))
                    .unwrap_or_default();
                format!(
                    "[[chains.providers]]\nname = \"{}\"\nurl = \"{}\"\n{ws}priority = {i}\n{}\n",
                    p.name, p.url, self.provider
                )
            })
            .collect();
        let text = format!(
            "[agent]\nstate_path = \"{}\"\nblock_output = \"{}\"\nhttp_listen = \"127.0.0.1:0\"\n\n\
             [telemetry]\notlp_endpoint = \"\"\nlog_level = \"error\"\n\n\
             [missed_block_log]\npath = \"\"\n\n\
             [pool]\n{}\n\n\
             [[chains]]\nname = \"bench\"\nchain_id = {}\n{}\n{providers}",
            self.dir.join("bench.db").display(),
            self.block_output,
            self.pool,
            self.chain_id,
            self.chain,
        );
        Config::from_toml_str(&text, std::path::Path::new("bench.toml"), &|_| None)
            .unwrap_or_else(|e| panic!("bench config: {e}\n{text}"))
    }
}

/// Order statistics of a sample.
pub struct Stats(pub Vec<f64>);

impl Stats {
    pub fn of_durations(d: &[Duration], unit: f64) -> Stats {
        Stats(d.iter().map(|d| d.as_secs_f64() * unit).collect())
    }

    /// The `q` quantile (nearest rank).
    pub fn q(&self, q: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v[((v.len() - 1) as f64 * q).round() as usize]
    }

    pub fn median(&self) -> f64 {
        self.q(0.5)
    }

    pub fn min(&self) -> f64 {
        self.q(0.0)
    }

    pub fn max(&self) -> f64 {
        self.q(1.0)
    }
}

/// Whether cargo ran the binary as a benchmark (`cargo test --all-targets` runs it without `--bench`).
pub fn benchmarking(name: &str) -> bool {
    let yes = std::env::args().any(|a| a == "--bench");
    if !yes {
        eprintln!("{name}: run with `cargo bench --bench {name}` (skipped under cargo test)");
    }
    yes
}

/// The telemetry of in-process agents: no export, errors only on stderr (set up by [`setup`]).
static TELEMETRY: std::sync::OnceLock<blockwatch::telemetry::Telemetry> =
    std::sync::OnceLock::new();

/// Sets up a benchmark that cargo ran as one: telemetry for in-process agents and a runtime with
/// two workers. `None` (after saying how to run it) when `cargo test` ran it.
pub fn setup(name: &str) -> Option<tokio::runtime::Runtime> {
    if !benchmarking(name) {
        return None;
    }
    TELEMETRY.get_or_init(|| {
        let cfg = blockwatch::config::TelemetryConfig {
            otlp_endpoint: String::new(),
            log_level: "error".into(),
            ..Default::default()
        };
        blockwatch::telemetry::Telemetry::init(&cfg, std::sync::Arc::new(Default::default()))
            .expect("telemetry")
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    Some(rt)
}

/// The machine, for the record: CPU model and count, memory.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cpu}, {cores} cores, {mem_gib:.0} GiB")
}

/// devnet in this process, mining only when told to (`Devnet::mine`).
pub async fn devnet_on_demand(providers: usize) -> std::sync::Arc<blockwatch::devnet::Devnet> {
    blockwatch::devnet::Devnet::start(blockwatch::devnet::DevnetConfig {
        providers,
        block_time: Duration::ZERO,
        ..Default::default()
    })
    .await
    .expect("devnet")
}

/// devnet's provider `i` as the agent's `p{i}`, with its `newHeads` when `ws`.
pub fn devnet_provider(devnet: &blockwatch::devnet::Devnet, i: usize, ws: bool) -> Provider {
    let p = &devnet.providers()[i];
    Provider {
        name: format!("p{i}"),
        url: p.http_url(),
        ws_url: ws.then(|| p.ws_url()),
    }
}

/// The agent running in this process, its emitted blocks timed into `rx`.
pub struct RunningAgent {
    pub rx: mpsc::UnboundedReceiver<Emitted>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), blockwatch::agent::AgentError>>,
}

impl RunningAgent {
    pub fn spawn(cfg: Config) -> RunningAgent {
        Self::spawn_timing(cfg, None)
    }

    /// [`Self::spawn`], timing only the blocks in `only` (every block when `None`).
    pub fn spawn_timing(cfg: Config, only: Option<Vec<u64>>) -> RunningAgent {
        let telemetry = TELEMETRY.get().expect("support::setup first").handle();
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = tokio_util::sync::CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(blockwatch::agent::run_with_observers(
            cfg,
            telemetry,
            vec![std::sync::Arc::new(Timer { tx, only })],
            async move { s.cancelled().await },
        ));
        RunningAgent { rx, stop, task }
    }

    /// Stops the agent; it must have run without error.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("agent task").expect("agent run");
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// What `/proc` says about a process.
pub struct Sample {
    pub rss_kib: u64,
    pub peak_kib: u64,
    pub cpu_secs: f64,
}

fn status_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces) in
/// parentheses: `[0]` is the state, `[1]` the parent's pid, `[11]` and `[12]` utime and stime,
/// `[13]` and `[14]` those of the children waited for (all in clock ticks).
pub fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // The state is a letter: 0 in its place keeps the indices.
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// Memory and CPU time (`utime + stime`) of process `pid`; `None` once it has exited.
pub fn sample(pid: u32, ticks_per_sec: f64) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let fields = stat_fields(pid)?;
    let ticks = fields.get(11)? + fields.get(12)?;
    Some(Sample {
        rss_kib: status_kib(&status, "VmRSS:"),
        peak_kib: status_kib(&status, "VmHWM:"),
        cpu_secs: ticks as f64 / ticks_per_sec,
    })
}

/// Clock ticks per second (`getconf CLK_TCK`), the unit of `/proc`'s CPU times.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Counts the lines appended to a file since the last call.
#[derive(Default)]
pub struct LineCounter {
    offset: u64,
    pub lines: u64,
}

impl LineCounter {
    pub fn update(&mut self, path: &Path) -> u64 {
        if let Ok(mut f) = std::fs::File::open(path) {
            if f.seek(SeekFrom::Start(self.offset)).is_ok() {
                let mut buf = Vec::new();
                if f.read_to_end(&mut buf).is_ok() {
                    self.offset += buf.len() as u64;
                    self.lines += buf.iter().filter(|&&b| b == b'\n').count() as u64;
                }
            }
        }
        self.lines
    }
}

/// `blockwatch run --config blockwatch.toml` (the release binary) in `dir`, its stderr appended
/// to `dir/agent.log`; killed (SIGKILL) when dropped.
pub struct AgentProcess(pub Child);

impl AgentProcess {
    /// Writes `config` to `dir/blockwatch.toml` and starts the agent on it.
    pub fn start(dir: &Path, config: &str) -> AgentProcess {
        let path = dir.join("blockwatch.toml");
        std::fs::write(&path, config).expect("config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("agent.log"))
            .expect("log");
        AgentProcess(
            Command::new(
                // Another build of the agent, to compare two builds back to back.
                std::env::var("BENCH_AGENT_BIN")
                    .unwrap_or_else(|_| env!("CARGO_BIN_EXE_blockwatch").to_owned()),
            )
            .args(["run", "--config"])
            .arg(&path)
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the agent"),
        )
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

mod otlp {
    use opentelemetry_proto::tonic::collector::{
        logs::v1::{
            logs_service_server::{LogsService, LogsServiceServer},
            ExportLogsServiceRequest, ExportLogsServiceResponse,
        },
        metrics::v1::{
            metrics_service_server::{MetricsService, MetricsServiceServer},
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        },
        trace::v1::{
            trace_service_server::{TraceService, TraceServiceServer},
            ExportTraceServiceRequest, ExportTraceServiceResponse,
        },
    };
    use tonic::{Request, Response, Status};

    /// An OTLP/gRPC receiver that accepts everything and keeps nothing.
    #[derive(Clone, Copy)]
    struct Discard;

    #[tonic::async_trait]
    impl TraceService for Discard {
        async fn export(
            &self,
            _: Request<ExportTraceServiceRequest>,
        ) -> Result<Response<ExportTraceServiceResponse>, Status> {
            Ok(Response::new(Default::default()))
        }
    }

    #[tonic::async_trait]
    impl MetricsService for Discard {
        async fn export(
            &self,
            _: Request<ExportMetricsServiceRequest>,
        ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
            Ok(Response::new(Default::default()))
        }
    }

    #[tonic::async_trait]
    impl LogsService for Discard {
        async fn export(
            &self,
            _: Request<ExportLogsServiceRequest>,
        ) -> Result<Response<ExportLogsServiceResponse>, Status> {
            Ok(Response::new(Default::default()))
        }
    }

    /// Starts an OTLP/gRPC receiver on a loopback port (on the current runtime) that accepts every
    /// export and keeps nothing; returns its address.
    pub async fn discard_receiver() -> std::net::SocketAddr {
        let incoming =
            tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = incoming.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Discard))
                .add_service(MetricsServiceServer::new(Discard))
                .add_service(LogsServiceServer::new(Discard))
                .serve_with_incoming(incoming),
        );
        addr
    }
}

pub use otlp::discard_receiver;
