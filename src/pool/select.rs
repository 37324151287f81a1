//! Selection: which provider a call tries first and in what order the rest follow (tiers of
//! usability, then the chain's selection policy: priority, round robin, or best score with a hold
//! before a challenger takes over), and the switch of the active provider when another one answers,
//! logged and counted with its reason. A second opinion or a hedge that wins never switches.

use std::time::{Duration, Instant};

use opentelemetry::KeyValue;

use super::{Answer, ProviderPool};
use crate::{
    config::Selection,
    rpc::{health::State, RpcError},
    telemetry::metrics::attr,
};

/// Under `selection = "best"`, a challenger must also be at least this much cheaper (in
/// milliseconds) than the current provider to take over.
const MIN_SWITCH_GAIN_MS: f64 = 20.0;

#[derive(Debug, Default)]
pub(super) struct PoolState {
    /// Index of the provider calls go to first.
    pub(super) active: Option<usize>,
    /// Next start position for round-robin selection.
    pub(super) rr_next: usize,
    /// Under `selection = "best"`: a provider clearly better than the active one, since when.
    pub(super) challenger: Option<(usize, Instant)>,
    /// Switches since start.
    pub(super) switches: u64,
    /// The latest switches, oldest first, at most [`RECENT_SWITCHES`].
    pub(super) recent: std::collections::VecDeque<Switch>,
}

/// Switches kept for the status page.
pub const RECENT_SWITCHES: usize = 10;

/// A change of the provider a chain's calls go to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Switch {
    /// When (Unix seconds).
    pub at: u64,
    /// The provider switched from.
    pub from: String,
    /// The provider switched to.
    pub to: String,
    /// Why (the `reason` of `blockwatch_provider_switches_total`).
    pub reason: &'static str,
}

/// The order in which a call tries providers, and why the first one is first.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) order: Vec<usize>,
    /// How many of `order` are usable (the rest are last resorts).
    pub(super) usable: usize,
    /// Why `order[0]` replaces the active provider, if it does.
    pub(super) switch_reason: &'static str,
    /// A second opinion (a provider other than the one that served a block is asked for it): whoever
    /// answers does not become the active provider.
    pub(super) side: bool,
}

impl ProviderPool {
    /// How much a provider may be used now: 0 usable, 1 cooling down or asked to wait, 2 lagging,
    /// 3 inconsistent, 4 unreachable, 5 circuit open; `None`: never (another chain).
    fn tier(&self, i: usize, now: Instant) -> Option<u8> {
        let p = &self.providers[i];
        if p.is_refused() {
            return None;
        }
        let waiting = p.cooling_until(now).is_some() || p.asked_to_wait_until().is_some();
        match p.state() {
            State::WrongChain if p.needs_chain_check() => Some(5),
            State::WrongChain => None,
            State::Alive | State::Degraded if !waiting => Some(0),
            State::Alive | State::Degraded => Some(1),
            State::Lagging => Some(2),
            State::Inconsistent => Some(3),
            State::Unreachable => Some(4),
            State::CircuitOpen => Some(5),
        }
    }

    /// The order in which providers are tried for the next call.
    pub(super) fn plan(&self) -> Plan {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut ready = Vec::new();
        let mut rest = Vec::new();
        for i in 0..self.providers.len() {
            match self.tier(i, now) {
                Some(0) => ready.push(i),
                Some(t) => rest.push((t, i)),
                None => {}
            }
        }
        let active = st.active;
        let mut switch_reason = match active {
            Some(a) if !ready.contains(&a) => {
                let p = &self.providers[a];
                match p.state() {
                    s if !s.is_usable() => s.as_str(),
                    _ if p.asked_to_wait_until().is_some() => "rate_limited",
                    // Failed recently, or lost calls to hedges.
                    _ => "cooldown",
                }
            }
            _ => "selection",
        };
        match self.selection {
            Selection::Priority => {
                ready.sort_by_key(|&i| (self.providers[i].priority, i));
                if switch_reason == "selection" {
                    switch_reason = "priority";
                }
            }
            Selection::RoundRobin => {
                if !ready.is_empty() {
                    let start = st.rr_next % ready.len();
                    ready.rotate_left(start);
                    st.rr_next = st.rr_next.wrapping_add(1);
                }
                switch_reason = "round_robin";
            }
            Selection::Best => {
                let costs: Vec<Option<f64>> = self.providers.iter().map(|p| p.cost_ms()).collect();
                // Providers with samples by cost, then unsampled ones by priority: no sample is no
                // proof of being best.
                ready.sort_by(|&a, &b| {
                    let key = |i: usize| (costs[i].is_none(), self.providers[i].priority, i);
                    match (costs[a], costs[b]) {
                        (Some(x), Some(y)) => x.total_cmp(&y).then(key(a).cmp(&key(b))),
                        _ => key(a).cmp(&key(b)),
                    }
                });
                if let Some(a) = active.filter(|a| ready.contains(a)) {
                    let c = ready[0];
                    let beaten = c != a
                        && match (costs[a], costs[c]) {
                            (Some(ca), Some(cc)) => {
                                cc * self.cfg.switch_ratio < ca && ca - cc >= MIN_SWITCH_GAIN_MS
                            }
                            (None, Some(_)) => true,
                            _ => false,
                        };
                    let held = match (beaten, st.challenger) {
                        (false, _) => {
                            st.challenger = None;
                            false
                        }
                        (true, Some((who, since))) if who == c => {
                            now.duration_since(since) >= self.cfg.switch_hold.0
                        }
                        (true, _) => {
                            st.challenger = Some((c, now));
                            false
                        }
                    };
                    if held {
                        switch_reason = "score";
                    } else {
                        ready.retain(|&i| i != a);
                        ready.insert(0, a);
                    }
                }
            }
        }
        let usable = ready.len();
        rest.sort_by_key(|&(t, i)| (t, self.providers[i].cooling_until(now), i));
        ready.extend(rest.into_iter().map(|(_, i)| i));
        Plan {
            order: ready,
            usable,
            switch_reason,
            side: false,
        }
    }

    /// The plan of a call that must not go to provider `exclude` (a second opinion on what it
    /// served), if given.
    pub(super) fn plan_without(&self, exclude: Option<usize>) -> Plan {
        let mut plan = self.plan();
        plan.side = exclude.is_some();
        if let Some(x) = exclude {
            if let Some(at) = plan.order.iter().position(|&i| i == x) {
                plan.order.remove(at);
                if at < plan.usable {
                    plan.usable -= 1;
                }
            }
        }
        plan
    }

    /// Makes `idx` the active provider unless `hedge` (a hedge that won one call is not a switch) or
    /// the call was a second opinion, counting the switch with its reason.
    pub(super) fn answered<T>(
        &self,
        idx: usize,
        value: T,
        attempts: u32,
        plan: &Plan,
        hedge: bool,
        first_failure: Option<(String, RpcError)>,
    ) -> Answer<T> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.active != Some(idx) && !hedge && !plan.side {
            let to = self.providers[idx].name.as_str();
            match st.active {
                Some(prev) if self.selection != Selection::RoundRobin => {
                    let from = self.providers[prev].name.as_str();
                    // Not the plan's first choice: the providers before it failed this very call.
                    let reason = if plan.order.first() != Some(&idx) {
                        "failover"
                    } else {
                        plan.switch_reason
                    };
                    tracing::info!(chain = %self.chain, from, to, reason, "provider_switch");
                    st.switches += 1;
                    if st.recent.len() == RECENT_SWITCHES {
                        st.recent.pop_front();
                    }
                    st.recent.push_back(Switch {
                        at: std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_secs(),
                        from: from.to_owned(),
                        to: to.to_owned(),
                        reason,
                    });
                    self.metrics.provider_switches.add(
                        1,
                        &[
                            KeyValue::new(attr::CHAIN, self.chain.clone()),
                            KeyValue::new(attr::FROM, from.to_owned()),
                            KeyValue::new(attr::TO, to.to_owned()),
                            KeyValue::new(attr::REASON, reason),
                        ],
                    );
                }
                Some(_) => {}
                None => tracing::info!(chain = %self.chain, provider = to, "first provider in use"),
            }
            st.active = Some(idx);
            st.challenger = None;
        }
        Answer {
            value,
            provider: self.providers[idx].clone(),
            attempts,
            first_failure,
            served_in: Duration::ZERO,
            kept: None,
        }
    }
}
