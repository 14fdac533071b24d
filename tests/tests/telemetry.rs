//! Metrics (`GET /metrics`, from the OpenTelemetry meter provider) after
//! real workloads, and OTLP export to a collector stand-in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgshift_tests::{
    base_yaml, fresh_db, http, old_and_new, proxy_from_file, psql_both, SCRAM_AUTH,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `series{labels}` → value, from Prometheus text.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn metrics(admin: std::net::SocketAddr) -> (String, HashMap<String, f64>) {
    let reply = http::request(admin, "GET", "/metrics", &[], b"").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        reply.headers
    );
    let parsed = parse(&reply.body);
    (reply.body, parsed)
}

fn value(m: &HashMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or_else(|| {
        let mut known: Vec<_> = m.keys().filter(|k| k.starts_with("pgshift_")).collect();
        known.sort();
        panic!("no series {series}; have:\n{known:#?}")
    })
}

fn stmts(backend: &str, role: &str, kind: &str, rule: &str) -> String {
    format!(
        r#"pgshift_statements_total{{backend="{backend}",kind="{kind}",role="{role}",rule="{rule}"}}"#
    )
}

async fn wait_status(admin: std::net::SocketAddr, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = http::get_json(admin, "/status").await;
        if done(&status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the file watcher never reloaded: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const RULES: &str = "rules:
  - { name: reads-shadowed, match: { kind: [read], tables: [items] }, primary: old, mirror: new, compare: true }
  - { name: writes-dual, match: { kind: [write] }, primary: old, mirror: new }
";

#[tokio::test]
async fn metrics_count_statements_comparisons_reloads_and_sessions() {
    let db = fresh_db("metrics");
    psql_both(
        &db,
        "CREATE TABLE items (id int PRIMARY KEY, v text); GRANT ALL ON items TO PUBLIC;",
    );
    let head = format!("{}{SCRAM_AUTH}admin: 127.0.0.1:0\n", base_yaml(&db));
    let proxy = proxy_from_file(&db, &format!("{head}{RULES}")).await;
    let admin = proxy.admin();

    let client = proxy.client().await;
    for i in 0..5 {
        client
            .simple_query(&format!("INSERT INTO items VALUES ({i}, 'v{i}')"))
            .await
            .unwrap();
    }
    for _ in 0..10 {
        client
            .simple_query("SELECT v FROM items ORDER BY id")
            .await
            .unwrap();
    }
    for _ in 0..3 {
        client.simple_query("SELECT 1").await.unwrap();
    }
    proxy.mirrors_drained().await;

    let (text, m) = metrics(admin).await;
    for (family, kind) in [
        ("pgshift_statements_total", "counter"),
        ("pgshift_statement_duration_seconds", "histogram"),
        ("pgshift_mirror_dropped_total", "counter"),
        ("pgshift_mirror_errors_total", "counter"),
        ("pgshift_compare_total", "counter"),
        ("pgshift_config_reloads_total", "counter"),
        ("pgshift_sessions", "gauge"),
        ("pgshift_backend_up", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} {kind}\n")),
            "{family} {kind} missing:\n{text}"
        );
    }
    assert_eq!(
        value(&m, &stmts("old", "primary", "write", "writes-dual")),
        5.0
    );
    assert_eq!(
        value(&m, &stmts("new", "mirror", "write", "writes-dual")),
        5.0
    );
    assert_eq!(
        value(&m, &stmts("old", "primary", "read", "reads-shadowed")),
        10.0
    );
    assert_eq!(
        value(&m, &stmts("new", "mirror", "read", "reads-shadowed")),
        10.0
    );
    assert_eq!(value(&m, &stmts("old", "primary", "read", "default")), 3.0);
    let count = |b: &str, r: &str| {
        value(
            &m,
            &format!(r#"pgshift_statement_duration_seconds_count{{backend="{b}",role="{r}"}}"#),
        )
    };
    assert_eq!(count("old", "primary"), 18.0);
    assert_eq!(count("new", "mirror"), 15.0);
    let sum = value(
        &m,
        r#"pgshift_statement_duration_seconds_sum{backend="old",role="primary"}"#,
    );
    assert!(sum > 0.0 && sum < 18.0, "18 local statements took {sum} s");
    let inf = value(
        &m,
        r#"pgshift_statement_duration_seconds_bucket{backend="old",role="primary",le="+Inf"}"#,
    );
    assert_eq!(inf, 18.0);
    assert_eq!(value(&m, r#"pgshift_compare_total{result="match"}"#), 10.0);
    assert_eq!(
        value(&m, r#"pgshift_compare_total{result="mismatch"}"#),
        0.0
    );
    assert_eq!(value(&m, r#"pgshift_compare_total{result="skipped"}"#), 0.0);
    assert_eq!(
        value(&m, r#"pgshift_mirror_dropped_total{backend="new"}"#),
        0.0
    );
    assert_eq!(
        value(&m, r#"pgshift_mirror_errors_total{backend="new"}"#),
        0.0
    );
    assert_eq!(value(&m, "pgshift_sessions"), 1.0);
    assert_eq!(value(&m, r#"pgshift_backend_up{backend="old"}"#), 1.0);
    assert_eq!(value(&m, r#"pgshift_backend_up{backend="new"}"#), 1.0);
    assert_eq!(
        value(&m, r#"pgshift_config_reloads_total{result="ok"}"#),
        0.0
    );
    assert!(
        !text.contains("SELECT") && !text.contains("items"),
        "no SQL in labels:\n{text}"
    );
    // The sample in README.md comes from here.
    eprintln!("--- /metrics after the workload ---\n{text}");

    // A good reload (rollback on), statements under it, then a bad one.
    // Each edit is reloaded twice: by the file watcher (awaited, so the
    // counts are exact), then by POST /reload.
    proxy.rewrite_config(&format!("{head}rollback: true\n{RULES}"));
    wait_status(admin, |s| s["version"] == 2).await;
    let (code, body) = http::post(admin, "/reload", None).await;
    assert_eq!(code, 200, "{body}");
    for _ in 0..2 {
        client
            .simple_query("SELECT v FROM items ORDER BY id")
            .await
            .unwrap();
    }
    proxy.rewrite_config(&format!("{head}rollback: maybe\n"));
    wait_status(admin, |s| s["reloads"]["failed"] == 1).await;
    let (code, body) = http::post(admin, "/reload", None).await;
    assert_eq!(code, 400, "{body}");

    let (_, m) = metrics(admin).await;
    assert_eq!(
        value(&m, r#"pgshift_config_reloads_total{result="ok"}"#),
        2.0
    );
    assert_eq!(
        value(&m, r#"pgshift_config_reloads_total{result="error"}"#),
        2.0
    );
    // Under rollback nothing can route elsewhere, so statements are not
    // parsed: counted as unclassified.
    assert_eq!(
        value(&m, &stmts("old", "primary", "unclassified", "rollback")),
        2.0
    );
    // Counts under the earlier version stay (counters are cumulative).
    assert_eq!(
        value(&m, &stmts("old", "primary", "read", "reads-shadowed")),
        10.0
    );

    drop(client);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, m) = metrics(admin).await;
        if value(&m, "pgshift_sessions") == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the session gauge stayed up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_unreachable_backend_is_down_in_metrics_and_status() {
    let db = fresh_db("backend_down");
    // Free now, and nothing will listen there.
    let closed = pgshift_tests::free_port();
    let yaml = format!(
        "listen: 127.0.0.1:0
admin: 127.0.0.1:0
backends:
  old: {{ url: \"{old}\", tls: disable }}
  new: {{ url: \"postgres://app:app-secret@127.0.0.1:{closed}/{db}\", tls: disable }}
{SCRAM_AUTH}defaults: {{ primary: old, mirror: new }}
",
        old = old_and_new().old.app_url(&db),
    );
    let proxy = proxy_from_file(&db, &yaml).await;
    let admin = proxy.admin();
    let status = http::get_json(admin, "/status").await;
    assert_eq!(status["backends"]["old"]["state"], "unknown", "{status}");
    assert_eq!(
        status["backends"]["old"]["checked_at"],
        serde_json::Value::Null
    );

    let client = proxy.client().await;
    client.simple_query("SELECT 1").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = http::get_json(admin, "/status").await;
        if status["backends"]["new"]["state"] == "down" {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "new never reported down: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status["backends"]["old"]["state"], "up", "{status}");
    assert!(status["backends"]["old"]["checked_at"].is_string());
    let error = status["backends"]["new"]["last_error"].as_str().unwrap();
    assert!(error.contains(&closed.to_string()), "{error}");
    assert!(!error.contains("app-secret"), "{error}");
    assert_eq!(status["sessions"], 1);

    // The health check fails before the statement is counted as dropped:
    // a scrape in between sees the one and not yet the other.
    let m = loop {
        let (_, m) = metrics(admin).await;
        if value(&m, r#"pgshift_mirror_dropped_total{backend="new"}"#) >= 1.0 {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "the drop was never counted: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(value(&m, r#"pgshift_backend_up{backend="old"}"#), 1.0);
    assert_eq!(value(&m, r#"pgshift_backend_up{backend="new"}"#), 0.0);
}

/// One HTTP request as the collector stand-in saw it.
#[derive(Debug, Clone)]
struct Export {
    path: String,
    content_type: String,
    body: Vec<u8>,
}

/// Accepts OTLP/HTTP posts, answers 200 with an empty protobuf message.
async fn collector() -> (u16, Arc<Mutex<Vec<Export>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buf = [0u8; 8192];
                let (head_end, len) = loop {
                    let n = tcp.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    raw.extend_from_slice(&buf[..n]);
                    if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&raw[..i]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (i + 4, len);
                    }
                };
                while raw.len() < head_end + len {
                    let n = tcp.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    raw.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
                let mut lines = head.lines();
                let request_line = lines.next().unwrap_or_default().to_owned();
                let content_type = lines
                    .filter_map(|l| l.split_once(':'))
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
                    .map(|(_, v)| v.trim().to_owned())
                    .unwrap_or_default();
                let mut parts = request_line.split(' ');
                if parts.next() == Some("POST") {
                    record.lock().unwrap().push(Export {
                        path: parts.next().unwrap_or_default().to_owned(),
                        content_type,
                        body: raw[head_end..head_end + len].to_vec(),
                    });
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    (port, seen)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn otlp_exports_metrics_and_statement_spans_to_the_collector() {
    let db = fresh_db("otlp");
    let (collector_port, seen) = collector().await;
    let listen = pgshift_tests::free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgshift.yaml");
    let yaml = base_yaml(&db).replace(
        "listen: 127.0.0.1:0",
        &format!("listen: 127.0.0.1:{listen}"),
    );
    std::fs::write(
        &path,
        format!("{yaml}{SCRAM_AUTH}telemetry: {{ otlp_endpoint: \"http://127.0.0.1:{collector_port}/\" }}\nrules:\n  - {{ name: all-reads, match: {{ kind: [read] }}, primary: old }}\n"),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(pgshift_tests::pgshift_bin())
        .args(["run", "--config"])
        .arg(&path)
        .env("OTEL_METRIC_EXPORT_INTERVAL", "300")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!(
        "postgres://{}:{}@127.0.0.1:{listen}/{db}",
        pgshift_tests::APP_USER,
        pgshift_tests::APP_PASSWORD
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        match pgshift_tests::try_connect(&url).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "pgshift never came up: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    for _ in 0..3 {
        client.simple_query("SELECT 42").await.unwrap();
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    let (metrics, traces) = loop {
        let got = seen.lock().unwrap().clone();
        let metrics = got
            .iter()
            .rev()
            .find(|e| e.path == "/v1/metrics" && contains(&e.body, "all-reads"))
            .cloned();
        let traces = got
            .iter()
            .find(|e| e.path == "/v1/traces" && contains(&e.body, "all-reads"))
            .cloned();
        if let (Some(m), Some(t)) = (metrics, traces) {
            break (m, t);
        }
        assert!(
            Instant::now() < deadline,
            "no metrics and trace export with the statements; got {:?}",
            got.iter()
                .map(|e| (&e.path, e.body.len()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for export in [&metrics, &traces] {
        assert_eq!(export.content_type, "application/x-protobuf", "{export:?}");
        // Protobuf keeps strings as they are: the resource and the names
        // are readable in the request body.
        assert!(contains(&export.body, "pgshift"), "{export:?}");
    }
    for name in [
        "pgshift.statements",
        "pgshift.statement.duration",
        "pgshift.sessions",
        "pgshift.config.reloads",
    ] {
        assert!(contains(&metrics.body, name), "{name} not exported");
    }
    for field in [
        "statement",
        "pgshift.kind",
        "read",
        "pgshift.backend",
        "old",
    ] {
        assert!(contains(&traces.body, field), "{field} not in the span");
    }

    drop(client);
    let pid = child.id().unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("pgshift exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
