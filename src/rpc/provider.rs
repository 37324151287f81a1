//! One JSON-RPC provider: an HTTP client with its own rate limit, timeout and response size limit,
//! and the bookkeeping the pool needs to choose between providers.

use std::{
    num::NonZeroU32,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use jsonrpsee::{
    core::{client::ClientT, params::ArrayParams},
    http_client::{HeaderMap, HeaderValue, HttpClient, HttpClientBuilder},
    rpc_params,
};
use serde::de::DeserializeOwned;

use super::RpcError;
use crate::{
    config::{PoolConfig, ProviderConfig},
    redact::Redactor,
};

/// Weight of the newest latency sample in the moving average.
const LATENCY_EWMA_ALPHA: f64 = 0.2;

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
    client: HttpClient,
    /// Configured headers, also sent on the WebSocket handshake.
    headers: HeaderMap,
    limiter: DefaultDirectRateLimiter,
    /// Set once the provider has answered `eth_chainId` with the configured chain id.
    verified: AtomicBool,
    /// Set when the provider answered another chain id: it is never used again.
    refused: AtomicBool,
    health: Mutex<Health>,
}

/// Recent behaviour of a provider, as the pool sees it.
#[derive(Clone, Debug, Default)]
pub struct Health {
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// The provider is passed over until then, while others are usable.
    pub cooldown_until: Option<Instant>,
    /// Moving average of successful call latency.
    pub latency_ewma: Option<Duration>,
    /// Calls made.
    pub requests: u64,
    /// Calls failed.
    pub errors: u64,
}

impl Provider {
    /// Builds the provider's client from its config; `redactor` cleans its URL for display.
    pub fn new(
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
        let display_url = redactor.url(&cfg.url);
        let client = HttpClientBuilder::default()
            .request_timeout(cfg.timeout.0)
            .max_response_size(u32::try_from(pool.max_response_size.0).unwrap_or(u32::MAX))
            .set_headers(headers.clone())
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
            headers,
            limiter: RateLimiter::direct(Quota::per_second(rps).allow_burst(burst)),
            verified: AtomicBool::new(false),
            refused: AtomicBool::new(false),
            health: Mutex::new(Health::default()),
        })
    }

    /// One call: waits for the rate limit, then sends the request under the timeout.
    /// Records the outcome in the provider's health.
    pub async fn request<T: DeserializeOwned>(
        &self,
        method: &str,
        params: ArrayParams,
    ) -> Result<T, RpcError> {
        self.limiter.until_ready().await;
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

    fn record<T>(&self, result: &Result<T, RpcError>, elapsed: Duration) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.requests += 1;
        match result {
            Ok(_) => {
                h.consecutive_failures = 0;
                h.cooldown_until = None;
                h.latency_ewma = Some(match h.latency_ewma {
                    None => elapsed,
                    Some(prev) => {
                        prev.mul_f64(1.0 - LATENCY_EWMA_ALPHA) + elapsed.mul_f64(LATENCY_EWMA_ALPHA)
                    }
                });
            }
            Err(_) => {
                h.errors += 1;
                h.consecutive_failures = h.consecutive_failures.saturating_add(1);
            }
        }
    }

    /// Passes the provider over for `cooldown` (while others are usable).
    pub fn cool_down(&self, cooldown: Duration) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.cooldown_until = Some(Instant::now() + cooldown);
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
    /// for good.
    pub async fn verify_chain_id(&self, expected: u64) -> Result<(), RpcError> {
        let answer: alloy_primitives::U64 = self.request("eth_chainId", rpc_params![]).await?;
        let actual = answer.to::<u64>();
        if actual != expected {
            self.refused.store(true, Ordering::Relaxed);
            return Err(RpcError::WrongChain { expected, actual });
        }
        self.verified.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The configured headers (values marked sensitive).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Whether the chain id has been confirmed.
    pub fn is_verified(&self) -> bool {
        self.verified.load(Ordering::Relaxed)
    }

    /// Whether the provider serves another chain and must not be used.
    pub fn is_refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }
}
