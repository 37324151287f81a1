//! What a chain's stream has done lately, as the HTTP API shows it: the last block processed, when,
//! and how late.

use std::{
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use alloy_primitives::B256;

use crate::model::{StreamEvent, StreamObserver};

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

/// A backlog the stream is working through (after a restart, an outage, a burst of blocks, or a
/// start far behind the head).
#[derive(Clone, Copy, Debug)]
struct Backlog {
    from: u64,
    to: u64,
    started: std::time::Instant,
}

/// A catch-up as `/status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct CatchUp {
    /// The first block of the backlog.
    pub from: u64,
    /// The head it is catching up to (it grows while the chain does).
    pub to: u64,
    /// Blocks of it emitted so far.
    pub done: u64,
    /// Blocks emitted per second since it started.
    pub blocks_per_second: f64,
    /// Seconds left at that pace (`null` before the first block).
    pub eta_seconds: Option<f64>,
}

/// Records the last block of one chain's stream.
#[derive(Debug)]
pub struct Progress {
    last: Mutex<Option<LastBlock>>,
    /// When the last block was emitted (or the agent started, before the first).
    emitted_at: Mutex<std::time::Instant>,
    backlog: Mutex<Option<Backlog>>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            last: Mutex::new(None),
            emitted_at: Mutex::new(std::time::Instant::now()),
            backlog: Mutex::new(None),
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

    /// The stream has blocks `from..=to` to fetch, more than one poll's worth: it is catching up
    /// (a catch-up under way keeps its start and grows to `to`).
    pub fn behind(&self, from: u64, to: u64) {
        let mut b = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *b {
            Some(b) => b.to = b.to.max(to),
            None => {
                *b = Some(Backlog {
                    from,
                    to,
                    started: std::time::Instant::now(),
                })
            }
        }
    }

    /// The stream has reached the head: no catch-up under way.
    pub fn caught_up(&self) {
        *self.backlog.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The catch-up under way, if there is one.
    pub fn catch_up(&self) -> Option<CatchUp> {
        let b = (*self.backlog.lock().unwrap_or_else(|p| p.into_inner()))?;
        let done = self
            .last()
            .map_or(0, |l| (l.number + 1).saturating_sub(b.from))
            .min(b.to + 1 - b.from.min(b.to + 1));
        let secs = b.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let left = (b.to + 1).saturating_sub(b.from).saturating_sub(done);
        Some(CatchUp {
            from: b.from,
            to: b.to,
            done,
            blocks_per_second: (rate * 10.0).round() / 10.0,
            eta_seconds: (rate > 0.0).then(|| ((left as f64 / rate) * 10.0).round() / 10.0),
        })
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
