//! Blocks as blockwatch reasons about them.

use alloy_primitives::B256;

/// A block's identity: its number and hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockRef {
    /// Block number.
    pub number: u64,
    /// Block hash.
    pub hash: B256,
}

/// The fields of a block that the stream carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Block number.
    pub number: u64,
    /// Block hash.
    pub hash: B256,
    /// Parent block hash.
    pub parent_hash: B256,
    /// Unix timestamp in seconds.
    pub timestamp: u64,
    /// Number of transactions.
    pub transactions: usize,
}

impl Block {
    /// This block's identity.
    pub fn as_ref(&self) -> BlockRef {
        BlockRef {
            number: self.number,
            hash: self.hash,
        }
    }
}
