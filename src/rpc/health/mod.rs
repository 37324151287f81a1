//! The health of one provider: recent outcomes, a decaying failure count, a circuit breaker, the
//! state the pool sorts by, and the score `selection = "best"` ranks by.
//!
//! Everything here is plain bookkeeping over time values passed in, so the rules are tested without
//! clocks or sockets; [`super::Provider`] owns one [`Tracker`] and reports transitions as logs,
//! metrics and span events.

use std::time::{Duration, Instant};

use super::latency::{LatencyWindow, Percentiles};
use crate::config::PoolConfig;

mod window;

/// Outcome buckets per window: the error rate and rate-limit pressure cover between
/// `window * (BUCKETS - 1) / BUCKETS` and `window` of the latest calls, in fixed memory.
const BUCKETS: usize = 30;

/// A failure adds one to the failure count; a success takes this much off it (never below zero),
/// so a provider that fails every other call still builds up failures.
const SUCCESS_DECAY: f64 = 0.5;

/// Fewest calls in the window before an error rate may mark a provider degraded.
const MIN_CALLS_FOR_RATE: u64 = 5;

/// Latency below this is not counted against a score: providers on the same network answer within
/// jitter of each other, and ranking by that jitter would only make them flap.
pub const LATENCY_FLOOR: Duration = Duration::from_millis(10);

/// The cost scale of the score: a provider costing this many milliseconds scores 50.
const SCORE_HALF_COST_MS: f64 = 250.0;

/// What the pool knows about a provider, most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// Answered another chain id or genesis hash: never used.
    WrongChain,
    /// The circuit breaker is open (or half-open, waiting for a probe): used only when nothing else
    /// is left.
    CircuitOpen,
    /// The last call failed to connect or timed out, with no success since.
    Unreachable,
    /// It made a claim the other providers do not corroborate (a head far ahead of theirs, a head
    /// that went back, `null` for a block at or below its own head, another block than asked):
    /// never the leader while in it, its heads do not count towards the chain head.
    Inconsistent,
    /// Its head is more than `pool.out_of_sync_blocks` behind the chain's head, or it says it is
    /// syncing.
    Lagging,
    /// Usable, but slow (p95 over `pool.degraded_latency`), erroring (error rate over
    /// `pool.degraded_error_rate`) or rate-limited.
    Degraded,
    /// Usable and well.
    Alive,
}

impl State {
    /// Every state, for exporting a full `blockwatch_provider_up{state}` set.
    pub const ALL: [State; 7] = [
        State::Alive,
        State::Degraded,
        State::Inconsistent,
        State::Lagging,
        State::Unreachable,
        State::CircuitOpen,
        State::WrongChain,
    ];

    /// The name in `/status`, logs and the `state` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Alive => "alive",
            State::Degraded => "degraded",
            State::Inconsistent => "inconsistent",
            State::Lagging => "lagging",
            State::Unreachable => "unreachable",
            State::CircuitOpen => "circuit_open",
            State::WrongChain => "wrong_chain",
        }
    }

    /// Whether ordinary calls go to a provider in this state first.
    pub fn is_usable(self) -> bool {
        matches!(self, State::Alive | State::Degraded)
    }
}

/// The health rules, from `[pool]` and the chain.
#[derive(Clone, Debug)]
pub struct HealthConfig {
    /// Window of latency percentiles, error rate and rate-limit pressure.
    pub window: Duration,
    /// Error rate at or above which a provider is degraded.
    pub degraded_error_rate: f64,
    /// p95 latency at or above which a provider is degraded.
    pub degraded_latency: Duration,
    /// Blocks behind the chain's head beyond which a provider is lagging.
    pub out_of_sync_blocks: u64,
    /// Failure count that opens the circuit.
    pub circuit_failures: f64,
    /// Error rate over the window that opens the circuit (with enough calls).
    pub circuit_error_rate: f64,
    /// Calls in the window before the error rate may open the circuit.
    pub circuit_min_calls: u64,
    /// How long an open circuit waits before a half-open probe.
    pub circuit_open_for: Duration,
    /// The chain's expected block time: what one block of lag costs in the score.
    pub block_time: Duration,
}

impl HealthConfig {
    /// The rules of a chain with `block_time` under `pool`.
    pub fn new(pool: &PoolConfig, block_time: Duration) -> Self {
        Self {
            window: pool.score_window.0,
            degraded_error_rate: pool.degraded_error_rate,
            degraded_latency: pool.degraded_latency.0,
            out_of_sync_blocks: pool.out_of_sync_blocks,
            circuit_failures: f64::from(pool.circuit_failures),
            circuit_error_rate: pool.circuit_error_rate,
            circuit_min_calls: pool.circuit_min_calls,
            circuit_open_for: pool.circuit_open_for.0,
            block_time,
        }
    }
}

use window::OutcomeWindow;
pub use window::Rates;

/// The circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Circuit {
    Closed,
    /// Calls are not sent (except as a last resort) until a probe is due.
    Open {
        until: Instant,
    },
}

/// Something the caller must report: a circuit change or a state change.
#[derive(Clone, Debug, PartialEq)]
pub enum HealthEvent {
    /// The circuit opened, for this reason.
    CircuitOpened(&'static str),
    /// A call succeeded through a half-open circuit: it is closed.
    CircuitClosed,
    /// The state changed.
    State {
        /// The old state.
        from: State,
        /// The new state.
        to: State,
        /// What caused it, in a few words.
        reason: &'static str,
    },
}

/// What is known of a provider's head, from the chain's head book.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HeadView {
    /// The newest head it announced.
    pub head: Option<u64>,
    /// Blocks behind the chain's corroborated head, if both are known.
    pub lag_blocks: Option<u64>,
    /// How long after the first provider it announces new heads (WebSocket heads only).
    pub arrival_delay: Option<Duration>,
    /// It said (`eth_syncing`) that it is syncing.
    pub syncing: bool,
    /// It was caught in an uncorroborated claim lately: why (see [`State::Inconsistent`]).
    pub inconsistent: Option<&'static str>,
}

/// Where a provider learns what is known of its head: the chain's head book, kept by a layer above
/// this one, which tells the provider through this trait alone.
pub trait HeadSource: Send + Sync + std::fmt::Debug {
    /// What is known of provider `idx`'s head now.
    fn view(&self, idx: usize) -> HeadView;
    /// Provider `idx` was caught in a lie of `kind` at `now`: its heads do not count for a while.
    fn lie(&self, idx: usize, kind: crate::rpc::LieKind, now: Instant);
    /// Provider `idx` serves another chain: its heads must not count.
    fn forget(&self, idx: usize);
}

/// One provider's health.
#[derive(Debug)]
pub struct Tracker {
    cfg: HealthConfig,
    latency: LatencyWindow,
    outcomes: OutcomeWindow,
    failures: f64,
    /// The last outcome was a connection failure or a timeout.
    transport_down: bool,
    circuit: Circuit,
    state: State,
    /// What put it in its state, in a few words.
    reason: &'static str,
    /// Passed over until then after a failure, while others are usable.
    cooldown_until: Option<Instant>,
    wrong_chain: bool,
    last_call: Option<Instant>,
    /// Totals since start, for `/status`.
    pub requests: u64,
    /// Rate-limited calls since start, for `/status`.
    pub rate_limited: u64,
    /// Failed calls since start, for `/status`.
    pub errors: u64,
    /// Failed calls since the last success.
    pub consecutive_failures: u32,
    /// Calls abandoned to a faster hedge since its last answer.
    overtaken: u32,
}

/// Calls in a row a provider may lose to hedges, without answering one itself, before it is passed
/// over like a failing one: hedging must not hide a provider that has stopped answering.
pub const MAX_OVERTAKEN: u32 = 3;

/// How a call ended, as health sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered well.
    Ok,
    /// The provider said to slow down (HTTP 429, `-32005`): pressure, not a fault.
    Throttled,
    /// Could not connect, or no answer in time.
    TransportFailure,
    /// Answered with an error or a broken answer.
    Failure,
}

impl Tracker {
    /// A tracker with no history, in state `alive`.
    pub fn new(cfg: HealthConfig, now: Instant) -> Self {
        Self {
            latency: LatencyWindow::new(cfg.window, now),
            outcomes: OutcomeWindow::new(cfg.window, now),
            cfg,
            failures: 0.0,
            transport_down: false,
            circuit: Circuit::Closed,
            state: State::Alive,
            reason: "healthy",
            cooldown_until: None,
            wrong_chain: false,
            last_call: None,
            requests: 0,
            rate_limited: 0,
            errors: 0,
            consecutive_failures: 0,
            overtaken: 0,
        }
    }

    /// The current state (as of the last [`Self::evaluate`]).
    pub fn state(&self) -> State {
        self.state
    }

    /// What put it in its current state.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The decaying failure count.
    pub fn failures(&self) -> f64 {
        self.failures
    }

    /// When a call (or probe) last ended.
    pub fn last_call(&self) -> Option<Instant> {
        self.last_call
    }

    /// Records a call that ended `now` after `elapsed`; returns a circuit event if it caused one.
    pub fn record(
        &mut self,
        outcome: Outcome,
        elapsed: Duration,
        now: Instant,
    ) -> Option<HealthEvent> {
        self.requests += 1;
        self.last_call = Some(now);
        let bucket = self.outcomes.bucket(now);
        match outcome {
            Outcome::Ok => {
                bucket.ok += 1;
                self.overtaken = 0;
                self.consecutive_failures = 0;
                self.latency.record(elapsed, now);
                self.failures = (self.failures - SUCCESS_DECAY).max(0.0);
                self.transport_down = false;
                self.cooldown_until = None;
                if matches!(self.circuit, Circuit::Open { .. }) {
                    self.circuit = Circuit::Closed;
                    self.failures = 0.0;
                    return Some(HealthEvent::CircuitClosed);
                }
                None
            }
            Outcome::Throttled => {
                bucket.ok += 1;
                bucket.throttled += 1;
                self.rate_limited += 1;
                // A half-open probe that was told to slow down proves nothing either way: the
                // circuit stays open, and the next probe waits another `circuit_open_for`.
                if let Circuit::Open { until } = &mut self.circuit {
                    if now >= *until {
                        *until = now + self.cfg.circuit_open_for;
                    }
                }
                None
            }
            Outcome::TransportFailure | Outcome::Failure => {
                bucket.failed += 1;
                self.errors += 1;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.failures += 1.0;
                self.transport_down = outcome == Outcome::TransportFailure;
                self.trip(now)
            }
        }
    }

    /// A call that had to wait for the client-side rate limit.
    pub fn record_throttled_locally(&mut self, now: Instant) {
        self.outcomes.bucket(now).throttled += 1;
        self.rate_limited += 1;
    }

    /// A call abandoned after `elapsed` because another provider answered first: its latency is at
    /// least that, and counting it keeps a provider that never finishes from looking fast.
    /// It still counts as use: a provider whose calls are all overtaken is not idle, and is not
    /// probed. Returns true when it has now lost [`MAX_OVERTAKEN`] calls in a row without answering
    /// one: time to pass it over.
    pub fn record_abandoned(&mut self, elapsed: Duration, now: Instant) -> bool {
        self.latency.record(elapsed, now);
        self.last_call = Some(now);
        self.overtaken += 1;
        if self.overtaken >= MAX_OVERTAKEN {
            self.overtaken = 0;
            return true;
        }
        false
    }

    fn trip(&mut self, now: Instant) -> Option<HealthEvent> {
        let reason = match self.circuit {
            // A failed half-open probe: open again.
            Circuit::Open { until } if now >= until => "half-open probe failed",
            Circuit::Open { .. } => return None,
            Circuit::Closed if self.failures >= self.cfg.circuit_failures => "failures",
            Circuit::Closed => {
                let r = self.outcomes.sum(now);
                if r.calls >= self.cfg.circuit_min_calls
                    && r.error_rate() >= self.cfg.circuit_error_rate
                {
                    "error rate"
                } else {
                    return None;
                }
            }
        };
        self.circuit = Circuit::Open {
            until: now + self.cfg.circuit_open_for,
        };
        Some(HealthEvent::CircuitOpened(reason))
    }

    /// Whether the circuit is open and its half-open probe is due.
    pub fn probe_due(&self, now: Instant) -> bool {
        matches!(self.circuit, Circuit::Open { until } if now >= until)
    }

    /// Whether the circuit is open (calls only as a last resort).
    pub fn circuit_open(&self) -> bool {
        matches!(self.circuit, Circuit::Open { .. })
    }

    /// Passes the provider over until `until` (while others are usable).
    pub fn cool_down(&mut self, until: Instant) {
        self.cooldown_until = Some(self.cooldown_until.map_or(until, |u| u.max(until)));
    }

    /// Until when it is passed over, if that is ahead of `now`.
    pub fn cooling_until(&self, now: Instant) -> Option<Instant> {
        self.cooldown_until.filter(|&u| u > now)
    }

    /// Marks whether the last chain check found it on another chain.
    pub fn set_wrong_chain(&mut self, wrong: bool) {
        self.wrong_chain = wrong;
    }

    /// Recent latency percentiles.
    pub fn percentiles(&mut self, now: Instant) -> Option<Percentiles> {
        self.latency.percentiles(now)
    }

    /// The `q` quantile (0–1) of recent latency.
    pub fn quantile(&mut self, q: f64, now: Instant) -> Option<Duration> {
        self.latency.quantile(q, now)
    }

    /// Outcome sums over the window.
    pub fn rates(&self, now: Instant) -> Rates {
        self.outcomes.sum(now)
    }

    /// Works out the state from everything known `now`; returns the transition if it changed.
    pub fn evaluate(
        &mut self,
        now: Instant,
        latency: Option<Percentiles>,
        head: HeadView,
        retry_after: bool,
    ) -> Option<HealthEvent> {
        let rates = self.outcomes.sum(now);
        let (state, reason) = if self.wrong_chain {
            (State::WrongChain, "wrong chain")
        } else if self.circuit_open() {
            (State::CircuitOpen, "circuit open")
        } else if self.transport_down {
            (State::Unreachable, "no connection")
        } else if let Some(why) = head.inconsistent {
            (State::Inconsistent, why)
        } else if head.syncing {
            (State::Lagging, "syncing")
        } else if head
            .lag_blocks
            .is_some_and(|l| l > self.cfg.out_of_sync_blocks)
        {
            (State::Lagging, "behind the chain head")
        } else if rates.calls >= MIN_CALLS_FOR_RATE
            && rates.error_rate() >= self.cfg.degraded_error_rate
        {
            (State::Degraded, "error rate")
        } else if latency.is_some_and(|p| p.p95 >= self.cfg.degraded_latency) {
            (State::Degraded, "slow")
        } else if retry_after {
            (State::Degraded, "rate limited")
        } else {
            (State::Alive, "healthy")
        };
        if state == self.state {
            self.reason = reason;
            return None;
        }
        self.reason = reason;
        let from = std::mem::replace(&mut self.state, state);
        Some(HealthEvent::State {
            from,
            to: state,
            reason,
        })
    }

    /// The provider's cost in milliseconds (lower is better; `None` without a latency sample).
    pub fn cost_ms(
        &self,
        latency: Option<Percentiles>,
        rates: Rates,
        head: HeadView,
    ) -> Option<f64> {
        let p = latency?;
        let ms = |d: Duration| d.max(LATENCY_FLOOR).as_secs_f64() * 1000.0;
        let base = 0.5 * ms(p.p50) + 0.5 * ms(p.p95);
        // One block behind is a head announcement in flight (providers announce each block a few
        // milliseconds apart; arrival delay measures that): lag counts from the second block.
        let lag = head.lag_blocks.unwrap_or(0).saturating_sub(1) as f64
            * self.cfg.block_time.as_secs_f64()
            * 1000.0;
        let arrival = head.arrival_delay.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        Some(
            base * (1.0 + 4.0 * rates.error_rate()) * (1.0 + 2.0 * rates.pressure())
                + lag
                + arrival,
        )
    }
}

/// A 0–100 score from a cost (higher is better): 100 at no cost, 50 at 250 ms.
pub fn score(cost_ms: f64) -> f64 {
    let s = 100.0 / (1.0 + cost_ms.max(0.0) / SCORE_HALF_COST_MS);
    (s * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests;
