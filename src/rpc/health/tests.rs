//! The health rules, tested with time values passed in.

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
