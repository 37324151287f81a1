//! The head book of one chain: the newest head each provider announced, the chain head corroborated
//! from them, who is how far behind, how late each provider announces new blocks, where two
//! providers disagree on the hash at the same height, and who was caught in a claim the others do
//! not back (a *lie*: the provider is `inconsistent` for a while).
//!
//! The chain head is not simply the highest head anyone claims: a provider on another chain's height,
//! or with a bug, would otherwise make every honest provider look hopelessly behind and send the
//! follower after blocks that do not exist. A head more than `pool.head_outlier_blocks` ahead of
//! every other provider's is an *outlier*: it does not count until its provider proves it by serving
//! the block at that height (a claim check, see `checks`); a provider that cannot is inconsistent.
//! The chain head is the highest head that is not an unproven outlier, among providers heard from
//! lately and not inconsistent.
//!
//! Other lies found here or by checks: a head that goes back by more than the tolerance (the
//! chain's reorg window), `null` for a block at or below the head the provider reported itself
//! (asked again after `recheck_after` before it counts: a load balancer a moment behind is not a
//! liar), and another block than the one asked for.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use alloy_primitives::B256;

use super::Skips;
use crate::rpc::LieKind;

/// Something to ask a provider to settle a claim: the block at `number`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Check {
    /// The provider.
    pub idx: usize,
    /// The block to ask for.
    pub number: u64,
    /// Why.
    pub kind: CheckKind,
    /// When it may run.
    pub due: Instant,
}

/// Why a provider is asked for a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// Its head is an outlier: can it serve it?
    Claim,
    /// It answered `null` for this block at or below its own head: does it still?
    Null,
}

/// Recent (number, hash) pairs kept per provider for comparing hashes at the same height.
const RECENT_HASHES: usize = 64;
/// Recent block numbers kept with the time the first provider announced them.
const FIRST_SEEN: usize = 128;
/// The widest gap in a provider's `newHeads` sequence taken as skipped blocks (a wider jump is a
/// reconnection or a catch-up, not a skip).
const MAX_GAP: u64 = 64;
/// Weight of the newest sample in the arrival delay's moving average.
const DELAY_WEIGHT: f64 = 0.2;

/// How heads are judged.
#[derive(Clone, Debug)]
pub struct HeadRules {
    /// A head this far ahead of every other provider's needs proof.
    pub outlier_blocks: u64,
    /// The chain's expected block time.
    pub block_time: Duration,
    /// A provider not heard from for this long no longer counts towards the chain head.
    pub freshness: Duration,
    /// A head that goes back by more than this many blocks is a lie (the chain's reorg window: a
    /// reorg the agent could follow moves a head back by no more).
    pub backwards_blocks: u64,
    /// How long a provider stays inconsistent after its last lie.
    pub inconsistent_for: Duration,
    /// How long after a `null` for a block at or below its own head the provider is asked again.
    pub recheck_after: Duration,
}

#[cfg(test)]
impl HeadRules {
    /// The rules of a chain with 12 s blocks and a reorg window of 16, for tests.
    pub(crate) fn for_tests() -> Self {
        HeadRules {
            outlier_blocks: 10,
            block_time: Duration::from_secs(12),
            freshness: Duration::from_secs(60),
            backwards_blocks: 16,
            inconsistent_for: Duration::from_secs(30),
            recheck_after: Duration::from_secs(1),
        }
    }
}

/// A lie the book found while recording a head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lie {
    /// What kind.
    pub kind: LieKind,
    /// The numbers involved, in words.
    pub detail: String,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Announced {
    pub(super) number: u64,
    pub(super) at: Instant,
}

#[derive(Debug, Default)]
pub(super) struct Entry {
    head: Option<Announced>,
    recent: VecDeque<(u64, B256)>,
    /// Moving average of how late it announces blocks, in milliseconds (push sources only).
    delay_ms: Option<f64>,
    syncing: bool,
    /// The last number its subscription pushed (since the subscription opened).
    last_pushed: Option<u64>,
    /// The highest head it answered when asked (a poll or a probe; not a push, which can arrive
    /// late behind newer answers): what a head that goes back is measured against.
    asked: Option<u64>,
    /// Inconsistent until then, for this lie.
    lie: Option<(Instant, LieKind)>,
    /// The highest head it proved by serving its block.
    pub(super) proven: Option<u64>,
    /// A claim check of its head is queued or running.
    pub(super) claim_pending: bool,
}

impl Entry {
    fn lying(&self, now: Instant) -> Option<LieKind> {
        self.lie.filter(|(until, _)| *until > now).map(|(_, k)| k)
    }
}

#[derive(Debug, Default)]
pub(super) struct Book {
    pub(super) entries: Vec<Entry>,
    first_seen: VecDeque<(u64, Instant)>,
    /// Disagreements per provider pair (lower index first).
    forks: BTreeMap<(usize, usize), u64>,
    best: Option<Announced>,
    /// Checks waiting to be run.
    pub(super) checks: VecDeque<Check>,
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
    /// It is inconsistent now, for this kind of lie.
    pub inconsistent: Option<LieKind>,
}

/// A disagreement count between two providers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Fork {
    /// The two providers.
    pub providers: [String; 2],
    /// Heights at which they announced different hashes.
    pub count: u64,
}

/// What recording a head found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reported {
    /// The chain head after it.
    pub best: Option<u64>,
    /// The providers it newly disagrees with.
    pub disagree: Vec<usize>,
    /// The lie it revealed, if it is one.
    pub lie: Option<Lie>,
}

/// The head book of one chain.
#[derive(Debug)]
pub struct HeadBook {
    pub(super) rules: HeadRules,
    book: Mutex<Book>,
    /// Woken when a check is queued.
    pub(super) checks_queued: tokio::sync::Notify,
    /// The providers' names, in configuration order.
    names: Vec<String>,
    /// Blocks providers skipped, for the follower.
    pub(super) skips: Skips,
}

impl HeadBook {
    /// An empty book for the providers `names` (in configuration order).
    pub fn new(rules: HeadRules, names: Vec<String>) -> Self {
        let book = Book {
            entries: names.iter().map(|_| Entry::default()).collect(),
            ..Book::default()
        };
        Self {
            rules,
            book: Mutex::new(book),
            checks_queued: tokio::sync::Notify::new(),
            names,
            skips: Skips::default(),
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that provider `idx` announced `number` (with `hash` when known) `now`; `pushed` when it
    /// came unasked (a `newHeads` notification), which is what arrival delay is measured on.
    pub fn report(
        &self,
        idx: usize,
        number: u64,
        hash: Option<B256>,
        pushed: bool,
        now: Instant,
    ) -> Reported {
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
                    // Announcements go missing under load without anything else being wrong: a
                    // block is skipped only if the provider does not serve it either, asked a
                    // moment later.
                    for n in prev + 1..number {
                        Self::queue_locked(
                            &mut b,
                            Check {
                                idx,
                                number: n,
                                kind: CheckKind::Null,
                                due: now + self.rules.recheck_after,
                            },
                        );
                    }
                    self.checks_queued.notify_one();
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
        let mut lie = None;
        let tolerance = self.rules.backwards_blocks;
        let e = &mut b.entries[idx];
        // Only answers to questions are compared: a `newHeads` notification may be delivered late,
        // behind a newer answer, and a reorg announces a lower branch.
        let went_back = (!pushed)
            .then_some(e.asked)
            .flatten()
            .filter(|&a| number.saturating_add(tolerance) < a);
        if !pushed {
            e.asked = Some(match (e.asked, went_back) {
                (Some(a), None) => a.max(number),
                _ => number,
            });
        }
        match &mut e.head {
            Some(h) if went_back.is_some() => {
                lie = Some(Lie {
                    kind: LieKind::HeadBackwards,
                    detail: format!(
                        "asked for its head, it answered {number} after {}: back by more than the reorg window ({tolerance})",
                        went_back.unwrap_or(h.number)
                    ),
                });
                *h = Announced { number, at: now };
                e.lie = Some((now + self.rules.inconsistent_for, LieKind::HeadBackwards));
                e.proven = None;
            }
            // A lower head within the window (its own reorg): still alive at the old height.
            Some(h) if number < h.number => h.at = now,
            _ => e.head = Some(Announced { number, at: now }),
        }
        let best = self.corroborate(&mut b, now);
        Reported {
            best,
            disagree,
            lie,
        }
    }

    /// Provider `idx` was caught in a lie of `kind` (found by the pool): inconsistent for
    /// `inconsistent_for` from `now`; its head no longer counts.
    pub fn lie(&self, idx: usize, kind: LieKind, now: Instant) {
        let mut b = self.lock();
        let e = &mut b.entries[idx];
        e.lie = Some((now + self.rules.inconsistent_for, kind));
        e.proven = None;
        self.corroborate(&mut b, now);
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

    /// The handle through which the blocks providers skipped leave the book.
    pub fn skips(&self) -> Skips {
        self.skips.clone()
    }

    /// How many providers the book keeps.
    pub fn providers(&self) -> usize {
        self.names.len()
    }

    /// Provider `idx`'s name.
    pub fn name(&self, idx: usize) -> &str {
        &self.names[idx]
    }

    /// Records whether provider `idx` said it is syncing.
    pub fn set_syncing(&self, idx: usize, syncing: bool) {
        self.lock().entries[idx].syncing = syncing;
    }

    /// The chain head from the heads of fresh, consistent providers: the highest that is not an
    /// unproven outlier. Queues a claim check for every unproven outlier.
    pub(super) fn corroborate(&self, b: &mut Book, now: Instant) -> Option<u64> {
        let gap = self.rules.outlier_blocks;
        let heads: Vec<(usize, u64)> = b
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.lying(now).is_none())
            .filter_map(|(i, e)| e.head.map(|h| (i, h)))
            .filter(|(_, h)| now.saturating_duration_since(h.at) <= self.rules.freshness)
            .map(|(i, h)| (i, h.number))
            .collect();
        if heads.is_empty() {
            return b.best.map(|h| h.number);
        }
        let mut outliers = Vec::new();
        let mut best: Option<u64> = None;
        for &(i, h) in &heads {
            let others = heads.iter().filter(|(j, _)| *j != i).map(|&(_, o)| o).max();
            let proven = b.entries[i]
                .proven
                .is_some_and(|p| h <= p.saturating_add(gap));
            match others {
                Some(o) if h > o.saturating_add(gap) && !proven => outliers.push((i, h)),
                _ => best = best.max(Some(h)),
            }
        }
        // A provider caught claiming a head it could not serve stays inconsistent while it goes on
        // claiming one that far ahead (it would only be caught again at its next check).
        let highest = heads.iter().map(|&(_, h)| h).max();
        let until = now + self.rules.inconsistent_for;
        for e in &mut b.entries {
            let still = e.head.is_some_and(|h| {
                highest.is_some_and(|o| h.number > o.saturating_add(gap))
                    && now.saturating_duration_since(h.at) <= self.rules.freshness
            });
            if let Some((u, LieKind::HeadAhead)) = &mut e.lie {
                if *u > now && still {
                    *u = until;
                }
            }
        }
        for (i, h) in outliers {
            if !b.entries[i].claim_pending {
                Self::queue_locked(
                    b,
                    Check {
                        idx: i,
                        number: h,
                        kind: CheckKind::Claim,
                        due: now,
                    },
                );
                self.checks_queued.notify_one();
            }
        }
        // Every head is an unproven outlier of another (two providers far apart, neither proven
        // yet): the lower is the safer guess until a check settles it.
        let number = best.unwrap_or_else(|| heads.iter().map(|&(_, h)| h).min().unwrap_or(0));
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

    /// The head provider `idx` reported last, if any.
    pub fn reported_head(&self, idx: usize) -> Option<u64> {
        self.lock().entries[idx].head.map(|h| h.number)
    }

    /// When provider `idx` last announced a head, if ever.
    pub fn reported_at(&self, idx: usize) -> Option<Instant> {
        self.lock().entries[idx].head.map(|h| h.at)
    }

    /// The chain's expected block time.
    pub fn block_time(&self) -> Duration {
        self.rules.block_time
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
            inconsistent: e.lying(now),
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
#[path = "book_tests.rs"]
mod tests;
