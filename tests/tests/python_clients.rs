//! psycopg 3 and asyncpg through pgshift (the script is
//! `tests/clients/python_clients.py`; `.ci/run` installs the two drivers).

use std::process::Command;

use pgshift_tests::{fresh_db, proxy_with};

#[tokio::test]
async fn psycopg_and_asyncpg() {
    let db = fresh_db("python_clients");
    let proxy = proxy_with(&db, "").await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python_clients.py");
    let (dsn, url) = (proxy.conninfo(), proxy.url());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(dsn)
            .arg(url)
            .output()
    })
    .await
    .unwrap()
    .expect("python3 runs (install psycopg[binary] and asyncpg: see .ci/run)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("8 passed, 0 failed"), "{stdout}\n{stderr}");
}
