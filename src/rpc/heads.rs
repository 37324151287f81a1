//! The head book of one chain: the newest head each provider announced, the chain head corroborated
//! from them, who is how far behind, how late each provider announces new blocks, and where two
//! providers disagree on the hash at the same height.
//!
//! The chain head is not simply the highest head anyone claims: a provider on another chain's height,
//! or with a bug, would otherwise make every honest provider look hopelessly behind. A head counts when
//! another provider's head is within `pool.head_outlier_blocks` of it, when it is the only provider
//! heard from, or when the chain could have grown that far since the last corroborated head. When no
//! head passes, the lower median of them all is taken.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use alloy_primitives::B256;

/// Recent (number, hash) pairs kept per provider for comparing hashes at the same height.
const RECENT_HASHES: usize = 64;
/// Recent block numbers kept with the time the first provider announced them.
const FIRST_SEEN: usize = 128;
/// The widest gap in a provider's `newHeads` sequence taken as skipped blocks (a wider jump is a
/// reconnection or a catch-up, not a skip).
const MAX_GAP: u64 = 64;
/// Gaps kept until the follower takes them.
const MAX_PENDING_GAPS: usize = 256;
/// Weight of the newest sample in the arrival delay's moving average.
const DELAY_WEIGHT: f64 = 0.2;

/// How heads are judged.
#[derive(Clone, Debug)]
pub struct HeadRules {
    /// A head this far ahead of every other provider's needs corroboration.
    pub outlier_blocks: u64,
    /// The chain's expected block time.
    pub block_time: Duration,
    /// A provider not heard from for this long no longer counts towards the chain head.
    pub freshness: Duration,
}

#[derive(Clone, Copy, Debug)]
struct Announced {
    number: u64,
    at: Instant,
}

#[derive(Debug, Default)]
struct Entry {
    head: Option<Announced>,
    recent: VecDeque<(u64, B256)>,
    /// Moving average of how late it announces blocks, in milliseconds (push sources only).
    delay_ms: Option<f64>,
    syncing: bool,
    /// The last number its subscription pushed (since the subscription opened).
    last_pushed: Option<u64>,
}

#[derive(Debug, Default)]
struct Book {
    entries: Vec<Entry>,
    first_seen: VecDeque<(u64, Instant)>,
    /// Disagreements per provider pair (lower index first).
    forks: BTreeMap<(usize, usize), u64>,
    best: Option<Announced>,
    /// Blocks providers skipped in their `newHeads` sequence: (provider, first, last).
    gaps: VecDeque<(usize, u64, u64)>,
    /// The last head two providers agreed on: how far the chain may have grown is counted from it.
    agreed: Option<Announced>,
}

/// One provider's view, as `/status` and the health rules see it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProviderHead {
    /// The newest head it announced.
    pub head: Option<u64>,
    /// Blocks behind the chain head.
    pub lag_blocks: Option<u64>,
    /// How late it announces new blocks compared with the first provider.
    pub arrival_delay: Option<Duration>,
    /// It said it is syncing.
    pub syncing: bool,
    /// When it last announced a head.
    pub reported: Option<Instant>,
}

/// A disagreement count between two providers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Fork {
    /// The two providers.
    pub providers: [String; 2],
    /// Heights at which they announced different hashes.
    pub count: u64,
}

/// The head book of one chain.
#[derive(Debug)]
pub struct HeadBook {
    rules: HeadRules,
    book: Mutex<Book>,
}

impl HeadBook {
    /// An empty book for `providers` providers.
    pub fn new(rules: HeadRules, providers: usize) -> Self {
        let book = Book {
            entries: (0..providers).map(|_| Entry::default()).collect(),
            ..Book::default()
        };
        Self {
            rules,
            book: Mutex::new(book),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that provider `idx` announced `number` (with `hash` when known) `now`; `pushed` when it
    /// came unasked (a `newHeads` notification), which is what arrival delay is measured on.
    /// Returns the chain head after it, and the providers it newly disagrees with.
    pub fn report(
        &self,
        idx: usize,
        number: u64,
        hash: Option<B256>,
        pushed: bool,
        now: Instant,
    ) -> (Option<u64>, Vec<usize>) {
        let mut b = self.lock();
        let mut disagree = Vec::new();
        if let Some(hash) = hash {
            let known = b.entries[idx]
                .recent
                .iter()
                .any(|&(n, h)| n == number && h == hash);
            if !known {
                for (j, other) in b.entries.iter().enumerate() {
                    if j != idx && other.recent.iter().any(|&(n, h)| n == number && h != hash) {
                        disagree.push(j);
                    }
                }
                for &j in &disagree {
                    *b.forks.entry((idx.min(j), idx.max(j))).or_default() += 1;
                }
                let recent = &mut b.entries[idx].recent;
                recent.retain(|&(n, _)| n != number);
                recent.push_back((number, hash));
                while recent.len() > RECENT_HASHES {
                    recent.pop_front();
                }
            }
        }
        if pushed {
            let prev = b.entries[idx].last_pushed;
            if let Some(prev) = prev {
                if number > prev + 1 && number - prev <= MAX_GAP {
                    if b.gaps.len() >= MAX_PENDING_GAPS {
                        b.gaps.pop_front();
                    }
                    b.gaps.push_back((idx, prev + 1, number - 1));
                }
            }
            b.entries[idx].last_pushed = Some(match prev {
                Some(p) if number < p => number,
                Some(p) => p.max(number),
                None => number,
            });
            let first = b
                .first_seen
                .iter()
                .find(|&&(n, _)| n == number)
                .map(|&(_, t)| t);
            let delay = match first {
                Some(t) => now.saturating_duration_since(t),
                None => {
                    b.first_seen.push_back((number, now));
                    while b.first_seen.len() > FIRST_SEEN {
                        b.first_seen.pop_front();
                    }
                    Duration::ZERO
                }
            };
            let ms = delay.as_secs_f64() * 1000.0;
            let e = &mut b.entries[idx];
            e.delay_ms = Some(match e.delay_ms {
                Some(avg) => avg + DELAY_WEIGHT * (ms - avg),
                None => ms,
            });
        }
        let e = &mut b.entries[idx];
        if e.head.is_none_or(|h| number >= h.number) {
            e.head = Some(Announced { number, at: now });
        } else if let Some(h) = &mut e.head {
            // A lower head (its own reorg, or a restart): it is still alive at the old height.
            h.at = now;
        }
        let best = self.corroborate(&mut b, now);
        (best, disagree)
    }

    /// Forgets provider `idx`'s head: it serves another chain, and must not count.
    pub fn forget(&self, idx: usize) {
        let mut b = self.lock();
        b.entries[idx] = Entry::default();
        let now = Instant::now();
        let best = self.corroborate(&mut b, now);
        if best.is_none() {
            b.best = None;
        }
    }

    /// Provider `idx`'s subscription (re)opened: its sequence starts again (a jump across the
    /// reconnection is not a skip).
    pub fn restart_sequence(&self, idx: usize) {
        self.lock().entries[idx].last_pushed = None;
    }

    /// Takes the gaps found in providers' `newHeads` sequences: (provider, first, last) skipped.
    pub fn take_gaps(&self) -> Vec<(usize, u64, u64)> {
        self.lock().gaps.drain(..).collect()
    }

    /// Records whether provider `idx` said it is syncing.
    pub fn set_syncing(&self, idx: usize, syncing: bool) {
        self.lock().entries[idx].syncing = syncing;
    }

    fn corroborate(&self, b: &mut Book, now: Instant) -> Option<u64> {
        let mut heads: Vec<u64> = b
            .entries
            .iter()
            .filter_map(|e| e.head)
            .filter(|h| now.saturating_duration_since(h.at) <= self.rules.freshness)
            .map(|h| h.number)
            .collect();
        if heads.is_empty() {
            return b.best.map(|h| h.number);
        }
        heads.sort_unstable_by(|a, b| b.cmp(a));
        let gap = self.rules.outlier_blocks;
        let reachable = b.agreed.map(|prev| {
            // What the chain could have grown to since: generously, for slow announcements.
            let blocks = now.saturating_duration_since(prev.at).as_secs_f64()
                / self.rules.block_time.as_secs_f64().max(0.001);
            prev.number
                .saturating_add(gap)
                .saturating_add((blocks * 2.0) as u64)
        });
        let agree = |i: usize, h: u64| {
            heads[i + 1..].iter().any(|&o| h - o <= gap) || heads[..i].iter().any(|&o| o - h <= gap)
        };
        let accepted = heads
            .iter()
            .enumerate()
            .find(|&(i, &h)| heads.len() == 1 || agree(i, h) || reachable.is_some_and(|r| h <= r));
        let number = match accepted {
            Some((i, &h)) => {
                if agree(i, h) && b.agreed.is_none_or(|a| a.number != h) {
                    b.agreed = Some(Announced { number: h, at: now });
                }
                h
            }
            // Nobody agrees with anybody: the lower median is the least bad guess.
            None => heads[heads.len() / 2],
        };
        // It may go down: a head believed while its provider was the only one heard from is
        // dropped once others contradict it.
        if b.best.is_none_or(|prev| number != prev.number) {
            b.best = Some(Announced { number, at: now });
        }
        Some(number)
    }

    /// The corroborated chain head.
    pub fn best(&self) -> Option<u64> {
        self.lock().best.map(|h| h.number)
    }

    /// Provider `idx`'s view.
    pub fn provider(&self, idx: usize) -> ProviderHead {
        let b = self.lock();
        let e = &b.entries[idx];
        let head = e.head.map(|h| h.number);
        let now = Instant::now();
        ProviderHead {
            head,
            // Behind by what the chain head has gained beyond what the chain could have grown since
            // the provider last said where it is: a provider heard from only by an occasional probe
            // is not lagging just because it has not been asked lately.
            lag_blocks: match (b.best, e.head) {
                (Some(best), Some(h)) => {
                    let since = now.saturating_duration_since(h.at).as_secs_f64()
                        / self.rules.block_time.as_secs_f64().max(0.001);
                    Some(
                        best.number
                            .saturating_sub(h.number)
                            .saturating_sub(since as u64),
                    )
                }
                _ => None,
            },
            reported: e.head.map(|h| h.at),
            arrival_delay: e
                .delay_ms
                .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0)),
            syncing: e.syncing,
        }
    }

    /// Disagreement counts per provider pair, with `names` the providers' names.
    pub fn forks(&self, names: &[&str]) -> Vec<Fork> {
        self.lock()
            .forks
            .iter()
            .map(|(&(a, b), &count)| Fork {
                providers: [names[a].to_owned(), names[b].to_owned()],
                count,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(n: usize) -> HeadBook {
        HeadBook::new(
            HeadRules {
                outlier_blocks: 10,
                block_time: Duration::from_secs(12),
                freshness: Duration::from_secs(60),
            },
            n,
        )
    }

    fn h(n: u8) -> Option<B256> {
        Some(B256::repeat_byte(n))
    }

    #[test]
    fn a_head_far_beyond_the_others_is_not_believed() {
        let t = Instant::now();
        let b = book(3);
        b.report(0, 1000, None, false, t);
        b.report(1, 998, None, false, t);
        let (best, _) = b.report(2, 1_000_000_000, None, false, t);
        assert_eq!(best, Some(1000));
        assert_eq!(b.provider(1).lag_blocks, Some(2));
        assert_eq!(b.provider(2).lag_blocks, Some(0));
        // Honest providers are not lagging because of it; the chain moves on as it grows.
        let (best, _) = b.report(0, 1001, None, false, t + Duration::from_secs(12));
        assert_eq!(best, Some(1001));
    }

    #[test]
    fn a_bogus_head_heard_first_is_dropped_when_others_speak() {
        let t = Instant::now();
        let b = book(3);
        assert_eq!(
            b.report(2, 1_000_000_000, None, false, t).0,
            Some(1_000_000_000)
        );
        b.report(0, 1000, None, false, t);
        assert_eq!(b.report(1, 1001, None, false, t).0, Some(1001));
    }

    #[test]
    fn with_no_agreement_at_start_the_lower_median_wins() {
        let t = Instant::now();
        let b = book(2);
        b.report(0, 500, None, false, t);
        let (best, _) = b.report(1, 900_000, None, false, t);
        assert_eq!(best, Some(500));
    }

    #[test]
    fn a_single_provider_is_believed_and_growth_over_time_is_plausible() {
        let t = Instant::now();
        let b = book(2);
        assert_eq!(b.report(0, 100, None, false, t).0, Some(100));
        b.report(1, 99, None, false, t);
        // An hour later, 300 blocks on: the chain could have grown that much.
        let later = t + Duration::from_secs(3600);
        b.report(1, 99, None, false, later);
        assert_eq!(b.report(0, 400, None, false, later).0, Some(400));
        assert_eq!(b.provider(1).lag_blocks, Some(301));
    }

    #[test]
    fn stale_heads_do_not_hold_the_chain_head_back_or_up() {
        let t = Instant::now();
        let b = book(2);
        b.report(0, 100, None, false, t);
        b.report(1, 100, None, false, t);
        let later = t + Duration::from_secs(61);
        assert_eq!(b.report(0, 104, None, false, later).0, Some(104));
        assert_eq!(b.provider(1).lag_blocks, Some(4));
    }

    #[test]
    fn different_hashes_at_one_height_are_counted_per_pair_once() {
        let t = Instant::now();
        let b = book(3);
        b.report(0, 10, h(1), true, t);
        assert_eq!(b.report(1, 10, h(1), true, t).1, Vec::<usize>::new());
        assert_eq!(b.report(2, 10, h(2), true, t).1, vec![0, 1]);
        // Announcing the same again is not a new disagreement.
        assert_eq!(b.report(2, 10, h(2), false, t).1, Vec::<usize>::new());
        let forks = b.forks(&["a", "b", "c"]);
        assert_eq!(
            forks,
            vec![
                Fork {
                    providers: ["a".into(), "c".into()],
                    count: 1
                },
                Fork {
                    providers: ["b".into(), "c".into()],
                    count: 1
                }
            ]
        );
    }

    #[test]
    fn gaps_in_a_pushed_sequence_are_kept_for_the_follower() {
        let t = Instant::now();
        let b = book(2);
        b.report(0, 10, None, true, t);
        b.report(0, 11, None, true, t);
        b.report(0, 13, None, true, t);
        // Polled heads and a reorg back are not gaps; a huge jump is a catch-up.
        b.report(1, 20, None, false, t);
        b.report(0, 12, None, true, t);
        b.report(0, 13, None, true, t);
        b.report(0, 500, None, true, t);
        assert_eq!(b.take_gaps(), vec![(0, 12, 12)]);
        assert!(b.take_gaps().is_empty());
        b.restart_sequence(0);
        b.report(0, 503, None, true, t);
        assert!(b.take_gaps().is_empty(), "a reconnection is not a skip");
    }

    #[test]
    fn arrival_delay_is_measured_against_the_first_announcement() {
        let t = Instant::now();
        let b = book(2);
        for i in 0..30u64 {
            let at = t + Duration::from_secs(i * 12);
            b.report(0, i, None, true, at);
            b.report(1, i, None, true, at + Duration::from_millis(400));
        }
        assert_eq!(b.provider(0).arrival_delay, Some(Duration::ZERO));
        let d = b.provider(1).arrival_delay.unwrap();
        assert!(
            d > Duration::from_millis(390) && d <= Duration::from_millis(400),
            "{d:?}"
        );
    }
}
