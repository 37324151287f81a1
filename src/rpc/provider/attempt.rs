//! One attempt on one provider: its CLIENT span with the RPC conventions, and its outcome recorded
//! once in metrics, health and the span (errors redacted); what a refused answer says about the
//! provider (another block than asked is a lie; a hash that is not its header's is judged with the
//! other providers'); an attempt abandoned because another provider answered first.

use super::*;

/// Marks an attempt span failed with `error`'s class (and JSON-RPC code); the description passes
/// through `redactor` (a provider may quote its own URL, key included, in an error).
fn record_span_error(span: &tracing::Span, error: &RpcError, redactor: &Redactor) {
    span.record("otel.status_code", "ERROR");
    span.record(
        "otel.status_description",
        redactor.redact(&error.to_string()).as_str(),
    );
    span.record("error.type", error.error_type());
    if let RpcError::Rpc { code, .. } = error {
        span.record("rpc.response.status_code", code.to_string().as_str());
    }
}

/// One attempt on one provider: its CLIENT span, and what the span says about it (the method, the
/// attempt's number within its call, whether it is a hedge), which its outcome is recorded with.
#[derive(Clone, Debug)]
pub struct AttemptSpan {
    /// The span: requests of the attempt run inside it.
    pub span: tracing::Span,
    /// The JSON-RPC method.
    pub method: &'static str,
    /// The attempt's number within its call (1 for the first).
    pub number: u32,
    /// Whether the attempt is a hedge (sent because another provider was slow).
    pub hedge: bool,
}

impl AttemptSpan {
    /// The span's OpenTelemetry context: its trace and span ids, which exemplars and slow-call
    /// lists point at (invalid outside a span).
    pub fn span_context(&self) -> opentelemetry::trace::SpanContext {
        crate::telemetry::exemplars::span_context_of(&self.span)
    }

    /// An attempt outside any span (tests).
    pub fn detached(method: &'static str) -> Self {
        Self {
            span: tracing::Span::none(),
            method,
            number: 1,
            hedge: false,
        }
    }
}

impl Provider {
    /// A CLIENT span for attempt `number` of `method` on this provider (a `hedge` or not), with the
    /// RPC semantic conventions; [`Self::finish_attempt`] records its outcome.
    pub fn attempt_span(&self, method: &'static str, number: u32, hedge: bool) -> AttemptSpan {
        let span = tracing::info_span!(
            "rpc_attempt",
            otel.name = method,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
            rpc.system.name = "jsonrpc",
            rpc.system = "jsonrpc",
            rpc.method = method,
            server.address = self.server.0.as_str(),
            server.port = self.server.1,
            blockwatch.provider = self.name.as_str(),
            blockwatch.chain = self.chain.as_str(),
            blockwatch.attempt = number,
            blockwatch.hedge = hedge,
            blockwatch.batch_size = tracing::field::Empty,
            blockwatch.abandoned = tracing::field::Empty,
            blockwatch.kept = tracing::field::Empty,
            "error.type" = tracing::field::Empty,
            rpc.response.status_code = tracing::field::Empty,
        );
        AttemptSpan {
            span,
            method,
            number,
            hedge,
        }
    }

    /// Records one attempt's duration and outcome in metrics, health and its span; `error` is set
    /// when it failed, including an answer that arrived but was refused (a broken block). Circuit
    /// and state changes it causes become events of `span`. Returns why its span is kept for
    /// export whatever the routine share (see [`crate::telemetry::sampling`]), if it is.
    pub fn finish_attempt(
        &self,
        attempt: &AttemptSpan,
        elapsed: Duration,
        error: Option<&RpcError>,
    ) -> Option<&'static str> {
        let (span, method) = (&attempt.span, attempt.method);
        if let Some(RpcError::RetryAfter(_)) = error {
            // Nothing was sent.
            return None;
        }
        if let Some(RpcError::HashScheme(_)) = error {
            // The chain's hashing, not this provider: nothing to hold against it.
            return None;
        }
        let outcome = match error {
            None => Outcome::Ok,
            Some(e) if e.is_rate_limited() => Outcome::Throttled,
            Some(RpcError::Timeout(_) | RpcError::Connection(_)) => Outcome::TransportFailure,
            Some(_) => Outcome::Failure,
        };
        let now = Instant::now();
        let (event, p95) = {
            let mut h = self.health();
            // The p95 before this attempt counts in it (computed at most once a second).
            let p95 = h.percentiles(now).map(|p| p.p95);
            let event = h.tracker.record(outcome, elapsed, now);
            if outcome == Outcome::Ok && h.cached.is_some_and(|(_, p)| p.is_none()) {
                // The first sample: do not wait for the cache to expire to know it.
                h.cached = None;
                h.hedge_cached = None;
            }
            (event, p95)
        };
        // Looked up once: the exemplar and the slow-call lists both point at the span.
        let mut trace = attempt.span_context();
        // Slower than the provider's recent p95 (every call is, before there is one).
        let slow = p95.is_none_or(|p95| elapsed > p95);
        let kept = if error.is_some() {
            Some(sampling::reason::ERROR)
        } else if attempt.hedge {
            Some(sampling::reason::HEDGE)
        } else if attempt.number > 1 {
            Some(sampling::reason::RETRY)
        } else if slow {
            Some(sampling::reason::SLOW)
        } else {
            None
        };
        let exported = sampling::exported(kept, trace.trace_id());
        // The slow-call lists name only exported spans; a routine call left out of the export
        // cannot be among a provider's slowest anyway, being faster than its p95.
        if exported {
            self.slow_calls.record(attempt, elapsed, error, &trace);
        }
        if let Some(reason) = kept {
            span.record(sampling::KEPT, reason);
        } else if !exported && trace.is_sampled() {
            // Its span will not be exported: no exemplar may name it.
            trace = SpanContext::new(
                trace.trace_id(),
                trace.span_id(),
                TraceFlags::default(),
                false,
                TraceState::default(),
            );
        }
        // No allocation: chain and provider are shared strings.
        let [chain, provider] = self.attrs.clone();
        let attrs = [
            chain,
            provider,
            KeyValue::new(attr::METHOD, method),
            KeyValue::new(attr::OUTCOME, if error.is_none() { "ok" } else { "error" }),
        ];
        self.metrics
            .rpc_duration
            .record(elapsed.as_secs_f64(), &attrs, &trace);
        if let Some(e) = error {
            record_span_error(span, e, &self.redactor);
            let [chain, provider, method, _] = attrs;
            self.metrics.rpc_errors.add(
                1,
                &[
                    chain,
                    provider,
                    method,
                    KeyValue::new(attr::ERROR_TYPE, e.error_class()),
                    KeyValue::new(attr::CODE, e.code_label()),
                ],
            );
            if e.is_integrity() {
                self.metrics.integrity_errors.add(1, &self.attrs);
            }
        }
        span.in_scope(|| {
            if let Some(event) = event {
                self.report(event);
            }
            self.evaluate(now);
        });
        kept
    }

    /// One attempt of `method` on this provider alone, outside any pool call (a poll, a probe, a
    /// check), in its own attempt span: the answer passes `check`, and the outcome (errors redacted
    /// and judged) is recorded in the provider's health, metrics and span.
    pub async fn ask<T: DeserializeOwned, U>(
        &self,
        method: &'static str,
        params: ArrayParams,
        check: impl FnOnce(T) -> Result<U, RpcError>,
    ) -> Result<U, RpcError> {
        let attempt = self.attempt_span(method, 1, false);
        let (result, took) = self
            .request_timed::<T>(method, params, None)
            .instrument(attempt.span.clone())
            .await;
        let result = result
            .and_then(check)
            .map_err(|e| self.judge(e.redact(&self.redactor)));
        self.finish_attempt(&attempt, took, result.as_ref().err());
        result
    }

    /// An attempt given up after `elapsed` because another provider answered first. Returns true
    /// when the provider has lost too many calls in a row this way and should be passed over.
    ///
    /// It goes in the provider's slowest calls (as `abandoned`, `elapsed` long: it would have taken
    /// longer): with hedging, the slowest calls of a slow provider are the ones another provider
    /// overtook, and they never end otherwise; left out, the provider's slow calls would not be
    /// listed at all. It is not a failed call: the provider did not fail, it was outrun.
    pub fn abandon_attempt(&self, attempt: &AttemptSpan, elapsed: Duration) -> bool {
        attempt.span.record("blockwatch.abandoned", true);
        attempt
            .span
            .record(sampling::KEPT, sampling::reason::ABANDONED);
        self.slow_calls
            .record_abandoned(attempt, elapsed, &attempt.span_context());
        self.health()
            .tracker
            .record_abandoned(elapsed, Instant::now())
    }

    /// The provider was caught in a claim the others do not back (`detail` says which): it is
    /// `inconsistent` for `pool.inconsistent_for`, its heads do not count, and it is counted and
    /// logged. `record`: tell the head book too (lies the book found itself are recorded there).
    pub fn caught(&self, kind: LieKind, detail: &str, record: bool) {
        let now = Instant::now();
        if record {
            self.heads.lie(self.index, kind, now);
        }
        let [chain, provider] = self.attrs.clone();
        self.metrics.provider_inconsistencies.add(
            1,
            &[chain, provider, KeyValue::new(attr::REASON, kind.as_str())],
        );
        tracing::warn!(chain = %self.chain, provider = %self.name, reason = kind.as_str(),
            detail, "provider_inconsistent");
        self.evaluate(now);
    }

    /// What a refused block says about this provider: another block than asked is a lie (it
    /// becomes inconsistent); a hash that is not its header's is its fault unless another provider
    /// serves the same claim, which makes it the chain's hashing (`HashScheme`: nobody's fault).
    pub fn judge(&self, error: RpcError) -> RpcError {
        match error {
            RpcError::WrongBlock(detail) => {
                self.caught(LieKind::WrongBlock, &detail, true);
                RpcError::WrongBlock(detail)
            }
            RpcError::HeaderHash {
                number,
                claimed,
                computed,
            } => self.hashing.mismatch(&self.name, number, claimed, computed),
            other => other,
        }
    }
}
