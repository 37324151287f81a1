//! The provider's transport: every request waits for the provider's own rate limit (a batch pays
//! for all its blocks at once) and is bounded by its timeout; nothing is sent while the provider
//! asked to be left alone (`Retry-After`), and the time measured is the provider's, without the
//! wait for the rate limit.

use super::*;

impl Provider {
    /// Waits for `cost` tokens of the rate limit, counting the wait as rate-limit pressure, and
    /// counts them as spent on `method` (the request leaves once they are granted).
    async fn take_tokens(&self, method: &'static str, cost: u32) {
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
        // Counted once granted: a call given up while it waited spent nothing.
        let [chain, provider] = self.attrs.clone();
        self.metrics.provider_cost_units.add(
            u64::from(n.get()),
            &[chain, provider, KeyValue::new(attr::METHOD, method)],
        );
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
        self.take_tokens(method, self.cost(method)).await;
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
        self.take_tokens(
            "eth_getBlockByNumber",
            count.saturating_mul(self.cost("eth_getBlockByNumber")),
        )
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
}
