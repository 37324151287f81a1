//! One JSON-RPC provider: an HTTP client with its own rate limit, timeout and response size limit,
//! and the bookkeeping the pool needs to choose between providers.

use std::{
    collections::BTreeMap,
    num::NonZeroU32,
    sync::{
        atomic::{AtomicBool, AtomicU8, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use jsonrpsee::{
    core::{client::ClientT, params::ArrayParams},
    http_client::{
        transport::HttpBackend, HeaderMap, HeaderValue, HttpClient, HttpClientBuilder, RpcService,
    },
    rpc_params,
};
use serde::de::DeserializeOwned;
use tracing::Instrument;

use opentelemetry::KeyValue;

use super::{
    heads::{HeadBook, LieKind},
    health::{self, HeadView, HealthConfig, HealthEvent, Outcome, State, Tracker},
    latency::Percentiles,
    types::RpcBlock,
    RpcError,
};
use crate::{
    config::{PoolConfig, ProviderConfig},
    redact::Redactor,
    telemetry::{metrics::attr, Metrics},
};

/// The jsonrpsee HTTP client with the trace-context layer.
/// (jsonrpsee's own logging middleware is left out: its `method_call` span would sit between the
/// attempt span and the request, and take the `traceparent`.)
type Client = HttpClient<
    RpcService<
        super::trace_context::TraceContextService<
            super::retry_after::RetryAfterService<HttpBackend>,
        >,
    >,
>;

/// How long computed latency percentiles are reused before they are computed again.
const PERCENTILES_TTL: Duration = Duration::from_secs(1);

/// The provider's health and its last computed latency percentiles.
#[derive(Debug)]
struct Health {
    tracker: Tracker,
    cached: Option<(Instant, Option<Percentiles>)>,
    /// The hedging quantile (0: none) and its last computed value.
    hedge_quantile: f64,
    hedge_cached: Option<(Instant, Option<Duration>)>,
}

impl Health {
    fn percentiles(&mut self, now: Instant) -> Option<Percentiles> {
        match self.cached {
            Some((at, p)) if now.duration_since(at) < PERCENTILES_TTL => p,
            _ => {
                let p = self.tracker.percentiles(now);
                self.cached = Some((now, p));
                p
            }
        }
    }

    fn hedge_latency(&mut self, now: Instant) -> Option<Duration> {
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

/// The state of a provider's `newHeads` subscription, for `/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Subscription {
    /// No WebSocket URL configured.
    None = 0,
    /// Not connected (opening, or waiting to reopen).
    Down = 1,
    /// Delivering heads.
    Live = 2,
    /// Was connected but stopped delivering heads while others advanced; polled instead.
    Silent = 3,
}

impl Subscription {
    /// The name in `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::Down => "down",
            Subscription::Live => "live",
            Subscription::Silent => "silent",
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

/// A configured provider of one chain.
#[derive(Debug)]
pub struct Provider {
    /// The configured name.
    pub name: String,
    /// The HTTP URL with credentials removed, fit for logs.
    pub display_url: String,
    /// The WebSocket URL for `newHeads`, if configured (secret: show `display_ws_url` instead).
    pub ws_url: Option<String>,
    /// The WebSocket URL with credentials removed, fit for logs.
    pub display_ws_url: Option<String>,
    /// Lower is preferred by priority selection.
    pub priority: u32,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Position in the chain's provider list.
    pub index: usize,
    /// Most blocks asked in one batch (within its burst at their cost).
    pub max_batch: u32,
    client: Client,
    /// Until when the provider asked (HTTP 429 with `Retry-After`) not to be called.
    retry_after: super::retry_after::RetryAfter,
    /// `server.address` and `server.port` of the HTTP endpoint.
    server: (String, u16),
    /// Configured headers, also sent on the WebSocket handshake.
    headers: HeaderMap,
    limiter: DefaultDirectRateLimiter,
    /// The limiter's burst: the most tokens one call may take.
    burst: NonZeroU32,
    /// Rate-limit tokens per method (default 1).
    costs: Arc<BTreeMap<String, u32>>,
    /// The provider's last chain-id check.
    chain_check: Mutex<ChainCheck>,
    /// How long a chain-id check holds before it is repeated.
    chain_check_interval: Duration,
    /// Served another genesis block: refused for good.
    wrong_genesis: AtomicBool,
    health: Mutex<Health>,
    heads: Arc<HeadBook>,
    subscription: AtomicU8,
    redactor: Arc<Redactor>,
    metrics: Arc<Metrics>,
    /// The chain's name.
    chain: String,
    /// How block hashes are verified.
    hash_check: crate::config::BlockHashCheck,
    /// The chain's header-hash mismatches.
    hashing: Arc<super::integrity::HashLedger>,
    /// `[chain, provider]`, the attributes every measurement of this provider carries.
    attrs: [KeyValue; 2],
}

/// Marks an attempt span failed with `error`'s class (and JSON-RPC code); the description passes
/// through `redactor` (a provider may quote its own URL, key included, in an error).
fn record_span_error(span: &tracing::Span, error: &RpcError, redactor: &Redactor) {
    span.record("otel.status_code", "ERROR");
    span.record(
        "otel.status_description",
        redactor.redact(&error.to_string()).as_str(),
    );
    span.record("error.type", error.error_type().as_ref());
    if let RpcError::Rpc { code, .. } = error {
        span.record("rpc.response.status_code", code.to_string().as_str());
    }
}

/// The outcome of the last `eth_chainId` check.
#[derive(Clone, Copy, Debug, Default)]
enum ChainCheck {
    /// Not checked yet.
    #[default]
    Unchecked,
    /// Answered the configured chain id then.
    Verified(Instant),
    /// Answered another chain id then.
    Wrong(Instant, u64),
}

/// How a provider is built: where it sits in its chain and what it shares with the pool.
#[derive(Clone, Debug)]
pub struct ProviderContext {
    /// The chain's name.
    pub chain: String,
    /// Position in the chain's provider list.
    pub index: usize,
    /// The health rules.
    pub health: HealthConfig,
    /// The chain's head book.
    pub heads: Arc<HeadBook>,
    /// Rate-limit tokens per method.
    pub costs: Arc<BTreeMap<String, u32>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Removes secrets from error messages before they reach spans.
    pub redactor: Arc<Redactor>,
    /// How block hashes are verified.
    pub hash_check: crate::config::BlockHashCheck,
    /// The chain's header-hash mismatches (whose fault they are).
    pub hashing: Arc<super::integrity::HashLedger>,
}

impl Provider {
    /// Builds the provider's client from its config; `redactor` cleans its URL for display.
    pub fn new(
        ctx: ProviderContext,
        cfg: &ProviderConfig,
        pool: &PoolConfig,
        redactor: &Redactor,
    ) -> Result<Self, String> {
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name = http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| format!("header {k:?}: {e}"))?;
            let mut value =
                HeaderValue::from_str(v).map_err(|_| format!("header {k:?}: invalid value"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let display_url = redactor.url_with(&cfg.url, cfg.public_url);
        let server = url::Url::parse(&cfg.url)
            .map(|u| {
                let host = u.host_str().unwrap_or_default().to_owned();
                (host, u.port_or_known_default().unwrap_or(0))
            })
            .unwrap_or_default();
        let retry_after = super::retry_after::RetryAfter::default();
        let client = HttpClientBuilder::default()
            .request_timeout(cfg.timeout.0)
            .max_response_size(u32::try_from(pool.max_response_size.0).unwrap_or(u32::MAX))
            .set_headers(headers.clone())
            .set_http_middleware(
                tower::ServiceBuilder::new()
                    .layer(super::trace_context::TraceContextLayer)
                    .layer(super::retry_after::RetryAfterLayer(retry_after.clone())),
            )
            .set_rpc_middleware(jsonrpsee::core::middleware::RpcServiceBuilder::new())
            .build(&cfg.url)
            .map_err(|e| {
                format!(
                    "cannot build HTTP client for {display_url}: {}",
                    redactor.redact(&e.to_string())
                )
            })?;
        let rps = NonZeroU32::new(cfg.rate_limit.requests_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(cfg.rate_limit.burst).unwrap_or(NonZeroU32::MIN);
        // A batch is paid for at once: it must fit the burst.
        let block_cost = ctx
            .costs
            .get("eth_getBlockByNumber")
            .copied()
            .unwrap_or(1)
            .max(1);
        let max_batch = cfg.max_batch_size.min(burst.get() / block_cost).max(1);
        let attrs = crate::telemetry::metrics::chain_provider(&ctx.chain, &cfg.name);
        let now = Instant::now();
        let provider = Self {
            name: cfg.name.clone(),
            display_url,
            ws_url: cfg.ws_url.clone(),
            display_ws_url: cfg
                .ws_url
                .as_deref()
                .map(|u| redactor.url_with(u, cfg.public_url)),
            priority: cfg.priority,
            timeout: cfg.timeout.0,
            index: ctx.index,
            max_batch,
            client,
            retry_after,
            server,
            headers,
            limiter: RateLimiter::direct(Quota::per_second(rps).allow_burst(burst)),
            burst,
            costs: ctx.costs,
            chain_check: Mutex::new(ChainCheck::Unchecked),
            chain_check_interval: pool.chain_check_interval.0,
            wrong_genesis: AtomicBool::new(false),
            health: Mutex::new(Health {
                tracker: Tracker::new(ctx.health, now),
                cached: None,
                hedge_quantile: f64::from(pool.hedge_percentile) / 100.0,
                hedge_cached: None,
            }),
            heads: ctx.heads,
            subscription: AtomicU8::new(if cfg.ws_url.is_some() {
                Subscription::Down as u8
            } else {
                Subscription::None as u8
            }),
            redactor: ctx.redactor,
            metrics: ctx.metrics,
            chain: ctx.chain,
            hash_check: ctx.hash_check,
            hashing: ctx.hashing,
            attrs,
        };
        provider.export_state(State::Alive);
        Ok(provider)
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rate-limit tokens a call of `method` costs.
    pub fn cost(&self, method: &str) -> u32 {
        self.costs.get(method).copied().unwrap_or(1).max(1)
    }

    /// Waits for `cost` tokens of the rate limit, counting the wait as rate-limit pressure.
    async fn take_tokens(&self, cost: u32) {
        let n = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        if !matches!(self.limiter.check_n(n), Ok(Ok(()))) {
            self.metrics.ratelimit_throttled.add(1, &self.attrs);
            self.health()
                .tracker
                .record_throttled_locally(Instant::now());
            // More than the burst can never be granted: take what can be (config validation and
            // batch sizing keep this from happening).
            let capped = n.min(self.burst);
            let _ = self.limiter.until_n_ready(capped).await;
        }
    }

    /// One call: waits for the rate limit, then sends the request under the timeout.
    pub async fn request<T: DeserializeOwned>(
        &self,
        method: &'static str,
        params: ArrayParams,
    ) -> Result<T, RpcError> {
        self.request_timed(method, params, None).await.0
    }

    /// [`Self::request`], with how long the provider took: the time from sending to the answer,
    /// without the wait for the rate limit (which says nothing about the provider). `sent`, if
    /// given, is set once the request has left (the rate limit let it through).
    pub async fn request_timed<T: DeserializeOwned>(
        &self,
        method: &'static str,
        params: ArrayParams,
        sent: Option<&AtomicBool>,
    ) -> (Result<T, RpcError>, Duration) {
        // A provider that asked for a pause gets it: nothing is sent before it ends.
        if let Some(until) = self.retry_after.until() {
            let wait = until.saturating_duration_since(Instant::now());
            return (Err(RpcError::RetryAfter(wait)), Duration::ZERO);
        }
        self.take_tokens(self.cost(method)).await;
        if let Some(flag) = sent {
            flag.store(true, Ordering::Relaxed);
        }
        let sent = Instant::now();
        // The client has the same timeout; this outer one also bounds connection set-up.
        let outcome = tokio::time::timeout(
            self.timeout + Duration::from_millis(50),
            self.client.request::<T, _>(method, params),
        )
        .await;
        let result = match outcome {
            Err(_) => Err(RpcError::Timeout(self.timeout)),
            Ok(r) => r.map_err(|e| RpcError::from_client(e, self.timeout)),
        };
        (result, sent.elapsed())
    }

    /// Blocks `from..=to` (at most [`Self::max_batch`]) without transaction bodies, in one JSON-RPC
    /// batch, with how long the provider took (as [`Self::request_timed`]); an entry the provider
    /// answered with an error fails the whole batch.
    pub async fn batch_blocks(
        &self,
        from: u64,
        to: u64,
        sent: Option<&AtomicBool>,
    ) -> (Result<Vec<Option<RpcBlock>>, RpcError>, Duration) {
        if let Some(until) = self.retry_after.until() {
            let wait = until.saturating_duration_since(Instant::now());
            return (Err(RpcError::RetryAfter(wait)), Duration::ZERO);
        }
        let mut batch = jsonrpsee::core::params::BatchRequestBuilder::new();
        for n in from..=to {
            if let Err(e) = batch.insert(
                "eth_getBlockByNumber",
                rpc_params![alloy_primitives::U64::from(n), false],
            ) {
                return (
                    Err(RpcError::InvalidResponse(e.to_string())),
                    Duration::ZERO,
                );
            }
        }
        let count = (to - from + 1) as u32;
        self.take_tokens(count.saturating_mul(self.cost("eth_getBlockByNumber")))
            .await;
        if let Some(flag) = sent {
            flag.store(true, Ordering::Relaxed);
        }
        let sent = Instant::now();
        let outcome = tokio::time::timeout(
            self.timeout + Duration::from_millis(50),
            self.client.batch_request::<Option<RpcBlock>>(batch),
        )
        .await;
        let took = sent.elapsed();
        let response = match outcome {
            Err(_) => return (Err(RpcError::Timeout(self.timeout)), took),
            Ok(Err(e)) => return (Err(RpcError::from_client(e, self.timeout)), took),
            Ok(Ok(r)) => r,
        };
        if response.len() != count as usize {
            let e = RpcError::InvalidResponse(format!(
                "batch of {count} answered with {} entries",
                response.len()
            ));
            return (Err(e), took);
        }
        let blocks = response
            .into_iter()
            .map(|entry| {
                entry.map_err(|e| RpcError::Rpc {
                    code: e.code(),
                    message: e.message().to_owned(),
                })
            })
            .collect();
        (blocks, took)
    }

    /// A CLIENT span for one attempt of `method` on this provider, with the RPC semantic
    /// conventions; [`Self::finish_attempt`] records its outcome.
    pub fn attempt_span(&self, method: &'static str, attempt: u32) -> tracing::Span {
        tracing::info_span!(
            "rpc_attempt",
            otel.name = method,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
            rpc.system.name = "jsonrpc",
            rpc.system = "jsonrpc",
            rpc.method = method,
            server.address = self.server.0.as_str(),
            server.port = self.server.1,
            blockwatch.provider = self.name.as_str(),
            blockwatch.chain = self.chain.as_str(),
            blockwatch.attempt = attempt,
            blockwatch.hedge = tracing::field::Empty,
            blockwatch.batch_size = tracing::field::Empty,
            blockwatch.abandoned = tracing::field::Empty,
            "error.type" = tracing::field::Empty,
            rpc.response.status_code = tracing::field::Empty,
        )
    }

    /// Records one attempt's duration and outcome in metrics, health and its span; `error` is set
    /// when it failed, including an answer that arrived but was refused (a broken block). Circuit
    /// and state changes it causes become events of `span`.
    pub fn finish_attempt(
        &self,
        span: &tracing::Span,
        method: &'static str,
        elapsed: Duration,
        error: Option<&RpcError>,
    ) {
        if let Some(RpcError::RetryAfter(_)) = error {
            // Nothing was sent.
            return;
        }
        if let Some(RpcError::HashScheme(_)) = error {
            // The chain's hashing, not this provider: nothing to hold against it.
            return;
        }
        // No allocation: chain and provider are shared strings.
        let [chain, provider] = self.attrs.clone();
        let mut attrs = [
            chain,
            provider,
            KeyValue::new(attr::METHOD, method),
            KeyValue::new(attr::OUTCOME, if error.is_none() { "ok" } else { "error" }),
        ];
        self.metrics
            .rpc_duration
            .record(elapsed.as_secs_f64(), &attrs);
        let outcome = match error {
            None => Outcome::Ok,
            Some(e) => {
                record_span_error(span, e, &self.redactor);
                attrs[3] = KeyValue::new(attr::ERROR_TYPE, e.error_type());
                self.metrics.rpc_errors.add(1, &attrs);
                if e.is_integrity() {
                    self.metrics.integrity_errors.add(1, &self.attrs);
                }
                if e.is_rate_limited() {
                    Outcome::Throttled
                } else if matches!(e, RpcError::Timeout(_) | RpcError::Connection(_)) {
                    Outcome::TransportFailure
                } else {
                    Outcome::Failure
                }
            }
        };
        let now = Instant::now();
        let event = {
            let mut h = self.health();
            let event = h.tracker.record(outcome, elapsed, now);
            if outcome == Outcome::Ok && h.cached.is_some_and(|(_, p)| p.is_none()) {
                // The first sample: do not wait for the cache to expire to know it.
                h.cached = None;
                h.hedge_cached = None;
            }
            event
        };
        span.in_scope(|| {
            if let Some(event) = event {
                self.report(event);
            }
            self.evaluate(now);
        });
    }

    /// An attempt given up after `elapsed` because another provider answered first. Returns true
    /// when the provider has lost too many calls in a row this way and should be passed over.
    pub fn abandon_attempt(&self, span: &tracing::Span, elapsed: Duration) -> bool {
        span.record("blockwatch.abandoned", true);
        self.health()
            .tracker
            .record_abandoned(elapsed, Instant::now())
    }

    /// Records the newest block this provider announced (`pushed`: by a `newHeads` notification);
    /// returns the chain's corroborated head after it.
    pub fn record_head(
        &self,
        number: u64,
        hash: Option<alloy_primitives::B256>,
        pushed: bool,
    ) -> Option<u64> {
        if self.is_refused() {
            // Another chain's heads must not count towards this chain's.
            return self.heads.best();
        }
        self.metrics.provider_head.record(number, &self.attrs);
        let reported = self
            .heads
            .report(self.index, number, hash, pushed, Instant::now());
        for other in reported.disagree {
            tracing::warn!(chain = %self.chain, provider = %self.name, other_index = other, block_number = number,
                "providers disagree on the hash at the same height");
            self.metrics.provider_disagreements.add(1, &self.attrs);
        }
        if let Some(lie) = reported.lie {
            self.caught(lie.kind, &lie.detail, false);
        }
        reported.best
    }

    /// The provider was caught in a claim the others do not back (`detail` says which): it is
    /// `inconsistent` for `pool.inconsistent_for`, its heads do not count, and it is counted and
    /// logged. `record`: tell the head book too (lies the book found itself are recorded there).
    pub fn caught(&self, kind: LieKind, detail: &str, record: bool) {
        let now = Instant::now();
        if record {
            self.heads.lie(self.index, kind, now);
        }
        let [chain, provider] = self.attrs.clone();
        self.metrics.provider_inconsistencies.add(
            1,
            &[chain, provider, KeyValue::new(attr::REASON, kind.as_str())],
        );
        tracing::warn!(chain = %self.chain, provider = %self.name, reason = kind.as_str(),
            detail, "provider_inconsistent");
        self.evaluate(now);
    }

    /// What a refused block says about this provider: another block than asked is a lie (it
    /// becomes inconsistent); a hash that is not its header's is its fault unless another provider
    /// serves the same claim, which makes it the chain's hashing (`HashScheme`: nobody's fault).
    pub fn judge(&self, error: RpcError) -> RpcError {
        match error {
            RpcError::WrongBlock(detail) => {
                self.caught(LieKind::WrongBlock, &detail, true);
                RpcError::WrongBlock(detail)
            }
            RpcError::HeaderHash {
                number,
                claimed,
                computed,
            } => self.hashing.mismatch(&self.name, number, claimed, computed),
            other => other,
        }
    }

    /// The head it reported last.
    pub fn reported_head(&self) -> Option<u64> {
        self.heads.reported_head(self.index)
    }

    /// The chain's corroborated head.
    pub fn chain_head(&self) -> Option<u64> {
        self.heads.best()
    }

    /// Its subscription (re)opened: its `newHeads` sequence starts again.
    pub fn restart_head_sequence(&self) {
        self.heads.restart_sequence(self.index);
    }

    /// Records what `eth_syncing` answered.
    pub fn record_syncing(&self, syncing: bool) {
        self.heads.set_syncing(self.index, syncing);
    }

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
        view_of(&self.heads.provider(self.index))
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
    fn export_state(&self, state: State) {
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
        let head = self.heads.provider(self.index);
        let (p, rates, cost) = self.measure(view_of(&head));
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

    /// The subscription's state.
    pub fn subscription(&self) -> Subscription {
        match self.subscription.load(Ordering::Relaxed) {
            1 => Subscription::Down,
            2 => Subscription::Live,
            3 => Subscription::Silent,
            _ => Subscription::None,
        }
    }

    /// Sets the subscription's state.
    pub fn set_subscription(&self, s: Subscription) {
        self.subscription.store(s as u8, Ordering::Relaxed);
    }

    /// Asks the provider's chain id and compares it with `expected`. A mismatch refuses the provider
    /// until a later check (after `chain_check_interval`) finds it on the right chain again.
    pub async fn verify_chain_id(&self, expected: u64) -> Result<(), RpcError> {
        // Its own attempt span and measurement: the check is a call of its own, not part of the
        // call it precedes.
        let span = self.attempt_span("eth_chainId", 1);
        let (result, took) = self
            .request_timed::<alloy_primitives::U64>("eth_chainId", rpc_params![], None)
            .instrument(span.clone())
            .await;
        let checked = result.and_then(|id| {
            let actual = id.to::<u64>();
            let mut check = self.chain_check.lock().unwrap_or_else(|p| p.into_inner());
            if actual != expected {
                *check = ChainCheck::Wrong(Instant::now(), actual);
                return Err(RpcError::WrongChain { expected, actual });
            }
            *check = ChainCheck::Verified(Instant::now());
            Ok(())
        });
        self.finish_attempt(&span, "eth_chainId", took, checked.as_ref().err());
        checked
    }

    /// The hash of block 0 as this provider serves it (checked against its header); `None` if it
    /// does not serve block 0.
    pub async fn genesis_hash(&self) -> Result<Option<alloy_primitives::B256>, RpcError> {
        let span = self.attempt_span("eth_getBlockByNumber", 1);
        let (result, took) = self
            .request_timed::<Option<RpcBlock>>(
                "eth_getBlockByNumber",
                rpc_params![alloy_primitives::U64::ZERO, false],
                None,
            )
            .instrument(span.clone())
            .await;
        let result = result.and_then(|b| match b {
            Some(b) if b.number() != 0 => Err(RpcError::InvalidBlock(format!(
                "asked for block 0, got block {}",
                b.number()
            ))),
            Some(b) => b.check_hash(self.hash_check).map(|()| Some(b.header.hash)),
            None => Ok(None),
        });
        let result = result.map_err(|e| self.judge(e));
        self.finish_attempt(&span, "eth_getBlockByNumber", took, result.as_ref().err());
        result
    }

    /// Refuses the provider for good: it serves another chain's genesis block.
    pub fn refuse_genesis(&self) {
        self.wrong_genesis.store(true, Ordering::Relaxed);
        self.heads.forget(self.index);
        self.evaluate(Instant::now());
    }

    /// Whether the chain id must be (re)checked before the next use: never checked, or checked
    /// longer than `chain_check_interval` ago, so that a provider that moves to another chain at
    /// runtime is caught.
    pub fn needs_chain_check(&self) -> bool {
        match *self.chain_check.lock().unwrap_or_else(|p| p.into_inner()) {
            ChainCheck::Verified(at) | ChainCheck::Wrong(at, _) => {
                at.elapsed() >= self.chain_check_interval
            }
            ChainCheck::Unchecked => true,
        }
    }

    /// The configured headers (values marked sensitive).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The other chain id the provider answered at its last check, if it did.
    pub fn wrong_chain(&self) -> Option<u64> {
        match *self.chain_check.lock().unwrap_or_else(|p| p.into_inner()) {
            ChainCheck::Wrong(_, id) => Some(id),
            _ => None,
        }
    }

    /// Whether the provider may not be used: it served another genesis block, or answered another
    /// chain id at its last check and the next check is not due yet.
    pub fn is_refused(&self) -> bool {
        self.wrong_genesis.load(Ordering::Relaxed)
            || (self.wrong_chain().is_some() && !self.needs_chain_check())
    }
}

/// What health needs of a provider's head.
fn view_of(h: &super::heads::ProviderHead) -> HeadView {
    HeadView {
        lag_blocks: h.lag_blocks,
        arrival_delay: h.arrival_delay,
        syncing: h.syncing,
        inconsistent: h.inconsistent.map(LieKind::state_reason),
    }
}
