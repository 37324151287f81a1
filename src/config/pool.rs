//! `[pool]`: retry, failover, fetch, health and hedging settings shared by every chain's provider
//! pool. A checked value is in the range the pool's engine is built for.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{defaults::*, ByteSize, ConfigError, HumanDuration};

/// `[pool]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Attempts per call across all providers before the call fails.
    pub max_attempts: u32,
    /// First delay between attempts; doubles each attempt, with full jitter.
    pub retry_initial_backoff: HumanDuration,
    /// Longest delay between attempts.
    pub retry_max_backoff: HumanDuration,
    /// How long a provider that just failed is passed over while others are usable.
    pub failover_cooldown: HumanDuration,
    /// Largest JSON-RPC response accepted from a provider.
    pub max_response_size: ByteSize,
    /// Blocks fetched concurrently while catching up (each still goes through the rate limit).
    pub fetch_concurrency: usize,
    /// First delay before reopening a dropped `newHeads` subscription; doubles up to 30 s.
    pub ws_reconnect_backoff: HumanDuration,
    /// How often each provider's chain id is checked again while in use.
    pub chain_check_interval: HumanDuration,
    /// Retries may add at most this share of the first attempts' load (0.2: 20 %).
    pub retry_budget: f64,
    /// Retries per second allowed on top of the budget (banked for up to 10 s).
    pub retry_budget_floor: f64,
    /// How often providers that calls have not used lately are probed (chain id, head); three
    /// times as long for `alive` ones whose `newHeads` subscription is live.
    pub probe_interval: HumanDuration,
    /// Window of latency percentiles, error rate and rate-limit pressure behind states and scores.
    pub score_window: HumanDuration,
    /// A provider whose head is more than this many blocks behind the chain head is lagging.
    pub out_of_sync_blocks: u64,
    /// A head more than this many blocks ahead of every other provider's is not believed until
    /// another provider comes close, or the chain could have grown that much since.
    pub head_outlier_blocks: u64,
    /// A provider caught in a claim the others do not back (a head it cannot serve, a head that
    /// went back, `null` for a block at or below its own head, another block than asked) is
    /// `inconsistent` for this long after its last such claim.
    pub inconsistent_for: HumanDuration,
    /// Error rate over the score window at which a provider is degraded.
    pub degraded_error_rate: f64,
    /// p95 latency at which a provider is degraded.
    pub degraded_latency: HumanDuration,
    /// Failure count (one per failure, minus a half per success) that opens a provider's circuit.
    pub circuit_failures: u32,
    /// Error rate over the score window that opens a provider's circuit.
    pub circuit_error_rate: f64,
    /// Calls in the score window before the error rate may open a circuit.
    pub circuit_min_calls: u64,
    /// How long an open circuit waits before a half-open probe.
    pub circuit_open_for: HumanDuration,
    /// A call not answered by this percentile of the provider's recent latency is also sent to the
    /// next provider, and the first good answer wins (0 disables hedging).
    pub hedge_percentile: u8,
    /// Shortest wait before a hedge.
    pub hedge_min_delay: HumanDuration,
    /// Under `selection = "best"`, a challenger's cost must be this many times lower than the
    /// current provider's…
    pub switch_ratio: f64,
    /// …for this long before it takes over.
    pub switch_hold: HumanDuration,
    /// Rate-limit tokens each method costs (default 1): one limit can model compute units.
    pub method_costs: BTreeMap<String, u32>,
}

impl PoolConfig {
    /// Checks retries, sizes, budgets and intervals, then the health knobs.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let p = self;
        if p.max_attempts == 0 {
            return Err(ConfigError::invalid(
                "pool.max_attempts",
                "must be at least 1",
            ));
        }
        if p.retry_initial_backoff.0.is_zero() || p.retry_max_backoff < p.retry_initial_backoff {
            return Err(ConfigError::invalid(
                "pool.retry_max_backoff",
                "must be at least pool.retry_initial_backoff, which must be above zero",
            ));
        }
        if p.max_response_size.0 < 1024 || p.max_response_size.0 > u64::from(u32::MAX) {
            return Err(ConfigError::invalid(
                "pool.max_response_size",
                "must be between 1KB and 4GB",
            ));
        }
        if p.fetch_concurrency == 0 || p.fetch_concurrency > 256 {
            return Err(ConfigError::invalid(
                "pool.fetch_concurrency",
                "must be between 1 and 256",
            ));
        }
        if !(0.0..=10.0).contains(&p.retry_budget) {
            return Err(ConfigError::invalid(
                "pool.retry_budget",
                format!(
                    "{} is out of range: a share between 0 and 10",
                    p.retry_budget
                ),
            ));
        }
        if !(0.0..=10_000.0).contains(&p.retry_budget_floor) {
            return Err(ConfigError::invalid(
                "pool.retry_budget_floor",
                format!(
                    "{} is out of range: retries per second between 0 and 10000",
                    p.retry_budget_floor
                ),
            ));
        }
        if p.chain_check_interval.0 < std::time::Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                "pool.chain_check_interval",
                "must be at least 100ms",
            ));
        }
        p.validate_health()?;
        Ok(())
    }

    /// Checks the health, hedging and switching knobs.
    fn validate_health(&self) -> Result<(), ConfigError> {
        use std::time::Duration;
        let share = |key: &str, v: f64| {
            if v > 0.0 && v <= 1.0 {
                Ok(())
            } else {
                Err(ConfigError::invalid(
                    format!("pool.{key}"),
                    format!("{v} is out of range: a share above 0 and at most 1"),
                ))
            }
        };
        share("degraded_error_rate", self.degraded_error_rate)?;
        share("circuit_error_rate", self.circuit_error_rate)?;
        let at_least = |key: &str, d: HumanDuration, min: Duration| {
            if d.0 >= min {
                Ok(())
            } else {
                Err(ConfigError::invalid(
                    format!("pool.{key}"),
                    format!("must be at least {}", humantime::format_duration(min)),
                ))
            }
        };
        at_least(
            "probe_interval",
            self.probe_interval,
            Duration::from_millis(100),
        )?;
        at_least("score_window", self.score_window, Duration::from_secs(1))?;
        at_least(
            "inconsistent_for",
            self.inconsistent_for,
            Duration::from_millis(100),
        )?;
        at_least(
            "degraded_latency",
            self.degraded_latency,
            Duration::from_millis(1),
        )?;
        at_least(
            "circuit_open_for",
            self.circuit_open_for,
            Duration::from_millis(100),
        )?;
        if self.circuit_failures == 0 {
            return Err(ConfigError::invalid(
                "pool.circuit_failures",
                "must be at least 1",
            ));
        }
        if self.hedge_percentile > 99 {
            return Err(ConfigError::invalid(
                "pool.hedge_percentile",
                format!(
                    "{} is out of range: a percentile from 1 to 99, or 0 to turn hedging off",
                    self.hedge_percentile
                ),
            ));
        }
        if !(1.0..=100.0).contains(&self.switch_ratio) {
            return Err(ConfigError::invalid(
                "pool.switch_ratio",
                format!("{} is out of range: between 1 and 100", self.switch_ratio),
            ));
        }
        if let Some((method, _)) = self.method_costs.iter().find(|(_, &c)| c == 0) {
            return Err(ConfigError::invalid(
                format!("pool.method_costs.{method}"),
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// Rate-limit tokens a call of `method` costs.
    pub fn method_cost(&self, method: &str) -> u32 {
        self.method_costs.get(method).copied().unwrap_or(1)
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_initial_backoff: DEFAULT_RETRY_INITIAL_BACKOFF,
            retry_max_backoff: DEFAULT_RETRY_MAX_BACKOFF,
            failover_cooldown: DEFAULT_FAILOVER_COOLDOWN,
            max_response_size: DEFAULT_MAX_RESPONSE_SIZE,
            fetch_concurrency: DEFAULT_FETCH_CONCURRENCY,
            ws_reconnect_backoff: DEFAULT_WS_RECONNECT_BACKOFF,
            chain_check_interval: DEFAULT_CHAIN_CHECK_INTERVAL,
            retry_budget: DEFAULT_RETRY_BUDGET,
            retry_budget_floor: DEFAULT_RETRY_BUDGET_FLOOR,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            score_window: DEFAULT_SCORE_WINDOW,
            out_of_sync_blocks: DEFAULT_OUT_OF_SYNC_BLOCKS,
            head_outlier_blocks: DEFAULT_HEAD_OUTLIER_BLOCKS,
            inconsistent_for: DEFAULT_INCONSISTENT_FOR,
            degraded_error_rate: DEFAULT_DEGRADED_ERROR_RATE,
            degraded_latency: DEFAULT_DEGRADED_LATENCY,
            circuit_failures: DEFAULT_CIRCUIT_FAILURES,
            circuit_error_rate: DEFAULT_CIRCUIT_ERROR_RATE,
            circuit_min_calls: DEFAULT_CIRCUIT_MIN_CALLS,
            circuit_open_for: DEFAULT_CIRCUIT_OPEN_FOR,
            hedge_percentile: DEFAULT_HEDGE_PERCENTILE,
            hedge_min_delay: DEFAULT_HEDGE_MIN_DELAY,
            switch_ratio: DEFAULT_SWITCH_RATIO,
            switch_hold: DEFAULT_SWITCH_HOLD,
            method_costs: BTreeMap::new(),
        }
    }
}
