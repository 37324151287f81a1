//! Setting the pool up and keeping it on the right chain: every provider's chain id and genesis
//! block are checked at start-up (another chain id, a configured genesis hash not served, or no
//! majority among the genesis hashes served stops the agent; a provider in the minority is refused
//! for good), and before any use when its periodic chain-id check is due; a provider that could not
//! be reached at start-up has its genesis block checked when it first answers.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use alloy_primitives::B256;
use tracing::Instrument;

use super::{select::PoolState, PoolSetupError, ProviderPool};
use crate::{
    config::{ChainConfig, PoolConfig},
    redact::Redactor,
    rpc::{
        heads::{HeadBook, HeadRules},
        health::HealthConfig,
        integrity::HashLedger,
        provider::{Provider, ProviderContext},
        RpcError,
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
            chain.providers.len(),
        ));
        let costs = Arc::new(cfg.method_costs.clone());
        let hashing = Arc::new(HashLedger::new(&chain.name));
        let mut providers = Vec::with_capacity(chain.providers.len());
        for (index, p) in chain.providers.iter().enumerate() {
            let ctx = ProviderContext {
                chain: chain.name.clone(),
                index,
                health: HealthConfig::new(cfg, chain.expected_block_time.0),
                heads: heads.clone(),
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
            chain_id: chain.chain_id,
            genesis_checked: providers.iter().map(|_| AtomicBool::new(false)).collect(),
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
            genesis: Mutex::new(chain.genesis_hash),
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
                    pool.genesis_checked[p.index].store(true, Ordering::Relaxed);
                }
                Some(Err(RpcError::HashScheme(_))) => {
                    // Its hash cannot be verified (reported once): nothing to compare.
                    pool.genesis_checked[p.index].store(true, Ordering::Relaxed);
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
        let configured = *self.genesis.lock().unwrap_or_else(|p| p.into_inner());
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
        *self.genesis.lock().unwrap_or_else(|p| p.into_inner()) = Some(expected);
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
        self.genesis_checked[idx].store(true, Ordering::Relaxed);
        if hash == expected {
            return Ok(());
        }
        let p = &self.providers[idx];
        if fatal {
            return Err(PoolSetupError::Genesis {
                chain: self.chain.clone(),
                message: format!(
                    "provider {} ({}) serves genesis block {hash}, but chains[].genesis_hash is {expected}",
                    p.name, p.display_url
                ),
            });
        }
        tracing::error!(chain = %self.chain, provider = %p.name, url = %p.display_url,
            served = %hash, expected = %expected,
            "provider serves another genesis block than the other providers; it will not be used");
        p.refuse_genesis();
        Ok(())
    }

    /// Checks `provider`'s chain id when a check is due (and its genesis block, if it could not be
    /// checked at start-up), before it is used.
    pub(super) async fn ensure_verified(&self, provider: &Provider) -> Result<(), RpcError> {
        if !provider.needs_chain_check() {
            return Ok(());
        }
        let result = provider.verify_chain_id(self.chain_id).await;
        if let Err(RpcError::WrongChain { expected, actual }) = &result {
            tracing::error!(
                chain = %self.chain, provider = %provider.name, url = %provider.display_url,
                expected, actual, "provider serves another chain; it will not be used"
            );
        }
        if result.is_ok() && !self.genesis_checked[provider.index].load(Ordering::Relaxed) {
            self.check_genesis_later(provider).await;
        }
        result
    }

    /// Checks the genesis block of a provider that could not be checked at start-up.
    async fn check_genesis_later(&self, provider: &Provider) {
        let expected = *self.genesis.lock().unwrap_or_else(|p| p.into_inner());
        match provider.genesis_hash().await {
            Ok(Some(hash)) => match expected {
                Some(expected) => {
                    let _ = self.judge_genesis(provider.index, hash, expected, false);
                }
                None => {
                    // The first provider to answer sets it for those that come later.
                    *self.genesis.lock().unwrap_or_else(|p| p.into_inner()) = Some(hash);
                    self.genesis_checked[provider.index].store(true, Ordering::Relaxed);
                }
            },
            Ok(None) | Err(RpcError::HashScheme(_)) => {
                self.genesis_checked[provider.index].store(true, Ordering::Relaxed)
            }
            Err(_) => {}
        }
    }
}
