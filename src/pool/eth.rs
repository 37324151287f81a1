//! The typed `eth_*` methods of the pool: every block a provider serves is checked before it is
//! returned (its number, or its hash for a lookup by hash, and its hash against its header when
//! the chain says so); a block that fails a check is the serving provider's failure and another
//! provider is asked. A `null` for a block the chain head has reached is noted in the head book to
//! be asked again.

use std::{
    sync::{atomic::AtomicBool, Arc},
    time::Instant,
};

use alloy_primitives::{B256, U64};
use futures::FutureExt;
use jsonrpsee::rpc_params;

use super::{Answer, PoolError, ProviderPool};
use crate::{
    model::Block,
    rpc::{types::RpcBlock, Provider, RpcError},
};

/// What a second provider said of a block one provider served (`block_hash_check = "consensus"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// Another provider serves the same hash at that height (or there is no other provider).
    Confirmed,
    /// Another provider serves another hash there.
    Disagreed {
        /// Who.
        provider: String,
        /// Its hash.
        hash: B256,
    },
    /// No other provider serves the block yet.
    Unconfirmed,
}

impl ProviderPool {
    /// The head block number (`eth_blockNumber`), recorded in the head book.
    pub async fn block_number(&self) -> Result<Answer<u64>, PoolError> {
        let a = self
            .request::<U64>("eth_blockNumber", rpc_params![])
            .await?;
        let a = a.map(|n| n.to::<u64>());
        self.heads.record(&a.provider, a.value, None, false);
        Ok(a)
    }

    /// The block at `number`, without transaction bodies; `None` if no provider has it yet. A block
    /// with another number or a hash that does not match its header is a failure of the provider
    /// that served it, and the next provider is asked. A provider that answers `null` although it
    /// reported a head at or above `number` is asked again later (a lie if it still does).
    pub async fn block_by_number(&self, number: u64) -> Result<Answer<Option<Block>>, PoolError> {
        self.block_by_number_but(number, None).await
    }

    async fn block_by_number_but(
        &self,
        number: u64,
        exclude: Option<usize>,
    ) -> Result<Answer<Option<Block>>, PoolError> {
        let method = "eth_getBlockByNumber";
        let heads = self.heads.clone();
        let send = move |p: Arc<Provider>, sent: Arc<AtomicBool>| {
            let heads = heads.clone();
            async move {
                let (r, took) = p
                    .request_timed::<Option<RpcBlock>>(
                        method,
                        rpc_params![U64::from(number), false],
                        Some(&sent),
                    )
                    .await;
                if matches!(r, Ok(None)) {
                    heads.suspect_null(p.index, number, Instant::now());
                }
                (r, took)
            }
            .boxed()
        };
        let check = self.hash_check;
        let a = self
            .call(
                method,
                &send,
                |v: &Option<RpcBlock>| match v {
                    None => Ok(false),
                    Some(b) => b.check_number(number, check).map(|()| true),
                },
                exclude,
            )
            .await?;
        Ok(a.map(|b| b.map(Block::from)))
    }

    /// Asks a provider other than `served_by` for block `number` and compares its hash with `hash`
    /// (`block_hash_check = "consensus"`: a block's hash is believed once two providers agree on
    /// it). With no other provider to ask, it is confirmed.
    pub async fn confirm(
        &self,
        number: u64,
        hash: B256,
        served_by: &Provider,
    ) -> Result<Confirmation, PoolError> {
        if self
            .providers
            .iter()
            .all(|p| p.index == served_by.index || p.is_refused())
        {
            return Ok(Confirmation::Confirmed);
        }
        let a = self
            .block_by_number_but(number, Some(served_by.index))
            .await?;
        Ok(match a.value {
            None => Confirmation::Unconfirmed,
            Some(b) if b.hash == hash => Confirmation::Confirmed,
            Some(b) => {
                // Counted as a disagreement between the two, like different announced hashes.
                self.heads.record(served_by, number, Some(hash), false);
                self.heads.record(&a.provider, number, Some(b.hash), false);
                Confirmation::Disagreed {
                    provider: a.provider.name.clone(),
                    hash: b.hash,
                }
            }
        })
    }

    /// Blocks `from..=to` in JSON-RPC batches (each provider within its `max_batch_size` and
    /// rate-limit burst), in order, up to the first block the answering provider does not have.
    /// Every block is checked like [`Self::block_by_number`]; one broken block fails the batch on
    /// that provider, and another is asked.
    pub async fn blocks_by_number(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Answer<Vec<Block>>, PoolError> {
        let heads = self.heads.clone();
        let send = move |p: Arc<Provider>, sent: Arc<AtomicBool>| {
            let heads = heads.clone();
            async move {
                let end = to.min(from.saturating_add(u64::from(p.max_batch.max(1)) - 1));
                let (r, took) = p.batch_blocks(from, end, Some(&sent)).await;
                if let Ok(blocks) = &r {
                    // The first block it did not serve.
                    if let Some(missing) = blocks.iter().position(Option::is_none) {
                        heads.suspect_null(p.index, from + missing as u64, Instant::now());
                    }
                }
                (r, took)
            }
            .boxed()
        };
        let check = self.hash_check;
        let a = self
            .call(
                "eth_getBlockByNumber",
                &send,
                |blocks: &Vec<Option<RpcBlock>>| {
                    for (i, b) in blocks.iter().enumerate() {
                        match b {
                            Some(b) => b.check_number(from + i as u64, check)?,
                            None => break,
                        }
                    }
                    // A provider without even the first block is asked no further.
                    Ok(blocks.first().is_some_and(Option::is_some))
                },
                None,
            )
            .await?;
        Ok(a.map(|blocks| {
            blocks
                .into_iter()
                .map_while(|b| b.map(Block::from))
                .collect()
        }))
    }

    /// Blocks per batch while catching up: the smallest `max_batch_size` of the providers (within
    /// their rate-limit bursts), so that whichever provider answers serves the whole batch.
    pub fn batch_size(&self) -> u64 {
        self.providers
            .iter()
            .map(|p| u64::from(p.max_batch))
            .min()
            .unwrap_or(1)
    }

    /// The block with `hash`, without transaction bodies; `None` if no provider knows it. Checked
    /// like [`Self::block_by_number`].
    pub async fn block_by_hash(&self, hash: B256) -> Result<Answer<Option<Block>>, PoolError> {
        let check = self.hash_check;
        let a = self
            .request_some::<RpcBlock>("eth_getBlockByHash", rpc_params![hash, false], |b| {
                if b.header.hash != hash {
                    return Err(RpcError::WrongBlock(format!(
                        "asked for block {hash}, got block {}",
                        b.header.hash
                    )));
                }
                b.check_hash(check)
            })
            .await?;
        Ok(a.map(|b| b.map(Block::from)))
    }
}
