//! The call engine: a pool call is a retry loop over the providers of its plan. Each turn asks the
//! steps (see `steps`) whether the `null`s heard so far are the answer, whether a round is over and
//! the backoff is due, which provider fails over next and whether the retry budget allows another
//! attempt; then it sends the attempt, hedged when slow (see `hedge`). Whether a failure may be
//! retried at all is [`RpcError::retry`]'s one answer. The outcome of every attempt is recorded on
//! its provider (health, metrics, its span); the call's own span says how many attempts it took,
//! who answered and whether a hedge won.

use std::{
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};

use futures::{future::BoxFuture, FutureExt};
use jsonrpsee::core::params::ArrayParams;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::{
    steps::{CallState, Next},
    Answer, PoolError, ProviderPool,
};
use crate::{
    rpc::{AttemptSpan, Provider, RpcError},
    telemetry::sampling,
};

/// Which attempt of a call: on which provider, its number, whether it is a hedge.
#[derive(Clone, Copy, Debug)]
pub(super) struct Try {
    pub(super) idx: usize,
    pub(super) number: u32,
    pub(super) hedge: bool,
}

/// One finished attempt.
pub(super) struct Attempt<T> {
    pub(super) of: Try,
    /// The answer and whether it was accepted, or why the attempt failed.
    pub(super) result: Result<(bool, T), RpcError>,
    /// How long the provider took (without the wait for the rate limit).
    pub(super) took: Duration,
    /// Why its span is exported whatever the routine share, if it is.
    pub(super) kept: Option<&'static str>,
}

/// Sends one call to one provider; answers with how long the provider took.
/// The flag is set once the request has passed the rate limit and left.
pub(super) type Sender<'a, T> = dyn Fn(Arc<Provider>, Arc<AtomicBool>) -> BoxFuture<'a, (Result<T, RpcError>, Duration)>
    + Send
    + Sync
    + 'a;

impl ProviderPool {
    /// Calls `method` with hedging, failover and retry; the first answer wins.
    pub async fn request<T: DeserializeOwned + Send + 'static>(
        &self,
        method: &'static str,
        params: ArrayParams,
    ) -> Result<Answer<T>, PoolError> {
        let send = move |p: Arc<Provider>, sent: Arc<AtomicBool>| {
            let params = params.clone();
            async move { p.request_timed::<T>(method, params, Some(&sent)).await }.boxed()
        };
        self.call(method, &send, |_: &T| Ok(true), None).await
    }

    /// Calls a lookup that a provider may answer with `null` because it has not seen the object yet:
    /// a `null` moves on to the next usable provider (without counting as a failure), and `None` is
    /// returned only when every usable provider answered `null`.
    pub async fn request_some<T: DeserializeOwned + Send + 'static>(
        &self,
        method: &'static str,
        params: ArrayParams,
        check: impl Fn(&T) -> Result<(), RpcError> + Sync,
    ) -> Result<Answer<Option<T>>, PoolError> {
        let send = move |p: Arc<Provider>, sent: Arc<AtomicBool>| {
            let params = params.clone();
            async move {
                p.request_timed::<Option<T>>(method, params, Some(&sent))
                    .await
            }
            .boxed()
        };
        self.call(
            method,
            &send,
            |v: &Option<T>| match v {
                None => Ok(false),
                Some(v) => check(v).map(|()| true),
            },
            None,
        )
        .await
    }

    /// Calls on providers in turn (all but `exclude`). `accept` judges each answer: `Ok(true)` takes
    /// it, `Ok(false)` moves on (an answer to keep if nobody does better), `Err` counts as the
    /// provider's failure (a broken answer).
    pub(super) async fn call<T: Send>(
        &self,
        method: &'static str,
        send: &Sender<'_, T>,
        accept: impl Fn(&T) -> Result<bool, RpcError> + Sync,
        exclude: Option<usize>,
    ) -> Result<Answer<T>, PoolError> {
        let span = tracing::info_span!(
            "pool_request",
            otel.name = "pool_request",
            otel.status_code = tracing::field::Empty,
            rpc.method = method,
            blockwatch.chain = self.chain.as_str(),
            blockwatch.attempts = tracing::field::Empty,
            blockwatch.provider = tracing::field::Empty,
            blockwatch.hedged = tracing::field::Empty,
            blockwatch.hedge_won = tracing::field::Empty,
            blockwatch.kept = tracing::field::Empty,
        );
        let result = self
            .run(method, send, &accept, &span, exclude)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(a) => {
                span.record("blockwatch.attempts", a.attempts);
                span.record("blockwatch.provider", a.provider.name.as_str());
                // Kept with its attempts: a retried or hedged call, or one whose answer was.
                let kept = if a.attempts > 1 {
                    Some(sampling::reason::RETRY)
                } else {
                    a.kept
                };
                if let Some(reason) = kept {
                    span.record(sampling::KEPT, reason);
                }
            }
            Err(e) => {
                span.record(sampling::KEPT, sampling::reason::ERROR);
                span.record("otel.status_code", "ERROR");
                if let PoolError::Exhausted { attempts, .. } = e {
                    span.record("blockwatch.attempts", *attempts);
                }
            }
        }
        result
    }

    /// One attempt on provider `idx`: a due chain-id check first (a call of its own, with its own
    /// span; if it fails, the call is not sent), then the call in its attempt span.
    pub(super) async fn attempt<T: Send>(
        &self,
        of: Try,
        send: &Sender<'_, T>,
        accept: &(impl Fn(&T) -> Result<bool, RpcError> + Sync + ?Sized),
        span: AttemptSpan,
        sent: Arc<AtomicBool>,
    ) -> Attempt<T> {
        let provider = self.providers[of.idx].clone();
        let (result, took, kept) = match provider.ensure_verified().await {
            Err(e) => (Err(e), Duration::ZERO, None),
            Ok(()) => {
                let (result, took) = send(provider.clone(), sent)
                    .instrument(span.span.clone())
                    .await;
                let judged = result
                    .and_then(|value| accept(&value).map(|ok| (ok, value)))
                    .map_err(|e| provider.judge(e.redact(&self.redactor)));
                let kept = provider.finish_attempt(&span, took, judged.as_ref().err());
                (judged, took, kept)
            }
        };
        Attempt {
            of,
            result,
            took,
            kept,
        }
    }

    /// The retry loop of one call: rounds over the plan's providers until one answers, the
    /// attempts or the retry budget run out, or a failure no provider can do better on.
    async fn run<T: Send, A>(
        &self,
        method: &'static str,
        send: &Sender<'_, T>,
        accept: &A,
        call_span: &tracing::Span,
        exclude: Option<usize>,
    ) -> Result<Answer<T>, PoolError>
    where
        A: Fn(&T) -> Result<bool, RpcError> + Sync + ?Sized,
    {
        let plan = self.plan_without(exclude);
        if plan.order.is_empty() {
            return Err(PoolError::NoProvider {
                chain: self.chain.clone(),
            });
        }
        let mut call = CallState::new(plan, &self.cfg);
        while call.attempts < self.cfg.max_attempts {
            if let Some(answer) = self.nulls_answer(&mut call) {
                return Ok(answer);
            }
            call.pause_after_round().await;
            let idx = match self.next_provider(&mut call) {
                Next::Provider(idx) => idx,
                Next::Pass => continue,
                Next::NoProvider => {
                    return Err(PoolError::NoProvider {
                        chain: self.chain.clone(),
                    })
                }
            };
            if !self.budget_allows(&call, method) {
                break;
            }
            if let Some(end) = self
                .send_hedged(&mut call, idx, method, send, accept, call_span)
                .await
            {
                return end;
            }
        }
        self.give_up(call, method)
    }
}
