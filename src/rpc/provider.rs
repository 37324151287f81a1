//! One JSON-RPC provider: an HTTP client with its own rate limit, timeout and response size limit,
//! and the bookkeeping the pool needs to choose between providers.

use std::{
    num::NonZeroU32,
    sync::{Arc, Mutex},
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

use super::RpcError;
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

/// Recent successful-call latency and its last computed percentiles.
#[derive(Debug, Default)]
struct Latency {
    window: super::latency::LatencyWindow,
    cached: Option<(Instant, Option<super::latency::Percentiles>)>,
}

/// A configured provider of one chain.
#[derive(Debug)]
pub struct Provider {
    /// The configured name.
    pub name: String,
    /// The HTTP URL with credentials removed, fit for logs.
    pub display_url: String,
    /// The WebSocket URL for `newHeads`, if configured (secret: show only through the redactor).
    pub ws_url: Option<String>,
    /// Lower is preferred by priority selection.
    pub priority: u32,
    /// Per-request timeout.
    pub timeout: Duration,
    client: Client,
    /// Until when the provider asked (HTTP 429 with `Retry-After`) not to be called.
    retry_after: super::retry_after::RetryAfter,
    /// `server.address` and `server.port` of the HTTP endpoint.
    server: (String, u16),
    /// Configured headers, also sent on the WebSocket handshake.
    headers: HeaderMap,
    limiter: DefaultDirectRateLimiter,
    /// The provider's last chain-id check.
    chain_check: Mutex<ChainCheck>,
    /// How long a chain-id check holds before it is repeated.
    chain_check_interval: Duration,
    health: Mutex<Health>,
    latency: Mutex<Latency>,
    metrics: Arc<Metrics>,
    /// The chain's name.
    chain: String,
    /// `[chain, provider]`, the attributes every measurement of this provider carries.
    attrs: Vec<KeyValue>,
}

/// Marks an attempt span failed with `error`'s class (and JSON-RPC code).
pub fn record_span_error(span: &tracing::Span, error: &RpcError) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", error.to_string().as_str());
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

/// Recent behaviour of a provider, as the pool sees it.
#[derive(Clone, Debug, Default)]
pub struct Health {
    /// The provider is passed over until then, while others are usable.
    pub cooldown_until: Option<Instant>,
}

impl Provider {
    /// Builds the provider's client from its config; `redactor` cleans its URL for display.
    pub fn new(
        chain: &str,
        cfg: &ProviderConfig,
        pool: &PoolConfig,
        redactor: &Redactor,
        metrics: Arc<Metrics>,
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
        let display_url = redactor.url(&cfg.url);
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
        Ok(Self {
            name: cfg.name.clone(),
            display_url,
            ws_url: cfg.ws_url.clone(),
            priority: cfg.priority,
            timeout: cfg.timeout.0,
            client,
            retry_after,
            server,
            headers,
            limiter: RateLimiter::direct(Quota::per_second(rps).allow_burst(burst)),
            chain_check: Mutex::new(ChainCheck::Unchecked),
            chain_check_interval: pool.chain_check_interval.0,
            health: Mutex::new(Health::default()),
            latency: Mutex::new(Latency::default()),
            metrics,
            chain: chain.to_owned(),
            attrs: crate::telemetry::metrics::chain_provider(chain, &cfg.name),
        })
    }

    /// One call: waits for the rate limit, then sends the request under the timeout.
    /// Records the outcome in the provider's health.
    pub async fn request<T: DeserializeOwned>(
        &self,
        method: &'static str,
        params: ArrayParams,
    ) -> Result<T, RpcError> {
        // A provider that asked for a pause gets it: nothing is sent before it ends.
        if let Some(until) = self.retry_after.until() {
            return Err(RpcError::RetryAfter(
                until.saturating_duration_since(Instant::now()),
            ));
        }
        if self.limiter.check().is_err() {
            self.metrics.ratelimit_throttled.add(1, &self.attrs);
            self.limiter.until_ready().await;
        }
        let started = Instant::now();
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
        self.record(&result, started.elapsed());
        result
    }

    /// A CLIENT span for one attempt of `method` on this provider, with the RPC semantic
    /// conventions; [`record_span_error`] marks it failed.
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
            server.address = %self.server.0,
            server.port = self.server.1,
            blockwatch.provider = %self.name,
            blockwatch.chain = %self.chain,
            blockwatch.attempt = attempt,
            "error.type" = tracing::field::Empty,
            rpc.response.status_code = tracing::field::Empty,
        )
    }

    /// Records one attempt's duration and outcome; `error` is set when it failed, including an
    /// answer that arrived but was refused (a broken block).
    pub fn record_attempt(
        &self,
        method: &'static str,
        elapsed: Duration,
        error: Option<&RpcError>,
    ) {
        let mut attrs = self.attrs.clone();
        attrs.push(KeyValue::new(attr::METHOD, method));
        attrs.push(KeyValue::new(
            attr::OUTCOME,
            if error.is_none() { "ok" } else { "error" },
        ));
        self.metrics
            .rpc_duration
            .record(elapsed.as_secs_f64(), &attrs);
        let Some(error) = error else { return };
        attrs.pop();
        attrs.push(KeyValue::new(attr::ERROR_TYPE, error.error_type()));
        self.metrics.rpc_errors.add(1, &attrs);
        if matches!(error, RpcError::InvalidBlock(_)) {
            self.metrics.integrity_errors.add(1, &self.attrs);
        }
    }

    /// Records the newest block this provider announced.
    pub fn record_head(&self, number: u64) {
        self.metrics.provider_head.record(number, &self.attrs);
    }

    /// A success ends the provider's cooldown and adds a latency sample. (Failures are counted in
    /// the metrics; the pool decides the cooldown they earn.)
    fn record<T>(&self, result: &Result<T, RpcError>, elapsed: Duration) {
        if result.is_err() {
            return;
        }
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cooldown_until = None;
        let mut l = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        l.window.record(elapsed, Instant::now());
        if l.cached.is_some_and(|(_, p)| p.is_none()) {
            // The first sample: do not wait for the cache to expire to know it.
            l.cached = None;
        }
    }

    /// Until when the provider asked (with `Retry-After`) not to be called, if that is still ahead.
    pub fn asked_to_wait_until(&self) -> Option<Instant> {
        self.retry_after.until()
    }

    /// p50/p95/p99 of successful calls over the last one to two minutes; `None` without samples.
    pub fn latency(&self) -> Option<super::latency::Percentiles> {
        let now = Instant::now();
        let mut l = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        match l.cached {
            Some((at, p)) if now.duration_since(at) < PERCENTILES_TTL => p,
            _ => {
                let p = l.window.percentiles(now);
                l.cached = Some((now, p));
                p
            }
        }
    }

    /// Passes the provider over for `cooldown` (while others are usable), or for as long as it
    /// asked with `Retry-After` if that is longer.
    pub fn cool_down(&self, cooldown: Duration) {
        let mut until = Instant::now() + cooldown;
        if let Some(asked) = self.retry_after.until() {
            until = until.max(asked);
        }
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.cooldown_until = Some(until);
    }

    /// A snapshot of the provider's health.
    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the provider is out of its cooldown.
    pub fn is_available(&self, now: Instant) -> bool {
        !self.is_refused() && self.health().cooldown_until.is_none_or(|t| t <= now)
    }

    /// Asks the provider's chain id and compares it with `expected`. A mismatch refuses the provider
    /// until a later check (after `chain_check_interval`) finds it on the right chain again.
    pub async fn verify_chain_id(&self, expected: u64) -> Result<(), RpcError> {
        // Its own attempt span and measurement: the check is a call of its own, not part of the
        // call it precedes.
        let span = self.attempt_span("eth_chainId", 1);
        let started = Instant::now();
        let result = self
            .request::<alloy_primitives::U64>("eth_chainId", rpc_params![])
            .instrument(span.clone())
            .await;
        self.record_attempt("eth_chainId", started.elapsed(), result.as_ref().err());
        if let Err(e) = &result {
            record_span_error(&span, e);
        }
        let actual = result?.to::<u64>();
        let mut check = self.chain_check.lock().unwrap_or_else(|p| p.into_inner());
        if actual != expected {
            *check = ChainCheck::Wrong(Instant::now(), actual);
            return Err(RpcError::WrongChain { expected, actual });
        }
        *check = ChainCheck::Verified(Instant::now());
        Ok(())
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

    /// Whether the provider answered another chain id at its last check and may not be used
    /// until the next check is due.
    pub fn is_refused(&self) -> bool {
        self.wrong_chain().is_some() && !self.needs_chain_check()
    }
}
