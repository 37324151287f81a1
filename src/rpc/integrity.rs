//! Whose fault a refused block is. Another block than asked is its provider's lie. A claimed hash
//! that is not the keccak of the block's header is its provider's fault too — unless two providers
//! serve the same block with the same such hash: then the chain hashes blocks its own way (zkSync
//! Era and other rollups do), `block_hash_check = "header"` cannot pass on any provider, and that is
//! reported once, plainly, instead of as integrity errors blaming every provider.

use std::{collections::VecDeque, sync::Mutex};

use alloy_primitives::B256;

use super::RpcError;

/// Header-hash mismatches remembered.
const MISMATCHES: usize = 32;

#[derive(Debug, Default)]
struct Ledger {
    /// (block number, claimed hash, provider).
    mismatches: VecDeque<(u64, B256, String)>,
    /// Set once two providers agreed on a hash the header does not give: what to tell the operator.
    verdict: Option<String>,
}

/// The header-hash mismatches of one chain's providers.
#[derive(Debug)]
pub struct HashLedger {
    chain: String,
    ledger: Mutex<Ledger>,
}

impl HashLedger {
    /// An empty ledger for `chain`.
    pub fn new(chain: &str) -> Self {
        Self {
            chain: chain.to_owned(),
            ledger: Mutex::new(Ledger::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why no provider's blocks can pass the header check, once providers agreed on that.
    pub fn verdict(&self) -> Option<String> {
        self.lock().verdict.clone()
    }

    /// `provider` served block `number` claiming hash `claimed`, whose header hashes to `computed`:
    /// its fault (a `HeaderHash` error) until another provider serves the same claim, then the
    /// chain's (a `HashScheme` error, reported once at error level).
    pub fn mismatch(&self, provider: &str, number: u64, claimed: B256, computed: B256) -> RpcError {
        let mut l = self.lock();
        if let Some(v) = &l.verdict {
            return RpcError::HashScheme(v.clone());
        }
        let other = l
            .mismatches
            .iter()
            .find(|(n, c, p)| *n == number && *c == claimed && p != provider)
            .map(|(_, _, p)| p.clone());
        let Some(other) = other else {
            if l.mismatches.len() >= MISMATCHES {
                l.mismatches.pop_front();
            }
            l.mismatches
                .push_back((number, claimed, provider.to_owned()));
            return RpcError::HeaderHash {
                number,
                claimed,
                computed,
            };
        };
        let verdict = format!(
            "chain {}: block {number} has hash {claimed} at providers {provider} and {other}, but its header hashes to {computed}: this chain hashes blocks its own way (as zkSync Era and other rollups do), so no block can pass block_hash_check = \"header\"; set block_hash_check = \"consensus\" for this chain",
            self.chain
        );
        tracing::error!(chain = %self.chain, block_number = number, "{verdict}");
        l.verdict = Some(verdict.clone());
        RpcError::HashScheme(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreeing_providers_make_it_the_chain_s_hashing_once() {
        let l = HashLedger::new("zk");
        let (claimed, computed) = (B256::repeat_byte(1), B256::repeat_byte(2));
        assert!(matches!(
            l.mismatch("p0", 5, claimed, computed),
            RpcError::HeaderHash { number: 5, .. }
        ));
        // The same provider again, or another claim: still the provider's fault.
        assert!(matches!(
            l.mismatch("p0", 5, claimed, computed),
            RpcError::HeaderHash { .. }
        ));
        assert!(matches!(
            l.mismatch("p1", 5, B256::repeat_byte(3), computed),
            RpcError::HeaderHash { .. }
        ));
        assert_eq!(l.verdict(), None);
        let RpcError::HashScheme(v) = l.mismatch("p2", 5, claimed, computed) else {
            panic!("not the chain's verdict");
        };
        assert!(v.contains("chain zk") && v.contains("\"consensus\""), "{v}");
        assert!(matches!(
            l.mismatch("p0", 9, claimed, computed),
            RpcError::HashScheme(_)
        ));
    }
}
