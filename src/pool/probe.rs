//! The pool's monitor: every provider's state is re-evaluated at least every second, providers
//! that calls have not used lately (or whose open circuit is due a half-open probe) are probed for
//! their newest block and, when behind, whether they are syncing; beside them the heads stage runs
//! the head book's claim and `null` checks as soon as they are due.

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
    rpc::{health::State, provider::Subscription, types::RpcBlock, Provider, RpcError},
};

/// A provider whose `newHeads` subscription is live is probed this many times less often: its head
/// and hashes come without asking, so its probe only keeps its calls' latency and errors measured.
const LIVE_SUBSCRIPTION_PROBE_FACTOR: u32 = 3;

/// Largest share by which a provider's probe interval is shortened (its own, drawn once).
const MAX_PROBE_SPREAD: f64 = 0.2;

/// What decides whether a provider is idle enough to probe.
#[derive(Clone, Copy, Debug)]
struct Idle {
    /// Its last call (a probe included).
    last_call: Option<Instant>,
    /// When it last announced a head (pushed, polled or probed).
    reported: Option<Instant>,
    /// Its `newHeads` subscription is live.
    live_subscription: bool,
    /// Its state is `alive`.
    alive: bool,
}

impl Idle {
    /// Whether a probe is due at `now`: no call for `probe_interval` (three of them while it is
    /// `alive` and its subscription is live and announcing heads: a provider in trouble is probed
    /// at the interval, as the probe is how it is found back), or, in use, no head heard for a
    /// probe interval or two block times, whichever is longer (an HTTP-only provider that calls do
    /// not ask for the head). A chain whose blocks are slower than the probe interval does not
    /// probe the provider in use once a block.
    fn due(self, now: Instant, probe_interval: Duration, block_time: Duration) -> bool {
        let older = |t: Option<Instant>, d: Duration| {
            t.is_none_or(|t| now.saturating_duration_since(t) >= d)
        };
        let heard_within = probe_interval.max(block_time * 2);
        let heard = !older(self.reported, heard_within);
        let idle_for = if self.alive && self.live_subscription && heard {
            probe_interval * LIVE_SUBSCRIPTION_PROBE_FACTOR
        } else {
            probe_interval
        };
        older(self.last_call, idle_for) || !heard
    }
}

/// Longest pause between two evaluations of every provider's state.
const MAX_EVALUATION_INTERVAL: Duration = Duration::from_secs(1);

impl ProviderPool {
    /// Re-evaluates every provider's state (at least every second) and probes providers that
    /// calls have not used for `pool.probe_interval`, and open circuits whose half-open probe is
    /// due. Runs until `cancel` fires.
    pub async fn monitor(self: Arc<Self>, cancel: CancellationToken) {
        let tick = self.cfg.probe_interval.0.min(MAX_EVALUATION_INTERVAL);
        // The head book's checks run beside the probes, each as soon as it is due.
        let checks = heads::run_checks(
            self.heads.clone(),
            self.providers.clone(),
            self.hash_check,
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
        // Each provider's interval is shortened by its own share of up to a fifth, so that
        // providers set up together (every chain's, at start-up) drift apart instead of being
        // probed all at once, interval after interval.
        let intervals: Vec<Duration> = self
            .providers
            .iter()
            .map(|_| {
                self.cfg
                    .probe_interval
                    .0
                    .mul_f64(1.0 - rand::random_range(0.0..MAX_PROBE_SPREAD))
            })
            .collect();
        // Heads come from polls and subscriptions as soon as the pool starts: a provider not heard
        // yet is not probed for its head before an interval has passed.
        let started = Instant::now();
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
                let idle = Idle {
                    last_call: p.last_call(),
                    reported: self.heads.reported_at(p.index).or(Some(started)),
                    live_subscription: p.subscription() == Subscription::Live,
                    alive: p.state() == State::Alive,
                };
                // A lagging provider whose head is polled is not idle, but only a probe asks
                // whether it is syncing.
                let lagging = p.state() == State::Lagging
                    && probed[p.index].is_none_or(|t| {
                        now.saturating_duration_since(t) >= self.cfg.probe_interval.0
                    });
                let due = p.probe_due(now)
                    || ((idle.due(now, intervals[p.index], self.heads.block_time()) || lagging)
                        && !p.is_refused())
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

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE: Duration = Duration::from_secs(10);

    fn ago(now: Instant, secs: u64) -> Option<Instant> {
        Some(now - Duration::from_secs(secs))
    }

    #[test]
    fn an_idle_provider_is_probed_every_interval_and_one_with_a_live_subscription_every_third() {
        let now = Instant::now() + Duration::from_secs(100);
        let block = Duration::from_secs(12);
        let polled = Idle {
            last_call: ago(now, 11),
            reported: ago(now, 11),
            live_subscription: false,
            alive: true,
        };
        assert!(polled.due(now, PROBE, block));
        let pushed = Idle {
            live_subscription: true,
            reported: ago(now, 2),
            ..polled
        };
        assert!(!pushed.due(now, PROBE, block));
        assert!(Idle {
            last_call: ago(now, 30),
            ..pushed
        }
        .due(now, PROBE, block));
        // Not alive: probed at the interval, to find out when it has recovered.
        assert!(Idle {
            alive: false,
            ..pushed
        }
        .due(now, PROBE, block));
        // A live subscription that announces nothing does not stretch the interval.
        let silent = Idle {
            reported: ago(now, 25),
            ..pushed
        };
        assert!(silent.due(now, PROBE, block));
        // Never called, never heard: probed at once.
        let new = Idle {
            last_call: None,
            reported: None,
            live_subscription: true,
            alive: true,
        };
        assert!(new.due(now, PROBE, block));
    }

    #[test]
    fn the_provider_in_use_is_not_probed_once_a_block_on_a_chain_slower_than_the_interval() {
        let now = Instant::now() + Duration::from_secs(100);
        let in_use = Idle {
            last_call: ago(now, 1),
            reported: ago(now, 11),
            live_subscription: true,
            alive: true,
        };
        assert!(!in_use.due(now, PROBE, Duration::from_secs(12)));
        // On a fast chain, a head unheard for a probe interval is news.
        assert!(in_use.due(now, PROBE, Duration::from_secs(2)));
        // Two block times without a head: probed, whatever calls it serves.
        assert!(Idle {
            reported: ago(now, 24),
            ..in_use
        }
        .due(now, PROBE, Duration::from_secs(12)));
    }
}
