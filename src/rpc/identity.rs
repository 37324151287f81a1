//! The chain a pool's providers must serve: its chain id, and its genesis hash once it is known
//! (configured, agreed on by the providers at start-up, or served by the first provider that
//! answers later). Every provider of the chain is checked against the same one.

use std::sync::Mutex;

use alloy_primitives::B256;

/// The chain id and genesis hash of one chain.
#[derive(Debug)]
pub struct ChainIdentity {
    /// The configured chain id.
    pub chain_id: u64,
    genesis: Mutex<Option<B256>>,
}

impl ChainIdentity {
    /// Chain `chain_id`, with its genesis hash if it is configured.
    pub fn new(chain_id: u64, genesis: Option<B256>) -> Self {
        Self {
            chain_id,
            genesis: Mutex::new(genesis),
        }
    }

    /// The genesis hash providers must serve, once known.
    pub fn genesis(&self) -> Option<B256> {
        *self.genesis.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the genesis hash providers must serve.
    pub fn set_genesis(&self, hash: B256) {
        *self.genesis.lock().unwrap_or_else(|p| p.into_inner()) = Some(hash);
    }
}
