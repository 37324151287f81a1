//! Every default value of the configuration, and the bounds some values are checked against. A key
//! left out of the file takes the default named here.

use super::{ByteSize, HumanDuration};

/// Default SQLite state file.
pub const DEFAULT_STATE_PATH: &str = "blockwatch.db";
/// Default block output.
pub const DEFAULT_BLOCK_OUTPUT: &str = "stdout";
/// Default time a chain's lease lasts without a renewal (cluster mode).
pub const DEFAULT_LEASE_TTL: HumanDuration = HumanDuration::from_secs(10);
/// Default time between two lease renewals (cluster mode).
pub const DEFAULT_RENEW_EVERY: HumanDuration = HumanDuration::from_secs(2);
/// Longest `cluster.instance` name.
pub const MAX_INSTANCE_LEN: usize = 128;
/// Default address of the HTTP API (`/metrics`, …).
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9464";
/// Default cap on the HTTP API's open connections.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 256;
/// Largest accepted `agent.http_max_connections`.
pub const MAX_HTTP_MAX_CONNECTIONS: usize = 65_536;
/// Default time an HTTP API client has to send a whole request head (also the longest idle wait
/// between two requests on a kept-alive connection).
pub const DEFAULT_HTTP_HEADER_TIMEOUT: HumanDuration = HumanDuration::from_secs(5);
/// Default time an HTTP API request has to be answered.
pub const DEFAULT_HTTP_REQUEST_TIMEOUT: HumanDuration = HumanDuration::from_secs(10);
/// Longest accepted HTTP API timeout.
pub const MAX_HTTP_TIMEOUT: HumanDuration = HumanDuration::from_secs(3600);
/// Default OpenTelemetry `service.name`.
pub const DEFAULT_SERVICE_NAME: &str = "blockwatch";
/// Default OTLP gRPC endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT` overrides; "" disables export).
pub const DEFAULT_OTLP_ENDPOINT: &str = "http://127.0.0.1:4317";
/// Default log level (`RUST_LOG` overrides).
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Default share of traces whose routine call spans are exported (`telemetry.routine_call_share`).
pub const DEFAULT_ROUTINE_CALL_SHARE: f64 = 0.05;
/// Default expected block time.
pub const DEFAULT_EXPECTED_BLOCK_TIME: HumanDuration = HumanDuration::from_secs(12);
/// Default delay after which a missing new block is reported.
pub const DEFAULT_MAX_BLOCK_DELAY: HumanDuration = HumanDuration::from_secs(30);
/// Default number of canonical blocks kept for reorg checks.
pub const DEFAULT_REORG_WINDOW: u64 = 64;
/// Largest accepted `reorg_window`.
pub const MAX_REORG_WINDOW: u64 = 100_000;
/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: HumanDuration = HumanDuration::from_secs(5);
/// Default sustained request rate per provider.
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 25;
/// Default request burst per provider.
pub const DEFAULT_BURST: u32 = 50;
/// Default attempts per pool call, across providers.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 6;
/// Default first retry delay (doubles each attempt, with jitter).
pub const DEFAULT_RETRY_INITIAL_BACKOFF: HumanDuration = HumanDuration::from_millis(100);
/// Default longest retry delay.
pub const DEFAULT_RETRY_MAX_BACKOFF: HumanDuration = HumanDuration::from_secs(5);
/// Default time a failing provider is passed over before it is tried again.
pub const DEFAULT_FAILOVER_COOLDOWN: HumanDuration = HumanDuration::from_secs(5);
/// Default largest accepted JSON-RPC response.
pub const DEFAULT_MAX_RESPONSE_SIZE: ByteSize = ByteSize(10_000_000);
/// Default number of blocks fetched concurrently while catching up.
pub const DEFAULT_FETCH_CONCURRENCY: usize = 8;
/// Default retry budget: each first attempt earns this share of a retry.
pub const DEFAULT_RETRY_BUDGET: f64 = 0.2;
/// Default retries per second allowed whatever the budget.
pub const DEFAULT_RETRY_BUDGET_FLOOR: f64 = 5.0;
/// Default time after which a provider's chain id is checked again.
pub const DEFAULT_CHAIN_CHECK_INTERVAL: HumanDuration = HumanDuration::from_secs(60);
/// Default delay before a dropped WebSocket subscription is reopened (doubles up to 30 s).
pub const DEFAULT_WS_RECONNECT_BACKOFF: HumanDuration = HumanDuration::from_millis(500);
/// Default interval between background probes of providers that calls have not used lately.
pub const DEFAULT_PROBE_INTERVAL: HumanDuration = HumanDuration::from_secs(10);
/// Default window of latency percentiles, error rate and rate-limit pressure.
pub const DEFAULT_SCORE_WINDOW: HumanDuration = HumanDuration::from_secs(60);
/// Default blocks behind the chain head beyond which a provider is lagging.
pub const DEFAULT_OUT_OF_SYNC_BLOCKS: u64 = 5;
/// Default blocks a head may lead every other provider's by before it needs corroboration.
pub const DEFAULT_HEAD_OUTLIER_BLOCKS: u64 = 64;
/// Default time a provider stays `inconsistent` after its last uncorroborated claim.
pub const DEFAULT_INCONSISTENT_FOR: HumanDuration = HumanDuration::from_secs(30);
/// Default error rate at which a provider is degraded.
pub const DEFAULT_DEGRADED_ERROR_RATE: f64 = 0.1;
/// Default p95 latency at which a provider is degraded.
pub const DEFAULT_DEGRADED_LATENCY: HumanDuration = HumanDuration::from_secs(2);
/// Default failure count that opens a provider's circuit.
pub const DEFAULT_CIRCUIT_FAILURES: u32 = 5;
/// Default error rate over the score window that opens a provider's circuit.
pub const DEFAULT_CIRCUIT_ERROR_RATE: f64 = 0.5;
/// Default calls in the window before the error rate may open a circuit.
pub const DEFAULT_CIRCUIT_MIN_CALLS: u64 = 20;
/// Default time an open circuit waits before its half-open probe.
pub const DEFAULT_CIRCUIT_OPEN_FOR: HumanDuration = HumanDuration::from_secs(10);
/// Default latency percentile after which a call is hedged to the next provider (0: never).
pub const DEFAULT_HEDGE_PERCENTILE: u8 = 95;
/// Default shortest wait before a hedge.
pub const DEFAULT_HEDGE_MIN_DELAY: HumanDuration = HumanDuration::from_millis(50);
/// Default factor by which a challenger's cost must be lower to take over under `selection = "best"`.
pub const DEFAULT_SWITCH_RATIO: f64 = 1.5;
/// Default time a challenger must stay clearly better before it takes over.
pub const DEFAULT_SWITCH_HOLD: HumanDuration = HumanDuration::from_secs(5);
/// Default missed-block log file.
pub const DEFAULT_MISSED_BLOCK_LOG: &str = "logs/missed_blocks.jsonl";
/// Default size at which the missed-block log is rotated.
pub const DEFAULT_ROTATION_SIZE: ByteSize = ByteSize(10_000_000);
/// Default days rotated missed-block logs are kept.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
/// Default records written to the missed-block log at once.
pub const DEFAULT_LOG_BATCH_SIZE: usize = 100;
/// Default longest wait before waiting records are written.
pub const DEFAULT_LOG_BATCH_TIMEOUT: HumanDuration = HumanDuration::from_secs(60);
/// Default recovery attempts for a block no provider could serve.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 3;
/// Default wait between recovery attempts.
pub const DEFAULT_RETRY_DELAY: HumanDuration = HumanDuration::from_secs(5);
/// Default missed-block streak that is alert-worthy.
pub const DEFAULT_ALERT_THRESHOLD: u64 = 5;
/// Default largest JSON-RPC batch sent to a provider (1: no batching).
pub const DEFAULT_MAX_BATCH_SIZE: u32 = 32;
