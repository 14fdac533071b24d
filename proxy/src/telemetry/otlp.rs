//! OTLP/HTTP (protobuf) export of metrics and statement spans to a
//! collector: `telemetry.otlp_endpoint` is the collector's OTLP/HTTP base
//! URL (`http://127.0.0.1:4318`), metrics go to `/v1/metrics` and spans to
//! `/v1/traces`.
//!
//! The SDK calls exporters from threads of its own (the periodic metric
//! reader, the batch span processor) and blocks them on the export future,
//! outside any tokio runtime. The HTTP client here is therefore plain
//! blocking IO on that thread: it needs no runtime, cannot stall the
//! proxy's worker threads, and adds no HTTP stack to the build. Plain
//! `http://` only: a collector is normally a sidecar or node agent.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::metrics::PeriodicReader;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The target of statement spans; only the OpenTelemetry layer listens to it.
pub const STATEMENT_TARGET: &str = "pgshift::statement";

/// Export requests give up after this long.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// A collector's answer is a small protobuf; anything past this is ignored.
const MAX_RESPONSE: usize = 64 * 1024;

static TRACING: AtomicBool = AtomicBool::new(false);

/// Whether statement spans are exported (so worth creating).
pub fn tracing_enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// Whether `endpoint` names port 4317, where collectors listen for
/// OTLP/gRPC: a common copy-paste that would make every export fail.
fn grpc_port(endpoint: &str) -> bool {
    let authority = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| port == "4317")
}

/// `base` + `path`, without a doubled slash.
pub fn signal_url(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

/// A reader that pushes every metric to the collector, every 60 s
/// (`OTEL_METRIC_EXPORT_INTERVAL` in milliseconds changes that) and once
/// more at shutdown.
pub fn metrics_reader(
    endpoint: &str,
) -> anyhow::Result<PeriodicReader<opentelemetry_otlp::MetricExporter>> {
    if grpc_port(endpoint) {
        tracing::warn!(
            endpoint,
            "4317 is the collector's OTLP/gRPC port; pgshift exports OTLP/HTTP (usually port 4318)"
        );
    }
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_http_client(BlockingHttp)
        .with_endpoint(signal_url(endpoint, "/v1/metrics"))
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    Ok(PeriodicReader::builder(exporter).build())
}

/// The tracer provider behind statement spans. Spans are batched and sent
/// every 5 s (`OTEL_BSP_SCHEDULE_DELAY`) and at shutdown.
pub fn tracer_provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(BlockingHttp)
        .with_endpoint(signal_url(endpoint, "/v1/traces"))
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(super::resource())
        .build())
}

/// Turns statement spans on; called once the layer that exports them is
/// installed.
pub fn enable_tracing() {
    TRACING.store(true, Ordering::Relaxed);
}

#[derive(Debug, Clone, Copy)]
struct BlockingHttp;

#[async_trait::async_trait]
impl HttpClient for BlockingHttp {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        Ok(post(&request, EXPORT_TIMEOUT)?)
    }
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message)
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
fn post(request: &Request<Bytes>, timeout: Duration) -> std::io::Result<Response<Bytes>> {
    let uri = request.uri();
    if uri.scheme_str() != Some("http") {
        return Err(invalid(format!(
            "{uri}: only http:// collector endpoints are supported"
        )));
    }
    let host = uri
        .host()
        .ok_or_else(|| invalid(format!("{uri}: no host")))?;
    let port = uri.port_u16().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut last = invalid(format!("{uri}: the host resolves to no address"));
    let mut stream = None;
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream = stream.ok_or(last)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;

    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or(host, |a| a.as_str());
    let body = request.body();
    let mut head = format!(
        "{} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        request.method(),
        body.len()
    );
    for (name, value) in request.headers() {
        if name == http::header::CONTENT_LENGTH || name == http::header::HOST {
            continue;
        }
        if let Ok(v) = value.to_str() {
            head.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;

    let mut raw = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
        if raw.len() >= MAX_RESPONSE || response_complete(&raw) {
            break;
        }
    }
    parse_response(&raw)
}

/// Headers in, and the body as long as Content-Length says (when it says).
fn response_complete(raw: &[u8]) -> bool {
    let Some(end) = header_end(raw) else {
        return false;
    };
    match content_length(&raw[..end]) {
        Some(len) => raw.len() >= end + len,
        None => false,
    }
}

fn header_end(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn content_length(head: &[u8]) -> Option<usize> {
    let head = std::str::from_utf8(head).ok()?;
    head.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response<Bytes>> {
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "malformed HTTP response from the collector",
        )
    };
    let end = header_end(raw).ok_or_else(bad)?;
    let status_line = raw[..end].split(|b| *b == b'\r').next().ok_or_else(bad)?;
    let status: u16 = std::str::from_utf8(status_line)
        .ok()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    let body = &raw[end..];
    let body = match content_length(&raw[..end]) {
        Some(len) => &body[..len.min(body.len())],
        None => body,
    };
    Response::builder()
        .status(status)
        .body(Bytes::copy_from_slice(body))
        .map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_collector_answers() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA").unwrap();
        assert_eq!((r.status().as_u16(), &r.body()[..]), (200, &b"ok"[..]));
        let r = parse_response(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").unwrap();
        assert_eq!(r.status().as_u16(), 503);
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n").is_err());
        assert!(response_complete(
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
        ));
        assert!(!response_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab"
        ));
    }

    #[test]
    fn the_grpc_port_is_recognised() {
        assert!(grpc_port("http://127.0.0.1:4317"));
        assert!(grpc_port("http://collector:4317/"));
        assert!(!grpc_port("http://collector:4318"));
        assert!(!grpc_port("http://collector:14317/v1"));
        assert!(!grpc_port("http://collector/4317"));
    }

    #[test]
    fn signal_urls() {
        assert_eq!(
            signal_url("http://127.0.0.1:4318/", "/v1/metrics"),
            "http://127.0.0.1:4318/v1/metrics"
        );
        assert_eq!(
            signal_url("http://c:4318", "/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }

    #[test]
    fn refuses_https_and_unreachable_collectors() {
        let req = |uri: &str| {
            Request::builder()
                .method("POST")
                .uri(uri)
                .body(Bytes::from_static(b"x"))
                .unwrap()
        };
        assert!(post(&req("https://127.0.0.1:1/v1/metrics"), EXPORT_TIMEOUT).is_err());
        // Port 1 on loopback: nothing listens, the connect is refused.
        assert!(post(&req("http://127.0.0.1:1/v1/metrics"), EXPORT_TIMEOUT).is_err());
    }
}
