//! A client that stops reading gets backpressure, not a proxy that buffers
//! for it: pgshift's memory stays flat while the backend waits, and
//! nothing is lost once the client reads again, even after it sent
//! Terminate. Each test runs the same client against OLD directly first,
//! as the reference. (Its own test binary, so that the process's memory is
//! pgshift's and this test's alone.)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pgshift_protocol::encode;
use pgshift_tests::{fresh_db, old_and_new, proxy_with, raw};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

fn direct() -> SocketAddr {
    ([127, 0, 0, 1], old_and_new().old.port()).into()
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// Growth allowed while the client is not reading: socket-sized buffers,
/// not the result.
const SLACK: u64 = 48 << 20;

/// What a client read before the connection closed (or went 10 s silent).
#[derive(Debug, PartialEq)]
struct Answers {
    rows: u64,
    ready: u64,
    errors: u64,
}

async fn read_until_closed(s: &mut OwnedReadHalf) -> Answers {
    let mut buf = BytesMut::with_capacity(1 << 16);
    let mut a = Answers {
        rows: 0,
        ready: 0,
        errors: 0,
    };
    loop {
        while let Some(f) = pgshift_protocol::decode_frame(&mut buf, 1 << 30).unwrap() {
            match f.tag() {
                b'D' => a.rows += 1,
                b'Z' => a.ready += 1,
                b'E' => a.errors += 1,
                _ => {}
            }
        }
        match tokio::time::timeout(Duration::from_secs(10), s.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return a,
        }
    }
}

async fn terminate(wr: &mut OwnedWriteHalf) {
    let mut bye = BytesMut::new();
    encode::terminate(&mut bye);
    wr.write_all(&bye).await.unwrap();
}

/// A 400 MB result for a client that reads nothing for 3 s.
#[tokio::test]
async fn large_result_for_a_client_that_stops_reading() {
    let db = fresh_db("slow_reader");
    let proxy = proxy_with(&db, "").await;
    for (via, addr) in [("direct", direct()), ("pgshift", proxy.addr)] {
        large_result(via, addr, &db).await;
    }
}

async fn large_result(via: &str, addr: SocketAddr, db: &str) {
    let (s, _) = raw::login(addr, db).await;
    let (mut rd, mut wr) = s.into_split();
    let before = rss();
    let mut out = BytesMut::new();
    encode::query(
        &mut out,
        "SELECT repeat('x', 1000) FROM generate_series(1, 400000)",
    );
    wr.write_all(&out).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let grown = rss().saturating_sub(before);
    assert!(
        grown < SLACK,
        "{via}: grew by {} MiB holding a result for a client that does not read",
        grown >> 20
    );
    // Leaving with the answer still owed: Postgres sends all of it before
    // it reads the Terminate, and so must pgshift.
    terminate(&mut wr).await;
    let started = Instant::now();
    let got = read_until_closed(&mut rd).await;
    assert_eq!(
        got,
        Answers {
            rows: 400_000,
            ready: 1,
            errors: 0
        },
        "{via}"
    );
    assert!(started.elapsed() < Duration::from_secs(60), "{via}");
}

/// A client that pipelines queries without reading any answer: once the
/// sockets are full everyone waits, memory stays flat, and when the client
/// reads again every query gets its answer.
#[tokio::test]
async fn pipelining_client_that_reads_nothing() {
    let db = fresh_db("slow_pipeliner");
    let proxy = proxy_with(&db, "").await;
    for (via, addr) in [("direct", direct()), ("pgshift", proxy.addr)] {
        pipeline_unread(via, addr, &db).await;
    }
}

async fn pipeline_unread(via: &str, addr: SocketAddr, db: &str) {
    let (s, _) = raw::login(addr, db).await;
    let (mut rd, mut wr) = s.into_split();
    let mut chunk = BytesMut::new();
    // Each query's answer (a 2 KB row) is larger than the query, so the
    // answers fill the sockets back to the client first.
    const PER_CHUNK: usize = 100;
    for _ in 0..PER_CHUNK {
        encode::query(&mut chunk, "SELECT repeat('y', 2000)");
    }
    let chunk = chunk.freeze();
    let before = rss();
    let writer = tokio::spawn(async move {
        let (mut sent, mut at) = (0usize, 0usize);
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            // `write` either writes some bytes or, cancelled by the
            // timeout, none: the stream stays well formed.
            match tokio::time::timeout(Duration::from_millis(200), wr.write(&chunk[at..])).await {
                Ok(n) => {
                    at += n.unwrap();
                    if at == chunk.len() {
                        sent += PER_CHUNK;
                        at = 0;
                    }
                }
                Err(_) => {
                    // Held back. The rest of a chunk begun goes once the
                    // client reads again.
                    if at > 0 {
                        wr.write_all(&chunk[at..]).await.unwrap();
                        sent += PER_CHUNK;
                    }
                    return (sent, true, wr);
                }
            }
        }
        (sent, false, wr)
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    let grown = rss().saturating_sub(before);
    assert!(
        grown < SLACK,
        "{via}: grew by {} MiB for a client that does not read",
        grown >> 20
    );
    // Reading lets the blocked writer finish its last chunk.
    let reader = tokio::spawn(async move { read_until_closed(&mut rd).await });
    let (sent, blocked, mut wr) = writer.await.unwrap();
    assert!(
        blocked,
        "{via}: the client's writes were never held back ({sent} queries sent)"
    );
    terminate(&mut wr).await;
    let sent = sent as u64;
    assert_eq!(
        reader.await.unwrap(),
        Answers {
            rows: sent,
            ready: sent,
            errors: 0
        },
        "{via}"
    );
}
