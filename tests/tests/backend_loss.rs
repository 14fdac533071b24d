//! A backend connection that goes away under a session: the client hears
//! what Postgres said (as it would connected directly) and is closed, the
//! proxy serves everyone else, and a lost mirror connection costs the
//! client nothing and is rebuilt, session state included.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pgshift_protocol::backend::ErrorFields;

use pgshift_rules::config::BackendId;
use pgshift_tests::{connect, fresh_db, old_and_new, proxy_with, raw, url_new, url_old, TestProxy};
use tokio::io::AsyncReadExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

/// Connects keeping hold of the connection future, whose outcome is where
/// tokio-postgres reports an error the server sent unprompted.
async fn connect_watched(
    url: &str,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    (client, tokio::spawn(conn))
}

async fn backend_pid(c: &tokio_postgres::Client) -> i32 {
    c.query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

async fn terminate(admin: &tokio_postgres::Client, pid: i32) {
    let done: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(done, "backend {pid} terminated");
}

/// A table only a session whose search_path names `s` finds unqualified.
const TABLE_IN_SCHEMA_S: &str = "CREATE SCHEMA s; CREATE TABLE s.t (i int PRIMARY KEY);
    GRANT ALL ON SCHEMA s TO PUBLIC; GRANT ALL ON s.t TO PUBLIC;";

/// The pid of the one connection to `new` with this application_name:
/// the session's mirror.
async fn mirror_pid_on(new: &tokio_postgres::Client, application_name: &str) -> i32 {
    new.query_one(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
        &[&application_name],
    )
    .await
    .unwrap()
    .get(0)
}

/// Runs `insert` (one int parameter) with `from`, `from + 1`, ... until
/// `table` on NEW holds the value just inserted, which means the mirror
/// applies statements again; returns that value. Fails after 20 s.
async fn insert_until_mirrored(
    proxy: &TestProxy,
    client: &tokio_postgres::Client,
    insert: &tokio_postgres::Statement,
    new: &tokio_postgres::Client,
    table: &str,
    from: i32,
) -> i32 {
    let started = Instant::now();
    let check = format!("SELECT count(*) FROM {table} WHERE i = $1");
    let mut i = from;
    loop {
        client.execute(insert, &[&i]).await.unwrap();
        proxy.mirrors_drained().await;
        let n: i64 = new.query_one(check.as_str(), &[&i]).await.unwrap().get(0);
        if n == 1 {
            return i;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the mirror did not come back within 20s"
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An idle session whose backend is terminated: Postgres's FATAL reaches
/// the client unprompted and the connection closes, through pgshift as
/// directly (read at the protocol level: drivers differ in what they
/// report of an error nobody asked for).
#[tokio::test]
async fn idle_session_hears_the_fatal_and_ends() {
    let db = fresh_db("loss_idle");
    let proxy = proxy_with(&db, "").await;
    let admin = connect(&url_old(&db)).await;
    let direct: SocketAddr = ([127, 0, 0, 1], old_and_new().old.port()).into();
    for (via, addr) in [("direct", direct), ("pgshift", proxy.addr)] {
        let (mut s, pid) = raw::login(addr, &db).await;
        terminate(&admin, pid as i32).await;
        let mut buf = BytesMut::new();
        let mut fatal = None;
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(f) = pgshift_protocol::decode_frame(&mut buf, 1 << 20).unwrap() {
                    assert_eq!(f.tag(), b'E', "{via}: only the error comes");
                    let e = ErrorFields::new(f.body());
                    let text =
                        |v: Option<&[u8]>| v.map(|v| String::from_utf8_lossy(v).into_owned());
                    fatal = Some((text(e.severity()), text(e.sqlstate())));
                    continue;
                }
                if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "{via}: still open 5s after its backend ended"
        );
        assert_eq!(
            fatal,
            Some((Some("FATAL".to_owned()), Some("57P01".to_owned()))),
            "{via}"
        );
    }
    let c = proxy.client().await;
    assert!(backend_pid(&c).await > 0);
}

/// A statement running when its backend is terminated fails with the
/// backend's FATAL, at once rather than when the statement would have ended.
#[tokio::test]
async fn running_statement_gets_the_fatal() {
    let db = fresh_db("loss_busy");
    let proxy = proxy_with(&db, "").await;
    let admin = connect(&url_old(&db)).await;
    for (via, url) in [("direct", url_old(&db)), ("pgshift", proxy.url())] {
        let (client, _conn) = connect_watched(&url).await;
        let pid = backend_pid(&client).await;
        let started = Instant::now();
        let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
        // The sleep has begun once the backend reports it.
        loop {
            let active: bool = admin
                .query_one(
                    "SELECT count(*) = 1 FROM pg_stat_activity WHERE pid = $1 AND query LIKE '%pg_sleep%' AND state = 'active'",
                    &[&pid],
                )
                .await
                .unwrap()
                .get(0);
            if active {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{via}: sleep never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        terminate(&admin, pid).await;
        let res = tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .unwrap_or_else(|_| {
                panic!("{via}: the statement still runs 5s after its backend ended")
            })
            .unwrap();
        let err = res.expect_err("the statement fails");
        assert_eq!(err.code(), Some(&SqlState::ADMIN_SHUTDOWN), "{via}: {err}");
        assert!(started.elapsed() < Duration::from_secs(15));
    }
    let c = proxy.client().await;
    assert!(backend_pid(&c).await > 0);
}

/// The mirror's connection to NEW is terminated in the middle of a session
/// that has set its search_path and prepared a statement: the client sees
/// no error, the loss is counted and the session marked diverged, and the
/// mirror reconnects, replays the SET and the Parse there (the table exists
/// only in schema `s`, so neither can be skipped), and applies what comes
/// next.
#[tokio::test]
async fn lost_mirror_connection_is_rebuilt_with_session_state() {
    let db = fresh_db("loss_mirror");
    pgshift_tests::psql_both(&db, TABLE_IN_SCHEMA_S);
    let proxy = proxy_with(&db, "defaults: { primary: old, mirror: new }\n").await;
    let url = format!("{}?application_name=loss_mirror", proxy.url());
    let client = connect(&url).await;
    client.batch_execute("SET search_path = s").await.unwrap();
    let insert = client.prepare("INSERT INTO t VALUES ($1)").await.unwrap();
    client.execute(&insert, &[&1i32]).await.unwrap();
    proxy.mirrors_drained().await;

    let new = connect(&url_new(&db)).await;
    let before: i64 = new
        .query_one("SELECT count(*) FROM s.t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(before, 1, "mirrored before the loss");
    let mirror_pid = mirror_pid_on(&new, "loss_mirror").await;
    terminate(&new, mirror_pid).await;

    // Every insert succeeds for the client; go on until NEW has one of
    // them again.
    let i = insert_until_mirrored(&proxy, &client, &insert, &new, "s.t", 2).await;
    let reconnected = mirror_pid_on(&new, "loss_mirror").await;
    assert_ne!(reconnected, mirror_pid, "a new mirror connection");

    let counters = proxy.mirror_counters(BackendId::New);
    assert!(
        counters.dropped > 0,
        "the statements lost with the connection are counted: {counters:?}"
    );
    assert_eq!(
        counters.errors, 0,
        "nothing failed on NEW itself (a statement run before its state was replayed would): {counters:?}"
    );
    assert_eq!(counters.replay_errors, 0, "{counters:?}");
    assert!(proxy.inner().shared().mirroring.diverged_total() > 0);
    let old = connect(&url_old(&db)).await;
    let on_old: i64 = old
        .query_one("SELECT count(*) FROM s.t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(on_old, i64::from(i), "every insert reached OLD");
}

/// The mirror's connection is lost inside a transaction it had begun: none
/// of the transaction reaches NEW (half of one would be worse than none),
/// the client's transaction commits on OLD without an error, and the next
/// transaction is mirrored again.
#[tokio::test]
async fn mirror_lost_inside_a_transaction_applies_none_of_it() {
    let db = fresh_db("loss_txn");
    pgshift_tests::psql_both(
        &db,
        "CREATE TABLE t (i int PRIMARY KEY); GRANT ALL ON t TO PUBLIC;",
    );
    let proxy = proxy_with(&db, "defaults: { primary: old, mirror: new }\n").await;
    let client = connect(&format!("{}?application_name=loss_txn", proxy.url())).await;
    let new = connect(&url_new(&db)).await;
    let count_new = |lo: i32, hi: i32| {
        let new = &new;
        async move {
            let n: i64 = new
                .query_one(
                    "SELECT count(*) FROM t WHERE i BETWEEN $1 AND $2",
                    &[&lo, &hi],
                )
                .await
                .unwrap()
                .get(0);
            n
        }
    };
    client
        .batch_execute("INSERT INTO t VALUES (0)")
        .await
        .unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute("INSERT INTO t VALUES (1)", &[])
        .await
        .unwrap();
    proxy.mirrors_drained().await;
    let mirror_pid: i32 = new
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'loss_txn' AND state = 'idle in transaction'",
            &[],
        )
        .await
        .expect("the mirror is inside the transaction")
        .get(0);
    terminate(&new, mirror_pid).await;
    // More statements than the mirror needs to notice the loss, reconnect
    // and let the session learn of it: every one after that point would
    // run outside any transaction if it were sent.
    let insert = client.prepare("INSERT INTO t VALUES ($1)").await.unwrap();
    for i in 2..=6 {
        client.execute(&insert, &[&i]).await.unwrap();
        proxy.mirrors_drained().await;
    }
    client.batch_execute("COMMIT").await.unwrap();
    proxy.mirrors_drained().await;
    assert_eq!(count_new(0, 0).await, 1);
    assert_eq!(
        count_new(1, 6).await,
        0,
        "no part of the transaction on NEW"
    );

    let i = insert_until_mirrored(&proxy, &client, &insert, &new, "t", 7).await;
    let old = connect(&url_old(&db)).await;
    let on_old: i64 = old
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(on_old, i64::from(i) + 1, "every insert reached OLD");
    let counters = proxy.mirror_counters(BackendId::New);
    assert_eq!(
        counters.errors, 0,
        "nothing failed on NEW itself: {counters:?}"
    );
    assert!(counters.dropped >= 5, "{counters:?}");
}

/// Forwards every connection on `listener` to `to`, byte for byte.
async fn forward(listener: tokio::net::TcpListener, to: SocketAddr) {
    loop {
        let Ok((mut a, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            if let Ok(mut b) = tokio::net::TcpStream::connect(to).await {
                let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
            }
        });
    }
}

/// A mirror backend that is unreachable when the session starts and
/// comes up later: the session's SET and prepared statement, whose first
/// replay had nowhere to go, are replayed on the first connection that
/// succeeds, so what follows applies there without failing.
#[tokio::test]
async fn mirror_backend_that_comes_up_later_gets_the_session_state() {
    let db = fresh_db("loss_late");
    pgshift_tests::psql_both(&db, TABLE_IN_SCHEMA_S);
    let port = pgshift_tests::free_port();
    let yaml = format!(
        "listen: 127.0.0.1:0
backends:
  old: {{ url: \"{old}\", tls: disable }}
  new: {{ url: \"postgres://app:{password}@127.0.0.1:{port}/{db}\", tls: disable }}
{auth}defaults: {{ primary: old, mirror: new }}
",
        old = old_and_new().old.app_url(&db),
        password = pgshift_tests::APP_PASSWORD,
        auth = pgshift_tests::SCRAM_AUTH,
    );
    let proxy = pgshift_tests::proxy_with_yaml(&db, &yaml).await;
    let client = connect(&proxy.url()).await;
    client.batch_execute("SET search_path = s").await.unwrap();
    let insert = client.prepare("INSERT INTO t VALUES ($1)").await.unwrap();
    client.execute(&insert, &[&1i32]).await.unwrap();
    proxy.mirrors_drained().await;
    let dropped = proxy.mirror_counters(BackendId::New).dropped;
    assert!(dropped > 0, "nothing to mirror to yet");

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let new_addr: SocketAddr = ([127, 0, 0, 1], old_and_new().new.port()).into();
    tokio::spawn(forward(listener, new_addr));

    let new = connect(&url_new(&db)).await;
    insert_until_mirrored(&proxy, &client, &insert, &new, "s.t", 2).await;
    let counters = proxy.mirror_counters(BackendId::New);
    assert_eq!(
        counters.errors, 0,
        "no statement failed on NEW for want of the session's state: {counters:?}"
    );
}
