//! `/metrics` in OpenMetrics, for scrapers that ask for it: the same families, names and labels as
//! the classic text, written by `prometheus-client`, with exemplars on the histograms that keep them
//! ([`super::exemplars`]).
//!
//! Every family comes from the same gathering as the classic text, except those with exemplars,
//! which come from their [`ExemplarFamily`] (recorded at the same call as their OpenTelemetry
//! twin, with the same attributes).

use std::sync::Arc;

use prometheus::proto::{MetricFamily, MetricType as ClassicType};
use prometheus_client::{
    collector::Collector,
    encoding::DescriptorEncoder,
    metrics::{exemplar::Exemplar, MetricType},
    registry::Registry,
};

use super::exemplars::ExemplarFamily;

/// No exemplar (the families gathered from OpenTelemetry have none).
type NoExemplar = Exemplar<Vec<(String, String)>, f64>;

/// The classic registry's families, re-encoded.
#[derive(Debug)]
struct Gathered {
    registry: prometheus::Registry,
    /// Families written by their exemplar twins instead.
    skip: Vec<&'static str>,
}

fn labels(m: &prometheus::proto::Metric) -> Vec<(String, String)> {
    m.get_label()
        .iter()
        .map(|l| (l.name().to_owned(), l.value().to_owned()))
        .collect()
}

fn encode_family(
    family: &MetricFamily,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let name = family.name();
    let help = family.help();
    match family.get_field_type() {
        ClassicType::COUNTER => {
            // OpenMetrics names the family without the `_total` its samples carry.
            let base = name.strip_suffix("_total").unwrap_or(name);
            let mut e = encoder.encode_descriptor(base, help, None, MetricType::Counter)?;
            for m in family.get_metric() {
                let l = labels(m);
                e.encode_family(&l)?.encode_counter::<_, _, f64>(
                    &m.get_counter().get_value(),
                    None::<&NoExemplar>,
                )?;
            }
        }
        ClassicType::GAUGE => {
            let mut e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for m in family.get_metric() {
                let l = labels(m);
                e.encode_family(&l)?
                    .encode_gauge(&m.get_gauge().get_value())?;
            }
        }
        ClassicType::HISTOGRAM => {
            let mut e = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for m in family.get_metric() {
                let h = m.get_histogram();
                // Cumulative counts per bound become counts per bucket, ending with `+Inf`.
                let mut buckets = Vec::with_capacity(h.get_bucket().len() + 1);
                let mut below = 0;
                for b in h.get_bucket() {
                    let c = b.cumulative_count();
                    if b.upper_bound().is_finite() {
                        buckets.push((b.upper_bound(), c.saturating_sub(below)));
                        below = c;
                    }
                }
                buckets.push((f64::INFINITY, h.get_sample_count().saturating_sub(below)));
                let l = labels(m);
                e.encode_family(&l)?
                    .encode_histogram::<Vec<(String, String)>>(
                        h.get_sample_sum(),
                        h.get_sample_count(),
                        &buckets,
                        None,
                    )?;
            }
        }
        // The OpenTelemetry exporter makes neither.
        ClassicType::SUMMARY | ClassicType::UNTYPED => {}
    }
    Ok(())
}

impl Collector for Gathered {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in self.registry.gather() {
            if self.skip.contains(&family.name()) {
                continue;
            }
            encode_family(&family, &mut encoder)?;
        }
        Ok(())
    }
}

/// Whether an `Accept` header prefers OpenMetrics to the classic text: OpenMetrics is named with a
/// weight above zero, and no lower than the weight given to `text/plain` (or to anything).
pub fn preferred(accept: &str) -> bool {
    let mut openmetrics = 0.0_f32;
    let mut plain = 0.0_f32;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" | "text/*" | "*/*" => plain = plain.max(q),
            _ => {}
        }
    }
    openmetrics > 0.0 && openmetrics >= plain
}

/// What `/metrics` renders as OpenMetrics.
#[derive(Debug)]
pub struct OpenMetrics {
    registry: Registry,
}

impl OpenMetrics {
    /// The families of `classic`, with `exemplars` in place of their namesakes.
    pub fn new(classic: prometheus::Registry, exemplars: Vec<Arc<ExemplarFamily>>) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Gathered {
            registry: classic,
            skip: exemplars.iter().map(|f| f.name()).collect(),
        }));
        for f in exemplars {
            registry.register_collector(Box::new(f));
        }
        Self { registry }
    }

    /// The OpenMetrics text, ending with `# EOF`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        match prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            Ok(()) => out,
            // Only a label or name the format cannot carry gets here; ours come from bounded sets.
            Err(_) => "# cannot encode metrics\n# EOF\n".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::preferred;

    #[test]
    fn openmetrics_is_chosen_only_when_preferred() {
        // What Prometheus sends.
        assert!(preferred("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"));
        assert!(preferred("application/openmetrics-text"));
        assert!(!preferred("text/plain;version=0.0.4"));
        assert!(!preferred("*/*"));
        assert!(!preferred(""));
        assert!(!preferred("application/openmetrics-text;q=0"));
        assert!(!preferred("text/plain, application/openmetrics-text;q=0.5"));
    }
}
