//! The faults a devnet provider can be told to have, as the control API names them. The type
//! depends on nothing else of the devnet; the node and its HTTP layer play the faults.

use serde::{Deserialize, Serialize};

/// One fault (`{"kind": …}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Connection refused: the provider's listener is closed.
    Down,
    /// Every HTTP request answered with this status.
    HttpError {
        /// The HTTP status, e.g. 500.
        status: u16,
    },
    /// Every JSON-RPC call answered with this error code.
    RpcError {
        /// The JSON-RPC error code, e.g. -32000.
        code: i32,
    },
    /// Every request answered this much later.
    Latency {
        /// Added delay in milliseconds.
        ms: u64,
    },
    /// HTTP 429 with a `Retry-After` header.
    RateLimit {
        /// The `Retry-After` value in seconds.
        retry_after_s: u64,
    },
    /// Requests are accepted and never answered.
    Timeout,
    /// The provider's head stops advancing.
    Stale,
    /// Answers are not valid JSON.
    Malformed,
    /// `eth_chainId` and `net_version` answer another chain id.
    WrongChain {
        /// The chain id answered.
        chain_id: u64,
    },
    /// Blocks are served with a hash that does not match their header.
    BadHash,
    /// WebSocket `newHeads` subscriptions stay open (pings and requests are answered) but deliver
    /// no notification; HTTP and the head are unaffected.
    WsSilent,
    /// `eth_blockNumber` (and the `latest` tag) answer the real head plus `blocks` (negative: a
    /// head that went back), and `newHeads` announces each block that many blocks off, while blocks
    /// are served as they are: a provider lying about its head.
    HeadOffset {
        /// Added to the head it reports.
        blocks: i64,
    },
    /// `eth_getBlockByNumber(N)` answers block N−1 (a real block, with its right hash, for another
    /// number than asked).
    WrongBlock,
}

/// A fault whose values are out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    /// `http_error` with a status that is not an error.
    #[error("http_error status {0} is not an HTTP error status (400-599)")]
    NotAnErrorStatus(u16),
    /// `latency` too long.
    #[error("latency above 600000 ms")]
    LatencyTooLong,
    /// `head_offset` too far.
    #[error("head_offset blocks beyond ±1000000000")]
    OffsetTooFar,
}

impl Fault {
    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), FaultError> {
        match self {
            Fault::HttpError { status } if !(400..=599).contains(status) => {
                Err(FaultError::NotAnErrorStatus(*status))
            }
            Fault::Latency { ms } if *ms > 600_000 => Err(FaultError::LatencyTooLong),
            Fault::HeadOffset { blocks } if blocks.unsigned_abs() > 1_000_000_000 => {
                Err(FaultError::OffsetTooFar)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_as_the_control_api_names_them() {
        let cases = [
            (r#"{"kind":"down"}"#, Fault::Down),
            (
                r#"{"kind":"http_error","status":500}"#,
                Fault::HttpError { status: 500 },
            ),
            (
                r#"{"kind":"rpc_error","code":-32000}"#,
                Fault::RpcError { code: -32000 },
            ),
            (r#"{"kind":"latency","ms":800}"#, Fault::Latency { ms: 800 }),
            (
                r#"{"kind":"rate_limit","retry_after_s":2}"#,
                Fault::RateLimit { retry_after_s: 2 },
            ),
            (r#"{"kind":"timeout"}"#, Fault::Timeout),
            (r#"{"kind":"stale"}"#, Fault::Stale),
            (r#"{"kind":"malformed"}"#, Fault::Malformed),
            (
                r#"{"kind":"wrong_chain","chain_id":5}"#,
                Fault::WrongChain { chain_id: 5 },
            ),
            (r#"{"kind":"bad_hash"}"#, Fault::BadHash),
            (r#"{"kind":"ws_silent"}"#, Fault::WsSilent),
            (
                r#"{"kind":"head_offset","blocks":-50}"#,
                Fault::HeadOffset { blocks: -50 },
            ),
            (r#"{"kind":"wrong_block"}"#, Fault::WrongBlock),
        ];
        for (text, fault) in cases {
            assert_eq!(
                serde_json::from_str::<Fault>(text).unwrap(),
                fault,
                "{text}"
            );
        }
        assert!(serde_json::from_str::<Fault>(r#"{"kind":"gremlins"}"#).is_err());
        assert!(serde_json::from_str::<Fault>(r#"{"kind":"latency"}"#).is_err());
        assert!(Fault::HttpError { status: 200 }.validate().is_err());
        assert!(Fault::WsSilent.validate().is_ok());
        assert_eq!(
            serde_json::to_string(&Fault::WsSilent).unwrap(),
            r#"{"kind":"ws_silent"}"#
        );
    }
}
