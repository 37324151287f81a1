//! The pool's monitor: every provider's state is re-evaluated at least every half second, providers
//! that calls have not used lately (or whose open circuit is due a half-open probe) are probed for
//! their newest block and, when behind, whether they are syncing; the head book's claim and `null`
//! checks are run as soon as they are due. Head polls of single providers are here too.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use alloy_primitives::U64;
use jsonrpsee::{core::params::ArrayParams, rpc_params};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{eth::check_number, ProviderPool};
use crate::rpc::{
    heads::{CheckKind, LieKind},
    health::State,
    types::RpcBlock,
    Provider, RpcError,
};

/// Longest pause between two evaluations of every provider's state.
const MAX_EVALUATION_INTERVAL: Duration = Duration::from_millis(500);

impl ProviderPool {
    /// Re-evaluates every provider's state (at least every half second) and probes providers that
    /// calls have not used for `pool.probe_interval`, and open circuits whose half-open probe is
    /// due. Runs until `cancel` fires.
    pub async fn monitor(self: Arc<Self>, cancel: CancellationToken) {
        let tick = self.cfg.probe_interval.0.min(MAX_EVALUATION_INTERVAL);
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probes = tokio::task::JoinSet::new();
        let probing: Arc<Vec<AtomicBool>> = Arc::new(
            self.providers
                .iter()
                .map(|_| AtomicBool::new(false))
                .collect(),
        );
        let mut checks = tokio::task::JoinSet::new();
        let mut probed: Vec<Option<Instant>> = vec![None; self.providers.len()];
        loop {
            let checked = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => false,
                _ = self.heads.check_queued() => true,
                Some(_) = probes.join_next(), if !probes.is_empty() => continue,
                Some(_) = checks.join_next(), if !checks.is_empty() => continue,
            };
            let now = Instant::now();
            // Claims to settle and `null` answers to ask again, at once when due.
            for c in self.heads.take_due_checks(now) {
                let (pool, cancel) = (self.clone(), cancel.clone());
                checks.spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = pool.run_check(c) => {}
                    }
                });
            }
            if checked {
                continue;
            }
            for p in &self.providers {
                if let Some(event) = p.check_state(now) {
                    let span = tracing::info_span!("provider_health", blockwatch.chain = %self.chain,
                        blockwatch.provider = %p.name);
                    span.in_scope(|| p.report(event));
                }
            }
            for p in &self.providers {
                let older = |t: Option<Instant>| {
                    t.is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.probe_interval.0)
                };
                // Idle (no call lately), or in use but not heard announcing a head lately (an
                // HTTP-only provider that calls do not ask for the head).
                let quiet = older(p.last_call()) || older(self.heads.provider(p.index).reported);
                // A lagging provider whose head is polled is not quiet, but only a probe asks
                // whether it is syncing.
                let lagging = p.state() == State::Lagging && older(probed[p.index]);
                let due = p.probe_due(now)
                    || ((quiet || lagging) && !p.is_refused())
                    // Refused for another chain id: probed when its re-check is due.
                    || (p.is_refused() && p.needs_chain_check() && p.wrong_chain().is_some());
                if !due || p.asked_to_wait_until().is_some() {
                    continue;
                }
                if probing[p.index].swap(true, Ordering::Relaxed) {
                    continue;
                }
                probed[p.index] = Some(now);
                let (pool, provider, probing, cancel) =
                    (self.clone(), p.clone(), probing.clone(), cancel.clone());
                probes.spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = pool.probe(&provider) => {}
                    }
                    probing[provider.index].store(false, Ordering::Relaxed);
                });
            }
        }
    }

    /// Settles a claim: asks the provider for the block at a head it claimed far ahead of the others
    /// (served: the head is proven; `null`: a lie), or again for a block it answered `null` for
    /// although its head was at or above it (`null` again: a lie, and a skipped block).
    async fn run_check(&self, c: crate::rpc::heads::Check) {
        let provider = &self.providers[c.idx];
        let claim = c.kind == CheckKind::Claim;
        if provider.is_refused() || provider.asked_to_wait_until().is_some() {
            if claim {
                self.heads
                    .claim_checked(c.idx, c.number, false, Instant::now());
            }
            return;
        }
        let span = tracing::info_span!(
            "check_claim",
            otel.name = "check_claim",
            blockwatch.chain = %self.chain,
            blockwatch.provider = %provider.name,
            blockwatch.block.number = c.number,
        );
        async {
            let head = provider.reported_head();
            let result = self
                .ask(
                    provider,
                    "eth_getBlockByNumber",
                    rpc_params![U64::from(c.number), false],
                    |b: Option<RpcBlock>| match b {
                        Some(b) => check_number(&b, c.number, self.hash_check).map(|()| true),
                        None => Ok(false),
                    },
                )
                .await;
            let now = Instant::now();
            match (c.kind, result) {
                (CheckKind::Claim, Ok(served)) => {
                    self.heads.claim_checked(c.idx, c.number, served, now);
                    if !served {
                        provider.caught(
                            LieKind::HeadAhead,
                            &format!(
                                "it reported head {}, more than pool.head_outlier_blocks ahead of every other provider, and has no block {}",
                                head.unwrap_or(c.number),
                                c.number
                            ),
                            true,
                        );
                    }
                }
                (CheckKind::Claim, Err(_)) => {
                    self.heads.claim_checked(c.idx, c.number, false, now)
                }
                (CheckKind::Null, Ok(false)) if head.is_some_and(|h| h >= c.number) => {
                    provider.caught(
                        LieKind::NullBelowHead,
                        &format!(
                            "it answered null for block {} twice although its head is {}",
                            c.number,
                            head.unwrap_or(c.number)
                        ),
                        true,
                    );
                    self.heads.skipped(c.idx, c.number, c.number);
                }
                (CheckKind::Null, _) => {}
            }
        }
        .instrument(span)
        .await
    }

    /// Asks `provider` alone for its head (`eth_blockNumber`, within its rate limit; its chain id
    /// first when a check is due) and records it: heads are read from every provider, so that one
    /// provider's word never decides the chain head. Returns the head it reported and when it was
    /// asked, before any wait for the agent's own rate limit: a head learned late because the agent
    /// held its own request back is not the provider's lateness.
    pub async fn poll_head(
        &self,
        provider: &Provider,
    ) -> Result<(u64, std::time::SystemTime), RpcError> {
        self.ensure_verified(provider)
            .await
            .map_err(|e| e.redact(&self.redactor))?;
        let asked = std::time::SystemTime::now();
        let head = self
            .ask(provider, "eth_blockNumber", rpc_params![], |n: U64| {
                Ok(n.to::<u64>())
            })
            .await?;
        provider.record_head(head, None, false);
        Ok((head, asked))
    }

    /// One attempt of `method` on `provider` alone, outside any pool call (a poll, a probe, a
    /// check), in its own attempt span: the answer passes `check`, and the outcome (errors redacted
    /// and judged) is recorded in the provider's health, metrics and span.
    async fn ask<T: DeserializeOwned, U>(
        &self,
        provider: &Provider,
        method: &'static str,
        params: ArrayParams,
        check: impl FnOnce(T) -> Result<U, RpcError>,
    ) -> Result<U, RpcError> {
        let attempt = provider.attempt_span(method, 1);
        let (result, took) = provider
            .request_timed::<T>(method, params, None)
            .instrument(attempt.clone())
            .await;
        let result = result
            .and_then(check)
            .map_err(|e| provider.judge(e.redact(&self.redactor)));
        provider.finish_attempt(&attempt, method, took, result.as_ref().err());
        result
    }

    /// One probe of `provider`: its chain id when due, its newest block (head and hash into the head
    /// book), and whether it is syncing when it is behind.
    async fn probe(&self, provider: &Provider) {
        let span = tracing::info_span!(
            "probe",
            otel.name = "probe",
            blockwatch.chain = %self.chain,
            blockwatch.provider = %provider.name,
        );
        async {
            if self.ensure_verified(provider).await.is_err() {
                return;
            }
            let latest = self
                .ask(
                    provider,
                    "eth_getBlockByNumber",
                    rpc_params!["latest", false],
                    |b: Option<RpcBlock>| {
                        let b =
                            b.ok_or_else(|| RpcError::InvalidResponse("no latest block".into()))?;
                        b.check_hash(self.hash_check).map(|()| b)
                    },
                )
                .await;
            let Ok(block) = latest else { return };
            provider.record_head(block.number(), Some(block.header.hash), false);
            let behind = self
                .heads
                .provider(provider.index)
                .lag_blocks
                .is_some_and(|l| l > self.cfg.out_of_sync_blocks);
            if behind {
                let syncing = self
                    .ask(
                        provider,
                        "eth_syncing",
                        rpc_params![],
                        |v: serde_json::Value| Ok(v.is_object()),
                    )
                    .await;
                if let Ok(syncing) = syncing {
                    provider.record_syncing(syncing);
                }
            } else {
                provider.record_syncing(false);
            }
            provider.evaluate(Instant::now());
        }
        .instrument(span)
        .await
    }
}
