//! Head tracking: what the newest block of a chain is, learned from every provider — from its
//! WebSocket `newHeads` subscription where it has one (see `subscribe`), else (or while that
//! subscription is down or silent) by polling its `eth_blockNumber` — so that the head book
//! corroborates the chain head from all of them and one provider's word never decides it.
//!
//! The tracker only publishes news ([`Head`] in a `watch` channel); fetching and ordering blocks is
//! the follower's job, so a burst of heads, heads out of order, or a jump by N blocks all come down to
//! "the head is now at least N".

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use alloy_primitives::B256;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{poll_head, HeadBook, HeadTimes, Skips};
use crate::rpc::{provider::Subscription, Provider};

/// The newest block a provider announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Block number.
    pub number: u64,
    /// Block hash, when the source tells it (`newHeads` does, polling does not).
    pub hash: Option<B256>,
}

/// Publishes heads for one chain.
#[derive(Clone, Debug)]
pub struct HeadTracker {
    pub(super) chain: String,
    tx: watch::Sender<Option<Head>>,
    /// When each head was first known.
    times: Arc<HeadTimes>,
    /// When each provider's subscription last delivered a head.
    pub(super) last_ws_head: Arc<Vec<Mutex<Option<Instant>>>>,
    /// The chain's head book.
    pub(super) book: Arc<HeadBook>,
}

impl HeadTracker {
    /// A tracker of a chain whose heads are recorded in `book`, with no head yet, and the receiver
    /// the follower watches.
    pub fn new(chain: &str, book: Arc<HeadBook>) -> (Self, watch::Receiver<Option<Head>>) {
        let (tx, rx) = watch::channel(None);
        let providers = book.providers();
        let tracker = Self {
            chain: chain.to_owned(),
            tx,
            times: Arc::new(HeadTimes::default()),
            last_ws_head: Arc::new((0..providers).map(|_| Mutex::new(None)).collect()),
            book,
        };
        (tracker, rx)
    }

    /// The blocks providers skipped, for the follower.
    pub fn skips(&self) -> Skips {
        self.book.skips()
    }

    /// When each head was first known (shared with the follower).
    pub fn times(&self) -> Arc<HeadTimes> {
        self.times.clone()
    }

    /// Whether `provider`'s subscription has delivered a head within `silence`.
    fn delivering(&self, provider: &Provider, silence: Duration) -> bool {
        self.delivering_until(provider, silence).is_some()
    }

    /// While `provider`'s subscription is live and has delivered a head within `silence`: the
    /// moment it would have been silent for that long.
    fn delivering_until(&self, provider: &Provider, silence: Duration) -> Option<Instant> {
        if provider.subscription() != Subscription::Live {
            return None;
        }
        let last = self
            .last_ws_head
            .get(provider.index)
            .and_then(|m| *m.lock().unwrap_or_else(|p| p.into_inner()))?;
        (last.elapsed() < silence).then(|| last + silence)
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
    /// left to the pool's probes. While the subscription delivers, the poller sleeps until it could
    /// have turned silent or its state changes (not a wake-up every `interval` for nothing). Ends
    /// when `cancel` fires.
    pub async fn poll(
        self,
        provider: Arc<Provider>,
        interval: Duration,
        silence: Duration,
        cancel: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let changed = provider.subscription_changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(quiet_at) = self.delivering_until(&provider, silence) {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = &mut changed => {}
                    _ = tokio::time::sleep_until(quiet_at.into()) => {}
                }
                continue;
            }
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
                a = poll_head(&self.book, &provider) => a,
            };
            match answer {
                // The corroborated head, not whatever this provider said.
                Ok((n, sent)) => self.publish_at(self.book.best(), n, None, sent),
                Err(e) => tracing::debug!(chain = %self.chain, provider = %provider.name,
                    error = %e, "head poll failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heads::HeadRules;

    fn book() -> Arc<HeadBook> {
        Arc::new(HeadBook::new(HeadRules::for_tests(), vec!["p0".into()]))
    }

    #[test]
    fn only_news_is_published() {
        let (t, mut rx) = HeadTracker::new("c", book());
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
}
