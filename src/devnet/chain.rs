//! The devnet's canonical chain: post-merge blocks whose hash is the keccak of their RLP header, each
//! one's parent hash the previous block's hash, so that a client can recompute and link every hash.
//!
//! Memory is bounded: only the last `retain` canonical blocks (and the blocks reorganised away from
//! that range) are kept; older ones are no longer served, except the genesis block, which is always
//! kept and served (by number `0` and by hash) so that clients can check the genesis hash. The
//! genesis is a function of the chain id, the genesis timestamp and the seed alone.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use alloy_consensus::{
    constants::{EMPTY_OMMER_ROOT_HASH, EMPTY_ROOT_HASH},
    Header,
};
use alloy_primitives::{keccak256, Address, Bloom, Bytes, B256, B64, U256};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};

/// Default number of canonical blocks kept.
pub const DEFAULT_RETAIN: usize = 100_000;
/// Gas limit of every block.
const GAS_LIMIT: u64 = 30_000_000;
/// Most synthetic transactions in a block.
const MAX_TXS: usize = 200;

/// One block of the devnet.
#[derive(Debug)]
pub struct DevBlock {
    /// The consensus header.
    pub header: Header,
    /// keccak256(rlp(header)).
    pub hash: B256,
    /// Synthetic transaction hashes.
    pub tx_hashes: Vec<B256>,
}

impl DevBlock {
    /// Block number.
    pub fn number(&self) -> u64 {
        self.header.number
    }

    /// The block as `eth_getBlockByNumber(n, false)` serves it. With `bad_hash` (the `bad_hash`
    /// fault), the `hash` field does not match the header, and is `bad_hash`'s own: providers with
    /// the fault serve different broken hashes (they do not agree on a hash their header does not
    /// give, as providers of a chain that hashes blocks its own way do).
    pub fn to_json(&self, bad_hash: Option<u8>) -> Value {
        let mut hash = self.hash;
        if let Some(salt) = bad_hash {
            hash.0[31] ^= 0xff;
            hash.0[30] ^= salt;
        }
        let header = alloy_rpc_types_eth::Header {
            hash,
            inner: self.header.clone(),
            total_difficulty: Some(U256::ZERO),
            size: Some(U256::from(600 + 32 * self.tx_hashes.len())),
        };
        let mut v = serde_json::to_value(&header).unwrap_or_else(|_| json!({}));
        if let Some(obj) = v.as_object_mut() {
            obj.insert("transactions".into(), json!(self.tx_hashes));
            obj.insert("uncles".into(), json!([]));
            obj.insert("withdrawals".into(), json!([]));
        }
        v
    }

    /// The `newHeads` notification for this block.
    pub fn head_json(&self, bad_hash: Option<u8>) -> Value {
        let mut v = self.to_json(bad_hash);
        if let Some(obj) = v.as_object_mut() {
            obj.remove("transactions");
            obj.remove("uncles");
            obj.remove("withdrawals");
        }
        v
    }
}

/// How the devnet hashes its blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hashing {
    /// keccak256 of the RLP header, as Ethereum does.
    #[default]
    Header,
    /// The chain's own way, as zkSync Era and other rollups do: keccak256 of a prefix and the
    /// header's keccak. Parent links hold; a client recomputing the header hash does not get it.
    Rollup,
}

impl Hashing {
    fn hash(self, header: &Header) -> B256 {
        match self {
            Hashing::Header => header.hash_slow(),
            Hashing::Rollup => {
                let mut bytes = b"blockwatch devnet rollup".to_vec();
                bytes.extend_from_slice(header.hash_slow().as_slice());
                keccak256(bytes)
            }
        }
    }
}

/// The chain.
#[derive(Debug)]
pub struct DevChain {
    chain_id: u64,
    hashing: Hashing,
    /// Block 0, kept whatever `retain` says.
    genesis: Arc<DevBlock>,
    canonical: VecDeque<Arc<DevBlock>>,
    by_hash: HashMap<B256, Arc<DevBlock>>,
    retain: usize,
    rng: StdRng,
    forks: u64,
}

impl DevChain {
    /// A chain with its genesis block at `genesis_timestamp`. The genesis hash depends on
    /// `chain_id` (written into the genesis `extraData`), `genesis_timestamp` and `seed` only.
    pub fn new(chain_id: u64, genesis_timestamp: u64, seed: u64, retain: usize) -> Self {
        Self::with_hashing(chain_id, genesis_timestamp, seed, retain, Hashing::Header)
    }

    /// [`Self::new`], with blocks hashed by `hashing`.
    pub fn with_hashing(
        chain_id: u64,
        genesis_timestamp: u64,
        seed: u64,
        retain: usize,
        hashing: Hashing,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut extra = b"blockwatch devnet".to_vec();
        extra.extend_from_slice(&chain_id.to_be_bytes());
        let genesis = Arc::new(make_block(
            &mut rng,
            None,
            genesis_timestamp,
            0,
            Bytes::from(extra),
            hashing,
        ));
        let mut chain = Self {
            chain_id,
            hashing,
            genesis: genesis.clone(),
            canonical: VecDeque::new(),
            by_hash: HashMap::new(),
            retain: retain.max(2),
            rng,
            forks: 0,
        };
        chain.by_hash.insert(genesis.hash, genesis.clone());
        chain.canonical.push_back(genesis);
        chain
    }

    /// The genesis block (block 0), always kept.
    pub fn genesis(&self) -> Arc<DevBlock> {
        self.genesis.clone()
    }

    /// The chain id.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The canonical head.
    pub fn head(&self) -> Arc<DevBlock> {
        self.canonical
            .back()
            .cloned()
            .expect("the chain always has a genesis block")
    }

    /// The canonical block at `number`, if still kept (the genesis always is).
    pub fn by_number(&self, number: u64) -> Option<Arc<DevBlock>> {
        if number == 0 {
            return Some(self.genesis.clone());
        }
        let first = self.canonical.front()?.number();
        let idx = usize::try_from(number.checked_sub(first)?).ok()?;
        self.canonical.get(idx).cloned()
    }

    /// Any kept block (canonical or reorganised away, and always the genesis) with `hash`.
    pub fn by_hash(&self, hash: &B256) -> Option<Arc<DevBlock>> {
        if *hash == self.genesis.hash {
            return Some(self.genesis.clone());
        }
        self.by_hash.get(hash).cloned()
    }

    /// Whether `block` is on the canonical chain.
    pub fn is_canonical(&self, block: &DevBlock) -> bool {
        self.by_number(block.number())
            .is_some_and(|b| b.hash == block.hash)
    }

    /// Mines the next block with a timestamp of at least `now` (never before its parent's).
    pub fn produce(&mut self, now: u64) -> Arc<DevBlock> {
        let parent = self.head();
        let txs = self.rng.random_range(0..=MAX_TXS);
        let block = make_block(
            &mut self.rng,
            Some(&parent),
            now.max(parent.header.timestamp),
            txs,
            Bytes::new(),
            self.hashing,
        );
        self.push(block)
    }

    /// Replaces the last `depth` blocks with a competing branch of the same length (same numbers
    /// and timestamps, other contents and hashes) and returns the new blocks, oldest first.
    /// The genesis block is never replaced.
    pub fn reorg(&mut self, depth: u64) -> Vec<Arc<DevBlock>> {
        let head = self.head().number();
        let depth = depth.min(head).min(self.canonical.len() as u64 - 1);
        if depth == 0 {
            return Vec::new();
        }
        self.forks += 1;
        let old: Vec<Arc<DevBlock>> = (0..depth)
            .filter_map(|_| self.canonical.pop_back())
            .rev()
            .collect();
        let mut new = Vec::with_capacity(old.len());
        for o in &old {
            let parent = self.head();
            let txs = self.rng.random_range(0..=MAX_TXS);
            let extra = Bytes::from(format!("fork {}", self.forks).into_bytes());
            let b = make_block(
                &mut self.rng,
                Some(&parent),
                o.header.timestamp,
                txs,
                extra,
                self.hashing,
            );
            new.push(self.push(b));
        }
        new
    }

    fn push(&mut self, block: DevBlock) -> Arc<DevBlock> {
        let block = Arc::new(block);
        self.by_hash.insert(block.hash, block.clone());
        self.canonical.push_back(block.clone());
        while self.canonical.len() > self.retain {
            self.canonical.pop_front();
        }
        if self.by_hash.len() > self.retain * 2 {
            let oldest = self.canonical.front().map_or(0, |b| b.number());
            self.by_hash.retain(|_, b| b.number() >= oldest);
        }
        block
    }
}

/// A block on `parent` (the genesis without one), its random contents drawn from `rng`.
fn make_block(
    rng: &mut StdRng,
    parent: Option<&DevBlock>,
    timestamp: u64,
    txs: usize,
    extra_data: Bytes,
    hashing: Hashing,
) -> DevBlock {
    let number = parent.map_or(0, |p| p.number() + 1);
    let tx_hashes: Vec<B256> = (0..txs)
        .map(|_| B256::from(rng.random::<[u8; 32]>()))
        .collect();
    let transactions_root = if txs == 0 {
        EMPTY_ROOT_HASH
    } else {
        keccak256(tx_hashes.iter().flat_map(|h| h.0).collect::<Vec<u8>>())
    };
    let gas_used = (txs as u64 * 21_000).min(GAS_LIMIT);
    let header = Header {
        parent_hash: parent.map_or(B256::ZERO, |p| p.hash),
        ommers_hash: EMPTY_OMMER_ROOT_HASH,
        beneficiary: Address::from([0x42; 20]),
        state_root: B256::from(rng.random::<[u8; 32]>()),
        transactions_root,
        receipts_root: if txs == 0 {
            EMPTY_ROOT_HASH
        } else {
            B256::from(rng.random::<[u8; 32]>())
        },
        logs_bloom: Bloom::ZERO,
        difficulty: U256::ZERO,
        number,
        gas_limit: GAS_LIMIT,
        gas_used,
        timestamp,
        extra_data,
        mix_hash: B256::from(rng.random::<[u8; 32]>()),
        nonce: B64::ZERO,
        base_fee_per_gas: Some(1_000_000_000),
        withdrawals_root: Some(EMPTY_ROOT_HASH),
        blob_gas_used: Some(0),
        excess_blob_gas: Some(0),
        parent_beacon_block_root: Some(B256::from(rng.random::<[u8; 32]>())),
        requests_hash: Some(keccak256([])),
        block_access_list_hash: None,
        slot_number: None,
    };
    let hash = hashing.hash(&header);
    DevBlock {
        header,
        hash,
        tx_hashes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::types::RpcBlock;

    #[test]
    fn blocks_link_and_their_hashes_can_be_recomputed_by_a_client() {
        let mut c = DevChain::new(1337, 1_700_000_000, 7, 100);
        for i in 0..5 {
            c.produce(1_700_000_001 + i);
        }
        let mut parent = c.by_number(0).unwrap().hash;
        for n in 1..=5 {
            let b = c.by_number(n).unwrap();
            assert_eq!(b.header.parent_hash, parent);
            let served: RpcBlock = serde_json::from_value(b.to_json(None)).unwrap();
            served.verify_hash().unwrap();
            assert_eq!(served.transactions, b.tx_hashes.len());
            let broken: RpcBlock = serde_json::from_value(b.to_json(Some(1))).unwrap();
            assert!(broken.verify_hash().is_err());
            parent = b.hash;
        }
    }

    #[test]
    fn reorg_replaces_the_tip_with_a_linked_branch() {
        let mut c = DevChain::new(1, 100, 1, 100);
        for t in 0..10 {
            c.produce(101 + t);
        }
        let old: Vec<B256> = (7..=10).map(|n| c.by_number(n).unwrap().hash).collect();
        let new = c.reorg(3);
        assert_eq!(
            new.iter().map(|b| b.number()).collect::<Vec<_>>(),
            vec![8, 9, 10]
        );
        assert_eq!(c.by_number(7).unwrap().hash, old[0]);
        assert_eq!(new[0].header.parent_hash, old[0]);
        for (i, b) in new.iter().enumerate() {
            assert_ne!(b.hash, old[i + 1]);
            assert!(c.is_canonical(b));
            assert!(
                !c.is_canonical(&c.by_hash(&old[i + 1]).unwrap()),
                "old branch still served by hash"
            );
        }
        assert_eq!(c.head().number(), 10);
        assert!(c.reorg(0).is_empty());
        assert_eq!(c.reorg(1_000).len(), 10, "never past genesis");
    }

    #[test]
    fn memory_is_bounded() {
        let mut c = DevChain::new(1, 0, 1, 10);
        for t in 0..100 {
            c.produce(t);
            if t % 7 == 0 {
                c.reorg(2);
            }
        }
        assert!(c.canonical.len() <= 10);
        assert!(c.by_hash.len() <= 20 + 2);
        assert!(c.by_number(50).is_none());
        assert!(c.by_number(c.head().number()).is_some());
    }

    #[test]
    fn genesis_is_kept_and_served_after_the_chain_outgrows_its_retention() {
        let mut c = DevChain::new(1337, 1_700_000_000, 3, 10);
        let genesis = c.by_number(0).unwrap();
        assert_eq!(genesis.number(), 0);
        assert_eq!(genesis.header.parent_hash, B256::ZERO);
        for t in 0..100 {
            c.produce(1_700_000_001 + t);
            if t % 7 == 0 {
                c.reorg(2);
            }
        }
        assert!(c.by_number(1).is_none(), "old blocks are pruned");
        assert!(c.canonical.len() <= 10);
        for served in [
            c.by_number(0).unwrap(),
            c.by_hash(&genesis.hash).unwrap(),
            c.genesis(),
        ] {
            assert_eq!(served.hash, genesis.hash);
            assert!(c.is_canonical(&served));
        }
        let json: RpcBlock = serde_json::from_value(c.by_number(0).unwrap().to_json(None)).unwrap();
        json.verify_hash().unwrap();
        assert_eq!(json.header.hash, genesis.hash);
        c.reorg(1_000);
        assert_eq!(c.by_number(0).unwrap().hash, genesis.hash, "never reorged");
    }

    #[test]
    fn genesis_hash_depends_on_chain_id_timestamp_and_seed_only() {
        let genesis = |chain_id, timestamp, seed| {
            DevChain::new(chain_id, timestamp, seed, 100)
                .by_number(0)
                .unwrap()
                .hash
        };
        let base = genesis(1337, 1_700_000_000, 1);
        assert_eq!(base, genesis(1337, 1_700_000_000, 1), "same parameters");
        let mut grown = DevChain::new(1337, 1_700_000_000, 1, 2);
        for t in 0..10 {
            grown.produce(1_700_000_001 + t);
        }
        assert_eq!(
            grown.by_number(0).unwrap().hash,
            base,
            "stable as the chain grows"
        );
        assert_ne!(base, genesis(1, 1_700_000_000, 1), "other chain id");
        assert_ne!(base, genesis(1338, 1_700_000_000, 1), "other chain id");
        assert_ne!(base, genesis(1337, 1_700_000_000, 2), "other seed");
        assert_ne!(base, genesis(1337, 1_700_000_001, 1), "other timestamp");
    }
}
