//! Tail-based sampling of call spans: every failed, retried, hedged, abandoned or slow JSON-RPC
//! call is exported; of the routine rest (answered at the first try, not slower than its
//! provider's recent p95) only a share of traces (`telemetry.routine_call_share`).
//!
//! The decision is taken when a span ends, so no interesting call is ever dropped:
//! - an attempt's CLIENT span is marked with `blockwatch.kept` (the reason) by the code that
//!   finishes it ([`crate::rpc::Provider::finish_attempt`]), which knows its outcome and its
//!   duration against the provider's p95;
//! - a `pool_request` span is marked when its call failed, took more than one attempt, or its
//!   answering attempt was marked;
//! - [`CallSpanSampler`], in front of the batch exporter, passes every marked span and, of the
//!   unmarked ones, those whose trace id falls in the share (marked `share` on the way); it drops
//!   the rest and counts them (`blockwatch.spans.sampled_out`).
//!
//! The share is decided by the trace id alone, so a trace is kept or dropped whole, and the code
//! recording an exemplar or a slow call can tell in advance whether its span will be exported
//! ([`exported`]): no exemplar or `/slow` entry ever names a dropped span. Every other span
//! (`process_block`, `fetch_blocks`, probes, …) is always exported.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

use opentelemetry::{
    trace::{SpanId, SpanKind, TraceId},
    Context, KeyValue, Value,
};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{Span, SpanData, SpanProcessor},
    Resource,
};

/// The attribute marking a kept call span, with the reason it was kept.
pub const KEPT: &str = "blockwatch.kept";

/// Why a call span was kept.
pub mod reason {
    /// The attempt, or the call, failed.
    pub const ERROR: &str = "error";
    /// The call took more than one attempt (retries and hedges).
    pub const RETRY: &str = "retry";
    /// The attempt was a hedge.
    pub const HEDGE: &str = "hedge";
    /// The attempt was given up because another provider answered first.
    pub const ABANDONED: &str = "abandoned";
    /// The attempt took longer than its provider's recent p95 (or there is no p95 yet).
    pub const SLOW: &str = "slow";
    /// A routine call in the configured share of traces.
    pub const SHARE: &str = "share";
}

/// The name of the span of one pool call.
pub const POOL_REQUEST: &str = "pool_request";

/// Trace ids whose low 64 bits are below this are in the share; `u64::MAX` keeps every trace
/// (the default until telemetry is set up: nothing is dropped unless configured).
static THRESHOLD: AtomicU64 = AtomicU64::new(u64::MAX);
/// Call spans dropped since start.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Sets the share of traces whose routine call spans are exported (clamped to 0–1).
pub fn set_routine_share(share: f64) {
    THRESHOLD.store(threshold(share), Ordering::Relaxed);
}

/// The threshold of a share (clamped to 0–1; not a number keeps all).
fn threshold(share: f64) -> u64 {
    if share.is_nan() || share >= 1.0 {
        u64::MAX
    } else {
        // Exact enough: the share is a ratio, not a count.
        (share.max(0.0) * u64::MAX as f64) as u64
    }
}

/// Whether trace `trace_id` is below `threshold`.
fn below(threshold: u64, trace_id: TraceId) -> bool {
    if threshold == u64::MAX {
        return true;
    }
    let bytes = trace_id.to_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..]);
    u64::from_be_bytes(low) < threshold
}

/// Whether a routine call of trace `trace_id` is in the exported share.
pub fn in_share(trace_id: TraceId) -> bool {
    below(THRESHOLD.load(Ordering::Relaxed), trace_id)
}

/// Whether a call span of trace `trace_id`, kept for `reason` (if any), will be exported.
pub fn exported(reason: Option<&str>, trace_id: TraceId) -> bool {
    reason.is_some() || in_share(trace_id)
}

/// Call spans dropped since start.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

fn is_call_span(span: &SpanData) -> bool {
    span.span_kind == SpanKind::Client || span.name == POOL_REQUEST
}

fn kept_reason(span: &SpanData) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == KEPT)
        .map(|kv| kv.value.clone())
}

/// Most parents of exported spans remembered at once (a parent ends after its children; the
/// memory is cleared when full, which can only cost a parent, never grow).
const MAX_REMEMBERED_PARENTS: usize = 4096;

/// The span processor that drops routine call spans outside the share, in front of `inner`. A call
/// span whose child was exported is exported too, with the child's reason, so that no exported
/// span lacks its parent (a call made inside another, such as a chain-id check before a call).
#[derive(Debug)]
pub struct CallSpanSampler<P> {
    inner: P,
    /// Parents of exported spans, with the reason their child was kept.
    parents: Mutex<HashMap<SpanId, Value>>,
}

impl<P> CallSpanSampler<P> {
    /// Samples in front of `inner`.
    pub fn new(inner: P) -> Self {
        Self {
            inner,
            parents: Mutex::new(HashMap::new()),
        }
    }

    fn parents(&self) -> std::sync::MutexGuard<'_, HashMap<SpanId, Value>> {
        self.parents.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<P: SpanProcessor> SpanProcessor for CallSpanSampler<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        if !is_call_span(&span) {
            self.inner.on_end(span);
            return;
        }
        let child = self.parents().remove(&span.span_context.span_id());
        let reason = match kept_reason(&span) {
            Some(r) => r,
            None => {
                let r = match child {
                    Some(r) => r,
                    None if in_share(span.span_context.trace_id()) => Value::from(reason::SHARE),
                    None => {
                        DROPPED.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
                span.attributes.push(KeyValue::new(KEPT, r.clone()));
                r
            }
        };
        // A span kept by the share needs nothing remembered: its parent, of the same trace, is in
        // the share too. Remembering only the others keeps the memory to the few interesting calls.
        if span.parent_span_id != SpanId::INVALID && reason.as_str() != reason::SHARE {
            let mut parents = self.parents();
            if parents.len() >= MAX_REMEMBERED_PARENTS {
                parents.clear();
            }
            parents.insert(span.parent_span_id, reason);
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u64) -> TraceId {
        TraceId::from_bytes(
            (u128::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) << 64
                | u128::from(i.wrapping_mul(0xc2b2_ae3d_27d4_eb4f)))
            .to_be_bytes(),
        )
    }

    #[test]
    fn the_share_is_a_share_of_trace_ids() {
        // The process-wide share is left alone: other tests record exemplars under it.
        let quarter = threshold(0.25);
        let kept = (0..10_000u64).filter(|&i| below(quarter, id(i))).count();
        assert!((2_000..3_000).contains(&kept), "kept {kept} of 10,000");
        let all = TraceId::from_bytes([0xff; 16]);
        assert!(!below(threshold(0.0), all));
        assert!(!below(threshold(-1.0), all));
        assert!(below(threshold(1.0), all));
        assert!(below(threshold(2.0), all));
        assert!(below(threshold(f64::NAN), all));
        assert!(exported(Some(reason::SLOW), all));
    }
}
