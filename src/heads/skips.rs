//! Skips leave the heads stage as data: blocks a provider skipped (a gap in its `newHeads`
//! sequence that it does not serve either, or `null` twice for a block at or below its own head)
//! are queued, bounded, under the provider's name, until the follower takes them through its
//! [`Skips`] handle.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

/// Skips kept until the follower takes them.
const MAX_PENDING: usize = 256;

/// Blocks `first..=last` that `provider` skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    /// The provider's name.
    pub provider: String,
    /// The first block skipped.
    pub first: u64,
    /// The last block skipped.
    pub last: u64,
}

/// The queue of skips of one chain; clones share it.
#[derive(Clone, Debug, Default)]
pub struct Skips {
    queue: Arc<Mutex<VecDeque<Skip>>>,
}

impl Skips {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Skip>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a skip (the oldest is dropped past the bound).
    pub fn push(&self, skip: Skip) {
        let mut q = self.lock();
        if q.len() >= MAX_PENDING {
            q.pop_front();
        }
        q.push_back(skip);
    }

    /// Takes every skip queued, oldest first.
    pub fn take(&self) -> Vec<Skip> {
        self.lock().drain(..).collect()
    }
}
