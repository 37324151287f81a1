//! One pass of the follower: everything the current head allows, then what the missed-block watch
//! asks for (a block overdue, a skip, a recovery attempt).

use super::{ChainFollower, FollowError, StepError, MAX_BATCH};
use crate::{
    canonical::{Reorg, Resolved},
    fetch::{unless_cancelled, Confirmed, Feed, Fetch, FetchInfo, Fetched},
    heads::{Head, Skip},
    model::{Reason, StreamEvent},
    pool::PoolError,
};

impl ChainFollower {
    /// Does everything the current head allows: checks the tip if asked, then fetches, links and
    /// emits blocks up to the head.
    pub(super) async fn step(
        &mut self,
        head: Option<Head>,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<(), StepError> {
        let Some(head) = head else { return Ok(()) };
        self.canonical.head_announced(head.number, head.hash);
        if self.canonical.tip_in_doubt() {
            if let Some(tip) = self.canonical.tip() {
                if let Some(mut f) = self.fetcher.one(tip.number, cancel).await? {
                    if f.block.hash != tip.hash {
                        // A contradiction, not a fetch of the stream's own: no fetch history.
                        f.fetch = FetchInfo::default();
                        if !self.confirmed(Some(&f), cancel).await?
                            || !self.resolve(f, cancel).await?
                        {
                            // Still in doubt: checked again at the next step.
                            return Ok(());
                        }
                    }
                }
            }
            self.canonical.tip_verified();
        }
        if self.canonical.unstarted() {
            // Start at the head only once a provider serves it: a bogus head must not become the
            // start of the stream.
            if self.fetcher.one(head.number, cancel).await?.is_none() {
                return Ok(());
            }
            self.canonical.start_at(head.number);
        }
        // The backlog being fetched while what came before it is verified and written.
        let mut feed: Option<Feed> = None;
        while let Some(next) = self.canonical.next_number() {
            if next > head.number {
                break;
            }
            if self.watch.as_ref().is_some_and(|w| w.recovering(next)) {
                // The block is being recovered: only recovery attempts ask for it.
                break;
            }
            // While a reorg deeper than the window blocks the chain, or the last fetch failed, look
            // at one block per step only: enough to notice recovery, without sending a batch of
            // concurrent requests to providers that are failing.
            let careful = self.canonical.deep_reorg() || self.fetch_failing;
            let catching_up = !careful && head.number - next >= 2;
            if head.number - next >= 2 {
                if let Some(p) = &self.progress {
                    p.behind(next, head.number);
                    if let Some(c) = p.log_due(std::time::Instant::now()) {
                        tracing::info!(chain = %self.cfg.name, from = c.from, to = c.to, done = c.done,
                            blocks_per_second = c.blocks_per_second, eta_seconds = c.eta_seconds,
                            "catching up");
                    }
                }
            }
            let fetch = if catching_up {
                // A feed that does not start here (a reorg moved the stream) is dropped: cancelled.
                let feed = match feed.take() {
                    Some(f) if f.next == next => feed.insert(f),
                    _ => feed.insert(self.fetcher.feed(next, head.number)),
                };
                feed.take(MAX_BATCH, cancel).await
            } else {
                let end = if careful { next } else { head.number };
                self.fetcher.range(next, end, cancel).await
            };
            let Fetch {
                mut blocks,
                error,
                mut unserved,
            } = fetch;
            let mut error = error.map(StepError::from);
            if !self.confirmed(blocks.last(), cancel).await? {
                // Not yet agreed on by a second provider (`block_hash_check = "consensus"`): none
                // of them is emitted; asked again at the next poll.
                blocks.clear();
                feed = None;
                (error, unserved) = (None, true);
            }
            self.fetch_failing = matches!(error, Some(StepError::Pool(_)));
            if matches!(error, Some(StepError::Cancelled)) {
                return Err(StepError::Cancelled);
            }
            let complete = error.is_none() && !unserved;
            if complete && blocks.is_empty() {
                // A feed that ended short (its task failed): the next step starts a new one.
                break;
            }
            // The first block not fetched.
            let stopped_at = next + blocks.len() as u64;
            if let Some(f) = self.emit_linked(blocks).await? {
                // The chain changed under the feed: what it holds may be of the old branch, so it is
                // dropped and the stream goes on from fresh answers.
                feed = None;
                if self.canonical.stale(&f) {
                    // Calls made at once finish out of order: a block received before the one it
                    // should extend may predate a reorg that block already reflects. It is no
                    // evidence of a reorg; asked again, the answer is.
                    continue;
                }
                if self.resolve(f, cancel).await? {
                    continue;
                }
                // Not resolved now (a deep reorg, or the new branch not served yet): wait.
                return Ok(());
            }
            if let Some(e) = error {
                if let StepError::Pool(e) = &e {
                    // The first block that could not be fetched holds the stream: an open miss.
                    self.fetch_failed(stopped_at, e).await?;
                }
                return Err(e);
            }
            if !complete {
                // The providers do not have the next block yet (one more attempt, if it is an open
                // miss).
                if let Some(w) = self.watch.as_mut() {
                    w.not_served(stopped_at);
                }
                break;
            }
        }
        if self
            .canonical
            .next_number()
            .is_some_and(|n| n > head.number)
        {
            if let Some(p) = &self.progress {
                p.caught_up();
            }
        }
        Ok(())
    }

    /// Whether `f` may be emitted as far as its hash goes (see [`crate::fetch::Fetcher::confirmed`]).
    async fn confirmed(
        &self,
        f: Option<&Fetched>,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<bool, StepError> {
        Ok(self.fetcher.confirmed(f, cancel).await? == Confirmed::Yes)
    }

    /// Emits and commits `blocks` in order as long as they extend the window; returns the first
    /// one that contradicts it (not emitted).
    async fn emit_linked(&mut self, blocks: Vec<Fetched>) -> Result<Option<Fetched>, StepError> {
        let mut linked = self.canonical.link(blocks);
        let mut lines = Vec::with_capacity(linked.blocks.len());
        for f in &linked.blocks {
            let known = self.times.known_at(f.block.number);
            // Judged inside the block's span: a miss's metrics point at it.
            let watch = self.watch.as_mut();
            if let Some(r) = f
                .span
                .in_scope(|| watch.and_then(|w| w.joined(f, None, known)))
            {
                linked.commit.missed.push(r);
            }
            lines.push(self.publisher.line(f));
        }
        self.publish(lines, Some(linked.commit)).await?;
        Ok(linked.conflict)
    }

    /// `first` contradicts the window: the canonical stage walks its branch back; a reorg inside
    /// the window is emitted (returns true), a deeper one reported; false: try again later.
    async fn resolve(
        &mut self,
        first: Fetched,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<bool, StepError> {
        match self.canonical.resolve(first, &self.fetcher, cancel).await? {
            Resolved::Wait => Ok(false),
            Resolved::Deep(line) => {
                self.publish(vec![(StreamEvent::Error(line), None)], None)
                    .await?;
                Ok(false)
            }
            Resolved::Reorg(reorg) => {
                let Reorg {
                    line,
                    revealed_by,
                    branch,
                    mut commit,
                } = *reorg;
                // The reorg is an event of the span of the block that revealed it.
                let mut lines = vec![(StreamEvent::Reorg(line), Some(revealed_by))];
                if let Some(w) = self.watch.as_mut() {
                    w.reorg();
                }
                for (f, replaced) in &branch {
                    // The emitted blocks the new branch replaces: their heights are `ChainReorg`
                    // misses.
                    let known = self.times.known_at(f.block.number);
                    let watch = self.watch.as_mut();
                    if let Some(r) = f
                        .span
                        .in_scope(|| watch.and_then(|w| w.joined(f, *replaced, known)))
                    {
                        commit.missed.push(r);
                    }
                    lines.push(self.publisher.line(f));
                }
                self.publish(lines, Some(commit)).await?;
                Ok(true)
            }
        }
    }

    /// Publishes through the commit point; head times below the tip are forgotten.
    async fn publish(
        &mut self,
        lines: Vec<super::publish::Line>,
        commit: Option<crate::store::ChainCommit>,
    ) -> Result<(), FollowError> {
        if lines.is_empty() {
            return Ok(());
        }
        self.publisher.publish(lines, commit).await?;
        if let Some(tip) = self.canonical.tip() {
            self.times.forget_below(tip.number);
        }
        Ok(())
    }

    /// Makes a recovery attempt on the open miss the stream waits on, when one is due.
    pub(super) async fn recover_if_due(
        &mut self,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<(), StepError> {
        let next = self.canonical.next_number();
        let head_reached = next.is_some_and(|n| self.heads.borrow().is_some_and(|h| h.number >= n));
        let Some((number, tries)) = self
            .watch
            .as_mut()
            .and_then(|w| w.recovery_due(next, head_reached))
        else {
            return Ok(());
        };
        let unserved = match self.fetcher.one(number, cancel).await {
            Ok(Some(f)) => {
                if self.confirmed(Some(&f), cancel).await? {
                    tracing::info!(chain = %self.cfg.name, block_number = number, attempt = tries,
                        provider = %f.provider, "missed block recovered");
                    if let Some(w) = self.watch.as_mut() {
                        w.recovered();
                    }
                    self.fetch_failing = false;
                    if let Some(conflict) = self.emit_linked(vec![f]).await? {
                        // The chain was reorganised while the block was missing.
                        self.resolve(conflict, cancel).await?;
                    }
                    return Ok(());
                }
                true
            }
            Ok(None) => {
                if let Some(w) = self.watch.as_mut() {
                    w.not_served(number);
                }
                true
            }
            Err(e) => match StepError::from(e) {
                StepError::Pool(e) => {
                    tracing::debug!(chain = %self.cfg.name, block_number = number, attempt = tries,
                        error = %e, "recovery attempt failed");
                    // One more attempt on the open miss (or a new open miss, if none is open here).
                    let opened = self.watch.as_mut().and_then(|w| w.fetch_failed(number, &e));
                    self.publisher
                        .store_missed(opened.into_iter().collect())
                        .await?;
                    false
                }
                other => return Err(other),
            },
        };
        let exhausted = self
            .watch
            .as_mut()
            .and_then(|w| w.recovery_failed(number, tries, unserved, head_reached));
        self.publisher
            .save_missed(exhausted.into_iter().collect())
            .await?;
        Ok(())
    }

    /// No block after the tip has come for `max_block_delay`: the next one is overdue. One head
    /// poll says why (a failure's class, or providers answering without a new block).
    pub(super) async fn overdue(
        &mut self,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<(), StepError> {
        let Some(next) = self.canonical.next_number() else {
            return Ok(());
        };
        if self.watch.is_none() {
            return Ok(());
        }
        let pool = self.fetcher.pool().clone();
        let (reason, answered) = match unless_cancelled(cancel, pool.block_number()).await {
            Err(crate::fetch::FetchError::Pool(PoolError::Exhausted { error, .. })) => {
                (Reason::from_error(&error), false)
            }
            Err(crate::fetch::FetchError::Pool(PoolError::NoProvider { .. })) => {
                (Reason::NodeUnresponsive, false)
            }
            Ok(_) => (Reason::NodeUnresponsive, true),
            Err(e) => return Err(e.into()),
        };
        let record = self
            .watch
            .as_mut()
            .and_then(|w| w.overdue(next, reason, answered));
        self.publisher
            .store_missed(record.into_iter().collect())
            .await?;
        Ok(())
    }

    /// Blocks a provider skipped — in its `newHeads` sequence, or answering `null` for them twice
    /// although its own head was at or above them — are misses, attributed to it whichever provider
    /// is active now and whoever served them: recorded now if they were emitted already, else when
    /// they are; once each.
    pub(super) async fn note_skips(&mut self) -> Result<(), FollowError> {
        let skips = self.skips.take();
        let Some(watch) = self.watch.as_mut() else {
            return Ok(());
        };
        let mut records = Vec::new();
        for Skip {
            provider,
            first,
            last,
        } in skips
        {
            for n in first..=last {
                records.extend(watch.skipped(n, &provider));
            }
        }
        self.publisher.store_missed(records).await
    }

    /// No provider could serve block `number`: an open miss, stored at once.
    async fn fetch_failed(&mut self, number: u64, error: &PoolError) -> Result<(), StepError> {
        let record = self
            .watch
            .as_mut()
            .and_then(|w| w.fetch_failed(number, error));
        self.publisher
            .store_missed(record.into_iter().collect())
            .await?;
        Ok(())
    }
}
