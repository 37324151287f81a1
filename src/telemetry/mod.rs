//! Telemetry set-up: structured logs on stderr, and OpenTelemetry traces, metrics and logs.
//!
//! - `tracing` is the API inside the code. A `tracing-opentelemetry` layer carries spans to an OTLP
//!   batch exporter and the OpenTelemetry appender carries log records to an OTLP log exporter, both
//!   only when an OTLP endpoint is configured (`telemetry.otlp_endpoint`, overridden by
//!   `OTEL_EXPORTER_OTLP_ENDPOINT`; other `OTEL_*` variables are read by the SDK).
//! - Metrics are always collected: a Prometheus reader serves `/metrics`, and with an endpoint a
//!   periodic reader exports OTLP too.
//! - Exporters run on their own small runtime ("otel-export"), never on the agent's: a collector
//!   that is down or slow costs the agent nothing, export queues are bounded (spans and logs beyond
//!   them are dropped and counted by the SDK), and their own HTTP/2 traffic is filtered out of the
//!   pipeline so telemetry cannot feed on itself.

pub mod exemplars;
mod json_log;
pub mod metrics;
pub mod observers;
pub mod openmetrics;
pub mod sampling;

use std::{collections::HashSet, sync::Arc, time::Duration};

use opentelemetry::{metrics::MeterProvider as _, trace::TracerProvider as _, Key, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    logs::SdkLoggerProvider,
    metrics::{PeriodicReader, SdkMeterProvider},
    trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider},
    Resource,
};
use tracing_subscriber::{filter::FilterExt, filter::Targets, fmt, prelude::*, EnvFilter, Layer};

pub use metrics::Metrics;
pub use observers::{LogObserver, MetricsObserver};

use crate::config::{LogFormat, OtlpTarget, TelemetryConfig};

/// Spans kept waiting for export at most; more are dropped (and counted by the SDK).
const SPAN_QUEUE: usize = 4096;
/// How long one OTLP export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// Crates whose own telemetry must not enter the OpenTelemetry pipeline (the exporter's transport).
const EXPORTER_TARGETS: [&str; 7] = [
    "h2",
    "hyper",
    "hyper_util",
    "tonic",
    "tower",
    "opentelemetry",
    // Its trace events quote whole request and response bodies.
    "jsonrpsee",
];

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// An OTLP exporter could not be built.
    #[error("cannot set up OTLP export to {endpoint}: {message}")]
    Exporter {
        /// The endpoint (redacted).
        endpoint: String,
        /// What went wrong.
        message: String,
    },
    /// The Prometheus exporter or the export runtime could not be set up.
    #[error("cannot set up telemetry: {0}")]
    Setup(String),
}

/// What the agent needs from telemetry: the instruments and the Prometheus registry behind
/// `/metrics`.
#[derive(Clone, Debug)]
pub struct TelemetryHandle {
    /// Every instrument.
    pub metrics: Arc<Metrics>,
    /// The registry `/metrics` renders.
    pub registry: prometheus::Registry,
    /// The same families in OpenMetrics, with exemplars.
    pub openmetrics: Arc<openmetrics::OpenMetrics>,
}

impl TelemetryHandle {
    /// The handle for `metrics` recorded into `registry`; the OpenMetrics families with exemplars
    /// are shown with `service_name`, as the classic text shows it.
    pub fn new(metrics: Arc<Metrics>, registry: prometheus::Registry, service_name: &str) -> Self {
        let families = metrics.exemplar_families();
        for f in &families {
            f.set_service_name(service_name);
        }
        let openmetrics = Arc::new(openmetrics::OpenMetrics::new(registry.clone(), families));
        Self {
            metrics,
            registry,
            openmetrics,
        }
    }

    /// `/metrics` in the classic Prometheus text format.
    pub fn prometheus_text(&self) -> String {
        let encoder = prometheus::TextEncoder::new();
        encoder
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# cannot encode metrics: {e}\n"))
    }

    /// `/metrics` in OpenMetrics, with exemplars.
    pub fn openmetrics_text(&self) -> String {
        self.openmetrics.render()
    }
}

/// The installed telemetry; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    handle: TelemetryHandle,
    meter_provider: SdkMeterProvider,
    tracer_provider: Option<SdkTracerProvider>,
    logger_provider: Option<SdkLoggerProvider>,
    export_runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("otlp", &self.tracer_provider.is_some())
            .finish()
    }
}

fn resource(cfg: &TelemetryConfig) -> Resource {
    let instance: u64 = rand::random();
    let mut builder = Resource::builder().with_attributes([
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("service.instance.id", format!("{instance:016x}")),
    ]);
    // OTEL_SERVICE_NAME (read by the default detectors) wins over the config.
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        builder = builder.with_service_name(cfg.service_name.clone());
    }
    builder.build()
}

fn meter_provider(
    registry: &prometheus::Registry,
    resource: &Resource,
    otlp: Option<opentelemetry_otlp::MetricExporter>,
) -> Result<SdkMeterProvider, TelemetryError> {
    let prometheus = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .with_resource_selector(HashSet::from([Key::new("service.name")]))
        .scope_info_enabled(false)
        .build()
        .map_err(|e| TelemetryError::Setup(e.to_string()))?;
    let mut builder = SdkMeterProvider::builder()
        .with_resource(resource.clone())
        .with_reader(prometheus);
    if let Some(exporter) = otlp {
        builder = builder.with_reader(PeriodicReader::builder(exporter).build());
    }
    Ok(builder.build())
}

impl Telemetry {
    /// Sets up logging and OpenTelemetry per `cfg`. Call once, outside any tokio runtime.
    /// `redactor` knows the secrets of the config: they are replaced in every line written to stderr.
    pub fn init(
        cfg: &TelemetryConfig,
        redactor: Arc<crate::redact::Redactor>,
    ) -> Result<Telemetry, TelemetryError> {
        let resource = resource(cfg);
        let registry = prometheus::Registry::new();
        let target = cfg.otlp_target();
        let (endpoint, shown) = match &target {
            OtlpTarget::Disabled => (None, String::new()),
            OtlpTarget::Environment => {
                (Some(None), "the OTEL_EXPORTER_OTLP_* endpoints".to_owned())
            }
            OtlpTarget::Endpoint(e) => (Some(Some(e.clone())), crate::redact::redact_url(e)),
        };
        let exporter_err = |e: opentelemetry_otlp::ExporterBuildError| TelemetryError::Exporter {
            endpoint: shown.clone(),
            message: crate::redact::redact_urls_in(&e.to_string()),
        };

        let (export_runtime, tracer_provider, logger_provider, metric_exporter) = match &endpoint {
            // Spans still get ids (for the trace_id in log lines); nothing is exported.
            None => (
                None,
                Some(
                    SdkTracerProvider::builder()
                        .with_resource(resource.clone())
                        .build(),
                ),
                None,
                None,
            ),
            Some(endpoint) => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("otel-export")
                    .enable_all()
                    .build()
                    .map_err(|e| TelemetryError::Setup(format!("export runtime: {e}")))?;
                // tonic channels spawn their connection tasks on the runtime they are built in.
                let _guard = rt.enter();
                let e = endpoint.as_deref();
                let spans =
                    with_endpoint(opentelemetry_otlp::SpanExporter::builder().with_tonic(), e)
                        .with_timeout(EXPORT_TIMEOUT)
                        .build()
                        .map_err(exporter_err)?;
                let logs =
                    with_endpoint(opentelemetry_otlp::LogExporter::builder().with_tonic(), e)
                        .with_timeout(EXPORT_TIMEOUT)
                        .build()
                        .map_err(exporter_err)?;
                let metrics = with_endpoint(
                    opentelemetry_otlp::MetricExporter::builder().with_tonic(),
                    e,
                )
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(exporter_err)?;
                // OTEL_BSP_MAX_QUEUE_SIZE, when set, wins over our bound.
                let mut batch = BatchConfigBuilder::default();
                if std::env::var_os("OTEL_BSP_MAX_QUEUE_SIZE").is_none() {
                    batch = batch.with_max_queue_size(SPAN_QUEUE);
                }
                let processor = BatchSpanProcessor::builder(spans)
                    .with_batch_config(batch.build())
                    .build();
                let tracer_provider = SdkTracerProvider::builder()
                    .with_resource(resource.clone())
                    .with_span_processor(sampling::CallSpanSampler::new(processor))
                    .build();
                let logger_provider = SdkLoggerProvider::builder()
                    .with_resource(resource.clone())
                    .with_batch_exporter(logs)
                    .build();
                drop(_guard);
                (
                    Some(rt),
                    Some(tracer_provider),
                    Some(logger_provider),
                    Some(metrics),
                )
            }
        };
        // Without export nothing is dropped: the share only decides what leaves.
        sampling::set_routine_share(if endpoint.is_some() {
            cfg.routine_call_share
        } else {
            1.0
        });
        let meter_provider = meter_provider(&registry, &resource, metric_exporter)?;
        let metrics = Arc::new(Metrics::new(&meter_provider.meter("blockwatch")));

        install_subscriber(
            cfg,
            redactor,
            tracer_provider.as_ref(),
            logger_provider.as_ref(),
        );
        if endpoint.is_some() {
            tracing::info!(endpoint = %shown, "exporting traces, metrics and logs over OTLP/gRPC");
        }
        let service_name = resource
            .get(&Key::new("service.name"))
            .map(|v| v.to_string())
            .unwrap_or_default();
        Ok(Telemetry {
            handle: TelemetryHandle::new(metrics, registry, &service_name),
            meter_provider,
            tracer_provider,
            logger_provider,
            export_runtime,
        })
    }

    /// What the agent records into.
    pub fn handle(&self) -> TelemetryHandle {
        self.handle.clone()
    }

    /// Flushes and stops every exporter, giving up after `deadline` (a collector that does not
    /// answer must not hold the exit).
    pub fn shutdown(self, deadline: Duration) {
        let Telemetry {
            meter_provider,
            tracer_provider,
            logger_provider,
            export_runtime,
            ..
        } = self;
        // The three providers flush in parallel, each within the deadline: a slow one must not
        // use up the others' time.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut jobs: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
        if let Some(t) = tracer_provider {
            jobs.push(Box::new(move || drop(t.shutdown_with_timeout(deadline))));
        }
        if let Some(l) = logger_provider {
            jobs.push(Box::new(move || drop(l.shutdown_with_timeout(deadline))));
        }
        jobs.push(Box::new(move || {
            drop(meter_provider.shutdown_with_timeout(deadline))
        }));
        let started = std::time::Instant::now();
        let mut running = 0;
        for job in jobs {
            let tx = tx.clone();
            let spawned = std::thread::Builder::new()
                .name("otel-shutdown".into())
                .spawn(move || {
                    job();
                    let _ = tx.send(());
                });
            running += usize::from(spawned.is_ok());
        }
        drop(tx);
        for _ in 0..running {
            let left = deadline.saturating_sub(started.elapsed());
            if rx.recv_timeout(left).is_err() {
                break;
            }
        }
        if let Some(rt) = export_runtime {
            rt.shutdown_background();
        }
    }
}

/// stderr, with every known secret replaced in each record before it is written: the last net
/// under whatever a library might quote.
#[derive(Clone, Debug)]
struct RedactingStderr(Arc<crate::redact::Redactor>);

/// One record's writer for [`RedactingStderr`].
struct RedactingWriter(Arc<crate::redact::Redactor>);

impl std::io::Write for RedactingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(self.0.redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> fmt::MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.clone())
    }
}

/// Sets the exporter's endpoint when the config names one (otherwise the SDK reads the
/// `OTEL_EXPORTER_OTLP_*` variables itself).
fn with_endpoint<B: WithExportConfig>(builder: B, endpoint: Option<&str>) -> B {
    match endpoint {
        Some(e) => builder.with_endpoint(e),
        None => builder,
    }
}

fn exporter_quiet() -> Targets {
    EXPORTER_TARGETS.iter().fold(
        Targets::new().with_default(tracing::Level::TRACE),
        |t, target| t.with_target(*target, tracing_subscriber::filter::LevelFilter::OFF),
    )
}

fn log_filter(cfg: &TelemetryConfig) -> EnvFilter {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<EnvFilter>().ok())
        .unwrap_or_else(|| EnvFilter::new(&cfg.log_level))
}

fn install_subscriber(
    cfg: &TelemetryConfig,
    redactor: Arc<crate::redact::Redactor>,
    tracer_provider: Option<&SdkTracerProvider>,
    logger_provider: Option<&SdkLoggerProvider>,
) {
    let stderr = match cfg.log_format {
        LogFormat::Json => fmt::layer()
            .fmt_fields(json_log::NoSpanFields)
            .event_format(json_log::JsonWithTrace)
            .with_writer(RedactingStderr(redactor))
            .boxed(),
        LogFormat::Pretty => fmt::layer()
            .with_writer(RedactingStderr(redactor))
            .with_target(false)
            .boxed(),
    }
    .with_filter(log_filter(cfg).and(json_log::SdkEventThrottle::default()));
    let spans = tracer_provider.map(|p| {
        // blockwatch's own spans (info and above) are the trace whatever the log level: exemplars
        // and slow-call lists point at them. Events become span events at the level of the logs,
        // not every trace event of every library.
        let own_spans = tracing_subscriber::filter::filter_fn(|m| {
            m.is_span()
                && m.target().starts_with("blockwatch")
                && *m.level() <= tracing::Level::INFO
        });
        // No source location, thread or busy/idle timings on spans: attributes nobody reads,
        // paid for on every span (and the timings on every poll of an instrumented future).
        tracing_opentelemetry::layer()
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_target(false)
            .with_tracer(p.tracer("blockwatch"))
            .with_filter(log_filter(cfg).or(own_spans))
            .with_filter(exporter_quiet())
    });
    let logs = logger_provider.map(|p| {
        opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(p)
            .with_filter(log_filter(cfg))
            .with_filter(exporter_quiet())
    });
    // A second installation (several agents in one test process) keeps the first.
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(spans)
        .with(logs)
        .try_init();
}
