//! The agent's configuration: TOML with `${ENV}` and `${file:PATH}` expansion, human durations and
//! sizes, unknown keys rejected, and every invalid value reported with the key it came from.
//!
//! Loading happens in three steps: the file is parsed as plain TOML, `${NAME}` references in string
//! values are expanded from the environment and `${file:PATH}` references from files (the expanded
//! values of secret-bearing keys and every file's content are collected for the [`Redactor`]), and
//! the result is deserialized into [`Config`] and checked by [`Config::validate`]. Every default
//! lives in a `DEFAULT_*` constant below.

pub mod alerts;
mod env;
pub mod units;

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    path::{Path, PathBuf},
};

pub use alerts::{AlertsConfig, ChannelConfig, ChannelKind, Tier};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
pub use units::{ByteSize, HumanDuration};

use crate::redact::{Redactor, REDACTED};

/// Default SQLite state file.
pub const DEFAULT_STATE_PATH: &str = "blockwatch.db";
/// Default block output.
pub const DEFAULT_BLOCK_OUTPUT: &str = "stdout";
/// Default address of the HTTP API (`/metrics`, …).
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9464";
/// Default cap on the HTTP API's open connections.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 256;
/// Largest accepted `agent.http_max_connections`.
pub const MAX_HTTP_MAX_CONNECTIONS: usize = 65_536;
/// Default time an HTTP API client has to send a whole request head (also the longest idle wait
/// between two requests on a kept-alive connection).
pub const DEFAULT_HTTP_HEADER_TIMEOUT: HumanDuration = HumanDuration::from_secs(5);
/// Default time an HTTP API request has to be answered.
pub const DEFAULT_HTTP_REQUEST_TIMEOUT: HumanDuration = HumanDuration::from_secs(10);
/// Longest accepted HTTP API timeout.
pub const MAX_HTTP_TIMEOUT: HumanDuration = HumanDuration::from_secs(3600);
/// Default OpenTelemetry `service.name`.
pub const DEFAULT_SERVICE_NAME: &str = "blockwatch";
/// Default OTLP gRPC endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT` overrides; "" disables export).
pub const DEFAULT_OTLP_ENDPOINT: &str = "http://127.0.0.1:4317";
/// Default log level (`RUST_LOG` overrides).
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Default expected block time.
pub const DEFAULT_EXPECTED_BLOCK_TIME: HumanDuration = HumanDuration::from_secs(12);
/// Default delay after which a missing new block is reported.
pub const DEFAULT_MAX_BLOCK_DELAY: HumanDuration = HumanDuration::from_secs(30);
/// Default number of canonical blocks kept for reorg checks.
pub const DEFAULT_REORG_WINDOW: u64 = 64;
/// Largest accepted `reorg_window`.
pub const MAX_REORG_WINDOW: u64 = 100_000;
/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: HumanDuration = HumanDuration::from_secs(5);
/// Default sustained request rate per provider.
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 25;
/// Default request burst per provider.
pub const DEFAULT_BURST: u32 = 50;
/// Default attempts per pool call, across providers.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 6;
/// Default first retry delay (doubles each attempt, with jitter).
pub const DEFAULT_RETRY_INITIAL_BACKOFF: HumanDuration = HumanDuration::from_millis(100);
/// Default longest retry delay.
pub const DEFAULT_RETRY_MAX_BACKOFF: HumanDuration = HumanDuration::from_secs(5);
/// Default time a failing provider is passed over before it is tried again.
pub const DEFAULT_FAILOVER_COOLDOWN: HumanDuration = HumanDuration::from_secs(5);
/// Default largest accepted JSON-RPC response.
pub const DEFAULT_MAX_RESPONSE_SIZE: ByteSize = ByteSize(10_000_000);
/// Default number of blocks fetched concurrently while catching up.
pub const DEFAULT_FETCH_CONCURRENCY: usize = 8;
/// Default retry budget: each first attempt earns this share of a retry.
pub const DEFAULT_RETRY_BUDGET: f64 = 0.2;
/// Default retries per second allowed whatever the budget.
pub const DEFAULT_RETRY_BUDGET_FLOOR: f64 = 5.0;
/// Default time after which a provider's chain id is checked again.
pub const DEFAULT_CHAIN_CHECK_INTERVAL: HumanDuration = HumanDuration::from_secs(60);
/// Default delay before a dropped WebSocket subscription is reopened (doubles up to 30 s).
pub const DEFAULT_WS_RECONNECT_BACKOFF: HumanDuration = HumanDuration::from_millis(500);
/// Default interval between background probes of providers that calls have not used lately.
pub const DEFAULT_PROBE_INTERVAL: HumanDuration = HumanDuration::from_secs(10);
/// Default window of latency percentiles, error rate and rate-limit pressure.
pub const DEFAULT_SCORE_WINDOW: HumanDuration = HumanDuration::from_secs(60);
/// Default blocks behind the chain head beyond which a provider is lagging.
pub const DEFAULT_OUT_OF_SYNC_BLOCKS: u64 = 5;
/// Default blocks a head may lead every other provider's by before it needs corroboration.
pub const DEFAULT_HEAD_OUTLIER_BLOCKS: u64 = 64;
/// Default time a provider stays `inconsistent` after its last uncorroborated claim.
pub const DEFAULT_INCONSISTENT_FOR: HumanDuration = HumanDuration::from_secs(30);
/// Default error rate at which a provider is degraded.
pub const DEFAULT_DEGRADED_ERROR_RATE: f64 = 0.1;
/// Default p95 latency at which a provider is degraded.
pub const DEFAULT_DEGRADED_LATENCY: HumanDuration = HumanDuration::from_secs(2);
/// Default failure count that opens a provider's circuit.
pub const DEFAULT_CIRCUIT_FAILURES: u32 = 5;
/// Default error rate over the score window that opens a provider's circuit.
pub const DEFAULT_CIRCUIT_ERROR_RATE: f64 = 0.5;
/// Default calls in the window before the error rate may open a circuit.
pub const DEFAULT_CIRCUIT_MIN_CALLS: u64 = 20;
/// Default time an open circuit waits before its half-open probe.
pub const DEFAULT_CIRCUIT_OPEN_FOR: HumanDuration = HumanDuration::from_secs(10);
/// Default latency percentile after which a call is hedged to the next provider (0: never).
pub const DEFAULT_HEDGE_PERCENTILE: u8 = 95;
/// Default shortest wait before a hedge.
pub const DEFAULT_HEDGE_MIN_DELAY: HumanDuration = HumanDuration::from_millis(50);
/// Default factor by which a challenger's cost must be lower to take over under `selection = "best"`.
pub const DEFAULT_SWITCH_RATIO: f64 = 1.5;
/// Default time a challenger must stay clearly better before it takes over.
pub const DEFAULT_SWITCH_HOLD: HumanDuration = HumanDuration::from_secs(5);
/// Default missed-block log file.
pub const DEFAULT_MISSED_BLOCK_LOG: &str = "logs/missed_blocks.jsonl";
/// Default size at which the missed-block log is rotated.
pub const DEFAULT_ROTATION_SIZE: ByteSize = ByteSize(10_000_000);
/// Default days rotated missed-block logs are kept.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
/// Default records written to the missed-block log at once.
pub const DEFAULT_LOG_BATCH_SIZE: usize = 100;
/// Default longest wait before waiting records are written.
pub const DEFAULT_LOG_BATCH_TIMEOUT: HumanDuration = HumanDuration::from_secs(60);
/// Default recovery attempts for a block no provider could serve.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 3;
/// Default wait between recovery attempts.
pub const DEFAULT_RETRY_DELAY: HumanDuration = HumanDuration::from_secs(5);
/// Default missed-block streak that is alert-worthy.
pub const DEFAULT_ALERT_THRESHOLD: u64 = 5;
/// Default largest JSON-RPC batch sent to a provider (1: no batching).
pub const DEFAULT_MAX_BATCH_SIZE: u32 = 32;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key has an invalid value, is unknown, or is missing.
    #[error("invalid config: `{key}`: {message}")]
    Invalid {
        /// The dotted key path, e.g. `chains[0].providers[1].timeout`.
        key: String,
        /// What is wrong and what was expected.
        message: String,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-wide settings.
    #[serde(default)]
    pub agent: AgentConfig,
    /// Logging (and, later, OpenTelemetry export).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Retry, failover and fetch settings shared by every chain's pool.
    #[serde(default)]
    pub pool: PoolConfig,
    /// The chains to follow; at least one.
    #[serde(default)]
    pub chains: Vec<ChainConfig>,
    /// The missed-block log file.
    #[serde(default)]
    pub missed_block_log: MissedBlockLogConfig,
    /// Recovery of missed blocks.
    #[serde(default)]
    pub monitor: MonitorConfig,
    /// Alert rules and channels.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Values that must never be shown (filled while loading, not read from the file).
    #[serde(skip)]
    pub secrets: Vec<String>,
}

/// `[missed_block_log]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MissedBlockLogConfig {
    /// The JSON-lines file; `""` writes no file (records stay in the state database).
    pub path: PathBuf,
    /// The file is rotated once it passes this size.
    pub rotation_size: ByteSize,
    /// Rotated files older than this many days are removed (0: never).
    pub retention_days: u32,
    /// Rotated files are gzip-compressed.
    pub compress: bool,
    /// Records are written once this many are waiting…
    pub batch_size: usize,
    /// …or this long after the last write, and at shutdown.
    pub batch_timeout: HumanDuration,
    /// Each missed block is also logged on stderr at warn level (otherwise at debug).
    pub console: bool,
}

impl Default for MissedBlockLogConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from(DEFAULT_MISSED_BLOCK_LOG),
            rotation_size: DEFAULT_ROTATION_SIZE,
            retention_days: DEFAULT_RETENTION_DAYS,
            compress: true,
            batch_size: DEFAULT_LOG_BATCH_SIZE,
            batch_timeout: DEFAULT_LOG_BATCH_TIMEOUT,
            console: true,
        }
    }
}

/// `[monitor]`: how a block that no provider could serve is recovered.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Recovery attempts (each a call that asks every usable provider, those that failed last)
    /// before the block is declared unrecovered; it is still asked for afterwards.
    pub retry_attempts: u32,
    /// The wait between two recovery attempts.
    pub retry_delay: HumanDuration,
    /// A streak of this many missed blocks in a row is logged at error (and alerted on).
    pub alert_threshold: u64,
    /// Recover missed blocks with dedicated attempts, `retry_delay` apart; when off, the stream
    /// asks for the block it waits on at every poll, like any other.
    pub enable_recovery: bool,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            retry_attempts: DEFAULT_RETRY_ATTEMPTS,
            retry_delay: DEFAULT_RETRY_DELAY,
            alert_threshold: DEFAULT_ALERT_THRESHOLD,
            enable_recovery: true,
        }
    }
}

/// `[agent]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// SQLite file for cursors and recent canonical hashes.
    pub state_path: PathBuf,
    /// Address of the HTTP API (port 0: chosen by the system and logged).
    pub http_listen: std::net::SocketAddr,
    /// Where block lines go.
    pub block_output: BlockOutputTarget,
    /// Most HTTP API connections open at once; further ones wait in the kernel's accept queue.
    pub http_max_connections: usize,
    /// An HTTP API client that has not sent a whole request head this long after connecting, or
    /// after its previous response, is disconnected.
    pub http_header_timeout: HumanDuration,
    /// An HTTP API request not answered within this is a 503 with a JSON error.
    pub http_request_timeout: HumanDuration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            state_path: PathBuf::from(DEFAULT_STATE_PATH),
            http_listen: DEFAULT_HTTP_LISTEN.parse().expect("valid default address"),
            block_output: BlockOutputTarget::Stdout,
            http_max_connections: DEFAULT_HTTP_MAX_CONNECTIONS,
            http_header_timeout: DEFAULT_HTTP_HEADER_TIMEOUT,
            http_request_timeout: DEFAULT_HTTP_REQUEST_TIMEOUT,
        }
    }
}

impl AgentConfig {
    /// The HTTP API's limits: a cap of at least one connection, timeouts above zero and at most
    /// an hour.
    fn validate_http(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_HTTP_MAX_CONNECTIONS).contains(&self.http_max_connections) {
            return Err(ConfigError::invalid(
                "agent.http_max_connections",
                format!(
                    "{} is out of range: between 1 and {MAX_HTTP_MAX_CONNECTIONS}",
                    self.http_max_connections
                ),
            ));
        }
        for (key, d) in [
            ("agent.http_header_timeout", self.http_header_timeout),
            ("agent.http_request_timeout", self.http_request_timeout),
        ] {
            if d.0.is_zero() || d > MAX_HTTP_TIMEOUT {
                return Err(ConfigError::invalid(
                    key,
                    format!("{d} is out of range: above zero and at most {MAX_HTTP_TIMEOUT}"),
                ));
            }
        }
        Ok(())
    }
}

/// `agent.block_output`: `"stdout"`, `"none"` or a file path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockOutputTarget {
    /// JSON lines on standard output.
    Stdout,
    /// Blocks are followed and recorded but not printed.
    None,
    /// JSON lines appended to a file, reconciled with the cursor on start.
    File(PathBuf),
}

impl<'de> Deserialize<'de> for BlockOutputTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "stdout" | "-" => BlockOutputTarget::Stdout,
            "none" => BlockOutputTarget::None,
            "" => {
                return Err(de::Error::custom(
                    "empty: expected \"stdout\", \"none\" or a file path",
                ))
            }
            path => BlockOutputTarget::File(PathBuf::from(path)),
        })
    }
}

impl Serialize for BlockOutputTarget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BlockOutputTarget::Stdout => s.serialize_str("stdout"),
            BlockOutputTarget::None => s.serialize_str("none"),
            BlockOutputTarget::File(p) => s.serialize_str(&p.to_string_lossy()),
        }
    }
}

/// `[telemetry]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OpenTelemetry `service.name`.
    pub service_name: String,
    /// OTLP gRPC endpoint for traces, metrics and logs; `OTEL_EXPORTER_OTLP_ENDPOINT` overrides,
    /// and an empty value disables export.
    pub otlp_endpoint: String,
    /// Log record format on stderr.
    pub log_format: LogFormat,
    /// Log filter (`RUST_LOG` overrides), e.g. `"info"` or `"blockwatch=debug"`.
    pub log_level: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            otlp_endpoint: DEFAULT_OTLP_ENDPOINT.to_owned(),
            log_format: LogFormat::Json,
            log_level: DEFAULT_LOG_LEVEL.to_owned(),
        }
    }
}

impl TelemetryConfig {
    /// Where OTLP goes: any `OTEL_EXPORTER_OTLP_*ENDPOINT` variable hands the choice to the SDK
    /// (which reads the generic and the per-signal variables), else the config's endpoint; an empty
    /// endpoint and no variable disables export.
    pub fn otlp_target(&self) -> OtlpTarget {
        const VARS: [&str; 4] = [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
        ];
        if VARS
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|e| !e.trim().is_empty()))
        {
            return OtlpTarget::Environment;
        }
        match self.otlp_endpoint.trim() {
            "" => OtlpTarget::Disabled,
            e => OtlpTarget::Endpoint(e.to_owned()),
        }
    }
}

/// Where OTLP export goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OtlpTarget {
    /// No export.
    Disabled,
    /// The endpoints the `OTEL_EXPORTER_OTLP_*` variables name.
    Environment,
    /// `telemetry.otlp_endpoint`.
    Endpoint(String),
}

/// `telemetry.log_format`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object a line.
    Json,
    /// Human-readable lines.
    Pretty,
}

/// `[pool]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Attempts per call across all providers before the call fails.
    pub max_attempts: u32,
    /// First delay between attempts; doubles each attempt, with full jitter.
    pub retry_initial_backoff: HumanDuration,
    /// Longest delay between attempts.
    pub retry_max_backoff: HumanDuration,
    /// How long a provider that just failed is passed over while others are usable.
    pub failover_cooldown: HumanDuration,
    /// Largest JSON-RPC response accepted from a provider.
    pub max_response_size: ByteSize,
    /// Blocks fetched concurrently while catching up (each still goes through the rate limit).
    pub fetch_concurrency: usize,
    /// First delay before reopening a dropped `newHeads` subscription; doubles up to 30 s.
    pub ws_reconnect_backoff: HumanDuration,
    /// How often each provider's chain id is checked again while in use.
    pub chain_check_interval: HumanDuration,
    /// Retries may add at most this share of the first attempts' load (0.2: 20 %).
    pub retry_budget: f64,
    /// Retries per second allowed on top of the budget (banked for up to 10 s).
    pub retry_budget_floor: f64,
    /// How often providers that calls have not used lately are probed (chain id, head).
    pub probe_interval: HumanDuration,
    /// Window of latency percentiles, error rate and rate-limit pressure behind states and scores.
    pub score_window: HumanDuration,
    /// A provider whose head is more than this many blocks behind the chain head is lagging.
    pub out_of_sync_blocks: u64,
    /// A head more than this many blocks ahead of every other provider's is not believed until
    /// another provider comes close, or the chain could have grown that much since.
    pub head_outlier_blocks: u64,
    /// A provider caught in a claim the others do not back (a head it cannot serve, a head that
    /// went back, `null` for a block at or below its own head, another block than asked) is
    /// `inconsistent` for this long after its last such claim.
    pub inconsistent_for: HumanDuration,
    /// Error rate over the score window at which a provider is degraded.
    pub degraded_error_rate: f64,
    /// p95 latency at which a provider is degraded.
    pub degraded_latency: HumanDuration,
    /// Failure count (one per failure, minus a half per success) that opens a provider's circuit.
    pub circuit_failures: u32,
    /// Error rate over the score window that opens a provider's circuit.
    pub circuit_error_rate: f64,
    /// Calls in the score window before the error rate may open a circuit.
    pub circuit_min_calls: u64,
    /// How long an open circuit waits before a half-open probe.
    pub circuit_open_for: HumanDuration,
    /// A call not answered by this percentile of the provider's recent latency is also sent to the
    /// next provider, and the first good answer wins (0 disables hedging).
    pub hedge_percentile: u8,
    /// Shortest wait before a hedge.
    pub hedge_min_delay: HumanDuration,
    /// Under `selection = "best"`, a challenger's cost must be this many times lower than the
    /// current provider's…
    pub switch_ratio: f64,
    /// …for this long before it takes over.
    pub switch_hold: HumanDuration,
    /// Rate-limit tokens each method costs (default 1): one limit can model compute units.
    pub method_costs: BTreeMap<String, u32>,
}

impl PoolConfig {
    /// Checks the health, hedging and switching knobs.
    fn validate_health(&self) -> Result<(), ConfigError> {
        use std::time::Duration;
        let share = |key: &str, v: f64| {
            if v > 0.0 && v <= 1.0 {
                Ok(())
            } else {
                Err(ConfigError::invalid(
                    format!("pool.{key}"),
                    format!("{v} is out of range: a share above 0 and at most 1"),
                ))
            }
        };
        share("degraded_error_rate", self.degraded_error_rate)?;
        share("circuit_error_rate", self.circuit_error_rate)?;
        let at_least = |key: &str, d: HumanDuration, min: Duration| {
            if d.0 >= min {
                Ok(())
            } else {
                Err(ConfigError::invalid(
                    format!("pool.{key}"),
                    format!("must be at least {}", humantime::format_duration(min)),
                ))
            }
        };
        at_least(
            "probe_interval",
            self.probe_interval,
            Duration::from_millis(100),
        )?;
        at_least("score_window", self.score_window, Duration::from_secs(1))?;
        at_least(
            "inconsistent_for",
            self.inconsistent_for,
            Duration::from_millis(100),
        )?;
        at_least(
            "degraded_latency",
            self.degraded_latency,
            Duration::from_millis(1),
        )?;
        at_least(
            "circuit_open_for",
            self.circuit_open_for,
            Duration::from_millis(100),
        )?;
        if self.circuit_failures == 0 {
            return Err(ConfigError::invalid(
                "pool.circuit_failures",
                "must be at least 1",
            ));
        }
        if self.hedge_percentile > 99 {
            return Err(ConfigError::invalid(
                "pool.hedge_percentile",
                format!(
                    "{} is out of range: a percentile from 1 to 99, or 0 to turn hedging off",
                    self.hedge_percentile
                ),
            ));
        }
        if !(1.0..=100.0).contains(&self.switch_ratio) {
            return Err(ConfigError::invalid(
                "pool.switch_ratio",
                format!("{} is out of range: between 1 and 100", self.switch_ratio),
            ));
        }
        if let Some((method, _)) = self.method_costs.iter().find(|(_, &c)| c == 0) {
            return Err(ConfigError::invalid(
                format!("pool.method_costs.{method}"),
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// Rate-limit tokens a call of `method` costs.
    pub fn method_cost(&self, method: &str) -> u32 {
        self.method_costs.get(method).copied().unwrap_or(1)
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_initial_backoff: DEFAULT_RETRY_INITIAL_BACKOFF,
            retry_max_backoff: DEFAULT_RETRY_MAX_BACKOFF,
            failover_cooldown: DEFAULT_FAILOVER_COOLDOWN,
            max_response_size: DEFAULT_MAX_RESPONSE_SIZE,
            fetch_concurrency: DEFAULT_FETCH_CONCURRENCY,
            ws_reconnect_backoff: DEFAULT_WS_RECONNECT_BACKOFF,
            chain_check_interval: DEFAULT_CHAIN_CHECK_INTERVAL,
            retry_budget: DEFAULT_RETRY_BUDGET,
            retry_budget_floor: DEFAULT_RETRY_BUDGET_FLOOR,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            score_window: DEFAULT_SCORE_WINDOW,
            out_of_sync_blocks: DEFAULT_OUT_OF_SYNC_BLOCKS,
            head_outlier_blocks: DEFAULT_HEAD_OUTLIER_BLOCKS,
            inconsistent_for: DEFAULT_INCONSISTENT_FOR,
            degraded_error_rate: DEFAULT_DEGRADED_ERROR_RATE,
            degraded_latency: DEFAULT_DEGRADED_LATENCY,
            circuit_failures: DEFAULT_CIRCUIT_FAILURES,
            circuit_error_rate: DEFAULT_CIRCUIT_ERROR_RATE,
            circuit_min_calls: DEFAULT_CIRCUIT_MIN_CALLS,
            circuit_open_for: DEFAULT_CIRCUIT_OPEN_FOR,
            hedge_percentile: DEFAULT_HEDGE_PERCENTILE,
            hedge_min_delay: DEFAULT_HEDGE_MIN_DELAY,
            switch_ratio: DEFAULT_SWITCH_RATIO,
            switch_hold: DEFAULT_SWITCH_HOLD,
            method_costs: BTreeMap::new(),
        }
    }
}

/// One `[[chains]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// Name used in output, state and telemetry; unique.
    pub name: String,
    /// The EIP-155 chain id every provider must answer with.
    pub chain_id: u64,
    /// Usual time between blocks.
    #[serde(default = "default_expected_block_time")]
    pub expected_block_time: HumanDuration,
    /// A chain with no new block for this long is reported as stalled.
    #[serde(default = "default_max_block_delay")]
    pub max_block_delay: HumanDuration,
    /// Canonical (number, hash) pairs kept for reorg checks.
    #[serde(default = "default_reorg_window")]
    pub reorg_window: u64,
    /// Where to start when there is no cursor (and whether to use it).
    #[serde(default)]
    pub start: StartAt,
    /// How the pool picks a provider.
    #[serde(default)]
    pub selection: Selection,
    /// How often the head is polled when no `newHeads` subscription is live
    /// (default: a quarter of `expected_block_time`, between 100 ms and 3 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<HumanDuration>,
    /// The hash of block 0 every provider must serve (default: providers must agree with each
    /// other).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genesis_hash: Option<alloy_primitives::B256>,
    /// How a block's hash is verified.
    #[serde(default)]
    pub block_hash_check: BlockHashCheck,
    /// The providers serving this chain; at least one.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
}

fn default_expected_block_time() -> HumanDuration {
    DEFAULT_EXPECTED_BLOCK_TIME
}
fn default_max_block_delay() -> HumanDuration {
    DEFAULT_MAX_BLOCK_DELAY
}
fn default_reorg_window() -> u64 {
    DEFAULT_REORG_WINDOW
}

impl ChainConfig {
    /// The effective head poll interval.
    pub fn poll_interval(&self) -> std::time::Duration {
        use std::time::Duration;
        self.poll_interval.map(|d| d.0).unwrap_or_else(|| {
            (self.expected_block_time.0 / 4)
                .clamp(Duration::from_millis(100), Duration::from_secs(3))
        })
    }
}

/// `chains[].start`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartAt {
    /// After the stored cursor; at the current head when there is none.
    #[default]
    Resume,
    /// At the current head, ignoring any cursor.
    Latest,
    /// After the stored cursor; at this block when there is none.
    Block(u64),
}

impl<'de> Deserialize<'de> for StartAt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = StartAt;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"resume\", \"latest\" or a block number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StartAt, E> {
                u64::try_from(v)
                    .map(StartAt::Block)
                    .map_err(|_| E::custom(format!("{v}: a block number cannot be negative")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StartAt, E> {
                Ok(StartAt::Block(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StartAt, E> {
                match v {
                    "resume" => Ok(StartAt::Resume),
                    "latest" => Ok(StartAt::Latest),
                    other => other.parse().map(StartAt::Block).map_err(|_| {
                        E::custom(format!(
                            "{other:?}: expected \"resume\", \"latest\" or a block number"
                        ))
                    }),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for StartAt {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            StartAt::Resume => s.serialize_str("resume"),
            StartAt::Latest => s.serialize_str("latest"),
            StartAt::Block(n) => s.serialize_u64(*n),
        }
    }
}

/// `chains[].block_hash_check`: how a served block's hash is verified.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BlockHashCheck {
    /// The hash must be the keccak of the block's RLP header (Ethereum and most EVM chains).
    #[default]
    Header,
    /// For chains that hash blocks their own way (zkSync Era and other rollups): the number, the
    /// parent link and the agreement of a second provider on the hash are verified instead.
    Consensus,
}

/// `chains[].selection`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// The healthy provider with the best recent latency, sticky until clearly beaten.
    #[default]
    Best,
    /// The healthy provider with the lowest `priority`.
    Priority,
    /// Healthy providers in turn.
    RoundRobin,
}

/// One `[[chains.providers]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Name used in output and telemetry; unique within its chain.
    pub name: String,
    /// HTTP(S) JSON-RPC endpoint.
    pub url: String,
    /// Optional WebSocket endpoint for the `newHeads` subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws_url: Option<String>,
    /// The paths of `url` and `ws_url` hold no secret and are shown as they are (a self-hosted
    /// node); by default every path segment that is not a known public route word is hidden.
    /// User-info and query values are hidden either way.
    #[serde(default)]
    pub public_url: bool,
    /// Lower is preferred by `selection = "priority"`.
    #[serde(default)]
    pub priority: u32,
    /// Per-request timeout.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Client-side rate limit.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Extra HTTP headers sent with every request (secret: never shown).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Most calls sent in one JSON-RPC batch while catching up (1: no batching).
    #[serde(default = "default_max_batch_size")]
    pub max_batch_size: u32,
}

fn default_max_batch_size() -> u32 {
    DEFAULT_MAX_BATCH_SIZE
}

fn default_timeout() -> HumanDuration {
    DEFAULT_TIMEOUT
}

/// `rate_limit = { requests_per_second, burst }`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained requests per second.
    pub requests_per_second: u32,
    /// Requests that may go at once after a quiet spell.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            requests_per_second: DEFAULT_REQUESTS_PER_SECOND,
            burst: DEFAULT_BURST,
        }
    }
}

impl Config {
    /// Reads, expands, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses `text` (named `path` in messages), expanding `${NAME}` with `lookup`.
    pub fn from_toml_str(
        text: &str,
        path: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut value: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut secrets = Vec::new();
        let sources = env::Sources {
            lookup,
            base_dir: path.parent().unwrap_or(Path::new("")),
        };
        env::expand(&mut value, "", &sources, &mut secrets)?;
        let mut config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." {
                "(top level)".to_owned()
            } else {
                key
            };
            // serde quotes the value it could not take: it may have come from a secret.
            hide_secrets(
                ConfigError::invalid(key, e.into_inner().message().to_owned()),
                &secrets,
            )
        })?;
        for chain in &config.chains {
            for p in &chain.providers {
                secrets.extend(
                    p.headers
                        .values()
                        .flat_map(|v| crate::redact::header_secrets(v)),
                );
                secrets.extend(crate::redact::url_secrets(&p.url, p.public_url));
                if let Some(ws) = &p.ws_url {
                    secrets.extend(crate::redact::url_secrets(ws, p.public_url));
                }
            }
        }
        secrets.extend(crate::redact::url_secrets(
            &config.telemetry.otlp_endpoint,
            false,
        ));
        secrets.extend(config.alerts.secrets());
        config.secrets = secrets;
        config
            .validate()
            .map_err(|e| hide_secrets(e, &config.secrets))?;
        Ok(config)
    }

    /// A redactor that knows every secret of this config.
    pub fn redactor(&self) -> Redactor {
        Redactor::new(self.secrets.iter().cloned())
    }

    /// Checks the values serde cannot: ranges, uniqueness, URL schemes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.chains.is_empty() {
            return Err(ConfigError::invalid(
                "chains",
                "no chain configured: add at least one [[chains]] table with its [[chains.providers]]",
            ));
        }
        let p = &self.pool;
        if p.max_attempts == 0 {
            return Err(ConfigError::invalid(
                "pool.max_attempts",
                "must be at least 1",
            ));
        }
        if p.retry_initial_backoff.0.is_zero() || p.retry_max_backoff < p.retry_initial_backoff {
            return Err(ConfigError::invalid(
                "pool.retry_max_backoff",
                "must be at least pool.retry_initial_backoff, which must be above zero",
            ));
        }
        if p.max_response_size.0 < 1024 || p.max_response_size.0 > u64::from(u32::MAX) {
            return Err(ConfigError::invalid(
                "pool.max_response_size",
                "must be between 1KB and 4GB",
            ));
        }
        if p.fetch_concurrency == 0 || p.fetch_concurrency > 256 {
            return Err(ConfigError::invalid(
                "pool.fetch_concurrency",
                "must be between 1 and 256",
            ));
        }
        if !(0.0..=10.0).contains(&p.retry_budget) {
            return Err(ConfigError::invalid(
                "pool.retry_budget",
                format!(
                    "{} is out of range: a share between 0 and 10",
                    p.retry_budget
                ),
            ));
        }
        if !(0.0..=10_000.0).contains(&p.retry_budget_floor) {
            return Err(ConfigError::invalid(
                "pool.retry_budget_floor",
                format!(
                    "{} is out of range: retries per second between 0 and 10000",
                    p.retry_budget_floor
                ),
            ));
        }
        if p.chain_check_interval.0 < std::time::Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                "pool.chain_check_interval",
                "must be at least 100ms",
            ));
        }
        p.validate_health()?;
        let log = &self.missed_block_log;
        if !log.path.as_os_str().is_empty() {
            if log.rotation_size.0 < 1000 {
                return Err(ConfigError::invalid(
                    "missed_block_log.rotation_size",
                    "must be at least 1KB",
                ));
            }
            if log.batch_size == 0 || log.batch_size > 100_000 {
                return Err(ConfigError::invalid(
                    "missed_block_log.batch_size",
                    "must be between 1 and 100000",
                ));
            }
            if log.batch_timeout.0.is_zero() {
                return Err(ConfigError::invalid(
                    "missed_block_log.batch_timeout",
                    "must be above zero",
                ));
            }
        }
        self.alerts.validate()?;
        let m = &self.monitor;
        if m.enable_recovery && m.retry_attempts == 0 {
            return Err(ConfigError::invalid(
                "monitor.retry_attempts",
                "must be at least 1 (to make no recovery attempts, set monitor.enable_recovery = false)",
            ));
        }
        if m.retry_delay.0 < std::time::Duration::from_millis(10) {
            return Err(ConfigError::invalid(
                "monitor.retry_delay",
                "must be at least 10ms",
            ));
        }
        if m.alert_threshold == 0 {
            return Err(ConfigError::invalid(
                "monitor.alert_threshold",
                "must be at least 1",
            ));
        }
        if self.agent.state_path.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "agent.state_path",
                "must not be empty",
            ));
        }
        self.agent.validate_http()?;
        if let Err(e) = self
            .telemetry
            .log_level
            .parse::<tracing_subscriber::EnvFilter>()
        {
            return Err(ConfigError::invalid(
                "telemetry.log_level",
                format!(
                    "{:?} is not a valid log filter: {e}",
                    self.telemetry.log_level
                ),
            ));
        }
        let redactor = self.redactor();
        let mut chain_names = HashSet::new();
        for (i, chain) in self.chains.iter().enumerate() {
            let key = |k: &str| format!("chains[{i}].{k}");
            if chain.name.trim().is_empty() {
                return Err(ConfigError::invalid(key("name"), "must not be empty"));
            }
            if !chain_names.insert(chain.name.as_str()) {
                return Err(ConfigError::invalid(
                    key("name"),
                    format!(
                        "duplicate chain name {:?}: chain names must be unique",
                        chain.name
                    ),
                ));
            }
            if chain.chain_id == 0 {
                return Err(ConfigError::invalid(key("chain_id"), "must be above 0"));
            }
            if chain.expected_block_time.0.is_zero() {
                return Err(ConfigError::invalid(
                    key("expected_block_time"),
                    "must be above zero",
                ));
            }
            if chain.max_block_delay.0.is_zero() {
                return Err(ConfigError::invalid(
                    key("max_block_delay"),
                    "must be above zero",
                ));
            }
            if chain.reorg_window == 0 || chain.reorg_window > MAX_REORG_WINDOW {
                return Err(ConfigError::invalid(
                    key("reorg_window"),
                    format!(
                        "{} is out of range: must be between 1 and {MAX_REORG_WINDOW}",
                        chain.reorg_window
                    ),
                ));
            }
            if chain.poll_interval.is_some_and(|d| d.0.is_zero()) {
                return Err(ConfigError::invalid(
                    key("poll_interval"),
                    "must be above zero",
                ));
            }
            if chain.providers.is_empty() {
                return Err(ConfigError::invalid(
                    key("providers"),
                    format!(
                        "chain {:?} has no provider: add a [[chains.providers]] table",
                        chain.name
                    ),
                ));
            }
            let mut provider_names = HashSet::new();
            for (j, prov) in chain.providers.iter().enumerate() {
                let key = |k: &str| format!("chains[{i}].providers[{j}].{k}");
                if prov.name.trim().is_empty() {
                    return Err(ConfigError::invalid(key("name"), "must not be empty"));
                }
                if !provider_names.insert(prov.name.as_str()) {
                    return Err(ConfigError::invalid(
                        key("name"),
                        format!(
                            "duplicate provider name {:?} in chain {:?}: provider names must be unique within a chain",
                            prov.name, chain.name
                        ),
                    ));
                }
                let public = prov.public_url;
                check_url(
                    &key("url"),
                    &prov.url,
                    public,
                    &["http", "https"],
                    &redactor,
                )?;
                if let Some(ws) = &prov.ws_url {
                    check_url(&key("ws_url"), ws, public, &["ws", "wss"], &redactor)?;
                }
                if prov.timeout.0.is_zero() {
                    return Err(ConfigError::invalid(key("timeout"), "must be above zero"));
                }
                if prov.rate_limit.requests_per_second == 0 {
                    return Err(ConfigError::invalid(
                        key("rate_limit.requests_per_second"),
                        "must be at least 1",
                    ));
                }
                if prov.rate_limit.burst == 0 {
                    return Err(ConfigError::invalid(
                        key("rate_limit.burst"),
                        "must be at least 1",
                    ));
                }
                if let Some((method, cost)) = self
                    .pool
                    .method_costs
                    .iter()
                    .find(|(_, &c)| c > prov.rate_limit.burst)
                {
                    return Err(ConfigError::invalid(
                        key("rate_limit.burst"),
                        format!(
                            "{} is below pool.method_costs.{method} = {cost}: a call of {method} could never be sent",
                            prov.rate_limit.burst
                        ),
                    ));
                }
                if prov.max_batch_size == 0 || prov.max_batch_size > 1000 {
                    return Err(ConfigError::invalid(
                        key("max_batch_size"),
                        format!(
                            "{} is out of range: between 1 (no batching) and 1000",
                            prov.max_batch_size
                        ),
                    ));
                }
                for (name, value) in &prov.headers {
                    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        return Err(ConfigError::invalid(
                            key("headers"),
                            format!("{name:?} is not a valid HTTP header name"),
                        ));
                    }
                    if http::HeaderValue::from_str(value).is_err() {
                        return Err(ConfigError::invalid(
                            format!("chains[{i}].providers[{j}].headers.{name}"),
                            "is not a valid HTTP header value",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// A copy fit to print: URLs redacted, header values hidden.
    pub fn redacted(&self) -> Config {
        let r = self.redactor();
        let mut c = self.clone();
        if !c.telemetry.otlp_endpoint.is_empty() {
            c.telemetry.otlp_endpoint = r.url(&c.telemetry.otlp_endpoint);
        }
        for chain in &mut c.chains {
            for p in &mut chain.providers {
                p.url = r.url_with(&p.url, p.public_url);
                p.ws_url = p.ws_url.as_deref().map(|u| r.url_with(u, p.public_url));
                for v in p.headers.values_mut() {
                    *v = REDACTED.to_owned();
                }
            }
        }
        for ch in &mut c.alerts.channels {
            ch.url = ch.url.as_deref().map(alerts::redact_channel_url);
            ch.smtp_url = ch.smtp_url.as_deref().map(alerts::redact_channel_url);
            for v in ch.headers.values_mut() {
                *v = REDACTED.to_owned();
            }
        }
        c.secrets.clear();
        c
    }

    /// The effective configuration as TOML, secrets redacted: the secret-bearing keys by
    /// [`Config::redacted`], and every known secret wherever else it is (a `${file:…}` value in
    /// any key).
    pub fn to_redacted_toml(&self) -> String {
        let text = toml::to_string_pretty(&self.redacted())
            .unwrap_or_else(|e| format!("# cannot render config: {e}\n"));
        self.redactor().redact(&text)
    }
}

/// `error` with the known `secrets` replaced in its message (a message may quote a value, and the
/// value may have come from a secret file).
fn hide_secrets(error: ConfigError, secrets: &[String]) -> ConfigError {
    match error {
        ConfigError::Invalid { key, message } => ConfigError::Invalid {
            key,
            message: Redactor::new(secrets.iter().cloned()).redact(&message),
        },
        other => other,
    }
}

fn check_url(
    key: &str,
    value: &str,
    public_path: bool,
    schemes: &[&str],
    redactor: &Redactor,
) -> Result<(), ConfigError> {
    let shown = redactor.url_with(value, public_path);
    let url = url::Url::parse(value).map_err(|e| {
        ConfigError::invalid(
            key,
            format!(
                "not a valid URL ({e}); expected e.g. {}://host:port",
                schemes[0]
            ),
        )
    })?;
    if !schemes.contains(&url.scheme()) {
        return Err(ConfigError::invalid(
            key,
            format!("{shown}: scheme must be one of {}", schemes.join(", ")),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::invalid(key, format!("{shown}: has no host")));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
