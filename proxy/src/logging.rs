//! Structured logs through `tracing`: text for people, JSON for pipelines.

use tracing_subscriber::EnvFilter;

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
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        Format::Text => builder.try_init(),
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}
