//! The canonical stage: decides which fetched blocks join the stream, and in what order.
//!
//! Guarantees:
//! - a block joins only if it extends the tip of the window ([`window`]): blocks leave this stage in
//!   order, each one's `parent_hash` equal to the previous block's `hash`;
//! - a conflicting block is never passed on before the reorg that explains it: its branch is walked
//!   back by parent hash to the common ancestor inside the window ([`Canonical::resolve`]), and the
//!   reorg comes first, then the new branch; a reorg deeper than the window is one error line, and
//!   the chain stops advancing until an operator acts;
//! - every change comes with the [`ChainCommit`] that records it (window, cursor, first block), for
//!   the state store to apply in one transaction after the sinks have the lines;
//! - on start the window is restored from the store, and lines a sink wrote that the cursor does not
//!   cover are adopted ([`Canonical::adopt`]), never written again.

mod window;

use std::{collections::HashMap, time::Instant};

use alloy_primitives::B256;
use tokio_util::sync::CancellationToken;

pub use window::{CanonicalChain, Link};

use crate::{
    config::{ChainConfig, StartAt},
    fetch::{FetchError, Fetched, Fetcher},
    model::{Block, BlockRef, ErrorLine, ReorgLine, StreamEvent},
    store::{ChainCommit, ChainState},
};

/// Blocks that joined the window, and the first one that did not.
#[derive(Debug, Default)]
pub struct Linked {
    /// Blocks that extend the window, in order.
    pub blocks: Vec<Fetched>,
    /// Their record for the state store.
    pub commit: ChainCommit,
    /// The first block that contradicts the window (not joined).
    pub conflict: Option<Fetched>,
}

/// A reorg inside the window: its line, then the new branch (oldest first, each with the hash of
/// the block it replaces, if one was emitted at its height), and their commit.
#[derive(Debug)]
pub struct Reorg {
    /// The reorg line.
    pub line: ReorgLine,
    /// The span of the block that revealed it.
    pub revealed_by: tracing::Span,
    /// The new branch, oldest first.
    pub branch: Vec<(Fetched, Option<B256>)>,
    /// The window's change.
    pub commit: ChainCommit,
}

/// What a conflict turned out to be.
#[derive(Debug)]
pub enum Resolved {
    /// A reorg inside the window.
    Reorg(Box<Reorg>),
    /// A reorg deeper than the window, reported once: the line to publish (no state changes).
    Deep(ErrorLine),
    /// Not resolved now (the same deep reorg again, or the new branch not served yet): later.
    Wait,
}

/// One chain's canonical stage.
#[derive(Debug)]
pub struct Canonical {
    chain: String,
    reorg_window: u64,
    window: CanonicalChain,
    /// Where to start while the window is empty (`None`: at the first head served).
    start_at: Option<u64>,
    /// Re-check the tip's hash on the next step (after a restart, or when a head contradicts it).
    verify_tip: bool,
    /// The tip, and the block that contradicted it, of a too-deep reorg already reported.
    deep_reorg_reported: Option<(BlockRef, BlockRef)>,
    /// The first block this chain's stream ever emitted (since the last `start = "latest"`).
    first_emitted: Option<u64>,
    /// When the newest of the blocks joined was received.
    newest_fetch: Option<Instant>,
}

impl Canonical {
    /// An empty stage for `cfg`'s chain.
    pub fn new(cfg: &ChainConfig) -> Self {
        Self {
            chain: cfg.name.clone(),
            reorg_window: cfg.reorg_window,
            window: CanonicalChain::new(cfg.reorg_window),
            start_at: None,
            verify_tip: false,
            deep_reorg_reported: None,
            first_emitted: None,
            newest_fetch: None,
        }
    }

    /// Takes up the stored `state` (as `cfg.start` says); returns the cursor to resume after.
    pub fn restore(&mut self, cfg: &ChainConfig, state: ChainState) -> Option<BlockRef> {
        let cursor = state.cursor;
        self.first_emitted = state.first_emitted;
        self.window = CanonicalChain::restore(self.reorg_window, state.recent);
        if cursor.is_some() && self.window.tip() != cursor {
            // The window must end at the cursor; anything else is a damaged store.
            tracing::warn!(chain = %self.chain, "stored window does not end at the cursor; restarting the window at the cursor");
            self.window = CanonicalChain::restore(self.reorg_window, cursor.into_iter().collect());
        }
        if cfg.start == StartAt::Latest {
            self.first_emitted = None;
            self.window = CanonicalChain::new(self.reorg_window);
            return None;
        }
        cursor
    }

    /// Starts the stream after `cursor`, or where `start` says when there is none.
    pub fn start(&mut self, cursor: Option<BlockRef>, start: StartAt) {
        self.start_at = match (cursor, start) {
            (Some(c), _) => {
                self.verify_tip = true;
                tracing::info!(chain = %self.chain, cursor = c.number, "resuming after the cursor");
                Some(c.number + 1)
            }
            (None, StartAt::Block(n)) => Some(n),
            (None, _) => None,
        };
    }

    /// Replays `events`, lines a sink wrote but the store did not commit before the last stop;
    /// returns their commit (`None`: nothing to adopt).
    pub fn adopt(&mut self, events: &[StreamEvent]) -> Option<ChainCommit> {
        let mut commit = ChainCommit::default();
        let mut adopted = 0usize;
        for e in events {
            match e {
                StreamEvent::Reorg(r) => {
                    self.window.rollback_to(r.common_ancestor);
                    commit.rollback_above = Some(
                        commit
                            .rollback_above
                            .map_or(r.common_ancestor, |n| n.min(r.common_ancestor)),
                    );
                    commit.added.retain(|b| b.number <= r.common_ancestor);
                }
                StreamEvent::Block(b) => {
                    let block = Block {
                        number: b.block_number,
                        hash: b.hash,
                        parent_hash: b.parent_hash,
                        timestamp: b.timestamp,
                        transactions: b.transactions,
                    };
                    if !self.push(&block, &mut commit) {
                        tracing::warn!(chain = %self.chain, block = b.block_number,
                            "block output line does not extend the stored chain; stopping reconciliation there");
                        break;
                    }
                    adopted += 1;
                }
                StreamEvent::Error(_) => {}
            }
        }
        if adopted == 0 && commit.rollback_above.is_none() {
            return None;
        }
        tracing::info!(chain = %self.chain, blocks = adopted,
            "adopted block lines that were written but not committed before the last stop");
        Some(self.committed(commit))
    }

    /// The tip of the window.
    pub fn tip(&self) -> Option<BlockRef> {
        self.window.tip()
    }

    /// The next block the stream needs (`None`: it starts at the first head served).
    pub fn next_number(&self) -> Option<u64> {
        self.window
            .tip()
            .map(|t| t.number.saturating_add(1))
            .or(self.start_at)
    }

    /// Starts an empty stream at `number` (the first head a provider served).
    pub fn start_at(&mut self, number: u64) {
        self.start_at = Some(number);
    }

    /// Whether the stream has no place to start yet.
    pub fn unstarted(&self) -> bool {
        self.start_at.is_none() && self.window.tip().is_none()
    }

    /// A head of `number` and `hash` was announced: if it contradicts the window, the tip is checked
    /// on the next step.
    pub fn head_announced(&mut self, number: u64, hash: Option<B256>) {
        if let (Some(hash), Some(known)) = (hash, self.window.hash_at(number)) {
            if hash != known {
                self.verify_tip = true;
            }
        }
    }

    /// Whether the tip must be checked against the providers before the stream goes on (after a
    /// restart, or when a head contradicted it).
    pub fn tip_in_doubt(&self) -> bool {
        self.verify_tip
    }

    /// The tip was checked (and any contradiction resolved).
    pub fn tip_verified(&mut self) {
        self.verify_tip = false;
    }

    /// Whether a reorg deeper than the window holds the chain.
    pub fn deep_reorg(&self) -> bool {
        self.deep_reorg_reported.is_some()
    }

    /// Whether `f` was received before a block already joined (calls made at once finish out of
    /// order): a conflict it shows is no evidence of a reorg; asked again, the answer is.
    pub fn stale(&self, f: &Fetched) -> bool {
        self.newest_fetch.is_some_and(|t| f.at < t)
    }

    /// Joins `blocks` in order as long as they extend the window.
    pub fn link(&mut self, blocks: Vec<Fetched>) -> Linked {
        let mut linked = Linked::default();
        for f in blocks {
            match self.window.link(&f.block) {
                Link::First | Link::Extends => {
                    self.push(&f.block, &mut linked.commit);
                    self.newest_fetch = self.newest_fetch.max(Some(f.at));
                    linked.blocks.push(f);
                }
                _ => {
                    linked.conflict = Some(f);
                    break;
                }
            }
        }
        linked.commit = self.committed(std::mem::take(&mut linked.commit));
        linked
    }

    /// `first` contradicts the window: walks its branch back by parent hash (through `fetcher`) to
    /// the common ancestor, and joins it.
    pub async fn resolve(
        &mut self,
        first: Fetched,
        fetcher: &Fetcher,
        cancel: &CancellationToken,
    ) -> Result<Resolved, FetchError> {
        let Some(old_tip) = self.window.tip() else {
            return Ok(Resolved::Wait);
        };
        if self.deep_reorg_reported == Some((old_tip, first.block.as_ref())) {
            // The same contradiction as already reported: nothing new to walk.
            return Ok(Resolved::Wait);
        }
        let oldest = self.window.oldest().map_or(old_tip.number, |o| o.number);
        // When the window still holds the very first block the stream emitted, a branch that leaves
        // it below that block replaces everything ever emitted: the block before it was never
        // emitted, so it serves as the common ancestor. Otherwise leaving the window is a deep reorg.
        let holds_first_emitted = self.first_emitted == Some(oldest);
        let mut branch = vec![first];
        let ancestor = loop {
            let cur = &branch[branch.len() - 1].block;
            let Some(parent_number) = cur.number.checked_sub(1) else {
                return Ok(self.deep(old_tip, &branch[0].block));
            };
            match self.window.hash_at(parent_number) {
                Some(h) if h == cur.parent_hash => break parent_number,
                Some(_) => {}
                None if holds_first_emitted && parent_number < oldest => break parent_number,
                None => return Ok(self.deep(old_tip, &branch[0].block)),
            }
            let Some(parent) = fetcher
                .by_hash(parent_number, cur.parent_hash, cancel)
                .await?
            else {
                tracing::warn!(chain = %self.chain, number = parent_number,
                    "no provider serves the new branch's parent yet; will retry");
                return Ok(Resolved::Wait);
            };
            branch.push(parent);
        };
        let line = ReorgLine {
            chain: self.chain.clone(),
            depth: old_tip.number - ancestor,
            common_ancestor: ancestor,
            old_head: old_tip.into(),
            new_head: branch[0].block.as_ref().into(),
        };
        let revealed_by = branch[0].span.clone();
        // The emitted blocks the new branch replaces.
        let replaced: HashMap<u64, B256> = (ancestor + 1..=old_tip.number)
            .filter_map(|n| self.window.hash_at(n).map(|h| (n, h)))
            .collect();
        self.window.rollback_to(ancestor);
        let mut commit = ChainCommit {
            rollback_above: Some(ancestor),
            ..Default::default()
        };
        let mut joined = Vec::with_capacity(branch.len());
        for f in branch.into_iter().rev() {
            if !self.push(&f.block, &mut commit) {
                break;
            }
            self.newest_fetch = self.newest_fetch.max(Some(f.at));
            let old = replaced.get(&f.block.number).copied();
            joined.push((f, old));
        }
        self.deep_reorg_reported = None;
        Ok(Resolved::Reorg(Box::new(Reorg {
            line,
            revealed_by,
            branch: joined,
            commit: self.committed(commit),
        })))
    }

    /// A reorg deeper than the window: its error line, once per tip.
    fn deep(&mut self, old_tip: BlockRef, seen: &Block) -> Resolved {
        if self
            .deep_reorg_reported
            .is_some_and(|(tip, _)| tip == old_tip)
        {
            return Resolved::Wait;
        }
        self.deep_reorg_reported = Some((old_tip, seen.as_ref()));
        let oldest = self.window.oldest().map_or(old_tip.number, |o| o.number);
        Resolved::Deep(ErrorLine {
            chain: self.chain.clone(),
            kind: "deep_reorg".into(),
            message: format!(
                "block {} ({}) does not connect to the canonical chain within the reorg window \
                 (blocks {oldest}..={}); not following it. To accept the new chain, restart with start = \"latest\"; \
                 to follow reorgs this deep in future, raise reorg_window",
                seen.number, seen.hash, old_tip.number
            ),
            block_number: Some(seen.number),
        })
    }

    /// Appends a block to the window and records it in `commit`; false if it does not link.
    fn push(&mut self, block: &Block, commit: &mut ChainCommit) -> bool {
        let first = self.window.is_empty();
        if !self.window.push(block) {
            return false;
        }
        if first {
            // A fresh window: whatever is stored from an earlier stream is forgotten.
            self.first_emitted = Some(block.number);
            commit.first_emitted = Some(block.number);
            let below = block.number.saturating_sub(1);
            commit.rollback_above = Some(commit.rollback_above.map_or(below, |n| n.min(below)));
        }
        commit.added.push(block.as_ref());
        true
    }

    /// `commit` with the window's tip as the cursor and its oldest block as the pruning point. The
    /// blocks already below it are not stored at all: a batch of 256 blocks caught up would
    /// otherwise write 256 rows for the store to delete all but the window's in the same
    /// transaction.
    fn committed(&self, mut commit: ChainCommit) -> ChainCommit {
        commit.cursor = self.window.tip();
        commit.keep_from = self.window.oldest().map(|o| o.number).unwrap_or(0);
        let keep_from = commit.keep_from;
        commit.added.retain(|b| b.number >= keep_from);
        commit
    }
}
