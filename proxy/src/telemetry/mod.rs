//! Metrics and traces through OpenTelemetry: one meter provider per proxy,
//! read by Prometheus (`GET /metrics`) and, with `telemetry.otlp_endpoint`,
//! pushed to a collector over OTLP/HTTP.
//!
//! What the proxy already counts for `/status` (mirror counters, reloads,
//! sessions, backend health) is read by observable instruments when a
//! reader collects, so it costs nothing per statement. Only statements are
//! counted and timed as they happen, through instruments bound to their
//! label sets ahead of time (`statements`).

pub mod health;
pub mod otlp;
pub mod statements;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::Resource;
use pgshift_rules::config::{BackendId, Config};

use crate::mirror::MirrorCounters;
use crate::server::Shared;
pub use health::BackendHealth;
pub use statements::{StatementMeters, Tally};

/// Everything telemetry keeps for one proxy.
pub struct Telemetry {
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
    meter: Meter,
    instruments: Arc<statements::Instruments>,
    /// Client connections accepted and not yet closed (startup included).
    sessions: AtomicI64,
    pub health: BackendHealth,
    /// Where metrics are pushed, if anywhere.
    otlp_endpoint: Option<String>,
    /// Observable instruments report for as long as their handles live.
    observers: Mutex<Vec<Box<dyn std::any::Any + Send + Sync>>>,
}

impl Telemetry {
    /// A meter provider with a Prometheus reader, and an OTLP reader when
    /// the config names a collector.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let registry = prometheus::Registry::new();
        let prometheus = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            // The SPEC names the series; scope labels and target_info
            // would only add noise to every one of them.
            .scope_info_enabled(false)
            .without_target_info()
            .build()?;
        let mut builder = SdkMeterProvider::builder()
            .with_resource(resource())
            .with_reader(prometheus);
        let otlp_endpoint = config.telemetry.otlp_endpoint.clone();
        if let Some(endpoint) = &otlp_endpoint {
            builder = builder.with_reader(otlp::metrics_reader(endpoint)?);
        }
        let provider = builder.build();
        let meter = provider.meter("pgshift");
        let instruments = Arc::new(statements::Instruments::new(&meter));
        Ok(Telemetry {
            provider,
            registry,
            meter,
            instruments,
            sessions: AtomicI64::new(0),
            health: BackendHealth::default(),
            otlp_endpoint,
            observers: Mutex::new(Vec::new()),
        })
    }

    /// The statement counters for one loaded configuration (its rule names).
    pub fn statement_meters(&self, config: &Config) -> Arc<StatementMeters> {
        Arc::new(StatementMeters::new(&self.instruments, config))
    }

    /// Someone can look at the numbers (admin port or collector), so
    /// backends idle for a while are worth probing.
    pub fn observed(&self, config: &Config) -> bool {
        config.admin.is_some() || self.otlp_endpoint.is_some()
    }

    pub fn session_opened(&self) {
        self.sessions.fetch_add(1, Relaxed);
    }

    pub fn session_closed(&self) {
        self.sessions.fetch_sub(1, Relaxed);
    }

    pub fn sessions(&self) -> i64 {
        self.sessions.load(Relaxed)
    }

    /// Registers the observable instruments that read `shared` when a
    /// reader collects. A weak reference: metrics must not keep the proxy's
    /// state alive.
    pub fn observe(&self, shared: Weak<Shared>) {
        let m = &self.meter;
        let backends = |b: BackendId| [KeyValue::new("backend", b.as_str())];
        let mut keep: Vec<Box<dyn std::any::Any + Send + Sync>> = Vec::new();

        // A per-backend mirror counter, read from MirrorCounters.
        let mirror_counter =
            |name: &'static str,
             description: &'static str,
             field: fn(&MirrorCounters) -> &AtomicU64| {
                let s = shared.clone();
                m.u64_observable_counter(name)
                    .with_description(description)
                    .with_unit("{statement}")
                    .with_callback(move |o| {
                        let Some(s) = s.upgrade() else { return };
                        for b in BackendId::ALL {
                            let c = s.mirroring.counters(*b);
                            o.observe(field(c).load(Relaxed), &backends(*b));
                        }
                    })
                    .build()
            };
        keep.push(Box::new(mirror_counter(
            "pgshift.mirror.dropped",
            "Statements the mirror never ran: queue overflow, backend unreachable, COPY too large",
            |c| &c.dropped,
        )));
        keep.push(Box::new(mirror_counter(
            "pgshift.mirror.errors",
            "Statements that failed on the mirror but not on the primary",
            |c| &c.errors,
        )));
        let s = shared.clone();
        keep.push(Box::new(
            m.u64_observable_counter("pgshift.compare")
                .with_description("Mirrored batches whose results were compared (match, mismatch) or that a compare route did not compare (skipped)")
                .with_unit("{batch}")
                .with_callback(move |o| {
                    let Some(s) = s.upgrade() else { return };
                    let (mut compared, mut mismatched, mut skipped) = (0, 0, 0);
                    for b in BackendId::ALL {
                        let c = s.mirroring.counters(*b);
                        compared += c.compared.load(Relaxed);
                        mismatched += c.mismatched.load(Relaxed);
                        skipped += c.compare_skipped.load(Relaxed);
                    }
                    let matched = compared.saturating_sub(mismatched);
                    o.observe(matched, &[KeyValue::new("result", "match")]);
                    o.observe(mismatched, &[KeyValue::new("result", "mismatch")]);
                    o.observe(skipped, &[KeyValue::new("result", "skipped")]);
                })
                .build(),
        ));
        let s = shared.clone();
        keep.push(Box::new(
            m.u64_observable_counter("pgshift.config.reloads")
                .with_description("Configuration reloads, by outcome")
                .with_unit("{reload}")
                .with_callback(move |o| {
                    let Some(s) = s.upgrade() else { return };
                    let log = s.reload_log();
                    o.observe(log.ok, &[KeyValue::new("result", "ok")]);
                    o.observe(log.failed, &[KeyValue::new("result", "error")]);
                })
                .build(),
        ));
        let s = shared.clone();
        keep.push(Box::new(
            m.i64_observable_gauge("pgshift.sessions")
                .with_description("Client connections open now, startup included")
                .with_unit("{session}")
                .with_callback(move |o| {
                    let Some(s) = s.upgrade() else { return };
                    o.observe(s.telemetry.sessions(), &[]);
                })
                .build(),
        ));
        let s = shared;
        keep.push(Box::new(
            m.i64_observable_gauge("pgshift.backend.up")
                .with_description("1 when the latest connection to the backend (a session's, a mirror's or a probe's) logged in, 0 when it failed; absent until one was tried")
                .with_callback(move |o| {
                    let Some(s) = s.upgrade() else { return };
                    for b in BackendId::ALL {
                        if let Some(up) = s.telemetry.health.up(*b) {
                            o.observe(i64::from(up), &backends(*b));
                        }
                    }
                })
                .build(),
        ));
        self.observers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(keep);
    }

    /// The Prometheus text exposition of every metric.
    pub fn prometheus_text(&self) -> Result<String, prometheus::Error> {
        use prometheus::Encoder as _;
        let mut out = Vec::with_capacity(8 * 1024);
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Pushes what is left to the collector. Blocks (the OTLP reader runs
    /// on its own thread), so async callers go through `spawn_blocking`.
    pub fn shutdown(&self) {
        if self.otlp_endpoint.is_some() {
            if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
                tracing::warn!(error = %e, "flushing metrics to the OTLP collector failed");
            }
        }
    }
}

fn resource() -> Resource {
    Resource::builder()
        .with_service_name("pgshift")
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}
