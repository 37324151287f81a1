//! What can go wrong with one JSON-RPC call, classified so that retry decisions and telemetry use the
//! same low-cardinality classes. Whether a failure may be retried is decided in one place,
//! [`RpcError::retry`], for every caller that retries.

use std::time::Duration;

use jsonrpsee::core::{client::Error as ClientError, http_helpers::HttpError};
use jsonrpsee::http_client::transport::Error as HttpTransportError;

/// Whether a failed attempt is worth another one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Another provider, or the same one later, may answer: fail over and retry.
    Retry,
    /// No provider can do better (the chain hashes blocks its own way): the call ends here.
    Never,
}

/// The failure of one attempt against one provider.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RpcError {
    /// No answer within the provider's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server answered with a non-success HTTP status.
    #[error("HTTP status {status}")]
    HttpStatus {
        /// The status code.
        status: u16,
    },
    /// The connection could not be made or broke.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The server answered with a JSON-RPC error object.
    #[error("JSON-RPC error {code}: {message}")]
    Rpc {
        /// The JSON-RPC error code.
        code: i32,
        /// The server's message.
        message: String,
    },
    /// The answer was not valid JSON, not the expected shape, or too large.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// A block that is broken in another way (a reorg branch whose parent has the wrong number).
    #[error("invalid block: {0}")]
    InvalidBlock(String),
    /// Another block than the one asked for: another number, or another hash for a hash lookup
    /// (a lie: the provider becomes `inconsistent`).
    #[error("invalid block: {0}")]
    WrongBlock(String),
    /// A block whose claimed hash is not the keccak of its header (`block_hash_check = "header"`).
    #[error(
        "invalid block: block {number} claims hash {claimed} but its header hashes to {computed}"
    )]
    HeaderHash {
        /// The block number.
        number: u64,
        /// The hash the provider claims.
        claimed: alloy_primitives::B256,
        /// The keccak of its RLP header.
        computed: alloy_primitives::B256,
    },
    /// Every provider serves blocks whose hash is not the keccak of their header, and they agree
    /// on those hashes: the chain hashes blocks its own way, so `block_hash_check = "header"` cannot
    /// pass. Not the provider's fault.
    #[error("{0}")]
    HashScheme(String),
    /// The provider asked (HTTP 429, `Retry-After`) not to be called for this long yet; nothing
    /// was sent.
    #[error("provider asked to be left alone for another {0:?} (Retry-After)")]
    RetryAfter(Duration),
    /// The provider serves another chain.
    #[error("wrong chain: expected chain id {expected}, provider answered {actual}")]
    WrongChain {
        /// The configured chain id.
        expected: u64,
        /// What the provider answered.
        actual: u64,
    },
}

/// JSON-RPC error codes of the JSON-RPC specification and of EIP-1474, and `3` (execution
/// reverted): the codes metrics and spans name; any other is `other` / `rpc_other`.
const KNOWN_JSONRPC: [(i32, &str); 13] = [
    (-32700, "-32700"),
    (-32600, "-32600"),
    (-32601, "-32601"),
    (-32602, "-32602"),
    (-32603, "-32603"),
    (-32000, "-32000"),
    (-32001, "-32001"),
    (-32002, "-32002"),
    (-32003, "-32003"),
    (-32004, "-32004"),
    (-32005, "-32005"),
    (-32006, "-32006"),
    (3, "3"),
];

/// HTTP statuses providers answer with, by name in the `code` attribute; any other is `other`.
const KNOWN_HTTP: [(u16, &str); 12] = [
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (405, "405"),
    (408, "408"),
    (413, "413"),
    (429, "429"),
    (500, "500"),
    (502, "502"),
    (503, "503"),
    (504, "504"),
];

fn known_jsonrpc_code(code: i32) -> Option<&'static str> {
    KNOWN_JSONRPC
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, label)| *label)
}

impl RpcError {
    /// Whether another attempt (on another provider, or later) may succeed where this one failed:
    /// every failure but the chain's own block hashing, which no provider can do better on.
    pub fn retry(&self) -> Retry {
        match self {
            RpcError::HashScheme(_) => Retry::Never,
            _ => Retry::Retry,
        }
    }

    /// [`Self::retry`] as a yes or no.
    pub fn is_retryable(&self) -> bool {
        self.retry() == Retry::Retry
    }

    /// The same error with secrets removed from its text (a provider may quote its own URL, key
    /// included).
    pub fn redact(self, redactor: &crate::redact::Redactor) -> RpcError {
        match self {
            RpcError::Connection(m) => RpcError::Connection(redactor.redact(&m)),
            RpcError::InvalidResponse(m) => RpcError::InvalidResponse(redactor.redact(&m)),
            RpcError::InvalidBlock(m) => RpcError::InvalidBlock(redactor.redact(&m)),
            RpcError::Rpc { code, message } => RpcError::Rpc {
                code,
                message: redactor.redact(&message),
            },
            other => other,
        }
    }

    /// The class of a failure for metrics: [`Self::error_type`] with every JSON-RPC error as
    /// `rpc_error` (its code goes to [`Self::code_label`]), so that the class stays a handful of
    /// values.
    pub fn error_class(&self) -> &'static str {
        match self {
            RpcError::Rpc { .. } => "rpc_error",
            other => other.error_type(),
        }
    }

    /// The failure's JSON-RPC error code or HTTP status for the `code` metric attribute: the
    /// number when it is a known one, `other` when not (a provider inventing codes cannot grow
    /// the attribute), `none` when the failure has no code (a timeout, a refused connection, …).
    pub fn code_label(&self) -> &'static str {
        match self {
            RpcError::Rpc { code, .. } => known_jsonrpc_code(*code).unwrap_or("other"),
            RpcError::HttpStatus { status } => KNOWN_HTTP
                .iter()
                .find(|(s, _)| s == status)
                .map_or("other", |(_, label)| label),
            _ => "none",
        }
    }

    /// A low-cardinality class for `error.type` and metric attributes: a known JSON-RPC code as a
    /// string (`-32005`; see [`Self::code_label`]), any other code `rpc_other`, `timeout`,
    /// `http_429`, `http_5xx`, `http_4xx`, `connection`, `invalid_response`, `invalid_block`,
    /// `hash_scheme`, `wrong_chain` or `retry_after`.
    pub fn error_type(&self) -> &'static str {
        match self {
            RpcError::Timeout(_) => "timeout",
            RpcError::HttpStatus { status: 429 } => "http_429",
            RpcError::HttpStatus { status } if *status >= 500 => "http_5xx",
            RpcError::HttpStatus { .. } => "http_4xx",
            RpcError::Connection(_) => "connection",
            // A provider inventing codes cannot grow the attribute.
            RpcError::Rpc { code, .. } => known_jsonrpc_code(*code).unwrap_or("rpc_other"),
            RpcError::InvalidResponse(_) => "invalid_response",
            RpcError::InvalidBlock(_) | RpcError::WrongBlock(_) | RpcError::HeaderHash { .. } => {
                "invalid_block"
            }
            RpcError::HashScheme(_) => "hash_scheme",
            RpcError::WrongChain { .. } => "wrong_chain",
            RpcError::RetryAfter(_) => "retry_after",
        }
    }

    /// Whether the provider served a block it should not have (refused, counted as an integrity
    /// error).
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            RpcError::InvalidBlock(_) | RpcError::WrongBlock(_) | RpcError::HeaderHash { .. }
        )
    }

    /// Whether the provider told us to slow down.
    pub fn is_rate_limited(&self) -> bool {
        matches!(
            self,
            RpcError::HttpStatus { status: 429 } | RpcError::RetryAfter(_)
        ) || matches!(self, RpcError::Rpc { code: -32005, .. })
    }

    /// Classifies a jsonrpsee client error; `timeout` is the timeout that was in force.
    pub fn from_client(err: ClientError, timeout: Duration) -> Self {
        match err {
            ClientError::Call(obj) => RpcError::Rpc {
                code: obj.code(),
                message: obj.message().to_owned(),
            },
            ClientError::RequestTimeout => RpcError::Timeout(timeout),
            ClientError::ParseError(e) => RpcError::InvalidResponse(e.to_string()),
            ClientError::Transport(e) => match e.downcast::<HttpTransportError>() {
                Ok(t) => match *t {
                    HttpTransportError::Rejected { status_code } => RpcError::HttpStatus {
                        status: status_code,
                    },
                    HttpTransportError::Http(HttpError::TooLarge) => {
                        RpcError::InvalidResponse("response exceeds the size limit".to_owned())
                    }
                    HttpTransportError::Http(HttpError::Malformed) => {
                        RpcError::InvalidResponse("malformed HTTP response".to_owned())
                    }
                    other => RpcError::Connection(other.to_string()),
                },
                Err(other) => RpcError::Connection(other.to_string()),
            },
            ClientError::RestartNeeded(e) => RpcError::Connection(e.to_string()),
            other => RpcError::InvalidResponse(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_classes_and_codes_stay_within_known_sets() {
        let rpc = |code| RpcError::Rpc {
            code,
            message: "m".into(),
        };
        assert_eq!(rpc(-32000).error_class(), "rpc_error");
        assert_eq!(rpc(-32000).code_label(), "-32000");
        assert_eq!(rpc(-32005).code_label(), "-32005");
        assert_eq!(rpc(3).code_label(), "3");
        // Codes a provider invents, inside or outside the reserved range, are `other`.
        assert_eq!(rpc(-32099).code_label(), "other");
        assert_eq!(rpc(123_456).code_label(), "other");
        assert_eq!(rpc(123_456).error_class(), "rpc_error");
        let http = |status| RpcError::HttpStatus { status };
        assert_eq!(http(503).code_label(), "503");
        assert_eq!(http(503).error_class(), "http_5xx");
        assert_eq!(http(429).error_class(), "http_429");
        assert_eq!(http(418).code_label(), "other");
        let timeout = RpcError::Timeout(std::time::Duration::from_secs(1));
        assert_eq!(timeout.code_label(), "none");
        assert_eq!(timeout.error_class(), "timeout");
    }

    #[test]
    fn classes_are_low_cardinality() {
        assert_eq!(
            RpcError::HttpStatus { status: 429 }.error_type(),
            "http_429"
        );
        assert_eq!(
            RpcError::HttpStatus { status: 503 }.error_type(),
            "http_5xx"
        );
        assert_eq!(
            RpcError::Rpc {
                code: -32000,
                message: "x".into()
            }
            .error_type(),
            "-32000"
        );
        assert_eq!(
            RpcError::Rpc {
                code: 3,
                message: "reverted".into()
            }
            .error_type(),
            "3"
        );
        assert_eq!(
            RpcError::Rpc {
                code: -32099,
                message: "x".into()
            }
            .error_type(),
            "rpc_other"
        );
        assert!(RpcError::HttpStatus { status: 429 }.is_rate_limited());
        assert!(RpcError::Timeout(Duration::from_secs(1)).is_retryable());
        assert_eq!(RpcError::HashScheme("x".into()).retry(), Retry::Never);
        assert_eq!(
            RpcError::from_client(ClientError::RequestTimeout, Duration::from_secs(1)).error_type(),
            "timeout"
        );
    }
}
