//! The provider pool of one chain: ranks providers by health and the chain's selection policy,
//! hedges slow calls to a second provider, fails over when a call fails, and retries with exponential
//! backoff and full jitter (within a retry budget) once every usable provider has been tried.
//!
//! Providers are ranked in tiers: usable ones (`alive`, `degraded`) that are not cooling down after a
//! failure or asked to wait (`Retry-After`) come first, ordered by the selection policy; then the
//! rest, least bad first (cooling down, `lagging`, `unreachable`, `circuit_open`). Nobody usable is
//! never a reason to stop calling: the last providers are tried anyway and the chain is reported
//! degraded. Providers on another chain (`wrong_chain`) are never called. At start-up a provider on
//! another chain id or genesis block stops the agent; at runtime (chain ids are re-checked every
//! `pool.chain_check_interval`) it is passed over until a later check finds it on the right chain.
//!
//! A background monitor ([`ProviderPool::monitor`]) re-evaluates every provider's state and probes
//! providers that calls have not used lately, so that the pool knows who is healthy before it needs
//! them.
//!
//! The pool is built in parts: [`connect`](ProviderPool::connect) and the chain-id and genesis
//! checks (`connect`), the ranking of providers and provider switches (`select`), the call engine
//! (`engine`, composing the steps in `steps` and the hedged race in `hedge`), the typed `eth_*`
//! methods (`eth`) and the monitor with its probes (`probe`).

mod connect;
mod engine;
mod eth;
mod hedge;
mod probe;
pub mod retry_budget;
mod select;
mod steps;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    config::{BlockHashCheck, PoolConfig, Selection},
    heads::{Fork, HeadBook},
    redact::Redactor,
    rpc::{
        integrity::HashLedger,
        provider::{Provider, ProviderError, ProviderStatus},
        ChainIdentity, RpcError,
    },
    telemetry::Metrics,
};

pub use eth::Confirmation;
use select::PoolState;
pub use select::{Switch, RECENT_SWITCHES};

/// Why a pool call failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Every attempt failed.
    #[error("chain {chain}: {method} failed after {attempts} attempt(s); last error from provider {provider}: {error}")]
    Exhausted {
        /// The chain.
        chain: String,
        /// The JSON-RPC method.
        method: String,
        /// Attempts made.
        attempts: u32,
        /// The provider of the last attempt.
        provider: String,
        /// The last attempt's error (already redacted).
        error: RpcError,
    },
    /// No provider may be used: all of them serve another chain.
    #[error("chain {chain}: no usable provider (every provider answered another chain id)")]
    NoProvider {
        /// The chain.
        chain: String,
    },
}

/// Why the pool could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PoolSetupError {
    /// A provider's client could not be built.
    #[error("chain {chain}, provider {provider}: {source}")]
    Client {
        /// The chain.
        chain: String,
        /// The provider.
        provider: String,
        /// What went wrong.
        source: ProviderError,
    },
    /// A provider answered another chain id at start-up.
    #[error("chain {chain}, provider {provider} ({url}): answered chain id {actual}, but the config says chain_id = {expected}; refusing to start (fix the provider URL or chain_id)")]
    WrongChain {
        /// The chain.
        chain: String,
        /// The provider.
        provider: String,
        /// The provider's URL, redacted.
        url: String,
        /// The configured chain id.
        expected: u64,
        /// What it answered.
        actual: u64,
    },
    /// Providers serve different genesis blocks and none can be trusted over the others.
    #[error("chain {chain}: {message}; refusing to start (set chains[].genesis_hash, or fix the provider URLs)")]
    Genesis {
        /// The chain.
        chain: String,
        /// Who serves what.
        message: String,
    },
}

/// A successful call: the value and who answered it.
#[derive(Debug)]
pub struct Answer<T> {
    /// The result.
    pub value: T,
    /// The provider that answered.
    pub provider: Arc<Provider>,
    /// Attempts it took (1 when the first provider answered), hedges included.
    pub attempts: u32,
    /// The first attempt that failed on the way, if one did: which provider, and how.
    pub first_failure: Option<(String, RpcError)>,
    /// How long the answering provider took, from sending to its answer (without the wait for
    /// the rate limit).
    pub served_in: Duration,
    /// Why the answering attempt's span is exported whatever the routine share, if it is (see
    /// [`crate::telemetry::sampling`]).
    pub kept: Option<&'static str>,
}

impl<T> Answer<T> {
    pub(super) fn served_in(mut self, took: Duration) -> Self {
        self.served_in = took;
        self
    }

    /// The same answer with its value transformed.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Answer<U> {
        Answer {
            value: f(self.value),
            provider: self.provider,
            attempts: self.attempts,
            first_failure: self.first_failure,
            served_in: self.served_in,
            kept: self.kept,
        }
    }
}

/// The pool as `/status` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PoolStatus {
    /// The corroborated chain head.
    pub head: Option<u64>,
    /// The provider calls go to first.
    pub current_provider: Option<String>,
    /// Failed calls since start, over all providers.
    pub rpc_error_count: u64,
    /// Every provider.
    pub providers: Vec<ProviderStatus>,
    /// Provider pairs that announced different hashes at the same height.
    pub forks: Vec<Fork>,
}

/// The providers of one chain.
#[derive(Debug)]
pub struct ProviderPool {
    chain: String,
    providers: Vec<Arc<Provider>>,
    heads: Arc<HeadBook>,
    selection: Selection,
    cfg: PoolConfig,
    redactor: Arc<Redactor>,
    metrics: Arc<Metrics>,
    budget: retry_budget::RetryBudget,
    state: Mutex<PoolState>,
    /// The chain id and genesis hash providers must serve.
    identity: Arc<ChainIdentity>,
    /// How block hashes are verified.
    hash_check: BlockHashCheck,
    /// Header-hash mismatches, and the verdict once providers agree on hashes their headers do not
    /// give (the chain hashes blocks its own way).
    hashing: Arc<HashLedger>,
}

impl ProviderPool {
    /// The chain's name.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// The providers, in configuration order.
    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// The chain's head book.
    pub fn heads(&self) -> &Arc<HeadBook> {
        &self.heads
    }

    /// The provider calls go to first.
    pub fn active(&self) -> Option<Arc<Provider>> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.active.map(|i| self.providers[i].clone())
    }

    /// Provider switches since start.
    pub fn switches(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .switches
    }

    /// The latest provider switches, newest first.
    pub fn recent_switches(&self) -> Vec<Switch> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.recent.iter().rev().cloned().collect()
    }

    /// The pool as `/status` shows it.
    pub fn status(&self) -> PoolStatus {
        let names: Vec<&str> = self.providers.iter().map(|p| p.name.as_str()).collect();
        PoolStatus {
            head: self.heads.best(),
            current_provider: self.active().map(|p| p.name.clone()),
            rpc_error_count: self.providers.iter().map(|p| p.errors()).sum(),
            providers: self.providers.iter().map(|p| p.status()).collect(),
            forks: self.heads.forks(&names),
        }
    }

    /// Set when the providers agree on block hashes that are not the keccak of their headers while
    /// `block_hash_check = "header"`: what to tell the operator.
    pub fn hash_verdict(&self) -> Option<String> {
        self.hashing.verdict()
    }

    /// How this chain's block hashes are verified.
    pub fn hash_check(&self) -> BlockHashCheck {
        self.hash_check
    }
}
