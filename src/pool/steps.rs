//! The steps a pool call is made of, each deciding one thing from where the call stands: whether
//! the `null`s heard so far are the answer, the backoff pause that ends a round in which every
//! provider failed, which provider fails over next, whether the retry budget allows another attempt,
//! which provider a slow attempt is hedged to, what a failure changes, and how the call ends when
//! the attempts run out. None of them sends anything; the engine composes them.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use super::{select::Plan, Answer, PoolError, ProviderPool};
use crate::{config::PoolConfig, rpc::RpcError};

/// Where one call stands between attempts.
pub(super) struct CallState<T> {
    /// The providers in the order they are tried.
    pub(super) plan: Plan,
    /// Pauses between rounds.
    backoff: ExponentialBackoff,
    /// The longest pause, used once the backoff has no more.
    max_backoff: Duration,
    /// Attempts made, hedges included.
    pub(super) attempts: u32,
    /// Position in the plan (over all rounds).
    pos: usize,
    /// A hedge was sent (at most one per call).
    pub(super) hedged: bool,
    /// Providers tried in the current round over the plan (a hedge target included).
    pub(super) tried: Vec<usize>,
    /// The last failure, and whose.
    last_error: Option<(usize, RpcError)>,
    /// The first failure, and whose name (told with the answer).
    pub(super) first_failure: Option<(String, RpcError)>,
    /// The first answer that was not accepted (`null`), kept in case nobody does better.
    unaccepted: Option<(usize, T, Duration)>,
    /// Why a finished attempt's span is exported whatever the routine share, if one's is: the
    /// call's span is then exported with it.
    pub(super) kept: Option<&'static str>,
}

/// What the failover step chose.
pub(super) enum Next {
    /// Send the next attempt to this provider.
    Provider(usize),
    /// Not this one (already tried in this round, refused, or asked to wait): go on.
    Pass,
    /// Every provider of the plan is refused.
    NoProvider,
}

impl<T> CallState<T> {
    /// A call that follows `plan`, with the backoff `cfg` sets between rounds.
    pub(super) fn new(plan: Plan, cfg: &PoolConfig) -> Self {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(cfg.retry_initial_backoff.0)
            .with_max_delay(cfg.retry_max_backoff.0)
            .with_jitter()
            .without_max_times()
            .build();
        let tried = Vec::with_capacity(plan.order.len());
        Self {
            plan,
            backoff,
            max_backoff: cfg.retry_max_backoff.0,
            attempts: 0,
            pos: 0,
            hedged: false,
            tried,
            last_error: None,
            first_failure: None,
            unaccepted: None,
            kept: None,
        }
    }

    /// Whether the plan has just been gone through once more.
    fn round_done(&self) -> bool {
        self.pos > 0 && self.pos % self.plan.order.len() == 0
    }

    /// The retry step: at the end of a round, a pause with exponential backoff (plus up to as much again
    /// as jitter) before the next round, which may try every provider again.
    pub(super) async fn pause_after_round(&mut self) {
        if self.round_done() {
            self.tried.clear();
            let delay = self.backoff.next().unwrap_or(self.max_backoff);
            tokio::time::sleep(delay).await;
        }
    }

    /// An answer that was not accepted (`null`) from provider `idx`: kept if it is the first.
    pub(super) fn unaccepted(&mut self, idx: usize, value: T, took: Duration) {
        if self.unaccepted.is_none() {
            self.unaccepted = Some((idx, value, took));
        }
    }
}

impl ProviderPool {
    /// `null` from every provider of a round is an answer; so is `null` from every usable one: last
    /// resorts (lagging, unreachable, circuit open) are not waited for to confirm that a block does
    /// not exist yet.
    pub(super) fn nulls_answer<T>(&self, call: &mut CallState<T>) -> Option<Answer<T>> {
        let usable = &call.plan.order[..call.plan.usable];
        let nulls_suffice = call.round_done()
            || (call.plan.usable > 0 && usable.iter().all(|i| call.tried.contains(i)));
        if !nulls_suffice {
            return None;
        }
        let (idx, value, took) = call.unaccepted.take()?;
        let failure = call.first_failure.take();
        let mut a = self
            .answered(idx, value, call.attempts, &call.plan, false, failure)
            .served_in(took);
        a.kept = call.kept;
        Some(a)
    }

    /// The failover step: the next provider of the plan, unless it was tried in this round already
    /// (as a hedge), is refused (another chain), or asked to be left alone (`Retry-After`: not
    /// before then, and without spending an attempt, so that a call waits out a pool-wide pause
    /// instead of failing).
    pub(super) fn next_provider<T>(&self, call: &mut CallState<T>) -> Next {
        let order = &call.plan.order;
        let idx = order[call.pos % order.len()];
        call.pos += 1;
        if call.tried.contains(&idx) {
            return Next::Pass;
        }
        let provider = &self.providers[idx];
        if provider.is_refused() {
            if order.iter().all(|&i| self.providers[i].is_refused()) {
                return Next::NoProvider;
            }
            return Next::Pass;
        }
        if provider.asked_to_wait_until().is_some() {
            return Next::Pass;
        }
        Next::Provider(idx)
    }

    /// The budget step: the first attempt earns retries; every attempt after a failure spends one.
    /// When the budget is spent the call fails now and is asked again later, instead of adding load
    /// to providers that are already failing.
    pub(super) fn budget_allows<T>(&self, call: &CallState<T>, method: &'static str) -> bool {
        if call.last_error.is_none() && call.attempts == 0 {
            self.budget.deposit(Instant::now());
        } else if call.last_error.is_some() && !self.budget.withdraw(Instant::now()) {
            let attempts = call.attempts;
            tracing::debug!(chain = %self.chain, method, attempts, "retry budget spent; not retrying now");
            return false;
        }
        true
    }

    /// The hedge step's target: once per call, while attempts remain, a usable provider not tried
    /// yet in this round, and not cooling down after failing (possibly this very call).
    pub(super) fn hedge_target<T>(&self, call: &CallState<T>) -> Option<usize> {
        if call.hedged || self.cfg.hedge_percentile == 0 || call.attempts >= self.cfg.max_attempts {
            return None;
        }
        let now = Instant::now();
        call.plan.order[..call.plan.usable]
            .iter()
            .copied()
            .find(|&i| {
                let p = &self.providers[i];
                !call.tried.contains(&i)
                    && p.cooling_until(now).is_none()
                    && p.asked_to_wait_until().is_none()
                    && !p.is_refused()
            })
    }

    /// Attempt `number` on provider `who` failed with `error`: logged, the provider cools down (the
    /// next attempt fails over to another), and the failure is kept for the answer or the error.
    pub(super) fn failed<T>(
        &self,
        call: &mut CallState<T>,
        who: usize,
        number: u32,
        method: &'static str,
        error: RpcError,
    ) {
        let p = &self.providers[who];
        tracing::warn!(
            chain = %self.chain, provider = %p.name, method,
            attempt = number, error_type = %error.error_type(), error = %error,
            "provider call failed"
        );
        p.cool_down(self.cfg.failover_cooldown.0);
        if call.first_failure.is_none() {
            call.first_failure = Some((p.name.clone(), error.clone()));
        }
        call.last_error = Some((who, error));
    }

    /// The call ends on a failure that no other attempt can do better on (see
    /// [`RpcError::retry`]).
    pub(super) fn stopped<T>(
        &self,
        call: &CallState<T>,
        who: usize,
        method: &'static str,
        error: RpcError,
    ) -> PoolError {
        PoolError::Exhausted {
            chain: self.chain.clone(),
            method: method.to_owned(),
            attempts: call.attempts,
            provider: self.providers[who].name.clone(),
            error,
        }
    }

    /// The attempts (or the budget) ran out: a `null` heard is the answer, else the last failure
    /// is the error.
    #[allow(clippy::result_large_err)] // What every pool call returns.
    pub(super) fn give_up<T>(
        &self,
        mut call: CallState<T>,
        method: &'static str,
    ) -> Result<Answer<T>, PoolError> {
        if let Some((idx, value, took)) = call.unaccepted.take() {
            let failure = call.first_failure.take();
            let a = self.answered(idx, value, call.attempts, &call.plan, false, failure);
            return Ok(a.served_in(took));
        }
        let (idx, error) = call.last_error.take().unwrap_or((
            call.plan.order[0],
            RpcError::Connection("no attempt could be made".to_owned()),
        ));
        Err(PoolError::Exhausted {
            chain: self.chain.clone(),
            method: method.to_owned(),
            attempts: call.attempts,
            provider: self.providers[idx].name.clone(),
            error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;

    fn call(initial_ms: u64, max_ms: u64) -> CallState<()> {
        let cfg = PoolConfig {
            retry_initial_backoff: HumanDuration(Duration::from_millis(initial_ms)),
            retry_max_backoff: HumanDuration(Duration::from_millis(max_ms)),
            ..PoolConfig::default()
        };
        let plan = Plan {
            order: vec![0, 1],
            usable: 2,
            switch_reason: "",
            side: false,
        };
        CallState::new(plan, &cfg)
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_end_of_a_round_pauses_and_the_pause_stays_within_the_backoff() {
        let mut c = call(100, 400);
        c.pos = 1;
        let t = tokio::time::Instant::now();
        c.pause_after_round().await;
        assert_eq!(t.elapsed(), Duration::ZERO, "no pause inside a round");
        let mut pauses = Vec::new();
        for round in 1..=8 {
            c.pos = 2 * round;
            c.tried = vec![0, 1];
            let t = tokio::time::Instant::now();
            c.pause_after_round().await;
            pauses.push(t.elapsed());
            assert!(
                c.tried.is_empty(),
                "a new round may try every provider again"
            );
        }
        assert!(pauses.iter().all(|p| !p.is_zero()), "{pauses:?}");
        // Exponential with jitter, capped: never more than twice the longest pause.
        assert!(
            pauses.iter().all(|p| *p <= Duration::from_millis(800)),
            "{pauses:?}"
        );
        let total: Duration = pauses.iter().sum();
        assert!(
            total >= Duration::from_millis(100 + 200 + 400 * 6),
            "backoff grows to its cap: {pauses:?}"
        );
    }
}
