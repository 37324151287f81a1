//! Checks that settle what a provider claimed: the block at a head far ahead of every other
//! provider's (served: the head is proven; `null`: a lie), and a block it answered `null` for
//! although its own head was at or above it (asked again a moment later: `null` again is a lie and
//! a skipped block). Checks are queued by the book, run as soon as they are due, each once at a
//! time, and their outcome is written back to the book.

use std::{sync::Arc, time::Instant};

use alloy_primitives::U64;
use jsonrpsee::rpc_params;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    book::{Book, Check, CheckKind},
    HeadBook,
};
use crate::{
    config::BlockHashCheck,
    rpc::{types::RpcBlock, LieKind, Provider},
};

/// Checks waiting to be run (claims and `null` answers to ask again).
const MAX_PENDING_CHECKS: usize = 64;

impl HeadBook {
    /// Provider `idx` answered `null` for block `number`: if the chain head has reached it, the
    /// provider is asked again after `recheck_after`, and a `null` then, with its own head at or
    /// above `number` by that time, is a lie and a skipped block. (A provider a moment behind the
    /// others, or a load balancer's node that is, serves it by then.)
    pub fn suspect_null(&self, idx: usize, number: u64, now: Instant) {
        if self.best().is_none_or(|b| b < number) {
            // Not known to exist yet: asking for it was a guess.
            return;
        }
        self.queue(Check {
            idx,
            number,
            kind: CheckKind::Null,
            due: now + self.rules.recheck_after,
        });
    }

    fn queue(&self, check: Check) {
        {
            let mut b = self.lock();
            Self::queue_locked(&mut b, check);
        }
        self.checks_queued.notify_one();
    }

    pub(super) fn queue_locked(b: &mut Book, check: Check) {
        if b.checks
            .iter()
            .any(|c| c.idx == check.idx && c.number == check.number && c.kind == check.kind)
        {
            return;
        }
        if b.checks.len() >= MAX_PENDING_CHECKS {
            return;
        }
        if check.kind == CheckKind::Claim {
            b.entries[check.idx].claim_pending = true;
        }
        b.checks.push_back(check);
    }

    /// Takes the checks that are due at `now`.
    pub fn take_due_checks(&self, now: Instant) -> Vec<Check> {
        let mut b = self.lock();
        let (due, later): (Vec<Check>, Vec<Check>) = b.checks.drain(..).partition(|c| c.due <= now);
        b.checks.extend(later);
        due
    }

    /// When the next queued check is due, if one is queued.
    pub fn next_check_due(&self) -> Option<Instant> {
        self.lock().checks.iter().map(|c| c.due).min()
    }

    /// Waits until a check is queued.
    pub async fn check_queued(&self) {
        self.checks_queued.notified().await
    }

    /// A claim check of provider `idx` at `number` ended: `served` when it served a good block
    /// there (the head is proven), otherwise it did not (a lie, reported by the caller with
    /// [`Self::lie`]) or could not be asked.
    pub fn claim_checked(&self, idx: usize, number: u64, served: bool, now: Instant) {
        let mut b = self.lock();
        let e = &mut b.entries[idx];
        e.claim_pending = false;
        if served {
            e.proven = Some(e.proven.map_or(number, |p| p.max(number)));
        }
        self.corroborate(&mut b, now);
    }

    /// Records that provider `idx` skipped blocks `first..=last` (found by a check).
    pub fn skipped(&self, idx: usize, first: u64, last: u64) {
        self.skips.push(super::Skip {
            provider: self.name(idx).to_owned(),
            first,
            last,
        });
    }
}

/// Runs the book's checks on `providers` (in configuration order) as soon as they are due: woken
/// when one is queued, and asleep until the earliest queued one is due (no timer while none is).
/// Blocks are verified as `hash_check` says. Runs until `cancel` fires.
pub async fn run_checks(
    book: Arc<HeadBook>,
    providers: Vec<Arc<Provider>>,
    hash_check: BlockHashCheck,
    cancel: CancellationToken,
) {
    let mut checks = tokio::task::JoinSet::new();
    loop {
        let next = book.next_check_due();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now).into()), if next.is_some() => {}
            _ = book.check_queued() => {}
            Some(_) = checks.join_next(), if !checks.is_empty() => continue,
        }
        // Claims to settle and `null` answers to ask again, at once when due.
        for c in book.take_due_checks(Instant::now()) {
            let (book, provider, cancel) = (book.clone(), providers[c.idx].clone(), cancel.clone());
            checks.spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = run_check(&book, &provider, hash_check, c) => {}
                }
            });
        }
    }
}

/// Settles a claim: asks the provider for the block at a head it claimed far ahead of the others
/// (served: the head is proven; `null`: a lie), or again for a block it answered `null` for
/// although its head was at or above it (`null` again: a lie, and a skipped block).
async fn run_check(book: &HeadBook, provider: &Provider, hash_check: BlockHashCheck, c: Check) {
    let claim = c.kind == CheckKind::Claim;
    if provider.is_refused() || provider.asked_to_wait_until().is_some() {
        if claim {
            book.claim_checked(c.idx, c.number, false, Instant::now());
        }
        return;
    }
    let span = tracing::info_span!(
        "check_claim",
        otel.name = "check_claim",
        blockwatch.chain = %provider.chain(),
        blockwatch.provider = %provider.name,
        blockwatch.block.number = c.number,
    );
    async {
        let head = book.reported_head(c.idx);
        let result = provider
            .ask(
                "eth_getBlockByNumber",
                rpc_params![U64::from(c.number), false],
                |b: Option<RpcBlock>| match b {
                    Some(b) => b.check_number(c.number, hash_check).map(|()| true),
                    None => Ok(false),
                },
            )
            .await;
        let now = Instant::now();
        match (c.kind, result) {
            (CheckKind::Claim, Ok(served)) => {
                book.claim_checked(c.idx, c.number, served, now);
                if !served {
                    provider.caught(
                        LieKind::HeadAhead,
                        &format!(
                            "it reported head {}, more than pool.head_outlier_blocks ahead of every other provider, and has no block {}",
                            head.unwrap_or(c.number),
                            c.number
                        ),
                        true,
                    );
                }
            }
            (CheckKind::Claim, Err(_)) => book.claim_checked(c.idx, c.number, false, now),
            (CheckKind::Null, Ok(false)) if head.is_some_and(|h| h >= c.number) => {
                provider.caught(
                    LieKind::NullBelowHead,
                    &format!(
                        "it answered null for block {} twice although its head is {}",
                        c.number,
                        head.unwrap_or(c.number)
                    ),
                    true,
                );
                book.skipped(c.idx, c.number, c.number);
            }
            (CheckKind::Null, _) => {}
        }
    }
    .instrument(span)
    .await
}
