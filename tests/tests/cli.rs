//! The `pgshift` binary: subcommands, exit codes, signals.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgshift_tests::{base_yaml, fresh_db, pgshift_bin, SCRAM_AUTH};

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn help_on_every_subcommand() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["check", "--help"],
        &["demo", "--help"],
    ] {
        let out = Command::new(pgshift_bin()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

#[test]
fn check_prints_the_compiled_config() {
    let f = config_file(
        "backends:
  old: { url: \"postgres://app:s3cret@10.0.0.1:5432/app\" }
  new: { url: \"postgres://app@10.0.0.2/app\", tls: require }
auth: { method: scram-sha-256, users: [ { name: app, password: hunter2 } ] }
rules:
  - name: reads-to-new
    match: { kind: [read], tables: [users] }
    percent: 10
    primary: new
    mirror: old
    compare: true
",
    );
    let out = Command::new(pgshift_bin())
        .args(["check", "--config"])
        .arg(f.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("reads-to-new"), "{stdout}");
    assert!(stdout.contains("10.0.0.2"), "{stdout}");
    assert!(
        !stdout.contains("s3cret") && !stdout.contains("hunter2"),
        "secrets never printed:\n{stdout}"
    );
}

#[test]
fn check_lists_every_error_and_exits_1() {
    let f = config_file(
        "listen: nonsense
backends:
  old: { url: \"mysql://x\" }
  new: { url: \"postgres://app@h/app\" }
rules:
  - name: r
    match: { sql: \"(unclosed\" }
    percent: 150
",
    );
    let out = Command::new(pgshift_bin())
        .args(["check", "--config"])
        .arg(f.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for path in [
        "listen",
        "backends.old.url",
        "rules[0].match.sql",
        "rules[0].percent",
    ] {
        assert!(stderr.contains(path), "{path} missing in:\n{stderr}");
    }
}

#[test]
fn missing_file_is_a_runtime_error() {
    let out = Command::new(pgshift_bin())
        .args(["run", "--config", "/nonexistent/pgshift.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(pgshift_bin())
        .args(["check", "--config", "/nonexistent/pgshift.yaml"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
}

#[tokio::test]
async fn run_serves_and_exits_cleanly_on_sigterm() {
    let db = fresh_db("cli_run");
    // A fixed free port: the binary prints its address only in logs.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = base_yaml(&db).replace("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}"));
    let f = config_file(&format!(
        "{yaml}{SCRAM_AUTH}telemetry: {{ log_format: json }}\n"
    ));
    let mut child = Command::new(pgshift_bin())
        .args(["--config"])
        .arg(f.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("postgres://app:app-secret@127.0.0.1:{port}/{db}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        match pgshift_tests::try_connect(&url).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "pgshift did not come up: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut log = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
        (status, log)
    });
    let (status, log) = tokio::time::timeout(Duration::from_secs(10), status)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.lines()
            .any(|l| l.starts_with('{') && l.contains("shutdown complete")),
        "JSON logs:\n{log}"
    );
}

#[test]
fn demo_runs_unattended() {
    let started = std::time::Instant::now();
    let out = Command::new(pgshift_bin())
        .args(["demo", "--yes"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(120),
        "the tour must run in under 2 minutes: {:?}",
        started.elapsed()
    );
    assert!(
        stdout.contains("SELECT count(*) FROM users        -> 100"),
        "{stdout}"
    );
    assert!(stdout.contains("dashboard: http://127.0.0.1:"), "{stdout}");
    // Each phase: its block of output, up to the next phase.
    let phase = |n: usize| -> &str {
        let start = stdout
            .find(&format!("\n  {n}. "))
            .unwrap_or_else(|| panic!("phase {n} missing:\n{stdout}"));
        let rest = &stdout[start + 1..];
        let end = rest.find(&format!("\n  {}. ", n + 1)).unwrap_or(rest.len());
        &rest[..end]
    };
    let statements = |n: usize| -> Vec<u64> {
        let line = phase(n)
            .lines()
            .find(|l| l.contains("statements:"))
            .unwrap_or_else(|| panic!("{}", phase(n)));
        line.split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect()
    };
    let mismatches = |n: usize| -> u64 {
        let line = phase(n)
            .lines()
            .find(|l| l.contains("mismatches:"))
            .unwrap_or_else(|| panic!("{}", phase(n)));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    // [OLD primary, OLD mirrored, NEW primary, NEW mirrored]: 40 sessions.
    assert_eq!(statements(1), [40, 0, 0, 0], "{}", phase(1));
    assert_eq!(statements(2), [80, 0, 0, 40], "{}", phase(2));
    assert_eq!(statements(3), [80, 0, 0, 80], "{}", phase(3));
    assert_eq!(statements(5), [40, 40, 40, 40], "{}", phase(5));
    assert_eq!(statements(6), [0, 80, 80, 0], "{}", phase(6));
    assert_eq!(statements(7), [40, 0, 0, 0], "{}", phase(7));
    assert_eq!(statements(8), [0, 0, 80, 0], "{}", phase(8));
    let s4 = statements(4);
    assert_eq!(s4[0] + s4[2], 80, "{}", phase(4));
    assert!(s4[2] < 40, "about 10% of reads on NEW: {}", phase(4));
    assert!(
        mismatches(3) > 0,
        "the planted difference is caught: {}",
        phase(3)
    );
    assert!(phase(3).contains("caught: SELECT"), "{}", phase(3));
    for n in [1, 2, 4, 5, 6, 7, 8] {
        assert_eq!(mismatches(n), 0, "{}", phase(n));
    }
    assert!(
        phase(2).contains("orders added: OLD +40  NEW +40"),
        "{}",
        phase(2)
    );
    assert!(
        phase(6).contains("orders added: OLD +40  NEW +40"),
        "{}",
        phase(6)
    );
}

#[test]
fn shipped_example_configs_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    for file in ["examples/compose/pgshift.yaml", "examples/pgshift.yaml"] {
        let out = Command::new(pgshift_bin())
            .env("BACKEND_PASSWORD", "x")
            .env("APP_PASSWORD", "y")
            .env("OLD_PASSWORD", "z")
            .args(["check", "--config"])
            .arg(root.join(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn explain_shows_classification_rule_and_route() {
    let f = config_file(
        "backends:
  old: { url: \"postgres://app@10.0.0.1/app\" }
  new: { url: \"postgres://app@10.0.0.2/app\" }
auth: { method: trust }
rules:
  - name: users-reads
    match: { kind: [read], tables: [users] }
    percent: 50
    sticky: user
    primary: new
",
    );
    let run = |user: &str, sql: &str| {
        let out = Command::new(pgshift_bin())
            .args(["explain", "--config"])
            .arg(f.path())
            .args(["--user", user, sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = run(
        "alice",
        "SELECT u.name FROM users u JOIN orders o ON o.user_id = u.id WHERE o.total > 10",
    );
    assert!(out.contains("read"), "{out}");
    assert!(out.contains("users") && out.contains("orders"), "{out}");
    assert!(out.contains("users-reads"), "{out}");
    assert!(out.contains("bucket"), "{out}");
    let out = run("alice", "UPDATE users SET name = 'x' WHERE id = 1");
    assert!(out.contains("write"), "{out}");
    // With sticky: user, the same user always gets the same answer.
    let a = run("bob", "SELECT * FROM users");
    let b = run("bob", "SELECT * FROM users");
    assert_eq!(a, b);
}
