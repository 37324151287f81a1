//! A retry budget: retries may add at most a fixed share of load on top of first attempts (plus a
//! small floor, so that a quiet pool can still retry), so that during an outage retries cannot
//! multiply the traffic sent to providers that are already failing.

use std::{sync::Mutex, time::Instant};

/// Seconds of floor rate the budget can bank.
const BANK_SECONDS: f64 = 10.0;

#[derive(Debug)]
struct State {
    tokens: f64,
    refilled: Instant,
}

/// The budget of one pool.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    floor_per_second: f64,
    cap: f64,
    state: Mutex<State>,
}

impl RetryBudget {
    /// Each first attempt earns `ratio` of a retry; `floor_per_second` retries are allowed anyway.
    pub fn new(ratio: f64, floor_per_second: f64, now: Instant) -> Self {
        let cap = (floor_per_second * BANK_SECONDS).max(1.0);
        Self {
            ratio,
            floor_per_second,
            cap,
            state: Mutex::new(State {
                tokens: cap,
                refilled: now,
            }),
        }
    }

    fn refill(&self, st: &mut State, now: Instant) {
        let elapsed = now.saturating_duration_since(st.refilled).as_secs_f64();
        st.tokens = (st.tokens + elapsed * self.floor_per_second).min(self.cap);
        st.refilled = now;
    }

    /// A first attempt was made: it earns its share of a retry.
    pub fn deposit(&self, now: Instant) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut st, now);
        st.tokens = (st.tokens + self.ratio).min(self.cap);
    }

    /// Asks for one retry; false when the budget is spent.
    pub fn withdraw(&self, now: Instant) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut st, now);
        if st.tokens >= 1.0 {
            st.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Retries available now (for status and tests).
    pub fn available(&self, now: Instant) -> f64 {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut st, now);
        st.tokens
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn retries_are_a_share_of_first_attempts_plus_a_floor() {
        let t0 = Instant::now();
        let b = RetryBudget::new(0.2, 1.0, t0);
        // The bank starts full: ten seconds of floor.
        let mut granted = 0;
        while b.withdraw(t0) {
            granted += 1;
        }
        assert_eq!(granted, 10);
        // An outage: 100 first attempts in the same instant earn 20 retries, no more.
        for _ in 0..100 {
            b.deposit(t0);
        }
        let mut granted = 0;
        while b.withdraw(t0) {
            granted += 1;
        }
        assert_eq!(granted, 10, "capped at the bank size");
        // The floor refills with time.
        assert!(!b.withdraw(t0));
        assert!(b.withdraw(t0 + Duration::from_millis(1_001)));
        assert!(!b.withdraw(t0 + Duration::from_millis(1_001)));
    }

    #[test]
    fn deposits_accumulate_fractions() {
        let t0 = Instant::now();
        let b = RetryBudget::new(0.25, 0.0, t0);
        while b.withdraw(t0) {}
        for _ in 0..3 {
            b.deposit(t0);
        }
        assert!(!b.withdraw(t0), "0.75 is not a retry");
        b.deposit(t0);
        assert!(b.withdraw(t0), "four first attempts earn one retry");
    }
}
