//! With defaults {primary: old, mirror: none} and no rules, clients behave
//! exactly as if connected to OLD (SPEC guarantee 1).

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{pin_mut, SinkExt, StreamExt, TryStreamExt};
use pgshift_tests::{fresh_db, old_and_new, proxy_with};
use tokio_postgres::SimpleQueryMessage;

async fn scalar_i64(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

#[tokio::test]
async fn statements_reach_old() {
    let db = fresh_db("reach_old");
    let proxy = proxy_with(&db, "").await;
    let c = proxy.client().await;
    let port: String = c.query_one("SHOW port", &[]).await.unwrap().get(0);
    assert_eq!(port, old_and_new().old.port().to_string());
}

#[tokio::test]
async fn simple_and_extended_protocol() {
    let db = fresh_db("protocols");
    let proxy = proxy_with(&db, "").await;
    let c = proxy.client().await;
    let msgs = c
        .simple_query("CREATE TABLE t (id int, v text); INSERT INTO t VALUES (1, 'a'), (2, NULL); SELECT id, v FROM t ORDER BY id")
        .await
        .unwrap();
    let rows: Vec<(String, Option<String>)> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((r.get(0).unwrap().to_owned(), r.get(1).map(str::to_owned)))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        rows,
        vec![("1".into(), Some("a".into())), ("2".into(), None)]
    );
    let tags: Vec<u64> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(tags, vec![0, 2, 2]);

    // Extended protocol with typed parameters and binary results.
    let row = c
        .query_one(
            "SELECT $1::int8 * 2, $2::text || '!', $3::float8, now()::date = current_date",
            &[&21i64, &"hi", &1.5f64],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 42);
    assert_eq!(row.get::<_, String>(1), "hi!");
    assert_eq!(row.get::<_, f64>(2), 1.5);
    assert!(row.get::<_, bool>(3));
}

#[tokio::test]
async fn named_and_unnamed_prepared_statements_and_pipelining() {
    let db = fresh_db("prepared");
    let proxy = proxy_with(&db, "").await;
    let c = proxy.client().await;
    // Named: prepared once, executed many times.
    let stmt = c.prepare("SELECT $1::int + 1").await.unwrap();
    for i in 0..50 {
        let v: i32 = c.query_one(&stmt, &[&i]).await.unwrap().get(0);
        assert_eq!(v, i + 1);
    }
    // Unnamed: query_raw with a string goes through the unnamed statement.
    let v: i32 = c.query_one("SELECT 7", &[]).await.unwrap().get(0);
    assert_eq!(v, 7);
    // Pipelined: tokio-postgres sends these without waiting for replies.
    let futs = (0..100).map(|i| {
        let c = &c;
        let stmt = &stmt;
        async move { c.query_one(stmt, &[&i]).await.map(|r| r.get::<_, i32>(0)) }
    });
    let results = futures_util::future::join_all(futs).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), i as i32 + 1);
    }
}

#[tokio::test]
async fn copy_in_and_out_100k_rows() {
    let db = fresh_db("copy");
    let proxy = proxy_with(&db, "").await;
    let c = proxy.client().await;
    c.batch_execute("CREATE TABLE big (id int, payload text)")
        .await
        .unwrap();
    let sink = c.copy_in("COPY big FROM STDIN").await.unwrap();
    pin_mut!(sink);
    let mut chunk = String::new();
    for i in 0..100_000 {
        chunk.push_str(&format!("{i}\tpayload number {i}\n"));
        if chunk.len() > 64 * 1024 {
            sink.send(Bytes::from(std::mem::take(&mut chunk)))
                .await
                .unwrap();
        }
    }
    sink.send(Bytes::from(chunk)).await.unwrap();
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 100_000);
    assert_eq!(scalar_i64(&c, "SELECT count(*) FROM big").await, 100_000);
    assert_eq!(
        scalar_i64(&c, "SELECT sum(id) FROM big").await,
        4_999_950_000
    );

    let stream = c.copy_out("COPY big TO STDOUT").await.unwrap();
    let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
    let all: Vec<u8> = chunks.concat();
    assert_eq!(all.iter().filter(|b| **b == b'\n').count(), 100_000);
    assert!(all.starts_with(b"0\tpayload number 0\n"));
}

#[tokio::test]
async fn listen_notify_between_two_clients() {
    let db = fresh_db("notify");
    let proxy = proxy_with(&db, "").await;
    let (listener, mut conn) = tokio_postgres::connect(&proxy.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(msg)) = stream.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = msg {
                let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    listener.batch_execute("LISTEN jobs").await.unwrap();
    let sender = proxy.client().await;
    sender.batch_execute("NOTIFY jobs, 'hello'").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("notification arrives");
    assert_eq!(got, Some(("jobs".to_owned(), "hello".to_owned())));
}

#[tokio::test]
async fn cancel_stops_pg_sleep() {
    let db = fresh_db("cancel");
    let proxy = proxy_with(&db, "").await;
    cancel_interrupts_sleep(proxy.client().await).await;
}

/// Cancels a 30 s pg_sleep on `c` through pgshift and checks it stops early
/// with 57014.
async fn cancel_interrupts_sleep(c: tokio_postgres::Client) {
    let token = c.cancel_token();
    let started = Instant::now();
    let sleeper =
        tokio::spawn(async move { c.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = sleeper
        .await
        .unwrap()
        .expect_err("the statement was cancelled");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn error_in_transaction_then_rollback_and_reuse() {
    let db = fresh_db("txerror");
    let proxy = proxy_with(&db, "").await;
    let c = proxy.client().await;
    c.batch_execute("CREATE TABLE t (id int primary key)")
        .await
        .unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    c.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    let err = c
        .execute("INSERT INTO t VALUES (1)", &[])
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    );
    let err = c.execute("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)
    );
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(scalar_i64(&c, "SELECT count(*) FROM t").await, 0);
    c.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    assert_eq!(scalar_i64(&c, "SELECT count(*) FROM t").await, 1);
}

#[tokio::test]
async fn bytea_of_50_mb_round_trips() {
    let db = fresh_db("bytea");
    let proxy = proxy_with(&db, "").await;
    let c = proxy.client().await;
    c.batch_execute("CREATE TABLE blobs (id int, data bytea)")
        .await
        .unwrap();
    let blob: Vec<u8> = (0..50 * 1024 * 1024)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    c.execute("INSERT INTO blobs VALUES (1, $1)", &[&blob])
        .await
        .unwrap();
    let back: Vec<u8> = c
        .query_one("SELECT data FROM blobs WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(back.len(), blob.len());
    assert!(back == blob, "bytea came back different");
    // And as text through the simple protocol (hex, ~100 MB on the wire).
    let len = c
        .simple_query("SELECT data FROM blobs")
        .await
        .unwrap()
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::len),
            _ => None,
        });
    assert_eq!(len, Some(2 + 2 * blob.len()));
}

#[tokio::test]
async fn two_hundred_concurrent_clients() {
    let db = fresh_db("concurrent");
    let proxy = proxy_with(&db, "").await;
    let url = proxy.url();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let c = pgshift_tests::connect(&url).await;
                let mut sum = 0i64;
                for j in 0..10 {
                    let v: i64 = c
                        .query_one("SELECT $1::int8 + $2::int8", &[&(i as i64), &(j as i64)])
                        .await
                        .unwrap()
                        .get(0);
                    sum += v;
                }
                sum
            })
        })
        .collect();
    let mut total = 0i64;
    for t in tasks {
        total += t.await.unwrap();
    }
    // sum over i<200, j<10 of (i + j) = 10 * 19900 + 200 * 45
    assert_eq!(total, 10 * 19_900 + 200 * 45);
}

#[tokio::test]
async fn startup_options_reach_the_backend() {
    let db = fresh_db("options");
    let proxy = proxy_with(&db, "").await;
    let url = format!(
        "{}?application_name=shop-api&options=-c%20search_path%3Dfoo,public%20-c%20work_mem%3D5MB",
        proxy.url()
    );
    let c = pgshift_tests::connect(&url).await;
    let app: String = c
        .query_one("SELECT current_setting('application_name')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(app, "shop-api");
    let path: String = c.query_one("SHOW search_path", &[]).await.unwrap().get(0);
    assert_eq!(path, "foo,public");
    let wm: String = c.query_one("SHOW work_mem", &[]).await.unwrap().get(0);
    assert_eq!(wm, "5MB");
}

/// Both backends reached over their Unix sockets, each URL form once: the
/// percent-encoded directory as host, and libpq's `?host=` parameter.
/// Statements, mirrored writes and a cancel all travel over the sockets.
#[tokio::test]
async fn unix_socket_backends() {
    let db = fresh_db("unix_backends");
    let pair = old_and_new();
    let dir = |c: &pgshift_tests::LocalCluster| c.socket_dir().to_str().unwrap().to_owned();
    let yaml = format!(
        "listen: 127.0.0.1:0
backends:
  old: {{ url: \"postgres://app@{old_dir}:{old_port}/{db}\" }}
  new: {{ url: \"postgres://app@/{db}?host={new_dir}&port={new_port}\" }}
{auth}defaults: {{ primary: old, mirror: new }}
",
        old_dir = dir(&pair.old).replace('/', "%2F"),
        old_port = pair.old.port(),
        new_dir = dir(&pair.new),
        new_port = pair.new.port(),
        auth = pgshift_tests::SCRAM_AUTH,
    );
    let proxy = pgshift_tests::proxy_with_yaml(&db, &yaml).await;
    let c = proxy.client().await;

    // A Unix-socket session has no server address; a TCP one would.
    let row = c
        .query_one(
            "SELECT inet_server_addr() IS NULL, current_setting('port')::int",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "OLD is reached over its socket");
    assert_eq!(row.get::<_, i32>(1), i32::from(pair.old.port()));

    c.batch_execute("CREATE TABLE u (id int); INSERT INTO u VALUES (1), (2)")
        .await
        .unwrap();
    proxy.mirrors_drained().await;
    let on_new = pgshift_tests::connect(&pgshift_tests::url_new(&db)).await;
    let n: i64 = on_new
        .query_one("SELECT count(*) FROM u", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "the mirrored writes reached NEW over its socket");
    let counters = proxy.mirror_counters(pgshift_rules::config::BackendId::New);
    assert_eq!((counters.errors, counters.dropped), (0, 0), "{counters:?}");

    // Cancel is re-sent over the socket too.
    cancel_interrupts_sleep(c).await;
}

/// A socket directory where no Postgres listens: the client gets an error
/// naming the socket path, and the proxy goes on serving.
#[tokio::test]
async fn unix_socket_backend_missing() {
    let db = fresh_db("unix_missing");
    let gone = tempfile::tempdir().unwrap();
    let yaml = format!(
        "listen: 127.0.0.1:0
backends:
  old: {{ url: \"postgres://app@/{db}?host={dir}&port=5999\" }}
  new: {{ url: \"{new}\", tls: disable }}
{auth}",
        dir = gone.path().display(),
        new = pgshift_tests::url_new(&db),
        auth = pgshift_tests::SCRAM_AUTH,
    );
    let proxy = pgshift_tests::proxy_with_yaml(&db, &yaml).await;
    for _ in 0..2 {
        let Err(err) = pgshift_tests::try_connect(&proxy.url()).await else {
            panic!("OLD cannot be reached, yet the login succeeded");
        };
        let text = format!("{err:?}");
        assert!(text.contains(".s.PGSQL.5999"), "{text}");
    }
}

/// Exchanges only hand-written clients make, each ending with the
/// ReadyForQuery that leaves the session idle: Queries and FunctionCalls
/// among unsynced extended-protocol messages, Syncs and Flushes during
/// COPY, COPYs that never begin, several COPYs in one Query. Tables `t` and
/// `u` (one int column each) must exist.
fn protocol_corners() -> Vec<(&'static str, Vec<pgshift_tests::raw::Msg>)> {
    use pgshift_tests::raw::Msg::*;
    vec![
        (
            "ok then query",
            vec![Parse("SELECT 1"), Bind, Execute, Query("SELECT 2"), Sync],
        ),
        (
            "failed then query",
            vec![Parse("SELECT 1/0"), Bind, Execute, Query("SELECT 2"), Sync],
        ),
        (
            "ok then two queries, no sync",
            vec![
                Parse("SELECT 1"),
                Bind,
                Execute,
                Query("SELECT 2"),
                Query("SELECT 3"),
            ],
        ),
        (
            "failed then two queries",
            vec![
                Parse("SELECT 1/0"),
                Bind,
                Execute,
                Query("SELECT 2"),
                Query("SELECT 3"),
                Sync,
            ],
        ),
        (
            "ok, query, failed, query",
            vec![
                Parse("SELECT 1"),
                Bind,
                Execute,
                Query("SELECT 2"),
                Parse("SELECT 1/0"),
                Bind,
                Execute,
                Query("SELECT 3"),
                Sync,
            ],
        ),
        (
            "failed query rolls back the insert",
            vec![
                Parse("INSERT INTO t VALUES (1)"),
                Bind,
                Execute,
                Query("SELECT 1/0"),
                Sync,
                Query("SELECT count(*) FROM t"),
            ],
        ),
        (
            "flushed failure then query",
            vec![
                Parse("SELECT 1/0"),
                Bind,
                Execute,
                Flush,
                Query("SELECT 2"),
                Sync,
            ],
        ),
        // version(): a FunctionCall, answered like a Query.
        (
            "ok then function call",
            vec![Parse("SELECT 1"), Bind, Execute, Call(89), Sync],
        ),
        (
            "failed then function call",
            vec![Parse("SELECT 1/0"), Bind, Execute, Call(89), Sync],
        ),
        (
            "extended BEGIN then query",
            vec![
                Parse("BEGIN"),
                Bind,
                Execute,
                Query("SELECT 2"),
                Sync,
                Query("COMMIT"),
            ],
        ),
        // Postgres ignores a Sync or Flush during COPY FROM STDIN.
        (
            "sync inside a simple COPY",
            vec![
                Query("COPY u FROM STDIN"),
                Sync,
                CopyData("1\n"),
                Flush,
                CopyDone,
            ],
        ),
        (
            "sync inside an extended COPY",
            vec![
                Parse("COPY u FROM STDIN"),
                Bind,
                Execute,
                Sync,
                CopyData("2\n"),
                CopyDone,
                Sync,
            ],
        ),
        // A COPY that fails before it begins takes no data: what follows
        // is not the COPY's.
        (
            "simple COPY of a missing table, then a Sync",
            vec![Query("COPY nosuch FROM STDIN"), Sync],
        ),
        (
            "simple COPY of a missing table, then extended messages",
            vec![
                Query("COPY nosuch FROM STDIN"),
                Parse("SELECT 1"),
                Bind,
                Execute,
                Sync,
            ],
        ),
        (
            "extended COPY of a missing table, then more",
            vec![
                Parse("COPY nosuch FROM STDIN"),
                Bind,
                Execute,
                Sync,
                Parse("SELECT 1"),
                Bind,
                Execute,
                Sync,
            ],
        ),
        (
            "two COPYs in one batch, a Sync before each one's data",
            vec![
                Parse("COPY u FROM STDIN"),
                Bind,
                Execute,
                Flush,
                CopyData("3\n"),
                CopyDone,
                Flush,
                Await(b'C'),
                Bind,
                Execute,
                Sync,
                CopyData("4\n"),
                CopyDone,
                Sync,
            ],
        ),
        (
            "COPY TO STDOUT that says FROM STDIN",
            vec![
                Parse("COPY (SELECT 'from stdin') TO STDOUT"),
                Bind,
                Execute,
                Sync,
            ],
        ),
        (
            "bad COPY data",
            vec![Query("COPY u FROM STDIN"), CopyData("x\n"), CopyDone, Sync],
        ),
        // One Query may start several COPYs, one after the other.
        (
            "two COPYs in one Query, a Sync inside the second",
            vec![
                Query("COPY u FROM STDIN; COPY u FROM STDIN"),
                Await(b'G'),
                CopyData("5\n"),
                CopyDone,
                Await(b'G'),
                CopyData("6\n"),
                Sync,
                Flush,
                CopyDone,
            ],
        ),
        (
            "two COPYs in one Query, the first one's data bad",
            vec![
                Query("COPY u FROM STDIN; COPY u FROM STDIN"),
                Await(b'G'),
                CopyData("bad\n"),
                CopyDone,
                Sync,
            ],
        ),
        (
            "two COPYs in one Query, the first one failed by the client",
            vec![
                Query("COPY u FROM STDIN; COPY u FROM STDIN"),
                Await(b'G'),
                CopyData("7\n"),
                CopyFail,
                Sync,
            ],
        ),
        (
            "a COPY written with odd spacing, a Sync inside",
            vec![
                Query("copy u from\t stdin"),
                Sync,
                CopyData("8\n"),
                CopyDone,
            ],
        ),
        // pgshift answers a BEGIN and the savepoint commands after it
        // itself, until a statement decides the transaction's backend;
        // one naming a savepoint that does not exist goes to Postgres.
        (
            "savepoints before the first statement, one unknown",
            vec![
                Query("BEGIN"),
                Query("SAVEPOINT a"),
                Query("SAVEPOINT b"),
                Query("ROLLBACK TO SAVEPOINT a"),
                Query("RELEASE a"),
                Query("ROLLBACK TO a"),
                Query("ROLLBACK"),
            ],
        ),
        (
            "a transaction of savepoints only",
            vec![
                Query("START TRANSACTION; SAVEPOINT a"),
                Query("RELEASE a"),
                Query("COMMIT"),
            ],
        ),
        (
            "savepoints through the extended protocol",
            vec![
                Parse("BEGIN"),
                Bind,
                Execute,
                Sync,
                Parse("SAVEPOINT a"),
                Bind,
                Execute,
                Sync,
                Parse("SELECT 1"),
                Bind,
                Execute,
                Sync,
                Parse("ROLLBACK TO SAVEPOINT a"),
                Bind,
                Execute,
                Parse("COMMIT"),
                Bind,
                Execute,
                Sync,
            ],
        ),
        ("rows copied", vec![Query("SELECT count(*) FROM u")]),
    ]
}

/// Runs each of [`protocol_corners`] directly against OLD and through the
/// proxy at `proxy`, and asserts the two transcripts are equal; `after`
/// then runs on the proxy's connection.
async fn same_transcripts<F, Fut>(db: &str, proxy: std::net::SocketAddr, mut after: F)
where
    F: FnMut(&'static str, tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = tokio::net::TcpStream>,
{
    use pgshift_tests::raw::transcript;
    let old = &old_and_new().old;
    let direct = std::net::SocketAddr::from(([127, 0, 0, 1], old.port()));
    let (mut d, _) = pgshift_tests::raw::login(direct, db).await;
    let (mut p, _) = pgshift_tests::raw::login(proxy, db).await;
    for (name, msgs) in &protocol_corners() {
        let want = transcript(&mut d, msgs).await;
        let got = tokio::time::timeout(Duration::from_secs(20), transcript(&mut p, msgs))
            .await
            .unwrap_or_else(|_| panic!("{name}: no answer through the proxy"));
        assert_eq!(got, want, "{name}");
        p = after(name, p).await;
    }
}

/// Hand-written exchanges (see [`protocol_corners`]). A simple Query that
/// follows extended-protocol messages before their Sync joins their
/// implicit transaction, and is skipped when they failed (Postgres then
/// ignores everything up to the Sync): one ReadyForQuery fewer than when
/// they succeed. The proxy must pass on exactly what Postgres says and keep
/// its own count of owed answers right, so that the session can still move
/// to the other backend afterwards.
#[tokio::test]
async fn simple_query_among_unsynced_extended_messages() {
    use pgshift_tests::raw::{transcript, Msg};
    let db = fresh_db("mixed_protocols");
    pgshift_tests::mark_sides(&db);
    pgshift_tests::psql_both(
        &db,
        "CREATE TABLE t (n int); CREATE TABLE u (n int); GRANT ALL ON t, u TO PUBLIC;",
    );
    let rules = "rules:
  - name: whereami-reads
    match: { kind: [read], tables: [whereami] }
    primary: new
";
    let proxy = proxy_with(&db, rules).await;
    same_transcripts(&db, proxy.addr, |name, mut p| async move {
        // Every answer is accounted for: the session moves to NEW for a
        // read of whereami (which waits for everything owed on OLD), and
        // back to OLD for the next exchange.
        let moved = tokio::time::timeout(
            Duration::from_secs(10),
            transcript(&mut p, &[Msg::Query("SELECT side FROM whereami")]),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: the session did not move to NEW"));
        assert_eq!(
            moved,
            [
                "T",
                "D:new",
                "C:SELECT 1",
                "Z:I",
                "T",
                "D:marker",
                "C:SELECT 1"
            ],
            "{name}"
        );
        p
    })
    .await;
    let c = proxy.client().await;
    assert_eq!(scalar_i64(&c, "SELECT count(*) FROM t").await, 0);
}

/// The same exchanges with no rules, where pgshift parses only what may
/// change the session's state (or start a COPY).
#[tokio::test]
async fn protocol_corners_pass_through() {
    let db = fresh_db("corners_pass");
    pgshift_tests::psql_both(
        &db,
        "CREATE TABLE t (n int); CREATE TABLE u (n int); GRANT ALL ON t, u TO PUBLIC;",
    );
    let proxy = proxy_with(&db, "").await;
    same_transcripts(&db, proxy.addr, |_, p| async move { p }).await;
    let c = proxy.client().await;
    assert_eq!(scalar_i64(&c, "SELECT count(*) FROM t").await, 0);
}

/// A client that pipelines, shuts its side of the socket and reads on gets
/// every answer, the same as from Postgres, whose backend then sees the end
/// of the stream: what was synced is committed, an unsynced write is not.
#[tokio::test]
async fn half_closed_client_gets_every_answer() {
    use bytes::BytesMut;
    use pgshift_protocol::encode;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pipeline_then_half_close(
        addr: std::net::SocketAddr,
        db: &str,
        base: i32,
    ) -> Vec<String> {
        let (mut s, _) = pgshift_tests::raw::login(addr, db).await;
        let mut out = BytesMut::new();
        encode::query(&mut out, &format!("INSERT INTO h VALUES ({base} + 1)"));
        encode::query(&mut out, "SELECT 2");
        let extended_insert = |out: &mut BytesMut, n: i32| {
            let sql = format!("INSERT INTO h VALUES ({base} + {n})");
            encode::parse(out, "", &sql, &[]);
            encode::bind(out, "", "", &[], &[]);
            encode::execute(out, "", 0);
        };
        extended_insert(&mut out, 3);
        encode::sync(&mut out);
        extended_insert(&mut out, 4);
        s.write_all(&out).await.unwrap();
        s.shutdown().await.unwrap();
        let mut buf = BytesMut::new();
        let mut seen = Vec::new();
        loop {
            while let Some(f) = pgshift_protocol::decode_frame(&mut buf, 1 << 30).unwrap() {
                seen.push(match f.tag() {
                    b'C' => format!(
                        "C:{}",
                        String::from_utf8_lossy(&f.body()[..f.body().len() - 1])
                    ),
                    b'Z' => format!("Z:{}", f.body()[0] as char),
                    t => (t as char).to_string(),
                });
            }
            let n = tokio::time::timeout(Duration::from_secs(10), s.read_buf(&mut buf))
                .await
                .expect("the connection closes after the last answer")
                .unwrap();
            if n == 0 {
                assert!(buf.is_empty(), "a partial message before the end: {buf:?}");
                return seen;
            }
        }
    }

    let db = fresh_db("half_close");
    let proxy = proxy_with(&db, "").await;
    let c = proxy.client().await;
    c.batch_execute("CREATE TABLE h (n int)").await.unwrap();
    let direct = std::net::SocketAddr::from(([127, 0, 0, 1], old_and_new().old.port()));
    let want = pipeline_then_half_close(direct, &db, 0).await;
    let got = pipeline_then_half_close(proxy.addr, &db, 10).await;
    assert_eq!(got, want);
    assert_eq!(
        want,
        [
            "C:INSERT 0 1",
            "Z:I",
            "T",
            "D",
            "C:SELECT 1",
            "Z:I",
            "1",
            "2",
            "C:INSERT 0 1",
            "Z:I"
        ]
    );
    let rows = c.query("SELECT n FROM h ORDER BY n", &[]).await.unwrap();
    let rows: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        rows,
        [1, 3, 11, 13],
        "synced writes kept, the unsynced ones rolled back"
    );
}
