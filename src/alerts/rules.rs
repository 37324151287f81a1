//! The alert rules: from a snapshot of a chain, the conditions that hold now. Pure functions, so
//! that thresholds and tiers are tested without a running agent.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{AlertsConfig, Tier};

/// A rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// No new block for `no_new_block_after`.
    ChainStalled,
    /// Providers of a chain down (one: warning, several: critical, all: emergency) or degraded.
    ProvidersDown,
    /// A streak of `monitor.alert_threshold` missed blocks.
    MissedBlocks,
    /// More than `max_switches.count` switches within `max_switches.window`.
    ProviderSwitches,
    /// `consecutive_failures` failed calls in a row on one provider.
    ConsecutiveFailures,
    /// A provider's error rate over `error_rate`.
    ErrorRate,
    /// A provider's p95 latency over `p95_latency`.
    Latency,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 7] = [
        Rule::ChainStalled,
        Rule::ProvidersDown,
        Rule::MissedBlocks,
        Rule::ProviderSwitches,
        Rule::ConsecutiveFailures,
        Rule::ErrorRate,
        Rule::Latency,
    ];

    /// The name in texts, payloads and the `rule` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::ChainStalled => "chain_stalled",
            Rule::ProvidersDown => "providers_down",
            Rule::MissedBlocks => "missed_blocks",
            Rule::ProviderSwitches => "provider_switches",
            Rule::ConsecutiveFailures => "consecutive_failures",
            Rule::ErrorRate => "error_rate",
            Rule::Latency => "latency",
        }
    }

    /// The Grafana dashboard (uid) that shows what the rule watches.
    pub fn dashboard(self) -> &'static str {
        match self {
            Rule::ChainStalled | Rule::ProviderSwitches => "blockwatch-overview",
            Rule::MissedBlocks => "blockwatch-missed-blocks",
            Rule::ProvidersDown | Rule::ConsecutiveFailures | Rule::ErrorRate | Rule::Latency => {
                "blockwatch-providers"
            }
        }
    }
}

/// A provider as the rules see it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderSnapshot {
    /// Its name.
    pub name: String,
    /// Its health state (`alive`, `degraded`, `inconsistent`, `lagging`, `unreachable`,
    /// `circuit_open`, `wrong_chain`).
    pub state: &'static str,
    /// Failed calls since its last success.
    pub consecutive_failures: u32,
    /// Failed share of calls over its score window.
    pub error_rate: f64,
    /// Calls over its score window.
    pub window_calls: u64,
    /// p95 latency over its score window.
    pub p95: Option<Duration>,
}

impl ProviderSnapshot {
    fn down(&self) -> bool {
        matches!(
            self.state,
            "unreachable" | "circuit_open" | "wrong_chain" | "inconsistent"
        )
    }
}

/// A chain as the rules see it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainSnapshot {
    /// Its name.
    pub name: String,
    /// Since the last block was emitted.
    pub since_last_block: Duration,
    /// The last block emitted.
    pub last_block: Option<u64>,
    /// The longest run of missed blocks in a row since the last evaluation.
    pub missed_streak: u64,
    /// Provider switches within `max_switches.window`.
    pub recent_switches: u64,
    /// The provider calls go to first.
    pub active: Option<String>,
    /// Providers that are usable (`alive` or `degraded`), as the chain's health verdict counts
    /// them: none left is the emergency tier, as it is `/health`'s "no usable provider".
    pub usable: usize,
    /// Every provider.
    pub providers: Vec<ProviderSnapshot>,
}

/// A condition that holds now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// The rule.
    pub rule: Rule,
    /// The chain.
    pub chain: String,
    /// The provider, for per-provider rules.
    pub provider: Option<String>,
    /// How bad.
    pub tier: Tier,
    /// What is wrong, in a sentence.
    pub what: String,
    /// What the agent does about it.
    pub action: String,
}

impl Condition {
    /// The rule's target: the chain, or chain/provider.
    pub fn target(&self) -> String {
        match &self.provider {
            Some(p) => format!("{}/{p}", self.chain),
            None => self.chain.clone(),
        }
    }
}

/// Fewer calls than this in a window say too little for an error-rate alert.
const MIN_CALLS_FOR_RATE: u64 = 10;

/// The conditions that hold for `chain` now; `streak_threshold` is `monitor.alert_threshold`.
pub fn evaluate(
    cfg: &AlertsConfig,
    streak_threshold: u64,
    chain: &ChainSnapshot,
) -> Vec<Condition> {
    let mut out = Vec::new();
    let at = |rule, provider: Option<&str>, tier, what: String, action: String| Condition {
        rule,
        chain: chain.name.clone(),
        provider: provider.map(str::to_owned),
        tier,
        what,
        action,
    };
    let secs =
        |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string();
    if chain.since_last_block >= cfg.no_new_block_after.0 {
        let last = chain.last_block.map_or("no block yet".to_owned(), |n| {
            format!("the last was block {n}")
        });
        out.push(at(
            Rule::ChainStalled,
            None,
            Tier::Emergency,
            format!("no new block for {} ({last})", secs(chain.since_last_block)),
            "the agent keeps polling every provider for the next block and will emit it, in order, as soon as one serves it"
                .to_owned(),
        ));
    }
    let down: Vec<&ProviderSnapshot> = chain.providers.iter().filter(|p| p.down()).collect();
    let degraded: Vec<&ProviderSnapshot> = chain
        .providers
        .iter()
        .filter(|p| matches!(p.state, "degraded" | "lagging"))
        .collect();
    if !down.is_empty() || !degraded.is_empty() {
        let all_down = chain.usable == 0;
        let tier = if all_down {
            Tier::Emergency
        } else if down.len() >= 2 {
            Tier::Critical
        } else {
            Tier::Warning
        };
        let list = |ps: &[&ProviderSnapshot]| {
            ps.iter()
                .map(|p| format!("{} ({})", p.name, p.state))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut what = Vec::new();
        if !down.is_empty() {
            what.push(format!(
                "{} of {} providers down: {}",
                down.len(),
                chain.providers.len(),
                list(&down)
            ));
        }
        if !degraded.is_empty() {
            what.push(format!("degraded: {}", list(&degraded)));
        }
        let action = if all_down {
            "no provider is left: the agent probes them all and resumes the stream when one answers"
                .to_owned()
        } else {
            format!(
                "the agent sends calls to {} and probes the others until they recover",
                chain.active.as_deref().unwrap_or("the remaining providers")
            )
        };
        out.push(at(Rule::ProvidersDown, None, tier, what.join("; "), action));
    }
    if chain.missed_streak >= streak_threshold {
        out.push(at(
            Rule::MissedBlocks,
            None,
            Tier::Critical,
            format!(
                "{} blocks missed in a row (threshold {streak_threshold})",
                chain.missed_streak
            ),
            "the agent recovers each missed block from the other providers and keeps the stream in order; see the missed-block log"
                .to_owned(),
        ));
    }
    if chain.recent_switches > u64::from(cfg.max_switches.count) {
        out.push(at(
            Rule::ProviderSwitches,
            None,
            Tier::Warning,
            format!(
                "{} provider switches within {} (limit {})",
                chain.recent_switches,
                humantime::format_duration(cfg.max_switches.window.0),
                cfg.max_switches.count
            ),
            format!(
                "the agent fails over between providers; calls now go to {}",
                chain.active.as_deref().unwrap_or("none")
            ),
        ));
    }
    for p in &chain.providers {
        if p.state == "wrong_chain" {
            continue;
        }
        let failover = format!(
            "the agent fails its calls over to {}",
            match chain.active.as_deref() {
                Some(a) if a != p.name => a,
                _ => "the other providers",
            }
        );
        if p.consecutive_failures >= cfg.consecutive_failures {
            out.push(at(
                Rule::ConsecutiveFailures,
                Some(&p.name),
                Tier::Warning,
                format!("{} failed calls in a row", p.consecutive_failures),
                failover.clone(),
            ));
        }
        if p.window_calls >= MIN_CALLS_FOR_RATE && p.error_rate > cfg.error_rate {
            out.push(at(
                Rule::ErrorRate,
                Some(&p.name),
                Tier::Warning,
                format!(
                    "error rate {:.1}% over its last {} calls (limit {:.1}%)",
                    p.error_rate * 100.0,
                    p.window_calls,
                    cfg.error_rate * 100.0
                ),
                failover.clone(),
            ));
        }
        if let Some(p95) = p.p95.filter(|&l| l > cfg.p95_latency.0) {
            out.push(at(
                Rule::Latency,
                Some(&p.name),
                Tier::Warning,
                format!(
                    "p95 latency {} ms (limit {} ms)",
                    p95.as_millis(),
                    cfg.p95_latency.0.as_millis()
                ),
                "the agent hedges its slow calls to another provider and prefers faster ones"
                    .to_owned(),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(name: &str, state: &'static str) -> ProviderSnapshot {
        ProviderSnapshot {
            name: name.into(),
            state,
            consecutive_failures: 0,
            error_rate: 0.0,
            window_calls: 100,
            p95: Some(Duration::from_millis(80)),
        }
    }

    fn chain(states: &[&'static str]) -> ChainSnapshot {
        ChainSnapshot {
            name: "main".into(),
            since_last_block: Duration::from_secs(1),
            last_block: Some(100),
            missed_streak: 0,
            recent_switches: 0,
            active: Some("p0".into()),
            usable: states
                .iter()
                .filter(|s| matches!(**s, "alive" | "degraded"))
                .count(),
            providers: states
                .iter()
                .enumerate()
                .map(|(i, s)| provider(&format!("p{i}"), s))
                .collect(),
        }
    }

    fn rules(c: &ChainSnapshot) -> Vec<(Rule, Tier, Option<String>)> {
        evaluate(&AlertsConfig::default(), 5, c)
            .into_iter()
            .map(|x| (x.rule, x.tier, x.provider))
            .collect()
    }

    #[test]
    fn a_healthy_chain_has_no_condition() {
        assert!(rules(&chain(&["alive", "alive", "alive"])).is_empty());
    }

    #[test]
    fn tiers_follow_how_many_providers_are_down() {
        let one = rules(&chain(&["alive", "unreachable", "alive"]));
        assert_eq!(one, vec![(Rule::ProvidersDown, Tier::Warning, None)]);
        let degraded = rules(&chain(&["alive", "degraded", "alive"]));
        assert_eq!(degraded, vec![(Rule::ProvidersDown, Tier::Warning, None)]);
        let two = rules(&chain(&["circuit_open", "unreachable", "alive"]));
        assert_eq!(two, vec![(Rule::ProvidersDown, Tier::Critical, None)]);
        let all = rules(&chain(&["circuit_open", "unreachable", "wrong_chain"]));
        assert_eq!(all, vec![(Rule::ProvidersDown, Tier::Emergency, None)]);
        // No usable provider is the emergency, as it is /health's 503, whatever the states.
        let none_usable = rules(&chain(&["lagging", "inconsistent"]));
        assert_eq!(
            none_usable,
            vec![(Rule::ProvidersDown, Tier::Emergency, None)]
        );
        let liar = rules(&chain(&["alive", "inconsistent", "alive"]));
        assert_eq!(liar, vec![(Rule::ProvidersDown, Tier::Warning, None)]);
    }

    #[test]
    fn thresholds_are_inclusive_where_the_config_says_so() {
        let mut c = chain(&["alive", "alive"]);
        c.since_last_block = Duration::from_secs(60);
        c.missed_streak = 5;
        c.recent_switches = 6;
        c.providers[1].consecutive_failures = 5;
        c.providers[1].error_rate = 0.06;
        c.providers[0].p95 = Some(Duration::from_millis(2001));
        let got = rules(&c);
        for want in [
            (Rule::ChainStalled, Tier::Emergency, None),
            (Rule::MissedBlocks, Tier::Critical, None),
            (Rule::ProviderSwitches, Tier::Warning, None),
            (Rule::ConsecutiveFailures, Tier::Warning, Some("p1".into())),
            (Rule::ErrorRate, Tier::Warning, Some("p1".into())),
            (Rule::Latency, Tier::Warning, Some("p0".into())),
        ] {
            assert!(got.contains(&want), "{want:?} not in {got:?}");
        }
        // Just under every threshold: nothing.
        c.since_last_block = Duration::from_secs(59);
        c.missed_streak = 4;
        c.recent_switches = 5;
        c.providers[1].consecutive_failures = 4;
        c.providers[1].error_rate = 0.05;
        c.providers[0].p95 = Some(Duration::from_secs(2));
        assert_eq!(rules(&c), vec![]);
        // A high error rate over a handful of calls says too little.
        c.providers[1].error_rate = 1.0;
        c.providers[1].window_calls = 3;
        assert_eq!(rules(&c), vec![]);
    }

    #[test]
    fn texts_say_what_where_and_what_the_agent_does() {
        let mut c = chain(&["alive", "unreachable"]);
        c.providers[1].consecutive_failures = 7;
        let got = evaluate(&AlertsConfig::default(), 5, &c);
        let down = got.iter().find(|x| x.rule == Rule::ProvidersDown).unwrap();
        assert_eq!(down.what, "1 of 2 providers down: p1 (unreachable)");
        assert!(down.action.contains("sends calls to p0"), "{}", down.action);
        let failing = got
            .iter()
            .find(|x| x.rule == Rule::ConsecutiveFailures)
            .unwrap();
        assert_eq!(failing.target(), "main/p1");
        assert!(failing.action.contains("over to p0"));
    }
}
