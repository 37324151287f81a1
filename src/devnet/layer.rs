//! The HTTP layer in front of a devnet provider's JSON-RPC service that plays the transport-level
//! faults (HTTP errors, rate limits, timeouts, malformed answers, latency) and counts requests.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use jsonrpsee::server::{HttpBody, HttpRequest, HttpResponse};

use super::{fault::Fault, state::ProviderState};

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
