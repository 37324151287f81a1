//! Wires the agent: one provider pool, head tracker and follower per chain, sharing the state store
//! and the block sink, with the missed-block log, the alert rules and the HTTP API beside them; and
//! supervises their tasks ([`supervisor`]): a task that ends unexpectedly stops the agent, and a stop
//! runs in stages — producers, followers (each finishes and commits its batch), the sink's sync,
//! then the log, alerts and HTTP drain — within [`SHUTDOWN_DEADLINE`].

mod lead;
pub mod supervisor;

use std::{future::Future, sync::Arc, time::Duration};

use supervisor::{Stage, Supervisor, TaskFailure, TaskKind};

use crate::{
    api,
    cluster::{ChainRole, LeaseManager},
    config::{BlockOutputTarget, Config},
    follower::{ChainFollower, FollowError, Progress},
    heads::HeadTracker,
    model::StreamObserver,
    monitor::{log::MissedBlockLog, ChainMonitor, ChainStats, RecoveryPolicy},
    pool::{PoolSetupError, ProviderPool},
    store::{PgStore, StateStore, StoreError},
    telemetry::{LogObserver, MetricsObserver, TelemetryHandle},
};

/// How long the agent's stop may take, every stage and the sink's sync together.
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
    /// A task ended unexpectedly (cleanly, or by a panic).
    #[error("{0}")]
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
            // A database that cannot be opened (or reached, at start-up), holds a newer schema or
            // another chain's cursor: the configuration must change.
            AgentError::Setup(_)
            | AgentError::Store(
                StoreError::ChainIdMismatch { .. }
                | StoreError::Open { .. }
                | StoreError::NewerSchema { .. },
            ) => 2,
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
    let (store, cluster) = open_state(&config).await?;
    let output = crate::output::open(&config.agent.block_output).map_err(AgentError::Output)?;
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
    let mut tasks: Supervisor<FollowError> = Supervisor::new();
    let mut views = Vec::new();
    let names: Vec<&str> = config.chains.iter().map(|c| c.name.as_str()).collect();
    let mut roles = ChainRole::group(&names).into_iter();
    for (chain, pool) in config.chains.iter().zip(pools) {
        views.push(api::ChainView {
            name: chain.name.clone(),
            chain_id: chain.chain_id,
            max_block_delay: chain.max_block_delay.0,
            pool: Arc::new(pool?),
            progress: Arc::new(Progress::default()),
            stats: Arc::new(std::sync::Mutex::new(ChainStats::default())),
            role: roles.next().filter(|_| cluster.is_some()),
        });
    }
    // Cluster mode: the lease manager decides which chains this agent leads. It stops after the
    // followers (which finish their batches under their leases) and then gives the leases up.
    if let Some(c) = &cluster {
        let roles = views.iter().filter_map(|v| v.role.clone()).collect();
        let manager = LeaseManager::new(
            c.store.clone(),
            roles,
            config.cluster.lease_ttl.0,
            config.cluster.renew_every.0,
            metrics.clone(),
        );
        tasks.spawn(TaskKind::LeaseManager, move |c| async move {
            manager.run(c).await;
            Ok(())
        });
    }
    // Alerts: rules over every chain, delivered on the channels' own tasks.
    let dispatcher = crate::alerts::deliver::Dispatcher::start(
        &config.alerts,
        redactor.clone(),
        metrics.clone(),
        tasks.token(Stage::Drain),
    );
    let alerts = Arc::new(crate::alerts::Board::default());
    {
        let (cfg, threshold) = (config.alerts.clone(), config.monitor.alert_threshold);
        let (views, metrics, board) = (views.clone(), metrics.clone(), alerts.clone());
        let state = crate::alerts::AlertState {
            store: store.clone(),
            instance: cluster.as_ref().map(|c| c.instance.clone()),
        };
        tasks.spawn(TaskKind::Alerts, move |c| async move {
            crate::alerts::run(cfg, threshold, views, dispatcher, metrics, board, state, c).await;
            Ok(())
        });
    }
    let router = api::router(api::ApiState {
        telemetry: telemetry.clone(),
        chains: views.clone(),
        store: store.clone(),
        alerts,
        dashboard_url: config.alerts.dashboard_url.clone(),
        instance: cluster.as_ref().map(|c| c.instance.clone()),
    });
    let limits = api::Limits::of(&config.agent);
    tasks.spawn(TaskKind::Http, move |c| async move {
        api::serve(listener, router, limits, c).await;
        Ok(())
    });
    // The missed-block log file, written from the state database.
    let missed_stored = if config.missed_block_log.path.as_os_str().is_empty() {
        None
    } else {
        let log = MissedBlockLog::open(&config.missed_block_log, store.clone())
            .map_err(AgentError::MissedLog)?;
        let notify = log.notifier();
        tasks.spawn(TaskKind::MissedBlockLog, move |c| async move {
            log.run(c).await;
            Ok(())
        });
        Some(notify)
    };
    let mut observers: Vec<Arc<dyn StreamObserver>> = vec![
        Arc::new(LogObserver::new(config.missed_block_log.console)),
        Arc::new(MetricsObserver::new(
            metrics.clone(),
            config
                .chains
                .iter()
                .map(|c| (c.name.clone(), c.max_block_delay.0))
                .collect(),
        )),
    ];
    observers.extend(extra);
    for (chain, view) in config.chains.iter().zip(views) {
        let pool = view.pool;
        let name = chain.name.clone();
        let p = pool.clone();
        tasks.spawn(
            TaskKind::PoolMonitor {
                chain: name.clone(),
            },
            move |c| async move {
                p.monitor(c).await;
                Ok(())
            },
        );
        let (tracker, heads) = HeadTracker::new(&chain.name, pool.heads().clone());
        let silence = (chain.expected_block_time.0 * 2).max(Duration::from_secs(1));
        let interval = chain.poll_interval();
        for provider in pool.providers() {
            let kind = TaskKind::HeadPoll {
                chain: name.clone(),
                provider: provider.name.clone(),
            };
            let t = tracker.clone();
            let prov = provider.clone();
            tasks.spawn(kind, move |c| async move {
                t.poll(prov, interval, silence, c).await;
                Ok(())
            });
        }
        for provider in pool.providers().iter().filter(|p| p.ws_url.is_some()) {
            let kind = TaskKind::HeadSubscription {
                chain: name.clone(),
                provider: provider.name.clone(),
            };
            let t = tracker.clone();
            let (p, cfg, pcfg, r) = (
                provider.clone(),
                chain.clone(),
                config.pool.clone(),
                redactor.clone(),
            );
            tasks.spawn(kind, move |c| async move {
                t.subscribe(p, cfg, pcfg, r, c).await;
                Ok(())
            });
        }
        let mut chain_observers = observers.clone();
        chain_observers.push(view.progress.clone());
        let make: lead::MakeFollower = {
            let (chain, store, output) = (chain.clone(), store.clone(), output.clone());
            let (metrics, missed_stored) = (metrics.clone(), missed_stored.clone());
            let (monitor, pool_cfg) = (config.monitor.clone(), config.pool.clone());
            let (stats, progress) = (view.stats.clone(), view.progress.clone());
            Box::new(move |term| {
                progress.restart();
                ChainFollower::new(
                    chain.clone(),
                    pool.clone(),
                    store.clone(),
                    output.clone(),
                    heads.clone(),
                    chain_observers.clone(),
                    pool_cfg.fetch_concurrency,
                )
                .with_monitor(
                    ChainMonitor::new(
                        &chain.name,
                        chain.expected_block_time.0,
                        chain.max_block_delay.0,
                        stats.clone(),
                        metrics.clone(),
                        monitor.alert_threshold,
                    ),
                    missed_stored.clone(),
                    monitor.enable_recovery.then_some(RecoveryPolicy {
                        attempts: monitor.retry_attempts,
                        delay: monitor.retry_delay.0,
                    }),
                )
                .with_progress(tracker.times(), progress.clone())
                .with_skips(tracker.skips())
                .lead(term)
            })
        };
        match (&view.role, &cluster) {
            (Some(role), Some(c)) => {
                let (role, instance, metrics) = (role.clone(), c.instance.clone(), metrics.clone());
                tasks.spawn(TaskKind::Follower { chain: name }, move |c| {
                    lead::lead(make, role, instance, metrics, c)
                });
            }
            _ => {
                let follower = make(None);
                tasks.spawn(TaskKind::Follower { chain: name }, move |c| follower.run(c));
            }
        }
    }
    tracing::info!(chains = config.chains.len(), "blockwatch running");

    let mut failure = tokio::select! {
        _ = &mut shutdown => {
            tracing::info!("shutdown requested; finishing the current batch");
            None
        }
        failed = tasks.failure() => failed,
    };
    if let Some(f) = &failure {
        tracing::error!(error = %f, "stopping the agent");
    }
    // Between the followers and the drain: the sink's sync. A write blocked on a full stdout pipe
    // holds the output: never wait for it past its deadline.
    let sync = async move {
        let sync = tokio::task::spawn_blocking(move || output.sync());
        match tokio::time::timeout(OUTPUT_SYNC_DEADLINE, sync).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "cannot sync the block output"),
            Ok(Err(e)) => tracing::warn!(error = %e, "block output sync task failed"),
            Err(_) => tracing::warn!(
                "block output is blocked (a reader that stopped reading?); exiting without syncing it"
            ),
        }
    };
    let stopping = tasks.stop(sync).await;
    failure = failure.or(stopping);
    match failure {
        Some(f) => Err(f.into()),
        None => Ok(()),
    }
}

/// This agent's part in a cluster: its instance name and the shared store.
struct Cluster {
    instance: String,
    store: Arc<PgStore>,
}

/// Opens the state store: the SQLite file, or in cluster mode the shared PostgreSQL database
/// (which is then also the block output when `block_output = "postgres"`).
async fn open_state(config: &Config) -> Result<(Arc<dyn StateStore>, Option<Cluster>), AgentError> {
    if !config.cluster.shared() {
        return Ok((crate::store::open(&config.agent.state_path)?, None));
    }
    let instance = config.cluster.instance_name();
    let store = PgStore::connect(&config.cluster.url, &instance, config.cluster.lease_ttl.0)
        .await?
        .with_block_output(config.agent.block_output == BlockOutputTarget::Postgres);
    let store = Arc::new(store);
    tracing::info!(instance = %instance, "cluster mode: state shared in PostgreSQL; chains are led under leases");
    Ok((store.clone(), Some(Cluster { instance, store })))
}

impl From<TaskFailure<FollowError>> for AgentError {
    fn from(f: TaskFailure<FollowError>) -> Self {
        match f {
            TaskFailure::Failed { kind, source } => AgentError::Follow {
                chain: kind.chain().unwrap_or_default().to_owned(),
                source,
            },
            e @ TaskFailure::Ended { .. } => AgentError::TaskEnded(e.to_string()),
        }
    }
}
