//! A provider's standing: its health state (re-evaluated with what the head book knows of it,
//! changes logged and exported), its cost for ranking, cool-downs and `Retry-After` pauses, its
//! hedging delay, and the provider as `/status` shows it. Latency percentiles are computed at most
//! once a second.

use super::*;

/// How long computed latency percentiles are reused before they are computed again.
const PERCENTILES_TTL: Duration = Duration::from_secs(1);

/// The provider's health and its last computed latency percentiles.
#[derive(Debug)]
pub(super) struct Health {
    pub(super) tracker: Tracker,
    pub(super) cached: Option<(Instant, Option<Percentiles>)>,
    /// The hedging quantile (0: none) and its last computed value.
    pub(super) hedge_quantile: f64,
    pub(super) hedge_cached: Option<(Instant, Option<Duration>)>,
}

impl Health {
    pub(super) fn percentiles(&mut self, now: Instant) -> Option<Percentiles> {
        match self.cached {
            Some((at, p)) if now.duration_since(at) < PERCENTILES_TTL => p,
            _ => {
                let p = self.tracker.percentiles(now);
                self.cached = Some((now, p));
                p
            }
        }
    }

    pub(super) fn hedge_latency(&mut self, now: Instant) -> Option<Duration> {
        match self.hedge_cached {
            Some((at, d)) if now.duration_since(at) < PERCENTILES_TTL => d,
            _ => {
                let d = self.tracker.quantile(self.hedge_quantile, now);
                self.hedge_cached = Some((now, d));
                d
            }
        }
    }
}

/// p50/p95/p99 in milliseconds.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// A provider as `/status` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProviderStatus {
    /// Configured name.
    pub name: String,
    /// Health state.
    pub state: &'static str,
    /// What put it in that state, in a few words.
    pub state_reason: &'static str,
    /// 0–100, higher is better; `null` before the first answer.
    pub score: Option<f64>,
    /// Newest head it announced.
    pub head: Option<u64>,
    /// Blocks behind the chain head.
    pub lag_blocks: Option<u64>,
    /// Recent latency percentiles; `null` without samples.
    pub latency_ms: Option<LatencyMs>,
    /// Failed share of calls in the score window.
    pub error_rate: f64,
    /// Calls since start.
    pub requests: u64,
    /// Rate-limited calls since start.
    pub rate_limited: u64,
    /// How late it announces new heads compared with the first provider, in milliseconds.
    pub head_delay_ms: Option<f64>,
    /// It said it is syncing.
    pub syncing: bool,
    /// The decaying failure count.
    pub failures: f64,
    /// Failed calls since its last success.
    pub consecutive_failures: u32,
    /// Calls in the score window (what `error_rate` is over).
    pub window_calls: u64,
    /// `newHeads` subscription: none, down, live or silent.
    pub subscription: &'static str,
    /// The URL, credentials removed.
    pub url: String,
}

impl Provider {
    /// Works out the provider's state as of `now`; reports a change in the current span.
    pub fn evaluate(&self, now: Instant) {
        if let Some(event) = self.check_state(now) {
            self.report(event);
        }
    }

    /// Works out the provider's state as of `now`; returns the change for [`Self::report`].
    pub fn check_state(&self, now: Instant) -> Option<HealthEvent> {
        let view = self.head_view();
        let retry_after = self.retry_after.until().is_some();
        let wrong = self.wrong_chain().is_some() || self.wrong_genesis.load(Ordering::Relaxed);
        let mut h = self.health();
        h.tracker.set_wrong_chain(wrong);
        let p = h.percentiles(now);
        h.tracker.evaluate(now, p, view, retry_after)
    }

    fn head_view(&self) -> HeadView {
        self.heads.view(self.index)
    }

    /// Logs a health event (inside the current span, so that it is also a span event) and exports
    /// a state change.
    pub fn report(&self, event: HealthEvent) {
        let (chain, provider) = (self.chain.as_str(), self.name.as_str());
        match event {
            HealthEvent::CircuitOpened(reason) => {
                tracing::warn!(chain, provider, reason, "circuit_open")
            }
            HealthEvent::CircuitClosed => tracing::info!(chain, provider, "circuit_closed"),
            HealthEvent::State { from, to, reason } => {
                let (from_s, to_s) = (from.as_str(), to.as_str());
                if to.is_usable() {
                    tracing::info!(
                        chain,
                        provider,
                        from = from_s,
                        to = to_s,
                        reason,
                        "provider_state"
                    );
                } else {
                    tracing::warn!(
                        chain,
                        provider,
                        from = from_s,
                        to = to_s,
                        reason,
                        "provider_state"
                    );
                }
                self.export_state(to);
            }
        }
    }

    /// Sets `blockwatch.provider.up` to 1 for `state` and 0 for every other state.
    pub(super) fn export_state(&self, state: State) {
        for s in State::ALL {
            let [chain, provider] = self.attrs.clone();
            let attrs = [chain, provider, KeyValue::new(attr::STATE, s.as_str())];
            self.metrics
                .provider_up
                .record(u64::from(s == state), &attrs);
        }
    }

    /// The current health state.
    pub fn state(&self) -> State {
        self.health().tracker.state()
    }

    /// The provider's cost in milliseconds for ranking (lower is better); `None` before its first
    /// answer.
    pub fn cost_ms(&self) -> Option<f64> {
        self.measure(self.head_view()).2
    }

    /// Latency percentiles, window rates and cost as of now, with the head `view`.
    fn measure(&self, view: HeadView) -> (Option<Percentiles>, health::Rates, Option<f64>) {
        let now = Instant::now();
        let mut h = self.health();
        let p = h.percentiles(now);
        let rates = h.tracker.rates(now);
        let cost = h.tracker.cost_ms(p, rates, view);
        (p, rates, cost)
    }

    /// The provider as `/status` shows it.
    pub fn status(&self) -> ProviderStatus {
        let head = self.head_view();
        let (p, rates, cost) = self.measure(head);
        let h = self.health();
        let state = h.tracker.state();
        let score = match state {
            State::WrongChain | State::CircuitOpen | State::Unreachable | State::Inconsistent => {
                Some(0.0)
            }
            _ => cost.map(health::score),
        };
        let ms = |d: Duration| (d.as_secs_f64() * 10_000.0).round() / 10.0;
        ProviderStatus {
            name: self.name.clone(),
            state: state.as_str(),
            state_reason: h.tracker.reason(),
            score,
            head: head.head,
            lag_blocks: head.lag_blocks,
            latency_ms: p.map(|p| LatencyMs {
                p50: ms(p.p50),
                p95: ms(p.p95),
                p99: ms(p.p99),
            }),
            error_rate: (rates.error_rate() * 1000.0).round() / 1000.0,
            requests: h.tracker.requests,
            rate_limited: h.tracker.rate_limited,
            head_delay_ms: head.arrival_delay.map(ms),
            syncing: head.syncing,
            failures: h.tracker.failures(),
            consecutive_failures: h.tracker.consecutive_failures,
            window_calls: rates.calls,
            subscription: self.subscription().as_str(),
            url: self.display_url.clone(),
        }
    }

    /// How long to wait for this provider before hedging a call to another one: its recent
    /// `pool.hedge_percentile` latency (half its timeout before it has answered), at least `floor`.
    pub fn hedge_delay(&self, floor: Duration) -> Duration {
        let recent = self.health().hedge_latency(Instant::now());
        recent
            .unwrap_or(self.timeout / 2)
            .max(floor)
            .min(self.timeout)
    }

    /// Failed calls since start.
    pub fn errors(&self) -> u64 {
        self.health().tracker.errors
    }

    /// Until when the provider asked (with `Retry-After`) not to be called, if that is still ahead.
    pub fn asked_to_wait_until(&self) -> Option<Instant> {
        self.retry_after.until()
    }

    /// Passes the provider over for `cooldown` (while others are usable), or for as long as it
    /// asked with `Retry-After` if that is longer.
    pub fn cool_down(&self, cooldown: Duration) {
        let mut until = Instant::now() + cooldown;
        if let Some(asked) = self.retry_after.until() {
            until = until.max(asked);
        }
        self.health().tracker.cool_down(until);
    }

    /// Until when it is passed over after a failure, if that is ahead.
    pub fn cooling_until(&self, now: Instant) -> Option<Instant> {
        self.health().tracker.cooling_until(now)
    }

    /// Whether its circuit is open and the half-open probe is due.
    pub fn probe_due(&self, now: Instant) -> bool {
        self.health().tracker.probe_due(now)
    }

    /// When a call or probe last ended.
    pub fn last_call(&self) -> Option<Instant> {
        self.health().tracker.last_call()
    }
}
