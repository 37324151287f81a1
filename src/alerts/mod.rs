//! Alerts: rules evaluated every second over every chain ([`rules`]), turned into messages with
//! throttling, de-duplication, escalation and resolution (here), and delivered to the configured
//! channels on their own tasks ([`deliver`]), never blocking the block stream.

pub mod deliver;
pub mod email;
pub mod rules;

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{
    cluster::Role,
    config::{AlertsConfig, Tier},
    health::{self, ChainView},
    store::{Fence, StateStore, StoreError},
    telemetry::Metrics,
};
pub use rules::{ChainSnapshot, Condition, ProviderSnapshot, Rule};

/// How often the rules are evaluated.
const TICK: Duration = Duration::from_secs(1);

/// An alert firing now, as `/status` and the status page show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FiringAlert {
    /// The rule.
    pub rule: &'static str,
    /// What it is about: the chain, or `chain/provider`.
    pub target: String,
    /// Its tier now.
    pub tier: &'static str,
}

/// The alerts firing now, as the latest evaluation left them (empty before the first).
#[derive(Debug, Default)]
pub struct Board(std::sync::Mutex<Vec<FiringAlert>>);

impl Board {
    /// The alerts firing now.
    pub fn firing(&self) -> Vec<FiringAlert> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, firing: Vec<FiringAlert>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = firing;
    }
}

/// Firing, or resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The condition holds.
    Firing,
    /// It held and no longer does.
    Resolved,
}

impl Status {
    /// The name in texts and the `status` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One alert message, as every channel renders it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Notification {
    /// Firing or resolved.
    pub status: Status,
    /// The rule.
    pub rule: Rule,
    /// How bad (for a resolved alert: how bad it was when last sent).
    pub tier: Tier,
    /// The chain.
    pub chain: String,
    /// The provider, for per-provider rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// What is (or was) wrong.
    pub what: String,
    /// What the agent does (or did) about it.
    pub action: String,
    /// Since when the condition held (RFC 3339).
    pub since: String,
    /// When this message was made (RFC 3339).
    pub at: String,
    /// The dashboard that shows it, when `alerts.dashboard_url` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<String>,
    /// A one-line summary.
    pub title: String,
    /// The whole text: what, where, since when, what the agent did, the dashboard.
    pub text: String,
}

impl Notification {
    fn new(
        status: Status,
        c: &Condition,
        tier: Tier,
        since: SystemTime,
        dashboard_url: &str,
    ) -> Self {
        let now = SystemTime::now();
        let dashboard = (!dashboard_url.is_empty()).then(|| {
            let base = format!(
                "{}/d/{}",
                dashboard_url.trim_end_matches('/'),
                c.rule.dashboard()
            );
            // The chain name is the config's: encoded, whatever it holds.
            match url::Url::parse(&base) {
                Ok(mut u) => {
                    u.query_pairs_mut().append_pair("var-chain", &c.chain);
                    u.to_string()
                }
                Err(_) => base,
            }
        });
        let target = match &c.provider {
            Some(p) => format!("chain {}, provider {p}", c.chain),
            None => format!("chain {}", c.chain),
        };
        let lasted = humantime::format_duration(Duration::from_secs(
            now.duration_since(since).unwrap_or_default().as_secs(),
        ));
        let since_text = humantime::format_rfc3339_seconds(since).to_string();
        let title = match status {
            Status::Firing => format!(
                "[{}] {} {}: {}",
                tier.as_str().to_uppercase(),
                c.rule.as_str(),
                c.target(),
                c.what
            ),
            Status::Resolved => format!(
                "[RESOLVED] {} {}: cleared after {lasted}",
                c.rule.as_str(),
                c.target()
            ),
        };
        let mut text = match status {
            Status::Firing => format!(
                "What: {}\nWhere: {target}\nSince: {since_text} ({lasted} ago)\nAgent: {}",
                c.what, c.action
            ),
            Status::Resolved => format!(
                "Resolved: {}\nWhere: {target}\nFrom {since_text} for {lasted}\nAgent: back to normal operation",
                c.what
            ),
        };
        if let Some(d) = &dashboard {
            text.push_str(&format!("\nDashboard: {d}"));
        }
        Notification {
            status,
            rule: c.rule,
            tier,
            chain: c.chain.clone(),
            provider: c.provider.clone(),
            what: c.what.clone(),
            action: c.action.clone(),
            since: since_text,
            at: humantime::format_rfc3339_seconds(now).to_string(),
            dashboard,
            title,
            text,
        }
    }
}

/// A condition being tracked.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Active {
    condition: Condition,
    since: SystemTime,
    /// The tier last sent (`None`: not sent yet, throttled).
    sent_tier: Option<Tier>,
}

/// When a message last went out for a rule and target.
#[derive(Clone, Copy, Debug)]
struct Sent {
    at: Instant,
    tier: Tier,
}

/// One chain's part of a [`Throttle`], as the state store keeps it: what is firing and what was
/// sent when (by the wall clock, so that another process, or this one restarted, can go on).
#[derive(Debug, Default, Serialize, Deserialize)]
struct ChainAlertState {
    active: Vec<Active>,
    last_sent: Vec<StoredSent>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredSent {
    rule: Rule,
    target: String,
    chain: String,
    at: SystemTime,
    tier: Tier,
}

/// Decides which messages go out: one per rule and target per `throttle` window, escalations at
/// once, a resolution for every alert that was sent. Pure bookkeeping: time comes in as arguments.
#[derive(Debug, Default)]
pub struct Throttle {
    active: HashMap<(Rule, String), Active>,
    /// When a message last went out per rule and target, the tier it had and its chain (kept after
    /// resolution: a condition that comes back within `throttle` waits, unless it is worse).
    last_sent: HashMap<(Rule, String), (Sent, String)>,
}

impl Throttle {
    /// Takes the conditions that hold at `now` and returns the messages to send.
    pub fn update(
        &mut self,
        conditions: Vec<Condition>,
        now: Instant,
        wall: SystemTime,
        throttle: Duration,
        dashboard_url: &str,
    ) -> Vec<Notification> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for c in conditions {
            let key = (c.rule, c.target());
            seen.insert(key.clone());
            let a = self.active.entry(key.clone()).or_insert_with(|| Active {
                condition: c.clone(),
                since: wall,
                sent_tier: None,
            });
            a.condition = c;
            let tier = a.condition.tier;
            let due = match a.sent_tier {
                // Escalated since it was sent: at once.
                Some(sent) => tier > sent,
                // New (or held back): once the window since the last message has passed, or at
                // once if it is worse than that message.
                None => self.last_sent.get(&key).is_none_or(|(last, _)| {
                    now.duration_since(last.at) >= throttle || tier > last.tier
                }),
            };
            if due {
                a.sent_tier = Some(tier);
                let chain = a.condition.chain.clone();
                self.last_sent.insert(key, (Sent { at: now, tier }, chain));
                out.push(Notification::new(
                    Status::Firing,
                    &a.condition,
                    tier,
                    a.since,
                    dashboard_url,
                ));
            }
        }
        let gone: Vec<_> = self
            .active
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            let Some(a) = self.active.remove(&key) else {
                continue;
            };
            if let Some(tier) = a.sent_tier {
                let chain = a.condition.chain.clone();
                self.last_sent.insert(key, (Sent { at: now, tier }, chain));
                out.push(Notification::new(
                    Status::Resolved,
                    &a.condition,
                    tier,
                    a.since,
                    dashboard_url,
                ));
            }
        }
        out
    }

    /// Forgets `chain`'s alerts without resolving them (another agent leads it now, and goes on
    /// with them from the state store).
    pub fn forget_chain(&mut self, chain: &str) {
        self.active.retain(|_, a| a.condition.chain != chain);
        self.last_sent.retain(|_, (_, c)| c != chain);
    }

    /// `chain`'s part, as JSON for the state store; `now` and `wall` are the same instant.
    pub fn export_chain(&self, chain: &str, now: Instant, wall: SystemTime) -> String {
        let state = ChainAlertState {
            active: self
                .active
                .values()
                .filter(|a| a.condition.chain == chain)
                .cloned()
                .collect(),
            last_sent: self
                .last_sent
                .iter()
                .filter(|(_, (_, c))| c == chain)
                .map(|((rule, target), (sent, c))| StoredSent {
                    rule: *rule,
                    target: target.clone(),
                    chain: c.clone(),
                    at: wall
                        .checked_sub(now.saturating_duration_since(sent.at))
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                    tier: sent.tier,
                })
                .collect(),
        };
        serde_json::to_string(&state).unwrap_or_default()
    }

    /// Takes `chain`'s part back from `json` (as [`Throttle::export_chain`] wrote it, maybe in
    /// another process): alerts sent stay sent, so a condition that still holds is not announced
    /// again, and one that cleared is resolved. `now` and `wall` are the same instant. A state
    /// that does not parse is reported and ignored.
    pub fn import_chain(&mut self, chain: &str, json: &str, now: Instant, wall: SystemTime) {
        let state: ChainAlertState = match serde_json::from_str(json) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(chain, error = %e, "ignoring the stored alert state: it does not parse");
                return;
            }
        };
        self.forget_chain(chain);
        for a in state
            .active
            .into_iter()
            .filter(|a| a.condition.chain == chain)
        {
            self.active
                .insert((a.condition.rule, a.condition.target()), a);
        }
        for s in state.last_sent.into_iter().filter(|s| s.chain == chain) {
            // A message sent before this process's clock can say is older than any throttle.
            let ago = wall.duration_since(s.at).unwrap_or_default();
            if let Some(at) = now.checked_sub(ago) {
                let sent = Sent { at, tier: s.tier };
                self.last_sent.insert((s.rule, s.target), (sent, s.chain));
            }
        }
    }

    /// Alerts firing now: rule, target, tier.
    pub fn firing(&self) -> Vec<(Rule, String, Tier)> {
        let mut v: Vec<_> = self
            .active
            .iter()
            .map(|((r, t), a)| (*r, t.clone(), a.condition.tier))
            .collect();
        v.sort();
        v
    }
}

/// Counts of a chain's provider switches over the `max_switches` window. It keeps the switch total
/// only when it changed (and the last value from before the window, as the window's base), so a chain
/// that does not switch holds one sample however long the window: one per tick over ten minutes was
/// 24 KiB per chain, 24 MiB at 1,000 chains, filling for the window's length after start-up.
#[derive(Debug, Default)]
struct SwitchWindow {
    /// `(since, total)`: the total was `total` from `since` until the next sample.
    samples: VecDeque<(Instant, u64)>,
}

impl SwitchWindow {
    /// The switches within `window` before `now`, given the total so far: the total now less the
    /// total at the window's start (at the first sample, while the agent has run less than that).
    fn in_window(&mut self, total: u64, now: Instant, window: Duration) -> u64 {
        if self.samples.back().is_none_or(|&(_, last)| last != total) {
            self.samples.push_back((now, total));
        }
        let start = now.checked_sub(window);
        // Drop what only times before the window's start need: the base is the last value set at or
        // before it.
        while self.samples.len() > 1 && start.is_some_and(|start| self.samples[1].0 <= start) {
            self.samples.pop_front();
        }
        let base = self.samples.front().map_or(total, |s| s.1);
        total.saturating_sub(base)
    }
}

/// The rules' view of a chain, from the same snapshot and verdict as every other health surface
/// (which it also exports as metrics).
fn snapshot(
    view: &ChainView,
    recent_switches: u64,
    metrics: &Metrics,
    exported: &mut health::Exported,
) -> ChainSnapshot {
    let s = health::Snapshot::of(view);
    let verdict = health::judge(&s);
    health::export_changes(metrics, &s, &verdict, exported);
    let streak = view
        .stats
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take_peak_streak();
    ChainSnapshot {
        name: s.name,
        since_last_block: s.since_last_block,
        last_block: s.last.map(|b| b.number),
        missed_streak: streak,
        recent_switches,
        active: s.pool.current_provider,
        usable: verdict.usable,
        providers: s
            .pool
            .providers
            .into_iter()
            .map(|p| ProviderSnapshot {
                name: p.name,
                state: p.state,
                consecutive_failures: p.consecutive_failures,
                error_rate: p.error_rate,
                window_calls: p.window_calls,
                p95: p
                    .latency_ms
                    .map(|l| Duration::from_secs_f64(l.p95.max(0.0) / 1000.0)),
            })
            .collect(),
    }
}

/// Which chains this agent evaluates alerts for, and where their alert state is kept: only a
/// chain's leader evaluates and sends its alerts (every chain, for a single agent); its throttle
/// and resolution state is saved before its messages go, under the chain's lease, and taken back
/// by whoever leads the chain next, so that a failover (or a restart) neither repeats a firing
/// alert nor loses its resolution.
pub struct AlertState {
    /// The state store.
    pub store: Arc<dyn StateStore>,
    /// In cluster mode, this agent's instance name (the holder in the leases' fences).
    pub instance: Option<String>,
}

impl AlertState {
    /// Whether this agent leads `view`'s chain, and under which fence.
    fn leads(&self, view: &ChainView) -> Option<Option<Fence>> {
        match (&view.role, &self.instance) {
            (Some(role), Some(instance)) => match role.role() {
                Role::Leader { epoch } => Some(Some(Fence {
                    holder: instance.clone(),
                    epoch,
                })),
                Role::Standby => None,
            },
            _ => Some(None),
        }
    }
}

/// Evaluates the rules every second until `cancel`, and hands each message to `dispatcher`; each
/// chain's health verdict is exported to `metrics` on the way, and the alerts firing are left on
/// `board`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    cfg: AlertsConfig,
    streak_threshold: u64,
    chains: Vec<ChainView>,
    dispatcher: Arc<deliver::Dispatcher>,
    metrics: Arc<Metrics>,
    board: Arc<Board>,
    state: AlertState,
    cancel: CancellationToken,
) {
    let mut throttle = Throttle::default();
    let mut switches: Vec<SwitchWindow> = chains.iter().map(|_| SwitchWindow::default()).collect();
    // What was last exported of each chain's verdict.
    let mut exported: Vec<health::Exported> = vec![health::Exported::default(); chains.len()];
    // Per chain, the fence its alert state was taken back under (`Some(None)`: a single agent's).
    let mut taken: Vec<Option<Option<Fence>>> = vec![None; chains.len()];
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let mut conditions = Vec::new();
        let mut fences: HashMap<&str, Option<Fence>> = HashMap::new();
        for (i, (view, window)) in chains.iter().zip(&mut switches).enumerate() {
            let now = Instant::now();
            let recent = window.in_window(view.pool.switches(), now, cfg.max_switches.window.0);
            let snap = snapshot(view, recent, &metrics, &mut exported[i]);
            let Some(fence) = state.leads(view) else {
                if taken[i].take().is_some() {
                    throttle.forget_chain(&view.name);
                }
                continue;
            };
            if taken[i].as_ref() != Some(&fence) {
                // Newly led (or led again under a new lease): the chain's alerts go on from where
                // its last leader left them.
                let (store, name) = (state.store.clone(), view.name.clone());
                match tokio::task::spawn_blocking(move || store.load_alert_state(&name)).await {
                    Ok(Ok(Some(json))) => {
                        throttle.import_chain(&view.name, &json, Instant::now(), SystemTime::now())
                    }
                    Ok(Ok(None)) => throttle.forget_chain(&view.name),
                    Ok(Err(e)) => {
                        tracing::warn!(chain = %view.name, error = %e, "cannot read the chain's alert state; will retry");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(chain = %view.name, error = %e, "alert state task failed; will retry");
                        continue;
                    }
                }
                taken[i] = Some(fence.clone());
            }
            fences.insert(view.name.as_str(), fence);
            conditions.extend(rules::evaluate(&cfg, streak_threshold, &snap));
        }
        let (now, wall) = (Instant::now(), SystemTime::now());
        let messages = throttle.update(conditions, now, wall, cfg.throttle.0, &cfg.dashboard_url);
        // Saved before sent: a message whose state cannot be saved under the chain's lease is
        // another leader's to send.
        let mut by_chain: Vec<(String, Vec<Notification>)> = Vec::new();
        for n in messages {
            match by_chain.iter_mut().find(|(c, _)| *c == n.chain) {
                Some((_, v)) => v.push(n),
                None => by_chain.push((n.chain.clone(), vec![n])),
            }
        }
        for (chain, messages) in by_chain {
            let json = throttle.export_chain(&chain, now, wall);
            let fence = fences.get(chain.as_str()).cloned().flatten();
            let store = state.store.clone();
            let name = chain.clone();
            let saved = tokio::task::spawn_blocking(move || {
                store.save_alert_state(&name, &json, fence.as_ref())
            })
            .await;
            match saved {
                Ok(Ok(())) => {}
                Ok(Err(e @ StoreError::Fenced { .. })) => {
                    tracing::warn!(chain = %chain, error = %e, "not sending the chain's alerts: another agent leads it now");
                    throttle.forget_chain(&chain);
                    if let Some(i) = chains.iter().position(|v| v.name == chain) {
                        taken[i] = None;
                    }
                    continue;
                }
                // Better twice than never: the messages go even if their state is not saved.
                Ok(Err(e)) => {
                    tracing::warn!(chain = %chain, error = %e, "cannot save the chain's alert state; sending anyway")
                }
                Err(e) => {
                    tracing::warn!(chain = %chain, error = %e, "alert state task failed; sending anyway")
                }
            }
            for n in messages {
                if n.rule == Rule::MissedBlocks {
                    // Misses recorded while the alert is out say so (`alert_sent`).
                    if let Some(view) = chains.iter().find(|v| v.name == n.chain) {
                        view.stats
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .set_alerting(n.status == Status::Firing);
                    }
                }
                dispatcher.send(n);
            }
        }
        board.set(
            throttle
                .firing()
                .into_iter()
                .map(|(rule, target, tier)| FiringAlert {
                    rule: rule.as_str(),
                    target,
                    tier: tier.as_str(),
                })
                .collect(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(rule: Rule, tier: Tier) -> Condition {
        Condition {
            rule,
            chain: "main".into(),
            provider: None,
            tier,
            what: "something".into(),
            action: "something else".into(),
        }
    }

    #[test]
    fn a_chains_alert_state_goes_on_in_another_throttle_without_repeats() {
        let throttle = Duration::from_secs(300);
        let (t0, wall) = (Instant::now(), SystemTime::now());
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut first = Throttle::default();
        let other = Condition {
            chain: "other".into(),
            ..cond(Rule::ProvidersDown, Tier::Warning)
        };
        let sent = first.update(
            vec![cond(Rule::ProvidersDown, Tier::Critical), other],
            at(0),
            wall,
            throttle,
            "",
        );
        assert_eq!(sent.len(), 2);
        let json = first.export_chain("main", at(1), wall + Duration::from_secs(1));
        // The leader is gone without resolving anything; the next one takes the state back.
        first.forget_chain("main");
        assert_eq!(first.firing().len(), 1, "the other chain's alert stays");
        let mut next = Throttle::default();
        next.import_chain("main", &json, at(2), wall + Duration::from_secs(2));
        assert_eq!(next.firing().len(), 1);
        // Still firing: not announced again.
        assert!(next
            .update(
                vec![cond(Rule::ProvidersDown, Tier::Critical)],
                at(3),
                wall,
                throttle,
                ""
            )
            .is_empty());
        // Cleared: resolved once, with the tier that was sent.
        let resolved = next.update(vec![], at(4), wall, throttle, "");
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, Status::Resolved);
        assert_eq!(resolved[0].tier, Tier::Critical);
        assert!(next.update(vec![], at(5), wall, throttle, "").is_empty());
        // Back within the throttle window (kept across the hand-over): held back.
        assert!(next
            .update(
                vec![cond(Rule::ProvidersDown, Tier::Critical)],
                at(6),
                wall,
                throttle,
                ""
            )
            .is_empty());
        // A state that does not parse changes nothing.
        next.import_chain("main", "{", at(7), wall);
        assert_eq!(next.firing().len(), 1);
    }

    #[test]
    fn one_message_per_rule_and_target_then_escalation_then_resolution() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let throttle = Duration::from_secs(300);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let w = Tier::Warning;
        let sent = t.update(
            vec![cond(Rule::ProvidersDown, w)],
            at(0),
            wall,
            throttle,
            "",
        );
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].status, Status::Firing);
        assert!(sent[0].title.starts_with("[WARNING] providers_down main"));
        // Still firing: nothing more (de-duplicated).
        for s in 1..10 {
            assert!(t
                .update(
                    vec![cond(Rule::ProvidersDown, w)],
                    at(s),
                    wall,
                    throttle,
                    ""
                )
                .is_empty());
        }
        // Worse: sent at once, throttle or not.
        let up = t.update(
            vec![cond(Rule::ProvidersDown, Tier::Emergency)],
            at(11),
            wall,
            throttle,
            "",
        );
        assert_eq!(up.len(), 1);
        assert_eq!(up[0].tier, Tier::Emergency);
        // Cleared: a resolution, with the tier last sent.
        let done = t.update(vec![], at(12), wall, throttle, "https://grafana.example/");
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].status, Status::Resolved);
        assert_eq!(done[0].tier, Tier::Emergency);
        assert_eq!(
            done[0].dashboard.as_deref(),
            Some("https://grafana.example/d/blockwatch-providers?var-chain=main")
        );
        assert!(done[0]
            .text
            .contains("Dashboard: https://grafana.example/d/"));
        // Back within the throttle window: held back (and so never resolved either)...
        assert!(t
            .update(
                vec![cond(Rule::ProvidersDown, w)],
                at(20),
                wall,
                throttle,
                ""
            )
            .is_empty());
        assert!(t.update(vec![], at(21), wall, throttle, "").is_empty());
        // ...and sent once the window has passed, if it still holds.
        assert!(t
            .update(
                vec![cond(Rule::ProvidersDown, w)],
                at(100),
                wall,
                throttle,
                ""
            )
            .is_empty());
        let later = t.update(
            vec![cond(Rule::ProvidersDown, w)],
            at(312),
            wall,
            throttle,
            "",
        );
        assert_eq!(later.len(), 1);
        // Another rule on the same target is its own alert.
        let other = t.update(
            vec![
                cond(Rule::ProvidersDown, w),
                cond(Rule::MissedBlocks, Tier::Critical),
            ],
            at(313),
            wall,
            throttle,
            "",
        );
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].rule, Rule::MissedBlocks);
        assert_eq!(t.firing().len(), 2);
    }

    #[test]
    fn a_held_back_alert_that_gets_worse_goes_at_once() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        let (wall, throttle) = (SystemTime::now(), Duration::from_secs(300));
        let at = |s: u64| t0 + Duration::from_secs(s);
        let down = |tier| vec![cond(Rule::ProvidersDown, tier)];
        assert_eq!(
            t.update(down(Tier::Warning), at(0), wall, throttle, "")
                .len(),
            1
        );
        assert_eq!(
            t.update(vec![], at(1), wall, throttle, "").len(),
            1,
            "resolved"
        );
        assert!(t
            .update(down(Tier::Warning), at(2), wall, throttle, "")
            .is_empty());
        let worse = t.update(down(Tier::Critical), at(3), wall, throttle, "");
        assert_eq!(worse.len(), 1);
        assert_eq!(worse[0].tier, Tier::Critical);
    }

    #[test]
    fn switches_are_counted_over_the_window_only() {
        let mut w = SwitchWindow::default();
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let window = Duration::from_secs(10);
        assert_eq!(w.in_window(3, at(0), window), 0);
        assert_eq!(w.in_window(5, at(5), window), 2);
        assert_eq!(w.in_window(9, at(10), window), 6);
        // The window starts after the switches to 5: from 5 to 9 is what is left in it.
        assert_eq!(w.in_window(9, at(16), window), 4);
        // And after the switches to 9: none.
        assert_eq!(w.in_window(9, at(21), window), 0);
        assert_eq!(w.samples.len(), 1);
    }

    #[test]
    fn a_chain_that_does_not_switch_keeps_one_sample_however_long_the_window() {
        let mut w = SwitchWindow::default();
        let t0 = Instant::now();
        let window = Duration::from_secs(600);
        for tick in 0..1_200 {
            assert_eq!(w.in_window(7, t0 + Duration::from_secs(tick), window), 0);
        }
        assert_eq!(w.samples.len(), 1);
        // One switch counts for the window's length, then leaves it.
        let then = t0 + Duration::from_secs(1_200);
        assert_eq!(w.in_window(8, then, window), 1);
        assert_eq!(w.in_window(8, then + Duration::from_secs(599), window), 1);
        assert_eq!(w.in_window(8, then + Duration::from_secs(600), window), 0);
        assert!(w.samples.len() <= 2);
    }
}
