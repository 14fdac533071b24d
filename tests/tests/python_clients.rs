//! psycopg 3, asyncpg and pg8000 through pgshift (the script is
//! `tests/clients/python_clients.py`; `.ci/run` installs the drivers).

use std::process::Command;

use pgshift_tests::{fresh_db, proxy_with};

#[tokio::test]
async fn psycopg_asyncpg_and_pg8000() {
    let db = fresh_db("python_clients");
    let proxy = proxy_with(&db, "").await;
    let stdout = run_script("python_clients.py", vec![proxy.conninfo(), proxy.url()]).await;
    assert!(stdout.contains("10 passed, 0 failed"), "{stdout}");
}

/// Runs `tests/clients/<script>` with `args`; its stdout, once it exited
/// with success (its stderr is in the panic message otherwise).
async fn run_script(script: &'static str, args: Vec<String>) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(script);
    let out =
        tokio::task::spawn_blocking(move || Command::new("python3").arg(path).args(args).output())
            .await
            .unwrap()
            .expect("python3 runs (install psycopg[binary], asyncpg and pg8000: see .ci/run)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script}: {stdout}\n{stderr}");
    stdout
}

/// Values inlined by the client (psycopg's ClientCursor), every statement
/// mirrored to NEW and compared: each text is new, yet the statements of
/// one shape are parsed once, every comparison matches, and NEW ends with
/// OLD's data.
#[tokio::test]
async fn inlined_values_are_mirrored_compared_and_parsed_once_per_shape() {
    let db = fresh_db("inline_values");
    pgshift_tests::psql_both(
        &db,
        "CREATE TABLE inline_values (id int PRIMARY KEY, name text, amount numeric, \
         ratio float8, day date, flag boolean); GRANT ALL ON inline_values TO PUBLIC",
    );
    let proxy = proxy_with(
        &db,
        "admin: 127.0.0.1:0\n\
         defaults: { primary: old, mirror: new, compare: true }\n\
         mirror: { mode: sync }\n\
         compare: { sample: 100 }\n",
    )
    .await;
    let stdout = run_script("inline_values.py", vec![proxy.conninfo()]).await;
    assert!(stdout.contains("ok 200"), "{stdout}");

    let s = pgshift_tests::http::get_json(proxy.admin(), "/status").await;
    // 467 statements of 3 shapes (psycopg's own setup statements aside).
    let parses = s["classifier"]["misses"].as_u64().unwrap();
    assert!(parses <= 10, "{parses} parses: {s}");
    let m = &s["mirror"]["new"];
    assert_eq!(m["mismatched"], 0, "{s}");
    assert_eq!(m["dropped"], 0, "{s}");
    assert_eq!(m["errors"], 0, "{s}");
    assert!(m["compared"].as_u64().is_some_and(|n| n >= 467), "{s}");
    let dump =
        "SELECT string_agg(concat_ws('|', id, name, amount, ratio, day, flag), ',' ORDER BY id) \
                FROM inline_values";
    let pair = pgshift_tests::old_and_new();
    let old = pair.old.psql(&db, dump).unwrap();
    assert!(old.contains("o'reilly"), "{old}");
    assert_eq!(pair.new.psql(&db, dump).unwrap(), old);
}

/// psycopg's pipeline mode, dual writes, and a CHECK that only OLD has:
/// what OLD refused (an autocommit pipeline, a pipelined transaction) is
/// not on NEW either, and what it committed is on both.
#[tokio::test]
async fn psycopg_pipelines_failing_on_old_leave_new_like_old() {
    let db = fresh_db("pipeline_failures");
    pgshift_tests::psql_both(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY, v int); GRANT ALL ON t TO PUBLIC",
    );
    let pair = pgshift_tests::old_and_new();
    pair.old
        .psql(&db, "ALTER TABLE t ADD CHECK (v < 100)")
        .unwrap();
    let proxy = proxy_with(&db, "defaults: { primary: old, mirror: new }\n").await;
    let stdout = run_script("pipeline_failures.py", vec![proxy.conninfo()]).await;
    assert_eq!(
        stdout,
        "pipeline 1: CheckViolation\npipeline 2: CheckViolation\nok\n"
    );
    proxy.mirrors_drained().await;
    let dump = "SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM t";
    let old = pair.old.psql(&db, dump).unwrap();
    assert_eq!(old.trim(), "6:6,7:7,8:8");
    assert_eq!(pair.new.psql(&db, dump).unwrap(), old);
    let counters = proxy.mirror_counters(pgshift_rules::config::BackendId::New);
    assert_eq!((counters.errors, counters.dropped), (0, 0), "{counters:?}");
}

/// psycopg's two-phase commit API with dual writes: transactions prepared
/// on one connection and committed or rolled back from another (one found
/// through `tpc_recover`, which lists `pg_prepared_xacts`) reach NEW as
/// they did OLD, and nothing is left prepared on either.
#[tokio::test]
async fn two_phase_commit_of_psycopg_is_mirrored() {
    let db = fresh_db("psycopg_tpc");
    pgshift_tests::psql_both(&db, "CREATE TABLE t (id int); GRANT ALL ON t TO PUBLIC");
    let proxy = proxy_with(&db, "defaults: { primary: old, mirror: new }\n").await;
    let stdout = run_script("two_phase.py", vec![proxy.conninfo(), db.clone()]).await;
    assert_eq!(stdout, "ok\n");
    proxy.mirrors_drained().await;
    let pair = pgshift_tests::old_and_new();
    let dump = "SELECT string_agg(id::text, ',' ORDER BY id) FROM t";
    assert_eq!(pair.old.psql(&db, dump).unwrap().trim(), "1,3,4");
    assert_eq!(pair.new.psql(&db, dump).unwrap().trim(), "1,3,4");
    let left = "SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()";
    assert_eq!(pair.old.psql(&db, left).unwrap().trim(), "0");
    assert_eq!(pair.new.psql(&db, left).unwrap().trim(), "0");
    let counters = proxy.mirror_counters(pgshift_rules::config::BackendId::New);
    assert_eq!((counters.errors, counters.dropped), (0, 0), "{counters:?}");
    assert_eq!(proxy.inner().shared().mirroring.diverged_total(), 0);
}

/// Nested transactions of psycopg and asyncpg with dual writes: a
/// transaction that opens with a savepoint is mirrored whole, and INSERTs
/// that fail on both sides under a savepoint count no mirror error.
#[tokio::test]
async fn nested_transactions_are_mirrored_whole() {
    let db = fresh_db("savepoints");
    pgshift_tests::psql_both(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY); GRANT ALL ON t TO PUBLIC",
    );
    let proxy = proxy_with(&db, "defaults: { primary: old, mirror: new }\n").await;
    let stdout = run_script("savepoints.py", vec![proxy.conninfo(), proxy.url()]).await;
    assert_eq!(stdout, "ok\n");
    proxy.mirrors_drained().await;
    let dump = "SELECT string_agg(id::text, ',' ORDER BY id) FROM t";
    let pair = pgshift_tests::old_and_new();
    let old = pair.old.psql(&db, dump).unwrap();
    assert_eq!(old.trim(), "1,2,3,4,5");
    assert_eq!(pair.new.psql(&db, dump).unwrap(), old);
    let counters = proxy.mirror_counters(pgshift_rules::config::BackendId::New);
    assert_eq!((counters.errors, counters.dropped), (0, 0), "{counters:?}");
    assert_eq!(proxy.inner().shared().mirroring.diverged_total(), 0);
}
