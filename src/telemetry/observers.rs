//! The stream's telemetry observers: a log line per processed block (info), reorg (warn), error
//! line (error) and missed block (a `missed_block` span event, and a log line), and the stream's
//! metrics (blocks processed per provider, the newest block's lag, reorgs). Both receive each
//! committed line and record in its block's `process_block` span.

use std::{collections::HashMap, sync::Arc, time::Duration};

use crate::model::{MissedBlock, StreamEvent, StreamObserver};

/// Logs every processed block at info, reorgs at warn, errors at error, and missed blocks.
#[derive(Debug, Default)]
pub struct LogObserver {
    /// Missed blocks are logged at warn (else at debug).
    missed_console: bool,
}

impl LogObserver {
    /// A log observer; `missed_console`: missed blocks are logged at warn (else at debug).
    pub fn new(missed_console: bool) -> Self {
        Self { missed_console }
    }
}

impl StreamObserver for LogObserver {
    /// Adds a `missed_block` event to the current (the block's) span, whatever the log level, and
    /// logs the miss in it.
    fn on_missed(&self, r: &MissedBlock) {
        use opentelemetry::KeyValue;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        tracing::Span::current().add_event(
            "missed_block",
            vec![
                KeyValue::new("block_number", r.block_number as i64),
                KeyValue::new("reason", r.reason.as_str()),
                KeyValue::new("severity", r.severity.as_str()),
                KeyValue::new("recovered", r.recovered),
            ],
        );
        macro_rules! log {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    chain = %r.chain, block_number = r.block_number, reason = r.reason.as_str(),
                    severity = r.severity.as_str(), recovered = r.recovered,
                    recovery_attempts = r.recovery_attempts,
                    recovered_from = r.recovered_from.as_deref(),
                    "missed block"
                )
            };
        }
        if self.missed_console {
            log!(tracing::Level::WARN)
        } else {
            log!(tracing::Level::DEBUG)
        }
    }

    fn on_events(&self, events: &[StreamEvent]) {
        for e in events {
            match e {
                StreamEvent::Block(b) => tracing::info!(
                    chain = %b.chain, block_number = b.block_number, block_timestamp = b.timestamp,
                    transactions = b.transactions, provider = %b.provider, lag_ms = b.lag_ms,
                    "block processed"
                ),
                StreamEvent::Reorg(r) => tracing::warn!(
                    chain = %r.chain, depth = r.depth, common_ancestor = r.common_ancestor,
                    old_head = r.old_head.number, new_head = r.new_head.number, "reorg"
                ),
                StreamEvent::Error(x) => tracing::error!(
                    chain = %x.chain, kind = %x.kind, block_number = ?x.block_number, "{}", x.message
                ),
            }
        }
    }
}

/// Records the stream's metrics: blocks processed (per provider), each block's delay (with the
/// block's span as exemplar) and whether it was late, the newest block's lag, reorgs.
#[derive(Debug)]
pub struct MetricsObserver {
    metrics: Arc<super::Metrics>,
    /// Each chain's `max_block_delay`: a block emitted later than that after its timestamp is late.
    max_delay: HashMap<String, Duration>,
}

impl MetricsObserver {
    /// An observer recording into `metrics`; `max_delay` is each chain's `max_block_delay`.
    pub fn new(metrics: Arc<super::Metrics>, max_delay: HashMap<String, Duration>) -> Self {
        Self { metrics, max_delay }
    }
}

impl StreamObserver for MetricsObserver {
    fn on_events(&self, events: &[StreamEvent]) {
        use super::metrics::{attr, chain_provider};
        use opentelemetry::KeyValue;
        let mut last_lag = None;
        for e in events {
            match e {
                StreamEvent::Block(b) => {
                    self.metrics
                        .blocks_processed
                        .add(1, &chain_provider(&b.chain, &b.provider));
                    last_lag = Some((b.chain.as_str(), b.lag_ms));
                    // A timestamp ahead of the agent's clock is no delay.
                    let delay_ms = b.lag_ms.max(0) as u64;
                    let chain = [KeyValue::new(attr::CHAIN, b.chain.clone())];
                    // Told inside the block's span: the exemplar points at it.
                    self.metrics.block_delay.record(
                        delay_ms as f64 / 1000.0,
                        &chain,
                        &super::exemplars::span_context_of(&tracing::Span::current()),
                    );
                    let late = self
                        .max_delay
                        .get(&b.chain)
                        .is_some_and(|max| Duration::from_millis(delay_ms) > *max);
                    if late {
                        self.metrics.blocks_late.add(1, &chain);
                    }
                }
                StreamEvent::Reorg(r) => {
                    self.metrics
                        .reorgs
                        .add(1, &[KeyValue::new(attr::CHAIN, r.chain.clone())]);
                }
                StreamEvent::Error(_) => {}
            }
        }
        if let Some((chain, lag_ms)) = last_lag {
            self.metrics.block_lag.record(
                lag_ms as f64 / 1000.0,
                &[KeyValue::new(attr::CHAIN, chain.to_owned())],
            );
        }
    }
}
