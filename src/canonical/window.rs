//! The canonical window: the last `reorg_window` emitted blocks of a chain, contiguous by number.
//! A new block is accepted only if it extends the tip; anything else is a reorg to resolve first.

use std::collections::VecDeque;

use alloy_primitives::B256;

use crate::model::{Block, BlockRef};

/// How a fetched block relates to the canonical tip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// The window is empty: the block starts the chain.
    First,
    /// The block is the tip's child.
    Extends,
    /// The block is already canonical (same number and hash).
    Known,
    /// The block contradicts the window: a different hash at a known height, or a child of the
    /// next height whose parent is not the tip.
    Conflicts,
    /// The block is beyond the tip's child: the blocks between are missing.
    Ahead,
    /// The block is older than the window.
    Behind,
}

/// The recent canonical chain.
#[derive(Clone, Debug)]
pub struct CanonicalChain {
    window: usize,
    blocks: VecDeque<BlockRef>,
}

impl CanonicalChain {
    /// An empty window for reorgs up to `window` blocks deep: it keeps `window + 1` blocks, since
    /// the common ancestor of a reorg that replaces `window` blocks must still be known.
    pub fn new(window: u64) -> Self {
        let window = usize::try_from(window.max(1).saturating_add(1)).unwrap_or(usize::MAX);
        Self {
            window,
            blocks: VecDeque::new(),
        }
    }

    /// A window restored from stored refs (any order). Only the contiguous run ending at the highest
    /// block is kept, so a damaged store cannot produce a window with holes.
    pub fn restore(window: u64, mut refs: Vec<BlockRef>) -> Self {
        let mut chain = Self::new(window);
        refs.sort_by_key(|r| r.number);
        refs.dedup_by_key(|r| r.number);
        let mut run_start = refs.len();
        while run_start > 0 {
            let i = run_start - 1;
            if run_start < refs.len() && refs[i].number + 1 != refs[run_start].number {
                break;
            }
            run_start = i;
        }
        for r in refs.into_iter().skip(run_start) {
            chain.blocks.push_back(r);
        }
        while chain.blocks.len() > chain.window {
            chain.blocks.pop_front();
        }
        chain
    }

    /// The newest canonical block.
    pub fn tip(&self) -> Option<BlockRef> {
        self.blocks.back().copied()
    }

    /// The oldest block still in the window.
    pub fn oldest(&self) -> Option<BlockRef> {
        self.blocks.front().copied()
    }

    /// The canonical hash at `number`, if it is in the window.
    pub fn hash_at(&self, number: u64) -> Option<B256> {
        let first = self.blocks.front()?.number;
        let idx = usize::try_from(number.checked_sub(first)?).ok()?;
        self.blocks.get(idx).map(|r| r.hash)
    }

    /// How `block` relates to the window.
    pub fn link(&self, block: &Block) -> Link {
        let Some(tip) = self.tip() else {
            return Link::First;
        };
        if block.number == tip.number + 1 {
            return if block.parent_hash == tip.hash {
                Link::Extends
            } else {
                Link::Conflicts
            };
        }
        if block.number > tip.number + 1 {
            return Link::Ahead;
        }
        match self.hash_at(block.number) {
            Some(h) if h == block.hash => Link::Known,
            Some(_) => Link::Conflicts,
            None => Link::Behind,
        }
    }

    /// Appends a block that [`Link::First`]s or [`Link::Extends`] the window; returns false (and
    /// changes nothing) for any other block.
    pub fn push(&mut self, block: &Block) -> bool {
        if !matches!(self.link(block), Link::First | Link::Extends) {
            return false;
        }
        self.blocks.push_back(block.as_ref());
        if self.blocks.len() > self.window {
            self.blocks.pop_front();
        }
        true
    }

    /// Drops every block above `number`.
    pub fn rollback_to(&mut self, number: u64) {
        while self.blocks.back().is_some_and(|r| r.number > number) {
            self.blocks.pop_back();
        }
    }

    /// Blocks in the window.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The blocks in the window, oldest first.
    pub fn refs(&self) -> impl Iterator<Item = &BlockRef> {
        self.blocks.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u64, fork: u8) -> B256 {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&n.to_be_bytes());
        b[31] = fork;
        B256::from(b)
    }

    fn block(n: u64, fork: u8, parent_fork: u8) -> Block {
        Block {
            number: n,
            hash: h(n, fork),
            parent_hash: h(n.wrapping_sub(1), parent_fork),
            timestamp: n,
            transactions: 0,
        }
    }

    #[test]
    fn extends_and_trims_to_window() {
        let mut c = CanonicalChain::new(3);
        for n in 10..15 {
            assert!(c.push(&block(n, 0, 0)));
        }
        assert_eq!(c.tip().unwrap().number, 14);
        assert_eq!(
            c.oldest().unwrap().number,
            11,
            "a 3-deep reorg's ancestor (11) is kept"
        );
        assert_eq!(c.hash_at(10), None);
        assert_eq!(c.hash_at(13), Some(h(13, 0)));
    }

    #[test]
    fn classifies_conflicts_gaps_and_known_blocks() {
        let mut c = CanonicalChain::new(8);
        for n in 1..=5 {
            c.push(&block(n, 0, 0));
        }
        assert_eq!(c.link(&block(6, 0, 0)), Link::Extends);
        assert_eq!(c.link(&block(6, 1, 1)), Link::Conflicts);
        assert_eq!(c.link(&block(4, 1, 1)), Link::Conflicts);
        assert_eq!(c.link(&block(4, 0, 0)), Link::Known);
        assert_eq!(c.link(&block(8, 0, 0)), Link::Ahead);
        assert!(!c.push(&block(6, 1, 1)));
        c.rollback_to(3);
        assert_eq!(c.tip().unwrap().number, 3);
        assert!(c.push(&block(4, 1, 0)));
    }

    #[test]
    fn restore_keeps_the_contiguous_top_run() {
        let refs = vec![
            BlockRef {
                number: 9,
                hash: h(9, 0),
            },
            BlockRef {
                number: 3,
                hash: h(3, 0),
            },
            BlockRef {
                number: 7,
                hash: h(7, 0),
            },
            BlockRef {
                number: 8,
                hash: h(8, 0),
            },
        ];
        let c = CanonicalChain::restore(9, refs);
        let numbers: Vec<u64> = c.refs().map(|r| r.number).collect();
        assert_eq!(numbers, vec![7, 8, 9]);
        assert_eq!(CanonicalChain::restore(2, vec![]).tip(), None);
    }
}
