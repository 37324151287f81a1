//! Histograms that point at traces: besides the OpenTelemetry histogram (exported over OTLP and in
//! the classic `/metrics` text), each keeps an OpenMetrics histogram whose buckets carry an exemplar,
//! the `trace_id` and `span_id` of one measurement in the bucket.
//!
//! Which measurement: the slowest of the bucket's recent ones. A new measurement replaces a bucket's
//! exemplar when it is at least as large, or when the exemplar is older than [`EXEMPLAR_WINDOW`], so
//! a bucket's exemplar is never staler than the window and, within it, is the one worth opening.
//! Only measurements made inside a sampled span become exemplars (an unsampled trace is never
//! exported, and its id would lead nowhere).
//!
//! Memory is bounded by the series (label values come from bounded sets) times the buckets.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use opentelemetry::{metrics::Histogram, trace::SpanContext, Key, KeyValue, StringValue, Value};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{exemplar::HistogramWithExemplars, MetricType},
};

/// How long a bucket's exemplar stands against faster measurements.
pub const EXEMPLAR_WINDOW: Duration = Duration::from_secs(60);

/// An exemplar's labels: `trace_id` and `span_id`, in hex.
type TraceLabels = Vec<(&'static str, String)>;

/// One series: its OpenMetrics histogram and, per bucket, the exemplar's value and age.
#[derive(Debug)]
struct Series {
    histogram: HistogramWithExemplars<TraceLabels>,
    held: Vec<Option<(f64, Instant)>>,
}

/// The OpenMetrics side of a histogram with exemplars, rendered on `/metrics` for scrapers that ask
/// for OpenMetrics.
#[derive(Debug)]
pub struct ExemplarFamily {
    /// The Prometheus name, as the classic text shows the same histogram.
    name: &'static str,
    help: &'static str,
    bounds: &'static [f64],
    /// Series by their attributes (in the order recorded).
    series: Mutex<HashMap<Vec<(Key, StringValue)>, Series>>,
    /// Added to every series, as the classic text adds the resource's `service.name`.
    service_name: std::sync::OnceLock<String>,
}

impl ExemplarFamily {
    fn new(name: &'static str, help: &'static str, bounds: &'static [f64]) -> Self {
        Self {
            name,
            help,
            bounds,
            series: Mutex::new(HashMap::new()),
            service_name: std::sync::OnceLock::new(),
        }
    }

    /// The Prometheus name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Sets the `service_name` label every series is shown with (the first name set stays).
    pub fn set_service_name(&self, name: &str) {
        let _ = self.service_name.set(name.to_owned());
    }

    /// The bucket `value` falls in: the first bound it does not exceed, or the `+Inf` bucket.
    fn bucket(&self, value: f64) -> usize {
        self.bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len())
    }

    fn observe(&self, value: f64, attrs: &[KeyValue], trace: &SpanContext) {
        let key: Vec<(Key, StringValue)> = attrs
            .iter()
            .map(|kv| {
                let v = match &kv.value {
                    Value::String(s) => s.clone(),
                    other => StringValue::from(other.to_string()),
                };
                (kv.key.clone(), v)
            })
            .collect();
        let mut all = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let series = all.entry(key).or_insert_with(|| Series {
            histogram: HistogramWithExemplars::new(self.bounds.iter().copied()),
            held: vec![None; self.bounds.len() + 1],
        });
        let now = Instant::now();
        let bucket = self.bucket(value);
        let replace = trace.is_valid()
            && trace.is_sampled()
            && series.held[bucket]
                .is_none_or(|(held, at)| value >= held || now.duration_since(at) > EXEMPLAR_WINDOW);
        if replace {
            series.held[bucket] = Some((value, now));
            let labels = vec![
                ("trace_id", trace.trace_id().to_string()),
                ("span_id", trace.span_id().to_string()),
            ];
            series
                .histogram
                .observe(value, Some(labels), Some(SystemTime::now()));
        } else {
            series.histogram.observe(value, None, None);
        }
    }
}

impl Collector for ExemplarFamily {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let service = self.service_name.get();
        let all = self.series.lock().unwrap_or_else(|p| p.into_inner());
        if all.is_empty() {
            return Ok(());
        }
        let mut family =
            encoder.encode_descriptor(self.name, self.help, None, MetricType::Histogram)?;
        for (key, series) in all.iter() {
            let mut labels: Vec<(String, String)> = key
                .iter()
                .map(|(k, v)| (k.as_str().replace('.', "_"), v.as_str().to_owned()))
                .collect();
            if let Some(service) = service {
                labels.push(("service_name".to_owned(), service.clone()));
            }
            series.histogram.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The OpenTelemetry context of `span`: its trace and span ids (invalid outside a span, or without
/// the OpenTelemetry layer).
pub fn span_context_of(span: &tracing::Span) -> SpanContext {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    span.context().span().span_context().clone()
}

/// A histogram recorded twice at once: into OpenTelemetry (OTLP, classic `/metrics`) and into its
/// [`ExemplarFamily`] with the trace the measurement was made in.
#[derive(Clone, Debug)]
pub struct TracedHistogram {
    otel: Histogram<f64>,
    family: Arc<ExemplarFamily>,
}

impl TracedHistogram {
    /// `otel`, shown on OpenMetrics as `name` with `help` and the same `bounds`.
    pub fn new(
        otel: Histogram<f64>,
        name: &'static str,
        help: &'static str,
        bounds: &'static [f64],
    ) -> Self {
        Self {
            otel,
            family: Arc::new(ExemplarFamily::new(name, help, bounds)),
        }
    }

    /// Records `value` with `attrs`; `trace` is the span it was measured in.
    pub fn record(&self, value: f64, attrs: &[KeyValue], trace: &SpanContext) {
        self.otel.record(value, attrs);
        self.family.observe(value, attrs, trace);
    }

    /// The OpenMetrics side.
    pub fn family(&self) -> Arc<ExemplarFamily> {
        self.family.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

    const BOUNDS: [f64; 3] = [0.1, 1.0, 10.0];

    fn trace(n: u128) -> SpanContext {
        SpanContext::new(
            TraceId::from(n),
            SpanId::from(n as u64),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        )
    }

    fn render(family: Arc<ExemplarFamily>) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(family));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    fn bucket_line<'a>(text: &'a str, le: &str) -> &'a str {
        text.lines()
            .find(|l| l.contains(&format!("le=\"{le}\"")))
            .unwrap_or_else(|| panic!("no bucket le={le} in\n{text}"))
    }

    #[test]
    fn a_bucket_keeps_its_slowest_recent_measurement_as_exemplar() {
        let f = ExemplarFamily::new("x_seconds", "x", &BOUNDS);
        let attrs = [KeyValue::new("chain", "c")];
        f.observe(0.5, &attrs, &trace(1));
        f.observe(0.9, &attrs, &trace(2));
        // Faster: the exemplar stays the slowest.
        f.observe(0.3, &attrs, &trace(3));
        f.set_service_name("svc");
        let text = render(Arc::new(f));
        let line = bucket_line(&text, "1.0");
        assert!(
            line.contains(&format!("trace_id=\"{}\"", TraceId::from(2u128))),
            "{line}"
        );
        assert!(line.contains("} 0.9 "), "{line}");
        assert!(line.contains("service_name=\"svc\""), "{line}");
        assert!(line.starts_with("x_seconds_bucket{"), "{line}");
        assert!(text.contains("x_seconds_count{chain=\"c\",service_name=\"svc\"} 3"));
    }

    #[test]
    fn measurements_outside_a_sampled_span_are_counted_without_an_exemplar() {
        let f = ExemplarFamily::new("x_seconds", "x", &BOUNDS);
        let attrs = [KeyValue::new("chain", "c")];
        f.observe(20.0, &attrs, &SpanContext::empty_context());
        let unsampled = SpanContext::new(
            TraceId::from(7u128),
            SpanId::from(7u64),
            TraceFlags::default(),
            false,
            TraceState::default(),
        );
        f.observe(30.0, &attrs, &unsampled);
        let text = render(Arc::new(f));
        let line = bucket_line(&text, "+Inf");
        assert!(!line.contains('#'), "{line}");
        assert!(line.ends_with(" 2"), "{line}");
    }

    #[test]
    fn buckets_are_inclusive_of_their_bound() {
        let f = ExemplarFamily::new("x_seconds", "x", &BOUNDS);
        assert_eq!(f.bucket(0.1), 0);
        assert_eq!(f.bucket(0.10001), 1);
        assert_eq!(f.bucket(10.0), 2);
        assert_eq!(f.bucket(11.0), 3);
    }
}
