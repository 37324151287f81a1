//! Wires the agent: one provider pool, head tracker and follower per chain, sharing the state
//! database and the block output; and shuts them down in order.
//!
//! Shutdown is staged: the cancellation token stops head tracking and followers (a follower finishes
//! the batch it is writing, so the output and cursor stay in step), then the output is synced. The
//! whole stop is bounded by [`SHUTDOWN_DEADLINE`].

use std::{future::Future, sync::Arc, time::Duration};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    api,
    chain::{
        ChainFollower, FollowError, LogObserver, MetricsObserver, Progress, RecoveryPolicy,
        StreamObserver,
    },
    config::Config,
    heads::HeadTracker,
    monitor::{log::MissedBlockLog, ChainMonitor, ChainStats},
    output::BlockOutput,
    pool::{PoolSetupError, ProviderPool},
    store::{Store, StoreError},
    telemetry::TelemetryHandle,
};

/// How long tasks get to finish after a stop is asked for.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(3);

/// How long the final sync of the block output may take.
const OUTPUT_SYNC_DEADLINE: Duration = Duration::from_millis(400);

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A provider failed its start-up checks (wrong chain id): a configuration problem.
    #[error(transparent)]
    Setup(#[from] PoolSetupError),
    /// The state database could not be used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The block output could not be opened.
    #[error("cannot open block output: {0}")]
    Output(std::io::Error),
    /// A chain's follower failed.
    #[error("chain {chain}: {source}")]
    Follow {
        /// The chain.
        chain: String,
        /// What failed.
        source: FollowError,
    },
    /// A task ended unexpectedly.
    #[error("task {0} ended unexpectedly")]
    TaskEnded(String),
    /// The missed-block log could not be opened.
    #[error(transparent)]
    MissedLog(crate::monitor::log::LogError),
    /// The HTTP API could not listen.
    #[error("cannot listen on {addr} for the HTTP API: {source} (choose another address with agent.http_listen)")]
    Http {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl AgentError {
    /// The process exit code for this error (2: fix the configuration; 1: runtime failure).
    pub fn exit_code(&self) -> i32 {
        match self {
            AgentError::Setup(_) | AgentError::Store(StoreError::ChainIdMismatch { .. }) => 2,
            _ => 1,
        }
    }
}

/// Runs the agent until `shutdown` completes or a task fails, recording into `telemetry`.
pub async fn run(
    config: Config,
    telemetry: TelemetryHandle,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    run_with_observers(config, telemetry, Vec::new(), shutdown).await
}

/// Runs the agent like [`run`], with `extra` observers of every chain's stream besides the log
/// and the metrics.
pub async fn run_with_observers(
    config: Config,
    telemetry: TelemetryHandle,
    extra: Vec<Arc<dyn StreamObserver>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let redactor = Arc::new(config.redactor());
    let store = Arc::new(Store::open(&config.agent.state_path)?);
    let output =
        Arc::new(BlockOutput::open(&config.agent.block_output).map_err(AgentError::Output)?);
    let addr = config.agent.http_listen;
    let listener = api::bind(addr)
        .await
        .map_err(|source| AgentError::Http { addr, source })?;
    tracing::info!(address = %listener.local_addr().unwrap_or(addr), "HTTP API listening");
    let metrics = telemetry.metrics.clone();

    tokio::pin!(shutdown);
    let connect = futures::future::join_all(
        config
            .chains
            .iter()
            .map(|c| ProviderPool::connect(c, &config.pool, redactor.clone(), metrics.clone())),
    );
    let pools = tokio::select! {
        pools = connect => pools,
        _ = &mut shutdown => {
            tracing::info!("shutdown requested during start-up");
            return Ok(());
        }
    };
    let cancel = CancellationToken::new();
    let mut tasks: JoinSet<(String, Result<(), FollowError>)> = JoinSet::new();
    let mut views = Vec::new();
    for (chain, pool) in config.chains.iter().zip(pools) {
        views.push(api::ChainView {
            name: chain.name.clone(),
            chain_id: chain.chain_id,
            max_block_delay: chain.max_block_delay.0,
            pool: Arc::new(pool?),
            progress: Arc::new(Progress::default()),
            stats: Arc::new(std::sync::Mutex::new(ChainStats::default())),
        });
    }
    // Alerts: rules over every chain, delivered on the channels' own tasks.
    let dispatcher = crate::alerts::deliver::Dispatcher::start(
        &config.alerts,
        redactor.clone(),
        metrics.clone(),
        cancel.clone(),
    );
    tokio::spawn(crate::alerts::run(
        config.alerts.clone(),
        config.monitor.alert_threshold,
        views.clone(),
        dispatcher,
        metrics.clone(),
        cancel.clone(),
    ));
    let router = api::router(api::ApiState {
        telemetry: telemetry.clone(),
        chains: views.clone(),
        store: store.clone(),
    });
    let c = cancel.clone();
    let limits = api::Limits::of(&config.agent);
    tasks.spawn(async move {
        api::serve(listener, router, limits, c).await;
        ("http".to_owned(), Ok(()))
    });
    // The missed-block log file, written from the state database.
    let missed_stored = if config.missed_block_log.path.as_os_str().is_empty() {
        None
    } else {
        let log = MissedBlockLog::open(&config.missed_block_log, store.clone())
            .map_err(AgentError::MissedLog)?;
        let notify = log.notifier();
        let c = cancel.clone();
        tasks.spawn(async move {
            log.run(c).await;
            ("missed_block_log".to_owned(), Ok(()))
        });
        Some(notify)
    };
    let mut observers: Vec<Arc<dyn StreamObserver>> = vec![
        Arc::new(LogObserver),
        Arc::new(MetricsObserver::new(metrics.clone())),
    ];
    observers.extend(extra);
    for (chain, view) in config.chains.iter().zip(views) {
        let pool = view.pool;
        let label = format!("{}/monitor", chain.name);
        let (p, c) = (pool.clone(), cancel.clone());
        tasks.spawn(async move {
            p.monitor(c).await;
            (label, Ok(()))
        });
        let (tracker, heads) = HeadTracker::new(&chain.name, pool.heads().clone());
        let silence = (chain.expected_block_time.0 * 2).max(Duration::from_secs(1));
        let interval = chain.poll_interval();
        for provider in pool.providers() {
            let label = format!("{}/poll/{}", chain.name, provider.name);
            let t = tracker.clone();
            let (prov, c) = (provider.clone(), cancel.clone());
            tasks.spawn(async move {
                t.poll(prov, interval, silence, c).await;
                (label, Ok(()))
            });
        }
        for provider in pool.providers().iter().filter(|p| p.ws_url.is_some()) {
            let label = format!("{}/ws/{}", chain.name, provider.name);
            let t = tracker.clone();
            let (p, cfg, pcfg, r, c) = (
                provider.clone(),
                chain.clone(),
                config.pool.clone(),
                redactor.clone(),
                cancel.clone(),
            );
            tasks.spawn(async move {
                t.subscribe(p, cfg, pcfg, r, c).await;
                (label, Ok(()))
            });
        }
        let mut chain_observers = observers.clone();
        chain_observers.push(view.progress.clone());
        let follower = ChainFollower::new(
            chain.clone(),
            pool,
            store.clone(),
            output.clone(),
            heads,
            chain_observers,
            config.pool.fetch_concurrency,
        )
        .with_monitor(
            ChainMonitor::new(
                &chain.name,
                chain.expected_block_time.0,
                chain.max_block_delay.0,
                view.stats,
                metrics.clone(),
                config.monitor.alert_threshold,
            ),
            missed_stored.clone(),
            config.missed_block_log.console,
            config.monitor.enable_recovery.then_some(RecoveryPolicy {
                attempts: config.monitor.retry_attempts,
                delay: config.monitor.retry_delay.0,
            }),
        )
        .with_progress(tracker.times(), view.progress)
        .with_skips(tracker.skips());
        let label = format!("{}/follow", chain.name);
        let c = cancel.clone();
        tasks.spawn(async move { (label, follower.run(c).await) });
    }
    tracing::info!(chains = config.chains.len(), "blockwatch running");

    let mut failure: Option<AgentError> = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutdown requested; finishing the current batch");
                break;
            }
            done = tasks.join_next() => match done {
                // A subscription that gave up for good (its endpoint serves another chain):
                // polling carries on without it.
                Some(Ok((_, Ok(())))) => continue,
                Some(other) => {
                    failure = task_failure(other).err();
                    break;
                }
                None => break,
            },
        }
    }
    cancel.cancel();
    let drained = tokio::time::timeout(SHUTDOWN_DEADLINE, async {
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = task_failure(done) {
                failure.get_or_insert(e);
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("tasks did not stop within the shutdown deadline; aborting them");
        tasks.abort_all();
    }
    // A write blocked on a full stdout pipe holds the output: never wait for it past the deadline.
    let sync = tokio::task::spawn_blocking(move || output.sync());
    match tokio::time::timeout(OUTPUT_SYNC_DEADLINE, sync).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "cannot sync the block output"),
        Ok(Err(e)) => tracing::warn!(error = %e, "block output sync task failed"),
        Err(_) => tracing::warn!(
            "block output is blocked (a reader that stopped reading?); exiting without syncing it"
        ),
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn task_failure(
    done: Result<(String, Result<(), FollowError>), tokio::task::JoinError>,
) -> Result<(), AgentError> {
    match done {
        Ok((_, Ok(()))) => Ok(()),
        Ok((label, Err(source))) => Err(AgentError::Follow {
            chain: label.split('/').next().unwrap_or_default().to_owned(),
            source,
        }),
        Err(e) => Err(AgentError::TaskEnded(e.to_string())),
    }
}
