//! The agent's tasks, supervised and stopped in stages.
//!
//! Every long-running task is spawned with its [`TaskKind`]. A task that ends before it is asked to
//! — cleanly, with an error, or by a panic — is reported and stops the agent (exit 1); the one
//! exception is a `newHeads` subscription that gives up for good (its endpoint serves another
//! chain), since polling carries on without it.
//!
//! A stop runs in stages, each against its own deadline ([`Stage::deadline`]), together within
//! [`super::SHUTDOWN_DEADLINE`]: producers (head polls and subscriptions, probes) stop first; then the
//! followers finish the batch they are writing and commit it; then the caller syncs the block sink;
//! then the missed-block log, alerts and the HTTP API drain. Telemetry is flushed last, by the
//! caller of the agent. A stage whose tasks miss their deadline is aborted, and the stop goes on.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// When a task stops, in shutdown order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// What produces work: head polls and subscriptions, probes.
    Producers,
    /// The followers: they finish and commit their batch.
    Followers,
    /// What drains what the followers left: the missed-block log, alerts, the HTTP API.
    Drain,
}

impl Stage {
    /// Every stage, in shutdown order.
    pub const ALL: [Stage; 3] = [Stage::Producers, Stage::Followers, Stage::Drain];

    /// How long the stage's tasks get to stop once asked.
    pub fn deadline(self) -> Duration {
        match self {
            Stage::Producers => Duration::from_millis(500),
            Stage::Followers => Duration::from_millis(1600),
            Stage::Drain => Duration::from_millis(500),
        }
    }
}

/// What a task is, for reports and shutdown order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskKind {
    /// A provider's head polls.
    HeadPoll {
        /// The chain.
        chain: String,
        /// The provider.
        provider: String,
    },
    /// A provider's `newHeads` subscription.
    HeadSubscription {
        /// The chain.
        chain: String,
        /// The provider.
        provider: String,
    },
    /// A chain's pool monitor: health evaluation, probes of idle providers, head checks.
    PoolMonitor {
        /// The chain.
        chain: String,
    },
    /// A chain's follower.
    Follower {
        /// The chain.
        chain: String,
    },
    /// The missed-block log writer.
    MissedBlockLog,
    /// The alert rules.
    Alerts,
    /// The HTTP API.
    Http,
    /// Cluster mode's lease manager.
    LeaseManager,
}

impl TaskKind {
    /// The stage it stops in.
    pub fn stage(&self) -> Stage {
        match self {
            TaskKind::HeadPoll { .. }
            | TaskKind::HeadSubscription { .. }
            | TaskKind::PoolMonitor { .. } => Stage::Producers,
            TaskKind::Follower { .. } => Stage::Followers,
            TaskKind::MissedBlockLog
            | TaskKind::Alerts
            | TaskKind::Http
            | TaskKind::LeaseManager => Stage::Drain,
        }
    }

    /// Whether it may end cleanly before it is asked to.
    fn may_end(&self) -> bool {
        matches!(self, TaskKind::HeadSubscription { .. })
    }

    /// The chain it serves, if one.
    pub fn chain(&self) -> Option<&str> {
        match self {
            TaskKind::HeadPoll { chain, .. }
            | TaskKind::HeadSubscription { chain, .. }
            | TaskKind::PoolMonitor { chain }
            | TaskKind::Follower { chain } => Some(chain),
            TaskKind::MissedBlockLog
            | TaskKind::Alerts
            | TaskKind::Http
            | TaskKind::LeaseManager => None,
        }
    }
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskKind::HeadPoll { chain, provider } => write!(f, "{chain}/poll/{provider}"),
            TaskKind::HeadSubscription { chain, provider } => write!(f, "{chain}/ws/{provider}"),
            TaskKind::PoolMonitor { chain } => write!(f, "{chain}/monitor"),
            TaskKind::Follower { chain } => write!(f, "{chain}/follow"),
            TaskKind::MissedBlockLog => f.write_str("missed_block_log"),
            TaskKind::Alerts => f.write_str("alerts"),
            TaskKind::Http => f.write_str("http"),
            TaskKind::LeaseManager => f.write_str("lease manager"),
        }
    }
}

/// How a supervised task ended badly.
#[derive(Debug, thiserror::Error)]
pub enum TaskFailure<E: std::error::Error + 'static> {
    /// It returned an error.
    #[error("task {kind} failed: {source}")]
    Failed {
        /// The task.
        kind: TaskKind,
        /// Its error.
        source: E,
    },
    /// It ended before it was asked to (cleanly, or by a panic).
    #[error("task {kind} ended unexpectedly{}", .panic.as_ref().map(|p| format!(": {p}")).unwrap_or_default())]
    Ended {
        /// The task.
        kind: TaskKind,
        /// What the panic said, if it panicked.
        panic: Option<String>,
    },
}

/// How a supervised task's join went.
type Joined<E> = Result<(tokio::task::Id, Result<(), E>), tokio::task::JoinError>;

/// Spawns tasks with their kind and stops them stage by stage. `E` is the error a task may return.
pub struct Supervisor<E> {
    tokens: [CancellationToken; 3],
    tasks: JoinSet<Result<(), E>>,
    /// Each running task's kind and abort handle, by its task id (to name a task that panicked, and
    /// to abort one stage's tasks alone).
    kinds: std::collections::HashMap<tokio::task::Id, (TaskKind, tokio::task::AbortHandle)>,
}

impl<E: std::error::Error + Send + 'static> Default for Supervisor<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E: std::error::Error + Send + 'static> Supervisor<E> {
    /// No tasks yet.
    pub fn new() -> Self {
        Self {
            tokens: Default::default(),
            tasks: JoinSet::new(),
            kinds: Default::default(),
        }
    }

    /// The token that tells `stage`'s tasks to stop.
    pub fn token(&self, stage: Stage) -> CancellationToken {
        self.tokens[stage as usize].clone()
    }

    /// Spawns `task` (made from its stage's token) as `kind`.
    pub fn spawn<F, Fut>(&mut self, kind: TaskKind, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    {
        let handle = self.tasks.spawn(task(self.token(kind.stage())));
        self.kinds.insert(handle.id(), (kind, handle));
    }

    /// Waits until a task ends badly (returns why), or until there are no tasks (returns `None`).
    /// Cancel-safe: call it in a `select!` with the shutdown signal.
    pub async fn failure(&mut self) -> Option<TaskFailure<E>> {
        loop {
            let done = self.tasks.join_next_with_id().await?;
            if let Some(f) = self.judge(done, false) {
                return Some(f);
            }
        }
    }

    /// Stops every stage in order; `between` runs after the followers have stopped (the sink's
    /// sync). Returns the first failure seen while stopping.
    pub async fn stop(
        &mut self,
        between: impl std::future::Future<Output = ()>,
    ) -> Option<TaskFailure<E>> {
        let mut first = None;
        let mut between = Some(between);
        for stage in Stage::ALL {
            if stage == Stage::Drain {
                if let Some(b) = between.take() {
                    b.await;
                }
            }
            self.tokens[stage as usize].cancel();
            let stopped = tokio::time::timeout(stage.deadline(), async {
                while self.running_in(stage) {
                    let Some(done) = self.tasks.join_next_with_id().await else {
                        break;
                    };
                    if let Some(f) = self.judge(done, true) {
                        first.get_or_insert(f);
                    }
                }
            })
            .await;
            if stopped.is_err() {
                let late: Vec<String> = self
                    .kinds
                    .values()
                    .filter(|(k, _)| k.stage() == stage)
                    .map(|(k, _)| k.to_string())
                    .collect();
                tracing::warn!(stage = ?stage, tasks = ?late, "tasks did not stop within their shutdown deadline; aborting them");
                self.abort_stage(stage);
            }
        }
        self.tasks.abort_all();
        first
    }

    fn running_in(&self, stage: Stage) -> bool {
        self.kinds.values().any(|(k, _)| k.stage() == stage)
    }

    /// Aborts `stage`'s tasks (the later stages' run on); they are forgotten, so their ends are not
    /// judged.
    fn abort_stage(&mut self, stage: Stage) {
        self.kinds.retain(|_, (k, handle)| {
            if k.stage() == stage {
                handle.abort();
            }
            k.stage() != stage
        });
    }

    /// What a task's end means: `stopping`: its stage was asked to stop.
    fn judge(&mut self, done: Joined<E>, stopping: bool) -> Option<TaskFailure<E>> {
        match done {
            Ok((id, result)) => {
                let (kind, _) = self.kinds.remove(&id)?;
                match result {
                    Err(source) => Some(TaskFailure::Failed { kind, source }),
                    Ok(()) if stopping || kind.may_end() => None,
                    Ok(()) => Some(TaskFailure::Ended { kind, panic: None }),
                }
            }
            Err(e) => {
                let (kind, _) = self.kinds.remove(&e.id())?;
                if e.is_cancelled() {
                    return None;
                }
                let panic = e.try_into_panic().ok().map(|p| {
                    p.downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panic".into())
                });
                Some(TaskFailure::Ended { kind, panic })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("boom")]
    struct Boom;

    fn follower(chain: &str) -> TaskKind {
        TaskKind::Follower {
            chain: chain.into(),
        }
    }

    fn subscription() -> TaskKind {
        TaskKind::HeadSubscription {
            chain: "c".into(),
            provider: "p".into(),
        }
    }

    #[tokio::test]
    async fn a_task_that_ends_cleanly_before_it_is_asked_to_is_a_failure() {
        let mut s: Supervisor<Boom> = Supervisor::new();
        s.spawn(subscription(), |_| async { Ok(()) });
        s.spawn(follower("main"), |_| async { Ok(()) });
        s.spawn(TaskKind::Http, |c| async move {
            c.cancelled().await;
            Ok(())
        });
        match s.failure().await {
            Some(TaskFailure::Ended { kind, panic: None }) => assert_eq!(kind, follower("main")),
            other => panic!("{other:?}"),
        }
        assert!(s.stop(async {}).await.is_none());
    }

    #[tokio::test]
    async fn errors_and_panics_name_their_task() {
        let mut s: Supervisor<Boom> = Supervisor::new();
        s.spawn(follower("a"), |_| async { Err(Boom) });
        match s.failure().await {
            Some(TaskFailure::Failed { kind, .. }) => assert_eq!(kind.chain(), Some("a")),
            other => panic!("{other:?}"),
        }
        s.spawn(TaskKind::Alerts, |_| async { panic!("rule table broken") });
        let f = s.failure().await.expect("a panic is a failure");
        assert_eq!(
            f.to_string(),
            "task alerts ended unexpectedly: rule table broken"
        );
    }

    #[tokio::test]
    async fn a_subscription_that_gives_up_is_not_a_failure() {
        let mut s: Supervisor<Boom> = Supervisor::new();
        s.spawn(subscription(), |_| async { Ok(()) });
        assert!(s.failure().await.is_none(), "no task left, no failure");
    }

    #[tokio::test]
    async fn stages_stop_in_order_with_the_sync_between_followers_and_drain() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut s: Supervisor<Boom> = Supervisor::new();
        let producers = s.token(Stage::Producers);
        let drain = s.token(Stage::Drain);
        for (kind, name) in [
            (TaskKind::Http, "http"),
            (follower("main"), "follower"),
            (
                TaskKind::PoolMonitor {
                    chain: "main".into(),
                },
                "probes",
            ),
        ] {
            let log = log.clone();
            s.spawn(kind, move |c| async move {
                c.cancelled().await;
                log.lock().unwrap().push(name);
                Ok(())
            });
        }
        let l = log.clone();
        let (p, d) = (producers.clone(), drain.clone());
        let sync = async move {
            assert!(p.is_cancelled() && !d.is_cancelled());
            l.lock().unwrap().push("sync");
        };
        assert!(s.stop(sync).await.is_none());
        assert_eq!(*log.lock().unwrap(), ["probes", "follower", "sync", "http"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stage_that_misses_its_deadline_is_aborted_and_the_stop_goes_on() {
        let mut s: Supervisor<Boom> = Supervisor::new();
        s.spawn(follower("stuck"), |_| std::future::pending());
        let drained = Arc::new(Mutex::new(false));
        let d = drained.clone();
        s.spawn(TaskKind::MissedBlockLog, move |c| async move {
            c.cancelled().await;
            *d.lock().unwrap() = true;
            Ok(())
        });
        let started = tokio::time::Instant::now();
        assert!(s.stop(async {}).await.is_none());
        assert!(*drained.lock().unwrap(), "the drain stage still ran");
        let took = started.elapsed();
        assert!(took >= Stage::Followers.deadline(), "{took:?}");
        let all: Duration = Stage::ALL.iter().map(|s| s.deadline()).sum();
        assert!(
            all <= super::super::SHUTDOWN_DEADLINE,
            "stages fit the stop's deadline"
        );
    }
}
