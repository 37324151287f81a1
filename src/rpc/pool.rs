//! The provider pool of one chain: picks a provider by the chain's selection policy, fails over to the
//! next one when a call fails, and retries with exponential backoff and full jitter once every usable
//! provider has been tried. Providers that answer another chain id are refused: at start-up that stops
//! the agent, at runtime (chain ids are re-checked every `pool.chain_check_interval`) the provider is
//! passed over until a later check finds it on the right chain.
//!
//! Every call goes through [`ProviderPool::request`] (or [`ProviderPool::request_some`] for lookups that
//! a lagging provider may answer with `null`), so that later layers (spans, metrics, health scoring)
//! have one place to hook into.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use alloy_primitives::{B256, U64};
use backon::{BackoffBuilder, ExponentialBuilder};
use jsonrpsee::{core::params::ArrayParams, rpc_params};
use opentelemetry::KeyValue;
use serde::de::DeserializeOwned;

use tracing::Instrument;

use super::{
    provider::{record_span_error, Provider},
    types::RpcBlock,
    RpcError,
};
use crate::{
    chain::Block,
    config::{ChainConfig, PoolConfig, Selection},
    redact::Redactor,
    telemetry::{metrics::attr, Metrics},
};

/// A challenger must be this many times faster than the active provider to take over under
/// `selection = "best"`, so that two near-equal providers never flap.
const BEST_SWITCH_FACTOR: f64 = 1.5;

/// Why a pool call failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Every attempt failed.
    #[error("chain {chain}: {method} failed after {attempts} attempt(s); last error from provider {provider}: {error}")]
    Exhausted {
        /// The chain.
        chain: String,
        /// The JSON-RPC method.
        method: String,
        /// Attempts made.
        attempts: u32,
        /// The provider of the last attempt.
        provider: String,
        /// The last attempt's error (already redacted).
        error: RpcError,
    },
    /// No provider may be used: all of them serve another chain.
    #[error("chain {chain}: no usable provider (every provider answered another chain id)")]
    NoProvider {
        /// The chain.
        chain: String,
    },
}

/// Why the pool could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PoolSetupError {
    /// A provider's client could not be built.
    #[error("chain {chain}, provider {provider}: {message}")]
    Client {
        /// The chain.
        chain: String,
        /// The provider.
        provider: String,
        /// What went wrong.
        message: String,
    },
    /// A provider answered another chain id at start-up.
    #[error("chain {chain}, provider {provider} ({url}): answered chain id {actual}, but the config says chain_id = {expected}; refusing to start (fix the provider URL or chain_id)")]
    WrongChain {
        /// The chain.
        chain: String,
        /// The provider.
        provider: String,
        /// The provider's URL, redacted.
        url: String,
        /// The configured chain id.
        expected: u64,
        /// What it answered.
        actual: u64,
    },
}

/// A successful call: the value and who answered it.
#[derive(Debug)]
pub struct Answer<T> {
    /// The result.
    pub value: T,
    /// The provider that answered.
    pub provider: Arc<Provider>,
    /// Attempts it took (1 when the first provider answered).
    pub attempts: u32,
}

impl<T> Answer<T> {
    /// The same answer with its value transformed.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Answer<U> {
        Answer {
            value: f(self.value),
            provider: self.provider,
            attempts: self.attempts,
        }
    }
}

#[derive(Debug, Default)]
struct PoolState {
    /// Index of the provider that answered last.
    active: Option<usize>,
    /// Next start position for round-robin selection.
    rr_next: usize,
}

/// The providers of one chain.
#[derive(Debug)]
pub struct ProviderPool {
    chain: String,
    chain_id: u64,
    providers: Vec<Arc<Provider>>,
    selection: Selection,
    cfg: PoolConfig,
    redactor: Arc<Redactor>,
    metrics: Arc<Metrics>,
    budget: super::retry_budget::RetryBudget,
    state: Mutex<PoolState>,
}

impl ProviderPool {
    /// Builds the pool and checks every provider's chain id concurrently. A provider that answers
    /// another chain id is a set-up error; one that cannot be reached is checked on first use.
    pub async fn connect(
        chain: &ChainConfig,
        cfg: &PoolConfig,
        redactor: Arc<Redactor>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, PoolSetupError> {
        let mut providers = Vec::with_capacity(chain.providers.len());
        for p in &chain.providers {
            let provider = Provider::new(&chain.name, p, cfg, &redactor, metrics.clone()).map_err(
                |message| PoolSetupError::Client {
                    chain: chain.name.clone(),
                    provider: p.name.clone(),
                    message,
                },
            )?;
            providers.push(Arc::new(provider));
        }
        let checks = providers
            .iter()
            .map(|p| async move { (p, p.verify_chain_id(chain.chain_id).await) });
        for (p, result) in futures::future::join_all(checks).await {
            match result {
                Ok(()) => {
                    tracing::info!(chain = %chain.name, provider = %p.name, url = %p.display_url, "provider serves the configured chain")
                }
                Err(RpcError::WrongChain { expected, actual }) => {
                    return Err(PoolSetupError::WrongChain {
                        chain: chain.name.clone(),
                        provider: p.name.clone(),
                        url: p.display_url.clone(),
                        expected,
                        actual,
                    })
                }
                Err(e) => tracing::warn!(
                    chain = %chain.name, provider = %p.name, url = %p.display_url,
                    error = %redactor.redact(&e.to_string()),
                    "provider unreachable at start-up; its chain id will be checked before first use"
                ),
            }
        }
        Ok(Self {
            chain: chain.name.clone(),
            chain_id: chain.chain_id,
            providers,
            selection: chain.selection,
            cfg: cfg.clone(),
            redactor,
            metrics,
            budget: super::retry_budget::RetryBudget::new(
                cfg.retry_budget,
                cfg.retry_budget_floor,
                Instant::now(),
            ),
            state: Mutex::new(PoolState::default()),
        })
    }

    /// The chain's name.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// The providers, in configuration order.
    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// The provider that answered last.
    pub fn active(&self) -> Option<Arc<Provider>> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.active.map(|i| self.providers[i].clone())
    }

    /// The order in which providers are tried for the next call: usable ones by the selection
    /// policy, then those cooling down after a failure (soonest back first), never refused ones.
    fn candidates(&self) -> Vec<usize> {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (mut ready, mut cooling): (Vec<usize>, Vec<usize>) = (0..self.providers.len())
            .filter(|&i| !self.providers[i].is_refused())
            .partition(|&i| self.providers[i].is_available(now));
        match self.selection {
            Selection::Priority => ready.sort_by_key(|&i| (self.providers[i].priority, i)),
            Selection::RoundRobin => {
                if !ready.is_empty() {
                    let start = st.rr_next % ready.len();
                    ready.rotate_left(start);
                    st.rr_next = st.rr_next.wrapping_add(1);
                }
            }
            Selection::Best => {
                // The median of recent successful calls (see `Provider::latency`).
                let latency = |i: usize| self.providers[i].latency().map(|p| p.p50);
                // Sampled providers by latency, then unsampled ones by priority: no sample is no proof.
                ready.sort_by_key(|&i| {
                    (
                        latency(i).is_none(),
                        latency(i),
                        self.providers[i].priority,
                        i,
                    )
                });
                if let Some(active) = st.active.filter(|a| ready.contains(a)) {
                    let challenger = ready[0];
                    let beaten = match (latency(active), latency(challenger)) {
                        (Some(a), Some(c)) => c.mul_f64(BEST_SWITCH_FACTOR) < a,
                        _ => false,
                    };
                    if !beaten {
                        ready.retain(|&i| i != active);
                        ready.insert(0, active);
                    }
                }
            }
        }
        cooling.sort_by_key(|&i| self.providers[i].health().cooldown_until);
        ready.extend(cooling);
        ready
    }

    /// Calls `method` with failover and retry; the first answer wins.
    pub async fn request<T: DeserializeOwned>(
        &self,
        method: &'static str,
        params: ArrayParams,
    ) -> Result<Answer<T>, PoolError> {
        self.call(method, params, |_: &T| Ok(true)).await
    }

    /// Calls a lookup that a provider may answer with `null` because it has not seen the object yet:
    /// a `null` moves on to the next usable provider (without counting as a failure), and `None` is
    /// returned only when every usable provider answered `null`.
    pub async fn request_some<T: DeserializeOwned>(
        &self,
        method: &'static str,
        params: ArrayParams,
        check: impl Fn(&T) -> Result<(), RpcError>,
    ) -> Result<Answer<Option<T>>, PoolError> {
        self.call(method, params, |v: &Option<T>| match v {
            None => Ok(false),
            Some(v) => check(v).map(|()| true),
        })
        .await
    }

    /// Calls `method` on providers in turn. `accept` judges each answer: `Ok(true)` takes it,
    /// `Ok(false)` moves on (an answer to keep if nobody does better), `Err` counts as the provider's
    /// failure (a broken answer).
    async fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        params: ArrayParams,
        accept: impl Fn(&T) -> Result<bool, RpcError>,
    ) -> Result<Answer<T>, PoolError> {
        let span = tracing::info_span!(
            "pool_request",
            otel.name = "pool_request",
            otel.status_code = tracing::field::Empty,
            rpc.method = method,
            blockwatch.chain = %self.chain,
            blockwatch.attempts = tracing::field::Empty,
            blockwatch.provider = tracing::field::Empty,
        );
        let result = self
            .call_attempts(method, params, accept)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(a) => {
                span.record("blockwatch.attempts", a.attempts);
                span.record("blockwatch.provider", a.provider.name.as_str());
            }
            Err(e) => {
                span.record("otel.status_code", "ERROR");
                if let PoolError::Exhausted { attempts, .. } = e {
                    span.record("blockwatch.attempts", *attempts);
                }
            }
        }
        result
    }

    async fn call_attempts<T: DeserializeOwned>(
        &self,
        method: &'static str,
        params: ArrayParams,
        accept: impl Fn(&T) -> Result<bool, RpcError>,
    ) -> Result<Answer<T>, PoolError> {
        let order = self.candidates();
        if order.is_empty() {
            return Err(PoolError::NoProvider {
                chain: self.chain.clone(),
            });
        }
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(self.cfg.retry_initial_backoff.0)
            .with_max_delay(self.cfg.retry_max_backoff.0)
            .with_jitter()
            .without_max_times()
            .build();
        let mut last_error: Option<(usize, RpcError)> = None;
        let mut unaccepted: Option<(usize, T)> = None;
        let mut attempts = 0u32;
        let mut pos = 0usize;
        while attempts < self.cfg.max_attempts {
            if pos > 0 && pos % order.len() == 0 {
                // Every provider has been tried once more: a `null` from all of them is an answer,
                // a failure from all of them earns a pause before the next round.
                if let Some((idx, value)) = unaccepted.take() {
                    return Ok(self.answered(idx, value, attempts));
                }
                let delay = backoff.next().unwrap_or(self.cfg.retry_max_backoff.0);
                tokio::time::sleep(delay).await;
            }
            let idx = order[pos % order.len()];
            pos += 1;
            let provider = &self.providers[idx];
            if provider.is_refused() {
                if order.iter().all(|&i| self.providers[i].is_refused()) {
                    return Err(PoolError::NoProvider {
                        chain: self.chain.clone(),
                    });
                }
                continue;
            }
            if provider.asked_to_wait_until().is_some() {
                // It said when to come back (Retry-After): not before, and without spending an
                // attempt, so that a call waits out a pool-wide pause instead of failing.
                continue;
            }
            // The first attempt earns retries; every attempt after a failure spends one. When the
            // budget is spent the call fails now and is asked again later, instead of adding load
            // to providers that are already failing.
            if last_error.is_none() && attempts == 0 {
                self.budget.deposit(Instant::now());
            } else if last_error.is_some() && !self.budget.withdraw(Instant::now()) {
                tracing::debug!(chain = %self.chain, method, attempts, "retry budget spent; not retrying now");
                break;
            }
            attempts += 1;
            // A due chain-id check is a call of its own (with its own span and measurement); if it
            // fails, `method` is not sent to this provider at all.
            let (judged, span) = match self.ensure_verified(provider).await {
                Ok(()) => {
                    let span = provider.attempt_span(method, attempts);
                    let started = Instant::now();
                    let judged = provider
                        .request::<T>(method, params.clone())
                        .instrument(span.clone())
                        .await
                        .and_then(|value| accept(&value).map(|ok| (ok, value)))
                        .map_err(|e| self.redact_error(e));
                    provider.record_attempt(method, started.elapsed(), judged.as_ref().err());
                    if let Err(e) = &judged {
                        record_span_error(&span, e);
                    }
                    (judged, span)
                }
                Err(e) => (Err(self.redact_error(e)), tracing::Span::current()),
            };
            match judged {
                Ok((true, value)) => return Ok(self.answered(idx, value, attempts)),
                Ok((false, value)) => {
                    if unaccepted.is_none() {
                        unaccepted = Some((idx, value));
                    }
                }
                Err(error) => {
                    span.in_scope(|| {
                        tracing::warn!(
                            chain = %self.chain, provider = %provider.name, method,
                            attempt = attempts, error_type = %error.error_type(), error = %error,
                            "provider call failed"
                        )
                    });
                    provider.cool_down(self.cfg.failover_cooldown.0);
                    last_error = Some((idx, error));
                }
            }
        }
        if let Some((idx, value)) = unaccepted {
            return Ok(self.answered(idx, value, attempts));
        }
        let (idx, error) = last_error.unwrap_or((
            order[0],
            RpcError::Connection("no attempt could be made".to_owned()),
        ));
        Err(PoolError::Exhausted {
            chain: self.chain.clone(),
            method: method.to_owned(),
            attempts,
            provider: self.providers[idx].name.clone(),
            error,
        })
    }

    async fn ensure_verified(&self, provider: &Provider) -> Result<(), RpcError> {
        if !provider.needs_chain_check() {
            return Ok(());
        }
        let result = provider.verify_chain_id(self.chain_id).await;
        if let Err(RpcError::WrongChain { expected, actual }) = &result {
            tracing::error!(
                chain = %self.chain, provider = %provider.name, url = %provider.display_url,
                expected, actual, "provider serves another chain; it will not be used"
            );
        }
        result
    }

    fn redact_error(&self, error: RpcError) -> RpcError {
        match error {
            RpcError::Connection(m) => RpcError::Connection(self.redactor.redact(&m)),
            RpcError::InvalidResponse(m) => RpcError::InvalidResponse(self.redactor.redact(&m)),
            RpcError::InvalidBlock(m) => RpcError::InvalidBlock(self.redactor.redact(&m)),
            RpcError::Rpc { code, message } => RpcError::Rpc {
                code,
                message: self.redactor.redact(&message),
            },
            other => other,
        }
    }

    fn answered<T>(&self, idx: usize, value: T, attempts: u32) -> Answer<T> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.active != Some(idx) {
            let to = self.providers[idx].name.as_str();
            match st.active {
                Some(prev) => {
                    let from = self.providers[prev].name.as_str();
                    // More than one attempt: the previous choice failed this very call.
                    let reason = if attempts > 1 {
                        "failover"
                    } else {
                        "selection"
                    };
                    tracing::info!(chain = %self.chain, from, to, reason, "provider_switch");
                    self.metrics.provider_switches.add(
                        1,
                        &[
                            KeyValue::new(attr::CHAIN, self.chain.clone()),
                            KeyValue::new(attr::FROM, from.to_owned()),
                            KeyValue::new(attr::TO, to.to_owned()),
                            KeyValue::new(attr::REASON, reason),
                        ],
                    );
                }
                None => tracing::info!(chain = %self.chain, provider = to, "first provider in use"),
            }
            st.active = Some(idx);
        }
        Answer {
            value,
            provider: self.providers[idx].clone(),
            attempts,
        }
    }

    /// The head block number (`eth_blockNumber`).
    pub async fn block_number(&self) -> Result<Answer<u64>, PoolError> {
        let a = self
            .request::<U64>("eth_blockNumber", rpc_params![])
            .await?;
        Ok(a.map(|n| n.to::<u64>()))
    }

    /// The block at `number`, without transaction bodies; `None` if no provider has it yet. A block
    /// with another number or a hash that does not match its header is a failure of the provider
    /// that served it, and the next provider is asked.
    pub async fn block_by_number(&self, number: u64) -> Result<Answer<Option<Block>>, PoolError> {
        let a = self
            .request_some::<RpcBlock>(
                "eth_getBlockByNumber",
                rpc_params![U64::from(number), false],
                |b| {
                    if b.number() != number {
                        return Err(RpcError::InvalidBlock(format!(
                            "asked for block {number}, got block {}",
                            b.number()
                        )));
                    }
                    b.verify_hash()
                },
            )
            .await?;
        Ok(a.map(|b| b.map(Block::from)))
    }

    /// The block with `hash`, without transaction bodies; `None` if no provider knows it. Checked
    /// like [`Self::block_by_number`].
    pub async fn block_by_hash(&self, hash: B256) -> Result<Answer<Option<Block>>, PoolError> {
        let a = self
            .request_some::<RpcBlock>("eth_getBlockByHash", rpc_params![hash, false], |b| {
                if b.header.hash != hash {
                    return Err(RpcError::InvalidBlock(format!(
                        "asked for block {hash}, got block {}",
                        b.header.hash
                    )));
                }
                b.verify_hash()
            })
            .await?;
        Ok(a.map(|b| b.map(Block::from)))
    }

    /// How long to wait before asking again after a failed call.
    pub fn retry_pause(&self) -> Duration {
        self.cfg.retry_initial_backoff.0
    }
}
