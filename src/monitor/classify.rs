//! Why a block was missed, decided from what actually failed, and how bad it was, from how late it
//! came and how many blocks in a row were missed.

use std::time::Duration;

use crate::{
    model::{Reason, Severity},
    rpc::RpcError,
};

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
