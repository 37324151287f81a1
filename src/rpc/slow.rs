//! Slow calls without a trace backend: per provider, the [`KEPT`] slowest attempts and the [`KEPT`]
//! latest failed attempts of the last window, each with its trace and span ids, so that an operator
//! can find the trace of a slow call from `GET /slow` or `/report` (and read what it was, even
//! before a trace backend is set up).
//!
//! Memory is fixed whatever the traffic: the slowest attempts are kept per slice of the window
//! ([`SLICES`] slices, at most [`KEPT`] attempts each), the failed ones in a ring of [`KEPT`].
//! Recording an attempt costs O([`KEPT`]). The slowest list served is exactly the slowest of the
//! latest `(SLICES - 1) / SLICES` of the window; of the oldest slice, only attempts that were among
//! the slowest of their slice are still known. No attempt older than the window is served.
//!
//! Errors are kept as their bounded class ([`RpcError::error_type`]), never as their message: a
//! provider may quote its URL, key included, in an error.

use std::{
    collections::VecDeque,
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use opentelemetry::trace::{SpanContext, SpanId, TraceId};
use serde::Serialize;

use super::{AttemptSpan, RpcError};

/// Most attempts each list keeps, per provider.
pub const KEPT: usize = 10;

/// Slices of the window, each with its own slowest attempts.
const SLICES: usize = 6;

/// What became of an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// Answered, and the answer was accepted.
    Ok,
    /// Failed, or answered with something refused.
    Error,
    /// Given up because another provider answered first: its duration is how long it had run
    /// then (it took at least that long).
    Abandoned,
}

impl CallOutcome {
    /// The name in `/slow` and `/report`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Error => "error",
            CallOutcome::Abandoned => "abandoned",
        }
    }
}

/// One attempt as kept.
#[derive(Clone, Debug)]
struct Kept {
    /// When it ended (or was abandoned).
    at: Instant,
    /// The same moment on the wall clock, to show.
    wall: SystemTime,
    took: Duration,
    method: &'static str,
    outcome: CallOutcome,
    error_type: Option<&'static str>,
    number: u32,
    hedge: bool,
    /// Trace id, span id and whether the span was sampled; `None` outside a valid span.
    trace: Option<(TraceId, SpanId, bool)>,
}

/// The slowest attempts that ended in one slice of the window.
#[derive(Debug, Default)]
struct Slice {
    /// The slice's number since the list's origin (0: never used).
    slot: u64,
    /// At most [`KEPT`], in no order.
    calls: Vec<Kept>,
}

#[derive(Debug)]
struct Lists {
    slices: [Slice; SLICES],
    /// Newest first, at most [`KEPT`].
    failed: VecDeque<Kept>,
}

/// One provider's slowest and latest failed attempts of the last window.
#[derive(Debug)]
pub struct SlowCalls {
    window: Duration,
    origin: Instant,
    slice_len: Duration,
    lists: Mutex<Lists>,
}

/// An attempt as `/slow` and `/report` show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SlowCall {
    /// The JSON-RPC method.
    pub method: &'static str,
    /// How long it took, in milliseconds (microsecond precision).
    pub duration_ms: f64,
    /// `ok`, `error` or `abandoned`.
    pub outcome: CallOutcome,
    /// The error's class when it failed (`timeout`, `http_5xx`, …), else `null`.
    pub error_type: Option<String>,
    /// The attempt's number within its call (1 for the first).
    pub attempt: u32,
    /// Whether it was a hedge (sent because another provider was slow).
    pub hedged: bool,
    /// Its trace id (32 hex digits), `null` if it had no valid span.
    pub trace_id: Option<String>,
    /// Its attempt span's id (16 hex digits), `null` if it had no valid span.
    pub span_id: Option<String>,
    /// Whether its span was sampled, so exported when a trace backend is configured.
    pub sampled: bool,
    /// When it ended, RFC 3339 UTC with milliseconds.
    pub at: String,
}

/// One provider's lists, as served.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SlowView {
    /// The window, in seconds.
    pub window_seconds: f64,
    /// The slowest attempts of the window, slowest first (the latest first among equals).
    pub slowest: Vec<SlowCall>,
    /// The latest failed attempts of the window, latest first.
    pub failed: Vec<SlowCall>,
}

impl SlowCalls {
    /// Empty lists over `window` (at least 10 ms per slice), from `now`.
    pub fn new(window: Duration, now: Instant) -> Self {
        Self {
            window,
            origin: now,
            slice_len: (window / SLICES as u32).max(Duration::from_millis(10)),
            lists: Mutex::new(Lists {
                slices: Default::default(),
                failed: VecDeque::with_capacity(KEPT + 1),
            }),
        }
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Records an attempt that ended now after `took`, failed with `error` or not; `cx` is its
    /// span's context.
    pub fn record(
        &self,
        attempt: &AttemptSpan,
        took: Duration,
        error: Option<&RpcError>,
        cx: &SpanContext,
    ) {
        let outcome = if error.is_some() {
            CallOutcome::Error
        } else {
            CallOutcome::Ok
        };
        self.record_at(
            attempt,
            took,
            outcome,
            error.map(RpcError::error_type),
            cx,
            Instant::now(),
            SystemTime::now(),
        );
    }

    /// Records an attempt given up now after `took` (it goes in the slowest list only: it did not
    /// fail).
    pub fn record_abandoned(&self, attempt: &AttemptSpan, took: Duration, cx: &SpanContext) {
        self.record_at(
            attempt,
            took,
            CallOutcome::Abandoned,
            None,
            cx,
            Instant::now(),
            SystemTime::now(),
        );
    }

    /// Records an attempt that ended at `at` (`wall` on the wall clock).
    #[allow(clippy::too_many_arguments)]
    fn record_at(
        &self,
        attempt: &AttemptSpan,
        took: Duration,
        outcome: CallOutcome,
        error_type: Option<&'static str>,
        cx: &SpanContext,
        at: Instant,
        wall: SystemTime,
    ) {
        let call = Kept {
            at,
            wall,
            took,
            method: attempt.method,
            outcome,
            error_type,
            number: attempt.number,
            hedge: attempt.hedge,
            trace: cx
                .is_valid()
                .then(|| (cx.trace_id(), cx.span_id(), cx.is_sampled())),
        };
        let slot = self.slot(at);
        let mut lists = self.lists.lock().unwrap_or_else(|p| p.into_inner());
        if outcome == CallOutcome::Error {
            lists.failed.push_front(call.clone());
            lists.failed.truncate(KEPT);
        }
        let slice = &mut lists.slices[(slot % SLICES as u64) as usize];
        if slice.slot != slot {
            slice.slot = slot;
            slice.calls.clear();
        }
        if slice.calls.len() < KEPT {
            slice.calls.push(call);
        } else if let Some(fastest) = slice.calls.iter_mut().min_by_key(|c| c.took) {
            if call.took > fastest.took {
                *fastest = call;
            }
        }
    }

    /// The slice `at` falls in (slot 0 is never used, so that an empty slice is never current).
    fn slot(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.origin).as_nanos() / self.slice_len.as_nanos()) as u64
            + 1
    }

    /// The lists at `now`: only attempts that ended within the window before it.
    pub fn view(&self, now: Instant) -> SlowView {
        let fresh = |c: &&Kept| now.saturating_duration_since(c.at) <= self.window;
        let lists = self.lists.lock().unwrap_or_else(|p| p.into_inner());
        // A slice not reused for a while holds only old attempts, which the filter leaves out.
        let mut slowest: Vec<&Kept> = lists
            .slices
            .iter()
            .flat_map(|s| &s.calls)
            .filter(fresh)
            .collect();
        slowest.sort_by(|a, b| b.took.cmp(&a.took).then(b.at.cmp(&a.at)));
        slowest.truncate(KEPT);
        SlowView {
            window_seconds: self.window.as_secs_f64(),
            slowest: slowest.into_iter().map(shown).collect(),
            failed: lists.failed.iter().filter(fresh).map(shown).collect(),
        }
    }
}

fn shown(c: &Kept) -> SlowCall {
    SlowCall {
        method: c.method,
        duration_ms: (c.took.as_secs_f64() * 1e6).round() / 1e3,
        outcome: c.outcome,
        error_type: c.error_type.as_ref().map(|e| e.to_string()),
        attempt: c.number,
        hedged: c.hedge,
        trace_id: c.trace.map(|(t, _, _)| t.to_string()),
        span_id: c.trace.map(|(_, s, _)| s.to_string()),
        sampled: c.trace.is_some_and(|(_, _, sampled)| sampled),
        at: humantime::format_rfc3339_millis(c.wall).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{TraceFlags, TraceState};

    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn cx(n: u8) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes([n; 16]),
            SpanId::from_bytes([n; 8]),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        )
    }

    /// Records `took` ending at `at` (the wall clock `at - t0` after the epoch), failed with a
    /// timeout or not, with span context `cx(n)`.
    fn record(s: &SlowCalls, t0: Instant, at: Instant, took: Duration, failed: bool, n: u8) {
        let attempt = AttemptSpan {
            span: tracing::Span::none(),
            method: "eth_getBlockByNumber",
            number: 1 + u32::from(n % 2),
            hedge: n % 2 == 1,
        };
        let (outcome, error_type) = if failed {
            (CallOutcome::Error, Some("timeout"))
        } else {
            (CallOutcome::Ok, None)
        };
        let wall = SystemTime::UNIX_EPOCH + (at - t0);
        s.record_at(&attempt, took, outcome, error_type, &cx(n), at, wall);
    }

    fn durations(calls: &[SlowCall]) -> Vec<f64> {
        calls.iter().map(|c| c.duration_ms).collect()
    }

    #[test]
    fn keeps_the_slowest_slowest_first() {
        let t0 = Instant::now();
        let s = SlowCalls::new(WINDOW, t0);
        // 100 attempts in one slice, 1..=100 ms, in a shuffled order.
        for i in 0..100u64 {
            let took = (i * 37) % 100 + 1;
            record(&s, t0, t0 + ms(i), ms(took), false, (i % 200) as u8);
        }
        let v = s.view(t0 + ms(200));
        assert_eq!(
            durations(&v.slowest),
            (91..=100).rev().map(|d| d as f64).collect::<Vec<_>>()
        );
        assert!(v.failed.is_empty());
        assert_eq!(v.window_seconds, 60.0);
    }

    #[test]
    fn keeps_the_slowest_across_slices_and_equals_latest_first() {
        let t0 = Instant::now();
        let s = SlowCalls::new(WINDOW, t0);
        let slice = WINDOW / SLICES as u32;
        // Each slice: 10 fast attempts, then in slice k one of 100 + k ms; slice 0 has a second
        // one of 100 ms, later than slice 0's first.
        for k in 0..SLICES as u32 {
            for i in 0..KEPT as u32 {
                record(&s, t0, t0 + slice * k + ms(u64::from(i)), ms(5), false, 1);
            }
            record(
                &s,
                t0,
                t0 + slice * k + ms(50),
                ms(100 + u64::from(k)),
                false,
                2,
            );
        }
        record(&s, t0, t0 + ms(60), ms(100), false, 3);
        let now = t0 + slice * (SLICES as u32 - 1) + ms(100);
        let v = s.view(now);
        assert_eq!(
            durations(&v.slowest),
            [105.0, 104.0, 103.0, 102.0, 101.0, 100.0, 100.0, 5.0, 5.0, 5.0]
        );
        // Among equals, the latest first.
        assert_eq!(v.slowest[5].trace_id, Some("03".repeat(16)));
        assert_eq!(v.slowest[6].trace_id, Some("02".repeat(16)));
    }

    #[test]
    fn attempts_older_than_the_window_are_not_served() {
        let t0 = Instant::now();
        let s = SlowCalls::new(WINDOW, t0);
        record(&s, t0, t0, ms(900), true, 1);
        record(&s, t0, t0 + ms(30_000), ms(50), true, 2);
        let v = s.view(t0 + WINDOW);
        assert_eq!(durations(&v.slowest), [900.0, 50.0]);
        assert_eq!(durations(&v.failed), [50.0, 900.0]);
        // Just past the window: the first is gone from both lists.
        let v = s.view(t0 + WINDOW + ms(1));
        assert_eq!(durations(&v.slowest), [50.0]);
        assert_eq!(durations(&v.failed), [50.0]);
        // Long after: nothing, although its slice's slot comes round again.
        let v = s.view(t0 + WINDOW * 10 + ms(30_000));
        assert!(v.slowest.is_empty() && v.failed.is_empty(), "{v:?}");
        // A slice reused later holds only its new attempts.
        let later = t0 + WINDOW * 10;
        record(&s, t0, later, ms(7), false, 3);
        assert_eq!(durations(&s.view(later).slowest), [7.0]);
    }

    #[test]
    fn failed_attempts_latest_first_and_bounded() {
        let t0 = Instant::now();
        let s = SlowCalls::new(WINDOW, t0);
        for i in 0..(3 * KEPT as u64) {
            // Durations fall while time runs: the latest are the fastest.
            record(&s, t0, t0 + ms(i), ms(1000 - i), i % 3 != 0, i as u8);
        }
        let v = s.view(t0 + ms(100));
        let expected: Vec<f64> = (0..3 * KEPT as u64)
            .rev()
            .filter(|i| i % 3 != 0)
            .take(KEPT)
            .map(|i| (1000 - i) as f64)
            .collect();
        assert_eq!(durations(&v.failed), expected);
        assert!(
            v.failed
                .iter()
                .all(|c| c.outcome == CallOutcome::Error
                    && c.error_type.as_deref() == Some("timeout"))
        );
        // The slowest are the earliest, failed or not.
        assert_eq!(
            durations(&v.slowest),
            (0..KEPT as u64)
                .map(|i| (1000 - i) as f64)
                .collect::<Vec<_>>()
        );
        assert_eq!(v.slowest[1].outcome, CallOutcome::Error);
        assert_eq!(v.slowest[1].error_type.as_deref(), Some("timeout"));
        assert_eq!(v.slowest[0].outcome, CallOutcome::Ok);
        assert_eq!(v.slowest[0].error_type, None);
    }

    #[test]
    fn memory_is_bounded_whatever_the_traffic() {
        let t0 = Instant::now();
        let s = SlowCalls::new(WINDOW, t0);
        for i in 0..100_000u64 {
            record(&s, t0, t0 + ms(i), ms(i % 997), i % 2 == 0, (i % 251) as u8);
        }
        let lists = s.lists.lock().unwrap();
        assert!(lists.slices.iter().all(|s| s.calls.len() <= KEPT));
        assert!(lists.slices.iter().all(|s| s.calls.capacity() <= 2 * KEPT));
        assert_eq!(lists.failed.len(), KEPT);
        assert!(lists.failed.capacity() <= 2 * KEPT + 1);
        drop(lists);
        let v = s.view(t0 + ms(100_000));
        assert_eq!((v.slowest.len(), v.failed.len()), (KEPT, KEPT));
    }

    #[test]
    fn an_attempt_is_shown_with_its_ids_time_and_what_it_was() {
        let t0 = Instant::now();
        let s = SlowCalls::new(WINDOW, t0);
        record(
            &s,
            t0,
            t0 + ms(1500),
            Duration::from_micros(312_345),
            false,
            1,
        );
        let attempt = AttemptSpan::detached("eth_blockNumber");
        s.record_at(
            &attempt,
            ms(2),
            CallOutcome::Abandoned,
            None,
            &SpanContext::empty_context(),
            t0 + ms(1600),
            SystemTime::UNIX_EPOCH,
        );
        let v = s.view(t0 + ms(2000));
        let shown = serde_json::to_value(&v.slowest[0]).unwrap();
        assert_eq!(
            shown,
            serde_json::json!({
                "method": "eth_getBlockByNumber",
                "duration_ms": 312.345,
                "outcome": "ok",
                "error_type": null,
                "attempt": 2,
                "hedged": true,
                "trace_id": "01".repeat(16),
                "span_id": "01".repeat(8),
                "sampled": true,
                "at": "1970-01-01T00:00:01.500Z",
            })
        );
        // Outside a span: no ids. Abandoned: in the slowest list only.
        let abandoned = &v.slowest[1];
        assert_eq!(abandoned.outcome, CallOutcome::Abandoned);
        assert_eq!((abandoned.attempt, abandoned.hedged), (1, false));
        assert_eq!((&abandoned.trace_id, &abandoned.span_id), (&None, &None));
        assert!(!abandoned.sampled);
        assert!(v.failed.is_empty());
    }
}
