//! Why a block was missed, decided from what actually failed, and how bad it was, from how late it
//! came and how many blocks in a row were missed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::rpc::RpcError;

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
    /// The reason an attempt's failure stands for.
    pub fn from_error(error: &RpcError) -> Reason {
        match error {
            RpcError::Timeout(_) => Reason::Timeout,
            RpcError::Connection(_) => Reason::ConnectionLost,
            e if e.is_rate_limited() => Reason::RateLimitExceeded,
            RpcError::Rpc { .. } | RpcError::HttpStatus { .. } => Reason::RpcError,
            RpcError::InvalidBlock(_)
            | RpcError::WrongBlock(_)
            | RpcError::HeaderHash { .. }
            | RpcError::HashScheme(_)
            | RpcError::WrongChain { .. } => Reason::InvalidBlock,
            RpcError::InvalidResponse(_) | RpcError::RetryAfter(_) => Reason::Unknown,
        }
    }

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

/// The thresholds severities are decided by.
#[derive(Clone, Copy, Debug)]
pub struct SeverityRules {
    /// The chain's `max_block_delay`: later than this past its expected time, a block is missed.
    pub max_block_delay: Duration,
    /// Streak length from which a miss is at least `High`.
    pub high_streak: u64,
    /// Streak length from which a miss is `Critical`.
    pub critical_streak: u64,
}

impl SeverityRules {
    /// Rules for a chain with `max_block_delay`: High from 5 misses in a row, Critical from 10.
    pub fn new(max_block_delay: Duration) -> Self {
        Self {
            max_block_delay,
            high_streak: 5,
            critical_streak: 10,
        }
    }

    /// The severity of a miss `late` past its expected time, `streak`-th in a row (1 for a single
    /// miss), recovered or not.
    pub fn rate(&self, late: Duration, streak: u64, recovered: bool) -> Severity {
        let m = self.max_block_delay;
        if !recovered || streak >= self.critical_streak {
            Severity::Critical
        } else if late >= m * 2 || streak >= self.high_streak {
            Severity::High
        } else if late >= m || streak >= 2 {
            Severity::Medium
        } else {
            Severity::Low
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_follow_what_failed() {
        let t = Duration::from_secs(1);
        assert_eq!(Reason::from_error(&RpcError::Timeout(t)), Reason::Timeout);
        assert_eq!(
            Reason::from_error(&RpcError::Connection("refused".into())),
            Reason::ConnectionLost
        );
        assert_eq!(
            Reason::from_error(&RpcError::HttpStatus { status: 429 }),
            Reason::RateLimitExceeded
        );
        assert_eq!(
            Reason::from_error(&RpcError::Rpc {
                code: -32005,
                message: "limit".into()
            }),
            Reason::RateLimitExceeded
        );
        assert_eq!(
            Reason::from_error(&RpcError::Rpc {
                code: -32000,
                message: "x".into()
            }),
            Reason::RpcError
        );
        assert_eq!(
            Reason::from_error(&RpcError::InvalidBlock("bad parent".into())),
            Reason::InvalidBlock
        );
        assert_eq!(
            Reason::from_error(&RpcError::WrongBlock("asked 5, got 4".into())),
            Reason::InvalidBlock
        );
        assert_eq!(
            Reason::from_error(&RpcError::HttpStatus { status: 502 }),
            Reason::RpcError
        );
        assert_eq!(
            Reason::from_error(&RpcError::InvalidResponse("not JSON".into())),
            Reason::Unknown
        );
        assert_eq!(
            serde_json::to_string(&Reason::RateLimitExceeded).unwrap(),
            "\"RateLimitExceeded\""
        );
    }

    #[test]
    fn severity_grows_with_delay_and_streak() {
        let r = SeverityRules::new(Duration::from_secs(30));
        let s = Duration::from_secs;
        assert_eq!(r.rate(s(1), 1, true), Severity::Low);
        assert_eq!(r.rate(s(30), 1, true), Severity::Medium);
        assert_eq!(r.rate(s(1), 2, true), Severity::Medium);
        assert_eq!(r.rate(s(60), 1, true), Severity::High);
        assert_eq!(r.rate(s(1), 5, true), Severity::High);
        assert_eq!(r.rate(s(1), 10, true), Severity::Critical);
        assert_eq!(r.rate(s(0), 1, false), Severity::Critical);
        assert!(Severity::Low < Severity::Critical);
    }
}
