//! Head tracking: what the newest block of a chain is, learned from every provider — from its
//! WebSocket `newHeads` subscription where it has one, else (or while that subscription is down or
//! silent) by polling its `eth_blockNumber` — so that the head book corroborates the chain head from
//! all of them and one provider's word never decides it.
//!
//! The tracker only publishes news ([`Head`] in a `watch` channel); fetching and ordering blocks is
//! the follower's job, so a burst of heads, heads out of order, or a jump by N blocks all come down to
//! "the head is now at least N".

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use alloy_primitives::{B256, U64};
use jsonrpsee::{
    core::client::{ClientT, SubscriptionClientT},
    rpc_params,
    ws_client::{PingConfig, WsClientBuilder},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{ChainConfig, PoolConfig},
    pool::ProviderPool,
    redact::Redactor,
    rpc::{provider::Subscription, types::RpcHeader, Provider},
};

/// How often an idle WebSocket is pinged; three silent intervals close it.
const WS_PING_INTERVAL: Duration = Duration::from_secs(10);

/// Longest pause between attempts to reopen a subscription.
const MAX_WS_BACKOFF: Duration = Duration::from_secs(30);

/// The newest block a provider announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Block number.
    pub number: u64,
    /// Block hash, when the source tells it (`newHeads` does, polling does not).
    pub hash: Option<B256>,
}

/// Most chain-head steps remembered: beyond it, the oldest two are merged (keeping the earlier
/// time, so that no block is ever thought known later than it was).
const MAX_HEAD_STEPS: usize = 4096;

/// When the agent first knew of each chain head: the corroborated head's rises, with their times.
/// The follower asks it when a block became known, to tell how late the chain's providers made it
/// (a miss) from how long the agent's own backlog held it (lag).
#[derive(Debug, Default)]
pub struct HeadTimes {
    steps: Mutex<std::collections::VecDeque<(u64, SystemTime)>>,
}

impl HeadTimes {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(u64, SystemTime)>> {
        self.steps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The chain head rose to `number` at `at` (ignored unless it is a rise).
    pub fn record(&self, number: u64, at: SystemTime) {
        let mut steps = self.lock();
        if steps.back().is_some_and(|&(n, _)| n >= number) {
            return;
        }
        steps.push_back((number, at));
        if steps.len() > MAX_HEAD_STEPS {
            // Merge the two oldest: the lower number's time for both.
            if let (Some((_, t)), Some(second)) = (steps.pop_front(), steps.front_mut()) {
                second.1 = t.min(second.1);
            }
        }
    }

    /// When the head first reached `number`, if it has.
    pub fn known_at(&self, number: u64) -> Option<SystemTime> {
        self.lock()
            .iter()
            .find(|&&(n, _)| n >= number)
            .map(|&(_, t)| t)
    }

    /// When the first head of this run was known.
    pub fn first(&self) -> Option<SystemTime> {
        self.lock().front().map(|&(_, t)| t)
    }

    /// Forgets the steps that only blocks below `number` need (they were emitted).
    pub fn forget_below(&self, number: u64) {
        let mut steps = self.lock();
        // Keep the first step at or above `number`: it is when `number` became known.
        while steps.len() > 1
            && steps.get(1).is_some_and(|&(n, _)| n <= number)
            && steps[0].0 < number
        {
            steps.pop_front();
        }
    }
}

/// Publishes heads for one chain.
#[derive(Clone, Debug)]
pub struct HeadTracker {
    chain: String,
    tx: watch::Sender<Option<Head>>,
    /// When each head was first known.
    times: Arc<HeadTimes>,
    /// When each provider's subscription last delivered a head.
    last_ws_head: Arc<Vec<Mutex<Option<Instant>>>>,
}

impl HeadTracker {
    /// A tracker of a chain with `providers` providers, with no head yet, and the receiver the
    /// follower watches.
    pub fn new(chain: &str, providers: usize) -> (Self, watch::Receiver<Option<Head>>) {
        let (tx, rx) = watch::channel(None);
        let tracker = Self {
            chain: chain.to_owned(),
            tx,
            times: Arc::new(HeadTimes::default()),
            last_ws_head: Arc::new((0..providers).map(|_| Mutex::new(None)).collect()),
        };
        (tracker, rx)
    }

    /// When each head was first known (shared with the follower).
    pub fn times(&self) -> Arc<HeadTimes> {
        self.times.clone()
    }

    /// Whether `provider`'s subscription has delivered a head within `silence`.
    fn delivering(&self, provider: &Provider, silence: Duration) -> bool {
        provider.subscription() == Subscription::Live
            && self
                .last_ws_head
                .get(provider.index)
                .and_then(|m| *m.lock().unwrap_or_else(|p| p.into_inner()))
                .is_some_and(|t| t.elapsed() < silence)
    }

    /// Publishes the chain's corroborated head `best` after a provider announced `number` (with
    /// `hash`): its hash goes with it when the provider announced that very height.
    /// `best` may also be lower than before: a head that was believed while its provider was the
    /// only one heard from is withdrawn once others contradict it.
    pub fn publish(&self, best: Option<u64>, number: u64, hash: Option<B256>) {
        self.publish_at(best, number, hash, SystemTime::now())
    }

    /// [`Self::publish`] of news learned at `at` (a polled head: when it was asked for).
    pub fn publish_at(&self, best: Option<u64>, number: u64, hash: Option<B256>, at: SystemTime) {
        let Some(best) = best else { return };
        self.times.record(best, at);
        let hash = hash.filter(|_| number == best);
        self.tx.send_if_modified(|current| {
            let news = match current {
                None => true,
                Some(cur) => best != cur.number || (hash.is_some() && hash != cur.hash),
            };
            if news {
                *current = Some(Head { number: best, hash });
            }
            news
        });
    }

    /// Polls `provider`'s `eth_blockNumber` every `interval` while it has no subscription
    /// delivering heads (none, or none that spoke within `silence`), and publishes the chain head
    /// corroborated after each answer. Providers that are unreachable or behind an open circuit are
    /// left to the pool's probes. Ends when `cancel` fires.
    pub async fn poll(
        self,
        pool: Arc<ProviderPool>,
        provider: Arc<Provider>,
        interval: Duration,
        silence: Duration,
        cancel: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if self.delivering(&provider, silence)
                || provider.is_refused()
                || matches!(
                    provider.state(),
                    crate::rpc::health::State::Unreachable | crate::rpc::health::State::CircuitOpen
                )
            {
                continue;
            }
            let answer = tokio::select! {
                _ = cancel.cancelled() => return,
                a = pool.poll_head(&provider) => a,
            };
            match answer {
                // The corroborated head, not whatever this provider said.
                Ok((n, sent)) => self.publish_at(pool.heads().best(), n, None, sent),
                Err(e) => tracing::debug!(chain = %self.chain, provider = %provider.name,
                    error = %e, "head poll failed"),
            }
        }
    }

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
        let silence = silence_limit(chain);
        let mut check = tokio::time::interval(silence / 4);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut delivered = false;
        // The newest head it delivered, and when (the subscription's start until the first).
        let mut last: (Option<u64>, Instant) = (None, Instant::now());
        let start_head = provider.chain_head();
        loop {
            let item = tokio::select! {
                item = sub.next() => item,
                _ = check.tick() => {
                    let since = last.0.or(start_head);
                    let others_moved = match (provider.chain_head(), since) {
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
                        provider.restart_head_sequence();
                    }
                    delivered = true;
                    let number = h.number.to::<u64>();
                    last = (Some(number), Instant::now());
                    if let Some(m) = self.last_ws_head.get(provider.index) {
                        *m.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                    }
                    let best = provider.record_head(number, Some(h.hash), true);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_news_is_published() {
        let (t, mut rx) = HeadTracker::new("c", 1);
        let h = Some(B256::ZERO);
        t.publish(Some(5), 5, None);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().unwrap().number, 5);
        t.publish(Some(5), 5, None);
        assert!(!rx.has_changed().unwrap(), "the same head is no news");
        t.publish(Some(5), 4, h);
        assert!(
            !rx.has_changed().unwrap(),
            "a lower provider head leaves the chain head"
        );
        t.publish(Some(5), 5, h);
        assert_eq!(
            *rx.borrow_and_update(),
            Some(Head { number: 5, hash: h }),
            "a new tip hash"
        );
        t.publish(Some(9), 9, None);
        assert_eq!(rx.borrow_and_update().unwrap().number, 9);
        t.publish(Some(7), 8, h);
        assert_eq!(
            *rx.borrow_and_update(),
            Some(Head {
                number: 7,
                hash: None
            }),
            "a withdrawn head goes down; the hash of another height is not its"
        );
        t.publish(None, 3, None);
        assert!(!rx.has_changed().unwrap());
    }

    #[test]
    fn head_times_say_when_each_block_was_first_known() {
        let times = HeadTimes::default();
        let at = |s| std::time::UNIX_EPOCH + Duration::from_secs(s);
        times.record(10, at(100));
        times.record(9, at(101));
        times.record(15, at(105));
        assert_eq!(times.known_at(8), Some(at(100)));
        assert_eq!(times.known_at(10), Some(at(100)));
        assert_eq!(
            times.known_at(11),
            Some(at(105)),
            "known when the head reached it"
        );
        assert_eq!(times.known_at(16), None);
        assert_eq!(times.first(), Some(at(100)));
        times.forget_below(12);
        assert_eq!(times.known_at(12), Some(at(105)));
        // Bounded: the oldest steps merge, never making a block known later than it was.
        for n in 0..(MAX_HEAD_STEPS as u64 + 10) {
            times.record(100 + n, at(1000 + n));
        }
        assert!(times.lock().len() <= MAX_HEAD_STEPS);
        assert!(times.known_at(101).is_some_and(|t| t <= at(1001)));
    }
}
