//! `[[chains]]` and their `[[chains.providers]]`: what to follow and through which endpoints. A
//! checked chain has a unique name, sane timing, and at least one provider; a checked provider has a
//! unique name, an http(s) URL (ws(s) for `ws_url`), a usable rate limit and valid headers. Errors
//! show URLs redacted.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
};

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use super::{defaults::*, ConfigError, HumanDuration};
use crate::redact::Redactor;

/// One `[[chains]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// Name used in output, state and telemetry; unique.
    pub name: String,
    /// The EIP-155 chain id every provider must answer with.
    pub chain_id: u64,
    /// Usual time between blocks.
    #[serde(default = "default_expected_block_time")]
    pub expected_block_time: HumanDuration,
    /// A chain with no new block for this long is reported as stalled.
    #[serde(default = "default_max_block_delay")]
    pub max_block_delay: HumanDuration,
    /// Canonical (number, hash) pairs kept for reorg checks.
    #[serde(default = "default_reorg_window")]
    pub reorg_window: u64,
    /// Where to start when there is no cursor (and whether to use it).
    #[serde(default)]
    pub start: StartAt,
    /// How the pool picks a provider.
    #[serde(default)]
    pub selection: Selection,
    /// How often the head is polled when no `newHeads` subscription is live
    /// (default: a quarter of `expected_block_time`, between 100 ms and 3 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<HumanDuration>,
    /// The hash of block 0 every provider must serve (default: providers must agree with each
    /// other).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genesis_hash: Option<alloy_primitives::B256>,
    /// How a block's hash is verified.
    #[serde(default)]
    pub block_hash_check: BlockHashCheck,
    /// The providers serving this chain; at least one.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
}

fn default_expected_block_time() -> HumanDuration {
    DEFAULT_EXPECTED_BLOCK_TIME
}
fn default_max_block_delay() -> HumanDuration {
    DEFAULT_MAX_BLOCK_DELAY
}
fn default_reorg_window() -> u64 {
    DEFAULT_REORG_WINDOW
}

impl ChainConfig {
    /// The effective head poll interval.
    pub fn poll_interval(&self) -> std::time::Duration {
        use std::time::Duration;
        self.poll_interval.map(|d| d.0).unwrap_or_else(|| {
            (self.expected_block_time.0 / 4)
                .clamp(Duration::from_millis(100), Duration::from_secs(3))
        })
    }
}

/// `chains[].start`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartAt {
    /// After the stored cursor; at the current head when there is none.
    #[default]
    Resume,
    /// At the current head, ignoring any cursor.
    Latest,
    /// After the stored cursor; at this block when there is none.
    Block(u64),
}

impl<'de> Deserialize<'de> for StartAt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = StartAt;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"resume\", \"latest\" or a block number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StartAt, E> {
                u64::try_from(v)
                    .map(StartAt::Block)
                    .map_err(|_| E::custom(format!("{v}: a block number cannot be negative")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StartAt, E> {
                Ok(StartAt::Block(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StartAt, E> {
                match v {
                    "resume" => Ok(StartAt::Resume),
                    "latest" => Ok(StartAt::Latest),
                    other => other.parse().map(StartAt::Block).map_err(|_| {
                        E::custom(format!(
                            "{other:?}: expected \"resume\", \"latest\" or a block number"
                        ))
                    }),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for StartAt {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            StartAt::Resume => s.serialize_str("resume"),
            StartAt::Latest => s.serialize_str("latest"),
            StartAt::Block(n) => s.serialize_u64(*n),
        }
    }
}

/// `chains[].block_hash_check`: how a served block's hash is verified.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BlockHashCheck {
    /// The hash must be the keccak of the block's RLP header (Ethereum and most EVM chains).
    #[default]
    Header,
    /// For chains that hash blocks their own way (zkSync Era and other rollups): the number, the
    /// parent link and the agreement of a second provider on the hash are verified instead.
    Consensus,
}

/// `chains[].selection`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// The healthy provider with the best recent latency, sticky until clearly beaten.
    #[default]
    Best,
    /// The healthy provider with the lowest `priority`.
    Priority,
    /// Healthy providers in turn.
    RoundRobin,
}

/// One `[[chains.providers]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Name used in output and telemetry; unique within its chain.
    pub name: String,
    /// HTTP(S) JSON-RPC endpoint.
    pub url: String,
    /// Optional WebSocket endpoint for the `newHeads` subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws_url: Option<String>,
    /// The paths of `url` and `ws_url` hold no secret and are shown as they are (a self-hosted
    /// node); by default every path segment that is not a known public route word is hidden.
    /// User-info and query values are hidden either way.
    #[serde(default)]
    pub public_url: bool,
    /// Lower is preferred by `selection = "priority"`.
    #[serde(default)]
    pub priority: u32,
    /// Per-request timeout.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Client-side rate limit.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Extra HTTP headers sent with every request (secret: never shown).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Most calls sent in one JSON-RPC batch while catching up (1: no batching).
    #[serde(default = "default_max_batch_size")]
    pub max_batch_size: u32,
}

fn default_max_batch_size() -> u32 {
    DEFAULT_MAX_BATCH_SIZE
}

fn default_timeout() -> HumanDuration {
    DEFAULT_TIMEOUT
}

/// `rate_limit = { requests_per_second, burst }`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained requests per second.
    pub requests_per_second: u32,
    /// Requests that may go at once after a quiet spell.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            requests_per_second: DEFAULT_REQUESTS_PER_SECOND,
            burst: DEFAULT_BURST,
        }
    }
}

/// Checks every chain and provider; `method_costs` must fit in each provider's burst.
pub(super) fn validate_chains(
    chains: &[ChainConfig],
    method_costs: &BTreeMap<String, u32>,
    redactor: &Redactor,
) -> Result<(), ConfigError> {
    let mut chain_names = HashSet::new();
    for (i, chain) in chains.iter().enumerate() {
        let key = |k: &str| format!("chains[{i}].{k}");
        if chain.name.trim().is_empty() {
            return Err(ConfigError::invalid(key("name"), "must not be empty"));
        }
        if !chain_names.insert(chain.name.as_str()) {
            return Err(ConfigError::invalid(
                key("name"),
                format!(
                    "duplicate chain name {:?}: chain names must be unique",
                    chain.name
                ),
            ));
        }
        if chain.chain_id == 0 {
            return Err(ConfigError::invalid(key("chain_id"), "must be above 0"));
        }
        if chain.expected_block_time.0.is_zero() {
            return Err(ConfigError::invalid(
                key("expected_block_time"),
                "must be above zero",
            ));
        }
        if chain.max_block_delay.0.is_zero() {
            return Err(ConfigError::invalid(
                key("max_block_delay"),
                "must be above zero",
            ));
        }
        if chain.reorg_window == 0 || chain.reorg_window > MAX_REORG_WINDOW {
            return Err(ConfigError::invalid(
                key("reorg_window"),
                format!(
                    "{} is out of range: must be between 1 and {MAX_REORG_WINDOW}",
                    chain.reorg_window
                ),
            ));
        }
        if chain.poll_interval.is_some_and(|d| d.0.is_zero()) {
            return Err(ConfigError::invalid(
                key("poll_interval"),
                "must be above zero",
            ));
        }
        if chain.providers.is_empty() {
            return Err(ConfigError::invalid(
                key("providers"),
                format!(
                    "chain {:?} has no provider: add a [[chains.providers]] table",
                    chain.name
                ),
            ));
        }
        let mut provider_names = HashSet::new();
        for (j, prov) in chain.providers.iter().enumerate() {
            let key = |k: &str| format!("chains[{i}].providers[{j}].{k}");
            if prov.name.trim().is_empty() {
                return Err(ConfigError::invalid(key("name"), "must not be empty"));
            }
            if !provider_names.insert(prov.name.as_str()) {
                return Err(ConfigError::invalid(
                    key("name"),
                    format!(
                        "duplicate provider name {:?} in chain {:?}: provider names must be unique within a chain",
                        prov.name, chain.name
                    ),
                ));
            }
            let public = prov.public_url;
            check_url(&key("url"), &prov.url, public, &["http", "https"], redactor)?;
            if let Some(ws) = &prov.ws_url {
                check_url(&key("ws_url"), ws, public, &["ws", "wss"], redactor)?;
            }
            if prov.timeout.0.is_zero() {
                return Err(ConfigError::invalid(key("timeout"), "must be above zero"));
            }
            if prov.rate_limit.requests_per_second == 0 {
                return Err(ConfigError::invalid(
                    key("rate_limit.requests_per_second"),
                    "must be at least 1",
                ));
            }
            if prov.rate_limit.burst == 0 {
                return Err(ConfigError::invalid(
                    key("rate_limit.burst"),
                    "must be at least 1",
                ));
            }
            if let Some((method, cost)) = method_costs
                .iter()
                .find(|(_, &c)| c > prov.rate_limit.burst)
            {
                return Err(ConfigError::invalid(
                    key("rate_limit.burst"),
                    format!(
                        "{} is below pool.method_costs.{method} = {cost}: a call of {method} could never be sent",
                        prov.rate_limit.burst
                    ),
                ));
            }
            if prov.max_batch_size == 0 || prov.max_batch_size > 1000 {
                return Err(ConfigError::invalid(
                    key("max_batch_size"),
                    format!(
                        "{} is out of range: between 1 (no batching) and 1000",
                        prov.max_batch_size
                    ),
                ));
            }
            for (name, value) in &prov.headers {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(ConfigError::invalid(
                        key("headers"),
                        format!("{name:?} is not a valid HTTP header name"),
                    ));
                }
                if http::HeaderValue::from_str(value).is_err() {
                    return Err(ConfigError::invalid(
                        format!("chains[{i}].providers[{j}].headers.{name}"),
                        "is not a valid HTTP header value",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Checks that `value` (at `key`) is a URL with one of `schemes` and a host; errors show it redacted.
fn check_url(
    key: &str,
    value: &str,
    public_path: bool,
    schemes: &[&str],
    redactor: &Redactor,
) -> Result<(), ConfigError> {
    let shown = redactor.url_with(value, public_path);
    let url = url::Url::parse(value).map_err(|e| {
        ConfigError::invalid(
            key,
            format!(
                "not a valid URL ({e}); expected e.g. {}://host:port",
                schemes[0]
            ),
        )
    })?;
    if !schemes.contains(&url.scheme()) {
        return Err(ConfigError::invalid(
            key,
            format!("{shown}: scheme must be one of {}", schemes.join(", ")),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::invalid(key, format!("{shown}: has no host")));
    }
    Ok(())
}
