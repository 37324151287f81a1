//! Call outcomes over a sliding window in fixed memory: how many calls, failures and rate-limited
//! calls the latest window holds, from which the error rate and rate-limit pressure follow.

use std::time::{Duration, Instant};

use super::BUCKETS;

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Bucket {
    slot: u64,
    pub(super) ok: u64,
    pub(super) failed: u64,
    pub(super) throttled: u64,
}

/// Call outcomes over the last window, in [`BUCKETS`] slots.
#[derive(Debug)]
pub(super) struct OutcomeWindow {
    origin: Instant,
    slot_len: Duration,
    buckets: [Bucket; BUCKETS],
}

/// Sums over a window of call outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    /// Calls answered or failed.
    pub calls: u64,
    /// Failed calls.
    pub failed: u64,
    /// Calls that were rate-limited (by the provider or the client-side limit).
    pub throttled: u64,
}

impl Rates {
    /// Failed share of calls (0 without calls).
    pub fn error_rate(&self) -> f64 {
        ratio(self.failed, self.calls)
    }

    /// Rate-limited share of calls (0 without calls).
    pub fn pressure(&self) -> f64 {
        ratio(self.throttled, self.calls).min(1.0)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl OutcomeWindow {
    pub(super) fn new(window: Duration, now: Instant) -> Self {
        let slot_len = (window / BUCKETS as u32).max(Duration::from_millis(10));
        Self {
            origin: now,
            slot_len,
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    fn slot(&self, now: Instant) -> u64 {
        // Slot 0 is never used, so that a zeroed bucket is never mistaken for a current one.
        (now.saturating_duration_since(self.origin).as_nanos() / self.slot_len.as_nanos()) as u64
            + 1
    }

    pub(super) fn bucket(&mut self, now: Instant) -> &mut Bucket {
        let slot = self.slot(now);
        let b = &mut self.buckets[(slot % BUCKETS as u64) as usize];
        if b.slot != slot {
            *b = Bucket {
                slot,
                ..Bucket::default()
            };
        }
        b
    }

    pub(super) fn sum(&self, now: Instant) -> Rates {
        let current = self.slot(now);
        self.buckets
            .iter()
            // A bucket newer than `now` (another thread recorded after `now` was read) counts too.
            .filter(|b| b.slot != 0 && current.saturating_sub(b.slot) < BUCKETS as u64)
            .fold(Rates::default(), |r, b| Rates {
                calls: r.calls + b.ok + b.failed,
                failed: r.failed + b.failed,
                throttled: r.throttled + b.throttled,
            })
    }
}
