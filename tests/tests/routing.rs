//! Routing between OLD and NEW by the rules: tables, kinds, percentages,
//! transactions pinned to one backend, session state following the session.
//! Each test's database holds different data on each side (`whereami`).

use std::time::Duration;

use pgshift_tests::{
    base_yaml, fresh_db, mark_sides, old_and_new, proxy_with, proxy_with_yaml, side, side_simple,
    url_new, url_old, TRUST_AUTH,
};

const READS_OF_WHEREAMI_TO_NEW: &str = "rules:
  - name: whereami-reads
    match: { kind: [read], tables: [whereami] }
    primary: new
";

fn config(db: &str, extra: &str) -> pgshift_rules::config::Config {
    let yaml = format!("{}{}{extra}", base_yaml(db), pgshift_tests::SCRAM_AUTH);
    pgshift_rules::config::parse_config(&yaml, &|_| None).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

async fn count(url: &str, sql: &str) -> i64 {
    pgshift_tests::connect(url)
        .await
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn reads_of_a_table_go_to_new_and_writes_stay_on_old() {
    let db = fresh_db("route_reads");
    mark_sides(&db);
    let proxy = proxy_with(&db, READS_OF_WHEREAMI_TO_NEW).await;
    let c = proxy.client().await;
    assert_eq!(side(&c).await, "new");
    assert_eq!(side_simple(&c).await, "new");
    c.execute("INSERT INTO whereami VALUES ('written')", &[])
        .await
        .unwrap();
    c.simple_query("INSERT INTO whereami VALUES ('written')")
        .await
        .unwrap();
    assert_eq!(
        count(&url_old(&db), "SELECT count(*) FROM whereami").await,
        3
    );
    assert_eq!(
        count(&url_new(&db), "SELECT count(*) FROM whereami").await,
        1
    );
    // Statements that do not touch the table stay on OLD.
    let port: String = c.query_one("SHOW port", &[]).await.unwrap().get(0);
    assert_eq!(port, old_and_new().old.port().to_string());
    // A locking read is a write.
    let row = c
        .query_one(
            "SELECT side FROM whereami ORDER BY side LIMIT 1 FOR UPDATE",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "old");
}

#[tokio::test]
async fn tables_in_joins_ctes_and_subqueries_are_matched() {
    let db = fresh_db("route_joins");
    mark_sides(&db);
    for c in [&old_and_new().old, &old_and_new().new] {
        c.psql(&db, "CREATE TABLE other (x int); INSERT INTO other VALUES (1); GRANT ALL ON other TO PUBLIC;").unwrap();
    }
    let proxy = proxy_with(&db, READS_OF_WHEREAMI_TO_NEW).await;
    let c = proxy.client().await;
    for sql in [
        "SELECT w.side FROM other o JOIN whereami w ON true",
        "WITH w AS (SELECT side FROM whereami) SELECT side FROM w, other",
        "SELECT (SELECT side FROM whereami) FROM other",
        "SELECT side FROM (SELECT * FROM public.whereami) sub",
        "SELECT side FROM \"whereami\" UNION ALL SELECT side FROM whereami LIMIT 1",
    ] {
        let got: String = c
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0);
        assert_eq!(got, "new", "{sql}");
    }
    let n: i32 = c
        .query_one("SELECT x FROM other", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn percentage_routing_is_proportional_and_sticky() {
    let db = fresh_db("route_percent");
    mark_sides(&db);
    let rules = "rules:
  - name: thirty-percent
    match: { tables: [whereami] }
    percent: 30
    sticky: application_name
    primary: new
";
    let proxy = proxy_with_yaml(&db, &format!("{}{TRUST_AUTH}{rules}", base_yaml(&db))).await;
    let base = format!("postgres://app@{}/{}", proxy.addr, db);
    let sides = |range: std::ops::Range<usize>| {
        let base = base.clone();
        async move {
            let mut out = Vec::new();
            for chunk in range.collect::<Vec<_>>().chunks(50) {
                let tasks: Vec<_> = chunk
                    .iter()
                    .map(|i| {
                        let url = format!("{base}?application_name=client-{i}");
                        tokio::spawn(async move { side(&pgshift_tests::connect(&url).await).await })
                    })
                    .collect();
                for t in tasks {
                    out.push(t.await.unwrap());
                }
            }
            out
        }
    };
    let first = sides(0..1000).await;
    let on_new = first.iter().filter(|s| *s == "new").count();
    assert!(
        (270..=330).contains(&on_new),
        "{on_new} of 1000 sessions on new at 30%"
    );
    let again = sides(0..200).await;
    assert_eq!(
        &first[..200],
        &again[..],
        "the same key lands on the same side"
    );
}

#[tokio::test]
async fn a_transaction_keeps_its_backend_across_a_reload() {
    let db = fresh_db("route_pin");
    mark_sides(&db);
    let proxy = proxy_with(&db, "").await;
    let c = proxy.client().await;
    c.batch_execute("BEGIN").await.unwrap();
    assert_eq!(side_simple(&c).await, "old");
    proxy
        .inner()
        .shared()
        .install(config(&db, READS_OF_WHEREAMI_TO_NEW))
        .unwrap();
    assert_eq!(side_simple(&c).await, "old", "still inside the transaction");
    assert_eq!(
        side(&c).await,
        "old",
        "extended protocol inside the transaction"
    );
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        side_simple(&c).await,
        "new",
        "the next transaction follows the new rules"
    );

    // The same with the extended protocol's transaction API.
    let mut c = proxy.client().await;
    proxy.inner().shared().install(config(&db, "")).unwrap();
    let tx = c.transaction().await.unwrap();
    assert_eq!(side(&tx).await, "old");
    proxy
        .inner()
        .shared()
        .install(config(&db, READS_OF_WHEREAMI_TO_NEW))
        .unwrap();
    assert_eq!(side(&tx).await, "old");
    tx.commit().await.unwrap();
    assert_eq!(side(&c).await, "new");
}

#[tokio::test]
async fn a_held_begin_goes_where_the_first_statement_goes() {
    let db = fresh_db("route_begin");
    mark_sides(&db);
    let proxy = proxy_with(&db, READS_OF_WHEREAMI_TO_NEW).await;
    let c = proxy.client().await;
    c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    assert_eq!(side_simple(&c).await, "new");
    // Pinned: this write goes to NEW with the rest of the transaction.
    c.batch_execute("INSERT INTO whereami VALUES ('in-tx')")
        .await
        .unwrap();
    let iso: String = c
        .query_one("SHOW transaction_isolation", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        iso, "repeatable read",
        "the held BEGIN was replayed with its options"
    );
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        count(&url_new(&db), "SELECT count(*) FROM whereami").await,
        2
    );
    assert_eq!(
        count(&url_old(&db), "SELECT count(*) FROM whereami").await,
        1
    );
    // An empty transaction is answered without touching a backend.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    c.batch_execute("START TRANSACTION").await.unwrap();
    c.batch_execute("ROLLBACK").await.unwrap();
    // A rolled-back transaction leaves nothing behind.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("INSERT INTO whereami VALUES ('gone')")
        .await
        .unwrap();
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        count(&url_old(&db), "SELECT count(*) FROM whereami").await,
        1
    );
}

/// Savepoint commands between BEGIN and the first routed statement are
/// held with the BEGIN and go where that statement goes (guarantee 2):
/// separate Queries, one Query, and the extended protocol, which
/// tokio-postgres uses to prepare and then run each statement.
#[tokio::test]
async fn savepoints_before_the_first_statement_are_held_with_the_begin() {
    let db = fresh_db("route_savepoint");
    mark_sides(&db);
    pgshift_tests::psql_both(&db, "CREATE TABLE t (v text); GRANT ALL ON t TO PUBLIC;");
    let proxy = proxy_with(&db, READS_OF_WHEREAMI_TO_NEW).await;
    let c = proxy.client().await;
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("SAVEPOINT a").await.unwrap();
    c.batch_execute("SAVEPOINT b").await.unwrap();
    c.batch_execute("ROLLBACK TO SAVEPOINT a").await.unwrap();
    c.batch_execute("RELEASE a").await.unwrap();
    assert_eq!(side_simple(&c).await, "new");
    c.batch_execute("INSERT INTO t VALUES ('1')").await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();

    // Each transaction starts from OLD, where the session's last
    // statement ran: were a savepoint sent on its own, it would pin there.
    c.batch_execute("SELECT 1").await.unwrap();
    c.batch_execute("BEGIN; SAVEPOINT a").await.unwrap();
    assert_eq!(side_simple(&c).await, "new");
    c.batch_execute("INSERT INTO t VALUES ('gone')")
        .await
        .unwrap();
    // The held SAVEPOINT reached NEW with the BEGIN.
    c.batch_execute("ROLLBACK TO SAVEPOINT a").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES ('2')").await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();

    c.batch_execute("SELECT 1").await.unwrap();
    c.execute("BEGIN", &[]).await.unwrap();
    c.execute("SAVEPOINT c", &[]).await.unwrap();
    assert_eq!(side(&c).await, "new");
    c.execute("RELEASE SAVEPOINT c", &[]).await.unwrap();
    c.execute("INSERT INTO t VALUES ('3')", &[]).await.unwrap();
    c.execute("COMMIT", &[]).await.unwrap();

    // A savepoint that does not exist: Postgres' own error.
    c.batch_execute("BEGIN").await.unwrap();
    let err = c.batch_execute("RELEASE nope").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::S_E_INVALID_SPECIFICATION)
    );
    c.batch_execute("ROLLBACK").await.unwrap();
    // A transaction of savepoints only is answered without a backend.
    c.batch_execute("SELECT 1").await.unwrap();
    c.batch_execute("BEGIN; SAVEPOINT x").await.unwrap();
    c.execute("SAVEPOINT y", &[]).await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(side_simple(&c).await, "new");

    let rows = "SELECT coalesce(string_agg(v, ',' ORDER BY v), '') FROM t";
    let on = |url: String| async move {
        pgshift_tests::connect(&url)
            .await
            .query_one(rows, &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    assert_eq!(on(url_new(&db)).await, "1,2,3");
    assert_eq!(on(url_old(&db)).await, "");
}

/// COMMIT PREPARED and ROLLBACK PREPARED go to the backend that ran the
/// PREPARE TRANSACTION, wherever the session (or another session) is by
/// then: simple and extended protocol.
#[tokio::test]
async fn the_second_phase_of_two_phase_commit_follows_the_prepare() {
    let db = fresh_db("route_two_phase");
    mark_sides(&db);
    pgshift_tests::psql_both(&db, "CREATE TABLE t (v text); GRANT ALL ON t TO PUBLIC;");
    let proxy = proxy_with(&db, READS_OF_WHEREAMI_TO_NEW).await;
    let c = proxy.client().await;
    let gid = |n: &str| format!("{db}_{n}");

    // Prepared on NEW, committed from OLD.
    c.batch_execute("BEGIN").await.unwrap();
    assert_eq!(side_simple(&c).await, "new");
    c.batch_execute("INSERT INTO t VALUES ('committed')")
        .await
        .unwrap();
    c.batch_execute(&format!("PREPARE TRANSACTION '{}'", gid("a")))
        .await
        .unwrap();
    c.batch_execute("SELECT 1").await.unwrap();
    c.batch_execute(&format!("COMMIT PREPARED '{}'", gid("a")))
        .await
        .unwrap();

    // The same through the extended protocol, rolled back.
    c.execute("BEGIN", &[]).await.unwrap();
    assert_eq!(side(&c).await, "new");
    c.execute("INSERT INTO t VALUES ('rolled back')", &[])
        .await
        .unwrap();
    c.execute(&format!("PREPARE TRANSACTION '{}'", gid("b")), &[])
        .await
        .unwrap();
    c.execute("SELECT 1", &[]).await.unwrap();
    c.execute(&format!("ROLLBACK PREPARED '{}'", gid("b")), &[])
        .await
        .unwrap();

    // Prepared by one session, committed by another that is on OLD.
    c.batch_execute("BEGIN").await.unwrap();
    assert_eq!(side_simple(&c).await, "new");
    c.batch_execute("INSERT INTO t VALUES ('by another')")
        .await
        .unwrap();
    c.batch_execute(&format!("PREPARE TRANSACTION '{}'", gid("c")))
        .await
        .unwrap();
    let other = proxy.client().await;
    other.batch_execute("SELECT 1").await.unwrap();
    other
        .execute(&format!("COMMIT PREPARED '{}'", gid("c")), &[])
        .await
        .unwrap();
    // A gid nobody prepared: Postgres' own error, from where the session is.
    let err = other
        .batch_execute(&format!("COMMIT PREPARED '{}'", gid("none")))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT)
    );
    assert_eq!(proxy.inner().shared().prepared.len(), 0);

    let rows = "SELECT coalesce(string_agg(v, ',' ORDER BY v), '') FROM t";
    assert_eq!(
        query_text(&url_new(&db), rows).await,
        "by another,committed"
    );
    assert_eq!(query_text(&url_old(&db), rows).await, "");
    let left = format!("SELECT count(*)::text FROM pg_prepared_xacts WHERE gid LIKE '{db}%'");
    assert_eq!(query_text(&url_new(&db), &left).await, "0");
    assert_eq!(query_text(&url_old(&db), &left).await, "0");
}

async fn query_text(url: &str, sql: &str) -> String {
    pgshift_tests::connect(url)
        .await
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get::<_, String>(0)
}

#[tokio::test]
async fn a_multi_statement_query_is_pinned_to_one_backend() {
    let db = fresh_db("route_multi");
    mark_sides(&db);
    let proxy = proxy_with(&db, READS_OF_WHEREAMI_TO_NEW).await;
    let c = proxy.client().await;
    // First routed statement is a read of whereami: the whole text goes to NEW.
    c.simple_query("SELECT side FROM whereami; INSERT INTO whereami VALUES ('multi')")
        .await
        .unwrap();
    assert_eq!(
        count(&url_new(&db), "SELECT count(*) FROM whereami").await,
        2
    );
    assert_eq!(
        count(&url_old(&db), "SELECT count(*) FROM whereami").await,
        1
    );
}

#[tokio::test]
async fn rollback_switch_sends_everything_to_old() {
    let db = fresh_db("route_rollback");
    mark_sides(&db);
    let proxy = proxy_with(
        &db,
        &format!("defaults: {{ primary: new }}\n{READS_OF_WHEREAMI_TO_NEW}"),
    )
    .await;
    let c = proxy.client().await;
    assert_eq!(side(&c).await, "new");
    proxy
        .inner()
        .shared()
        .install(config(
            &db,
            &format!("rollback: true\ndefaults: {{ primary: new }}\n{READS_OF_WHEREAMI_TO_NEW}"),
        ))
        .unwrap();
    assert_eq!(side(&c).await, "old");
    assert_eq!(side_simple(&c).await, "old");
}

#[tokio::test]
async fn prepared_statements_and_settings_follow_the_session() {
    let db = fresh_db("route_state");
    mark_sides(&db);
    let proxy = proxy_with(&db, "").await;
    let c = proxy.client().await;
    c.batch_execute("SET pgshift.test = 'hello'; SET search_path = public")
        .await
        .unwrap();
    c.batch_execute("PREPARE q AS SELECT side FROM whereami")
        .await
        .unwrap();
    let stmt = c
        .prepare("SELECT side, current_setting('pgshift.test') FROM whereami")
        .await
        .unwrap();
    let row = c.query_one(&stmt, &[]).await.unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("old".into(), "hello".into())
    );

    // Everything to NEW now: the statement prepared on OLD runs there, and
    // NEW has the setting and the SQL-level prepared statement.
    proxy
        .inner()
        .shared()
        .install(config(&db, "defaults: { primary: new }\n"))
        .unwrap();
    let row = c.query_one(&stmt, &[]).await.unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("new".into(), "hello".into())
    );
    let rows = c.simple_query("EXECUTE q").await.unwrap();
    let got = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(got.as_deref(), Some("new"));
    // And back: OLD still has everything.
    proxy.inner().shared().install(config(&db, "")).unwrap();
    let row = c.query_one(&stmt, &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "old");
}

#[tokio::test]
async fn notifications_arrive_from_either_backend() {
    use futures_util::StreamExt;
    let db = fresh_db("route_listen");
    mark_sides(&db);
    let proxy = proxy_with(&db, "").await;
    let (c, mut conn) = tokio_postgres::connect(&proxy.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(futures_util::stream::poll_fn(
            move |cx| conn.poll_message(cx)
        ));
        while let Some(Ok(msg)) = stream.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = msg {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    c.batch_execute("LISTEN events").await.unwrap();
    proxy
        .inner()
        .shared()
        .install(config(&db, "defaults: { primary: new }\n"))
        .unwrap();
    assert_eq!(side(&c).await, "new", "the session now also uses NEW");
    for (url, payload) in [(url_old(&db), "from-old"), (url_new(&db), "from-new")] {
        pgshift_tests::connect(&url)
            .await
            .batch_execute(&format!("NOTIFY events, '{payload}'"))
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("notification");
        assert_eq!(got.as_deref(), Some(payload));
    }
}

#[tokio::test]
async fn pipelined_batches_to_both_backends_come_back_in_order() {
    let db = fresh_db("route_pipeline");
    mark_sides(&db);
    let proxy = proxy_with(&db, READS_OF_WHEREAMI_TO_NEW).await;
    let c = proxy.client().await;
    let to_new = c.prepare("SELECT side FROM whereami").await.unwrap();
    let to_old = c.prepare("SELECT current_setting('port')").await.unwrap();
    let futs = (0..60).map(|i| {
        let (c, to_new, to_old) = (&c, &to_new, &to_old);
        async move {
            if i % 3 == 0 {
                let s: String = c.query_one(to_new, &[]).await.unwrap().get(0);
                (i, s)
            } else {
                let p: String = c.query_one(to_old, &[]).await.unwrap().get(0);
                (i, p)
            }
        }
    });
    let old_port = old_and_new().old.port().to_string();
    for (i, got) in futures_util::future::join_all(futs).await {
        if i % 3 == 0 {
            assert_eq!(got, "new");
        } else {
            assert_eq!(got, old_port);
        }
    }
}

/// pgbench sends BEGIN as a batch of its own (-M extended: unnamed Parse;
/// -M prepared: a named statement bound each time). The transaction still
/// goes where its first statement is routed.
#[tokio::test]
async fn extended_protocol_transactions_follow_their_first_statement() {
    let db = fresh_db("route_ext_begin");
    pgshift_tests::pgbench::init_both(&db);
    let rules = "rules:\n  - name: accounts-writes\n    match: { kind: [write], tables: [pgbench_accounts] }\n    primary: new\n";
    let proxy = proxy_with(&db, rules).await;
    for mode in ["extended", "prepared", "simple"] {
        let report = pgshift_tests::pgbench::run(
            proxy.conninfo(),
            vec!["-n", "-M", mode, "-c", "2", "-t", "25"],
        )
        .await;
        assert_eq!(report.failed(), 0, "-M {mode}: {}", report.text);
    }
    // Every transaction (its history INSERT included) ran on NEW.
    assert_eq!(
        count(&url_new(&db), "SELECT count(*) FROM pgbench_history").await,
        150
    );
    assert_eq!(
        count(&url_old(&db), "SELECT count(*) FROM pgbench_history").await,
        0
    );
}
