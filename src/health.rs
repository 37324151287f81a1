//! One verdict on each chain's health, for every surface that reports it.
//!
//! [`judge`] is the only place where a chain's state is decided, from one [`Snapshot`] of the
//! agent's state. `/health`, `/status`, `/report` (and so `blockwatch status`), the
//! `blockwatch_chain_state` and `blockwatch_blocks_behind` metrics and the alert rules all read its
//! [`Verdict`], so they cannot disagree. Provider states have one source too: each provider's health
//! tracker, which also sets `blockwatch_provider_up`.
//!
//! | chain state | when |
//! |---|---|
//! | `unhealthy` | no usable provider (none `alive` or `degraded`), no new block for `max_block_delay`, or blocks that cannot pass `block_hash_check` |
//! | `degraded` | otherwise, a provider is not `alive` |
//! | `catching_up` | otherwise, the stream is working through a backlog (lag, not misses) |
//! | `healthy` | none of the above |

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry::KeyValue;
use serde::Serialize;

use crate::{
    follower::{
        progress::{CatchUp, LastBlock},
        Progress,
    },
    monitor::{stats::StatsView, ChainStats},
    pool::{PoolStatus, ProviderPool},
    rpc::provider::ProviderStatus,
    telemetry::{metrics::attr, Metrics},
};

/// One chain, as the API, the alert rules and the health verdict see it.
#[derive(Clone, Debug)]
pub struct ChainView {
    /// Its name.
    pub name: String,
    /// Its chain id.
    pub chain_id: u64,
    /// No new block for this long makes it unhealthy.
    pub max_block_delay: Duration,
    /// Its providers.
    pub pool: Arc<ProviderPool>,
    /// Its stream's progress.
    pub progress: Arc<Progress>,
    /// Its missed-block statistics.
    pub stats: Arc<Mutex<ChainStats>>,
    /// In cluster mode, whether this agent leads it.
    pub role: Option<Arc<crate::cluster::ChainRole>>,
}

/// A chain's state, least severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainState {
    /// Every provider alive, the stream at the head.
    Healthy,
    /// Every provider alive, the stream working through a backlog.
    CatchingUp,
    /// A provider is not alive, but one is usable and blocks come.
    Degraded,
    /// No usable provider, no new block for `max_block_delay`, or blocks that cannot be verified.
    Unhealthy,
}

impl ChainState {
    /// Every state, for exporting a full `blockwatch_chain_state{state}` set.
    pub const ALL: [ChainState; 4] = [
        ChainState::Healthy,
        ChainState::CatchingUp,
        ChainState::Degraded,
        ChainState::Unhealthy,
    ];

    /// The name in `/health`, `/status`, `/report` and the `state` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            ChainState::Healthy => "healthy",
            ChainState::CatchingUp => "catching_up",
            ChainState::Degraded => "degraded",
            ChainState::Unhealthy => "unhealthy",
        }
    }
}

/// Everything the verdict and the surfaces need of one chain, read once.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The chain's name.
    pub name: String,
    /// Its chain id.
    pub chain_id: u64,
    /// Its `max_block_delay`.
    pub max_block_delay: Duration,
    /// Its providers and head.
    pub pool: PoolStatus,
    /// The last block emitted.
    pub last: Option<LastBlock>,
    /// Since the last block was emitted (since start, before the first).
    pub since_last_block: Duration,
    /// Seconds between the last block's timestamp and now.
    pub seconds_behind: Option<f64>,
    /// Blocks between the chain head and the last block emitted.
    pub behind_blocks: Option<u64>,
    /// The catch-up under way, if any.
    pub catch_up: Option<CatchUp>,
    /// Why blocks cannot pass `block_hash_check`, when the providers agree they cannot.
    pub hash_verdict: Option<String>,
    /// Missed-block statistics.
    pub stats: StatsView,
    /// In cluster mode, this agent's role and the chain's leader.
    pub role: Option<crate::cluster::RoleView>,
}

impl Snapshot {
    /// Reads `view` now.
    pub fn of(view: &ChainView) -> Self {
        let pool = view.pool.status();
        let last = view.progress.last();
        let behind_blocks = match (pool.head, last) {
            (Some(head), Some(last)) => Some(head.saturating_sub(last.number)),
            _ => None,
        };
        Snapshot {
            name: view.name.clone(),
            chain_id: view.chain_id,
            max_block_delay: view.max_block_delay,
            since_last_block: view.progress.since_last_block(),
            seconds_behind: view.progress.seconds_behind(),
            catch_up: view.progress.catch_up(),
            hash_verdict: view.pool.hash_verdict(),
            stats: view.stats.lock().unwrap_or_else(|p| p.into_inner()).view(),
            behind_blocks,
            last,
            pool,
            role: view.role.as_ref().map(|r| r.view()),
        }
    }

    /// Providers that calls go to first (`alive` or `degraded`).
    pub fn usable(&self) -> impl Iterator<Item = &ProviderStatus> {
        self.pool
            .providers
            .iter()
            .filter(|p| matches!(p.state, "alive" | "degraded"))
    }
}

/// The verdict on one chain.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// Its state.
    pub state: ChainState,
    /// Why it is not healthy, each in a sentence naming the chain (empty when healthy).
    pub reasons: Vec<String>,
    /// Providers that are `alive` or `degraded`.
    pub usable: usize,
}

/// Decides a chain's state from `s`: see the module's table.
pub fn judge(s: &Snapshot) -> Verdict {
    let name = &s.name;
    let mut reasons = Vec::new();
    let mut state = ChainState::Healthy;
    let mut worse = |st: ChainState, reason: String, reasons: &mut Vec<String>| {
        state = state.max(st);
        reasons.push(reason);
    };
    let usable = s.usable().count();
    let list = |pred: &dyn Fn(&ProviderStatus) -> bool| {
        s.pool
            .providers
            .iter()
            .filter(|p| pred(p))
            .map(|p| format!("{} {} ({})", p.name, p.state, p.state_reason))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if usable == 0 {
        worse(
            ChainState::Unhealthy,
            format!(
                "chain {name}: no usable provider: {}",
                list(&|_: &ProviderStatus| true)
            ),
            &mut reasons,
        );
    }
    // A chain another agent leads emits nothing here: its blocks are that agent's to judge.
    let standby = s.role.as_ref().is_some_and(|r| r.role == "standby");
    if !standby && s.since_last_block >= s.max_block_delay {
        worse(
            ChainState::Unhealthy,
            format!(
                "chain {name}: no new block for {}s (max_block_delay {}s)",
                s.since_last_block.as_secs(),
                s.max_block_delay.as_secs_f64()
            ),
            &mut reasons,
        );
    }
    if let Some(v) = &s.hash_verdict {
        worse(ChainState::Unhealthy, v.clone(), &mut reasons);
    }
    if usable > 0 && s.pool.providers.iter().any(|p| p.state != "alive") {
        worse(
            ChainState::Degraded,
            format!(
                "chain {name}: providers not alive: {}",
                list(&|p: &ProviderStatus| p.state != "alive")
            ),
            &mut reasons,
        );
    }
    if let Some(c) = &s.catch_up {
        let behind = s.behind_blocks.unwrap_or(0);
        worse(
            ChainState::CatchingUp,
            format!(
                "chain {name}: catching up, {behind} blocks behind the head (blocks {}..={}, {} done, {:.1} blocks/s)",
                c.from, c.to, c.done, c.blocks_per_second
            ),
            &mut reasons,
        );
    }
    Verdict {
        state,
        reasons,
        usable,
    }
}

/// The worst of several chains' states (`healthy` with none).
pub fn overall<'a>(verdicts: impl IntoIterator<Item = &'a Verdict>) -> ChainState {
    verdicts
        .into_iter()
        .map(|v| v.state)
        .max()
        .unwrap_or(ChainState::Healthy)
}

/// What [`export_changes`] last recorded for one chain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exported(Option<(ChainState, Option<u64>)>);

/// Exports a chain's verdict: `blockwatch.chain.state` (1 for its state, 0 for the others) and
/// `blockwatch.blocks.behind` — only what changed since `last`, as the gauges keep their last value:
/// the alerts judge every chain every second, and 1,000 chains' five gauge points a second cost
/// a few percent of a core.
pub fn export_changes(metrics: &Metrics, s: &Snapshot, v: &Verdict, last: &mut Exported) {
    let (state, behind) = (v.state, s.behind_blocks);
    let (state_changed, behind_changed) = match last.0 {
        Some((st, b)) => (st != state, b != behind),
        None => (true, true),
    };
    last.0 = Some((state, behind));
    let chain = KeyValue::new(attr::CHAIN, s.name.clone());
    if state_changed {
        for st in ChainState::ALL {
            metrics.chain_state.record(
                u64::from(st == state),
                &[chain.clone(), KeyValue::new(attr::STATE, st.as_str())],
            );
        }
    }
    if let (Some(b), true) = (behind, behind_changed) {
        metrics.blocks_behind.record(b, &[chain]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(name: &str, state: &'static str) -> ProviderStatus {
        ProviderStatus {
            name: name.into(),
            state,
            state_reason: "test",
            score: None,
            head: None,
            lag_blocks: None,
            latency_ms: None,
            error_rate: 0.0,
            requests: 0,
            rate_limited: 0,
            head_delay_ms: None,
            syncing: false,
            failures: 0.0,
            consecutive_failures: 0,
            window_calls: 0,
            subscription: "none",
            url: String::new(),
        }
    }

    fn snapshot(states: &[&'static str]) -> Snapshot {
        Snapshot {
            name: "c".into(),
            chain_id: 1,
            max_block_delay: Duration::from_secs(30),
            pool: PoolStatus {
                head: Some(100),
                current_provider: None,
                rpc_error_count: 0,
                providers: states
                    .iter()
                    .enumerate()
                    .map(|(i, s)| provider(&format!("p{i}"), s))
                    .collect(),
                forks: Vec::new(),
            },
            last: None,
            since_last_block: Duration::from_secs(1),
            seconds_behind: None,
            behind_blocks: Some(0),
            catch_up: None,
            hash_verdict: None,
            stats: StatsView::default(),
            role: None,
        }
    }

    #[test]
    fn a_chain_another_agent_leads_is_not_judged_on_its_blocks_here() {
        let mut s = snapshot(&["alive"]);
        s.since_last_block = Duration::from_secs(600);
        assert_eq!(judge(&s).state, ChainState::Unhealthy);
        let role = |role| crate::cluster::RoleView {
            role,
            leader: Some("b".into()),
            epoch: Some(3),
        };
        s.role = Some(role("standby"));
        assert_eq!(judge(&s).state, ChainState::Healthy);
        // This agent's own lead is judged like a single agent's.
        s.role = Some(role("leader"));
        assert_eq!(judge(&s).state, ChainState::Unhealthy);
        // Providers still count on a standby: they are this agent's own.
        let mut s = snapshot(&["unreachable"]);
        s.role = Some(role("standby"));
        assert_eq!(judge(&s).state, ChainState::Unhealthy);
    }

    #[test]
    fn every_condition_gives_its_state_and_reason() {
        assert_eq!(
            judge(&snapshot(&["alive", "alive"])).state,
            ChainState::Healthy
        );
        assert!(judge(&snapshot(&["alive"])).reasons.is_empty());
        let v = judge(&snapshot(&["alive", "lagging"]));
        assert_eq!((v.state, v.usable), (ChainState::Degraded, 1));
        assert!(v.reasons[0].contains("p1 lagging"), "{v:?}");
        // An open circuit on the only provider: no usable provider, whatever calls still try.
        let v = judge(&snapshot(&["circuit_open"]));
        assert_eq!((v.state, v.usable), (ChainState::Unhealthy, 0));
        assert!(v.reasons[0].contains("no usable provider"), "{v:?}");
        let v = judge(&snapshot(&["inconsistent", "unreachable"]));
        assert_eq!(v.state, ChainState::Unhealthy);
        let mut s = snapshot(&["alive"]);
        s.catch_up = Some(CatchUp {
            from: 1,
            to: 1000,
            done: 10,
            blocks_per_second: 5.0,
            eta_seconds: Some(198.0),
        });
        s.behind_blocks = Some(990);
        let v = judge(&s);
        assert_eq!(v.state, ChainState::CatchingUp);
        assert!(v.reasons[0].contains("990 blocks behind"), "{v:?}");
        s.since_last_block = Duration::from_secs(31);
        assert_eq!(judge(&s).state, ChainState::Unhealthy);
        let mut s = snapshot(&["alive", "alive"]);
        s.hash_verdict = Some("set block_hash_check".into());
        assert_eq!(judge(&s).state, ChainState::Unhealthy);
        assert_eq!(
            overall(&[
                judge(&snapshot(&["alive"])),
                judge(&snapshot(&["alive", "degraded"]))
            ]),
            ChainState::Degraded
        );
    }
}
