//! The fetch stage: turns block numbers (and, for a reorg's walk, hashes) into [`Fetched`] blocks,
//! each with the provider that served it, when, how its fetch went, and its `process_block` span.
//!
//! Guarantees:
//! - blocks come in order from the first number asked for and stop at the first one no provider has
//!   or the first failure ([`Fetch`]); nothing after a gap is ever handed on;
//! - a backlog is fetched by a [`Feed`] on a task of its own, `concurrency` calls at once, with at
//!   most twice `concurrency` calls' blocks held; dropping the feed cancels its calls;
//! - a shutdown cuts a provider call short ([`FetchError::Cancelled`]); nothing is half-done.

mod batch;

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use alloy_primitives::B256;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use batch::{Feed, Fetch};

use crate::{
    model::Block,
    pool::{Answer, PoolError, ProviderPool},
    rpc::RpcError,
};

/// Why a fetch gave nothing (more).
#[derive(Debug)]
pub enum FetchError {
    /// No provider could serve the call.
    Pool(PoolError),
    /// Shutdown was asked for while waiting on a provider.
    Cancelled,
}

impl From<PoolError> for FetchError {
    fn from(e: PoolError) -> Self {
        FetchError::Pool(e)
    }
}

/// Runs a provider call unless shutdown comes first.
pub async fn unless_cancelled<T>(
    cancel: &CancellationToken,
    call: impl std::future::Future<Output = Result<T, PoolError>>,
) -> Result<T, FetchError> {
    tokio::select! {
        _ = cancel.cancelled() => Err(FetchError::Cancelled),
        r = call => r.map_err(FetchError::Pool),
    }
}

/// A fetched block and who served it, when.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// The block.
    pub block: Block,
    /// The provider that served it.
    pub provider: String,
    /// When it was received.
    pub received: SystemTime,
    /// When it was received, to order answers of calls made at once.
    pub at: Instant,
    /// The block's `process_block` span: open from its fetch until its line is published.
    pub span: tracing::Span,
    /// How its fetch went.
    pub fetch: FetchInfo,
}

/// How a block's fetch went, for the missed-block monitor.
#[derive(Clone, Debug, Default)]
pub struct FetchInfo {
    /// From the first request to the answer.
    pub took: Duration,
    /// Attempts made.
    pub attempts: u32,
    /// The first failed attempt: the provider and its error.
    pub first_failure: Option<(String, RpcError)>,
    /// How long the provider that served it took (without the agent's own rate-limit waits).
    pub served_in: Duration,
}

impl Fetched {
    /// `block`, served now by `provider`, in `span` (which gets the block's hash).
    pub fn new(block: Block, provider: &crate::rpc::Provider, span: tracing::Span) -> Self {
        span.record("blockwatch.block.hash", block.hash.to_string().as_str());
        Fetched {
            block,
            provider: provider.name.clone(),
            received: SystemTime::now(),
            at: Instant::now(),
            span,
            fetch: FetchInfo::default(),
        }
    }

    /// `block` of answer `a`, whose call started at `started`.
    fn answered<T>(a: &Answer<T>, started: Instant, block: Block, span: tracing::Span) -> Self {
        let mut f = Fetched::new(block, &a.provider, span);
        f.fetch = FetchInfo {
            took: started.elapsed(),
            attempts: a.attempts,
            first_failure: a.first_failure.clone(),
            served_in: a.served_in,
        };
        f
    }
}

/// A `process_block` span for block `number` of `chain` (its hash is recorded once known).
pub fn block_span(chain: &str, number: u64) -> tracing::Span {
    tracing::info_span!(
        "process_block",
        otel.name = "process_block",
        blockwatch.chain = %chain,
        blockwatch.block.number = number,
        blockwatch.block.hash = tracing::field::Empty,
    )
}

/// What a consensus check said of a block (`block_hash_check = "consensus"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirmed {
    /// It may be emitted.
    Yes,
    /// Not yet agreed on by a second provider: ask again later.
    NotYet,
}

/// Fetches one chain's blocks through its pool.
#[derive(Clone)]
pub struct Fetcher {
    pool: Arc<ProviderPool>,
    chain: String,
    concurrency: usize,
}

impl Fetcher {
    /// Fetches `chain`'s blocks from `pool`, `concurrency` calls at once.
    pub fn new(pool: Arc<ProviderPool>, chain: &str, concurrency: usize) -> Self {
        Self {
            pool,
            chain: chain.to_owned(),
            concurrency: concurrency.max(1),
        }
    }

    /// The pool the blocks come from.
    pub fn pool(&self) -> &Arc<ProviderPool> {
        &self.pool
    }

    /// Block `number` (`None`: no provider has it yet), in a new `process_block` span.
    pub async fn one(
        &self,
        number: u64,
        cancel: &CancellationToken,
    ) -> Result<Option<Fetched>, FetchError> {
        let span = block_span(&self.chain, number);
        let started = Instant::now();
        let lookup = self.pool.block_by_number(number).instrument(span.clone());
        let mut a = unless_cancelled(cancel, lookup).await?;
        Ok(a.value
            .take()
            .map(|b| Fetched::answered(&a, started, b, span)))
    }

    /// The block with `hash`, expected at height `number` (a reorg's walk back): `None` when no
    /// provider serves it yet; a block of another height is an invalid answer.
    pub async fn by_hash(
        &self,
        number: u64,
        hash: B256,
        cancel: &CancellationToken,
    ) -> Result<Option<Fetched>, FetchError> {
        let span = block_span(&self.chain, number);
        let lookup = self.pool.block_by_hash(hash).instrument(span.clone());
        let a = unless_cancelled(cancel, lookup).await?;
        let Some(block) = a.value else {
            return Ok(None);
        };
        if block.number != number {
            return Err(FetchError::Pool(PoolError::Exhausted {
                chain: self.chain.clone(),
                method: "eth_getBlockByHash".into(),
                attempts: 1,
                provider: a.provider.name.clone(),
                error: RpcError::InvalidBlock(format!(
                    "parent of block {} has number {}",
                    number + 1,
                    block.number
                )),
            }));
        }
        Ok(Some(Fetched::new(block, &a.provider, span)))
    }

    /// `from..=to` in order, `concurrency` calls at once, stopping at the first block no provider
    /// has or the first error: one block per call when following the head, JSON-RPC batches (of
    /// the smallest batch any provider takes) otherwise.
    pub async fn range(&self, from: u64, to: u64, cancel: &CancellationToken) -> Fetch {
        batch::fetch_range(&self.pool, &self.chain, self.concurrency, from, to, cancel).await
    }

    /// A backlog `from..=to` fetched ahead on a task of its own.
    pub fn feed(&self, from: u64, to: u64) -> Feed {
        Feed::start(
            self.pool.clone(),
            self.chain.clone(),
            self.concurrency,
            from,
            to,
        )
    }

    /// Whether `f` may be emitted as far as its hash goes: always with `block_hash_check =
    /// "header"` (its hash was recomputed from its header); with `"consensus"`, once a second
    /// provider serves the same hash at its height (the blocks fetched before it in the same run
    /// are bound to it by their parent links).
    pub async fn confirmed(
        &self,
        f: Option<&Fetched>,
        cancel: &CancellationToken,
    ) -> Result<Confirmed, FetchError> {
        let Some(f) = f else {
            return Ok(Confirmed::Yes);
        };
        if self.pool.hash_check() != crate::config::BlockHashCheck::Consensus {
            return Ok(Confirmed::Yes);
        }
        let Some(served_by) = self
            .pool
            .providers()
            .iter()
            .find(|p| p.name == f.provider)
            .cloned()
        else {
            return Ok(Confirmed::Yes);
        };
        let confirmation = unless_cancelled(
            cancel,
            self.pool
                .confirm(f.block.number, f.block.hash, &served_by)
                .instrument(f.span.clone()),
        )
        .await?;
        match confirmation {
            crate::pool::Confirmation::Confirmed => Ok(Confirmed::Yes),
            crate::pool::Confirmation::Unconfirmed => Ok(Confirmed::NotYet),
            crate::pool::Confirmation::Disagreed { provider, hash } => {
                tracing::warn!(chain = %self.chain, block_number = f.block.number,
                    served_by = %f.provider, hash = %f.block.hash, other = %provider, other_hash = %hash,
                    "providers serve different hashes at this height; waiting for them to agree");
                Ok(Confirmed::NotYet)
            }
        }
    }
}

/// Whether a pool call failed because blocks cannot pass `block_hash_check = "header"` on any
/// provider while they agree (the chain hashes blocks its own way).
pub fn is_hash_scheme(e: &PoolError) -> bool {
    matches!(
        e,
        PoolError::Exhausted {
            error: RpcError::HashScheme(_),
            ..
        }
    )
}
