//! A tower layer on the jsonrpsee HTTP client that reads `Retry-After` from HTTP 429 answers (the
//! JSON-RPC client itself only reports the status), so that the provider is left alone for as long as
//! it asked.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

/// The longest pause a provider may ask for; a larger `Retry-After` is capped.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// When the provider may be asked again, shared between the layer and the provider.
#[derive(Clone, Debug, Default)]
pub struct RetryAfter(Arc<Mutex<Option<Instant>>>);

impl RetryAfter {
    /// The time before which the provider asked not to be called, if still ahead.
    pub fn until(&self) -> Option<Instant> {
        let until = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        until.filter(|t| *t > Instant::now())
    }

    fn set(&self, wait: Duration) {
        let until = Instant::now() + wait.min(MAX_RETRY_AFTER);
        let mut cell = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if cell.is_none_or(|t| t < until) {
            *cell = Some(until);
        }
    }
}

/// `Retry-After` as seconds or as an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Records `Retry-After` of 429 answers into a [`RetryAfter`].
#[derive(Clone, Debug)]
pub struct RetryAfterLayer(pub RetryAfter);

impl<S> tower::Layer<S> for RetryAfterLayer {
    type Service = RetryAfterService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryAfterService {
            inner,
            cell: self.0.clone(),
        }
    }
}

/// The service [`RetryAfterLayer`] builds.
#[derive(Clone, Debug)]
pub struct RetryAfterService<S> {
    inner: S,
    cell: RetryAfter,
}

impl<S, Req, B> tower::Service<Req> for RetryAfterService<S>
where
    S: tower::Service<Req, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let fut = self.inner.call(req);
        let cell = self.cell.clone();
        Box::pin(async move {
            let resp = fut.await?;
            if resp.status() == http::StatusCode::TOO_MANY_REQUESTS {
                let wait = resp
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                if let Some(wait) = wait {
                    cell.set(wait);
                }
            }
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        let in_a_minute = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(61));
        let d = parse_retry_after(&in_a_minute).unwrap();
        assert!(
            d > Duration::from_secs(55) && d <= Duration::from_secs(61),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn waits_are_capped_and_only_extended() {
        let r = RetryAfter::default();
        assert!(r.until().is_none());
        r.set(Duration::from_secs(10_000));
        let until = r.until().unwrap();
        assert!(until <= Instant::now() + MAX_RETRY_AFTER);
        r.set(Duration::from_secs(1));
        assert_eq!(
            r.until(),
            Some(until),
            "a shorter wait does not shorten a longer one"
        );
    }
}
