//! The block stream's events: the lines a sink writes (`{"type":"block"|"reorg"|"error",…}`) and
//! every observer of the stream receives.

use alloy_primitives::B256;
use serde::{Deserialize, Serialize};

use super::{BlockRef, MissedBlock};

/// One line of the block stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// A canonical block.
    Block(BlockLine),
    /// The canonical chain changed; the new blocks follow.
    Reorg(ReorgLine),
    /// Something the stream could not follow (a reorg deeper than the window).
    Error(ErrorLine),
}

impl StreamEvent {
    /// The chain the line belongs to.
    pub fn chain(&self) -> &str {
        match self {
            StreamEvent::Block(b) => &b.chain,
            StreamEvent::Reorg(r) => &r.chain,
            StreamEvent::Error(e) => &e.chain,
        }
    }
}

/// `{"type":"block",…}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockLine {
    /// Chain name.
    pub chain: String,
    /// Block number.
    pub block_number: u64,
    /// Block hash.
    pub hash: B256,
    /// Parent hash: the previous line's hash.
    pub parent_hash: B256,
    /// Block timestamp (Unix seconds).
    pub timestamp: u64,
    /// Transaction count.
    pub transactions: usize,
    /// The provider that served the block.
    pub provider: String,
    /// When blockwatch had the block (RFC 3339, UTC, milliseconds).
    pub received_at: String,
    /// `received_at` minus the block timestamp, in milliseconds.
    pub lag_ms: i64,
}

impl BlockLine {
    /// The block's identity.
    pub fn block_ref(&self) -> BlockRef {
        BlockRef {
            number: self.block_number,
            hash: self.hash,
        }
    }
}

/// A block identity in a reorg line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadRef {
    /// Block number.
    pub number: u64,
    /// Block hash.
    pub hash: B256,
}

impl From<BlockRef> for HeadRef {
    fn from(r: BlockRef) -> Self {
        HeadRef {
            number: r.number,
            hash: r.hash,
        }
    }
}

/// `{"type":"reorg",…}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReorgLine {
    /// Chain name.
    pub chain: String,
    /// Canonical blocks replaced (old head number minus common ancestor).
    pub depth: u64,
    /// The last block both branches share.
    pub common_ancestor: u64,
    /// The canonical head before the reorg.
    pub old_head: HeadRef,
    /// The block of the new branch that revealed the reorg.
    pub new_head: HeadRef,
}

/// `{"type":"error",…}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorLine {
    /// Chain name.
    pub chain: String,
    /// What happened, e.g. `deep_reorg`.
    pub kind: String,
    /// A readable account.
    pub message: String,
    /// The block concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_number: Option<u64>,
}

/// Something that sees the stream after each batch is written and committed (logs, metrics, the
/// catch-up progress, the demo's narrator). Called on the follower's task, inside the span of the
/// block concerned: must not block.
pub trait StreamObserver: Send + Sync {
    /// `events` were written and committed, in this order.
    fn on_events(&self, events: &[StreamEvent]);

    /// A miss was stored: one found open (no provider could serve the block, it is overdue, or a
    /// provider skipped it) or one found with its block (late, or recovered after attempts), in the
    /// order they were stored. Later states of an open miss (attempts made, retries used up) are
    /// stored without telling again.
    fn on_missed(&self, _record: &MissedBlock) {}
}
