//! The hedge step: an attempt that takes longer than its provider usually does (its recent
//! `pool.hedge_percentile` latency) is raced, once per call and within the retry budget, against
//! the same call on the next usable provider; the first accepted answer wins and the other attempt
//! is abandoned. Hedges that win or lose are counted; a provider that keeps losing calls to hedges
//! without answering is passed over for a while.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

use futures::{stream::FuturesUnordered, StreamExt};
use opentelemetry::KeyValue;

use super::{
    engine::{Attempt, Sender, Try},
    steps::CallState,
    Answer, PoolError, ProviderPool,
};
use crate::{
    rpc::{health::MAX_OVERTAKEN, AttemptSpan, RpcError},
    telemetry::metrics::attr,
};

/// An attempt under way: on which provider, since when, its span, and whether it has left (passed
/// the rate limit).
struct InFlight {
    idx: usize,
    started: Instant,
    attempt: AttemptSpan,
    sent: Arc<AtomicBool>,
}

impl ProviderPool {
    /// Sends attempt `call.attempts + 1` to provider `idx`, hedged to another provider if it is
    /// slow, and waits for both to finish unless one is accepted first. Returns how the call ends,
    /// if it does: an accepted answer, or a failure no provider can do better on.
    pub(super) async fn send_hedged<T: Send, A>(
        &self,
        call: &mut CallState<T>,
        idx: usize,
        method: &'static str,
        send: &Sender<'_, T>,
        accept: &A,
        call_span: &tracing::Span,
    ) -> Option<Result<Answer<T>, PoolError>>
    where
        A: Fn(&T) -> Result<bool, RpcError> + Sync + ?Sized,
    {
        call.attempts += 1;
        call.tried.push(idx);
        let provider = &self.providers[idx];
        let span = provider.attempt_span(method, call.attempts, false);
        let of = Try {
            idx,
            number: call.attempts,
            hedge: false,
        };
        let sent = Arc::new(AtomicBool::new(false));
        let primary = self.attempt(of, send, accept, span.clone(), sent.clone());
        let hedge_to = self.hedge_target(call);
        let mut running = FuturesUnordered::new();
        running.push(primary);
        let mut flights = vec![InFlight {
            idx,
            started: Instant::now(),
            attempt: span,
            sent,
        }];
        let mut early = None;
        if let Some(h) = hedge_to {
            let delay = provider.hedge_delay(self.cfg.hedge_min_delay.0);
            let first = tokio::select! {
                done = running.next() => done,
                _ = tokio::time::sleep(delay) => None,
            };
            match first {
                // Answered in time: no hedge.
                Some(done) => early = Some(done),
                None if self.budget.withdraw(Instant::now()) => {
                    call.hedged = true;
                    call.attempts += 1;
                    call.tried.push(h);
                    call_span.record("blockwatch.hedged", true);
                    let hspan = self.providers[h].attempt_span(method, call.attempts, true);
                    tracing::debug!(chain = %self.chain, method, from = %provider.name,
                        to = %self.providers[h].name, after_ms = delay.as_millis() as u64, "hedging a slow call");
                    let of = Try {
                        idx: h,
                        number: call.attempts,
                        hedge: true,
                    };
                    let sent = Arc::new(AtomicBool::new(false));
                    running.push(self.attempt(of, send, accept, hspan.clone(), sent.clone()));
                    flights.push(InFlight {
                        idx: h,
                        started: Instant::now(),
                        attempt: hspan,
                        sent,
                    });
                }
                None => {}
            }
        }
        loop {
            let done = match early.take() {
                Some(done) => done,
                None => running.next().await?,
            };
            if let Some(end) = self.settle(call, done, &mut flights, method, call_span) {
                drop(running);
                return Some(end);
            }
        }
    }

    /// One attempt of the race finished: counts hedges, and returns how the call ends if it does
    /// (an accepted answer, or a failure that is not worth retrying); otherwise keeps a `null` or
    /// records the failure.
    fn settle<T>(
        &self,
        call: &mut CallState<T>,
        done: Attempt<T>,
        flights: &mut Vec<InFlight>,
        method: &'static str,
        call_span: &tracing::Span,
    ) -> Option<Result<Answer<T>, PoolError>> {
        let Attempt {
            of:
                Try {
                    idx: who,
                    number,
                    hedge,
                },
            result,
            took,
            kept,
        } = done;
        call.kept = call.kept.or(kept);
        // A finished attempt is no longer one that could be abandoned.
        let finished = flights.iter().position(|f| f.idx == who);
        let finished = finished.map(|at| flights.swap_remove(at));
        let won = matches!(result, Ok((true, _)));
        if hedge {
            self.count_hedge(who, won);
        } else if won {
            // The primary won: a hedge still in flight lost.
            for f in flights.iter().filter(|_| call.hedged) {
                self.count_hedge(f.idx, false);
            }
        }
        drop(finished);
        match result {
            Ok((true, value)) => {
                self.abandon_others(flights, who);
                if call.hedged {
                    call_span.record("blockwatch.hedge_won", hedge);
                }
                let failure = call.first_failure.take();
                let attempts = call.attempts.max(number);
                let a = self.answered(who, value, attempts, &call.plan, hedge, failure);
                let mut a = a.served_in(took);
                a.kept = call.kept;
                Some(Ok(a))
            }
            Ok((false, value)) => {
                call.unaccepted(who, value, took);
                None
            }
            Err(error) if !error.is_retryable() => {
                Some(Err(self.stopped(call, who, method, error)))
            }
            Err(error) => {
                self.failed(call, who, number, method, error);
                None
            }
        }
    }

    /// The attempts still in `flights` lost to `who`'s answer and are abandoned. If one had been
    /// sent, its provider took at least this long; if it was still waiting for the rate limit,
    /// that says nothing about the provider.
    fn abandon_others(&self, flights: &[InFlight], who: usize) {
        for f in flights {
            let p = &self.providers[f.idx];
            if f.idx != who
                && f.sent.load(Ordering::Relaxed)
                && p.abandon_attempt(&f.attempt, f.started.elapsed())
            {
                f.attempt.span.in_scope(|| {
                    tracing::warn!(chain = %self.chain, provider = %p.name,
                        overtaken = MAX_OVERTAKEN,
                        "provider lost several calls in a row to hedges without answering; passing it over")
                });
                p.cool_down(self.cfg.failover_cooldown.0);
            }
        }
    }

    /// Counts a hedge sent to provider `idx` that won or lost.
    fn count_hedge(&self, idx: usize, won: bool) {
        self.metrics.rpc_hedges.add(
            1,
            &[
                KeyValue::new(attr::CHAIN, self.chain.clone()),
                KeyValue::new(attr::PROVIDER, self.providers[idx].name.clone()),
                KeyValue::new(attr::OUTCOME, if won { "won" } else { "lost" }),
            ],
        );
    }
}
