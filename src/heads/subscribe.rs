//! `newHeads` subscriptions: one per provider with a WebSocket URL, kept open and reopened with
//! exponential backoff when it drops; its endpoint's chain id is checked before subscribing. A
//! subscription that stays silent while the other providers announce new blocks is given up (and
//! the provider polled) until it delivers again. Every head it delivers is recorded in the head book
//! and the corroborated head published.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use alloy_primitives::U64;
use jsonrpsee::{
    core::client::{ClientT, SubscriptionClientT},
    rpc_params,
    ws_client::{PingConfig, WsClientBuilder},
};
use tokio_util::sync::CancellationToken;

use super::HeadTracker;
use crate::{
    config::{ChainConfig, PoolConfig},
    redact::Redactor,
    rpc::{provider::Subscription, types::RpcHeader, Provider},
};

/// How often an idle WebSocket is pinged; three silent intervals close it.
const WS_PING_INTERVAL: Duration = Duration::from_secs(10);

/// Longest pause between attempts to reopen a subscription.
const MAX_WS_BACKOFF: Duration = Duration::from_secs(30);

impl HeadTracker {
    /// Keeps a `newHeads` subscription open on `provider`'s WebSocket endpoint, reopening it with
    /// exponential backoff when it drops. Ends when `cancel` fires, or for good if the endpoint
    /// serves another chain.
    pub async fn subscribe(
        self,
        provider: Arc<Provider>,
        chain: ChainConfig,
        pool_cfg: PoolConfig,
        redactor: Arc<Redactor>,
        cancel: CancellationToken,
    ) {
        let Some(ws_url) = provider.ws_url.clone() else {
            return;
        };
        let shown = provider
            .display_ws_url
            .clone()
            .unwrap_or_else(|| redactor.url(&ws_url));
        let mut backoff = pool_cfg.ws_reconnect_backoff.0;
        loop {
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return,
                o = self.follow_subscription(&provider, &ws_url, &chain) => o,
            };
            let silence = silence_limit(&chain);
            match outcome {
                Ok(Ended::Closed { delivered }) => {
                    provider.set_subscription(Subscription::Down);
                    tracing::warn!(chain = %self.chain, provider = %provider.name, url = %shown,
                        "newHeads subscription ended; polling until it is reopened");
                    if delivered {
                        backoff = pool_cfg.ws_reconnect_backoff.0;
                    }
                }
                Ok(Ended::Silent) => {
                    provider.set_subscription(Subscription::Silent);
                    tracing::warn!(chain = %self.chain, provider = %provider.name, url = %shown,
                        silent_for = ?silence, retry_in = ?backoff,
                        "newHeads subscription is connected but silent while other providers announce new blocks; polling until it delivers again");
                }
                Err(SubscribeError::WrongChain(actual)) => {
                    provider.set_subscription(Subscription::Down);
                    tracing::error!(chain = %self.chain, provider = %provider.name, url = %shown,
                        expected = chain.chain_id, actual, "WebSocket endpoint serves another chain; not subscribing");
                    return;
                }
                Err(SubscribeError::Other(e)) => {
                    if provider.subscription() != Subscription::Silent {
                        provider.set_subscription(Subscription::Down);
                    }
                    tracing::warn!(chain = %self.chain, provider = %provider.name, url = %shown,
                        error = %redactor.redact(&e), retry_in = ?backoff,
                        "cannot open newHeads subscription; polling meanwhile");
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_WS_BACKOFF);
        }
    }

    /// One subscription's life: until it closes, or stays silent for longer than the chain allows
    /// while the other providers announce new blocks.
    async fn follow_subscription(
        &self,
        provider: &Provider,
        ws_url: &str,
        chain: &ChainConfig,
    ) -> Result<Ended, SubscribeError> {
        let client = WsClientBuilder::default()
            .connection_timeout(provider.timeout)
            .request_timeout(provider.timeout)
            .set_headers(provider.headers().clone())
            // A connection that dies without a close frame (a NAT or load balancer dropping it)
            // must end the subscription so that it is reopened.
            .enable_ws_ping(
                PingConfig::new()
                    .ping_interval(WS_PING_INTERVAL)
                    .inactive_limit(WS_PING_INTERVAL * 3),
            )
            .build(ws_url)
            .await
            .map_err(|e| SubscribeError::Other(e.to_string()))?;
        let id: U64 = client
            .request("eth_chainId", rpc_params![])
            .await
            .map_err(|e| SubscribeError::Other(e.to_string()))?;
        if id.to::<u64>() != chain.chain_id {
            return Err(SubscribeError::WrongChain(id.to::<u64>()));
        }
        let mut sub = client
            .subscribe::<RpcHeader, _>("eth_subscribe", rpc_params!["newHeads"], "eth_unsubscribe")
            .await
            .map_err(|e| SubscribeError::Other(e.to_string()))?;
        tracing::info!(chain = %self.chain, provider = %provider.name, "newHeads subscription open");
        // Open until its first head; one found silent stays so until it delivers.
        if provider.subscription() != Subscription::Silent {
            provider.set_subscription(Subscription::Open);
        }
        let silence = silence_limit(chain);
        let mut check = tokio::time::interval(silence / 4);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut delivered = false;
        // The newest head it delivered, and when (the subscription's start until the first).
        let mut last: (Option<u64>, Instant) = (None, Instant::now());
        let start_head = self.book.best();
        loop {
            let item = tokio::select! {
                item = sub.next() => item,
                _ = check.tick() => {
                    let since = last.0.or(start_head);
                    let others_moved = match (self.book.best(), since) {
                        (Some(best), Some(mine)) => best >= mine.saturating_add(2),
                        _ => false,
                    };
                    if others_moved && last.1.elapsed() >= silence {
                        return Ok(Ended::Silent);
                    }
                    continue;
                }
            };
            let Some(item) = item else {
                return Ok(Ended::Closed { delivered });
            };
            match item {
                Ok(h) => {
                    if !delivered {
                        provider.set_subscription(Subscription::Live);
                        self.book.restart_sequence(provider.index);
                    }
                    delivered = true;
                    let number = h.number.to::<u64>();
                    last = (Some(number), Instant::now());
                    if let Some(m) = self.last_ws_head.get(provider.index) {
                        *m.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                    }
                    let best = self.book.record(provider, number, Some(h.hash), true);
                    self.publish(best, number, Some(h.hash));
                }
                Err(e) => {
                    tracing::warn!(chain = %self.chain, provider = %provider.name, error = %e,
                        "ignoring an unreadable newHeads notification");
                }
            }
        }
    }
}

/// How a subscription ended without an error.
enum Ended {
    /// The server or the connection closed it.
    Closed { delivered: bool },
    /// It stopped delivering heads while other providers announced new blocks.
    Silent,
}

/// How long a subscription may stay silent while other providers announce new blocks: three block
/// times, at least a second.
fn silence_limit(chain: &ChainConfig) -> Duration {
    (chain.expected_block_time.0 * 3).max(Duration::from_secs(1))
}

enum SubscribeError {
    WrongChain(u64),
    Other(String),
}
