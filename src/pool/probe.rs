//! The pool's monitor: every provider's state is re-evaluated at least every half second, providers
//! that calls have not used lately (or whose open circuit is due a half-open probe) are probed for
//! their newest block and, when behind, whether they are syncing; beside them, on the same beat, the
//! heads stage runs the head book's claim and `null` checks as soon as they are due.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use jsonrpsee::rpc_params;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::ProviderPool;
use crate::{
    heads,
    rpc::{health::State, types::RpcBlock, Provider, RpcError},
};

/// Longest pause between two evaluations of every provider's state.
const MAX_EVALUATION_INTERVAL: Duration = Duration::from_millis(500);

impl ProviderPool {
    /// Re-evaluates every provider's state (at least every half second) and probes providers that
    /// calls have not used for `pool.probe_interval`, and open circuits whose half-open probe is
    /// due. Runs until `cancel` fires.
    pub async fn monitor(self: Arc<Self>, cancel: CancellationToken) {
        let tick = self.cfg.probe_interval.0.min(MAX_EVALUATION_INTERVAL);
        // The head book's checks run beside the probes, on the same beat.
        let checks = heads::run_checks(
            self.heads.clone(),
            self.providers.clone(),
            self.hash_check,
            tick,
            cancel.clone(),
        );
        tokio::join!(checks, self.clone().probe_loop(tick, cancel));
    }

    /// The monitor's evaluations and probes, every `tick`.
    async fn probe_loop(self: Arc<Self>, tick: Duration, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probes = tokio::task::JoinSet::new();
        let probing: Arc<Vec<AtomicBool>> = Arc::new(
            self.providers
                .iter()
                .map(|_| AtomicBool::new(false))
                .collect(),
        );
        let mut probed: Vec<Option<Instant>> = vec![None; self.providers.len()];
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
                Some(_) = probes.join_next(), if !probes.is_empty() => continue,
            }
            let now = Instant::now();
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
            if provider.ensure_verified().await.is_err() {
                return;
            }
            let latest = provider
                .ask(
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
            self.heads
                .record(provider, block.number(), Some(block.header.hash), false);
            let behind = self
                .heads
                .provider(provider.index)
                .lag_blocks
                .is_some_and(|l| l > self.cfg.out_of_sync_blocks);
            if behind {
                let syncing = provider
                    .ask("eth_syncing", rpc_params![], |v: serde_json::Value| {
                        Ok(v.is_object())
                    })
                    .await;
                if let Ok(syncing) = syncing {
                    self.heads.set_syncing(provider.index, syncing);
                }
            } else {
                self.heads.set_syncing(provider.index, false);
            }
            provider.evaluate(Instant::now());
        }
        .instrument(span)
        .await
    }
}
