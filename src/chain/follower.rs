//! The follower of one chain: turns head news into the canonical block stream.
//!
//! Guarantees:
//! - blocks are emitted in order, each one's `parent_hash` equal to the previous block's `hash`;
//! - a conflicting block is never emitted before the reorg that explains it: the follower walks the
//!   new branch back by parent hash to the common ancestor inside the window, emits a `reorg` line and
//!   then the new branch; a reorg deeper than the window is an `error` line and the chain stops
//!   advancing until an operator acts;
//! - lines are written before the cursor is committed, and the cursor and the window's hashes are
//!   committed in one transaction, so a crash can repeat (never lose) the last batch, and with a file
//!   output not even that: the file's uncommitted tail is adopted on start.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::AbortOnDropHandle};
use tracing::Instrument;

use alloy_primitives::B256;

use super::{
    canonical::{CanonicalChain, Link},
    progress::Progress,
};
use crate::{
    config::{ChainConfig, StartAt},
    heads::{Head, HeadTimes, Skip, Skips},
    model::{Block, BlockLine, BlockRef, ErrorLine, ReorgLine, StreamEvent},
    output::{self, BlockOutput},
    pool::{Answer, PoolError, ProviderPool},
    store::{ChainCommit, Store, StoreError},
};

/// Most blocks fetched and committed as one batch while catching up.
const MAX_BATCH: u64 = 256;

/// Something that wants to see the stream after each batch is committed (logs today; the
/// missed-block monitor and metrics later). Called on the follower's task: must not block.
pub trait StreamObserver: Send + Sync {
    /// `events` were written and committed, in this order.
    fn on_events(&self, events: &[StreamEvent]);
}

/// Logs every processed block at info, reorgs at warn and errors at error.
#[derive(Debug, Default)]
pub struct LogObserver;

impl StreamObserver for LogObserver {
    fn on_events(&self, events: &[StreamEvent]) {
        for e in events {
            match e {
                StreamEvent::Block(b) => tracing::info!(
                    chain = %b.chain, block_number = b.block_number, block_timestamp = b.timestamp,
                    transactions = b.transactions, provider = %b.provider, lag_ms = b.lag_ms,
                    "block processed"
                ),
                StreamEvent::Reorg(r) => tracing::warn!(
                    chain = %r.chain, depth = r.depth, common_ancestor = r.common_ancestor,
                    old_head = r.old_head.number, new_head = r.new_head.number, "reorg"
                ),
                StreamEvent::Error(x) => tracing::error!(
                    chain = %x.chain, kind = %x.kind, block_number = ?x.block_number, "{}", x.message
                ),
            }
        }
    }
}

/// Records the stream's metrics: blocks processed (per provider), the newest block's lag, reorgs.
#[derive(Debug)]
pub struct MetricsObserver {
    metrics: Arc<crate::telemetry::Metrics>,
}

impl MetricsObserver {
    /// An observer recording into `metrics`.
    pub fn new(metrics: Arc<crate::telemetry::Metrics>) -> Self {
        Self { metrics }
    }
}

impl StreamObserver for MetricsObserver {
    fn on_events(&self, events: &[StreamEvent]) {
        use crate::telemetry::metrics::{attr, chain_provider};
        use opentelemetry::KeyValue;
        let mut last_lag = None;
        for e in events {
            match e {
                StreamEvent::Block(b) => {
                    self.metrics
                        .blocks_processed
                        .add(1, &chain_provider(&b.chain, &b.provider));
                    last_lag = Some((b.chain.as_str(), b.lag_ms));
                }
                StreamEvent::Reorg(r) => {
                    self.metrics
                        .reorgs
                        .add(1, &[KeyValue::new(attr::CHAIN, r.chain.clone())]);
                }
                StreamEvent::Error(_) => {}
            }
        }
        if let Some((chain, lag_ms)) = last_lag {
            self.metrics.block_lag.record(
                lag_ms as f64 / 1000.0,
                &[KeyValue::new(attr::CHAIN, chain.to_owned())],
            );
        }
    }
}

/// Why a follower stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The block output could not be written.
    #[error("cannot write block output: {0}")]
    Output(#[from] std::io::Error),
    /// A blocking task died.
    #[error("internal task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What a step could not do this time (it will be tried again).
#[derive(Debug)]
enum StepError {
    Pool(PoolError),
    Fatal(FollowError),
    /// Shutdown was asked for while waiting on a provider; nothing half-done is left behind.
    Cancelled,
}

/// Runs a provider call unless shutdown comes first. Only calls are cut short: a batch that is being
/// written and committed always completes, so output and cursor stay in step.
async fn unless_cancelled<T>(
    cancel: &CancellationToken,
    call: impl std::future::Future<Output = Result<T, PoolError>>,
) -> Result<T, StepError> {
    tokio::select! {
        _ = cancel.cancelled() => Err(StepError::Cancelled),
        r = call => r.map_err(StepError::Pool),
    }
}

impl From<PoolError> for StepError {
    fn from(e: PoolError) -> Self {
        StepError::Pool(e)
    }
}

/// A fetched block and who served it, when.
#[derive(Clone, Debug)]
struct Fetched {
    block: Block,
    provider: String,
    received: SystemTime,
    /// When it was received, to order answers of calls made at once.
    at: Instant,
    /// The block's `process_block` span: open from its fetch until its line is published.
    span: tracing::Span,
    /// How its fetch went: duration, attempts, the first failed attempt.
    fetch: FetchInfo,
}

/// How a block's fetch went, for the missed-block monitor.
#[derive(Clone, Debug, Default)]
struct FetchInfo {
    took: Duration,
    attempts: u32,
    first_failure: Option<(String, crate::rpc::RpcError)>,
    /// How long the provider that served it took (without the agent's own rate-limit waits).
    served_in: Duration,
}

/// Adds a `missed_block` event to the block's `span` (whatever the log level), and logs the miss in
/// it, at warn when `console`, else at debug.
fn log_missed(span: &tracing::Span, r: &crate::model::MissedBlock, console: bool) {
    use opentelemetry::KeyValue;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    span.add_event(
        "missed_block",
        vec![
            KeyValue::new("block_number", r.block_number as i64),
            KeyValue::new("reason", r.reason.as_str()),
            KeyValue::new("severity", r.severity.as_str()),
            KeyValue::new("recovered", r.recovered),
        ],
    );
    span.in_scope(|| {
        macro_rules! log {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    chain = %r.chain, block_number = r.block_number, reason = r.reason.as_str(),
                    severity = r.severity.as_str(), recovered = r.recovered,
                    recovery_attempts = r.recovery_attempts,
                    recovered_from = r.recovered_from.as_deref(),
                    "missed block"
                )
            };
        }
        if console {
            log!(tracing::Level::WARN)
        } else {
            log!(tracing::Level::DEBUG)
        }
    });
}

/// How a block the stream waits on, that no provider could serve, is recovered (`[monitor]`).
#[derive(Clone, Copy, Debug)]
pub struct RecoveryPolicy {
    /// Attempts before the block is declared unrecovered (it is still asked for afterwards).
    pub attempts: u32,
    /// The wait between two attempts.
    pub delay: Duration,
}

/// The recovery of the block the stream waits on.
#[derive(Debug)]
struct Recovering {
    number: u64,
    /// When the next attempt is due.
    next_at: Instant,
    /// Attempts made.
    tries: u32,
    /// The last attempt (or the miss itself) found no provider with the block: it may not exist
    /// yet, and is asked for as soon as the head reaches it.
    unserved: bool,
    /// Attempts are used up: declared unrecovered, still asked for every `delay`.
    exhausted: bool,
}

/// A line to publish, with the span its observers run in (a block's `process_block` span).
type Emitted = (StreamEvent, Option<tracing::Span>);

/// A `process_block` span for block `number` of `chain` (its hash is recorded once known).
fn block_span(chain: &str, number: u64) -> tracing::Span {
    tracing::info_span!(
        "process_block",
        otel.name = "process_block",
        blockwatch.chain = %chain,
        blockwatch.block.number = number,
        blockwatch.block.hash = tracing::field::Empty,
    )
}

impl Fetched {
    fn new(block: Block, provider: &crate::rpc::Provider, span: tracing::Span) -> Self {
        span.record("blockwatch.block.hash", block.hash.to_string().as_str());
        Fetched {
            block,
            provider: provider.name.clone(),
            received: SystemTime::now(),
            at: Instant::now(),
            span,
            fetch: FetchInfo::default(),
        }
    }
}

/// Follows one chain.
pub struct ChainFollower {
    cfg: ChainConfig,
    pool: Arc<ProviderPool>,
    store: Arc<Store>,
    output: Arc<BlockOutput>,
    heads: watch::Receiver<Option<Head>>,
    observers: Vec<Arc<dyn StreamObserver>>,
    concurrency: usize,
    canonical: CanonicalChain,
    /// Where to start while the window is empty (`None`: at the first head seen).
    start_at: Option<u64>,
    /// Re-check the tip's hash on the next step (after a restart, or when a head contradicts it).
    verify_tip: bool,
    /// The tip, and the block that contradicted it, of a too-deep reorg already reported.
    deep_reorg_reported: Option<(BlockRef, BlockRef)>,
    /// The first block this chain's stream ever emitted (since the last `start = "latest"`).
    first_emitted: Option<u64>,
    /// The last block fetch failed: fetch one block at a time until one succeeds.
    fetch_failing: bool,
    /// The missed-block monitor, when there is one.
    monitor: Option<crate::monitor::ChainMonitor>,
    /// Told when missed-block records were stored (the log writer).
    missed_stored: Option<Arc<tokio::sync::Notify>>,
    /// Missed blocks are logged at warn (else at debug).
    missed_console: bool,
    /// How open misses are recovered (`None`: by the stream's own fetches, at every poll).
    recovery: Option<RecoveryPolicy>,
    /// The open miss being recovered.
    recovering: Option<Recovering>,
    /// When the newest of the blocks emitted was received.
    newest_fetch: Option<Instant>,
    /// When each chain head was first known: a block's lateness up to then is the providers', after
    /// it the agent's own backlog (lag).
    times: Arc<HeadTimes>,
    /// What `/status` shows of the stream's progress (catch-ups).
    progress: Option<Arc<Progress>>,
    /// Blocks providers skipped, from the heads stage.
    skips: Skips,
    /// The providers agree on block hashes their headers do not give (`block_hash_check =
    /// "header"` on a chain that hashes blocks its own way): not asked again before then.
    hash_scheme_until: Option<Instant>,
}

/// How long the follower waits before asking again when blocks cannot pass
/// `block_hash_check = "header"` on any provider (a configuration problem, reported once).
const HASH_SCHEME_RETRY: Duration = Duration::from_secs(5);

impl ChainFollower {
    /// A follower for `cfg`, fed by `heads`.
    pub fn new(
        cfg: ChainConfig,
        pool: Arc<ProviderPool>,
        store: Arc<Store>,
        output: Arc<BlockOutput>,
        heads: watch::Receiver<Option<Head>>,
        observers: Vec<Arc<dyn StreamObserver>>,
        concurrency: usize,
    ) -> Self {
        let canonical = CanonicalChain::new(cfg.reorg_window);
        Self {
            cfg,
            pool,
            store,
            output,
            heads,
            observers,
            concurrency: concurrency.max(1),
            canonical,
            start_at: None,
            verify_tip: false,
            deep_reorg_reported: None,
            first_emitted: None,
            fetch_failing: false,
            monitor: None,
            missed_stored: None,
            missed_console: true,
            recovery: None,
            recovering: None,
            newest_fetch: None,
            times: Arc::new(HeadTimes::default()),
            progress: None,
            skips: Skips::default(),
            hash_scheme_until: None,
        }
    }

    /// Tells lateness from lag with `times` (when each chain head was first known), and reports
    /// catch-ups to `progress`.
    pub fn with_progress(mut self, times: Arc<HeadTimes>, progress: Arc<Progress>) -> Self {
        self.times = times;
        self.progress = Some(progress);
        self
    }

    /// Takes the blocks providers skipped from `skips` (the heads stage's).
    pub fn with_skips(mut self, skips: Skips) -> Self {
        self.skips = skips;
        self
    }

    /// Watches the stream for missed blocks with `monitor`; `stored` is told when records were
    /// stored; `console`: missed blocks are logged at warn (else at debug); `recovery`: how a block
    /// no provider could serve is recovered (`None`: the stream asks for it at every poll).
    pub fn with_monitor(
        mut self,
        monitor: crate::monitor::ChainMonitor,
        stored: Option<Arc<tokio::sync::Notify>>,
        console: bool,
        recovery: Option<RecoveryPolicy>,
    ) -> Self {
        self.monitor = Some(monitor);
        self.missed_stored = stored;
        self.missed_console = console;
        self.recovery = recovery;
        self
    }

    /// Runs until `cancel` fires (returns `Ok`) or the state or output fails (returns the error).
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), FollowError> {
        self.restore().await?;
        let result = self.follow(&cancel).await;
        // The attempts made on a miss still open are kept for the next run.
        let open = self
            .monitor
            .as_mut()
            .and_then(|m| m.open_attempts_unsaved());
        if let Some(record) = open {
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.save_missed(&[record])).await??;
        }
        result
    }

    async fn follow(&mut self, cancel: &CancellationToken) -> Result<(), FollowError> {
        let poll = self.cfg.poll_interval();
        let mut last_progress = Instant::now();
        let mut stall_reported = false;
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            let head = *self.heads.borrow_and_update();
            if head.is_some() {
                if let (Some(m), Some(first)) = (self.monitor.as_mut(), self.times.first()) {
                    m.watching_since(first);
                }
            }
            let tip_before = self.canonical.tip();
            let blocked = self.hash_scheme_until.is_some_and(|t| Instant::now() < t);
            let stepped = if blocked {
                Ok(())
            } else {
                self.step(head, cancel).await
            };
            match stepped {
                Ok(()) => {}
                Err(StepError::Cancelled) => return Ok(()),
                Err(StepError::Fatal(e)) => return Err(e),
                Err(StepError::Pool(e)) if is_hash_scheme(&e) => {
                    // Reported once, plainly, by the pool; asking at every poll would change nothing.
                    tracing::debug!(chain = %self.cfg.name, error = %e, "blocks fail block_hash_check; will ask again");
                    self.hash_scheme_until = Some(Instant::now() + HASH_SCHEME_RETRY);
                }
                Err(StepError::Pool(e)) => {
                    tracing::warn!(chain = %self.cfg.name, error = %e, "cannot fetch blocks now; will retry");
                }
            }
            self.note_skips().await?;
            if self.canonical.tip() != tip_before {
                last_progress = Instant::now();
                stall_reported = false;
            } else if !stall_reported
                && last_progress.elapsed() >= self.cfg.max_block_delay.0
                && self.pool.hash_verdict().is_none()
            {
                stall_reported = true;
                tracing::warn!(chain = %self.cfg.name, since_secs = last_progress.elapsed().as_secs(),
                    last_block = ?self.canonical.tip().map(|t| t.number), "no new block for longer than max_block_delay");
                match self.overdue(cancel).await {
                    Ok(()) => {}
                    Err(StepError::Fatal(e)) => return Err(e),
                    Err(_) => return Ok(()),
                }
            }
            match self.recover_if_due(cancel).await {
                Ok(()) => {}
                Err(StepError::Fatal(e)) => return Err(e),
                Err(StepError::Cancelled) => return Ok(()),
                Err(StepError::Pool(e)) => {
                    tracing::warn!(chain = %self.cfg.name, error = %e, "cannot follow a recovered block now; will retry");
                }
            }
            if self.canonical.tip() != tip_before {
                last_progress = Instant::now();
                stall_reported = false;
            }
            let mut wait = self.recovering.as_ref().map_or(poll, |r| {
                poll.min(r.next_at.saturating_duration_since(Instant::now()))
            });
            if let Some(t) = self.hash_scheme_until {
                wait = wait.max(t.saturating_duration_since(Instant::now()));
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = self.heads.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Loads the cursor and window, adopts uncommitted lines of a file output, and decides where to
    /// start.
    async fn restore(&mut self) -> Result<(), FollowError> {
        let store = self.store.clone();
        let (name, id) = (self.cfg.name.clone(), self.cfg.chain_id);
        let state = tokio::task::spawn_blocking(move || store.load_chain(&name, id)).await??;
        let mut cursor = state.cursor;
        self.first_emitted = state.first_emitted;
        self.canonical = CanonicalChain::restore(self.cfg.reorg_window, state.recent);
        if cursor.is_some() && self.canonical.tip() != cursor {
            // The window must end at the cursor; anything else is a damaged store.
            tracing::warn!(chain = %self.cfg.name, "stored window does not end at the cursor; restarting the window at the cursor");
            self.canonical =
                CanonicalChain::restore(self.cfg.reorg_window, cursor.into_iter().collect());
        }
        if self.cfg.start == StartAt::Latest {
            cursor = None;
            self.first_emitted = None;
            self.canonical = CanonicalChain::new(self.cfg.reorg_window);
        } else if let Some(path) = self.output.file_path() {
            let path = path.to_owned();
            let name = self.cfg.name.clone();
            let tail =
                tokio::task::spawn_blocking(move || output::uncommitted_tail(&path, &name, cursor))
                    .await??;
            match tail {
                Some(events) if !events.is_empty() => {
                    cursor = self.adopt(events).await?.or(cursor);
                }
                Some(_) => {}
                None => tracing::warn!(chain = %self.cfg.name, cursor = ?cursor.map(|c| c.number),
                    "the block output file does not contain the cursor's block; not reconciling it"),
            }
        }
        self.start_at = match (cursor, self.cfg.start) {
            (Some(c), _) => {
                self.verify_tip = true;
                tracing::info!(chain = %self.cfg.name, cursor = c.number, "resuming after the cursor");
                Some(c.number + 1)
            }
            (None, StartAt::Block(n)) => Some(n),
            (None, _) => None,
        };
        // A miss still open when the last run stopped is the same miss now.
        if let (Some(next), Some(_)) = (self.next_number(), self.monitor.as_ref()) {
            let store = self.store.clone();
            let name = self.cfg.name.clone();
            let open = tokio::task::spawn_blocking(move || store.open_miss(&name, next)).await??;
            if let (Some(record), Some(m)) = (open, self.monitor.as_mut()) {
                tracing::info!(chain = %self.cfg.name, block_number = next,
                    "the block the stream waits for was missed before the restart; its record stays open");
                m.reopen(record);
            }
        }
        Ok(())
    }

    /// Replays lines that were written but not committed before the last stop; returns the new
    /// cursor.
    async fn adopt(&mut self, events: Vec<StreamEvent>) -> Result<Option<BlockRef>, FollowError> {
        let mut commit = ChainCommit::default();
        let mut adopted = 0usize;
        for e in &events {
            match e {
                StreamEvent::Reorg(r) => {
                    self.canonical.rollback_to(r.common_ancestor);
                    commit.rollback_above = Some(
                        commit
                            .rollback_above
                            .map_or(r.common_ancestor, |n| n.min(r.common_ancestor)),
                    );
                    commit.added.retain(|b| b.number <= r.common_ancestor);
                }
                StreamEvent::Block(b) => {
                    let block = Block {
                        number: b.block_number,
                        hash: b.hash,
                        parent_hash: b.parent_hash,
                        timestamp: b.timestamp,
                        transactions: b.transactions,
                    };
                    if !self.push(&block, &mut commit) {
                        tracing::warn!(chain = %self.cfg.name, block = b.block_number,
                            "block output line does not extend the stored chain; stopping reconciliation there");
                        break;
                    }
                    adopted += 1;
                }
                StreamEvent::Error(_) => {}
            }
        }
        if adopted == 0 && commit.rollback_above.is_none() {
            return Ok(None);
        }
        tracing::info!(chain = %self.cfg.name, blocks = adopted,
            "adopted block lines that were written but not committed before the last stop");
        self.commit(commit).await?;
        Ok(self.canonical.tip())
    }

    /// Runs a lookup of block `number` inside a new `process_block` span, unless shutdown comes
    /// first; returns the answer and the span (which stays open as long as it is held).
    async fn traced(
        &self,
        number: u64,
        cancel: &CancellationToken,
        lookup: impl std::future::Future<Output = Result<Answer<Option<Block>>, PoolError>>,
    ) -> Result<(Answer<Option<Block>>, tracing::Span), StepError> {
        let span = block_span(&self.cfg.name, number);
        let a = unless_cancelled(cancel, lookup.instrument(span.clone())).await?;
        Ok((a, span))
    }

    fn next_number(&self) -> Option<u64> {
        self.canonical
            .tip()
            .map(|t| t.number.saturating_add(1))
            .or(self.start_at)
    }

    /// Does everything the current head allows: checks the tip if asked, then fetches, links and
    /// emits blocks up to the head.
    async fn step(
        &mut self,
        head: Option<Head>,
        cancel: &CancellationToken,
    ) -> Result<(), StepError> {
        let Some(head) = head else { return Ok(()) };
        if let (Some(hash), Some(known)) = (head.hash, self.canonical.hash_at(head.number)) {
            if hash != known {
                self.verify_tip = true;
            }
        }
        if self.verify_tip {
            if let Some(tip) = self.canonical.tip() {
                let lookup = self.pool.block_by_number(tip.number);
                let (a, span) = self.traced(tip.number, cancel, lookup).await?;
                if let Some(block) = a.value {
                    if block.hash != tip.hash {
                        let fetched = Fetched::new(block, &a.provider, span);
                        if !self.confirmed(Some(&fetched), cancel).await?
                            || !self.resolve_conflict(fetched, cancel).await?
                        {
                            return Ok(());
                        }
                    }
                }
            }
            self.verify_tip = false;
        }
        if self.start_at.is_none() && self.canonical.tip().is_none() {
            // Start at the head only once a provider serves it: a bogus head must not become the
            // start of the stream.
            let lookup = self.pool.block_by_number(head.number);
            let (a, _span) = self.traced(head.number, cancel, lookup).await?;
            if a.value.is_none() {
                return Ok(());
            }
            self.start_at = Some(head.number);
        }
        // The backlog being fetched while what came before it is verified and written.
        let mut feed: Option<Feed> = None;
        while let Some(next) = self.next_number() {
            if next > head.number {
                break;
            }
            if self.recovering.as_ref().is_some_and(|r| r.number == next) {
                // The block is being recovered: only recovery attempts ask for it.
                break;
            }
            // While a reorg deeper than the window blocks the chain, or the last fetch failed, look
            // at one block per step only: enough to notice recovery, without sending a batch of
            // concurrent requests to providers that are failing.
            let careful = self.deep_reorg_reported.is_some() || self.fetch_failing;
            let catching_up = !careful && head.number - next >= 2;
            if head.number - next >= 2 {
                if let Some(p) = &self.progress {
                    p.behind(next, head.number);
                }
            }
            let fetch = if catching_up {
                // A feed that does not start here (a reorg moved the stream) is dropped: cancelled.
                let feed = match feed.take() {
                    Some(f) if f.next == next => feed.insert(f),
                    _ => feed.insert(Feed::start(
                        self.pool.clone(),
                        self.cfg.name.clone(),
                        self.concurrency,
                        next,
                        head.number,
                    )),
                };
                feed.take(MAX_BATCH, cancel).await
            } else {
                let end = if careful { next } else { head.number };
                let (pool, chain) = (&self.pool, self.cfg.name.as_str());
                fetch_range(pool, chain, self.concurrency, next, end, cancel).await
            };
            let Fetch {
                mut blocks,
                mut error,
                mut unserved,
            } = fetch;
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
                if self.newest_fetch.is_some_and(|t| f.at < t) {
                    // Calls made at once finish out of order: a block received before the one it
                    // should extend may predate a reorg that block already reflects. It is no
                    // evidence of a reorg; asked again, the answer is.
                    continue;
                }
                if self.resolve_conflict(f, cancel).await? {
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
                if let Some(m) = self.monitor.as_mut() {
                    m.not_served(stopped_at);
                }
                break;
            }
        }
        if self.next_number().is_some_and(|n| n > head.number) {
            if let Some(p) = &self.progress {
                p.caught_up();
            }
        }
        Ok(())
    }

    /// Whether `f` may be emitted as far as its hash goes: always with `block_hash_check =
    /// "header"` (its hash was recomputed from its header); with `"consensus"`, once a second
    /// provider serves the same hash at its height (the blocks fetched before it in the same run
    /// are bound to it by their parent links).
    async fn confirmed(
        &self,
        f: Option<&Fetched>,
        cancel: &CancellationToken,
    ) -> Result<bool, StepError> {
        let Some(f) = f else { return Ok(true) };
        if self.pool.hash_check() != crate::config::BlockHashCheck::Consensus {
            return Ok(true);
        }
        let Some(served_by) = self
            .pool
            .providers()
            .iter()
            .find(|p| p.name == f.provider)
            .cloned()
        else {
            return Ok(true);
        };
        let confirmation = unless_cancelled(
            cancel,
            self.pool
                .confirm(f.block.number, f.block.hash, &served_by)
                .instrument(f.span.clone()),
        )
        .await?;
        match confirmation {
            crate::pool::Confirmation::Confirmed => Ok(true),
            crate::pool::Confirmation::Unconfirmed => Ok(false),
            crate::pool::Confirmation::Disagreed { provider, hash } => {
                tracing::warn!(chain = %self.cfg.name, block_number = f.block.number,
                    served_by = %f.provider, hash = %f.block.hash, other = %provider, other_hash = %hash,
                    "providers serve different hashes at this height; waiting for them to agree");
                Ok(false)
            }
        }
    }

    /// Emits and commits `blocks` in order as long as they extend the window; returns the first
    /// one that contradicts it (not emitted).
    async fn emit_linked(&mut self, blocks: Vec<Fetched>) -> Result<Option<Fetched>, StepError> {
        let mut events = Vec::new();
        let mut commit = ChainCommit::default();
        let mut conflict = None;
        for f in blocks {
            match self.canonical.link(&f.block) {
                Link::First | Link::Extends => {
                    self.push(&f.block, &mut commit);
                    self.newest_fetch = self.newest_fetch.max(Some(f.at));
                    self.watch(&f, None, &mut commit);
                    events.push(self.emitted(&f));
                }
                _ => {
                    conflict = Some(f);
                    break;
                }
            }
        }
        self.publish(events, Some(commit)).await?;
        Ok(conflict)
    }

    /// Makes a recovery attempt on the open miss the stream waits on, when one is due: `delay`
    /// after the last one, or at once when nobody had the block and the head has reached it.
    async fn recover_if_due(&mut self, cancel: &CancellationToken) -> Result<(), StepError> {
        let next = self.next_number();
        let Some(r) = self.recovering.as_mut() else {
            return Ok(());
        };
        if Some(r.number) != next {
            // The stream moved on (the block came in a reorg's branch) or back (a reorg).
            self.recovering = None;
            return Ok(());
        }
        let head_reached = self.heads.borrow().is_some_and(|h| h.number >= r.number);
        // A block nobody had, while the chain head is below it, may not exist yet: it is asked for
        // when the head reaches it (at once, then `delay` apart), and no attempt is counted before.
        if r.unserved && !head_reached {
            return Ok(());
        }
        if Instant::now() < r.next_at && !r.unserved {
            return Ok(());
        }
        let Some(policy) = self.recovery else {
            return Ok(());
        };
        r.tries += 1;
        let (number, tries) = (r.number, r.tries);
        let started = Instant::now();
        let lookup = self.pool.block_by_number(number);
        let found = match self.traced(number, cancel, lookup).await {
            Ok((a, span)) => match a.value {
                Some(block) => {
                    let mut f = Fetched::new(block, &a.provider, span);
                    f.fetch = FetchInfo {
                        took: started.elapsed(),
                        attempts: a.attempts,
                        first_failure: a.first_failure,
                        served_in: a.served_in,
                    };
                    if self.confirmed(Some(&f), cancel).await? {
                        Ok(f)
                    } else {
                        Err(true)
                    }
                }
                None => {
                    if let Some(m) = self.monitor.as_mut() {
                        m.not_served(number);
                    }
                    Err(true)
                }
            },
            Err(StepError::Pool(e)) => {
                tracing::debug!(chain = %self.cfg.name, block_number = number, attempt = tries,
                    error = %e, "recovery attempt failed");
                // One more attempt on the open miss (or a new open miss, if none is open at this block).
                let opened = self
                    .monitor
                    .as_mut()
                    .and_then(|m| m.fetch_failed(number, &e));
                if let Some(record) = opened {
                    self.store_open_miss(record).await?;
                }
                Err(false)
            }
            Err(e) => return Err(e),
        };
        let unserved = match found {
            Err(unserved) => unserved,
            Ok(f) => {
                tracing::info!(chain = %self.cfg.name, block_number = number, attempt = tries,
                provider = %f.provider, "missed block recovered");
                self.recovering = None;
                self.fetch_failing = false;
                if let Some(conflict) = self.emit_linked(vec![f]).await? {
                    // The chain was reorganised while the block was missing.
                    self.resolve_conflict(conflict, cancel).await?;
                }
                return Ok(());
            }
        };
        let Some(r) = self.recovering.as_mut() else {
            return Ok(());
        };
        r.next_at = Instant::now() + policy.delay;
        // Not served although the head had reached it: asked again `delay` apart.
        r.unserved = unserved && !head_reached;
        if tries < policy.attempts || r.exhausted {
            return Ok(());
        }
        r.exhausted = true;
        tracing::error!(chain = %self.cfg.name, block_number = number, attempts = tries,
            retry_delay_ms = policy.delay.as_millis() as u64,
            "missed block not recovered: no provider serves it; the stream waits for it and asks again every retry_delay");
        let Some(record) = self
            .monitor
            .as_mut()
            .and_then(|m| m.retries_exhausted(number))
        else {
            return Ok(());
        };
        self.store_missed(record).await
    }

    /// Starts recovering the open miss at `number` (when recovery is on and it is not under way):
    /// `unserved`: it opened because no provider had the block, not because they failed.
    fn start_recovery(&mut self, number: u64, unserved: bool) {
        let Some(policy) = self.recovery else { return };
        if self.recovering.as_ref().is_some_and(|r| r.number == number) {
            return;
        }
        self.recovering = Some(Recovering {
            number,
            next_at: Instant::now() + policy.delay,
            tries: 0,
            unserved,
            exhausted: false,
        });
    }

    /// `first` contradicts the window: walk its branch back by parent hash to the common ancestor,
    /// then emit the reorg and the new branch (returns true), or report a reorg deeper than the
    /// window, or find the new branch not served yet (returns false: try again later).
    async fn resolve_conflict(
        &mut self,
        first: Fetched,
        cancel: &CancellationToken,
    ) -> Result<bool, StepError> {
        let Some(old_tip) = self.canonical.tip() else {
            return Ok(false);
        };
        if self.deep_reorg_reported == Some((old_tip, first.block.as_ref())) {
            // The same contradiction as already reported: nothing new to walk.
            return Ok(false);
        }
        let oldest = self.canonical.oldest().map_or(old_tip.number, |o| o.number);
        // When the window still holds the very first block the stream emitted, a branch that leaves
        // it below that block replaces everything ever emitted: the block before it was never
        // emitted, so it serves as the common ancestor. Otherwise leaving the window is a deep reorg.
        let holds_first_emitted = self.first_emitted == Some(oldest);
        let mut branch = vec![first];
        let ancestor = loop {
            let cur = &branch[branch.len() - 1].block;
            let parent_number = match cur.number.checked_sub(1) {
                Some(n) => n,
                None => {
                    self.report_deep_reorg(old_tip, &branch[0].block).await?;
                    return Ok(false);
                }
            };
            match self.canonical.hash_at(parent_number) {
                Some(h) if h == cur.parent_hash => break parent_number,
                Some(_) => {}
                None if holds_first_emitted && parent_number < oldest => break parent_number,
                None => {
                    self.report_deep_reorg(old_tip, &branch[0].block).await?;
                    return Ok(false);
                }
            }
            let lookup = self.pool.block_by_hash(cur.parent_hash);
            let (a, span) = self.traced(parent_number, cancel, lookup).await?;
            let Some(parent) = a.value else {
                tracing::warn!(chain = %self.cfg.name, number = parent_number,
                    "no provider serves the new branch's parent yet; will retry");
                return Ok(false);
            };
            if parent.number != parent_number {
                return Err(StepError::Pool(PoolError::Exhausted {
                    chain: self.cfg.name.clone(),
                    method: "eth_getBlockByHash".into(),
                    attempts: 1,
                    provider: a.provider.name.clone(),
                    error: crate::rpc::RpcError::InvalidBlock(format!(
                        "parent of block {} has number {}",
                        cur.number, parent.number
                    )),
                }));
            }
            branch.push(Fetched::new(parent, &a.provider, span));
        };
        let new_head = branch[0].block.as_ref();
        // The reorg is an event of the span of the block that revealed it.
        let mut events = vec![(
            StreamEvent::Reorg(ReorgLine {
                chain: self.cfg.name.clone(),
                depth: old_tip.number - ancestor,
                common_ancestor: ancestor,
                old_head: old_tip.into(),
                new_head: new_head.into(),
            }),
            Some(branch[0].span.clone()),
        )];
        // The emitted blocks the new branch replaces: their heights are `ChainReorg` misses.
        let replaced: std::collections::HashMap<u64, B256> = (ancestor + 1..=old_tip.number)
            .filter_map(|n| self.canonical.hash_at(n).map(|h| (n, h)))
            .collect();
        self.canonical.rollback_to(ancestor);
        let mut commit = ChainCommit {
            rollback_above: Some(ancestor),
            ..Default::default()
        };
        if let Some(m) = self.monitor.as_mut() {
            m.reorg();
        }
        for f in branch.iter().rev() {
            if !self.push(&f.block, &mut commit) {
                break;
            }
            self.newest_fetch = self.newest_fetch.max(Some(f.at));
            self.watch(f, replaced.get(&f.block.number).copied(), &mut commit);
            events.push(self.emitted(f));
        }
        self.deep_reorg_reported = None;
        self.publish(events, Some(commit)).await?;
        Ok(true)
    }

    /// Appends a block to the window and records it in `commit`; false if it does not link.
    fn push(&mut self, block: &Block, commit: &mut ChainCommit) -> bool {
        let first = self.canonical.is_empty();
        if !self.canonical.push(block) {
            return false;
        }
        if first {
            // A fresh window: whatever is stored from an earlier stream is forgotten.
            self.first_emitted = Some(block.number);
            commit.first_emitted = Some(block.number);
            let below = block.number.saturating_sub(1);
            commit.rollback_above = Some(commit.rollback_above.map_or(below, |n| n.min(below)));
        }
        commit.added.push(block.as_ref());
        true
    }

    async fn report_deep_reorg(
        &mut self,
        old_tip: BlockRef,
        seen: &Block,
    ) -> Result<(), StepError> {
        if self
            .deep_reorg_reported
            .is_some_and(|(tip, _)| tip == old_tip)
        {
            return Ok(());
        }
        self.deep_reorg_reported = Some((old_tip, seen.as_ref()));
        let oldest = self
            .canonical
            .oldest()
            .map(|o| o.number)
            .unwrap_or(old_tip.number);
        let line = StreamEvent::Error(ErrorLine {
            chain: self.cfg.name.clone(),
            kind: "deep_reorg".into(),
            message: format!(
                "block {} ({}) does not connect to the canonical chain within the reorg window \
                 (blocks {oldest}..={}); not following it. To accept the new chain, restart with start = \"latest\"; \
                 to follow reorgs this deep in future, raise reorg_window",
                seen.number, seen.hash, old_tip.number
            ),
            block_number: Some(seen.number),
        });
        self.publish(vec![(line, None)], None).await
    }

    /// Tells the monitor that `f` is being emitted; a missed-block record goes into `commit` (so it
    /// is stored with the cursor) and is a `missed_block` event of the block's span.
    /// `replaced`: the hash of the block emitted at this height before a reorg replaced it.
    fn watch(&mut self, f: &Fetched, replaced: Option<B256>, commit: &mut ChainCommit) {
        let Some(monitor) = self.monitor.as_mut() else {
            return;
        };
        let record = monitor.emitted(&crate::monitor::Emitted {
            number: f.block.number,
            timestamp: f.block.timestamp,
            provider: &f.provider,
            received: f.received,
            fetch_took: f.fetch.took,
            attempts: f.fetch.attempts,
            first_failure: f.fetch.first_failure.as_ref(),
            known: self.times.known_at(f.block.number).unwrap_or(f.received),
            served_in: f.fetch.served_in,
            replaced,
        });
        if let Some(r) = record {
            log_missed(&f.span, &r, self.missed_console);
            commit.missed.push(r);
        }
    }

    /// No block after the tip has come for `max_block_delay`: the next one is overdue. One head
    /// poll says why (a failure's class, or providers answering without a new block).
    async fn overdue(&mut self, cancel: &CancellationToken) -> Result<(), StepError> {
        let Some(next) = self.next_number() else {
            return Ok(());
        };
        if self.monitor.is_none() {
            return Ok(());
        }
        let (reason, answered) = match unless_cancelled(cancel, self.pool.block_number()).await {
            Err(StepError::Pool(PoolError::Exhausted { error, .. })) => {
                (crate::model::Reason::from_error(&error), false)
            }
            Err(StepError::Pool(PoolError::NoProvider { .. })) => {
                (crate::model::Reason::NodeUnresponsive, false)
            }
            Ok(_) => (crate::model::Reason::NodeUnresponsive, true),
            Err(e) => return Err(e),
        };
        let Some(monitor) = self.monitor.as_mut() else {
            return Ok(());
        };
        let record = monitor.overdue(next, reason);
        self.start_recovery(next, answered);
        match record {
            Some(record) => self.store_open_miss(record).await,
            None => Ok(()),
        }
    }

    /// Blocks a provider skipped — in its `newHeads` sequence, or answering `null` for them twice
    /// although its own head was at or above them — are misses, attributed to it whichever provider
    /// is active now and whoever served them: recorded now if they were emitted already, else when
    /// they are; once each.
    async fn note_skips(&mut self) -> Result<(), FollowError> {
        let gaps = self.skips.take();
        let Some(monitor) = self.monitor.as_mut() else {
            return Ok(());
        };
        let mut records = Vec::new();
        for Skip {
            provider,
            first,
            last,
        } in gaps
        {
            for n in first..=last {
                if let Some(r) = monitor.skipped(n, &provider) {
                    records.push(r);
                }
            }
        }
        for r in records {
            match self.store_open_miss(r).await {
                Ok(()) => {}
                Err(StepError::Fatal(e)) => return Err(e),
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// No provider could serve block `number`: an open miss, stored at once.
    async fn fetch_failed(&mut self, number: u64, error: &PoolError) -> Result<(), StepError> {
        if is_hash_scheme(error) {
            // A configuration problem, reported once by the pool: not a provider's miss.
            return Ok(());
        }
        let Some(monitor) = self.monitor.as_mut() else {
            return Ok(());
        };
        let record = monitor.fetch_failed(number, error);
        self.start_recovery(number, false);
        match record {
            Some(record) => self.store_open_miss(record).await,
            None => Ok(()),
        }
    }

    /// Logs and stores a miss found outside a batch's commit (an open miss, a skip found late).
    async fn store_open_miss(&self, record: crate::model::MissedBlock) -> Result<(), StepError> {
        let span = block_span(&self.cfg.name, record.block_number);
        log_missed(&span, &record, self.missed_console);
        self.store_missed(record).await
    }

    /// Stores a record (a new one, or a new state of one) for the log writer.
    async fn store_missed(&self, record: crate::model::MissedBlock) -> Result<(), StepError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.save_missed(&[record]))
            .await
            .map_err(|e| StepError::Fatal(e.into()))?
            .map_err(|e| StepError::Fatal(e.into()))?;
        if let Some(n) = &self.missed_stored {
            n.notify_one();
        }
        Ok(())
    }

    fn emitted(&self, f: &Fetched) -> Emitted {
        (self.block_line(f), Some(f.span.clone()))
    }

    fn block_line(&self, f: &Fetched) -> StreamEvent {
        let received_ms = f
            .received
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as i64;
        StreamEvent::Block(BlockLine {
            chain: self.cfg.name.clone(),
            block_number: f.block.number,
            hash: f.block.hash,
            parent_hash: f.block.parent_hash,
            timestamp: f.block.timestamp,
            transactions: f.block.transactions,
            provider: f.provider.clone(),
            received_at: humantime::format_rfc3339_millis(f.received).to_string(),
            lag_ms: received_ms.saturating_sub(
                i64::try_from(f.block.timestamp)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1000),
            ),
        })
    }

    /// Writes `events`, then commits the window and cursor (when `commit` is given: lines that
    /// change no state, like error reports, have none), then tells the observers.
    async fn publish(
        &mut self,
        events: Vec<Emitted>,
        commit: Option<ChainCommit>,
    ) -> Result<(), StepError> {
        if events.is_empty() {
            return Ok(());
        }
        let fatal = |e: FollowError| StepError::Fatal(e);
        let (written, spans): (Vec<StreamEvent>, Vec<_>) = events.into_iter().unzip();
        let missed = commit.as_ref().is_some_and(|c| !c.missed.is_empty());
        let commit = commit.map(|c| self.committed(c));
        let (output, store) = (self.output.clone(), self.store.clone());
        // Written, then committed, on one blocking thread: one hand-off per batch.
        let written = tokio::task::spawn_blocking(move || -> Result<_, FollowError> {
            output.write(&written)?;
            if let Some((name, id, commit)) = commit {
                store.commit(&name, id, &commit)?;
            }
            Ok(written)
        })
        .await
        .map_err(|e| fatal(e.into()))?
        .map_err(fatal)?;
        if missed {
            if let Some(n) = &self.missed_stored {
                n.notify_one();
            }
        }
        if let Some(tip) = self.canonical.tip() {
            self.times.forget_below(tip.number);
        }
        // Observers see each line inside its block's span, so their logs and events join its trace.
        for (event, span) in written.iter().zip(&spans) {
            let tell = || {
                for o in &self.observers {
                    o.on_events(std::slice::from_ref(event));
                }
            };
            match span {
                Some(span) => span.in_scope(tell),
                None => tell(),
            }
        }
        Ok(())
    }

    async fn commit(&self, commit: ChainCommit) -> Result<(), FollowError> {
        let (name, id, commit) = self.committed(commit);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.commit(&name, id, &commit)).await??;
        Ok(())
    }

    /// `commit` with the window's tip as the cursor and its oldest block as the pruning point, and
    /// the chain it is for.
    fn committed(&self, mut commit: ChainCommit) -> (String, u64, ChainCommit) {
        commit.cursor = self.canonical.tip();
        commit.keep_from = self.canonical.oldest().map(|o| o.number).unwrap_or(0);
        (self.cfg.name.clone(), self.cfg.chain_id, commit)
    }
}

/// Whether a pool call failed because blocks cannot pass `block_hash_check = "header"` on any
/// provider while they agree (the chain hashes blocks its own way).
fn is_hash_scheme(e: &PoolError) -> bool {
    matches!(
        e,
        PoolError::Exhausted {
            error: crate::rpc::RpcError::HashScheme(_),
            ..
        }
    )
}

/// Blocks fetched in order from the first one asked for.
#[derive(Debug, Default)]
struct Fetch {
    blocks: Vec<Fetched>,
    /// Why fetching stopped before the end of the range, if it failed.
    error: Option<StepError>,
    /// The providers did not have a block asked for (the first after `blocks`).
    unserved: bool,
}

impl Fetch {
    /// Appends a chunk; false when the chunk ends the fetch (an error, or blocks not served yet).
    fn add(&mut self, chunk: Chunk) -> bool {
        let more = !chunk.ends();
        match chunk.result {
            Ok(blocks) => {
                self.unserved = !more;
                self.blocks.extend(blocks);
            }
            Err(e) => self.error = Some(StepError::Pool(e)),
        }
        more
    }
}

/// The blocks one call returned for `wanted` consecutive numbers (fewer: the providers do not have
/// the rest yet), or its error.
struct Chunk {
    wanted: u64,
    result: Result<Vec<Fetched>, PoolError>,
}

impl Chunk {
    /// Nothing after this chunk can be used.
    fn ends(&self) -> bool {
        self.result
            .as_ref()
            .map_or(true, |b| (b.len() as u64) < self.wanted)
    }
}

/// The calls that fetch `from..=to` (JSON-RPC batches of the smallest batch any provider takes),
/// `concurrency` at once, their chunks in order.
fn calls<'a>(
    pool: &'a ProviderPool,
    chain: &'a str,
    concurrency: usize,
    from: u64,
    to: u64,
) -> impl futures::Stream<Item = Chunk> + 'a {
    let batch = pool.batch_size().max(1);
    let ranges = (from..=to)
        .step_by(batch as usize)
        .map(move |start| (start, to.min(start.saturating_add(batch - 1))));
    futures::stream::iter(ranges)
        .map(move |(start, end)| fetch_chunk(pool, chain, start, end))
        .buffered(concurrency)
}

/// The blocks of an answer, each with its span, as fetched `started` ago.
fn fetched<T>(
    a: &Answer<T>,
    started: Instant,
    blocks: impl IntoIterator<Item = (Block, tracing::Span)>,
) -> Vec<Fetched> {
    let info = FetchInfo {
        took: started.elapsed(),
        attempts: a.attempts,
        first_failure: a.first_failure.clone(),
        served_in: a.served_in,
    };
    blocks
        .into_iter()
        .map(|(block, span)| {
            let mut f = Fetched::new(block, &a.provider, span);
            f.fetch = info.clone();
            f
        })
        .collect()
}

/// Fetches `start..=end` with one call: `eth_getBlockByNumber` for one block, a JSON-RPC batch for
/// more (a `fetch_blocks` span, which each block's span follows from).
async fn fetch_chunk(pool: &ProviderPool, chain: &str, start: u64, end: u64) -> Chunk {
    let started = Instant::now();
    let wanted = end - start + 1;
    if start == end {
        let span = block_span(chain, start);
        let a = pool.block_by_number(start).instrument(span.clone()).await;
        let result = a.map(|mut a| {
            let block = a.value.take().map(|b| (b, span));
            fetched(&a, started, block)
        });
        return Chunk { wanted, result };
    }
    let fetch = tracing::info_span!(
        "fetch_blocks",
        otel.name = "fetch_blocks",
        blockwatch.chain = %chain,
        blockwatch.block.from = start,
        blockwatch.block.to = end,
    );
    let a = pool
        .blocks_by_number(start, end)
        .instrument(fetch.clone())
        .await;
    let result = a.map(|mut a| {
        let blocks = std::mem::take(&mut a.value).into_iter().map(|b| {
            let span = block_span(chain, b.number);
            span.follows_from(&fetch);
            (b, span)
        });
        fetched(&a, started, blocks)
    });
    Chunk { wanted, result }
}

/// Fetches `from..=to`, `concurrency` calls at once, in order, stopping at the first block no
/// provider has or the first error: one block per call when following the head, JSON-RPC batches
/// (of the smallest batch any provider takes) otherwise.
async fn fetch_range(
    pool: &ProviderPool,
    chain: &str,
    concurrency: usize,
    from: u64,
    to: u64,
    cancel: &CancellationToken,
) -> Fetch {
    let mut calls = std::pin::pin!(calls(pool, chain, concurrency, from, to));
    let mut fetch = Fetch::default();
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => {
                fetch.error = Some(StepError::Cancelled);
                return fetch;
            }
            n = calls.next() => n,
        };
        let more = next.is_some_and(|chunk| fetch.add(chunk));
        if !more {
            return fetch;
        }
    }
}

/// A backlog being fetched on a task of its own, `concurrency` calls at once, while the follower
/// verifies and writes what came before: requests stay in flight while blocks are emitted. Chunks
/// wait in a channel of `concurrency` places, so at most twice `concurrency` calls' blocks are held.
/// Dropping the feed cancels the fetch.
struct Feed {
    /// The first block not taken yet.
    next: u64,
    chunks: tokio::sync::mpsc::Receiver<Chunk>,
    _task: AbortOnDropHandle<()>,
}

impl Feed {
    fn start(
        pool: Arc<ProviderPool>,
        chain: String,
        concurrency: usize,
        from: u64,
        to: u64,
    ) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(concurrency.max(1));
        let task = async move {
            let mut calls = std::pin::pin!(calls(&pool, &chain, concurrency, from, to));
            while let Some(chunk) = calls.next().await {
                let ends = chunk.ends();
                if tx.send(chunk).await.is_err() || ends {
                    return;
                }
            }
        };
        Feed {
            next: from,
            chunks: rx,
            _task: AbortOnDropHandle::new(tokio::spawn(task.in_current_span())),
        }
    }

    /// The chunks fetched so far in order (waiting for one, then taking those ready, up to about
    /// `max` blocks). After a fetch that is unserved or failed, the feed has nothing more.
    async fn take(&mut self, max: u64, cancel: &CancellationToken) -> Fetch {
        let mut fetch = Fetch::default();
        let first = tokio::select! {
            _ = cancel.cancelled() => {
                fetch.error = Some(StepError::Cancelled);
                return fetch;
            }
            c = self.chunks.recv() => c,
        };
        let mut more = match first {
            Some(chunk) => fetch.add(chunk),
            // The feed has ended (after its last chunk was taken).
            None => false,
        };
        while more && (fetch.blocks.len() as u64) < max {
            match self.chunks.try_recv() {
                Ok(chunk) => more = fetch.add(chunk),
                Err(_) => break,
            }
        }
        self.next += fetch.blocks.len() as u64;
        fetch
    }
}
