//! node-postgres and the PostgreSQL JDBC driver through pgshift (the
//! programs are in `tests/clients/`; `.ci/run` installs the drivers: the
//! `pg` npm package under `target/node_modules`, Debian's
//! libpostgresql-jdbc-java).

use std::path::{Path, PathBuf};
use std::process::Command;

use pgshift_tests::{fresh_db, proxy_with, APP_PASSWORD, APP_USER};

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

async fn run(mut cmd: Command, expect: &str) {
    let shown = format!("{cmd:?}");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{shown}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{shown}\n{stdout}\n{stderr}");
    assert!(stdout.contains(expect), "{shown}\n{stdout}\n{stderr}");
}

#[tokio::test]
async fn node_postgres() {
    let db = fresh_db("node_pg");
    let proxy = proxy_with(&db, "").await;
    let node_path = std::env::var("PGSHIFT_NODE_PATH").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/node_modules")
            .display()
            .to_string()
    });
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", node_path)
        .arg(clients_dir().join("node_pg.js"))
        .arg(proxy.url());
    run(cmd, "5 passed, 0 failed").await;
}

#[tokio::test]
async fn jdbc() {
    let db = fresh_db("jdbc");
    let proxy = proxy_with(&db, "").await;
    let url = format!(
        "jdbc:postgresql://{}:{}/{db}",
        proxy.addr.ip(),
        proxy.addr.port()
    );
    let mut cmd = Command::new("java");
    cmd.args(["-cp", "/usr/share/java/postgresql.jar"])
        .arg(clients_dir().join("Jdbc.java"))
        .args([url.as_str(), APP_USER, APP_PASSWORD]);
    run(cmd, "4 passed, 0 failed").await;
}
