//! `[agent]` and `[telemetry]`: the process-wide settings (state file, block output, the HTTP API's
//! address and limits) and how the agent logs and exports telemetry. A checked value is one the
//! process can start with.

use std::path::PathBuf;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use super::{defaults::*, ConfigError, HumanDuration};

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
    /// Checks the state path and the HTTP API's limits: a cap of at least one connection, timeouts
    /// above zero and at most an hour.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.state_path.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "agent.state_path",
                "must not be empty",
            ));
        }
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
    /// Rows of the shared PostgreSQL state (`cluster.store = "postgres"`), written in the cursor's
    /// transaction.
    Postgres,
}

impl<'de> Deserialize<'de> for BlockOutputTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "stdout" | "-" => BlockOutputTarget::Stdout,
            "none" => BlockOutputTarget::None,
            "postgres" => BlockOutputTarget::Postgres,
            "" => {
                return Err(de::Error::custom(
                    "empty: expected \"stdout\", \"none\", \"postgres\" or a file path",
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
            BlockOutputTarget::Postgres => s.serialize_str("postgres"),
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
    /// Share of traces (0–1) whose routine JSON-RPC call spans are exported: calls answered at the
    /// first try, faster than their provider's p95. Failed, retried, hedged, abandoned and slow
    /// calls are always exported; 1 exports every call.
    pub routine_call_share: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            otlp_endpoint: DEFAULT_OTLP_ENDPOINT.to_owned(),
            log_format: LogFormat::Json,
            log_level: DEFAULT_LOG_LEVEL.to_owned(),
            routine_call_share: DEFAULT_ROUTINE_CALL_SHARE,
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

impl TelemetryConfig {
    /// Checks that the log filter parses.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Err(e) = self.log_level.parse::<tracing_subscriber::EnvFilter>() {
            return Err(ConfigError::invalid(
                "telemetry.log_level",
                format!("{:?} is not a valid log filter: {e}", self.log_level),
            ));
        }
        if !(0.0..=1.0).contains(&self.routine_call_share) {
            return Err(ConfigError::invalid(
                "telemetry.routine_call_share",
                format!(
                    "{} is not a share: expected a number from 0 (only failed, retried, hedged \
                     and slow calls) to 1 (every call)",
                    self.routine_call_share
                ),
            ));
        }
        Ok(())
    }
}
