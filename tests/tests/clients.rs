//! Real client programs through pgshift: psql and pgbench in every -M mode.

use std::process::Command;

use pgshift_tests::pgbench::{self, pg_program};
use pgshift_tests::{fresh_db, old_and_new, proxy_with, psql_both, APP_PASSWORD};

/// Runs a client program off the runtime thread: the proxy under test
/// shares the test's runtime, so a blocking wait here would starve it.
async fn run_async(mut cmd: Command) -> String {
    tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .env("PGPASSWORD", APP_PASSWORD)
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    format!("{stdout}{stderr}")
}

#[tokio::test]
async fn psql_runs_a_multi_statement_script() {
    let db = fresh_db("psql");
    let proxy = proxy_with(&db, "").await;
    let script = "CREATE TABLE items (id int PRIMARY KEY, name text);
BEGIN;
INSERT INTO items VALUES (1, 'one'), (2, 'two');
UPDATE items SET name = upper(name) WHERE id = 2;
COMMIT;
SELECT 'rows=' || count(*) FROM items; SELECT 'two=' || name FROM items WHERE id = 2;
COPY items FROM STDIN;
3\tthree
4\tfour
\\.
\\copy (SELECT id FROM items ORDER BY id) TO STDOUT
SELECT 'total=' || count(*) FROM items;
";
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), script).unwrap();
    let mut cmd = Command::new(pg_program("psql"));
    cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(file.path())
        .arg(proxy.conninfo());
    let out = run_async(cmd).await;
    assert!(out.contains("rows=2"), "{out}");
    assert!(out.contains("two=TWO"), "{out}");
    assert!(out.contains("1\n2\n3\n4\n"), "{out}");
    assert!(out.contains("total=4"), "{out}");
}

/// psql reads each COPY's data from its input in turn when one command
/// starts two; with dual writes NEW gets both.
#[tokio::test]
async fn psql_two_copies_in_one_command_are_mirrored() {
    let db = fresh_db("psql_copies");
    psql_both(
        &db,
        "CREATE TABLE a (n int); CREATE TABLE b (n int); GRANT ALL ON a, b TO PUBLIC;",
    );
    let proxy = proxy_with(&db, "defaults: { primary: old, mirror: new }\n").await;
    let mut cmd = Command::new(pg_program("psql"));
    cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg("COPY a FROM STDIN; COPY b FROM STDIN")
        .arg(proxy.conninfo())
        .stdin(input("1\n2\n\\.\n3\n\\.\n"));
    let out = run_async(cmd).await;
    assert!(out.contains("COPY 1"), "{out}");
    proxy.mirrors_drained().await;
    let sum = "SELECT (SELECT string_agg(n::text, ',' ORDER BY n) FROM a) || '/' || (SELECT string_agg(n::text, ',') FROM b)";
    for side in [&old_and_new().old, &old_and_new().new] {
        assert_eq!(side.psql(&db, sum).unwrap().trim(), "1,2/3");
    }
}

/// A file holding `text`, opened for reading as a child's standard input.
fn input(text: &str) -> std::process::Stdio {
    let mut file = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
    std::io::Seek::rewind(&mut file).unwrap();
    file.into()
}

#[tokio::test]
async fn psql_single_transaction_with_error_rolls_back() {
    let db = fresh_db("psql_err");
    let proxy = proxy_with(&db, "").await;
    let mut cmd = Command::new(pg_program("psql"));
    cmd.env("PGPASSWORD", APP_PASSWORD)
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-1",
            "-c",
            "CREATE TABLE z (i int)",
            "-c",
            "SELECT 1/0",
        ])
        .arg(proxy.conninfo());
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("division by zero"));
    let c = proxy.client().await;
    let exists: bool = c
        .query_one("SELECT to_regclass('z') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!exists, "the -1 transaction rolled back");
}

#[tokio::test]
async fn pgbench_in_every_protocol_mode() {
    let db = fresh_db("pgbench");
    let proxy = proxy_with(&db, "").await;
    let conn = proxy.conninfo();
    let init = pgbench::run(conn.clone(), vec!["-i", "-s", "1", "-q"]).await;
    assert!(init.text.contains("done"), "{}", init.text);
    for mode in ["simple", "extended", "prepared"] {
        let report = pgbench::run(
            conn.clone(),
            vec!["-n", "-M", mode, "-c", "4", "-j", "2", "-t", "150"],
        )
        .await;
        assert_eq!(
            report.processed(),
            (600, 600),
            "-M {mode}:\n{}",
            report.text
        );
        assert_eq!(report.failed(), 0, "-M {mode}:\n{}", report.text);
    }
    // TPC-B wrote through the proxy to OLD only.
    let c = proxy.client().await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM pgbench_history", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1800);
}
