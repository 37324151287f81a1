//! The JSON shapes blockwatch reads from providers, and their conversion into domain blocks.

use alloy_primitives::{Address, Bloom, Bytes, B256, B64, U256, U64};
use serde::{de::IgnoredAny, Deserialize, Deserializer};

use super::RpcError;
use crate::model::Block;

/// A block as `eth_getBlockByNumber(n, false)` / `eth_getBlockByHash(h, false)` return it: the full
/// header (so that its hash can be recomputed) and the transaction count.
///
/// Decoded through [`WireBlock`], field by field in one pass: every other field of the answer
/// (`size`, `uncles`, `withdrawals`, `totalDifficulty`, a chain's own additions) is skipped
/// without being buffered.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "WireBlock")]
pub struct RpcBlock {
    /// The header, with the hash the provider claims for it.
    pub header: alloy_rpc_types_eth::Header,
    /// Number of transactions (hashes or objects, only counted).
    pub transactions: usize,
}

/// The fields of a block answer that blockwatch reads: the claimed hash, every field of the header
/// that goes into its hash (those of later forks optional, as in [`alloy_consensus::Header`], with
/// the same names and encodings) and the transactions, counted. A missing or malformed field is an
/// error that names it; unknown fields are skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireBlock {
    hash: B256,
    parent_hash: B256,
    #[serde(rename = "sha3Uncles", alias = "ommersHash")]
    ommers_hash: B256,
    #[serde(rename = "miner", alias = "beneficiary")]
    beneficiary: Address,
    state_root: B256,
    transactions_root: B256,
    receipts_root: B256,
    logs_bloom: Bloom,
    difficulty: U256,
    number: U64,
    gas_limit: U64,
    gas_used: U64,
    timestamp: U64,
    extra_data: Bytes,
    mix_hash: B256,
    nonce: B64,
    #[serde(default)]
    base_fee_per_gas: Option<U64>,
    #[serde(default)]
    withdrawals_root: Option<B256>,
    #[serde(default)]
    blob_gas_used: Option<U64>,
    #[serde(default)]
    excess_blob_gas: Option<U64>,
    #[serde(default)]
    parent_beacon_block_root: Option<B256>,
    #[serde(default)]
    requests_hash: Option<B256>,
    #[serde(default)]
    block_access_list_hash: Option<B256>,
    #[serde(default)]
    slot_number: Option<U64>,
    #[serde(default, deserialize_with = "count_items")]
    transactions: usize,
}

impl From<WireBlock> for RpcBlock {
    fn from(w: WireBlock) -> Self {
        let u64_of = |q: U64| q.to::<u64>();
        let inner = alloy_consensus::Header {
            parent_hash: w.parent_hash,
            ommers_hash: w.ommers_hash,
            beneficiary: w.beneficiary,
            state_root: w.state_root,
            transactions_root: w.transactions_root,
            receipts_root: w.receipts_root,
            logs_bloom: w.logs_bloom,
            difficulty: w.difficulty,
            number: u64_of(w.number),
            gas_limit: u64_of(w.gas_limit),
            gas_used: u64_of(w.gas_used),
            timestamp: u64_of(w.timestamp),
            extra_data: w.extra_data,
            mix_hash: w.mix_hash,
            nonce: w.nonce,
            base_fee_per_gas: w.base_fee_per_gas.map(u64_of),
            withdrawals_root: w.withdrawals_root,
            blob_gas_used: w.blob_gas_used.map(u64_of),
            excess_blob_gas: w.excess_blob_gas.map(u64_of),
            parent_beacon_block_root: w.parent_beacon_block_root,
            requests_hash: w.requests_hash,
            block_access_list_hash: w.block_access_list_hash,
            slot_number: w.slot_number.map(u64_of),
        };
        RpcBlock {
            header: alloy_rpc_types_eth::Header {
                hash: w.hash,
                inner,
                total_difficulty: None,
                size: None,
            },
            transactions: w.transactions,
        }
    }
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

    /// Block 2 as anvil 1.7.1 served it, with two transfers: by `eth_getBlockByNumber(2, false)`
    /// and `(2, true)`.
    const ANVIL_HASHES: &str = include_str!("testdata/anvil-block-2-hashes.json");
    const ANVIL_FULL: &str = include_str!("testdata/anvil-block-2-full.json");

    #[test]
    fn a_served_block_with_transactions_hashes_to_its_claim() {
        for text in [ANVIL_HASHES, ANVIL_FULL] {
            let b: RpcBlock = serde_json::from_slice(text.as_bytes()).unwrap();
            b.verify_hash().unwrap();
            assert_eq!((b.number(), b.transactions), (2, 2));
            assert_eq!(b.header.inner.gas_used, 0xa410);
            assert_eq!(b.header.inner.base_fee_per_gas, Some(0x342770c0));
            // The same header as alloy's own decoding of the block's header.
            let alloy: alloy_rpc_types_eth::Header = serde_json::from_str(text).unwrap();
            assert_eq!(b.header.inner, alloy.inner);
            assert_eq!(b.header.hash, alloy.hash);
        }
    }

    /// A header of each fork's shape (the optional fields each fork added), with no field zero.
    fn headers_of_each_fork() -> Vec<(&'static str, alloy_consensus::Header)> {
        let h = |n: u8| B256::repeat_byte(n);
        let frontier = alloy_consensus::Header {
            parent_hash: h(1),
            ommers_hash: h(2),
            beneficiary: Address::repeat_byte(3),
            state_root: h(4),
            transactions_root: h(5),
            receipts_root: h(6),
            logs_bloom: Bloom::repeat_byte(7),
            difficulty: U256::from(0x2_0000_0000_u64),
            number: 19_000_000,
            gas_limit: 30_000_000,
            gas_used: 12_345_678,
            timestamp: 1_700_000_000,
            extra_data: Bytes::from_static(b"blockwatch extra data"),
            mix_hash: h(8),
            nonce: B64::repeat_byte(9),
            ..Default::default()
        };
        let london = alloy_consensus::Header {
            base_fee_per_gas: Some(7_000_000_000),
            ..frontier.clone()
        };
        let shanghai = alloy_consensus::Header {
            withdrawals_root: Some(h(10)),
            ..london.clone()
        };
        let cancun = alloy_consensus::Header {
            blob_gas_used: Some(0x60000),
            excess_blob_gas: Some(0x20000),
            parent_beacon_block_root: Some(h(11)),
            ..shanghai.clone()
        };
        let prague = alloy_consensus::Header {
            requests_hash: Some(h(12)),
            ..cancun.clone()
        };
        let amsterdam = alloy_consensus::Header {
            block_access_list_hash: Some(h(13)),
            slot_number: Some(12_345),
            ..prague.clone()
        };
        vec![
            ("frontier", frontier),
            ("london", london),
            ("shanghai", shanghai),
            ("cancun", cancun),
            ("prague", prague),
            ("amsterdam", amsterdam),
        ]
    }

    /// `header` as a provider serves it (alloy's encoding, with the fields blockwatch skips).
    fn served(header: &alloy_consensus::Header, transactions: serde_json::Value) -> String {
        let rpc = alloy_rpc_types_eth::Header {
            hash: header.hash_slow(),
            inner: header.clone(),
            total_difficulty: Some(U256::from(58_750_003_716_598_352_816_469_u128)),
            size: Some(U256::from(0x1faa2)),
        };
        let mut v = serde_json::to_value(rpc).unwrap();
        v["transactions"] = transactions;
        v["uncles"] = serde_json::json!([]);
        v["withdrawals"] = serde_json::json!([{"index": "0x1", "validatorIndex": "0x2",
            "address": "0x25c4a76e7d118705e7ea2e9b7d8c59930d8acd3b", "amount": "0x38e71"}]);
        v["l1FeeRate"] = serde_json::json!("0xdf847580");
        v.to_string()
    }

    #[test]
    fn every_fork_shape_decodes_to_the_header_that_hashes_to_its_claim() {
        let hashes = serde_json::json!([
            format!("{}", B256::repeat_byte(0xaa)),
            format!("{}", B256::repeat_byte(0xbb))
        ]);
        for (fork, header) in headers_of_each_fork() {
            let b: RpcBlock = serde_json::from_str(&served(&header, hashes.clone()))
                .unwrap_or_else(|e| panic!("{fork}: {e}"));
            assert_eq!(b.header.inner, header, "{fork}");
            assert_eq!(b.transactions, 2, "{fork}");
            b.verify_hash().unwrap_or_else(|e| panic!("{fork}: {e}"));
            b.check_number(19_000_000, crate::config::BlockHashCheck::Header)
                .unwrap();
        }
    }

    #[test]
    fn transactions_may_be_hashes_objects_empty_or_absent() {
        let header = headers_of_each_fork().pop().unwrap().1;
        let object = serde_json::json!({"hash": format!("{}", B256::repeat_byte(1)), "input": "0x", "accessList": []});
        for (transactions, count) in [
            (serde_json::json!([]), 0),
            (
                serde_json::json!([object.clone(), object.clone(), object]),
                3,
            ),
        ] {
            let b: RpcBlock = serde_json::from_str(&served(&header, transactions)).unwrap();
            assert_eq!(b.transactions, count);
        }
        let mut v: serde_json::Value =
            serde_json::from_str(&served(&header, serde_json::json!([]))).unwrap();
        v.as_object_mut().unwrap().remove("transactions");
        let b: RpcBlock = serde_json::from_value(v).unwrap();
        assert_eq!(b.transactions, 0);
    }

    /// A required field missing is an error that names it; a malformed one, an error that says
    /// what is wrong with it and where.
    #[test]
    fn a_missing_or_malformed_field_is_named() {
        let header = headers_of_each_fork().pop().unwrap().1;
        let good: serde_json::Value =
            serde_json::from_str(&served(&header, serde_json::json!([]))).unwrap();
        for field in [
            "hash",
            "parentHash",
            "sha3Uncles",
            "miner",
            "stateRoot",
            "transactionsRoot",
            "receiptsRoot",
            "logsBloom",
            "difficulty",
            "number",
            "gasLimit",
            "gasUsed",
            "timestamp",
            "extraData",
            "mixHash",
            "nonce",
        ] {
            let mut v = good.clone();
            v.as_object_mut().unwrap().remove(field);
            let err = serde_json::from_str::<RpcBlock>(&v.to_string()).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("missing field `{field}`")),
                "{field}: {err}"
            );
        }
        for (field, bad) in [
            ("parentHash", serde_json::json!("0x1234")),
            ("number", serde_json::json!("0xzz")),
            ("logsBloom", serde_json::json!(17)),
            ("baseFeePerGas", serde_json::json!("0x10000000000000000")),
            ("transactions", serde_json::json!("0x01")),
        ] {
            let mut v = good.clone();
            v[field] = bad;
            let err = serde_json::from_str::<RpcBlock>(&v.to_string()).unwrap_err();
            // serde's message says what is wrong with the value and where.
            let msg = err.to_string();
            assert!(
                msg.contains("invalid") && msg.contains("column"),
                "{field}: {msg}"
            );
        }
        // An optional field that is null is absent.
        let mut v = good;
        v["requestsHash"] = serde_json::Value::Null;
        let b: RpcBlock = serde_json::from_str(&v.to_string()).unwrap();
        assert_eq!(b.header.inner.requests_hash, None);
        assert!(b.verify_hash().is_err(), "the hash covers requestsHash");
    }
}
