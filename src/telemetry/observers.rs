//! The stream's telemetry observers: a log line per processed block (info), reorg (warn) and error
//! line (error), and the stream's metrics (blocks processed per provider, the newest block's lag,
//! reorgs). Both receive each committed line in its block's `process_block` span.

use std::sync::Arc;

use crate::model::{StreamEvent, StreamObserver};

/// Logs every processed block at info, reorgs at warn and errors at error.
#[derive(Debug, Default)]
pub struct LogObserver;

impl StreamObserver for LogObserver {
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

/// Records the stream's metrics: blocks processed (per provider), the newest block's lag, reorgs.
#[derive(Debug)]
pub struct MetricsObserver {
    metrics: Arc<super::Metrics>,
}

impl MetricsObserver {
    /// An observer recording into `metrics`.
    pub fn new(metrics: Arc<super::Metrics>) -> Self {
        Self { metrics }
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
