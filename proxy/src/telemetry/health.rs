//! Whether each backend is up, as far as pgshift can tell.
//!
//! "Up" means the latest login pgshift attempted there (TCP, TLS if asked,
//! authentication, ReadyForQuery) succeeded. Every real connection counts:
//! a session's first or second backend, a mirror task's (re)connection.
//! A backend nobody connected to for [`PROBE_AFTER`] is probed with a
//! login of its own, when someone can see the answer (admin port or OTLP),
//! so an idle proxy does not report a stale state forever. Until the first
//! attempt the state is unknown, and `pgshift_backend_up` has no series.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgshift_rules::config::BackendId;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::backend::{self, ConnectOptions};
use crate::server::Shared;

/// A backend with no connection attempt for this long gets a probe.
pub const PROBE_AFTER: Duration = Duration::from_secs(10);
/// A probe waits at most this long, whatever `startup_timeout` says.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

#[derive(Default)]
pub struct BackendHealth {
    backends: [State; 2],
}

#[derive(Default)]
struct State {
    status: AtomicU8,
    /// Unix milliseconds of the latest attempt's end; 0 before any.
    checked_at_ms: AtomicU64,
    /// Why the latest attempt failed; cleared by a success.
    last_error: Mutex<Option<String>>,
}

/// One backend's health for `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthSnapshot {
    /// `up`, `down` or `unknown`.
    pub state: &'static str,
    pub checked_at: Option<String>,
    pub last_error: Option<String>,
}

impl BackendHealth {
    /// Records how a login to `b` ended.
    pub fn record(&self, b: BackendId, result: Result<(), String>) {
        let s = &self.backends[b.index()];
        s.checked_at_ms.store(now_ms(), Relaxed);
        // A success only takes the lock when there is an error to clear,
        // so the common case is two atomic stores.
        match result {
            Ok(()) => {
                if s.status.swap(UP, Relaxed) != UP {
                    *s.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
            }
            Err(e) => {
                *s.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                s.status.store(DOWN, Relaxed);
            }
        }
    }

    /// `None` until a login was attempted.
    pub fn up(&self, b: BackendId) -> Option<bool> {
        match self.backends[b.index()].status.load(Relaxed) {
            UP => Some(true),
            DOWN => Some(false),
            _ => None,
        }
    }

    pub fn snapshot(&self, b: BackendId) -> HealthSnapshot {
        let s = &self.backends[b.index()];
        let at = s.checked_at_ms.load(Relaxed);
        let status = s.status.load(Relaxed);
        HealthSnapshot {
            state: match status {
                UP => "up",
                DOWN => "down",
                _ => "unknown",
            },
            checked_at: (status != UNKNOWN).then(|| {
                crate::compare::record::rfc3339_utc(UNIX_EPOCH + Duration::from_millis(at))
            }),
            last_error: s
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    fn idle_for(&self, b: BackendId) -> Duration {
        let at = self.backends[b.index()].checked_at_ms.load(Relaxed);
        Duration::from_millis(now_ms().saturating_sub(at))
    }

    fn mark_attempt(&self, b: BackendId) {
        self.backends[b.index()]
            .checked_at_ms
            .store(now_ms(), Relaxed);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Probes backends nobody connected to lately, until `stop`.
pub async fn probe_idle_backends(shared: Arc<Shared>, stop: CancellationToken) {
    // The first look comes one period after start: by then sessions have
    // usually told us, and a proxy that exits at once probes nothing.
    shared.telemetry.health.mark_attempt(BackendId::Old);
    shared.telemetry.health.mark_attempt(BackendId::New);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for b in BackendId::ALL {
            if shared.telemetry.health.idle_for(*b) >= PROBE_AFTER {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = probe(&shared, *b) => {}
                }
            }
        }
    }
}

/// A login with the backend's own credentials, then Terminate. The result
/// is recorded by `backend::connect`.
async fn probe(shared: &Shared, b: BackendId) {
    let loaded = shared.current();
    let limits = &loaded.config.limits;
    // A login and goodbye: no keepalive for a connection that short.
    let opts = ConnectOptions {
        timeout: limits.startup_timeout.min(PROBE_TIMEOUT),
        keepalive: None,
        ..ConnectOptions::for_session(limits, shared)
    };
    let params = [(
        "application_name".to_owned(),
        "pgshift health probe".to_owned(),
    )];
    match backend::connect(b, loaded.config.backends.get(b), &params, &opts).await {
        Ok(mut c) => {
            let mut bye = bytes::BytesMut::new();
            pgshift_protocol::encode::terminate(&mut bye);
            let _ = c.stream.write_all(&bye).await;
            let _ = c.stream.shutdown().await;
        }
        Err(e) => tracing::debug!(backend = %b, error = %e, "backend probe failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_then_down_then_up() {
        let h = BackendHealth::default();
        assert_eq!(h.up(BackendId::Old), None);
        assert_eq!(h.snapshot(BackendId::Old).state, "unknown");
        h.record(BackendId::Old, Err("connection refused".into()));
        assert_eq!(h.up(BackendId::Old), Some(false));
        let s = h.snapshot(BackendId::Old);
        assert_eq!(
            (s.state, s.last_error.as_deref()),
            ("down", Some("connection refused"))
        );
        assert!(s.checked_at.is_some());
        h.record(BackendId::Old, Ok(()));
        let s = h.snapshot(BackendId::Old);
        assert_eq!((s.state, s.last_error), ("up", None));
        assert_eq!(h.up(BackendId::New), None);
    }
}
