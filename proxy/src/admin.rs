//! The admin HTTP server (`admin:` in the config). Handlers are thin: they
//! read `Shared` or ask the `Reloader`, and turn the answer into JSON.
//! Every reply, errors included, is a JSON object, except `/metrics`
//! (Prometheus text) and `/` (the dashboard page).
//!
//! `admin_token`, when set, guards the only endpoint that changes anything
//! (`POST /reload`). The GET endpoints stay open, as the contract says:
//! they change nothing, Prometheus and the dashboard read them without
//! credentials, and they never show a secret (SQL in them has its literals
//! redacted unless `compare.redact_literals: false`). Put the admin port on
//! loopback or a private network.

mod listener;
mod rules;

use std::sync::Arc;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pgshift_rules::config::{BackendId, ListenAddr};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::reload::{Reloader, Trigger};
use crate::server::Loaded;

/// Nothing the admin API accepts comes close; a larger body is refused
/// before it is buffered.
const MAX_BODY: usize = 64 * 1024;

pub async fn bind(addr: &ListenAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind((addr.host.as_str(), addr.port))
        .await
        .with_context(|| format!("cannot listen on {addr} (admin)"))
}

/// Serves until `draining`, then lets requests in flight finish.
pub async fn serve(listener: TcpListener, reloader: Arc<Reloader>, draining: CancellationToken) {
    let app = router(reloader);
    let result = axum::serve(listener::Bounded::new(listener), app)
        .with_graceful_shutdown(draining.cancelled_owned())
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "admin HTTP server stopped");
    }
}

fn router(reloader: Arc<Reloader>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/rules", get(rules))
        .route("/status", get(status))
        .route("/reload", post(reload))
        .route("/digests", get(digests))
        .route("/mismatches", get(mismatches))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(reloader)
}

async fn status(State(reloader): State<Arc<Reloader>>) -> Response {
    let shared = reloader.shared();
    let loaded = shared.current();
    let log = shared.reload_log();
    Json(json!({
        "version": loaded.version,
        "loaded_at": rfc3339(loaded.loaded_at),
        "config_path": shared.config_path.as_ref().map(|p| p.display().to_string()),
        "rollback": loaded.config.rollback,
        "reloads": { "ok": log.ok, "failed": log.failed },
        "last_reload_error": log.last_error,
        "sessions": shared.telemetry.sessions(),
        "backends": {
            "old": shared.telemetry.health.snapshot(BackendId::Old),
            "new": shared.telemetry.health.snapshot(BackendId::New),
        },
        "mirror": {
            "old": shared.mirroring.counters(BackendId::Old).snapshot(),
            "new": shared.mirroring.counters(BackendId::New).snapshot(),
            "diverged_sessions": shared.mirroring.diverged(),
            "diverged_sessions_total": shared.mirroring.diverged_total(),
        },
        "classifier": classifier_json(&shared.classifier),
        "rewriter": {
            "old": rewriter_json(loaded.rewriters[BackendId::Old.index()].as_deref()),
            "new": rewriter_json(loaded.rewriters[BackendId::New.index()].as_deref()),
        },
    }))
    .into_response()
}

/// How well the classification cache serves the traffic: a low hit rate
/// means statements are parsed over and over.
fn classifier_json(c: &pgshift_rules::Classifier) -> serde_json::Value {
    let s = c.stats();
    json!({
        "hits": s.hits,
        "misses": s.misses,
        "entries": s.entries,
        "bytes": s.bytes,
        "parse_failures": s.parse_failures,
        "too_deep": s.too_deep,
        "too_large": s.too_large,
    })
}

fn rewriter_json(r: Option<&pgshift_rules::Rewriter>) -> serde_json::Value {
    match r.map(pgshift_rules::Rewriter::stats) {
        Some(s) => json!({
            "hits": s.hits,
            "misses": s.misses,
            "entries": s.entries,
            "bytes": s.bytes,
        }),
        None => serde_json::Value::Null,
    }
}

/// Prometheus text exposition, from the OpenTelemetry meter provider.
async fn metrics(State(reloader): State<Arc<Reloader>>) -> Response {
    match reloader.shared().telemetry.prometheus_text() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("encoding metrics failed: {e}"),
        ),
    }
}

/// The configuration in force, as compiled.
async fn rules(State(reloader): State<Arc<Reloader>>) -> Response {
    Json(rules::rules_json(&reloader.shared().current())).into_response()
}

/// One self-contained page (no external assets) that polls the endpoints
/// above.
async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Everything the page needs is inline or from this origin.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
            ),
        ],
        DASHBOARD,
    )
        .into_response()
}

const DASHBOARD: &str = include_str!("admin/dashboard.html");

#[derive(serde::Deserialize)]
struct Limit {
    limit: Option<usize>,
}

/// Per normalised statement: calls, route, latencies, mirror and
/// comparison counts; the most called first.
async fn digests(State(reloader): State<Arc<Reloader>>, Query(q): Query<Limit>) -> Response {
    let limit = q.limit.unwrap_or(100).min(10_000);
    Json(json!({ "digests": reloader.shared().digests.snapshot(limit) })).into_response()
}

/// The newest mismatch records, newest first.
async fn mismatches(State(reloader): State<Arc<Reloader>>, Query(q): Query<Limit>) -> Response {
    let limit = q.limit.unwrap_or(50).min(1000);
    Json(json!({ "mismatches": reloader.shared().mirroring.recent_mismatches(limit) }))
        .into_response()
}

async fn reload(
    State(reloader): State<Arc<Reloader>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let shared = reloader.shared();
    if !authorized(&headers, shared.current().config.admin_token.as_deref()) {
        return unauthorized();
    }
    if let Err(rejected) = body {
        return error(rejected.status(), &rejected.body_text());
    }
    if shared.config_path.is_none() {
        let reason =
            "this proxy was started without a configuration file, so there is nothing to reload";
        return rejected_reload(reason, shared.current().version);
    }
    let reloading = Arc::clone(&reloader);
    match tokio::task::spawn_blocking(move || reloading.reload(Trigger::Http)).await {
        Ok(Ok(loaded)) => Json(loaded_json(&loaded)).into_response(),
        Ok(Err(e)) => rejected_reload(&e.0, shared.current().version),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("reload did not finish: {e}"),
        ),
    }
}

fn loaded_json(loaded: &Loaded) -> serde_json::Value {
    json!({ "version": loaded.version, "loaded_at": rfc3339(loaded.loaded_at) })
}

/// 400 with every reason. A reload error is a summary line followed by one
/// line per problem (`config_file::LoadError::Invalid`), or a single line.
fn rejected_reload(reason: &str, version: u64) -> Response {
    let mut lines = reason.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or("reload failed").to_owned();
    let mut errors: Vec<&str> = lines.collect();
    if errors.is_empty() {
        errors.push(&first);
    }
    let body = json!({ "error": first, "errors": errors, "version": version });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// With no token configured anyone who reaches the port may POST; with one,
/// `Authorization: Bearer <token>` must carry it.
fn authorized(headers: &HeaderMap, token: Option<&str>) -> bool {
    let Some(expected) = token else {
        return true;
    };
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, credentials)) = given.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && same_secret(credentials.trim().as_bytes(), expected.as_bytes())
}

/// Compares without an early exit, so the time taken says nothing about
/// how much of a guess was right. The length is not treated as secret.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    let diff = given
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| std::hint::black_box(acc | (a ^ b)));
    diff == 0
}

fn unauthorized() -> Response {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "this endpoint needs the admin token: Authorization: Bearer <admin_token>",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// `2026-11-21T09:30:00.123Z`: RFC 3339 in UTC, millisecond precision.
pub use crate::compare::record::rfc3339_utc as rfc3339;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64, millis: u64) -> String {
        rfc3339(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
    }

    #[test]
    fn formats_rfc3339_utc() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_700_000_000, 999), "2023-11-14T22:13:20.999Z");
        assert_eq!(at(4_107_542_399, 0), "2100-02-28T23:59:59.000Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
    }

    #[test]
    fn bearer_token() {
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, value.parse().unwrap());
            h
        };
        assert!(authorized(&HeaderMap::new(), None));
        assert!(!authorized(&HeaderMap::new(), Some("s3cret")));
        assert!(authorized(&with("Bearer s3cret"), Some("s3cret")));
        assert!(authorized(&with("bearer s3cret"), Some("s3cret")));
        assert!(!authorized(&with("Bearer s3cre"), Some("s3cret")));
        assert!(!authorized(&with("Bearer s3cretX"), Some("s3cret")));
        assert!(!authorized(&with("Basic s3cret"), Some("s3cret")));
        assert!(!authorized(&with("s3cret"), Some("s3cret")));
    }
}
