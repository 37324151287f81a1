//! Every instrument blockwatch records, created once here and passed to where the events happen.
//!
//! Names follow the metric table of docs/telemetry.md and naming rules (durations in `s`, counts with an annotation unit,
//! no `total` or unit words in names, explicit bucket boundaries), so that the Prometheus names on
//! `/metrics` and behind the Collector are the same. Attribute values come from bounded sets:
//! chain and provider names from the config, methods, error classes and outcomes from the code.

use std::sync::Arc;

use opentelemetry::{
    metrics::{Counter, Gauge, Meter, ObservableCounter},
    KeyValue,
};

use super::exemplars::{ExemplarFamily, TracedHistogram};

/// Attribute keys, shared with spans and dashboards.
pub mod attr {
    /// The chain's configured name.
    pub const CHAIN: &str = "chain";
    /// The provider's configured name.
    pub const PROVIDER: &str = "provider";
    /// The JSON-RPC method.
    pub const METHOD: &str = "method";
    /// `ok` or `error`.
    pub const OUTCOME: &str = "outcome";
    /// A low-cardinality error class (see `RpcError::error_class`).
    pub const ERROR_TYPE: &str = "error_type";
    /// A failed call's JSON-RPC error code or HTTP status, from a known set, else `other`; `none`
    /// when the failure has no code (see `RpcError::code_label`).
    pub const CODE: &str = "code";
    /// The provider switched from.
    pub const FROM: &str = "from";
    /// The provider switched to.
    pub const TO: &str = "to";
    /// Why a switch happened.
    pub const REASON: &str = "reason";
    /// A missed block's severity.
    pub const SEVERITY: &str = "severity";
    /// A provider's health state.
    pub const STATE: &str = "state";
    /// An alert channel (its kind, with an index when several share it).
    pub const CHANNEL: &str = "channel";
    /// An alert rule.
    pub const RULE: &str = "rule";
    /// An alert's tier.
    pub const TIER: &str = "tier";
    /// `firing` or `resolved`.
    pub const STATUS: &str = "status";
}

/// Bucket boundaries for RPC durations, in seconds: 5 ms to 10 s.
const RPC_DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0,
];

/// Bucket boundaries for block delays, in seconds: block timestamps have whole seconds, and a
/// block a few minutes late is as late as it matters.
const BLOCK_DELAY_BUCKETS: [f64; 13] = [
    0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// The instruments.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// `blockwatch.block.lag` (s): how far behind its timestamp the newest block was emitted.
    pub block_lag: Gauge<f64>,
    /// `blockwatch.blocks.processed` ({block}).
    pub blocks_processed: Counter<u64>,
    /// `blockwatch.reorgs` ({reorg}).
    pub reorgs: Counter<u64>,
    /// `blockwatch.provider.switches` ({switch}).
    pub provider_switches: Counter<u64>,
    /// `blockwatch.alerts.sent` ({message}): alert messages delivered, per channel.
    pub alerts_sent: Counter<u64>,
    /// `blockwatch.alerts.failed` ({message}): alert messages given up on, per channel.
    pub alerts_failed: Counter<u64>,
    /// `blockwatch.rpc.errors` ({error}), by error class and code.
    pub rpc_errors: Counter<u64>,
    /// `blockwatch.rpc.duration` (s), per attempt, with exemplars pointing at the attempt's span.
    pub rpc_duration: TracedHistogram,
    /// `blockwatch.block.delay` (s): each emitted block's delay after its timestamp, with
    /// exemplars pointing at the block's `process_block` span.
    pub block_delay: TracedHistogram,
    /// `blockwatch.blocks.late` ({block}): blocks emitted more than the chain's `max_block_delay`
    /// after their timestamp (the bad events of the block-freshness objective).
    pub blocks_late: Counter<u64>,
    /// `blockwatch.provider.cost_units` ({unit}): rate-limit cost units spent on requests sent, by
    /// method (`pool.method_costs`, 1 per request unless set; a batch pays for each block).
    pub provider_cost_units: Counter<u64>,
    /// `blockwatch.provider.head` ({block}): the newest block each provider announced.
    pub provider_head: Gauge<u64>,
    /// `blockwatch.ratelimit.throttled` ({request}): calls that had to wait for the client-side limit.
    pub ratelimit_throttled: Counter<u64>,
    /// `blockwatch.block.integrity_errors` ({block}): blocks refused as inconsistent.
    pub integrity_errors: Counter<u64>,
    /// `blockwatch.provider.up` (1/0 per state): the state each provider is in.
    pub provider_up: Gauge<u64>,
    /// `blockwatch.rpc.hedges` ({request}): hedged calls, by provider hedged to and outcome.
    pub rpc_hedges: Counter<u64>,
    /// `blockwatch.provider.disagreements` ({block}): heights at which a provider announced
    /// another hash than another provider.
    pub provider_disagreements: Counter<u64>,
    /// `blockwatch.blocks.missed` ({block}), by reason and severity when found.
    pub blocks_missed: Counter<u64>,
    /// `blockwatch.blocks.recovered` ({block}).
    pub blocks_recovered: Counter<u64>,
    /// `blockwatch.missed_block.recovery.duration` (s), with exemplars pointing at the recovered
    /// block's `process_block` span.
    pub recovery_duration: TracedHistogram,
    /// `blockwatch.missed_blocks.streak` ({block}): missed blocks in a row, now.
    pub missed_streak: Gauge<u64>,
    /// `blockwatch.provider.inconsistencies` ({claim}): claims a provider was caught in that the
    /// others do not back, by reason (`head_ahead`, `head_backwards`, `null_below_head`,
    /// `wrong_block`).
    pub provider_inconsistencies: Counter<u64>,
    /// `blockwatch.blocks.behind` ({block}): blocks between the chain head and the last block
    /// emitted (the agent's own backlog: lag, not misses).
    pub blocks_behind: Gauge<u64>,
    /// `blockwatch.chain.state` (1/0 per state): the state each chain is in (`healthy`,
    /// `catching_up`, `degraded`, `unhealthy`), the verdict `/health` gives.
    pub chain_state: Gauge<u64>,
    /// `blockwatch.cluster.leader`: 1 for a chain this agent leads, 0 for one it stands by for
    /// (cluster mode).
    pub cluster_leader: Gauge<u64>,
    /// `blockwatch.cluster.lease.acquisitions` ({lease}): chain leases this agent took.
    pub cluster_lease_acquisitions: Counter<u64>,
    /// `blockwatch.cluster.lease.losses` ({lease}): chain leases this agent stopped holding, by
    /// `reason` (`expired`, `refused`, `fenced`, `store_error`, `rebalance`, `shutdown`).
    pub cluster_lease_losses: Counter<u64>,
    /// `blockwatch.cluster.fenced_writes` ({write}): writes refused because their lease no longer
    /// held — by the shared store (the write's fence was not the chain's current lease) or before
    /// reaching it (the lease's local clock had run out).
    pub cluster_fenced_writes: Counter<u64>,
    /// `blockwatch.spans.sampled_out` ({span}): routine call spans not exported (outside
    /// `telemetry.routine_call_share`; see [`super::sampling`]).
    pub spans_sampled_out: ObservableCounter<u64>,
}

/// Bucket bounds of the recovery duration histogram, in seconds.
const RECOVERY_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Help of the RPC duration histogram, the same on both routes.
const RPC_DURATION_HELP: &str = "Duration of each JSON-RPC attempt";
/// Help of the recovery duration histogram.
const RECOVERY_HELP: &str = "Time from finding a block missed to emitting it";
/// Help of the block delay histogram.
const BLOCK_DELAY_HELP: &str = "Time from each emitted block's timestamp to its emission";

impl Metrics {
    /// The OpenMetrics sides of the histograms with exemplars.
    pub fn exemplar_families(&self) -> Vec<Arc<ExemplarFamily>> {
        vec![
            self.rpc_duration.family(),
            self.block_delay.family(),
            self.recovery_duration.family(),
        ]
    }

    /// Creates every instrument on `meter`.
    pub fn new(meter: &Meter) -> Self {
        Self {
            block_lag: meter
                .f64_gauge("blockwatch.block.lag")
                .with_unit("s")
                .with_description(
                    "Time between the newest emitted block's timestamp and its emission",
                )
                .build(),
            blocks_processed: meter
                .u64_counter("blockwatch.blocks.processed")
                .with_unit("{block}")
                .with_description("Canonical blocks emitted")
                .build(),
            reorgs: meter
                .u64_counter("blockwatch.reorgs")
                .with_unit("{reorg}")
                .with_description("Reorganisations followed")
                .build(),
            provider_switches: meter
                .u64_counter("blockwatch.provider.switches")
                .with_unit("{switch}")
                .with_description("Changes of the provider answering a chain's calls")
                .build(),
            alerts_sent: meter
                .u64_counter("blockwatch.alerts.sent")
                .with_unit("{message}")
                .with_description("Alert messages delivered, per channel, rule, tier and status")
                .build(),
            alerts_failed: meter
                .u64_counter("blockwatch.alerts.failed")
                .with_unit("{message}")
                .with_description("Alert messages that could not be delivered after retries, or found the channel's queue full")
                .build(),
            rpc_errors: meter
                .u64_counter("blockwatch.rpc.errors")
                .with_unit("{error}")
                .with_description(
                    "Failed JSON-RPC attempts, by error class and JSON-RPC code or HTTP status",
                )
                .build(),
            rpc_duration: TracedHistogram::new(
                meter
                    .f64_histogram("blockwatch.rpc.duration")
                    .with_unit("s")
                    .with_description(RPC_DURATION_HELP)
                    .with_boundaries(RPC_DURATION_BUCKETS.to_vec())
                    .build(),
                "blockwatch_rpc_duration_seconds",
                RPC_DURATION_HELP,
                &RPC_DURATION_BUCKETS,
            ),
            block_delay: TracedHistogram::new(
                meter
                    .f64_histogram("blockwatch.block.delay")
                    .with_unit("s")
                    .with_description(BLOCK_DELAY_HELP)
                    .with_boundaries(BLOCK_DELAY_BUCKETS.to_vec())
                    .build(),
                "blockwatch_block_delay_seconds",
                BLOCK_DELAY_HELP,
                &BLOCK_DELAY_BUCKETS,
            ),
            blocks_late: meter
                .u64_counter("blockwatch.blocks.late")
                .with_unit("{block}")
                .with_description(
                    "Blocks emitted more than the chain's max_block_delay after their timestamp",
                )
                .build(),
            provider_cost_units: meter
                .u64_counter("blockwatch.provider.cost_units")
                .with_unit("{unit}")
                .with_description(
                    "Rate-limit cost units spent on requests sent, by method (pool.method_costs)",
                )
                .build(),
            provider_head: meter
                .u64_gauge("blockwatch.provider.head")
                .with_unit("{block}")
                .with_description("Newest block number each provider announced")
                .build(),
            ratelimit_throttled: meter
                .u64_counter("blockwatch.ratelimit.throttled")
                .with_unit("{request}")
                .with_description("Calls delayed by the client-side rate limit")
                .build(),
            integrity_errors: meter
                .u64_counter("blockwatch.block.integrity_errors")
                .with_unit("{block}")
                .with_description("Blocks refused because their hash or number did not match")
                .build(),
            provider_up: meter
                .u64_gauge("blockwatch.provider.up")
                .with_unit("{provider}")
                .with_description("1 for the health state each provider is in, 0 for the others")
                .build(),
            rpc_hedges: meter
                .u64_counter("blockwatch.rpc.hedges")
                .with_unit("{request}")
                .with_description(
                    "Calls also sent to a second provider because the first was slow, by outcome",
                )
                .build(),
            blocks_missed: meter
                .u64_counter("blockwatch.blocks.missed")
                .with_unit("{block}")
                .with_description("Blocks found missed, by reason and severity when found")
                .build(),
            blocks_recovered: meter
                .u64_counter("blockwatch.blocks.recovered")
                .with_unit("{block}")
                .with_description("Missed blocks got back and emitted")
                .build(),
            recovery_duration: TracedHistogram::new(
                meter
                    .f64_histogram("blockwatch.missed_block.recovery.duration")
                    .with_unit("s")
                    .with_description(RECOVERY_HELP)
                    .with_boundaries(RECOVERY_BUCKETS.to_vec())
                    .build(),
                "blockwatch_missed_block_recovery_duration_seconds",
                RECOVERY_HELP,
                &RECOVERY_BUCKETS,
            ),
            missed_streak: meter
                .u64_gauge("blockwatch.missed_blocks.streak")
                .with_unit("{block}")
                .with_description("Missed blocks in a row, now")
                .build(),
            provider_inconsistencies: meter
                .u64_counter("blockwatch.provider.inconsistencies")
                .with_unit("{claim}")
                .with_description(
                    "Claims a provider was caught in that the other providers do not back, by reason",
                )
                .build(),
            blocks_behind: meter
                .u64_gauge("blockwatch.blocks.behind")
                .with_unit("{block}")
                .with_description("Blocks between the chain head and the last block emitted")
                .build(),
            chain_state: meter
                .u64_gauge("blockwatch.chain.state")
                .with_unit("{chain}")
                .with_description("1 for the health state each chain is in, 0 for the others")
                .build(),
            provider_disagreements: meter
                .u64_counter("blockwatch.provider.disagreements")
                .with_unit("{block}")
                .with_description(
                    "Heights at which a provider announced another hash than another provider",
                )
                .build(),
            cluster_leader: meter
                .u64_gauge("blockwatch.cluster.leader")
                .with_description("1 for a chain this agent leads, 0 for one it stands by for")
                .build(),
            cluster_lease_acquisitions: meter
                .u64_counter("blockwatch.cluster.lease.acquisitions")
                .with_unit("{lease}")
                .with_description("Chain leases this agent took")
                .build(),
            cluster_lease_losses: meter
                .u64_counter("blockwatch.cluster.lease.losses")
                .with_unit("{lease}")
                .with_description("Chain leases this agent stopped holding, by reason")
                .build(),
            cluster_fenced_writes: meter
                .u64_counter("blockwatch.cluster.fenced_writes")
                .with_unit("{write}")
                .with_description(
                    "Writes refused because their lease no longer held: by the shared store's fence, or before reaching it",
                )
                .build(),
            spans_sampled_out: meter
                .u64_observable_counter("blockwatch.spans.sampled_out")
                .with_unit("{span}")
                .with_description(
                    "Spans of routine JSON-RPC calls not exported (outside telemetry.routine_call_share)",
                )
                .with_callback(|o| o.observe(super::sampling::dropped(), &[]))
                .build(),
        }
    }

    /// Records whether this agent leads `chain`.
    pub fn set_cluster_leader(&self, chain: &str, leads: bool) {
        self.cluster_leader.record(
            u64::from(leads),
            &[KeyValue::new(attr::CHAIN, chain.to_owned())],
        );
    }

    /// Counts a lease taken on `chain`.
    pub fn cluster_lease_acquired(&self, chain: &str) {
        self.cluster_lease_acquisitions
            .add(1, &[KeyValue::new(attr::CHAIN, chain.to_owned())]);
    }

    /// Counts a lease on `chain` lost for `reason`.
    pub fn cluster_lease_lost(&self, chain: &str, reason: &'static str) {
        self.cluster_lease_losses.add(
            1,
            &[
                KeyValue::new(attr::CHAIN, chain.to_owned()),
                KeyValue::new("reason", reason),
            ],
        );
    }

    /// Counts a write on `chain` refused by its fence.
    pub fn cluster_write_fenced(&self, chain: &str) {
        self.cluster_fenced_writes
            .add(1, &[KeyValue::new(attr::CHAIN, chain.to_owned())]);
    }
}

/// `[chain, provider]` attributes.
pub fn chain_provider(chain: &str, provider: &str) -> [KeyValue; 2] {
    // Shared strings: a provider's attributes are cloned for every call it makes.
    let shared = |s: &str| opentelemetry::StringValue::from(std::sync::Arc::<str>::from(s));
    [
        KeyValue::new(attr::CHAIN, shared(chain)),
        KeyValue::new(attr::PROVIDER, shared(provider)),
    ]
}
