//! A devnet provider's own view of the shared chain: its fault, the head it froze at, the blocks it
//! never serves, and what it has seen of requests. The node's RPC methods and the HTTP fault layer
//! read and update it; it depends on nothing but the fault type.

use std::{
    collections::BTreeSet,
    sync::{atomic::AtomicU64, Arc},
};

use alloy_primitives::U64;
use serde_json::{json, Value};

use super::fault::Fault;

/// Skipped block numbers remembered per provider.
const MAX_SKIPPED: usize = 1_000;

/// A provider's own view: its fault, the head it froze at, and the blocks it never serves.
#[derive(Debug, Default)]
pub(crate) struct ProviderState {
    pub(crate) fault: Option<Fault>,
    /// With the `stale` fault: the head the provider is stuck at.
    pub(crate) stale_head: Option<u64>,
    /// Blocks this provider never serves nor announces (`devnet_skipBlock`).
    pub(crate) skipped: BTreeSet<u64>,
    /// HTTP requests received (WebSocket calls are not counted).
    pub(crate) requests: Arc<AtomicU64>,
    /// The `traceparent` header of the latest HTTP request that had one.
    pub(crate) last_traceparent: Option<String>,
    /// Makes its `bad_hash` hashes its own (from its name).
    pub(crate) salt: u8,
}

impl ProviderState {
    pub(crate) fn visible_head(&self, canonical_head: u64) -> u64 {
        self.stale_head
            .map_or(canonical_head, |s| s.min(canonical_head))
    }

    /// The head it says it has: the visible one, moved by a `head_offset` fault.
    pub(crate) fn claimed_head(&self, canonical_head: u64) -> u64 {
        let head = self.visible_head(canonical_head);
        match self.fault {
            Some(Fault::HeadOffset { blocks }) => head.saturating_add_signed(blocks),
            _ => head,
        }
    }

    /// `eth_syncing`: `false`, or while the provider is `stale` the object geth answers while it
    /// syncs, its current block the stale head and its highest block the canonical head.
    pub(crate) fn syncing(&self, canonical_head: u64) -> Value {
        match self.stale_head {
            Some(_) => {
                let current = U64::from(self.visible_head(canonical_head));
                json!({
                    "startingBlock": current,
                    "currentBlock": current,
                    "highestBlock": U64::from(canonical_head),
                })
            }
            None => Value::Bool(false),
        }
    }

    pub(crate) fn serves(&self, number: u64, canonical_head: u64) -> bool {
        number <= self.visible_head(canonical_head) && !self.skipped.contains(&number)
    }

    pub(crate) fn skip(&mut self, number: u64) {
        self.skipped.insert(number);
        while self.skipped.len() > MAX_SKIPPED {
            self.skipped.pop_first();
        }
    }
}
