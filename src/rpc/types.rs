//! The JSON shapes blockwatch reads from providers, and their conversion into domain blocks.

use alloy_primitives::{B256, U64};
use serde::{de::IgnoredAny, Deserialize, Deserializer};

use super::RpcError;
use crate::model::Block;

/// A block as `eth_getBlockByNumber(n, false)` / `eth_getBlockByHash(h, false)` return it: the full
/// header (so that its hash can be recomputed) and the transaction count.
#[derive(Clone, Debug, Deserialize)]
pub struct RpcBlock {
    /// The header, with the hash the provider claims for it.
    #[serde(flatten)]
    pub header: alloy_rpc_types_eth::Header,
    /// Number of transactions (hashes or objects, only counted).
    #[serde(default, deserialize_with = "count_items")]
    pub transactions: usize,
}

impl RpcBlock {
    /// The block number.
    pub fn number(&self) -> u64 {
        self.header.inner.number
    }

    /// Checks that the claimed hash is the keccak of the header's RLP encoding: a provider that
    /// serves a block whose hash does not match its header is serving something broken.
    pub fn verify_hash(&self) -> Result<(), RpcError> {
        let computed = self.header.inner.hash_slow();
        if computed == self.header.hash {
            Ok(())
        } else {
            Err(RpcError::HeaderHash {
                number: self.number(),
                claimed: self.header.hash,
                computed,
            })
        }
    }

    /// Checks the block's hash as the chain's `block_hash_check` says: recomputed from the header
    /// (`header`), or not at all here (`consensus`: the providers' agreement is checked instead).
    pub fn check_hash(&self, check: crate::config::BlockHashCheck) -> Result<(), RpcError> {
        match check {
            crate::config::BlockHashCheck::Header => self.verify_hash(),
            crate::config::BlockHashCheck::Consensus => Ok(()),
        }
    }

    /// Checks that it is block `number` (another one is a [`RpcError::WrongBlock`]) and that its
    /// hash is right (by `check`).
    pub fn check_number(
        &self,
        number: u64,
        check: crate::config::BlockHashCheck,
    ) -> Result<(), RpcError> {
        if self.number() != number {
            return Err(RpcError::WrongBlock(format!(
                "asked for block {number}, got block {} ({})",
                self.number(),
                self.header.hash
            )));
        }
        self.check_hash(check)
    }
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
            number: b.header.inner.number,
            hash: b.header.hash,
            parent_hash: b.header.inner.parent_hash,
            timestamp: b.header.inner.timestamp,
            transactions: b.transactions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Block 1 as anvil 1.7 served it.
    const ANVIL_BLOCK: &str = r#"{"hash":"0xHASH","parentHash":"0x8e9ef2f832c1c8d38bb6f2152212fd9cd7f4ef93351fe033185ed339d3145dbd",
        "sha3Uncles":"0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347",
        "miner":"0x0000000000000000000000000000000000000000",
        "stateRoot":"0x3b1b1a6a3a6e8e2b8c2c5b0b8c6a2b3a0e3b5e1f8c7d5e2a3b4c5d6e7f8a9b0c",
        "transactionsRoot":"0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421",
        "receiptsRoot":"0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421",
        "logsBloom":"0xBLOOM",
        "difficulty":"0x0","number":"0x1","gasLimit":"0x1c9c380","gasUsed":"0x0","timestamp":"0x6a4c2a10",
        "extraData":"0x","mixHash":"0x0000000000000000000000000000000000000000000000000000000000000000",
        "nonce":"0x0000000000000000","baseFeePerGas":"0x3b9aca00",
        "withdrawalsRoot":"0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421",
        "blobGasUsed":"0x0","excessBlobGas":"0x0",
        "parentBeaconBlockRoot":"0x0000000000000000000000000000000000000000000000000000000000000000",
        "requestsHash":"0xe3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "size":"0x25d","uncles":[],"transactions":["0x01","0x02"],"withdrawals":[]}"#;

    fn with_hash(hash: &str) -> String {
        ANVIL_BLOCK
            .replace("0xHASH", hash)
            .replace("0xBLOOM", &format!("0x{}", "00".repeat(256)))
    }

    #[test]
    fn parses_a_full_block_and_checks_its_hash() {
        let wrong = format!("0x{}", "11".repeat(32));
        let b: RpcBlock = serde_json::from_str(&with_hash(&wrong)).unwrap();
        assert_eq!(b.number(), 1);
        assert_eq!(b.transactions, 2);
        let err = b.verify_hash().unwrap_err();
        assert!(err.to_string().contains("hashes to"), "{err}");
        let right = b.header.inner.hash_slow();
        let b: RpcBlock = serde_json::from_str(&with_hash(&right.to_string())).unwrap();
        b.verify_hash().unwrap();
        let block = Block::from(b);
        assert_eq!(
            (block.number, block.hash, block.timestamp),
            (1, right, 0x6a4c2a10)
        );
    }

    #[test]
    fn rejects_a_block_without_hash() {
        let text = with_hash("0x00").replace("\"hash\":\"0x00\",", "");
        assert!(serde_json::from_str::<RpcBlock>(&text).is_err());
    }
}
