//! Mirroring and comparison against real OLD and NEW (SPEC guarantees 6, 7, 9).

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{pin_mut, SinkExt};
use pgshift_rules::config::BackendId;
use pgshift_tests::{
    fresh_db, old_and_new, pgbench, proxy_with, psql_both, url_new, url_old, TestProxy, APP_USER,
};

const DUAL_WRITES: &str = "defaults: { primary: old, mirror: new }\n";

/// Every insert into `table` on NEW takes `seconds` longer: a mirror that
/// lags behind the primary, for sure.
fn slow_inserts_on_new(db: &str, table: &str, seconds: f64) {
    old_and_new()
        .new
        .psql(
            db,
            &format!(
                "CREATE FUNCTION slow_{table}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep({seconds}); RETURN NEW; END $$;
                 CREATE TRIGGER slow BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION slow_{table}();"
            ),
        )
        .unwrap();
}

async fn one(url: &str, sql: &str) -> String {
    let c = pgshift_tests::connect(url).await;
    let rows = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some(r.get(0).unwrap_or("NULL").to_owned())
            }
            _ => None,
        })
        .unwrap_or_default()
}

/// `sql`'s first value on OLD and on NEW.
async fn on_both(db: &str, sql: &str) -> [String; 2] {
    [one(&url_old(db), sql).await, one(&url_new(db), sql).await]
}

async fn same_on_both(db: &str, sql: &str) {
    let [o, n] = on_both(db, sql).await;
    assert_eq!(o, n, "{sql} differs: old {o} new {n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_writes_reach_new_exactly() {
    let db = fresh_db("mirror_pgbench");
    pgbench::init_both(&db);
    let proxy = proxy_with(&db, DUAL_WRITES).await;
    let conn = proxy.conninfo();
    let report = pgbench::run(
        conn.clone(),
        vec!["-n", "-c", "4", "-j", "2", "-t", "100", "-M", "extended"],
    )
    .await;
    assert_eq!(report.failed(), 0, "{}", report.text);
    let report = pgbench::run(
        conn,
        vec!["-n", "-c", "4", "-j", "2", "-t", "100", "-M", "prepared"],
    )
    .await;
    assert_eq!(report.failed(), 0, "{}", report.text);
    proxy.mirrors_drained().await;
    for t in ["pgbench_accounts", "pgbench_branches", "pgbench_tellers"] {
        same_on_both(
            &db,
            &format!("SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {t} t"),
        )
        .await;
    }
    same_on_both(&db, "SELECT md5(string_agg(tid||':'||bid||':'||aid||':'||delta, ',' ORDER BY tid, bid, aid, delta)) FROM pgbench_history").await;
    assert_eq!(
        one(&url_new(&db), "SELECT count(*) FROM pgbench_history").await,
        "800"
    );
    let counters = proxy.mirror_counters(BackendId::New);
    assert_eq!((counters.dropped, counters.errors), (0, 0), "{counters:?}");
}

#[tokio::test]
async fn a_rolled_back_transaction_leaves_no_trace_on_the_mirror() {
    let db = fresh_db("mirror_rollback");
    psql_both(
        &db,
        "CREATE TABLE t (id int primary key); GRANT ALL ON t TO PUBLIC;",
    );
    let proxy = proxy_with(&db, DUAL_WRITES).await;
    let c = proxy.client().await;
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    c.batch_execute("ROLLBACK").await.unwrap();
    // A transaction that fails on the primary: its COMMIT reports ROLLBACK.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    assert!(c.batch_execute("SELECT 1/0").await.is_err());
    c.batch_execute("COMMIT").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (3)").await.unwrap();
    proxy.mirrors_drained().await;
    assert_eq!(
        one(&url_new(&db), "SELECT string_agg(id::text, ',') FROM t").await,
        "3"
    );
    assert_eq!(
        one(&url_old(&db), "SELECT string_agg(id::text, ',') FROM t").await,
        "3"
    );
}

/// A write outside a transaction that fails on the primary only (a
/// constraint OLD has and NEW lacks, a cancel) is rolled back on the
/// mirror: the mirror runs it inside a transaction of its own and commits
/// only what the primary committed. Simple and extended protocol, a
/// multi-statement text, a cancelled UPDATE.
#[tokio::test]
async fn an_autocommit_write_the_primary_failed_leaves_no_trace_on_the_mirror() {
    let db = fresh_db("mirror_autocommit");
    psql_both(
        &db,
        "CREATE TABLE t (id int primary key, v int); GRANT ALL ON t TO PUBLIC;
         INSERT INTO t VALUES (0, 0);",
    );
    old_and_new()
        .old
        .psql(&db, "ALTER TABLE t ADD CHECK (v < 100)")
        .unwrap();
    let proxy = proxy_with(&db, DUAL_WRITES).await;
    let c = proxy.client().await;
    let err = c.batch_execute("INSERT INTO t VALUES (1, 500)").await;
    assert!(err.is_err(), "OLD refuses it");
    let err = c
        .execute("UPDATE t SET v = $1 WHERE id = 0", &[&600i32])
        .await;
    assert!(err.is_err(), "OLD refuses it");
    // One implicit transaction: the first INSERT goes with the second.
    let err = c
        .batch_execute("INSERT INTO t VALUES (2, 2); INSERT INTO t VALUES (3, 700)")
        .await;
    assert!(err.is_err(), "OLD refuses it");
    c.execute("INSERT INTO t VALUES ($1, $2)", &[&4i32, &4i32])
        .await
        .unwrap();

    // Pipelined: the INSERTs are planned before BEGIN's answer is back,
    // while the session still looks idle. The transaction fails on OLD, so
    // none of it may reach NEW.
    let (a, b, d, e) = tokio::join!(
        c.simple_query("BEGIN"),
        c.simple_query("INSERT INTO t VALUES (5, 5)"),
        c.simple_query("INSERT INTO t VALUES (6, 800)"),
        c.simple_query("COMMIT"),
    );
    assert!(a.is_ok() && b.is_ok() && d.is_err() && e.is_ok());

    // A cancelled UPDATE: the mirror runs the same sleep, and must not
    // keep what the primary gave up.
    let c = cancelled(
        c,
        "UPDATE t SET v = v + 1 WHERE pg_sleep(1) IS NOT NULL",
        false,
    )
    .await;
    c.batch_execute("UPDATE t SET v = v + 10 WHERE id = 4")
        .await
        .unwrap();
    // Also waits for the mirror's copy of the cancelled UPDATE: cancelled
    // there too, or rolled back if it finished first.
    proxy.mirrors_drained().await;

    let rows = "SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM t";
    assert_eq!(on_both(&db, rows).await, ["0:0,4:14", "0:0,4:14"]);
    let counters = proxy.mirror_counters(BackendId::New);
    assert_eq!(
        (counters.errors, counters.dropped),
        (0, 0),
        "rolling back what the primary did not do is no failure: {counters:?}"
    );
}

#[tokio::test]
async fn copy_from_stdin_is_mirrored() {
    let db = fresh_db("mirror_copy");
    psql_both(
        &db,
        "CREATE TABLE c (id int, v text); GRANT ALL ON c TO PUBLIC;",
    );
    let proxy = proxy_with(&db, DUAL_WRITES).await;
    let c = proxy.client().await;
    let sink = c.copy_in("COPY c FROM STDIN").await.unwrap();
    pin_mut!(sink);
    let data: String = (0..5000).map(|i| format!("{i}\trow {i}\n")).collect();
    sink.send(Bytes::from(data)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 5000);
    proxy.mirrors_drained().await;
    same_on_both(&db, "SELECT count(*) || ':' || sum(id) FROM c").await;
    assert_eq!(one(&url_new(&db), "SELECT count(*) FROM c").await, "5000");
}

/// A mirrored COPY is held for the mirror up to 64 MiB; past that the
/// mirror's copy is dropped and counted, inside a transaction with the rest
/// of the transaction, and the session goes on.
#[tokio::test]
async fn a_copy_too_large_to_mirror_is_dropped_with_its_transaction() {
    let db = fresh_db("mirror_big_copy");
    psql_both(
        &db,
        "CREATE TABLE big (v text); GRANT ALL ON big TO PUBLIC;",
    );
    let proxy = proxy_with(&db, DUAL_WRITES).await;
    let c = proxy.client().await;
    let line = format!("{}\n", "x".repeat(1023));
    let mib = Bytes::from(line.repeat(1024));
    let copy_70_mib = || async {
        let sink = c.copy_in("COPY big FROM STDIN").await.unwrap();
        pin_mut!(sink);
        for _ in 0..70 {
            sink.send(mib.clone()).await.unwrap();
        }
        assert_eq!(sink.finish().await.unwrap(), 70 * 1024);
    };
    copy_70_mib().await;
    c.batch_execute("INSERT INTO big VALUES ('after')")
        .await
        .unwrap();
    proxy.mirrors_drained().await;
    let count = "SELECT count(*) FROM big";
    assert_eq!(on_both(&db, count).await, ["71681", "1"]);
    let counters = proxy.mirror_counters(BackendId::New);
    assert_eq!(counters.dropped, 1, "{counters:?}");
    let diverged = proxy.inner().shared().mirroring.diverged();
    assert!(
        diverged[0].reason.contains("too large"),
        "{}",
        diverged[0].reason
    );

    // In a transaction: the statements before and after it are dropped as
    // well, and the mirror's transaction is rolled back.
    c.batch_execute("BEGIN; INSERT INTO big VALUES ('before')")
        .await
        .unwrap();
    copy_70_mib().await;
    c.batch_execute("INSERT INTO big VALUES ('later'); COMMIT")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO big VALUES ('next')")
        .await
        .unwrap();
    proxy.mirrors_drained().await;
    assert_eq!(on_both(&db, count).await, ["143364", "2"]);
    let values = "SELECT string_agg(v, ',' ORDER BY v) FROM big WHERE length(v) < 10";
    assert_eq!(
        on_both(&db, values).await,
        ["after,before,later,next", "after,next"]
    );
    // The COPY and every batch after it in the transaction (the last
    // Query, and whatever the driver sends in between) were dropped.
    let counters = proxy.mirror_counters(BackendId::New);
    assert!(counters.dropped >= 3, "{counters:?}");
    assert_eq!(counters.errors, 0, "{counters:?}");
}

/// Runs `sql` on `c`, cancels it after half a second and expects the
/// cancel's error within two seconds.
async fn cancelled(
    c: tokio_postgres::Client,
    sql: &'static str,
    extended: bool,
) -> tokio_postgres::Client {
    let token = c.cancel_token();
    let started = Instant::now();
    let run = tokio::spawn(async move {
        let r = if extended {
            c.query(sql, &[]).await.map(|_| ())
        } else {
            c.batch_execute(sql).await
        };
        (c, r)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (c, r) = run.await.unwrap();
    let code = r.expect_err("cancelled").code().cloned();
    assert_eq!(
        code,
        Some(tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{sql}"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "{sql}");
    c
}

/// A statement cancelled on the primary is cancelled on the mirror too:
/// a cancelled 30-second report must not hold the session's mirror queue
/// for 30 seconds, and a cancelled write leaves the mirror where the
/// primary is. Simple and extended protocol, a read and a write.
#[tokio::test]
async fn a_cancelled_statement_is_cancelled_on_the_mirror_too() {
    let db = fresh_db("mirror_cancel");
    psql_both(
        &db,
        "CREATE TABLE t (id int primary key, v int); GRANT ALL ON t TO PUBLIC;
         INSERT INTO t VALUES (1, 1);",
    );
    let proxy = proxy_with(
        &db,
        "defaults: { primary: old, mirror: new, compare: true }\n",
    )
    .await;
    let c = proxy.client().await;
    let c = cancelled(c, "SELECT pg_sleep(30)", false).await;
    let c = cancelled(c, "SELECT pg_sleep(30)", true).await;
    let c = cancelled(
        c,
        "UPDATE t SET v = v + 1 WHERE pg_sleep(30) IS NOT NULL",
        false,
    )
    .await;
    // Queued behind the three: it reaches NEW in seconds, not minutes.
    c.execute("INSERT INTO t VALUES (2, 2)", &[]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while one(&url_new(&db), "SELECT count(*) FROM t").await != "2" {
        assert!(
            Instant::now() < deadline,
            "the mirror is still behind the cancelled statements"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.mirrors_drained().await;
    let rows = "SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM t";
    assert_eq!(on_both(&db, rows).await, ["1:1,2:2", "1:1,2:2"]);
    let sleeping = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' AND state = 'active' AND pid <> pg_backend_pid()";
    assert_eq!(one(&url_new(&db), sleeping).await, "0");
    let counters = proxy.mirror_counters(BackendId::New);
    assert_eq!(counters.cancelled, 3, "{counters:?}");
    assert_eq!(
        (counters.errors, counters.dropped, counters.mismatched),
        (0, 0, 0),
        "a cancel both sides saw is neither a failure nor a difference: {counters:?}"
    );
}

/// In sync mode the client's answer waits for the mirror: a cancelled
/// statement's answer must not wait for the mirror to run it out.
#[tokio::test]
async fn sync_mode_answers_a_cancelled_statement_at_once() {
    let db = fresh_db("mirror_cancel_sync");
    let proxy = proxy_with(
        &db,
        "defaults: { primary: old, mirror: new }\nmirror: { mode: sync, on_mirror_error: fail }\n",
    )
    .await;
    let started = Instant::now();
    let c = cancelled(proxy.client().await, "SELECT pg_sleep(30)", false).await;
    // The error comes before the ReadyForQuery that waits for the mirror:
    // the next statement is where a wait would show.
    assert_eq!(
        c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let counters = proxy.mirror_counters(BackendId::New);
    assert_eq!(
        (counters.cancelled, counters.errors),
        (1, 0),
        "{counters:?}"
    );
}

/// The primary's cancel comes while the mirror is still busy with an
/// earlier statement: the mirror cancels its copy when it gets to it, and
/// not the statement it is busy with.
#[tokio::test]
async fn a_lagging_mirror_cancels_the_cancelled_statement_when_it_gets_there() {
    let db = fresh_db("mirror_cancel_lag");
    psql_both(&db, "CREATE TABLE t (id int); GRANT ALL ON t TO PUBLIC;");
    slow_inserts_on_new(&db, "t", 1.5);
    let proxy = proxy_with(&db, DUAL_WRITES).await;
    let c = proxy.client().await;
    c.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    let c = cancelled(c, "SELECT pg_sleep(30)", false).await;
    let started = Instant::now();
    proxy.mirrors_drained().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the mirror ran the cancelled sleep: {:?}",
        started.elapsed()
    );
    assert_eq!(one(&url_new(&db), "SELECT count(*) FROM t").await, "1");
    let counters = proxy.mirror_counters(BackendId::New);
    assert_eq!(
        (counters.cancelled, counters.errors),
        (1, 0),
        "{counters:?}"
    );
    drop(c);
}

async fn compared_proxy(db: &str, log: &std::path::Path) -> TestProxy {
    proxy_with(
        db,
        &format!(
            "defaults: {{ primary: old, mirror: new, compare: true }}\ncompare: {{ log: \"{}\", log_values: true }}\n",
            log.display()
        ),
    )
    .await
}

fn records(log: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn a_changed_row_is_one_mismatch_and_order_only_matters_with_order_by() {
    let db = fresh_db("mirror_compare");
    psql_both(&db, "CREATE TABLE u (id int, name text); INSERT INTO u SELECT g, 'n' || g FROM generate_series(1, 50) g; GRANT ALL ON u TO PUBLIC;");
    // Same rows, different physical order on NEW.
    old_and_new().new.psql(&db, "CREATE TABLE u2 AS SELECT * FROM u ORDER BY id DESC; DROP TABLE u; ALTER TABLE u2 RENAME TO u; GRANT ALL ON u TO PUBLIC;").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mismatches.jsonl");
    let proxy = compared_proxy(&db, &log).await;
    let c = proxy.client().await;
    c.query("SELECT id, name FROM u", &[]).await.unwrap();
    c.query("SELECT id, name FROM u ORDER BY id", &[])
        .await
        .unwrap();
    proxy.mirrors_drained().await;
    assert!(
        records(&log).is_empty(),
        "unordered rows in another order match: {:?}",
        records(&log)
    );

    // A row changed behind the proxy's back.
    old_and_new()
        .new
        .psql(&db, "UPDATE u SET name = 'changed' WHERE id = 7")
        .unwrap();
    let rows = c
        .query("SELECT id, name FROM u WHERE id < 10", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 9);
    proxy.mirrors_drained().await;
    let recs = records(&log);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let text = recs[0].to_string();
    assert!(
        text.contains("changed") && text.contains("n7"),
        "the differing row is in the record: {text}"
    );
    let counters = proxy.mirror_counters(BackendId::New);
    assert_eq!(counters.mismatched, 1);
    assert!(counters.compared >= 3);
}

#[tokio::test]
async fn updates_of_different_row_counts_mismatch() {
    let db = fresh_db("mirror_update");
    psql_both(&db, "CREATE TABLE w (id int, flag bool); INSERT INTO w SELECT g, false FROM generate_series(1, 10) g; GRANT ALL ON w TO PUBLIC;");
    old_and_new()
        .new
        .psql(&db, "DELETE FROM w WHERE id > 8")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("m.jsonl");
    let proxy = compared_proxy(&db, &log).await;
    let c = proxy.client().await;
    let n = c
        .execute("UPDATE w SET flag = true WHERE id > 5", &[])
        .await
        .unwrap();
    assert_eq!(n, 5, "the client sees OLD's answer");
    proxy.mirrors_drained().await;
    let recs = records(&log);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let text = recs[0].to_string();
    assert!(
        text.contains("UPDATE 5") && text.contains("UPDATE 3"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unreachable_mirror_never_fails_the_client() {
    let db = fresh_db("mirror_down");
    psql_both(&db, "CREATE TABLE d (id int); GRANT ALL ON d TO PUBLIC;");
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        "listen: 127.0.0.1:0
backends:
  old: {{ url: \"{}\", tls: disable }}
  new: {{ url: \"postgres://app:x@127.0.0.1:{dead}/{db}\", tls: disable }}
{}{DUAL_WRITES}",
        old_and_new().old.app_url(&db),
        pgshift_tests::SCRAM_AUTH
    );
    let proxy = pgshift_tests::proxy_with_yaml(&db, &yaml).await;
    let c = proxy.client().await;
    let started = Instant::now();
    for i in 0..50 {
        c.execute("INSERT INTO d VALUES ($1)", &[&i]).await.unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    proxy.mirrors_drained().await;
    let counters = proxy.mirror_counters(BackendId::New);
    // Each execute is two batches (prepare, then bind/execute): at least
    // the 50 inserts were counted as never applied.
    assert!(counters.dropped >= 50, "{counters:?}");
    assert_eq!(proxy.inner().shared().mirroring.diverged().len(), 1);
    assert_eq!(one(&url_old(&db), "SELECT count(*) FROM d").await, "50");
}

#[tokio::test]
async fn a_full_queue_drops_whole_transactions() {
    let db = fresh_db("mirror_drop");
    psql_both(&db, "CREATE TABLE q (id int); GRANT ALL ON q TO PUBLIC;");
    // A slow mirror: every insert there takes 50 ms, none on OLD.
    slow_inserts_on_new(&db, "q", 0.05);
    let proxy = proxy_with(
        &db,
        &format!("{DUAL_WRITES}mirror: {{ queue: 2, on_overflow: drop }}\n"),
    )
    .await;
    let c = proxy.client().await;
    for t in 0..20 {
        c.batch_execute("BEGIN").await.unwrap();
        for i in 0..5 {
            c.execute("INSERT INTO q VALUES ($1)", &[&(t * 10 + i)])
                .await
                .unwrap();
        }
        c.batch_execute("COMMIT").await.unwrap();
    }
    proxy.mirrors_drained().await;
    let counters = proxy.mirror_counters(BackendId::New);
    assert!(counters.dropped > 0, "{counters:?}");
    // Whatever reached NEW came in whole transactions of 5 rows.
    let n: i64 = one(&url_new(&db), "SELECT count(*) FROM q")
        .await
        .parse()
        .unwrap();
    assert_eq!(n % 5, 0, "NEW has {n} rows: a transaction was half applied");
    let partial = one(
        &url_new(&db),
        "SELECT count(*) FROM (SELECT id / 10 FROM q GROUP BY 1 HAVING count(*) <> 5) x",
    )
    .await;
    assert_eq!(partial, "0");
    assert_eq!(one(&url_old(&db), "SELECT count(*) FROM q").await, "100");
}

#[tokio::test]
async fn reads_after_writes_see_the_writes() {
    let db = fresh_db("mirror_ryw");
    psql_both(&db, "CREATE TABLE r (id int); GRANT ALL ON r TO PUBLIC;");
    // NEW applies each write 20 ms late, so reads there must wait for them.
    slow_inserts_on_new(&db, "r", 0.02);
    let rules = "defaults: { primary: old, mirror: new }
rules:
  - name: reads-on-new
    match: { kind: [read], tables: [r] }
    primary: new
";
    let proxy = proxy_with(
        &db,
        &format!("{rules}mirror: {{ read_your_writes_wait: 2s }}\n"),
    )
    .await;
    let c = proxy.client().await;
    for i in 0..100 {
        c.execute("INSERT INTO r VALUES ($1)", &[&i]).await.unwrap();
        let max: i32 = c
            .query_one("SELECT max(id) FROM r", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(max, i, "read {i} saw the write before it");
    }
    let counters = proxy.mirror_counters(BackendId::New);
    assert!(counters.ryw_waits > 0, "{counters:?}");
}

#[tokio::test]
async fn digests_and_mismatches_are_served_over_http() {
    let db = fresh_db("mirror_http");
    psql_both(
        &db,
        "CREATE TABLE h (id int); INSERT INTO h VALUES (1), (2); GRANT ALL ON h TO PUBLIC;",
    );
    old_and_new()
        .new
        .psql(&db, "INSERT INTO h VALUES (3)")
        .unwrap();
    let proxy = proxy_with(
        &db,
        "admin: 127.0.0.1:0\ndefaults: { primary: old, mirror: new, compare: true }\n",
    )
    .await;
    let c = proxy.client().await;
    for _ in 0..3 {
        c.query("SELECT id FROM h WHERE id > $1", &[&0i32])
            .await
            .unwrap();
    }
    proxy.mirrors_drained().await;
    let admin = proxy.inner().admin_addr().expect("admin listener");
    let digests = pgshift_tests::http::get_json(admin, "/digests?limit=10").await;
    let list = digests["digests"].as_array().unwrap();
    let select = list
        .iter()
        .find(|d| d.to_string().contains("SELECT id FROM h WHERE id > $1"))
        .unwrap_or_else(|| panic!("digest listed: {digests}"));
    let text = select.to_string();
    assert!(
        text.contains("\"compared\":3") && text.contains("\"mismatched\":3"),
        "{text}"
    );
    let mism = pgshift_tests::http::get_json(admin, "/mismatches?limit=2").await;
    assert_eq!(mism["mismatches"].as_array().unwrap().len(), 2, "{mism}");
    let status = pgshift_tests::http::get_json(admin, "/status").await;
    assert_eq!(status["mirror"]["new"]["mismatched"], 3, "{status}");
}

/// NEW gets a trigger that makes every insert into `s` slow, and a
/// constraint that rejects negative ids: mirror-only delay and failure.
fn slow_and_strict_new(db: &str) {
    psql_both(db, "CREATE TABLE s (id int); GRANT ALL ON s TO PUBLIC;");
    old_and_new()
        .new
        .psql(db, "ALTER TABLE s ADD CHECK (id >= 0);")
        .unwrap();
    slow_inserts_on_new(db, "s", 0.3);
}

#[tokio::test]
async fn sync_mode_waits_for_the_mirror_and_async_does_not() {
    let db = fresh_db("mirror_sync_wait");
    slow_and_strict_new(&db);
    for (mode, slow) in [("async", false), ("sync", true)] {
        let proxy = proxy_with(&db, &format!("{DUAL_WRITES}mirror: {{ mode: {mode} }}\n")).await;
        let c = proxy.client().await;
        let started = Instant::now();
        c.simple_query("INSERT INTO s VALUES (1)").await.unwrap();
        let took = started.elapsed();
        assert_eq!(
            took >= Duration::from_millis(300),
            slow,
            "{mode}: the insert took {took:?}"
        );
        proxy.mirrors_drained().await;
    }
}

/// Sync mode waits for the mirror at most 30 s: a mirror stuck behind a
/// lock fails the client's statement (with `on_mirror_error: fail`) rather
/// than hanging it, the session goes on, and the mirror applies the write
/// once the lock is gone.
#[tokio::test]
async fn sync_mode_gives_up_on_a_stuck_mirror_after_30_seconds() {
    let db = fresh_db("mirror_sync_stuck");
    psql_both(&db, "CREATE TABLE k (id int); GRANT ALL ON k TO PUBLIC;");
    let locker = pgshift_tests::connect(&url_new(&db)).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE k IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let proxy = proxy_with(
        &db,
        &format!("{DUAL_WRITES}mirror: {{ mode: sync, on_mirror_error: fail }}\n"),
    )
    .await;
    let c = proxy.client().await;
    let started = Instant::now();
    let err = c
        .simple_query("INSERT INTO k VALUES (1)")
        .await
        .expect_err("the mirror never answered");
    let took = started.elapsed();
    assert!(
        (Duration::from_secs(29)..Duration::from_secs(45)).contains(&took),
        "{took:?}"
    );
    let db_err = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(
        db_err.code(),
        &tokio_postgres::error::SqlState::QUERY_CANCELED
    );
    assert!(
        db_err
            .message()
            .contains("timed out waiting for the mirror"),
        "{db_err:?}"
    );
    // Every later statement would wait for the mirror too (its queue is
    // ordered): release it, then the primary's work stands, the session
    // goes on and the mirror catches up.
    locker.batch_execute("ROLLBACK").await.unwrap();
    let started = Instant::now();
    assert_eq!(
        c.query_one("SELECT count(*) FROM k", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    proxy.mirrors_drained().await;
    assert_eq!(one(&url_new(&db), "SELECT count(*) FROM k").await, "1");
}

#[tokio::test]
async fn sync_mode_returns_mirror_failures_only_when_asked() {
    let db = fresh_db("mirror_sync_fail");
    slow_and_strict_new(&db);
    let ignore = proxy_with(
        &db,
        &format!("{DUAL_WRITES}mirror: {{ mode: sync, on_mirror_error: ignore }}\n"),
    )
    .await;
    let c = ignore.client().await;
    c.simple_query("INSERT INTO s VALUES (-1)")
        .await
        .expect("ignored mirror failure");
    let counters = ignore.mirror_counters(BackendId::New);
    assert_eq!(counters.errors, 1, "{counters:?}");

    let fail = proxy_with(
        &db,
        &format!("{DUAL_WRITES}mirror: {{ mode: sync, on_mirror_error: fail }}\n"),
    )
    .await;
    let c = fail.client().await;
    let err = c
        .simple_query("INSERT INTO s VALUES (-2)")
        .await
        .expect_err("mirror failure returned");
    let db_err = err.as_db_error().expect("an ErrorResponse");
    assert!(
        db_err.message().contains("mirror backend new"),
        "{}",
        db_err.message()
    );
    assert_eq!(
        db_err.code(),
        &tokio_postgres::error::SqlState::CHECK_VIOLATION
    );
    // The session goes on.
    c.simple_query("INSERT INTO s VALUES (3)").await.unwrap();
    assert_eq!(
        one(
            &url_old(&db),
            "SELECT count(*) FROM s WHERE id IN (-1, -2, 3)"
        )
        .await,
        "3"
    );
}

#[tokio::test]
async fn a_graceful_shutdown_lets_mirrors_finish_their_queues() {
    let db = fresh_db("mirror_shutdown");
    slow_and_strict_new(&db);
    let proxy = proxy_with(&db, DUAL_WRITES).await;
    let c = proxy.client().await;
    for i in 0..5 {
        c.simple_query(&format!("INSERT INTO s VALUES ({i})"))
            .await
            .unwrap();
    }
    drop(c);
    // The mirror is still replaying (0.3 s per insert on NEW).
    assert!(
        one(&url_new(&db), "SELECT count(*) FROM s")
            .await
            .parse::<i64>()
            .unwrap()
            < 5
    );
    proxy.shutdown().await;
    assert_eq!(one(&url_new(&db), "SELECT count(*) FROM s").await, "5");
}

/// When the grace period runs out first, what the mirror never ran is
/// counted as dropped: applied and dropped add up to what was queued.
#[tokio::test]
async fn a_forced_shutdown_counts_what_the_mirror_never_ran() {
    let db = fresh_db("mirror_forced");
    slow_and_strict_new(&db);
    let proxy = proxy_with(
        &db,
        &format!("{DUAL_WRITES}limits: {{ shutdown_grace: 500ms }}\n"),
    )
    .await;
    let c = proxy.client().await;
    for i in 0..10 {
        c.simple_query(&format!("INSERT INTO s VALUES ({i})"))
            .await
            .unwrap();
    }
    drop(c);
    let shared = std::sync::Arc::clone(proxy.inner().shared());
    proxy.shutdown().await;
    // The insert running when time ran out may still finish on NEW.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counters = shared.mirroring.counters(BackendId::New).snapshot();
    let on_new: u64 = one(&url_new(&db), "SELECT count(*) FROM s")
        .await
        .parse()
        .unwrap();
    assert!(on_new < 10, "the grace period cut the replay short");
    assert!(counters.dropped > 0, "{counters:?}");
    assert_eq!(counters.queued, 10, "{counters:?}");
    assert_eq!(
        counters.dropped + on_new,
        10,
        "every statement is either on NEW or counted: {counters:?}"
    );
    assert_eq!(counters.queue_depth, 0, "{counters:?}");
}

/// Sends `out` and reads up to the next ReadyForQuery, returning the tags
/// of what came before it (5 s at most).
async fn exchange(s: &mut tokio::net::TcpStream, buf: &mut bytes::BytesMut, out: &[u8]) -> String {
    use tokio::io::AsyncWriteExt;
    s.write_all(out).await.unwrap();
    let mut tags = String::new();
    loop {
        let f = pgshift_tests::raw::read_frame(s, buf).await;
        if f.tag() == b'Z' {
            return tags;
        }
        tags.push(f.tag() as char);
    }
}

/// psycopg ends every pipeline sync with Sync then Flush. Postgres answers
/// a Flush with nothing, so a Flush with nothing unsynced must not stand
/// in line for a ReadyForQuery: the answers after it would each be taken
/// for the one before, and an autocommit write's outcome would never
/// reach its mirror, which then rolled the write back.
#[tokio::test]
async fn a_lone_flush_expects_no_answer() {
    use pgshift_protocol::encode;
    let db = fresh_db("mirror_flush");
    psql_both(&db, "CREATE TABLE t (id int); GRANT ALL ON t TO PUBLIC;");
    let proxy = proxy_with(&db, DUAL_WRITES).await;
    let (mut s, _) = pgshift_tests::raw::login(proxy.addr, &db).await;
    let mut buf = bytes::BytesMut::new();

    let mut out = bytes::BytesMut::new();
    encode::sync(&mut out);
    encode::frame(&mut out, b'H', |_| {});
    assert_eq!(exchange(&mut s, &mut buf, &out).await, "");

    out.clear();
    encode::query(&mut out, "INSERT INTO t VALUES (1)");
    assert_eq!(exchange(&mut s, &mut buf, &out).await, "C");

    // Then an extended BEGIN (answered by pgshift itself once the session
    // is quiet) and a transaction: answered in turn, and applied on NEW.
    out.clear();
    encode::parse(&mut out, "", "BEGIN", &[]);
    encode::bind(&mut out, "", "", &[], &[]);
    encode::execute(&mut out, "", 0);
    encode::sync(&mut out);
    let begun = tokio::time::timeout(Duration::from_secs(5), exchange(&mut s, &mut buf, &out));
    assert_eq!(begun.await.expect("BEGIN answered"), "12C");
    out.clear();
    encode::query(&mut out, "INSERT INTO t VALUES (2); COMMIT");
    assert_eq!(exchange(&mut s, &mut buf, &out).await, "CC");
    drop(s);

    proxy.mirrors_drained().await;
    let rows = "SELECT string_agg(id::text, ',' ORDER BY id) FROM t";
    assert_eq!(on_both(&db, rows).await, ["1,2", "1,2"]);
    let counters = proxy.mirror_counters(BackendId::New);
    assert_eq!((counters.errors, counters.dropped), (0, 0), "{counters:?}");
}

/// A Close sent in a batch the mirror's full queue dropped still reaches
/// the mirror, with its next catch-up: the statement name parsed again
/// there must not find the old statement (a stale `SELECT 1` answering for
/// a new `SELECT 2`).
#[tokio::test]
async fn a_close_in_a_dropped_batch_still_reaches_the_mirror() {
    use pgshift_protocol::encode;
    let db = fresh_db("mirror_dropped_close");
    psql_both(&db, "CREATE TABLE q (id int); GRANT ALL ON q TO PUBLIC;");
    slow_inserts_on_new(&db, "q", 0.5);
    let proxy = proxy_with(
        &db,
        "defaults: { primary: old, mirror: new, compare: true }\n\
         mirror: { queue: 1, on_overflow: drop }\n",
    )
    .await;
    let (mut s, _) = pgshift_tests::raw::login(proxy.addr, &db).await;
    let mut buf = bytes::BytesMut::new();
    let mut out = bytes::BytesMut::new();
    let close = |out: &mut bytes::BytesMut, name: &str| {
        encode::frame(out, b'C', |o| {
            o.extend_from_slice(b"S");
            o.extend_from_slice(name.as_bytes());
            o.extend_from_slice(&[0]);
        })
    };
    encode::parse(&mut out, "s1", "SELECT 1", &[]);
    encode::sync(&mut out);
    assert_eq!(exchange(&mut s, &mut buf, &out).await, "1");
    proxy.mirrors_drained().await;

    // The mirror is busy with this insert for half a second, and its
    // queue of one is full: the next batch, which closes s1, is dropped.
    out.clear();
    encode::query(&mut out, "INSERT INTO q VALUES (1)");
    assert_eq!(exchange(&mut s, &mut buf, &out).await, "C");
    out.clear();
    close(&mut out, "s1");
    encode::parse(&mut out, "", "INSERT INTO q VALUES (2)", &[]);
    encode::bind(&mut out, "", "", &[], &[]);
    encode::execute(&mut out, "", 0);
    encode::sync(&mut out);
    assert_eq!(exchange(&mut s, &mut buf, &out).await, "312C");
    proxy.mirrors_drained().await;
    assert!(proxy.mirror_counters(BackendId::New).dropped >= 1);

    out.clear();
    encode::parse(&mut out, "s1", "SELECT 2", &[]);
    encode::bind(&mut out, "", "s1", &[], &[]);
    encode::execute(&mut out, "", 0);
    encode::sync(&mut out);
    assert_eq!(exchange(&mut s, &mut buf, &out).await, "12DC");
    proxy.mirrors_drained().await;
    let counters = proxy.mirror_counters(BackendId::New);
    assert_eq!(
        (counters.errors, counters.replay_errors, counters.mismatched),
        (0, 0, 0),
        "{counters:?}"
    );
    assert!(counters.compared >= 1, "{counters:?}");
}

/// A simple Query sent after extended-protocol messages but before their
/// Sync runs in their implicit transaction, or not at all when one of them
/// failed. The mirror gets the batch as the primary ran it, and when the
/// messages fail on the mirror only, its Query is skipped there too
/// without the mirror waiting for an answer that never comes.
#[tokio::test]
async fn a_query_among_unsynced_extended_messages_is_mirrored_as_run() {
    use pgshift_tests::raw::{transcript, Msg::*};
    let db = fresh_db("mirror_mixed");
    psql_both(&db, "CREATE TABLE t (id int); GRANT ALL ON t TO PUBLIC;");
    // Only NEW refuses 100: a failure on the mirror alone.
    old_and_new()
        .new
        .psql(&db, "ALTER TABLE t ADD CHECK (id < 100)")
        .unwrap();
    let proxy = proxy_with(
        &db,
        "defaults: { primary: old, mirror: new, compare: true }\n",
    )
    .await;
    let (mut s, _) = pgshift_tests::raw::login(proxy.addr, &db).await;
    let both = transcript(
        &mut s,
        &[
            Parse("INSERT INTO t VALUES (1)"),
            Bind,
            Execute,
            Query("INSERT INTO t VALUES (2)"),
            Sync,
        ],
    )
    .await;
    assert_eq!(
        both,
        [
            "1",
            "2",
            "C:INSERT 0 1",
            "C:INSERT 0 1",
            "Z:I",
            "Z:I",
            "T",
            "D:marker",
            "C:SELECT 1"
        ]
    );
    // The Query fails: the implicit transaction, insert included, is gone.
    transcript(
        &mut s,
        &[
            Parse("INSERT INTO t VALUES (3)"),
            Bind,
            Execute,
            Query("SELECT 1/0"),
            Sync,
        ],
    )
    .await;
    // The insert fails on NEW only: there the Query is skipped.
    transcript(
        &mut s,
        &[
            Parse("INSERT INTO t VALUES (100)"),
            Bind,
            Execute,
            Query("INSERT INTO t VALUES (4)"),
            Sync,
        ],
    )
    .await;
    // Fails on both: the Query runs nowhere.
    let skipped = transcript(
        &mut s,
        &[
            Parse("SELECT 1/0"),
            Bind,
            Execute,
            Query("INSERT INTO t VALUES (5)"),
            Sync,
        ],
    )
    .await;
    assert_eq!(
        skipped,
        ["1", "E:22012", "Z:I", "T", "D:marker", "C:SELECT 1"]
    );
    // A read and a Query, compared whole.
    transcript(
        &mut s,
        &[
            Parse("SELECT count(*) FROM t WHERE id < 3"),
            Bind,
            Execute,
            Query("SELECT 2"),
            Sync,
        ],
    )
    .await;
    // Inside a transaction, and after all of the above, plain statements.
    transcript(
        &mut s,
        &[
            Query("BEGIN"),
            Parse("INSERT INTO t VALUES (6)"),
            Bind,
            Execute,
            Query("INSERT INTO t VALUES (7)"),
            Sync,
            Query("COMMIT"),
            Query("INSERT INTO t VALUES (8)"),
        ],
    )
    .await;
    // NEW refuses the insert, and so skips the COMMIT after it: the
    // mirror's transaction must end all the same, for what follows.
    transcript(
        &mut s,
        &[
            Query("BEGIN"),
            Parse("INSERT INTO t VALUES (101)"),
            Bind,
            Execute,
            Query("COMMIT"),
            Sync,
            Query("INSERT INTO t VALUES (9)"),
        ],
    )
    .await;
    // A BEGIN after an insert, before the Sync, makes the insert part of
    // the transaction it opens; ROLLBACK undoes both sides.
    transcript(
        &mut s,
        &[
            Parse("INSERT INTO t VALUES (10)"),
            Bind,
            Execute,
            Query("BEGIN"),
            Sync,
            Query("ROLLBACK"),
        ],
    )
    .await;
    proxy.mirrors_drained().await;
    let rows = "SELECT string_agg(id::text, ',' ORDER BY id) FROM t";
    assert_eq!(
        on_both(&db, rows).await,
        ["1,2,4,6,7,8,9,100,101", "1,2,6,7,8,9"]
    );
    let counters = proxy.mirror_counters(BackendId::New);
    // The batches whose insert NEW refused are the differences.
    assert_eq!(counters.mismatched, 2, "{counters:?}");
    assert_eq!(counters.dropped, 0, "{counters:?}");
    assert_eq!(counters.queue_depth, 0, "{counters:?}");
    assert!(counters.compared >= 5, "{counters:?}");
}

/// A COMMIT inside a multi-statement Query commits what came before it,
/// whatever follows. The mirror runs such a batch once the primary
/// committed it; when the primary failed after its COMMIT, what it kept
/// the mirror never gets, and that is counted.
#[tokio::test]
async fn a_commit_inside_a_query_is_mirrored_by_its_outcome() {
    let db = fresh_db("mirror_inner_commit");
    psql_both(&db, "CREATE TABLE t (id int); GRANT ALL ON t TO PUBLIC;");
    let proxy = proxy_with(&db, DUAL_WRITES).await;
    let c = proxy.client().await;
    c.batch_execute("INSERT INTO t VALUES (1); COMMIT; SELECT 1")
        .await
        .unwrap();
    let err = c
        .batch_execute("INSERT INTO t VALUES (2); COMMIT; SELECT 1/0")
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO)
    );
    c.batch_execute("INSERT INTO t VALUES (3)").await.unwrap();
    proxy.mirrors_drained().await;
    let rows = "SELECT string_agg(id::text, ',' ORDER BY id) FROM t";
    assert_eq!(on_both(&db, rows).await, ["1,2,3", "1,3"]);
    let counters = proxy.mirror_counters(BackendId::New);
    assert_eq!(counters.dropped, 1, "{counters:?}");
    assert_eq!(counters.errors, 0, "{counters:?}");
    let diverged = proxy.inner().shared().mirroring.diverged();
    assert_eq!(diverged.len(), 1);
    assert!(
        diverged[0].reason.contains("committed part"),
        "{}",
        diverged[0].reason
    );
}

/// The same with plain dual writes and the COMMIT joined to unsynced
/// extended messages: the transaction still commits on NEW.
#[tokio::test]
async fn a_commit_among_unsynced_extended_messages_commits_on_the_mirror() {
    use pgshift_tests::raw::{transcript, Msg::*};
    let db = fresh_db("mirror_mixed_commit");
    psql_both(&db, "CREATE TABLE t (id int); GRANT ALL ON t TO PUBLIC;");
    let proxy = proxy_with(&db, DUAL_WRITES).await;
    let (mut s, _) = pgshift_tests::raw::login(proxy.addr, &db).await;
    transcript(
        &mut s,
        &[
            Query("BEGIN"),
            Query("INSERT INTO t VALUES (1)"),
            Parse("INSERT INTO t VALUES (2)"),
            Bind,
            Execute,
            Query("COMMIT"),
            Sync,
        ],
    )
    .await;
    proxy.mirrors_drained().await;
    let rows = "SELECT string_agg(id::text, ',' ORDER BY id) FROM t";
    assert_eq!(on_both(&db, rows).await, ["1,2", "1,2"]);
    let counters = proxy.mirror_counters(BackendId::New);
    assert_eq!((counters.dropped, counters.errors), (0, 0), "{counters:?}");
}

/// A statement that fails on both sides is no mirror failure, however it
/// was sent: the mirror checks its failure against the primary's outcome.
/// An application that tries an INSERT under a savepoint and rolls back to
/// it on a unique violation (Django's get_or_create) is the common case.
#[tokio::test]
async fn a_failure_on_both_sides_is_no_mirror_error() {
    let db = fresh_db("mirror_both_fail");
    psql_both(
        &db,
        "CREATE TABLE u (id int primary key); GRANT ALL ON u TO PUBLIC;
         INSERT INTO u VALUES (1);",
    );
    let proxy = proxy_with(&db, DUAL_WRITES).await;
    let c = proxy.client().await;
    c.batch_execute("BEGIN; SAVEPOINT s").await.unwrap();
    let err = c.batch_execute("INSERT INTO u VALUES (1)").await;
    assert!(err.is_err(), "a duplicate on both sides");
    c.batch_execute("ROLLBACK TO SAVEPOINT s").await.unwrap();
    c.execute("SAVEPOINT t", &[]).await.unwrap();
    let err = c.execute("INSERT INTO u VALUES ($1)", &[&1i32]).await;
    assert!(err.is_err(), "a duplicate on both sides");
    c.execute("ROLLBACK TO SAVEPOINT t", &[]).await.unwrap();
    c.execute("INSERT INTO u VALUES ($1)", &[&2i32])
        .await
        .unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    // Outside a transaction too, and a DDL the mirror runs unwrapped.
    assert!(c.batch_execute("INSERT INTO u VALUES (2)").await.is_err());
    assert!(c.batch_execute("CREATE TABLE u (id int)").await.is_err());
    proxy.mirrors_drained().await;
    let rows = "SELECT string_agg(id::text, ',' ORDER BY id) FROM u";
    assert_eq!(on_both(&db, rows).await, ["1,2", "1,2"]);
    let counters = proxy.mirror_counters(BackendId::New);
    assert_eq!((counters.errors, counters.dropped), (0, 0), "{counters:?}");
    assert_eq!(proxy.inner().shared().mirroring.diverged_total(), 0);
}

/// A write that fails on the mirror only leaves NEW short of OLD: counted
/// as a mirror error and the session marked diverged, inside a transaction
/// (whose rest then fails on NEW too) and out of one. A read that fails on
/// the mirror only inside a transaction that wrote loses those writes on
/// NEW at its COMMIT: diverged too. A read-only transaction loses nothing.
#[tokio::test]
async fn a_write_failing_on_the_mirror_only_marks_the_session_diverged() {
    let db = fresh_db("mirror_only_fail");
    psql_both(
        &db,
        "CREATE TABLE t (id int primary key, v int); GRANT ALL ON t TO PUBLIC;",
    );
    old_and_new()
        .new
        .psql(&db, "ALTER TABLE t ADD CHECK (v < 100)")
        .unwrap();
    old_and_new()
        .old
        .psql(
            &db,
            "CREATE FUNCTION only_old() RETURNS int LANGUAGE sql AS 'SELECT 7'",
        )
        .unwrap();
    let proxy = proxy_with(&db, DUAL_WRITES).await;
    let hub = &proxy.inner().shared().mirroring;
    // Sessions leave the list as they end: look for the reason.
    let diverged_reason = |reason: &str| {
        let list = hub.diverged();
        assert!(list.iter().any(|d| d.reason.contains(reason)), "{list:?}");
    };

    // A read-only transaction whose read fails on NEW: nothing lost.
    let c = proxy.client().await;
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("SELECT only_old()").await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    proxy.mirrors_drained().await;
    assert_eq!(hub.diverged_total(), 0);
    assert_eq!(proxy.mirror_counters(BackendId::New).errors, 1);

    // Writes, then a read that fails on NEW only: the COMMIT rolls back
    // there. The read is not mirrored as a write, so only the lost
    // COMMIT tells.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (1, 1)")
        .await
        .unwrap();
    c.batch_execute("SELECT only_old()").await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    proxy.mirrors_drained().await;
    diverged_reason("committed a transaction the mirror rolled back");
    assert_eq!(hub.diverged_total(), 1);
    drop(c);

    // A write NEW refuses, inside a transaction.
    let c = proxy.client().await;
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (2, 500)")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO t VALUES (3, 3)")
        .await
        .unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    proxy.mirrors_drained().await;
    diverged_reason("a write failed on the mirror only");
    assert_eq!(hub.diverged_total(), 2);
    drop(c);

    // And outside one (the mirror wraps it and rolls it back).
    let c = proxy.client().await;
    c.execute("INSERT INTO t VALUES ($1, $2)", &[&4i32, &600i32])
        .await
        .unwrap();
    proxy.mirrors_drained().await;
    diverged_reason("a write failed on the mirror only");

    let rows = "SELECT string_agg(id::text, ',' ORDER BY id) FROM t";
    assert_eq!(on_both(&db, rows).await, ["1,2,3,4", "NULL"]);
    assert_eq!(hub.diverged_total(), 3);
    let counters = proxy.mirror_counters(BackendId::New);
    // Both reads, the refused INSERT and the one after it (its
    // transaction had failed on NEW), the autocommit INSERT.
    assert_eq!(counters.errors, 5, "{counters:?}");
}

/// DDL, TRUNCATE, CALL and DO run on the mirror as sent, not inside a
/// transaction of its own. When the primary refused one the mirror
/// applied, NEW is ahead of OLD: counted and the session diverged.
#[tokio::test]
async fn a_statement_applied_on_the_mirror_only_marks_the_session_diverged() {
    let db = fresh_db("mirror_only_applied");
    psql_both(
        &db,
        "CREATE TABLE t (id int); GRANT ALL ON t TO PUBLIC; INSERT INTO t VALUES (1);",
    );
    old_and_new()
        .old
        .psql(&db, "CREATE TABLE only_old (id int)")
        .unwrap();
    let proxy = proxy_with(&db, DUAL_WRITES).await;
    let hub = &proxy.inner().shared().mirroring;
    let c = proxy.client().await;
    // Applied on both: nothing to report.
    c.batch_execute("CREATE TABLE both_sides (id int)")
        .await
        .unwrap();
    c.batch_execute("TRUNCATE t").await.unwrap();
    proxy.mirrors_drained().await;
    assert_eq!(hub.diverged_total(), 0);
    assert_eq!(proxy.mirror_counters(BackendId::New).errors, 0);

    let err = c
        .batch_execute("CREATE TABLE only_old (id int)")
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::DUPLICATE_TABLE)
    );
    proxy.mirrors_drained().await;
    let list = hub.diverged();
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(
        list[0]
            .reason
            .contains("applied on the mirror, failed on the primary"),
        "{}",
        list[0].reason
    );
    let counters = proxy.mirror_counters(BackendId::New);
    assert_eq!((counters.errors, counters.dropped), (1, 0), "{counters:?}");
    let exists = "SELECT count(*) FROM pg_tables WHERE tablename = 'only_old'";
    assert_eq!(on_both(&db, exists).await, ["1", "1"]);
}

/// A fresh database with a table `t (id int)` on both sides, and a proxy
/// mirroring everything to NEW.
async fn dual_writes_to_t(name: &str) -> (String, TestProxy) {
    let db = fresh_db(name);
    psql_both(&db, "CREATE TABLE t (id int); GRANT ALL ON t TO PUBLIC;");
    let proxy = proxy_with(&db, DUAL_WRITES).await;
    (db, proxy)
}

/// Once the mirrors are drained, `t` holds `ids` on both sides and the
/// mirror counted no error, drop or replay error.
async fn both_hold_cleanly(proxy: &TestProxy, db: &str, ids: &str) {
    proxy.mirrors_drained().await;
    let rows = "SELECT string_agg(id::text, ',' ORDER BY id) FROM t";
    assert_eq!(on_both(db, rows).await, [ids, ids]);
    let counters = proxy.mirror_counters(BackendId::New);
    assert_eq!(
        (counters.errors, counters.dropped, counters.replay_errors),
        (0, 0, 0),
        "{counters:?}"
    );
}

/// tokio-postgres runs BEGIN as a named statement it prepares, runs and
/// closes, all before the transaction's first routed statement: the
/// statement must reach the mirror before the held BEGIN that runs it,
/// even though it is closed by then, or the mirror runs the transaction
/// in autocommit and keeps what the primary rolls back. A SAVEPOINT
/// prepared while the BEGIN is held reaches the mirror once, with it.
#[tokio::test]
async fn a_transaction_begun_through_a_prepared_statement_is_mirrored_as_one() {
    let (db, proxy) = dual_writes_to_t("mirror_extended_begin").await;
    let c = proxy.client().await;
    c.batch_execute("SELECT 1").await.unwrap();
    for (id, end) in [(1i32, "ROLLBACK"), (2, "COMMIT")] {
        c.execute("BEGIN", &[]).await.unwrap();
        // Held with the BEGIN, and still prepared when the INSERT
        // releases what is held.
        let savepoint = c.prepare("SAVEPOINT a").await.unwrap();
        c.execute(&savepoint, &[]).await.unwrap();
        c.execute("INSERT INTO t VALUES ($1)", &[&id])
            .await
            .unwrap();
        c.execute(end, &[]).await.unwrap();
    }
    both_hold_cleanly(&proxy, &db, "2").await;
}

/// COMMIT AND CHAIN (or ROLLBACK AND CHAIN) before a transaction's first
/// routed statement starts another transaction that is still held: the
/// statement then decides it, and its mirror gets it whole, rather than
/// the chain pinning it to the session's backend unmirrored.
#[tokio::test]
async fn a_transaction_chained_before_its_first_statement_is_mirrored() {
    let (db, proxy) = dual_writes_to_t("mirror_chain").await;
    let c = proxy.client().await;
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("COMMIT AND CHAIN").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SAVEPOINT a; ROLLBACK AND CHAIN")
        .await
        .unwrap();
    c.execute("INSERT INTO t VALUES ($1)", &[&2i32])
        .await
        .unwrap();
    let isolation = c
        .query_one("SHOW transaction_isolation", &[])
        .await
        .unwrap();
    assert_eq!(isolation.get::<_, String>(0), "repeatable read");
    c.batch_execute("COMMIT").await.unwrap();
    both_hold_cleanly(&proxy, &db, "1,2").await;
}

/// A prepared transaction is prepared on the mirror too, and committed or
/// rolled back there by whichever session finishes it on the primary:
/// nothing lost, and nothing left prepared (holding its locks) on NEW.
#[tokio::test]
async fn two_phase_commit_is_mirrored() {
    let (db, proxy) = dual_writes_to_t("mirror_two_phase").await;
    let gid = |n: &str| format!("{db}_{n}");
    let c = proxy.client().await;
    c.batch_execute(&format!(
        "BEGIN; INSERT INTO t VALUES (1); PREPARE TRANSACTION '{}'",
        gid("a")
    ))
    .await
    .unwrap();
    c.batch_execute(&format!("COMMIT PREPARED '{}'", gid("a")))
        .await
        .unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    c.batch_execute(&format!("PREPARE TRANSACTION '{}'", gid("b")))
        .await
        .unwrap();
    c.batch_execute(&format!("ROLLBACK PREPARED '{}'", gid("b")))
        .await
        .unwrap();
    // Extended protocol, finished by another session.
    c.execute("BEGIN", &[]).await.unwrap();
    c.execute("INSERT INTO t VALUES ($1)", &[&3i32])
        .await
        .unwrap();
    c.execute(&format!("PREPARE TRANSACTION '{}'", gid("c")), &[])
        .await
        .unwrap();
    let other = proxy.client().await;
    other
        .execute(&format!("COMMIT PREPARED '{}'", gid("c")), &[])
        .await
        .unwrap();
    // A PREPARE of a failed transaction prepares nothing (it reports
    // ROLLBACK), on either side.
    c.batch_execute("BEGIN").await.unwrap();
    assert!(c.batch_execute("SELECT 1/0").await.is_err());
    c.batch_execute(&format!("PREPARE TRANSACTION '{}'", gid("d")))
        .await
        .unwrap();
    both_hold_cleanly(&proxy, &db, "1,3").await;
    let left = format!("SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE '{db}%'");
    assert_eq!(on_both(&db, &left).await, ["0", "0"]);
    assert_eq!(proxy.inner().shared().mirroring.diverged_total(), 0);
    assert_eq!(proxy.inner().shared().prepared.len(), 0);
}

/// A transaction the mirror fails to prepare (a deferred check only NEW
/// has) is rolled back there: counted, the session marked diverged, and
/// its COMMIT PREPARED is not sent to NEW, where there is nothing to
/// commit.
#[tokio::test]
async fn a_prepare_failing_on_the_mirror_only_marks_the_session_diverged() {
    let (db, proxy) = dual_writes_to_t("mirror_two_phase_fail").await;
    old_and_new()
        .new
        .psql(
            &db,
            "CREATE FUNCTION no_big() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN IF NEW.id > 100 THEN RAISE EXCEPTION 'too big for new'; END IF; RETURN NULL; END $$;
             CREATE CONSTRAINT TRIGGER no_big AFTER INSERT ON t DEFERRABLE INITIALLY DEFERRED
             FOR EACH ROW EXECUTE FUNCTION no_big();",
        )
        .unwrap();
    let gid = format!("{db}_big");
    let c = proxy.client().await;
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (500)").await.unwrap();
    c.batch_execute(&format!("PREPARE TRANSACTION '{gid}'"))
        .await
        .unwrap();
    c.batch_execute(&format!("COMMIT PREPARED '{gid}'"))
        .await
        .unwrap();
    proxy.mirrors_drained().await;
    let rows = "SELECT string_agg(id::text, ',' ORDER BY id) FROM t";
    assert_eq!(on_both(&db, rows).await, ["500", "NULL"]);
    let left = format!("SELECT count(*) FROM pg_prepared_xacts WHERE gid = '{gid}'");
    assert_eq!(on_both(&db, &left).await, ["0", "0"]);
    let counters = proxy.mirror_counters(BackendId::New);
    // The PREPARE failed there; its COMMIT PREPARED never went.
    assert_eq!((counters.errors, counters.dropped), (1, 1), "{counters:?}");
    let list = proxy.inner().shared().mirroring.diverged();
    assert_eq!(list.len(), 1, "{list:?}");
}

/// A pgshift that restarted, or another one in front of the same
/// databases, does not remember where a transaction was prepared: its
/// second phase is sent wherever `pg_prepared_xacts` has it, so no copy is
/// left holding its locks on either side.
#[tokio::test]
async fn a_transaction_prepared_elsewhere_is_finished_where_it_was_prepared() {
    let (db, first) = dual_writes_to_t("mirror_two_phase_elsewhere").await;
    let gid = |n: &str| format!("{db}_{n}");
    let c = first.client().await;
    for (n, id) in [("a", 1), ("b", 2)] {
        c.batch_execute(&format!(
            "BEGIN; INSERT INTO t VALUES ({id}); PREPARE TRANSACTION '{}'",
            gid(n)
        ))
        .await
        .unwrap();
    }
    first.mirrors_drained().await;
    drop(c);
    drop(first);
    // And one prepared on NEW alone, behind pgshift's back, by the user
    // pgshift logs in as (only it or a superuser may finish it).
    old_and_new()
        .new
        .psql(
            &db,
            &format!(
                "SET ROLE {APP_USER}; BEGIN; INSERT INTO t VALUES (3); PREPARE TRANSACTION '{}'",
                gid("c")
            ),
        )
        .unwrap();
    let second = proxy_with(&db, DUAL_WRITES).await;
    let c = second.client().await;
    c.batch_execute(&format!("COMMIT PREPARED '{}'", gid("a")))
        .await
        .unwrap();
    c.execute(&format!("ROLLBACK PREPARED '{}'", gid("b")), &[])
        .await
        .unwrap();
    c.batch_execute(&format!("COMMIT PREPARED '{}'", gid("c")))
        .await
        .unwrap();
    // Held nowhere: Postgres' own answer.
    let err = c
        .batch_execute(&format!("COMMIT PREPARED '{}'", gid("none")))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT),
        "{err}"
    );
    second.mirrors_drained().await;
    let rows = "SELECT string_agg(id::text, ',' ORDER BY id) FROM t";
    assert_eq!(on_both(&db, rows).await, ["1", "1,3"]);
    let left = format!("SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE '{db}%'");
    assert_eq!(on_both(&db, &left).await, ["0", "0"]);
    let counters = second.mirror_counters(BackendId::New);
    assert_eq!((counters.errors, counters.dropped), (0, 0), "{counters:?}");
    assert_eq!(second.inner().shared().mirroring.diverged_total(), 0);
}

/// In sync mode the client's ReadyForQuery waits for the mirror; a COPY
/// that fails before it begins must still be answered at once.
#[tokio::test]
async fn sync_mode_answers_a_copy_that_never_began_at_once() {
    use pgshift_tests::raw::{transcript, Msg::*};
    let db = fresh_db("mirror_sync_copy");
    let proxy = proxy_with(
        &db,
        "defaults: { primary: old, mirror: new }\nmirror: { mode: sync }\n",
    )
    .await;
    let (mut s, _) = pgshift_tests::raw::login(proxy.addr, &db).await;
    let started = Instant::now();
    let got = tokio::time::timeout(
        Duration::from_secs(10),
        transcript(&mut s, &[Query("COPY nosuch FROM STDIN"), Await(b'Z')]),
    )
    .await
    .expect("answered within 10 s");
    assert_eq!(got, ["E:42P01", "Z:I", "T", "D:marker", "C:SELECT 1"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Nor does a second COPY of the same Query that never began.
    psql_both(&db, "CREATE TABLE a (n int); GRANT ALL ON a TO PUBLIC;");
    let started = Instant::now();
    let got = tokio::time::timeout(
        Duration::from_secs(10),
        transcript(
            &mut s,
            &[
                Query("COPY a FROM STDIN; COPY nosuch FROM STDIN"),
                Await(b'G'),
                CopyData("1\n"),
                CopyDone,
                Await(b'Z'),
            ],
        ),
    )
    .await
    .expect("answered within 10 s");
    assert_eq!(
        got,
        [
            "G",
            "C:COPY 1",
            "E:42P01",
            "Z:I",
            "T",
            "D:marker",
            "C:SELECT 1"
        ]
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// One Query may start several COPYs: the mirror gets each one's data, and
/// when one fails, the Query fails there as it did on the primary.
#[tokio::test]
async fn several_copies_in_one_query_are_mirrored() {
    use pgshift_tests::raw::{transcript, Msg::*};
    let db = fresh_db("mirror_copies");
    psql_both(
        &db,
        "CREATE TABLE a (n int); CREATE TABLE b (n int); GRANT ALL ON a, b TO PUBLIC;",
    );
    let proxy = proxy_with(&db, DUAL_WRITES).await;
    let (mut s, _) = pgshift_tests::raw::login(proxy.addr, &db).await;
    let both = "COPY a FROM STDIN; COPY b FROM STDIN";
    let got = transcript(
        &mut s,
        &[
            Query(both),
            Await(b'G'),
            CopyData("1\n2\n"),
            CopyDone,
            Await(b'G'),
            CopyData("3\n"),
            CopyDone,
        ],
    )
    .await;
    assert_eq!(
        got,
        [
            "G",
            "C:COPY 2",
            "G",
            "C:COPY 1",
            "Z:I",
            "T",
            "D:marker",
            "C:SELECT 1"
        ]
    );
    // Bad data in the second: the whole Query fails, the first COPY too.
    let got = transcript(
        &mut s,
        &[
            Query(both),
            Await(b'G'),
            CopyData("4\n"),
            CopyDone,
            Await(b'G'),
            CopyData("x\n"),
            CopyDone,
        ],
    )
    .await;
    assert_eq!(
        got,
        [
            "G",
            "C:COPY 1",
            "G",
            "E:22P02",
            "Z:I",
            "T",
            "D:marker",
            "C:SELECT 1"
        ]
    );
    // A write after them reaches NEW only if the mirror is not stuck in
    // a COPY waiting for data.
    transcript(&mut s, &[Query("INSERT INTO b VALUES (5)")]).await;
    proxy.mirrors_drained().await;
    let rows = |t: &str| format!("SELECT string_agg(n::text, ',' ORDER BY n) FROM {t}");
    assert_eq!(on_both(&db, &rows("a")).await, ["1,2", "1,2"]);
    assert_eq!(on_both(&db, &rows("b")).await, ["3,5", "3,5"]);
    // A later COPY that never begins (the COMMIT keeps the first one's
    // row): the mirror gets the batch without waiting for the client's
    // next message, which does not come.
    let got = pgshift_tests::raw::transcript_unmarked(
        &mut s,
        &[
            Query("COPY a FROM STDIN; COMMIT; COPY nosuch FROM STDIN"),
            Await(b'G'),
            CopyData("9\n"),
            CopyDone,
            Await(b'Z'),
        ],
    )
    .await;
    assert_eq!(got, ["G", "C:COPY 1", "C:COMMIT", "E:42P01", "Z:I"]);
    // The primary kept the first COPY's row and then failed, so the mirror
    // rolls the batch back and counts it (see
    // `a_commit_inside_a_query_is_mirrored_by_its_outcome`).
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.mirror_counters(BackendId::New).dropped == 0 {
        assert!(
            Instant::now() < deadline,
            "the batch never reached the mirror"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(on_both(&db, &rows("a")).await, ["1,2,9", "1,2"]);
    let counters = proxy.mirror_counters(BackendId::New);
    assert_eq!(counters.dropped, 1, "{counters:?}");
    assert_eq!(counters.queue_depth, 0, "{counters:?}");
}
