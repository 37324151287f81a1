//! The faults a devnet provider can be told to have, as the control API names them, and the HTTP
//! layer that plays the transport-level ones.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use jsonrpsee::server::{HttpBody, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::node::ProviderState;

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

impl Fault {
    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Fault::HttpError { status } if !(400..=599).contains(status) => Err(format!(
                "http_error status {status} is not an HTTP error status (400-599)"
            )),
            Fault::Latency { ms } if *ms > 600_000 => Err("latency above 600000 ms".into()),
            Fault::HeadOffset { blocks } if blocks.unsigned_abs() > 1_000_000_000 => {
                Err("head_offset blocks beyond ±1000000000".into())
            }
            _ => Ok(()),
        }
    }
}

/// Tower layer that plays HTTP-level faults in front of a provider's JSON-RPC service.
#[derive(Clone, Debug)]
pub(crate) struct FaultLayer {
    pub(crate) state: Arc<Mutex<ProviderState>>,
}

impl<S> tower::Layer<S> for FaultLayer {
    type Service = FaultService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FaultService {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service [`FaultLayer`] builds.
#[derive(Clone, Debug)]
pub(crate) struct FaultService<S> {
    inner: S,
    state: Arc<Mutex<ProviderState>>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

fn respond(status: u16, headers: &[(&str, String)], body: &'static str) -> HttpResponse {
    let mut b = http::Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    b.body(HttpBody::from(body))
        .unwrap_or_else(|_| http::Response::new(HttpBody::from("")))
}

impl<S, B> tower::Service<HttpRequest<B>> for FaultService<S>
where
    S: tower::Service<HttpRequest<B>, Response = HttpResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError> + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, BoxError>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: HttpRequest<B>) -> Self::Future {
        let (fault, counter) = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(tp) = req
                .headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
            {
                st.last_traceparent = Some(tp.to_owned());
            }
            (st.fault.clone(), st.requests.clone())
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fault {
                Some(Fault::HttpError { status }) => Ok(respond(
                    status,
                    &[],
                    "{\"error\":\"devnet: injected HTTP error\"}",
                )),
                Some(Fault::RateLimit { retry_after_s }) => Ok(respond(
                    429,
                    &[("retry-after", retry_after_s.to_string())],
                    "{\"error\":\"devnet: rate limited\"}",
                )),
                Some(Fault::Timeout) => {
                    std::future::pending::<()>().await;
                    unreachable!("pending never completes")
                }
                Some(Fault::Malformed) => Ok(respond(
                    200,
                    &[],
                    "{\"jsonrpc\":\"2.0\",\"result\":{\"number\":",
                )),
                Some(Fault::Latency { ms }) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    fut.await.map_err(Into::into)
                }
                _ => fut.await.map_err(Into::into),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_as_spec_writes_them() {
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
