//! The command line: `blockwatch run`, `check-config`, `export`, `devnet` and `demo`.
//!
//! Exit codes: 0 success, 2 bad usage or invalid config, 1 runtime failure.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::{agent, config::Config, telemetry};

/// Exit code for success.
pub const EXIT_OK: i32 = 0;
/// Exit code for a runtime failure.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code for bad usage or an invalid config.
pub const EXIT_USAGE: i32 = 2;

/// Follows EVM chains through a pool of JSON-RPC providers and reports on them.
#[derive(Debug, Parser)]
#[command(name = "blockwatch", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Follow every configured chain.
    Run(ConfigArg),
    /// Validate the config and print it with secrets redacted.
    CheckConfig(ConfigArg),
    /// Run the simulated chain alone: N providers over HTTP and WebSocket, faults on command.
    Devnet(DevnetArgs),
    /// Run the devnet and the agent together, with scripted provider failures, and tell the story.
    Demo(DemoArgs),
    /// Print missed-block records from the state database as JSON or CSV.
    Export(ExportArgs),
    /// Ask a running agent how it is: its health report (exit 1 when it is unhealthy).
    Status(StatusArgs),
}

/// `blockwatch status` options.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The agent's HTTP API, e.g. http://127.0.0.1:9464 (default: `agent.http_listen` of the
    /// config, else http://127.0.0.1:9464).
    #[arg(long)]
    pub url: Option<String>,
    /// The config whose `agent.http_listen` to ask (when no --url is given).
    #[command(flatten)]
    pub config: ConfigArg,
}

/// `blockwatch export` options.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum)]
    pub format: crate::monitor::export::Format,
    /// Only this chain's records.
    #[arg(long)]
    pub chain: Option<String>,
    /// Only records of misses found at or after this time: Unix seconds or RFC 3339.
    #[arg(long, value_parser = crate::monitor::export::parse_since)]
    pub since: Option<u64>,
    /// The config whose `agent.state_path` holds the records.
    #[command(flatten)]
    pub config: ConfigArg,
}

/// `blockwatch demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop by itself after this long, e.g. "30s" (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<crate::config::HumanDuration>,
    /// Keep every provider healthy: no scripted faults.
    #[arg(long)]
    pub no_faults: bool,
    /// Address of the agent's HTTP API (`/metrics`, …).
    #[arg(long, default_value = crate::config::DEFAULT_HTTP_LISTEN)]
    pub http: std::net::SocketAddr,
}

/// `blockwatch devnet` options.
#[derive(Debug, Args)]
pub struct DevnetArgs {
    /// Control endpoint address; with a fixed port P, provider i listens on P+1+i (port 0: all
    /// ports chosen by the system).
    #[arg(long, default_value = "127.0.0.1:8545")]
    pub listen: std::net::SocketAddr,
    /// Number of providers.
    #[arg(long, default_value_t = crate::devnet::DEFAULT_PROVIDERS as u16,
          value_parser = clap::value_parser!(u16).range(1..=crate::devnet::MAX_PROVIDERS as i64))]
    pub providers: u16,
    /// Time between blocks, e.g. "1s", "200ms"; "0s" mines only on devnet_mine.
    #[arg(long, default_value = "1s")]
    pub block_time: crate::config::HumanDuration,
    /// The chain id the providers answer.
    #[arg(long, default_value_t = crate::devnet::DEFAULT_CHAIN_ID)]
    pub chain_id: u64,
    /// How blocks are hashed: "header" (keccak of the RLP header, as Ethereum) or "rollup" (the
    /// chain's own way, as zkSync Era: for `block_hash_check = "consensus"`).
    #[arg(long, default_value = "header", value_parser = parse_hashing)]
    pub hashing: crate::devnet::chain::Hashing,
}

fn parse_hashing(s: &str) -> Result<crate::devnet::chain::Hashing, String> {
    match s {
        "header" => Ok(crate::devnet::chain::Hashing::Header),
        "rollup" => Ok(crate::devnet::chain::Hashing::Rollup),
        other => Err(format!("{other:?}: expected \"header\" or \"rollup\"")),
    }
}

/// `--config FILE`.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Config file (default: $BLOCKWATCH_CONFIG, else ./blockwatch.toml).
    #[arg(
        long,
        short = 'c',
        env = "BLOCKWATCH_CONFIG",
        default_value = "blockwatch.toml"
    )]
    pub config: PathBuf,
}

/// Parses the arguments, runs the command and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    match cli.command {
        Command::CheckConfig(args) => match Config::load(&args.config) {
            Ok(config) => {
                print!("{}", config.to_redacted_toml());
                eprintln!("config {} is valid", args.config.display());
                EXIT_OK
            }
            Err(e) => {
                eprintln!("error: {e}");
                EXIT_USAGE
            }
        },
        Command::Devnet(args) => run_devnet(args),
        Command::Export(args) => run_export(args),
        Command::Status(args) => run_status(args),
        Command::Demo(args) => run_demo(args),
        Command::Run(args) => {
            let config = match Config::load(&args.config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return EXIT_USAGE;
                }
            };
            run_agent(config)
        }
    }
}

/// `blockwatch export`: reads the state database the config names; never creates one.
fn run_export(args: ExportArgs) -> i32 {
    use crate::monitor::export::{render, MAX_RECORDS};
    let config = match Config::load(&args.config.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    if let Some(chain) = &args.chain {
        if !config.chains.iter().any(|c| &c.name == chain) {
            eprintln!(
                "error: --chain {chain:?}: no such chain in {}",
                args.config.config.display()
            );
            return EXIT_USAGE;
        }
    }
    let store = if config.cluster.shared() {
        // The shared database: read by this process alone, as an instance of its own.
        crate::store::PgStore::connect_blocking(
            &config.cluster.url,
            &format!("export-{}", std::process::id()),
            config.cluster.lease_ttl.0,
        )
        .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn crate::store::StateStore>)
    } else {
        let path = &config.agent.state_path;
        if !path.exists() {
            eprintln!(
                "error: no state database at {} (agent.state_path): nothing was recorded yet",
                path.display()
            );
            return EXIT_FAILURE;
        }
        crate::store::open(path)
    };
    let records =
        store.and_then(|store| store.missed(args.chain.as_deref(), args.since, MAX_RECORDS));
    match records
        .map_err(|e| e.to_string())
        .and_then(|r| render(&r, args.format).map_err(|e| e.to_string()))
    {
        Ok(text) => {
            use std::io::Write;
            match std::io::stdout().write_all(text.as_bytes()) {
                Ok(()) => EXIT_OK,
                Err(e) => {
                    eprintln!("error: cannot write the export: {e}");
                    EXIT_FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILURE
        }
    }
}

/// `blockwatch status`: prints the agent's `/report`; exit 0 healthy or degraded, 1 unhealthy or
/// unreachable, 2 bad usage.
fn run_status(args: StatusArgs) -> i32 {
    let base = match args.url {
        Some(u) => u,
        None if args.config.config.exists() => match Config::load(&args.config.config) {
            Ok(c) => {
                let mut addr = c.agent.http_listen;
                if addr.port() == 0 {
                    eprintln!(
                        "error: agent.http_listen in {} has port 0 (chosen at start, see the agent's log): pass --url",
                        args.config.config.display()
                    );
                    return EXIT_USAGE;
                }
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{addr}")
            }
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        },
        None => format!("http://{}", crate::config::DEFAULT_HTTP_LISTEN),
    };
    let base = base.trim_end_matches('/').to_owned();
    if !url::Url::parse(&base).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
        eprintln!("error: --url {base:?} is not an http(s) URL");
        return EXIT_USAGE;
    }
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let client = match reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: cannot set up the HTTP client: {e}");
                return EXIT_FAILURE;
            }
        };
        let get = |path: &str| client.get(format!("{base}{path}")).send();
        let report = match get("/report").await {
            Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
            Ok(r) => {
                eprintln!("error: {base}/report answered {}", r.status());
                return EXIT_FAILURE;
            }
            Err(e) => {
                eprintln!(
                    "error: no agent answers at {base} ({}): is it running, and is this its agent.http_listen?",
                    if e.is_timeout() { "timed out" } else { "cannot connect" }
                );
                return EXIT_FAILURE;
            }
        };
        print!("{report}");
        match get("/health").await {
            Ok(r) if r.status().is_success() => EXIT_OK,
            _ => EXIT_FAILURE,
        }
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, i32> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            EXIT_FAILURE
        })
}

/// How long exporters get to flush at exit. With the agent's own 3 s drain, 0.4 s output sync and
/// 0.3 s runtime stop, a stop stays under the promised 5 s.
const TELEMETRY_FLUSH: std::time::Duration = std::time::Duration::from_millis(800);

fn start_telemetry(
    cfg: &crate::config::TelemetryConfig,
    redactor: crate::redact::Redactor,
) -> Result<telemetry::Telemetry, i32> {
    telemetry::Telemetry::init(cfg, std::sync::Arc::new(redactor)).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })
}

fn run_demo(args: DemoArgs) -> i32 {
    let options = crate::demo::DemoOptions {
        duration: args.duration.map(|d| d.0),
        faults: !args.no_faults,
        http: args.http,
    };
    with_telemetry(
        &crate::demo::telemetry_config(),
        Default::default(),
        |handle, signal| async move {
            crate::demo::run(options, handle, signal)
                .await
                .map_err(|e| (e.to_string(), EXIT_FAILURE))
        },
    )
}

/// Runs `job` on a fresh runtime with telemetry set up and the stop signals installed, then stops
/// the runtime and flushes telemetry within the promised 5 s; returns the exit code.
fn with_telemetry<F, Fut>(
    cfg: &crate::config::TelemetryConfig,
    redactor: crate::redact::Redactor,
    job: F,
) -> i32
where
    F: FnOnce(
        telemetry::TelemetryHandle,
        std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Fut,
    Fut: std::future::Future<Output = Result<(), (String, i32)>>,
{
    let telemetry = match start_telemetry(cfg, redactor) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let handle = telemetry.handle();
    let result = runtime.block_on(async {
        match shutdown_signal() {
            Ok(signal) => job(handle, Box::pin(signal)).await,
            Err(e) => Err((format!("cannot install signal handlers: {e}"), EXIT_FAILURE)),
        }
    });
    // Anything still blocked (a stuck write) must not hold the exit past the deadline.
    runtime.shutdown_timeout(std::time::Duration::from_millis(300));
    let code = match result {
        Ok(()) => EXIT_OK,
        Err((message, code)) => {
            tracing::error!(error = %message, "blockwatch stopped");
            eprintln!("error: {message}");
            code
        }
    };
    telemetry.shutdown(TELEMETRY_FLUSH);
    code
}

fn run_devnet(args: DevnetArgs) -> i32 {
    use std::io::Write;
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let cfg = crate::devnet::DevnetConfig {
        listen: args.listen,
        providers: usize::from(args.providers),
        block_time: args.block_time.0,
        chain_id: args.chain_id,
        hashing: args.hashing,
        ..Default::default()
    };
    runtime.block_on(async {
        let signal = match shutdown_signal() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot install signal handlers: {e}");
                return EXIT_FAILURE;
            }
        };
        let devnet = match crate::devnet::Devnet::start(cfg).await {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_FAILURE;
            }
        };
        let line = serde_json::to_string(&devnet.info()).unwrap_or_default();
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return EXIT_FAILURE;
        }
        drop(out);
        signal.await;
        devnet.shutdown().await;
        EXIT_OK
    })
}

fn run_agent(config: Config) -> i32 {
    let (cfg, redactor) = (config.telemetry.clone(), config.redactor());
    with_telemetry(&cfg, redactor, |handle, signal| async move {
        agent::run(config, handle, signal)
            .await
            .map_err(|e| (e.to_string(), e.exit_code()))
    })
}

/// Installs the SIGINT and SIGTERM handlers at once (so that a signal during start-up is a clean
/// stop, not the default kill) and returns a future that completes on either.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
