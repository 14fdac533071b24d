//! node-postgres, postgres.js and the PostgreSQL JDBC driver through
//! pgshift (the programs are in `tests/clients/`; `.ci/run` installs the
//! drivers: the `pg` and `postgres` npm packages under
//! `target/node_modules`, Debian's libpostgresql-jdbc-java).

use std::path::{Path, PathBuf};
use std::process::Command;

use pgshift_tests::{fresh_db, proxy_with, url_new, url_old, APP_PASSWORD, APP_USER};

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

fn node(script: &str, url: String) -> Command {
    let node_path = std::env::var("PGSHIFT_NODE_PATH").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/node_modules")
            .display()
            .to_string()
    });
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", node_path)
        .arg(clients_dir().join(script))
        .arg(url);
    cmd
}

#[tokio::test]
async fn node_postgres() {
    let db = fresh_db("node_pg");
    let proxy = proxy_with(&db, "").await;
    run(node("node_pg.js", proxy.url()), "5 passed, 0 failed").await;
}

/// postgres.js speaks the protocol with its own code: named statements
/// prepared on first use, queries pipelined on one connection, cursors
/// (Execute with a row limit), COPY streams, cancel. Here through a
/// mirrored and compared configuration: the client sees no difference,
/// NEW ends with OLD's rows, and every comparison matches but that of
/// the driver's look at `pg_type`, which lists the OIDs of the database's
/// own types: each cluster numbers those itself, so they differ as soon
/// as the two have created different objects (other tests run alongside).
#[tokio::test]
async fn postgres_js_mirrored_and_compared() {
    let db = fresh_db("postgres_js");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mismatches.jsonl");
    let proxy = proxy_with(
        &db,
        &format!(
            "defaults: {{ primary: old, mirror: new, compare: true }}\n\
             compare: {{ log: \"{}\" }}\n",
            log.display()
        ),
    )
    .await;
    run(node("postgres_js.js", proxy.url()), "9 passed, 0 failed").await;
    proxy.mirrors_drained().await;
    let rows = "SELECT string_agg(id::text, ',' ORDER BY id) FROM pjs";
    for url in [url_old(&db), url_new(&db)] {
        let c = pgshift_tests::connect(&url).await;
        let got: String = c.query_one(rows, &[]).await.unwrap().get(0);
        assert_eq!(got, "1,2", "{url}");
    }
    let m = proxy.mirror_counters(pgshift_rules::config::BackendId::New);
    assert_eq!((m.errors, m.dropped), (0, 0), "{m:?}");
    assert!(m.compared > 100, "{m:?}");
    let records = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(records.lines().count() as u64, m.mismatched, "{records}");
    for r in records.lines() {
        let r: serde_json::Value = serde_json::from_str(r).unwrap();
        let sql = r["sql"].as_str().unwrap();
        assert!(sql.contains("pg_catalog.pg_type"), "{r}");
    }
}

async fn run_jdbc(db: &str, proxy: &pgshift_tests::TestProxy) {
    let url = format!(
        "jdbc:postgresql://{}:{}/{db}",
        proxy.addr.ip(),
        proxy.addr.port()
    );
    let mut cmd = Command::new("java");
    cmd.args(["-cp", "/usr/share/java/postgresql.jar"])
        .arg(clients_dir().join("Jdbc.java"))
        .args([url.as_str(), APP_USER, APP_PASSWORD]);
    run(cmd, "6 passed, 0 failed").await;
}

#[tokio::test]
async fn jdbc() {
    let db = fresh_db("jdbc");
    let proxy = proxy_with(&db, "").await;
    run_jdbc(&db, &proxy).await;
}

/// The same program with every statement mirrored to NEW: its savepoint
/// transaction (which JDBC opens with BEGIN and SAVEPOINT in one batch)
/// reaches NEW whole, and the duplicate it rolls back is no mirror error;
/// its XA transactions are prepared, committed and rolled back on NEW too.
#[tokio::test]
async fn jdbc_with_dual_writes() {
    let db = fresh_db("jdbc_mirrored");
    let proxy = proxy_with(&db, "defaults: { primary: old, mirror: new }\n").await;
    run_jdbc(&db, &proxy).await;
    proxy.mirrors_drained().await;
    let pair = pgshift_tests::old_and_new();
    let dump = "SELECT string_agg(id::text, ',' ORDER BY id) FROM jsp";
    assert_eq!(pair.old.psql(&db, dump).unwrap().trim(), "1,2,3");
    assert_eq!(pair.new.psql(&db, dump).unwrap().trim(), "1,2,3");
    let left = "SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()";
    assert_eq!(pair.new.psql(&db, left).unwrap().trim(), "0");
    let counters = proxy.mirror_counters(pgshift_rules::config::BackendId::New);
    assert_eq!((counters.errors, counters.dropped), (0, 0), "{counters:?}");
    assert_eq!(proxy.inner().shared().mirroring.diverged_total(), 0);
}
