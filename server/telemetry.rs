//! Logging and tracing set-up: `tracing` to stderr, as text or one JSON
//! object per line, and, when an OTLP endpoint is configured, the same
//! spans exported as OpenTelemetry traces over OTLP/gRPC.
//!
//! The spans are the ones the code already opens: one `rpc` span per call
//! (`api::guard`, continuing the caller's W3C `traceparent` when it sends
//! one) and the engines' children (`embedding.batch`, `memory.search`,
//! `model.request`). The log filter applies to the log lines only; traces
//! get every agentd span at INFO and above, so `--log warn` does not empty
//! them.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::LogFormat;

/// What must outlive serving: the trace exporter, flushed by
/// [`Telemetry::shutdown`].
#[derive(Debug, Default)]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
    /// The exporter's connection runs on a runtime of its own (one
    /// thread), so that the server's runtime can stop first: its tasks are
    /// dropped, their spans close and are exported, then this one goes.
    exporter_runtime: Option<tokio::runtime::Runtime>,
}

impl Telemetry {
    /// Sends the spans still buffered (bounded by the exporter's timeout).
    /// Call after the server's runtime stopped, so every span is closed.
    pub fn shutdown(self) {
        if let Some(provider) = self.traces
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "flushing the last traces");
        }
        if let Some(runtime) = self.exporter_runtime {
            runtime.shutdown_timeout(std::time::Duration::from_millis(100));
        }
    }
}

/// Installs the global subscriber. `filter` uses RUST_LOG syntax; `RUST_LOG`
/// itself, when set, wins so that a developer can turn up one module without
/// touching the config. With `otlp_endpoint` (e.g. `http://127.0.0.1:4317`)
/// spans are exported there too, from a one-thread runtime of their own.
pub fn init(
    format: LogFormat,
    filter: &str,
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<Telemetry> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => EnvFilter::try_new(env)?,
        _ => EnvFilter::try_new(filter)?,
    };
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
    }
    .with_filter(filter);

    let mut telemetry = Telemetry::default();
    let traces = match otlp_endpoint {
        Some(endpoint) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("otlp-export")
                .enable_all()
                .build()?;
            // The tonic channel binds to the runtime it is made in.
            let exporter = {
                let _in = runtime.enter();
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint)
                    .build()
                    .map_err(|e| anyhow::anyhow!("the OTLP exporter for {endpoint}: {e}"))?
            };
            telemetry.exporter_runtime = Some(runtime);
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name("agentd")
                        .build(),
                )
                .build();
            let tracer = provider.tracer("agentd");
            telemetry.traces = Some(provider);
            let spans = Targets::new().with_target("agentd", LevelFilter::INFO);
            Some(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(spans),
            )
        }
        None => None,
    };
    Registry::default()
        .with(logs)
        .with(traces)
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))?;
    Ok(telemetry)
}

/// The trace context a caller sent in its W3C `traceparent` (and
/// `tracestate`) metadata, if any.
pub fn remote_context(headers: &http::HeaderMap) -> Option<opentelemetry::Context> {
    headers.get("traceparent")?;
    Some(TraceContextPropagator::new().extract(&Headers(headers)))
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}
