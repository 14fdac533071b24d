//! Structured logs through `tracing`: text for people, JSON for pipelines;
//! and, with an OTLP collector, statement spans exported as traces.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

use crate::telemetry::otlp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Installs the global subscriber; `RUST_LOG` overrides the default level.
/// Calling it twice is harmless (the second call is ignored).
pub fn init(format: Format) {
    init_with_default(format, "info");
}

/// Like [`init`] with another default level (tests want `warn`).
pub fn init_with_default(format: Format, default_level: &str) {
    let _ = try_init(format, default_level, None);
}

/// Keeps the span exporter alive; dropping it sends the spans still
/// batched.
pub struct TracesGuard(SdkTracerProvider);

impl Drop for TracesGuard {
    fn drop(&mut self) {
        if let Err(e) = self.0.shutdown() {
            eprintln!("pgshift: flushing spans to the OTLP collector failed: {e}");
        }
    }
}

/// [`init`], plus statement spans exported to `otlp_endpoint` when given.
/// Spans are only created when this succeeded, so without a collector they
/// cost nothing.
pub fn init_with_traces(
    format: Format,
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<Option<TracesGuard>> {
    let provider = otlp_endpoint.map(otlp::tracer_provider).transpose()?;
    let installed = try_init(format, "info", provider.as_ref());
    match provider {
        Some(p) if installed => {
            otlp::enable_tracing();
            Ok(Some(TracesGuard(p)))
        }
        _ => Ok(None),
    }
}

fn try_init(format: Format, default_level: &str, traces: Option<&SdkTracerProvider>) -> bool {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // Statement spans are for the collector; logs stay as they were.
    let filter = match format!("{}=off", otlp::STATEMENT_TARGET).parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        Format::Text => fmt.boxed(),
        Format::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    };
    let traces = traces.map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("pgshift"))
            .with_filter(Targets::new().with_target(otlp::STATEMENT_TARGET, LevelFilter::INFO))
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(traces)
        .try_init()
        .is_ok()
}
