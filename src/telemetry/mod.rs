//! Logging set-up: structured records on stderr, JSON or human-readable, filtered by `RUST_LOG` or
//! `telemetry.log_level`. Block lines never go here: they have their own output.

use tracing_subscriber::{fmt, prelude::*, EnvFilter};

use crate::config::{LogFormat, TelemetryConfig};

/// Installs the global subscriber. Call once, before anything logs.
pub fn init_logging(cfg: &TelemetryConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<EnvFilter>().ok())
        .unwrap_or_else(|| EnvFilter::new(&cfg.log_level));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match cfg.log_format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_current_span(true)
                    .flatten_event(true),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(fmt::layer().with_writer(std::io::stderr).with_target(false))
            .try_init(),
    };
    // A second initialisation (tests running several agents in one process) keeps the first.
    let _ = result;
}
