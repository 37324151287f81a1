//! JSON log lines for stderr: one object a line with `timestamp`, `level`, `target`, the event's
//! fields flattened, the current span's name, and `trace_id` / `span_id` when the event happens
//! inside a span, so that a log line leads to its trace.

use std::fmt;

use serde_json::{Map, Value};
use tracing::{field::Field, Event, Subscriber};
use tracing_subscriber::{
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields},
    registry::LookupSpan,
};

/// The formatter.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct JsonWithTrace;

/// Span fields are not part of the lines (only the current span's name and ids are), so nothing is
/// formatted for them: the default would format every field of every span as it opens, on the path
/// of every RPC call and every block.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct NoSpanFields;

impl<'w> FormatFields<'w> for NoSpanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        _: Writer<'w>,
        _: R,
    ) -> fmt::Result {
        Ok(())
    }
}

struct Fields<'a>(&'a mut Map<String, Value>);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }
}

impl<S, N> FormatEvent<S, N> for JsonWithTrace
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut map = Map::new();
        event.record(&mut Fields(&mut map));
        // The record's own keys win over event fields of the same name.
        map.insert(
            "timestamp".into(),
            Value::from(humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()),
        );
        map.insert("level".into(), Value::from(meta.level().as_str()));
        map.insert("target".into(), Value::from(meta.target()));
        if let Some(span) = ctx.lookup_current() {
            map.insert("span".into(), Value::from(span.name()));
            let sc = super::exemplars::span_context_of(&tracing::Span::current());
            if sc.is_valid() {
                map.insert("trace_id".into(), Value::from(sc.trace_id().to_string()));
                map.insert("span_id".into(), Value::from(sc.span_id().to_string()));
            }
        }
        writeln!(writer, "{}", Value::Object(map))
    }
}

/// Lets the OpenTelemetry SDK's own events (export failures, above all) reach stderr at most once a
/// minute per call site: a collector that is down must be reported, not repeated every export
/// interval.
#[derive(Debug, Default)]
pub(super) struct SdkEventThrottle {
    last: std::sync::Mutex<
        std::collections::HashMap<tracing::callsite::Identifier, std::time::Instant>,
    >,
}

/// Time between two reports of the same SDK event.
const SDK_EVENT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl<S> tracing_subscriber::layer::Filter<S> for SdkEventThrottle {
    fn enabled(
        &self,
        _meta: &tracing::Metadata<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        true
    }

    fn event_enabled(
        &self,
        event: &Event<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let meta = event.metadata();
        if !meta.target().starts_with("opentelemetry") {
            return true;
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        match last.get(&meta.callsite()) {
            Some(at) if now.duration_since(*at) < SDK_EVENT_INTERVAL => false,
            _ => {
                last.insert(meta.callsite(), now);
                true
            }
        }
    }
}
