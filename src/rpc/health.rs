//! The health of one provider: recent outcomes, a decaying failure count, a circuit breaker, the
//! state the pool sorts by, and the score `selection = "best"` ranks by.
//!
//! Everything here is plain bookkeeping over time values passed in, so the rules are tested without
//! clocks or sockets; [`super::Provider`] owns one [`Tracker`] and reports transitions as logs,
//! metrics and span events.

use std::time::{Duration, Instant};

use super::latency::{LatencyWindow, Percentiles};
use crate::config::PoolConfig;

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

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    slot: u64,
    ok: u64,
    failed: u64,
    throttled: u64,
}

/// Call outcomes over the last window, in [`BUCKETS`] slots.
#[derive(Debug)]
struct OutcomeWindow {
    origin: Instant,
    slot_len: Duration,
    buckets: [Bucket; BUCKETS],
}

/// Sums over an [`OutcomeWindow`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    /// Calls answered or failed.
    pub calls: u64,
    /// Failed calls.
    pub failed: u64,
    /// Calls that were rate-limited (by the provider or the client-side limit).
    pub throttled: u64,
}

impl Rates {
    /// Failed share of calls (0 without calls).
    pub fn error_rate(&self) -> f64 {
        ratio(self.failed, self.calls)
    }

    /// Rate-limited share of calls (0 without calls).
    pub fn pressure(&self) -> f64 {
        ratio(self.throttled, self.calls).min(1.0)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl OutcomeWindow {
    fn new(window: Duration, now: Instant) -> Self {
        let slot_len = (window / BUCKETS as u32).max(Duration::from_millis(10));
        Self {
            origin: now,
            slot_len,
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    fn slot(&self, now: Instant) -> u64 {
        // Slot 0 is never used, so that a zeroed bucket is never mistaken for a current one.
        (now.saturating_duration_since(self.origin).as_nanos() / self.slot_len.as_nanos()) as u64
            + 1
    }

    fn bucket(&mut self, now: Instant) -> &mut Bucket {
        let slot = self.slot(now);
        let b = &mut self.buckets[(slot % BUCKETS as u64) as usize];
        if b.slot != slot {
            *b = Bucket {
                slot,
                ..Bucket::default()
            };
        }
        b
    }

    fn sum(&self, now: Instant) -> Rates {
        let current = self.slot(now);
        self.buckets
            .iter()
            // A bucket newer than `now` (another thread recorded after `now` was read) counts too.
            .filter(|b| b.slot != 0 && current.saturating_sub(b.slot) < BUCKETS as u64)
            .fold(Rates::default(), |r, b| Rates {
                calls: r.calls + b.ok + b.failed,
                failed: r.failed + b.failed,
                throttled: r.throttled + b.throttled,
            })
    }
}

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

/// What is known of a provider's head, from the pool's head book.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HeadView {
    /// Blocks behind the chain's corroborated head, if both are known.
    pub lag_blocks: Option<u64>,
    /// How long after the first provider it announces new heads (WebSocket heads only).
    pub arrival_delay: Option<Duration>,
    /// It said (`eth_syncing`) that it is syncing.
    pub syncing: bool,
    /// It was caught in an uncorroborated claim lately: why (see [`State::Inconsistent`]).
    pub inconsistent: Option<&'static str>,
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
mod tests {
    use super::*;

    fn cfg() -> HealthConfig {
        HealthConfig {
            window: Duration::from_secs(30),
            degraded_error_rate: 0.2,
            degraded_latency: Duration::from_secs(1),
            out_of_sync_blocks: 5,
            circuit_failures: 4.0,
            circuit_error_rate: 0.5,
            circuit_min_calls: 10,
            circuit_open_for: Duration::from_secs(5),
            block_time: Duration::from_secs(12),
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn consecutive_failures_open_the_circuit_and_a_half_open_success_closes_it() {
        let t0 = Instant::now();
        let mut t = Tracker::new(cfg(), t0);
        for _ in 0..3 {
            assert_eq!(t.record(Outcome::Failure, MS, t0), None);
        }
        assert_eq!(
            t.record(Outcome::Failure, MS, t0),
            Some(HealthEvent::CircuitOpened("failures"))
        );
        assert!(t.circuit_open() && !t.probe_due(t0));
        assert_eq!(t.record(Outcome::Failure, MS, t0), None, "already open");
        let later = t0 + Duration::from_secs(5);
        assert!(t.probe_due(later));
        assert_eq!(
            t.record(Outcome::Failure, MS, later),
            Some(HealthEvent::CircuitOpened("half-open probe failed"))
        );
        assert!(!t.probe_due(later + Duration::from_secs(1)));
        let again = later + Duration::from_secs(5);
        assert_eq!(
            t.record(Outcome::Ok, MS, again),
            Some(HealthEvent::CircuitClosed)
        );
        assert!(!t.circuit_open());
        assert_eq!(t.failures(), 0.0);
    }

    #[test]
    fn a_throttled_half_open_probe_reschedules_the_next_one() {
        let t0 = Instant::now();
        let mut t = Tracker::new(cfg(), t0);
        for _ in 0..4 {
            t.record(Outcome::Failure, MS, t0);
        }
        let due = t0 + Duration::from_secs(5);
        assert!(t.probe_due(due));
        assert_eq!(t.record(Outcome::Throttled, MS, due), None);
        assert!(t.circuit_open() && !t.probe_due(due + Duration::from_secs(1)));
        assert!(t.probe_due(due + Duration::from_secs(5)));
    }

    #[test]
    fn outcomes_recorded_after_now_was_read_do_not_underflow() {
        let t0 = Instant::now();
        let mut t = Tracker::new(cfg(), t0);
        let later = t0 + Duration::from_secs(3);
        t.record(Outcome::Failure, MS, later);
        assert_eq!(t.rates(t0).failed, 1);
    }

    #[test]
    fn the_failure_count_decays_with_successes_instead_of_resetting() {
        let t0 = Instant::now();
        let mut t = Tracker::new(cfg(), t0);
        t.record(Outcome::Failure, MS, t0);
        t.record(Outcome::Failure, MS, t0);
        t.record(Outcome::Ok, MS, t0);
        assert_eq!(
            t.failures(),
            1.5,
            "one success does not forget two failures"
        );
        // Failing every other call still opens the circuit eventually.
        let mut opened = false;
        for _ in 0..10 {
            opened |= t.record(Outcome::Failure, MS, t0).is_some();
            t.record(Outcome::Ok, MS, t0);
        }
        assert!(opened);
    }

    #[test]
    fn an_error_rate_opens_the_circuit_only_with_enough_calls() {
        let t0 = Instant::now();
        let mut c = cfg();
        c.circuit_failures = 100.0;
        let mut t = Tracker::new(c, t0);
        for _ in 0..4 {
            t.record(Outcome::Ok, MS, t0);
            assert_eq!(t.record(Outcome::Failure, MS, t0), None);
        }
        t.record(Outcome::Ok, MS, t0);
        assert_eq!(
            t.record(Outcome::Failure, MS, t0),
            Some(HealthEvent::CircuitOpened("error rate")),
            "5 of 10 failed"
        );
    }

    #[test]
    fn states_follow_the_most_severe_condition() {
        let t0 = Instant::now();
        let mut t = Tracker::new(cfg(), t0);
        let head = |lag| HeadView {
            lag_blocks: Some(lag),
            ..Default::default()
        };
        assert_eq!(
            t.evaluate(t0, None, head(5), false),
            None,
            "5 behind is in sync"
        );
        assert_eq!(
            t.evaluate(t0, None, head(6), false),
            Some(HealthEvent::State {
                from: State::Alive,
                to: State::Lagging,
                reason: "behind the chain head"
            })
        );
        t.record(Outcome::TransportFailure, MS, t0);
        t.evaluate(t0, None, head(6), false);
        assert_eq!(
            t.state(),
            State::Unreachable,
            "unreachable outranks lagging"
        );
        t.record(Outcome::Ok, MS, t0);
        let slow = Percentiles {
            p50: Duration::from_secs(2),
            p95: Duration::from_secs(2),
            p99: Duration::from_secs(2),
        };
        t.evaluate(t0, Some(slow), head(0), false);
        assert_eq!(t.state(), State::Degraded);
        t.evaluate(t0, None, head(0), true);
        assert_eq!(t.state(), State::Degraded, "a pending Retry-After degrades");
        t.set_wrong_chain(true);
        t.evaluate(t0, None, head(0), false);
        assert_eq!(t.state(), State::WrongChain);
    }

    #[test]
    fn outcomes_age_out_of_the_window() {
        let t0 = Instant::now();
        let mut t = Tracker::new(cfg(), t0);
        for _ in 0..10 {
            t.record(Outcome::Failure, MS, t0);
        }
        t.set_wrong_chain(false);
        assert_eq!(t.rates(t0).failed, 10);
        assert_eq!(t.rates(t0 + Duration::from_secs(31)).calls, 0);
        assert_eq!(t.requests, 10, "totals stay");
    }

    #[test]
    fn cost_weighs_latency_errors_pressure_lag_and_arrival() {
        let t0 = Instant::now();
        let t = Tracker::new(cfg(), t0);
        let p = |ms| {
            Some(Percentiles {
                p50: Duration::from_millis(ms),
                p95: Duration::from_millis(ms),
                p99: Duration::from_millis(ms),
            })
        };
        let none = Rates::default();
        let head = HeadView::default();
        assert_eq!(t.cost_ms(None, none, head), None, "no sample, no cost");
        assert_eq!(
            t.cost_ms(p(1), none, head),
            t.cost_ms(p(9), none, head),
            "floor"
        );
        let base = t.cost_ms(p(100), none, head).unwrap();
        assert_eq!(base, 100.0);
        let erroring = Rates {
            calls: 10,
            failed: 1,
            throttled: 0,
        };
        assert!(t.cost_ms(p(100), erroring, head).unwrap() > base * 1.3);
        let lagging = HeadView {
            lag_blocks: Some(2),
            ..head
        };
        let in_flight = HeadView {
            lag_blocks: Some(1),
            ..head
        };
        assert_eq!(t.cost_ms(p(100), none, in_flight).unwrap(), base);
        assert_eq!(t.cost_ms(p(100), none, lagging).unwrap(), 12_100.0);
        assert!(score(0.0) == 100.0 && score(250.0) == 50.0 && score(1e9) < 0.1);
    }
}
