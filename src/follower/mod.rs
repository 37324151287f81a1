//! The follower of one chain: a short loop that wires the stages a block passes through, in order —
//! the chain head from the heads stage, blocks from the fetch stage ([`crate::fetch`]), the
//! canonical stage's verdict ([`crate::canonical`]), the missed-block watch ([`crate::monitor`]),
//! then the commit point ([`publish`]): sink, state store, observers. No stage calls back into it.
//!
//! Guarantees (held by the stages it wires): blocks are emitted in order, each one's `parent_hash`
//! equal to the previous block's `hash`; a conflicting block is never emitted before the reorg that
//! explains it; lines are written before the cursor is committed, and the cursor and the window's
//! hashes are committed in one transaction, so a crash can repeat (never lose) the last batch.

pub mod progress;
pub mod publish;
mod step;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use progress::Progress;
pub use publish::{Publisher, Term};

use crate::{
    canonical::Canonical,
    config::{ChainConfig, StartAt},
    fetch::{is_hash_scheme, FetchError, Fetcher},
    heads::{Head, HeadTimes, Skips},
    model::StreamObserver,
    monitor::{ChainMonitor, MissWatch, RecoveryPolicy},
    output::BlockSink,
    pool::{PoolError, ProviderPool},
    store::{StateStore, StoreError},
};

/// Most blocks fetched and committed as one batch while catching up.
const MAX_BATCH: u64 = 256;

/// How long the follower waits before asking again when blocks cannot pass
/// `block_hash_check = "header"` on any provider (a configuration problem, reported once).
const HASH_SCHEME_RETRY: Duration = Duration::from_secs(5);

/// Why a follower stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The block output could not be written.
    #[error("cannot write block output: {0}")]
    Output(#[from] std::io::Error),
    /// The lease this agent leads the chain under may have run out (it could not be renewed in
    /// time): nothing more is emitted; another agent may lead the chain by now.
    #[error("the lease on this chain could not be renewed in time; stopped emitting")]
    LeaseExpired,
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

impl From<FetchError> for StepError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::Pool(e) => StepError::Pool(e),
            FetchError::Cancelled => StepError::Cancelled,
        }
    }
}

impl From<FollowError> for StepError {
    fn from(e: FollowError) -> Self {
        StepError::Fatal(e)
    }
}

/// Follows one chain.
pub struct ChainFollower {
    cfg: ChainConfig,
    heads: watch::Receiver<Option<Head>>,
    fetcher: Fetcher,
    canonical: Canonical,
    /// The missed-block watch, when there is one.
    watch: Option<MissWatch>,
    /// Blocks providers skipped, from the heads stage.
    skips: Skips,
    publisher: Publisher,
    /// The last block fetch failed: fetch one block at a time until one succeeds.
    fetch_failing: bool,
    /// When each chain head was first known: a block's lateness up to then is the providers', after
    /// it the agent's own backlog (lag).
    times: Arc<HeadTimes>,
    /// What `/status` shows of the stream's progress (catch-ups).
    progress: Option<Arc<Progress>>,
    /// The providers agree on block hashes their headers do not give (`block_hash_check =
    /// "header"` on a chain that hashes blocks its own way): not asked again before then.
    hash_scheme_until: Option<Instant>,
}

impl ChainFollower {
    /// A follower for `cfg`, fed by `heads`, writing to `output` and `store`, told to `observers`.
    pub fn new(
        cfg: ChainConfig,
        pool: Arc<ProviderPool>,
        store: Arc<dyn StateStore>,
        output: Arc<dyn BlockSink>,
        heads: watch::Receiver<Option<Head>>,
        observers: Vec<Arc<dyn StreamObserver>>,
        concurrency: usize,
    ) -> Self {
        Self {
            fetcher: Fetcher::new(pool, &cfg.name, concurrency),
            canonical: Canonical::new(&cfg),
            publisher: Publisher::new(&cfg.name, cfg.chain_id, output, store, observers),
            cfg,
            heads,
            watch: None,
            skips: Skips::default(),
            fetch_failing: false,
            times: Arc::new(HeadTimes::default()),
            progress: None,
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

    /// Leads the chain under `term` (cluster mode): every write carries its fence, and nothing is
    /// emitted once it may have run out.
    pub fn lead(mut self, term: Option<Term>) -> Self {
        self.publisher.lead(term);
        self
    }

    /// Takes the blocks providers skipped from `skips` (the heads stage's).
    pub fn with_skips(mut self, skips: Skips) -> Self {
        self.skips = skips;
        self
    }

    /// Watches the stream for missed blocks with `monitor`; `stored` is told when records were
    /// stored; `recovery`: how a block no provider could serve is recovered (`None`: the stream
    /// asks for it at every poll).
    pub fn with_monitor(
        mut self,
        monitor: ChainMonitor,
        stored: Option<Arc<tokio::sync::Notify>>,
        recovery: Option<RecoveryPolicy>,
    ) -> Self {
        self.watch = Some(MissWatch::new(monitor, &self.cfg.name, recovery));
        self.publisher.notify_missed(stored);
        self
    }

    /// Runs until `cancel` fires (returns `Ok`) or the state or output fails (returns the error).
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), FollowError> {
        self.restore().await?;
        let result = self.follow(&cancel).await;
        // The attempts made on a miss still open are kept for the next run.
        let open = self.watch.as_mut().and_then(|w| w.open_attempts_unsaved());
        self.publisher
            .save_missed(open.into_iter().collect())
            .await?;
        result
    }

    /// Loads the cursor and window, adopts uncommitted lines of the sink, and decides where to
    /// start.
    async fn restore(&mut self) -> Result<(), FollowError> {
        let state = self.publisher.load().await?;
        let mut cursor = self.canonical.restore(&self.cfg, state);
        if self.cfg.start != StartAt::Latest {
            if let Some(tail) = self.publisher.uncommitted(cursor).await? {
                if let Some(commit) = self.canonical.adopt(&tail) {
                    self.publisher.commit(commit).await?;
                    cursor = self.canonical.tip().or(cursor);
                }
            }
        }
        self.canonical.start(cursor, self.cfg.start);
        // A miss still open when the last run stopped is the same miss now.
        if let (Some(next), Some(_)) = (self.canonical.next_number(), self.watch.as_ref()) {
            let open = self.publisher.open_miss(next).await?;
            if let (Some(record), Some(w)) = (open, self.watch.as_mut()) {
                tracing::info!(chain = %self.cfg.name, block_number = next,
                    "the block the stream waits for was missed before the restart; its record stays open");
                w.reopen(record);
            }
        }
        Ok(())
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
            if let (Some(_), Some(w), Some(first)) = (head, self.watch.as_mut(), self.times.first())
            {
                w.head_known(first);
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
                && self.fetcher.pool().hash_verdict().is_none()
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
            let mut wait = self.watch.as_ref().map_or(poll, |w| w.wait(poll));
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
}
