//! Setting the pool up and keeping it on the right chain: every provider's chain id and genesis
//! block are checked at start-up (another chain id, a configured genesis hash not served, or no
//! majority among the genesis hashes served stops the agent; a provider in the minority is refused
//! for good). Later checks, before a provider is used, are the provider's own
//! ([`Provider::ensure_verified`]), against the same [`ChainIdentity`].

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use alloy_primitives::B256;
use tracing::Instrument;

use super::{select::PoolState, PoolSetupError, ProviderPool};
use crate::{
    config::{ChainConfig, PoolConfig},
    heads::{HeadBook, HeadRules},
    redact::Redactor,
    rpc::{
        health::HealthConfig,
        integrity::HashLedger,
        provider::{Provider, ProviderContext},
        ChainIdentity, RpcError,
    },
    telemetry::Metrics,
};

impl ProviderPool {
    /// Builds the pool and checks every provider's chain id and genesis block concurrently. A
    /// provider on another chain is a set-up error; one that cannot be reached is checked when it
    /// answers.
    pub async fn connect(
        chain: &ChainConfig,
        cfg: &PoolConfig,
        redactor: Arc<Redactor>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, PoolSetupError> {
        let heads = Arc::new(HeadBook::new(
            HeadRules {
                outlier_blocks: cfg.head_outlier_blocks,
                block_time: chain.expected_block_time.0,
                freshness: (cfg.probe_interval.0 * 3).max(chain.max_block_delay.0),
                backwards_blocks: chain.reorg_window,
                inconsistent_for: cfg.inconsistent_for.0,
                recheck_after: chain
                    .expected_block_time
                    .0
                    .clamp(Duration::from_secs(1), Duration::from_secs(5)),
            },
            chain.providers.iter().map(|p| p.name.clone()).collect(),
        ));
        let identity = Arc::new(ChainIdentity::new(chain.chain_id, chain.genesis_hash));
        let costs = Arc::new(cfg.method_costs.clone());
        let hashing = Arc::new(HashLedger::new(&chain.name));
        let mut providers = Vec::with_capacity(chain.providers.len());
        for (index, p) in chain.providers.iter().enumerate() {
            let ctx = ProviderContext {
                chain: chain.name.clone(),
                index,
                health: HealthConfig::new(cfg, chain.expected_block_time.0),
                heads: heads.clone(),
                identity: identity.clone(),
                costs: costs.clone(),
                metrics: metrics.clone(),
                redactor: redactor.clone(),
                hash_check: chain.block_hash_check,
                hashing: hashing.clone(),
            };
            let provider =
                Provider::new(ctx, p, cfg, &redactor).map_err(|source| PoolSetupError::Client {
                    chain: chain.name.clone(),
                    provider: p.name.clone(),
                    source,
                })?;
            providers.push(Arc::new(provider));
        }
        let pool = Self {
            chain: chain.name.clone(),
            identity,
            providers,
            heads,
            selection: chain.selection,
            cfg: cfg.clone(),
            redactor,
            metrics,
            budget: super::retry_budget::RetryBudget::new(
                cfg.retry_budget,
                cfg.retry_budget_floor,
                Instant::now(),
            ),
            state: Mutex::new(PoolState::default()),
            hash_check: chain.block_hash_check,
            hashing,
        };
        let checks = pool.providers.iter().map(|p| {
            let span = tracing::info_span!(
                "check_provider",
                otel.name = "check_provider",
                blockwatch.chain = %chain.name,
                blockwatch.provider = %p.name,
            );
            async move {
                let id = p.verify_chain_id(chain.chain_id).await;
                let genesis = match id {
                    Ok(()) => Some(p.genesis_hash().await),
                    Err(_) => None,
                };
                (p, id, genesis)
            }
            .instrument(span)
        });
        let mut served = Vec::new();
        for (p, result, genesis) in futures::future::join_all(checks).await {
            match result {
                Ok(()) => {
                    tracing::info!(chain = %chain.name, provider = %p.name, url = %p.display_url, "provider serves the configured chain")
                }
                Err(RpcError::WrongChain { expected, actual }) => {
                    return Err(PoolSetupError::WrongChain {
                        chain: chain.name.clone(),
                        provider: p.name.clone(),
                        url: p.display_url.clone(),
                        expected,
                        actual,
                    })
                }
                Err(e) => tracing::warn!(
                    chain = %chain.name, provider = %p.name, url = %p.display_url,
                    error = %pool.redactor.redact(&e.to_string()),
                    "provider unreachable at start-up; its chain id will be checked before first use"
                ),
            }
            match genesis {
                Some(Ok(Some(hash))) => served.push((p.index, hash)),
                Some(Ok(None)) => {
                    // It does not serve block 0 (pruned history): nothing to compare.
                    p.mark_genesis_checked();
                }
                Some(Err(RpcError::HashScheme(_))) => {
                    // Its hash cannot be verified (reported once): nothing to compare.
                    p.mark_genesis_checked();
                }
                Some(Err(e)) => tracing::warn!(
                    chain = %chain.name, provider = %p.name,
                    error = %pool.redactor.redact(&e.to_string()),
                    "cannot read the genesis block at start-up; it will be checked later"
                ),
                None => {}
            }
        }
        pool.settle_genesis(served)?;
        Ok(pool)
    }

    /// Compares the genesis hashes providers served at start-up with the configured one, or with
    /// each other's: a provider in the minority is refused; a tie stops the agent.
    fn settle_genesis(&self, served: Vec<(usize, B256)>) -> Result<(), PoolSetupError> {
        let configured = self.identity.genesis();
        let expected = match configured {
            Some(h) => Some(h),
            None => {
                let mut counts: Vec<(B256, usize)> = Vec::new();
                for &(_, h) in &served {
                    match counts.iter_mut().find(|(x, _)| *x == h) {
                        Some((_, n)) => *n += 1,
                        None => counts.push((h, 1)),
                    }
                }
                counts.sort_by_key(|c| std::cmp::Reverse(c.1));
                match counts.as_slice() {
                    [] => None,
                    [(h, _)] => Some(*h),
                    [(h, a), (_, b), ..] if a > b => Some(*h),
                    _ => {
                        let who: Vec<String> = served
                            .iter()
                            .map(|&(i, h)| format!("{} serves {h}", self.providers[i].name))
                            .collect();
                        return Err(PoolSetupError::Genesis {
                            chain: self.chain.clone(),
                            message: format!(
                                "providers disagree on the genesis block and no hash has a majority: {}",
                                who.join(", ")
                            ),
                        });
                    }
                }
            }
        };
        let Some(expected) = expected else {
            return Ok(());
        };
        self.identity.set_genesis(expected);
        for (idx, hash) in served {
            self.judge_genesis(idx, hash, expected, configured.is_some())?;
        }
        Ok(())
    }

    /// Provider `idx` serves genesis block `hash`, where `expected` is the chain's: a mismatch is
    /// a set-up error when `fatal` (the configured hash), else the provider is refused for good.
    fn judge_genesis(
        &self,
        idx: usize,
        hash: B256,
        expected: B256,
        fatal: bool,
    ) -> Result<(), PoolSetupError> {
        let p = &self.providers[idx];
        if fatal && hash != expected {
            p.mark_genesis_checked();
            return Err(PoolSetupError::Genesis {
                chain: self.chain.clone(),
                message: format!(
                    "provider {} ({}) serves genesis block {hash}, but chains[].genesis_hash is {expected}",
                    p.name, p.display_url
                ),
            });
        }
        p.judge_genesis(hash, expected);
        Ok(())
    }
}
