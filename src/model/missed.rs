//! One missed block, as the missed-block log, the database and the exports carry it: what it is,
//! why it was missed ([`Reason`]) and how bad it was ([`Severity`]).

use serde::{Deserialize, Serialize};

/// Why a block was missed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// It came, but later than `max_block_delay` after its expected time.
    NetworkLatency,
    /// Providers answered, but none had the block (it was announced or is due, yet not served).
    NodeUnresponsive,
    /// A provider answered with a JSON-RPC error or an HTTP error status.
    RpcError,
    /// A provider served a block that is not the one asked for, or whose hash does not match.
    InvalidBlock,
    /// The block the stream delivered at this height was replaced by a reorg: the canonical one
    /// came only with the reorg.
    ChainReorg,
    /// A provider did not answer in time.
    Timeout,
    /// The connection to a provider failed.
    ConnectionLost,
    /// A provider said to slow down (HTTP 429).
    RateLimitExceeded,
    /// Anything else (an answer that could not be read).
    Unknown,
}

impl Reason {
    /// The name in logs, exports and the `reason` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NetworkLatency => "NetworkLatency",
            Reason::NodeUnresponsive => "NodeUnresponsive",
            Reason::RpcError => "RpcError",
            Reason::InvalidBlock => "InvalidBlock",
            Reason::ChainReorg => "ChainReorg",
            Reason::Timeout => "Timeout",
            Reason::ConnectionLost => "ConnectionLost",
            Reason::RateLimitExceeded => "RateLimitExceeded",
            Reason::Unknown => "Unknown",
        }
    }
}

/// How bad a miss was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    /// Recovered quickly, alone.
    Low,
    /// Late by more than `max_block_delay`, or the second in a row.
    Medium,
    /// Late by more than twice `max_block_delay`, or part of a streak of `high_streak`.
    High,
    /// Not recovered, or part of a streak of `critical_streak`.
    Critical,
}

impl Severity {
    /// The name in logs, exports and the `severity` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
            Severity::Critical => "Critical",
        }
    }
}

/// A missed block (a line of the missed-block log).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MissedBlock {
    /// When it was found missing (Unix seconds).
    pub timestamp: u64,
    /// The chain.
    pub chain: String,
    /// The block number.
    pub block_number: u64,
    /// Why.
    pub reason: Reason,
    /// How bad.
    pub severity: Severity,
    /// When the block was expected (Unix seconds): the previous block's timestamp plus
    /// `expected_block_time`.
    pub expected_timestamp: u64,
    /// When it was had, or found missing (Unix seconds).
    pub actual_timestamp: u64,
    /// Attempts made to get it back.
    pub recovery_attempts: u32,
    /// Whether it was got back and emitted.
    pub recovered: bool,
    /// The provider it came from when recovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_from: Option<String>,
    /// What else is known (e.g. the provider that failed, the error class).
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Whether an alert was sent for it.
    pub alert_sent: bool,
}

impl MissedBlock {
    /// The CSV header of exports.
    pub const CSV_HEADER: [&'static str; 9] = [
        "chain",
        "block_number",
        "reason",
        "severity",
        "expected_timestamp",
        "actual_timestamp",
        "recovery_attempts",
        "recovered",
        "missed_at",
    ];

    /// The CSV fields of exports, in [`Self::CSV_HEADER`] order.
    pub fn csv_fields(&self) -> [String; 9] {
        [
            self.chain.clone(),
            self.block_number.to_string(),
            self.reason.as_str().to_owned(),
            self.severity.as_str().to_owned(),
            self.expected_timestamp.to_string(),
            self.actual_timestamp.to_string(),
            self.recovery_attempts.to_string(),
            self.recovered.to_string(),
            self.timestamp.to_string(),
        ]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The example record of docs/outputs.md, of `chain`.
    pub(crate) fn readme_example(chain: &str) -> MissedBlock {
        MissedBlock {
            timestamp: 1640995220,
            chain: chain.into(),
            block_number: 1001,
            reason: Reason::NetworkLatency,
            severity: Severity::Medium,
            expected_timestamp: 1640995212,
            actual_timestamp: 1640995220,
            recovery_attempts: 1,
            recovered: true,
            recovered_from: Some("infura".into()),
            metadata: Default::default(),
            alert_sent: false,
        }
    }

    #[test]
    fn a_record_is_the_documented_json_line() {
        let r = readme_example("mainnet");
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"timestamp":1640995220,"chain":"mainnet","block_number":1001,"reason":"NetworkLatency","severity":"Medium","expected_timestamp":1640995212,"actual_timestamp":1640995220,"recovery_attempts":1,"recovered":true,"recovered_from":"infura","metadata":{},"alert_sent":false}"#
        );
        assert_eq!(serde_json::from_str::<MissedBlock>(&line).unwrap(), r);
        assert_eq!(r.csv_fields()[2], "NetworkLatency");
        assert_eq!(r.csv_fields()[8], "1640995220");
    }
}
