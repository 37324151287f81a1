//! One missed block, as the missed-block log, the database and the exports carry it.

use serde::{Deserialize, Serialize};

use super::{Reason, Severity};

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

    /// The README's example record, of `chain`.
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
    fn a_record_is_specs_json_line() {
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
