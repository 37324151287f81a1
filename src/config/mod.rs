//! The agent's configuration: TOML with `${ENV}` and `${file:PATH}` expansion, human durations and
//! sizes, unknown keys rejected, and every invalid value reported with the key it came from.
//!
//! Loading happens in three steps: the file is parsed as plain TOML, `${NAME}` references in string
//! values are expanded from the environment and `${file:PATH}` references from files (the expanded
//! values of secret-bearing keys and every file's content are collected for the [`Redactor`]), and
//! the result is deserialized into [`Config`] and checked by [`Config::validate`]. Every default
//! lives in a `DEFAULT_*` constant of the `defaults` module, re-exported here.

mod agent;
pub mod alerts;
mod chains;
mod cluster;
mod defaults;
mod env;
mod monitor;
mod pool;
mod smtp;
pub mod units;

use std::path::{Path, PathBuf};

pub use agent::{AgentConfig, BlockOutputTarget, LogFormat, OtlpTarget, TelemetryConfig};
pub use alerts::{AlertsConfig, ChannelConfig, ChannelKind, Tier};
pub use chains::{
    BlockHashCheck, ChainConfig, ProviderConfig, RateLimitConfig, Selection, StartAt,
};
pub use cluster::{password_of, ClusterConfig, StoreKind};
pub use defaults::*;
pub use monitor::{MissedBlockLogConfig, MonitorConfig};
pub use pool::PoolConfig;
use serde::{Deserialize, Serialize};
pub use smtp::{SmtpError, SmtpSettings};
pub use units::{ByteSize, DurationError, HumanDuration, SizeError};

use crate::redact::{Redactor, REDACTED};

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
    /// Where the state is kept, and how several agents share it.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Values that must never be shown (filled while loading, not read from the file).
    #[serde(skip)]
    pub secrets: Vec<String>,
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
        secrets.extend(config.cluster.secrets());
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
        self.pool.validate()?;
        self.missed_block_log.validate()?;
        self.alerts.validate()?;
        self.monitor.validate()?;
        self.agent.validate()?;
        self.telemetry.validate()?;
        self.cluster.validate()?;
        if self.agent.block_output == BlockOutputTarget::Postgres && !self.cluster.shared() {
            return Err(ConfigError::invalid(
                "agent.block_output",
                "\"postgres\" writes blocks in the state's transaction: it needs cluster.store = \"postgres\"",
            ));
        }
        chains::validate_chains(&self.chains, &self.pool.method_costs, &self.redactor())
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
        if let Some(p) = password_of(&c.cluster.url) {
            c.cluster.url = c.cluster.url.replace(&p, REDACTED);
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

#[cfg(test)]
mod tests;
