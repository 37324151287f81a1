//! The JSON shapes blockwatch reads from providers, and their conversion into domain blocks.

use alloy_primitives::{B256, U64};
use serde::{de::IgnoredAny, Deserialize, Deserializer};

use crate::chain::Block;

/// A block as `eth_getBlockByNumber(n, false)` / `eth_getBlockByHash(h, false)` return it (the fields
/// blockwatch needs; the rest is ignored).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcBlock {
    /// Block number.
    pub number: U64,
    /// Block hash.
    pub hash: B256,
    /// Parent block hash.
    pub parent_hash: B256,
    /// Unix timestamp in seconds.
    pub timestamp: U64,
    /// Number of transactions (hashes or objects, only counted).
    #[serde(default, deserialize_with = "count_items")]
    pub transactions: usize,
}

/// A `newHeads` notification.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcHeader {
    /// Block number.
    pub number: U64,
    /// Block hash.
    pub hash: B256,
}

fn count_items<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    Ok(Vec::<IgnoredAny>::deserialize(d)?.len())
}

impl From<RpcBlock> for Block {
    fn from(b: RpcBlock) -> Self {
        Block {
            number: b.number.to::<u64>(),
            hash: b.hash,
            parent_hash: b.parent_hash,
            timestamp: b.timestamp.to::<u64>(),
            transactions: b.transactions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_anvil_block() {
        let json = r#"{"number":"0x1b4","hash":"0xdc0818cf78f21a8e70579cb46a43643f78291264dda342ae31049421c82d21ae",
            "parentHash":"0xe99e022112df268087ea7eafaf4790497fd21dbeeb6bd7a1721df161a6657a54",
            "timestamp":"0x55ba467c","transactions":["0x01","0x02"],"miner":"0x0000000000000000000000000000000000000000"}"#;
        let b: Block = serde_json::from_str::<RpcBlock>(json).unwrap().into();
        assert_eq!(b.number, 436);
        assert_eq!(b.timestamp, 0x55ba467c);
        assert_eq!(b.transactions, 2);
    }

    #[test]
    fn rejects_a_block_without_hash() {
        assert!(serde_json::from_str::<RpcBlock>(
            r#"{"number":"0x1","parentHash":"0x00","timestamp":"0x1"}"#
        )
        .is_err());
    }
}
