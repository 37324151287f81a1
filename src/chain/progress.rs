//! What a chain's stream has done lately, as the HTTP API shows it: the last block processed, when,
//! and how late.

use std::{
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use alloy_primitives::B256;

use super::follower::StreamObserver;
use crate::output::StreamEvent;

/// The last block a chain emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastBlock {
    /// Its number.
    pub number: u64,
    /// Its hash.
    pub hash: B256,
    /// Its timestamp (Unix seconds).
    pub timestamp: u64,
    /// How late it was emitted, in milliseconds.
    pub lag_ms: i64,
}

/// Records the last block of one chain's stream.
#[derive(Debug)]
pub struct Progress {
    last: Mutex<Option<LastBlock>>,
    /// When the last block was emitted (or the agent started, before the first).
    emitted_at: Mutex<std::time::Instant>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            last: Mutex::new(None),
            emitted_at: Mutex::new(std::time::Instant::now()),
        }
    }
}

impl Progress {
    /// How long ago the last block was emitted (since start, before the first).
    pub fn since_last_block(&self) -> std::time::Duration {
        self.emitted_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// The last block emitted, if any.
    pub fn last(&self) -> Option<LastBlock> {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds between the last block's timestamp and now (`None` before the first block).
    pub fn seconds_behind(&self) -> Option<f64> {
        let last = self.last()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        Some((now - last.timestamp as f64).max(0.0))
    }
}

impl StreamObserver for Progress {
    fn on_events(&self, events: &[StreamEvent]) {
        for e in events {
            if let StreamEvent::Block(b) = e {
                *self.emitted_at.lock().unwrap_or_else(|p| p.into_inner()) =
                    std::time::Instant::now();
                *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(LastBlock {
                    number: b.block_number,
                    hash: b.hash,
                    timestamp: b.timestamp,
                    lag_ms: b.lag_ms,
                });
            }
        }
    }
}
