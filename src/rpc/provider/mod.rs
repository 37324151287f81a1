//! One JSON-RPC provider: an HTTP client with its own rate limit, timeout and response size limit,
//! and the bookkeeping the pool needs to choose between providers.
//!
//! A provider is built in parts: the transport (rate limit, timeout, single requests and batches),
//! the attempt (its span, its outcome recorded in health and metrics, what a refused answer says
//! of the provider), its standing (health state, cost, `/status`), its chain-id and genesis checks,
//! and what it announces of heads.

mod attempt;
mod chain_check;
mod heads;
mod standing;
mod transport;

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

use opentelemetry::{
    trace::{SpanContext, TraceFlags, TraceState},
    KeyValue,
};

use super::{
    health::{self, HeadSource, HeadView, HealthConfig, HealthEvent, Outcome, State, Tracker},
    latency::Percentiles,
    types::RpcBlock,
    ChainIdentity, LieKind, RpcError,
};
use crate::{
    config::{PoolConfig, ProviderConfig},
    redact::Redactor,
    telemetry::{metrics::attr, sampling, Metrics},
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

pub use attempt::AttemptSpan;
use chain_check::ChainCheck;
use standing::Health;
pub use standing::{LatencyMs, ProviderStatus};

/// Why a provider could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// A configured header has a name that is not a valid HTTP header name.
    #[error("header {name:?}: {source}")]
    HeaderName {
        /// The header as configured.
        name: String,
        /// Why it is invalid.
        source: http::header::InvalidHeaderName,
    },
    /// A configured header has a value that is not a valid HTTP header value.
    #[error("header {name:?}: invalid value")]
    HeaderValue {
        /// The header as configured.
        name: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build HTTP client for {url}: {message}")]
    Client {
        /// The URL, credentials removed.
        url: String,
        /// Why, redacted.
        message: String,
    },
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
    /// Subscribed, no head delivered yet (the chain's next block has not come).
    Open = 4,
}

impl Subscription {
    /// The name in `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::Down => "down",
            Subscription::Live => "live",
            Subscription::Silent => "silent",
            Subscription::Open => "open",
        }
    }
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
    /// What is known of its head (the chain's head book).
    heads: Arc<dyn HeadSource>,
    /// The chain it must serve.
    identity: Arc<ChainIdentity>,
    /// Its genesis block has been checked.
    genesis_checked: AtomicBool,
    subscription: AtomicU8,
    /// Woken when the subscription's state changes.
    subscription_changed: tokio::sync::Notify,
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
    /// Its slowest and latest failed attempts over the health window, for `/slow` and `/report`.
    slow_calls: super::slow::SlowCalls,
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
    /// The chain's head book, as far as the provider needs it.
    pub heads: Arc<dyn HeadSource>,
    /// The chain it must serve.
    pub identity: Arc<ChainIdentity>,
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
    ) -> Result<Self, ProviderError> {
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name = http::HeaderName::from_bytes(k.as_bytes()).map_err(|source| {
                ProviderError::HeaderName {
                    name: k.clone(),
                    source,
                }
            })?;
            let mut value = HeaderValue::from_str(v)
                .map_err(|_| ProviderError::HeaderValue { name: k.clone() })?;
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
            .map_err(|e| ProviderError::Client {
                url: display_url.clone(),
                message: redactor.redact(&e.to_string()),
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
        let slow_calls = super::slow::SlowCalls::new(ctx.health.window, now);
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
            identity: ctx.identity,
            genesis_checked: AtomicBool::new(false),
            subscription: AtomicU8::new(if cfg.ws_url.is_some() {
                Subscription::Down as u8
            } else {
                Subscription::None as u8
            }),
            subscription_changed: tokio::sync::Notify::new(),
            redactor: ctx.redactor,
            metrics: ctx.metrics,
            chain: ctx.chain,
            hash_check: ctx.hash_check,
            hashing: ctx.hashing,
            attrs,
            slow_calls,
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

    /// The subscription's state.
    pub fn subscription(&self) -> Subscription {
        match self.subscription.load(Ordering::Relaxed) {
            1 => Subscription::Down,
            2 => Subscription::Live,
            3 => Subscription::Silent,
            4 => Subscription::Open,
            _ => Subscription::None,
        }
    }

    /// Sets the subscription's state.
    pub fn set_subscription(&self, s: Subscription) {
        if self.subscription.swap(s as u8, Ordering::Relaxed) != s as u8 {
            self.subscription_changed.notify_waiters();
        }
    }

    /// Completes at the subscription's next change of state (after [`Notified::enable`], or
    /// once first polled).
    ///
    /// [`Notified::enable`]: tokio::sync::futures::Notified::enable
    pub fn subscription_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.subscription_changed.notified()
    }

    /// The chain's name.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// Its slowest and latest failed attempts of the health window (`pool.score_window`).
    pub fn slow_calls(&self) -> &super::slow::SlowCalls {
        &self.slow_calls
    }

    /// The configured headers (values marked sensitive).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}
