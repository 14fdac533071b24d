//! Clients that leave at every awkward moment, through a mirroring proxy:
//! afterwards nothing is left behind (sessions, backend connections, file
//! descriptors), nothing the client did not commit stuck on either
//! backend, everything it did commit reached both, and the proxy serves on.
//! In a file of its own: it counts the test process's descriptors, which
//! a test running beside it would disturb.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use pgshift_protocol::encode;
use pgshift_rules::config::BackendId;
use pgshift_tests::{fresh_db, proxy_with, psql_both, raw, url_new, url_old, TestProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KINDS: usize = 13;
const SESSIONS: usize = KINDS * 14;
const AT_ONCE: usize = 22;

/// How session `i` ends (`i % KINDS`).
async fn session(proxy: &TestProxy, i: usize) {
    let id = i as i32;
    match i % KINDS {
        // Commits a row, then logs out properly: the one row that stays.
        0 => {
            let c = proxy.client().await;
            c.execute("INSERT INTO churn VALUES ($1, 'kept')", &[&id])
                .await
                .unwrap();
        }
        // Leaves inside a transaction that wrote.
        1 => {
            let (mut s, _) = raw::login(proxy.addr, &proxy.db).await;
            let sql = format!("BEGIN; INSERT INTO churn VALUES ({id}, 'abandoned')");
            send(&mut s, |b| encode::query(b, &sql)).await;
            until_ready(&mut s).await;
        }
        // Leaves in the middle of a large result.
        2 => {
            let (mut s, _) = raw::login(proxy.addr, &proxy.db).await;
            send(&mut s, |b| {
                encode::query(
                    b,
                    "SELECT g, repeat('x', 100) FROM generate_series(1, 200000) g",
                )
            })
            .await;
            let mut got = 0;
            let mut chunk = vec![0u8; 16 * 1024];
            while got < 64 * 1024 {
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed before the rows came");
                got += n;
            }
        }
        // Leaves while its statement runs.
        3 => {
            let (mut s, _) = raw::login(proxy.addr, &proxy.db).await;
            send(&mut s, |b| encode::query(b, "SELECT pg_sleep(2)")).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Leaves in the middle of a COPY FROM STDIN.
        4 => {
            copying(proxy, id, "copied", |_| {}).await;
        }
        // Leaves halfway through a message.
        5 => {
            let (mut s, _) = raw::login(proxy.addr, &proxy.db).await;
            let mut b = BytesMut::new();
            encode::query(&mut b, "SELECT 1");
            s.write_all(&b[..4]).await.unwrap();
        }
        // Leaves halfway through its startup packet.
        6 => {
            let mut s = TcpStream::connect(proxy.addr).await.unwrap();
            s.write_all(&[0, 0, 0, 40, 0, 3]).await.unwrap();
        }
        // Leaves with a write sent but never synced.
        7 => {
            let _s = unsynced(proxy, id, "unsynced", |_| {}).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Leaves right after BEGIN, which pgshift holds back until the
        // transaction's first statement picks a backend.
        9 => {
            let (mut s, _) = raw::login(proxy.addr, &proxy.db).await;
            send(&mut s, |b| encode::query(b, "BEGIN")).await;
            until_ready(&mut s).await;
        }
        // Pipelines far more than it reads, then leaves.
        10 => {
            let (mut s, _) = raw::login(proxy.addr, &proxy.db).await;
            send(&mut s, |b| {
                for _ in 0..500 {
                    encode::query(b, "SELECT repeat('x', 20000)");
                }
            })
            .await;
        }
        // Says Terminate in the middle of a COPY FROM STDIN.
        11 => {
            copying(proxy, id, "terminated", encode::terminate).await;
        }
        // Says Terminate after a write sent but never synced.
        12 => {
            unsynced(proxy, id, "terminated unsynced", encode::terminate).await;
        }
        // Cancels its statement, then leaves without a Terminate.
        _ => {
            let (mut s, _) = raw::login(proxy.addr, &proxy.db).await;
            let c = proxy.client().await;
            let token = c.cancel_token();
            let mut sleeper = tokio::spawn(async move {
                let r = c.simple_query("SELECT pg_sleep(30)").await;
                (c, r)
            });
            // A cancel that lands before the statement starts is ignored
            // (by Postgres too): sent again until it takes.
            let deadline = Instant::now() + Duration::from_secs(20);
            let (c, r) = loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                token.cancel_query(tokio_postgres::NoTls).await.unwrap();
                if let Ok(done) =
                    tokio::time::timeout(Duration::from_millis(500), &mut sleeper).await
                {
                    break done.unwrap();
                }
                assert!(
                    Instant::now() < deadline,
                    "the cancelled statement returned"
                );
            };
            let e = r.expect_err("pg_sleep(30) was cancelled");
            assert_eq!(
                e.code(),
                Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
            );
            drop(c);
            send(&mut s, |b| encode::query(b, "SELECT 1")).await;
        }
    }
}

/// Starts a COPY FROM STDIN, sends one row and then `then`'s messages, and
/// returns the connection (dropped by the caller: closed).
async fn copying(
    proxy: &TestProxy,
    id: i32,
    note: &str,
    then: impl FnOnce(&mut BytesMut),
) -> TcpStream {
    let (mut s, _) = raw::login(proxy.addr, &proxy.db).await;
    send(&mut s, |b| encode::query(b, "COPY churn FROM STDIN")).await;
    let mut buf = BytesMut::new();
    while raw::read_frame(&mut s, &mut buf).await.tag() != b'G' {}
    let row = format!("{id}\t{note}\n");
    send(&mut s, |b| {
        encode::frame(b, b'd', |b| b.extend_from_slice(row.as_bytes()));
        then(b);
    })
    .await;
    s
}

/// Sends an INSERT as Parse, Bind and Execute without a Sync, then
/// `then`'s messages, and returns the connection.
async fn unsynced(
    proxy: &TestProxy,
    id: i32,
    note: &str,
    then: impl FnOnce(&mut BytesMut),
) -> TcpStream {
    let (mut s, _) = raw::login(proxy.addr, &proxy.db).await;
    let sql = format!("INSERT INTO churn VALUES ({id}, '{note}')");
    send(&mut s, |b| {
        encode::parse(b, "", &sql, &[]);
        encode::bind(b, "", "", &[], &[]);
        encode::execute(b, "", 0);
        then(b);
    })
    .await;
    s
}

async fn send(s: &mut TcpStream, build: impl FnOnce(&mut BytesMut)) {
    let mut b = BytesMut::new();
    build(&mut b);
    s.write_all(&b).await.unwrap();
}

async fn until_ready(s: &mut TcpStream) {
    let mut buf = BytesMut::new();
    loop {
        let f = raw::read_frame(s, &mut buf).await;
        assert_ne!(f.tag(), b'E', "{:?}", String::from_utf8_lossy(f.body()));
        if f.tag() == b'Z' {
            return;
        }
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Waits up to `within` for `done`, else fails with `what` and the last value.
async fn eventually<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> F,
    done: impl Fn(&T) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        let v = probe().await;
        if done(&v) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still {v:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Connections to `db` on OLD and on NEW, other than the one counting.
async fn backend_connections(db: &str) -> [i64; 2] {
    let mut n = [0; 2];
    for (slot, url) in [url_old(db), url_new(db)].iter().enumerate() {
        let c = pgshift_tests::connect(url).await;
        n[slot] = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    }
    n
}

async fn rows(url: &str) -> Vec<(i32, String)> {
    let c = pgshift_tests::connect(url).await;
    c.query("SELECT id, note FROM churn ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn settled(proxy: &TestProxy) {
    let shared = proxy.inner().shared();
    eventually(
        "sessions open in the proxy",
        Duration::from_secs(15),
        || async { shared.telemetry.sessions() },
        |n| *n == 0,
    )
    .await;
    eventually(
        "backend connections left behind [OLD, NEW]",
        Duration::from_secs(20),
        || backend_connections(&proxy.db),
        |n| *n == [0, 0],
    )
    .await;
    proxy.mirrors_drained().await;
}

/// Both mirror modes, one after the other (the descriptor count needs the
/// process to itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_leaving_at_any_moment_leave_nothing_behind() {
    const MIRRORED: &str = "defaults: { primary: old, mirror: new, compare: true }\n";
    churn(MIRRORED).await;
    churn(&format!(
        "{MIRRORED}mirror: {{ mode: sync, on_mirror_error: fail }}\n"
    ))
    .await;
}

async fn churn(extra_yaml: &str) {
    let db = fresh_db("churn");
    psql_both(
        &db,
        "CREATE TABLE churn (id int PRIMARY KEY, note text); GRANT ALL ON churn TO PUBLIC;",
    );
    let proxy = proxy_with(&db, extra_yaml).await;

    // One round of every kind first, so that what the proxy opens once
    // (mirror threads, pools) is open before the descriptors are counted.
    for i in 0..KINDS {
        session(&proxy, SESSIONS + i).await;
    }
    settled(&proxy).await;
    let fds_before = open_fds();

    let started = Instant::now();
    for wave in (0..SESSIONS).collect::<Vec<_>>().chunks(AT_ONCE) {
        let runs = wave.iter().map(|&i| session(&proxy, i));
        futures_util::future::join_all(runs).await;
    }
    settled(&proxy).await;
    eprintln!(
        "{extra_yaml:?}: {SESSIONS} sessions in {:?}; descriptors before {fds_before}, after {}",
        started.elapsed(),
        open_fds()
    );

    // Only what was committed, on both sides.
    let kept: Vec<(i32, String)> = (0..SESSIONS + KINDS)
        .filter(|i| i % KINDS == 0)
        .map(|i| (i as i32, "kept".to_owned()))
        .collect();
    assert_eq!(rows(&url_old(&db)).await, kept, "OLD");
    assert_eq!(rows(&url_new(&db)).await, kept, "NEW");

    let mirror = proxy.mirror_counters(BackendId::New);
    assert_eq!(mirror.dropped, 0, "{mirror:?}");
    assert_eq!(mirror.mismatched, 0, "{mirror:?}");
    // The checking clients' sockets close as their tasks see the drop.
    eventually(
        &format!("open descriptors (before the churn: {fds_before})"),
        Duration::from_secs(5),
        || async { open_fds() },
        |n| *n <= fds_before,
    )
    .await;

    let c = proxy.client().await;
    let v: i32 = c.query_one("SELECT 41 + 1", &[]).await.unwrap().get(0);
    assert_eq!(v, 42);
    drop(c);
    settled(&proxy).await;
    let started = Instant::now();
    proxy.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
}
