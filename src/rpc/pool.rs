//! The provider pool of one chain: ranks providers by health and the chain's selection policy,
//! hedges slow calls to a second provider, fails over when a call fails, and retries with exponential
//! backoff and full jitter (within a retry budget) once every usable provider has been tried.
//!
//! Providers are ranked in tiers: usable ones (`alive`, `degraded`) that are not cooling down after a
//! failure or asked to wait (`Retry-After`) come first, ordered by the selection policy; then the
//! rest, least bad first (cooling down, `lagging`, `unreachable`, `circuit_open`). Nobody usable is
//! never a reason to stop calling: the last providers are tried anyway and the chain is reported
//! degraded. Providers on another chain (`wrong_chain`) are never called. At start-up a provider on
//! another chain id or genesis block stops the agent; at runtime (chain ids are re-checked every
//! `pool.chain_check_interval`) it is passed over until a later check finds it on the right chain.
//!
//! A background monitor ([`ProviderPool::monitor`]) re-evaluates every provider's state and probes
//! providers that calls have not used lately, so that the pool knows who is healthy before it needs
//! them.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use alloy_primitives::{B256, U64};
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::{future::BoxFuture, stream::FuturesUnordered, FutureExt, StreamExt};
use jsonrpsee::{core::params::ArrayParams, rpc_params};
use opentelemetry::KeyValue;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    heads::{CheckKind, Fork, HeadBook, HeadRules, LieKind},
    health::{HealthConfig, State},
    provider::{Provider, ProviderContext, ProviderStatus},
    types::RpcBlock,
    RpcError,
};
use crate::{
    config::{BlockHashCheck, ChainConfig, PoolConfig, Selection},
    model::Block,
    redact::Redactor,
    telemetry::{metrics::attr, Metrics},
};

/// Under `selection = "best"`, a challenger must also be at least this much cheaper (in
/// milliseconds) than the current provider to take over.
const MIN_SWITCH_GAIN_MS: f64 = 20.0;

/// Longest pause between two evaluations of every provider's state.
const MAX_EVALUATION_INTERVAL: Duration = Duration::from_millis(500);

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
    /// Providers serve different genesis blocks and none can be trusted over the others.
    #[error("chain {chain}: {message}; refusing to start (set chains[].genesis_hash, or fix the provider URLs)")]
    Genesis {
        /// The chain.
        chain: String,
        /// Who serves what.
        message: String,
    },
}

/// A successful call: the value and who answered it.
#[derive(Debug)]
pub struct Answer<T> {
    /// The result.
    pub value: T,
    /// The provider that answered.
    pub provider: Arc<Provider>,
    /// Attempts it took (1 when the first provider answered), hedges included.
    pub attempts: u32,
    /// The first attempt that failed on the way, if one did: which provider, and how.
    pub first_failure: Option<(String, RpcError)>,
    /// How long the answering provider took, from sending to its answer (without the wait for
    /// the rate limit).
    pub served_in: Duration,
}

impl<T> Answer<T> {
    fn served_in(mut self, took: Duration) -> Self {
        self.served_in = took;
        self
    }

    /// The same answer with its value transformed.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Answer<U> {
        Answer {
            value: f(self.value),
            provider: self.provider,
            attempts: self.attempts,
            first_failure: self.first_failure,
            served_in: self.served_in,
        }
    }
}

/// The pool as `/status` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PoolStatus {
    /// The corroborated chain head.
    pub head: Option<u64>,
    /// The provider calls go to first.
    pub current_provider: Option<String>,
    /// Failed calls since start, over all providers.
    pub rpc_error_count: u64,
    /// Every provider.
    pub providers: Vec<ProviderStatus>,
    /// Provider pairs that announced different hashes at the same height.
    pub forks: Vec<Fork>,
}

#[derive(Debug, Default)]
struct PoolState {
    /// Index of the provider calls go to first.
    active: Option<usize>,
    /// Next start position for round-robin selection.
    rr_next: usize,
    /// Under `selection = "best"`: a provider clearly better than the active one, since when.
    challenger: Option<(usize, Instant)>,
    /// Switches since start.
    switches: u64,
}

/// The order in which a call tries providers, and why the first one is first.
#[derive(Debug)]
struct Plan {
    order: Vec<usize>,
    /// How many of `order` are usable (the rest are last resorts).
    usable: usize,
    /// Why `order[0]` replaces the active provider, if it does.
    switch_reason: &'static str,
    /// A second opinion (a provider other than the one that served a block is asked for it): whoever
    /// answers does not become the active provider.
    side: bool,
}

/// Which attempt of a call: on which provider, its number, whether it is a hedge.
#[derive(Clone, Copy, Debug)]
struct Try {
    idx: usize,
    number: u32,
    hedge: bool,
}

/// One finished attempt.
struct Attempt<T> {
    of: Try,
    result: Result<(bool, T), RpcError>,
    /// How long the provider took (without the wait for the rate limit).
    took: Duration,
}

/// Sends one call to one provider.
/// Sends one call to one provider; answers with how long the provider took.
/// The flag is set once the request has passed the rate limit and left.
type Sender<'a, T> = dyn Fn(Arc<Provider>, Arc<AtomicBool>) -> BoxFuture<'a, (Result<T, RpcError>, Duration)>
    + Send
    + Sync
    + 'a;

/// The providers of one chain.
#[derive(Debug)]
pub struct ProviderPool {
    chain: String,
    chain_id: u64,
    providers: Vec<Arc<Provider>>,
    heads: Arc<HeadBook>,
    selection: Selection,
    cfg: PoolConfig,
    redactor: Arc<Redactor>,
    metrics: Arc<Metrics>,
    budget: super::retry_budget::RetryBudget,
    state: Mutex<PoolState>,
    /// The genesis hash providers must serve, once known.
    genesis: Mutex<Option<B256>>,
    /// Providers whose genesis block has been checked.
    genesis_checked: Vec<AtomicBool>,
    /// How block hashes are verified.
    hash_check: BlockHashCheck,
    /// Header-hash mismatches, and the verdict once providers agree on hashes their headers do not
    /// give (the chain hashes blocks its own way).
    hashing: Arc<super::integrity::HashLedger>,
}

/// What a second provider said of a block one provider served (`block_hash_check = "consensus"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// Another provider serves the same hash at that height (or there is no other provider).
    Confirmed,
    /// Another provider serves another hash there.
    Disagreed {
        /// Who.
        provider: String,
        /// Its hash.
        hash: B256,
    },
    /// No other provider serves the block yet.
    Unconfirmed,
}

impl ProviderPool {
    /// Builds the pool and checks every provider's chain id and genesis block concurrently. A
    /// provider on another chain is a set-up error; one that cannot be reached is checked when it
    /// answers.
    pub async fn connect(
        chain: &ChainConfig,
        cfg: &PoolConfig,
        redactor: Arc<Redactor>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, PoolSetupError> {
        let heads = Arc::new(HeadBook::new(
            HeadRules {
                outlier_blocks: cfg.head_outlier_blocks,
                block_time: chain.expected_block_time.0,
                freshness: (cfg.probe_interval.0 * 3).max(chain.max_block_delay.0),
                backwards_blocks: chain.reorg_window,
                inconsistent_for: cfg.inconsistent_for.0,
                recheck_after: chain
                    .expected_block_time
                    .0
                    .clamp(Duration::from_secs(1), Duration::from_secs(5)),
            },
            chain.providers.len(),
        ));
        let costs = Arc::new(cfg.method_costs.clone());
        let hashing = Arc::new(super::integrity::HashLedger::new(&chain.name));
        let mut providers = Vec::with_capacity(chain.providers.len());
        for (index, p) in chain.providers.iter().enumerate() {
            let ctx = ProviderContext {
                chain: chain.name.clone(),
                index,
                health: HealthConfig::new(cfg, chain.expected_block_time.0),
                heads: heads.clone(),
                costs: costs.clone(),
                metrics: metrics.clone(),
                redactor: redactor.clone(),
                hash_check: chain.block_hash_check,
                hashing: hashing.clone(),
            };
            let provider = Provider::new(ctx, p, cfg, &redactor).map_err(|message| {
                PoolSetupError::Client {
                    chain: chain.name.clone(),
                    provider: p.name.clone(),
                    message,
                }
            })?;
            providers.push(Arc::new(provider));
        }
        let pool = Self {
            chain: chain.name.clone(),
            chain_id: chain.chain_id,
            genesis_checked: providers.iter().map(|_| AtomicBool::new(false)).collect(),
            providers,
            heads,
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
            genesis: Mutex::new(chain.genesis_hash),
            hash_check: chain.block_hash_check,
            hashing,
        };
        let checks = pool.providers.iter().map(|p| {
            let span = tracing::info_span!(
                "check_provider",
                otel.name = "check_provider",
                blockwatch.chain = %chain.name,
                blockwatch.provider = %p.name,
            );
            async move {
                let id = p.verify_chain_id(chain.chain_id).await;
                let genesis = match id {
                    Ok(()) => Some(p.genesis_hash().await),
                    Err(_) => None,
                };
                (p, id, genesis)
            }
            .instrument(span)
        });
        let mut served = Vec::new();
        for (p, result, genesis) in futures::future::join_all(checks).await {
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
                    error = %pool.redactor.redact(&e.to_string()),
                    "provider unreachable at start-up; its chain id will be checked before first use"
                ),
            }
            match genesis {
                Some(Ok(Some(hash))) => served.push((p.index, hash)),
                Some(Ok(None)) => {
                    // It does not serve block 0 (pruned history): nothing to compare.
                    pool.genesis_checked[p.index].store(true, Ordering::Relaxed);
                }
                Some(Err(RpcError::HashScheme(_))) => {
                    // Its hash cannot be verified (reported once): nothing to compare.
                    pool.genesis_checked[p.index].store(true, Ordering::Relaxed);
                }
                Some(Err(e)) => tracing::warn!(
                    chain = %chain.name, provider = %p.name,
                    error = %pool.redactor.redact(&e.to_string()),
                    "cannot read the genesis block at start-up; it will be checked later"
                ),
                None => {}
            }
        }
        pool.settle_genesis(served)?;
        Ok(pool)
    }

    /// Compares the genesis hashes providers served at start-up with the configured one, or with
    /// each other's: a provider in the minority is refused; a tie stops the agent.
    fn settle_genesis(&self, served: Vec<(usize, B256)>) -> Result<(), PoolSetupError> {
        let configured = *self.genesis.lock().unwrap_or_else(|p| p.into_inner());
        let expected = match configured {
            Some(h) => Some(h),
            None => {
                let mut counts: Vec<(B256, usize)> = Vec::new();
                for &(_, h) in &served {
                    match counts.iter_mut().find(|(x, _)| *x == h) {
                        Some((_, n)) => *n += 1,
                        None => counts.push((h, 1)),
                    }
                }
                counts.sort_by_key(|c| std::cmp::Reverse(c.1));
                match counts.as_slice() {
                    [] => None,
                    [(h, _)] => Some(*h),
                    [(h, a), (_, b), ..] if a > b => Some(*h),
                    _ => {
                        let who: Vec<String> = served
                            .iter()
                            .map(|&(i, h)| format!("{} serves {h}", self.providers[i].name))
                            .collect();
                        return Err(PoolSetupError::Genesis {
                            chain: self.chain.clone(),
                            message: format!(
                                "providers disagree on the genesis block and no hash has a majority: {}",
                                who.join(", ")
                            ),
                        });
                    }
                }
            }
        };
        let Some(expected) = expected else {
            return Ok(());
        };
        *self.genesis.lock().unwrap_or_else(|p| p.into_inner()) = Some(expected);
        for (idx, hash) in served {
            self.judge_genesis(idx, hash, expected, configured.is_some())?;
        }
        Ok(())
    }

    fn judge_genesis(
        &self,
        idx: usize,
        hash: B256,
        expected: B256,
        fatal: bool,
    ) -> Result<(), PoolSetupError> {
        self.genesis_checked[idx].store(true, Ordering::Relaxed);
        if hash == expected {
            return Ok(());
        }
        let p = &self.providers[idx];
        if fatal {
            return Err(PoolSetupError::Genesis {
                chain: self.chain.clone(),
                message: format!(
                    "provider {} ({}) serves genesis block {hash}, but chains[].genesis_hash is {expected}",
                    p.name, p.display_url
                ),
            });
        }
        tracing::error!(chain = %self.chain, provider = %p.name, url = %p.display_url,
            served = %hash, expected = %expected,
            "provider serves another genesis block than the other providers; it will not be used");
        p.refuse_genesis();
        Ok(())
    }

    /// The chain's name.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// The providers, in configuration order.
    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// The chain's head book.
    pub fn heads(&self) -> &Arc<HeadBook> {
        &self.heads
    }

    /// The provider calls go to first.
    pub fn active(&self) -> Option<Arc<Provider>> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.active.map(|i| self.providers[i].clone())
    }

    /// Provider switches since start.
    pub fn switches(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .switches
    }

    /// The pool as `/status` shows it.
    pub fn status(&self) -> PoolStatus {
        let names: Vec<&str> = self.providers.iter().map(|p| p.name.as_str()).collect();
        PoolStatus {
            head: self.heads.best(),
            current_provider: self.active().map(|p| p.name.clone()),
            rpc_error_count: self.providers.iter().map(|p| p.errors()).sum(),
            providers: self.providers.iter().map(|p| p.status()).collect(),
            forks: self.heads.forks(&names),
        }
    }

    /// How much a provider may be used now: 0 usable, 1 cooling down or asked to wait, 2 lagging,
    /// 3 inconsistent, 4 unreachable, 5 circuit open; `None`: never (another chain).
    fn tier(&self, i: usize, now: Instant) -> Option<u8> {
        let p = &self.providers[i];
        if p.is_refused() {
            return None;
        }
        let waiting = p.cooling_until(now).is_some() || p.asked_to_wait_until().is_some();
        match p.state() {
            State::WrongChain if p.needs_chain_check() => Some(5),
            State::WrongChain => None,
            State::Alive | State::Degraded if !waiting => Some(0),
            State::Alive | State::Degraded => Some(1),
            State::Lagging => Some(2),
            State::Inconsistent => Some(3),
            State::Unreachable => Some(4),
            State::CircuitOpen => Some(5),
        }
    }

    /// The order in which providers are tried for the next call.
    fn plan(&self) -> Plan {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut ready = Vec::new();
        let mut rest = Vec::new();
        for i in 0..self.providers.len() {
            match self.tier(i, now) {
                Some(0) => ready.push(i),
                Some(t) => rest.push((t, i)),
                None => {}
            }
        }
        let active = st.active;
        let mut switch_reason = match active {
            Some(a) if !ready.contains(&a) => {
                let p = &self.providers[a];
                match p.state() {
                    s if !s.is_usable() => s.as_str(),
                    _ if p.asked_to_wait_until().is_some() => "rate_limited",
                    // Failed recently, or lost calls to hedges.
                    _ => "cooldown",
                }
            }
            _ => "selection",
        };
        match self.selection {
            Selection::Priority => {
                ready.sort_by_key(|&i| (self.providers[i].priority, i));
                if switch_reason == "selection" {
                    switch_reason = "priority";
                }
            }
            Selection::RoundRobin => {
                if !ready.is_empty() {
                    let start = st.rr_next % ready.len();
                    ready.rotate_left(start);
                    st.rr_next = st.rr_next.wrapping_add(1);
                }
                switch_reason = "round_robin";
            }
            Selection::Best => {
                let costs: Vec<Option<f64>> = self.providers.iter().map(|p| p.cost_ms()).collect();
                // Providers with samples by cost, then unsampled ones by priority: no sample is no
                // proof of being best.
                ready.sort_by(|&a, &b| {
                    let key = |i: usize| (costs[i].is_none(), self.providers[i].priority, i);
                    match (costs[a], costs[b]) {
                        (Some(x), Some(y)) => x.total_cmp(&y).then(key(a).cmp(&key(b))),
                        _ => key(a).cmp(&key(b)),
                    }
                });
                if let Some(a) = active.filter(|a| ready.contains(a)) {
                    let c = ready[0];
                    let beaten = c != a
                        && match (costs[a], costs[c]) {
                            (Some(ca), Some(cc)) => {
                                cc * self.cfg.switch_ratio < ca && ca - cc >= MIN_SWITCH_GAIN_MS
                            }
                            (None, Some(_)) => true,
                            _ => false,
                        };
                    let held = match (beaten, st.challenger) {
                        (false, _) => {
                            st.challenger = None;
                            false
                        }
                        (true, Some((who, since))) if who == c => {
                            now.duration_since(since) >= self.cfg.switch_hold.0
                        }
                        (true, _) => {
                            st.challenger = Some((c, now));
                            false
                        }
                    };
                    if held {
                        switch_reason = "score";
                    } else {
                        ready.retain(|&i| i != a);
                        ready.insert(0, a);
                    }
                }
            }
        }
        let usable = ready.len();
        rest.sort_by_key(|&(t, i)| (t, self.providers[i].cooling_until(now), i));
        ready.extend(rest.into_iter().map(|(_, i)| i));
        Plan {
            order: ready,
            usable,
            switch_reason,
            side: false,
        }
    }

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
    async fn call<T: Send>(
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
        );
        let result = self
            .call_attempts(method, send, &accept, &span, exclude)
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

    /// One attempt on provider `idx`: a due chain-id check first (a call of its own, with its own
    /// span; if it fails, the call is not sent), then the call in its attempt span.
    async fn attempt<T: Send>(
        &self,
        of: Try,
        method: &'static str,
        send: &Sender<'_, T>,
        accept: &(impl Fn(&T) -> Result<bool, RpcError> + Sync + ?Sized),
        span: tracing::Span,
        sent: Arc<AtomicBool>,
    ) -> Attempt<T> {
        let provider = self.providers[of.idx].clone();
        let (result, took) = match self.ensure_verified(&provider).await {
            Err(e) => (Err(self.redact_error(e)), Duration::ZERO),
            Ok(()) => {
                let (result, took) = send(provider.clone(), sent).instrument(span.clone()).await;
                let judged = result
                    .and_then(|value| accept(&value).map(|ok| (ok, value)))
                    .map_err(|e| provider.judge(self.redact_error(e)));
                provider.finish_attempt(&span, method, took, judged.as_ref().err());
                (judged, took)
            }
        };
        Attempt { of, result, took }
    }

    async fn call_attempts<T: Send>(
        &self,
        method: &'static str,
        send: &Sender<'_, T>,
        accept: &(impl Fn(&T) -> Result<bool, RpcError> + Sync + ?Sized),
        call_span: &tracing::Span,
        exclude: Option<usize>,
    ) -> Result<Answer<T>, PoolError> {
        let mut plan = self.plan();
        plan.side = exclude.is_some();
        if let Some(x) = exclude {
            if let Some(at) = plan.order.iter().position(|&i| i == x) {
                plan.order.remove(at);
                if at < plan.usable {
                    plan.usable -= 1;
                }
            }
        }
        let order = &plan.order;
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
        let mut first_failure: Option<(String, RpcError)> = None;
        let mut unaccepted: Option<(usize, T, Duration)> = None;
        let mut attempts = 0u32;
        let mut pos = 0usize;
        let mut hedged = false;
        // Providers tried in the current round over `order` (a hedge target included).
        let mut tried: Vec<usize> = Vec::with_capacity(order.len());
        while attempts < self.cfg.max_attempts {
            let round_done = pos > 0 && pos % order.len() == 0;
            // `null` from every provider of a round is an answer; so is `null` from every usable
            // one: last resorts (lagging, unreachable, circuit open) are not waited for to confirm
            // that a block does not exist yet.
            let nulls_suffice = round_done
                || (plan.usable > 0 && order[..plan.usable].iter().all(|i| tried.contains(i)));
            if nulls_suffice {
                if let Some((idx, value, took)) = unaccepted.take() {
                    let failure = first_failure.take();
                    let a = self.answered(idx, value, attempts, &plan, false, failure);
                    return Ok(a.served_in(took));
                }
            }
            if round_done {
                // A failure from every provider earns a pause before the next round.
                tried.clear();
                let delay = backoff.next().unwrap_or(self.cfg.retry_max_backoff.0);
                tokio::time::sleep(delay).await;
            }
            let idx = order[pos % order.len()];
            pos += 1;
            if tried.contains(&idx) {
                // Already tried in this round, as a hedge.
                continue;
            }
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
            tried.push(idx);
            let span = provider.attempt_span(method, attempts);
            let of = Try {
                idx,
                number: attempts,
                hedge: false,
            };
            let sent = Arc::new(AtomicBool::new(false));
            let primary = self.attempt(of, method, send, accept, span.clone(), sent.clone());
            // A hedge: once per call, to the next usable provider, when this one is slower than
            // it usually is.
            let now = Instant::now();
            let hedge_to =
                (!hedged && self.cfg.hedge_percentile > 0 && attempts < self.cfg.max_attempts)
                    .then(|| {
                        // A usable provider not tried yet in this call's round, and not cooling down
                        // after failing (possibly this very call).
                        order[..plan.usable].iter().copied().find(|&i| {
                            let p = &self.providers[i];
                            !tried.contains(&i)
                                && p.cooling_until(now).is_none()
                                && p.asked_to_wait_until().is_none()
                                && !p.is_refused()
                        })
                    })
                    .flatten();
            let mut running = FuturesUnordered::new();
            running.push(primary);
            let mut spans = vec![(idx, Instant::now(), span, sent)];
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
                        hedged = true;
                        attempts += 1;
                        tried.push(h);
                        call_span.record("blockwatch.hedged", true);
                        let hspan = self.providers[h].attempt_span(method, attempts);
                        hspan.record("blockwatch.hedge", true);
                        tracing::debug!(chain = %self.chain, method, from = %provider.name,
                            to = %self.providers[h].name, after_ms = delay.as_millis() as u64, "hedging a slow call");
                        let of = Try {
                            idx: h,
                            number: attempts,
                            hedge: true,
                        };
                        let sent = Arc::new(AtomicBool::new(false));
                        running.push(self.attempt(
                            of,
                            method,
                            send,
                            accept,
                            hspan.clone(),
                            sent.clone(),
                        ));
                        spans.push((h, Instant::now(), hspan, sent));
                    }
                    None => {}
                }
            }
            loop {
                let done = match early.take() {
                    Some(done) => done,
                    None => match running.next().await {
                        Some(done) => done,
                        None => break,
                    },
                };
                let Attempt {
                    of:
                        Try {
                            idx: who,
                            number,
                            hedge,
                        },
                    result,
                    took,
                } = done;
                // A finished attempt is no longer one that could be abandoned.
                let finished = spans.iter().position(|(i, ..)| *i == who);
                let finished = finished.map(|at| spans.swap_remove(at));
                let won = matches!(result, Ok((true, _)));
                if hedge {
                    self.count_hedge(who, won);
                } else if won {
                    // The primary won: a hedge still in flight lost.
                    for (i, ..) in spans.iter().filter(|_| hedged) {
                        self.count_hedge(*i, false);
                    }
                }
                drop(finished);
                match result {
                    Ok((true, value)) => {
                        // The other attempt is abandoned. If it had been sent, the provider took
                        // at least this long; if it was still waiting for the rate limit, that
                        // says nothing about the provider.
                        for (i, started, s, sent) in &spans {
                            let p = &self.providers[*i];
                            if *i != who
                                && sent.load(Ordering::Relaxed)
                                && p.abandon_attempt(s, started.elapsed())
                            {
                                s.in_scope(|| {
                                    tracing::warn!(chain = %self.chain, provider = %p.name,
                                        overtaken = super::health::MAX_OVERTAKEN,
                                        "provider lost several calls in a row to hedges without answering; passing it over")
                                });
                                p.cool_down(self.cfg.failover_cooldown.0);
                            }
                        }
                        if hedged {
                            call_span.record("blockwatch.hedge_won", hedge);
                        }
                        drop(running);
                        return Ok(self
                            .answered(
                                who,
                                value,
                                attempts.max(number),
                                &plan,
                                hedge,
                                first_failure.take(),
                            )
                            .served_in(took));
                    }
                    Ok((false, value)) => {
                        if unaccepted.is_none() {
                            unaccepted = Some((who, value, took));
                        }
                    }
                    Err(error @ RpcError::HashScheme(_)) => {
                        // The chain's hashing, not the provider: no other provider can do better.
                        return Err(PoolError::Exhausted {
                            chain: self.chain.clone(),
                            method: method.to_owned(),
                            attempts,
                            provider: self.providers[who].name.clone(),
                            error,
                        });
                    }
                    Err(error) => {
                        let p = &self.providers[who];
                        tracing::warn!(
                            chain = %self.chain, provider = %p.name, method,
                            attempt = number, error_type = %error.error_type(), error = %error,
                            "provider call failed"
                        );
                        p.cool_down(self.cfg.failover_cooldown.0);
                        if first_failure.is_none() {
                            first_failure = Some((p.name.clone(), error.clone()));
                        }
                        last_error = Some((who, error));
                    }
                }
            }
        }
        if let Some((idx, value, took)) = unaccepted {
            let a = self.answered(idx, value, attempts, &plan, false, first_failure.take());
            return Ok(a.served_in(took));
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
        if result.is_ok() && !self.genesis_checked[provider.index].load(Ordering::Relaxed) {
            self.check_genesis_later(provider).await;
        }
        result
    }

    /// Checks the genesis block of a provider that could not be checked at start-up.
    async fn check_genesis_later(&self, provider: &Provider) {
        let expected = *self.genesis.lock().unwrap_or_else(|p| p.into_inner());
        match provider.genesis_hash().await {
            Ok(Some(hash)) => match expected {
                Some(expected) => {
                    let _ = self.judge_genesis(provider.index, hash, expected, false);
                }
                None => {
                    // The first provider to answer sets it for those that come later.
                    *self.genesis.lock().unwrap_or_else(|p| p.into_inner()) = Some(hash);
                    self.genesis_checked[provider.index].store(true, Ordering::Relaxed);
                }
            },
            Ok(None) | Err(RpcError::HashScheme(_)) => {
                self.genesis_checked[provider.index].store(true, Ordering::Relaxed)
            }
            Err(_) => {}
        }
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

    /// Set when the providers agree on block hashes that are not the keccak of their headers while
    /// `block_hash_check = "header"`: what to tell the operator.
    pub fn hash_verdict(&self) -> Option<String> {
        self.hashing.verdict()
    }

    /// How this chain's block hashes are verified.
    pub fn hash_check(&self) -> BlockHashCheck {
        self.hash_check
    }

    /// Makes `idx` the active provider unless `hedge` (a hedge that won one call is not a switch) or
    /// the call was a second opinion, counting the switch with its reason.
    fn answered<T>(
        &self,
        idx: usize,
        value: T,
        attempts: u32,
        plan: &Plan,
        hedge: bool,
        first_failure: Option<(String, RpcError)>,
    ) -> Answer<T> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.active != Some(idx) && !hedge && !plan.side {
            let to = self.providers[idx].name.as_str();
            match st.active {
                Some(prev) if self.selection != Selection::RoundRobin => {
                    let from = self.providers[prev].name.as_str();
                    // Not the plan's first choice: the providers before it failed this very call.
                    let reason = if plan.order.first() != Some(&idx) {
                        "failover"
                    } else {
                        plan.switch_reason
                    };
                    tracing::info!(chain = %self.chain, from, to, reason, "provider_switch");
                    st.switches += 1;
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
                Some(_) => {}
                None => tracing::info!(chain = %self.chain, provider = to, "first provider in use"),
            }
            st.active = Some(idx);
            st.challenger = None;
        }
        Answer {
            value,
            provider: self.providers[idx].clone(),
            attempts,
            first_failure,
            served_in: Duration::ZERO,
        }
    }

    /// The head block number (`eth_blockNumber`), recorded in the head book.
    pub async fn block_number(&self) -> Result<Answer<u64>, PoolError> {
        let a = self
            .request::<U64>("eth_blockNumber", rpc_params![])
            .await?;
        let a = a.map(|n| n.to::<u64>());
        a.provider.record_head(a.value, None, false);
        Ok(a)
    }

    /// The block at `number`, without transaction bodies; `None` if no provider has it yet. A block
    /// with another number or a hash that does not match its header is a failure of the provider
    /// that served it, and the next provider is asked. A provider that answers `null` although it
    /// reported a head at or above `number` is asked again later (a lie if it still does).
    pub async fn block_by_number(&self, number: u64) -> Result<Answer<Option<Block>>, PoolError> {
        self.block_by_number_but(number, None).await
    }

    async fn block_by_number_but(
        &self,
        number: u64,
        exclude: Option<usize>,
    ) -> Result<Answer<Option<Block>>, PoolError> {
        let method = "eth_getBlockByNumber";
        let heads = self.heads.clone();
        let send = move |p: Arc<Provider>, sent: Arc<AtomicBool>| {
            let heads = heads.clone();
            async move {
                let (r, took) = p
                    .request_timed::<Option<RpcBlock>>(
                        method,
                        rpc_params![U64::from(number), false],
                        Some(&sent),
                    )
                    .await;
                if matches!(r, Ok(None)) {
                    heads.suspect_null(p.index, number, Instant::now());
                }
                (r, took)
            }
            .boxed()
        };
        let check = self.hash_check;
        let a = self
            .call(
                method,
                &send,
                |v: &Option<RpcBlock>| match v {
                    None => Ok(false),
                    Some(b) => check_number(b, number, check).map(|()| true),
                },
                exclude,
            )
            .await?;
        Ok(a.map(|b| b.map(Block::from)))
    }

    /// Asks a provider other than `served_by` for block `number` and compares its hash with `hash`
    /// (`block_hash_check = "consensus"`: a block's hash is believed once two providers agree on
    /// it). With no other provider to ask, it is confirmed.
    pub async fn confirm(
        &self,
        number: u64,
        hash: B256,
        served_by: &Provider,
    ) -> Result<Confirmation, PoolError> {
        if self
            .providers
            .iter()
            .all(|p| p.index == served_by.index || p.is_refused())
        {
            return Ok(Confirmation::Confirmed);
        }
        let a = self
            .block_by_number_but(number, Some(served_by.index))
            .await?;
        Ok(match a.value {
            None => Confirmation::Unconfirmed,
            Some(b) if b.hash == hash => Confirmation::Confirmed,
            Some(b) => {
                // Counted as a disagreement between the two, like different announced hashes.
                served_by.record_head(number, Some(hash), false);
                a.provider.record_head(number, Some(b.hash), false);
                Confirmation::Disagreed {
                    provider: a.provider.name.clone(),
                    hash: b.hash,
                }
            }
        })
    }

    /// Blocks `from..=to` in JSON-RPC batches (each provider within its `max_batch_size` and
    /// rate-limit burst), in order, up to the first block the answering provider does not have.
    /// Every block is checked like [`Self::block_by_number`]; one broken block fails the batch on
    /// that provider, and another is asked.
    pub async fn blocks_by_number(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Answer<Vec<Block>>, PoolError> {
        let heads = self.heads.clone();
        let send = move |p: Arc<Provider>, sent: Arc<AtomicBool>| {
            let heads = heads.clone();
            async move {
                let end = to.min(from.saturating_add(u64::from(p.max_batch.max(1)) - 1));
                let (r, took) = p.batch_blocks(from, end, Some(&sent)).await;
                if let Ok(blocks) = &r {
                    // The first block it did not serve.
                    if let Some(missing) = blocks.iter().position(Option::is_none) {
                        heads.suspect_null(p.index, from + missing as u64, Instant::now());
                    }
                }
                (r, took)
            }
            .boxed()
        };
        let check = self.hash_check;
        let a = self
            .call(
                "eth_getBlockByNumber",
                &send,
                |blocks: &Vec<Option<RpcBlock>>| {
                    for (i, b) in blocks.iter().enumerate() {
                        match b {
                            Some(b) => check_number(b, from + i as u64, check)?,
                            None => break,
                        }
                    }
                    // A provider without even the first block is asked no further.
                    Ok(blocks.first().is_some_and(Option::is_some))
                },
                None,
            )
            .await?;
        Ok(a.map(|blocks| {
            blocks
                .into_iter()
                .map_while(|b| b.map(Block::from))
                .collect()
        }))
    }

    /// Blocks per batch while catching up: the smallest `max_batch_size` of the providers (within
    /// their rate-limit bursts), so that whichever provider answers serves the whole batch.
    pub fn batch_size(&self) -> u64 {
        self.providers
            .iter()
            .map(|p| u64::from(p.max_batch))
            .min()
            .unwrap_or(1)
    }

    /// The block with `hash`, without transaction bodies; `None` if no provider knows it. Checked
    /// like [`Self::block_by_number`].
    pub async fn block_by_hash(&self, hash: B256) -> Result<Answer<Option<Block>>, PoolError> {
        let check = self.hash_check;
        let a = self
            .request_some::<RpcBlock>("eth_getBlockByHash", rpc_params![hash, false], |b| {
                if b.header.hash != hash {
                    return Err(RpcError::WrongBlock(format!(
                        "asked for block {hash}, got block {}",
                        b.header.hash
                    )));
                }
                b.check_hash(check)
            })
            .await?;
        Ok(a.map(|b| b.map(Block::from)))
    }

    /// Re-evaluates every provider's state (at least every half second) and probes providers that
    /// calls have not used for `pool.probe_interval`, and open circuits whose half-open probe is
    /// due. Runs until `cancel` fires.
    pub async fn monitor(self: Arc<Self>, cancel: CancellationToken) {
        let tick = self.cfg.probe_interval.0.min(MAX_EVALUATION_INTERVAL);
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probes = tokio::task::JoinSet::new();
        let probing: Arc<Vec<AtomicBool>> = Arc::new(
            self.providers
                .iter()
                .map(|_| AtomicBool::new(false))
                .collect(),
        );
        let mut checks = tokio::task::JoinSet::new();
        let mut probed: Vec<Option<Instant>> = vec![None; self.providers.len()];
        loop {
            let checked = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => false,
                _ = self.heads.check_queued() => true,
                Some(_) = probes.join_next(), if !probes.is_empty() => continue,
                Some(_) = checks.join_next(), if !checks.is_empty() => continue,
            };
            let now = Instant::now();
            // Claims to settle and `null` answers to ask again, at once when due.
            for c in self.heads.take_due_checks(now) {
                let (pool, cancel) = (self.clone(), cancel.clone());
                checks.spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = pool.run_check(c) => {}
                    }
                });
            }
            if checked {
                continue;
            }
            for p in &self.providers {
                if let Some(event) = p.check_state(now) {
                    let span = tracing::info_span!("provider_health", blockwatch.chain = %self.chain,
                        blockwatch.provider = %p.name);
                    span.in_scope(|| p.report(event));
                }
            }
            for p in &self.providers {
                let older = |t: Option<Instant>| {
                    t.is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.probe_interval.0)
                };
                // Idle (no call lately), or in use but not heard announcing a head lately (an
                // HTTP-only provider that calls do not ask for the head).
                let quiet = older(p.last_call()) || older(self.heads.provider(p.index).reported);
                // A lagging provider whose head is polled is not quiet, but only a probe asks
                // whether it is syncing.
                let lagging = p.state() == State::Lagging && older(probed[p.index]);
                let due = p.probe_due(now)
                    || ((quiet || lagging) && !p.is_refused())
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

    /// Settles a claim: asks the provider for the block at a head it claimed far ahead of the others
    /// (served: the head is proven; `null`: a lie), or again for a block it answered `null` for
    /// although its head was at or above it (`null` again: a lie, and a skipped block).
    async fn run_check(&self, c: super::heads::Check) {
        let provider = &self.providers[c.idx];
        let claim = c.kind == CheckKind::Claim;
        if provider.is_refused() || provider.asked_to_wait_until().is_some() {
            if claim {
                self.heads
                    .claim_checked(c.idx, c.number, false, Instant::now());
            }
            return;
        }
        let span = tracing::info_span!(
            "check_claim",
            otel.name = "check_claim",
            blockwatch.chain = %self.chain,
            blockwatch.provider = %provider.name,
            blockwatch.block.number = c.number,
        );
        async {
            let head = provider.reported_head();
            let result = self
                .ask(
                    provider,
                    "eth_getBlockByNumber",
                    rpc_params![U64::from(c.number), false],
                    |b: Option<RpcBlock>| match b {
                        Some(b) => check_number(&b, c.number, self.hash_check).map(|()| true),
                        None => Ok(false),
                    },
                )
                .await;
            let now = Instant::now();
            match (c.kind, result) {
                (CheckKind::Claim, Ok(served)) => {
                    self.heads.claim_checked(c.idx, c.number, served, now);
                    if !served {
                        provider.caught(
                            LieKind::HeadAhead,
                            &format!(
                                "it reported head {}, more than pool.head_outlier_blocks ahead of every other provider, and has no block {}",
                                head.unwrap_or(c.number),
                                c.number
                            ),
                            true,
                        );
                    }
                }
                (CheckKind::Claim, Err(_)) => {
                    self.heads.claim_checked(c.idx, c.number, false, now)
                }
                (CheckKind::Null, Ok(false)) if head.is_some_and(|h| h >= c.number) => {
                    provider.caught(
                        LieKind::NullBelowHead,
                        &format!(
                            "it answered null for block {} twice although its head is {}",
                            c.number,
                            head.unwrap_or(c.number)
                        ),
                        true,
                    );
                    self.heads.skipped(c.idx, c.number, c.number);
                }
                (CheckKind::Null, _) => {}
            }
        }
        .instrument(span)
        .await
    }

    /// Asks `provider` alone for its head (`eth_blockNumber`, within its rate limit; its chain id
    /// first when a check is due) and records it: heads are read from every provider, so that one
    /// provider's word never decides the chain head. Returns the head it reported and when it was
    /// asked, before any wait for the agent's own rate limit: a head learned late because the agent
    /// held its own request back is not the provider's lateness.
    pub async fn poll_head(
        &self,
        provider: &Provider,
    ) -> Result<(u64, std::time::SystemTime), RpcError> {
        self.ensure_verified(provider)
            .await
            .map_err(|e| self.redact_error(e))?;
        let asked = std::time::SystemTime::now();
        let head = self
            .ask(provider, "eth_blockNumber", rpc_params![], |n: U64| {
                Ok(n.to::<u64>())
            })
            .await?;
        provider.record_head(head, None, false);
        Ok((head, asked))
    }

    /// One attempt of `method` on `provider` alone, outside any pool call (a poll, a probe, a
    /// check), in its own attempt span: the answer passes `check`, and the outcome (errors redacted
    /// and judged) is recorded in the provider's health, metrics and span.
    async fn ask<T: DeserializeOwned, U>(
        &self,
        provider: &Provider,
        method: &'static str,
        params: ArrayParams,
        check: impl FnOnce(T) -> Result<U, RpcError>,
    ) -> Result<U, RpcError> {
        let attempt = provider.attempt_span(method, 1);
        let (result, took) = provider
            .request_timed::<T>(method, params, None)
            .instrument(attempt.clone())
            .await;
        let result = result
            .and_then(check)
            .map_err(|e| provider.judge(self.redact_error(e)));
        provider.finish_attempt(&attempt, method, took, result.as_ref().err());
        result
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
            if self.ensure_verified(provider).await.is_err() {
                return;
            }
            let latest = self
                .ask(
                    provider,
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
            provider.record_head(block.number(), Some(block.header.hash), false);
            let behind = self
                .heads
                .provider(provider.index)
                .lag_blocks
                .is_some_and(|l| l > self.cfg.out_of_sync_blocks);
            if behind {
                let syncing = self
                    .ask(
                        provider,
                        "eth_syncing",
                        rpc_params![],
                        |v: serde_json::Value| Ok(v.is_object()),
                    )
                    .await;
                if let Ok(syncing) = syncing {
                    provider.record_syncing(syncing);
                }
            } else {
                provider.record_syncing(false);
            }
            provider.evaluate(Instant::now());
        }
        .instrument(span)
        .await
    }
}

/// Checks that `b` is block `number` and that its hash is right (by `check`).
fn check_number(b: &RpcBlock, number: u64, check: BlockHashCheck) -> Result<(), RpcError> {
    if b.number() != number {
        return Err(RpcError::WrongBlock(format!(
            "asked for block {number}, got block {} ({})",
            b.number(),
            b.header.hash
        )));
    }
    b.check_hash(check)
}
