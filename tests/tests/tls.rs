//! TLS toward clients (termination) and toward backends (disable, prefer,
//! require), checked with psql and with the backends' own pg_stat_ssl.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use pgshift_tests::{fresh_db, old_and_new, proxy_with, proxy_with_yaml, APP_PASSWORD, SCRAM_AUTH};

fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// pgshift terminating client TLS with a certificate made in `dir`
/// (returned, for clients that verify it).
async fn tls_proxy(db: &str, dir: &Path) -> (pgshift_tests::TestProxy, std::path::PathBuf) {
    let (cert, key) = self_signed(dir);
    let proxy = proxy_with(
        db,
        &format!(
            "tls: {{ cert: \"{}\", key: \"{}\" }}\n",
            cert.display(),
            key.display()
        ),
    )
    .await;
    (proxy, cert)
}

async fn psql(args: Vec<String>) -> std::process::Output {
    let psql = old_and_new().old.bin_dir().join("psql");
    tokio::task::spawn_blocking(move || {
        Command::new(psql)
            .env("PGPASSWORD", APP_PASSWORD)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn clients_get_tls_when_configured() {
    let db = fresh_db("client_tls");
    let dir = tempfile::tempdir().unwrap();
    let (proxy, cert) = tls_proxy(&db, dir.path()).await;
    let port = proxy.addr.port();
    for mode in [
        "sslmode=require".to_owned(),
        format!(
            "sslmode=verify-full sslrootcert={} host=localhost hostaddr=127.0.0.1",
            cert.display()
        ),
    ] {
        let conn = format!("host=127.0.0.1 port={port} user=app dbname={db} {mode}");
        let out = psql(vec![
            "-X".into(),
            "-A".into(),
            "-t".into(),
            "-c".into(),
            "\\conninfo".into(),
            "-c".into(),
            "SELECT 'ok'".into(),
            conn,
        ])
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("SSL connection"), "{mode}: {stdout}");
        assert!(stdout.contains("ok"), "{stdout}");
    }
    // Plain connections are still served when the client does not ask.
    let conn = format!("host=127.0.0.1 port={port} user=app dbname={db} sslmode=disable");
    let out = psql(vec![
        "-X".into(),
        "-A".into(),
        "-t".into(),
        "-c".into(),
        "SELECT 'plain'".into(),
        conn,
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn clients_asking_for_tls_without_config_are_refused_or_downgraded() {
    let db = fresh_db("no_client_tls");
    let proxy = proxy_with(&db, "").await;
    let conn = format!(
        "host=127.0.0.1 port={} user=app dbname={db} sslmode=require",
        proxy.addr.port()
    );
    let out = psql(vec!["-X".into(), "-c".into(), "SELECT 1".into(), conn]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server does not support SSL"));
}

/// Turns on SSL on the OLD cluster of this test binary (NEW stays plain).
fn enable_ssl_on_old() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let old = &old_and_new().old;
        let data = old.data_dir();
        let meta = std::fs::metadata(&data).unwrap();
        let (cert, key) = self_signed(&data);
        for f in [&cert, &key] {
            std::os::unix::fs::chown(f, Some(meta.uid()), Some(meta.gid())).unwrap();
        }
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        old.psql(
            "postgres",
            "ALTER SYSTEM SET ssl = on; SELECT pg_reload_conf();",
        )
        .unwrap();
        // The reload is asynchronous; wait until new sessions see it.
        for _ in 0..50 {
            if old.psql("postgres", "SHOW ssl").unwrap().trim() == "on" {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("ssl did not turn on");
    });
}

fn yaml(db: &str, old_tls: &str, new_tls: &str, primary: &str) -> String {
    let pair = old_and_new();
    format!(
        "listen: 127.0.0.1:0
backends:
  old: {{ url: \"{}\", tls: {old_tls} }}
  new: {{ url: \"{}\", tls: {new_tls} }}
{SCRAM_AUTH}defaults: {{ primary: {primary} }}
",
        pair.old.app_url(db),
        pair.new.app_url(db)
    )
}

async fn backend_ssl(url: &str) -> Result<bool, tokio_postgres::Error> {
    let c = pgshift_tests::try_connect(url).await?;
    Ok(c.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .await?
    .get(0))
}

#[tokio::test]
async fn backend_tls_modes() {
    enable_ssl_on_old();
    let db = fresh_db("backend_tls");
    for (mode, expect) in [("require", true), ("prefer", true), ("disable", false)] {
        let proxy = proxy_with_yaml(&db, &yaml(&db, mode, "disable", "old")).await;
        assert_eq!(
            backend_ssl(&proxy.url()).await.unwrap(),
            expect,
            "old with tls: {mode}"
        );
    }
    // NEW has no SSL: prefer falls back to plain, require refuses.
    let proxy = proxy_with_yaml(&db, &yaml(&db, "disable", "prefer", "new")).await;
    assert!(!backend_ssl(&proxy.url()).await.unwrap());
    let proxy = proxy_with_yaml(&db, &yaml(&db, "disable", "require", "new")).await;
    let err = backend_ssl(&proxy.url())
        .await
        .expect_err("require against a plain server fails");
    let msg = err
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_else(|| err.to_string());
    assert!(msg.contains("refused TLS"), "{msg}");
}

#[tokio::test]
async fn cancel_reaches_a_tls_backend() {
    enable_ssl_on_old();
    let db = fresh_db("tls_cancel");
    let proxy = proxy_with_yaml(&db, &yaml(&db, "require", "disable", "old")).await;
    let c = proxy.client().await;
    let token = c.cancel_token();
    let sleeper =
        tokio::spawn(async move { c.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = tokio::time::timeout(std::time::Duration::from_secs(10), sleeper)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
    );
}

/// A TLS client killed in the middle of a COPY FROM STDIN closes its socket
/// without a close_notify: its session ends as soon as the backend, told
/// the same way, rolls the COPY back (not after a drain period), and
/// nothing of the COPY stays.
#[tokio::test]
async fn tls_client_killed_mid_copy_ends_its_session() {
    use tokio::io::AsyncWriteExt;
    let db = fresh_db("tls_killed");
    let dir = tempfile::tempdir().unwrap();
    let (proxy, _) = tls_proxy(&db, dir.path()).await;
    let c = proxy.client().await;
    c.batch_execute("CREATE TABLE k (n int)").await.unwrap();
    let sessions = || proxy.inner().shared().telemetry.sessions();
    let before = sessions();

    let conn = format!(
        "host=127.0.0.1 port={} user=app dbname={db} sslmode=require",
        proxy.addr.port()
    );
    let mut psql = tokio::process::Command::new(old_and_new().old.bin_dir().join("psql"))
        .env("PGPASSWORD", APP_PASSWORD)
        .args(["-X", "-q", "-d", &conn, "-c", "COPY k FROM STDIN"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = psql.stdin.take().unwrap();
    stdin.write_all(b"1\n2\n").await.unwrap();
    stdin.flush().await.unwrap();
    // Logged in, and the COPY under way, once the backend has it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let copying: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'COPY k FROM STDIN'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if copying == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the COPY never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    psql.kill().await.unwrap();

    let killed = std::time::Instant::now();
    while sessions() > before {
        assert!(
            killed.elapsed() < std::time::Duration::from_secs(3),
            "the killed client's session is still open"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let n: i64 = c
        .query_one("SELECT count(*) FROM k", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}
