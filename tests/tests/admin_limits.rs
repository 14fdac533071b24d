//! The admin port cannot be used to exhaust the process's file
//! descriptors: it accepts at most 64 connections at once and closes one
//! idle for 15 s. In a file of its own: it counts the test process's
//! descriptors, which a test running beside it would disturb.

use std::time::{Duration, Instant};

use pgshift_tests::{base_yaml, fresh_db, http, proxy_with_yaml, SCRAM_AUTH};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const SILENT: usize = 100;
const MAX_CONNECTIONS: usize = 64;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_admin_connections_are_bounded_and_closed() {
    let db = fresh_db("admin_limits");
    let yaml = format!("{}{SCRAM_AUTH}admin: 127.0.0.1:0\n", base_yaml(&db));
    let proxy = proxy_with_yaml(&db, &yaml).await;
    let admin = proxy.admin();
    // Served, and the connection closed, before counting.
    let (code, _) = http::get(admin, "/status").await;
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = open_fds();

    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..SILENT {
        silent.push(TcpStream::connect(admin).await.unwrap());
    }
    // Each connection is one descriptor here; the proxy's side of those it
    // accepted are the rest.
    let accepted = || open_fds() - before - SILENT;
    let deadline = Instant::now() + Duration::from_secs(5);
    while accepted() < MAX_CONNECTIONS {
        assert!(Instant::now() < deadline, "only {} accepted", accepted());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        accepted(),
        MAX_CONNECTIONS,
        "more admin connections than the bound"
    );

    // Each is closed once idle: the first 64 after 15 s; the rest, accepted
    // then, 15 s later.
    let closes = silent.into_iter().map(|mut s| async move {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(24), s.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => Some(opened.elapsed()),
            Ok(Ok(_)) => panic!("the admin server sent something unasked"),
            Err(_) => None,
        }
    });
    let closed = futures_util::future::join_all(closes).await;
    let mut took: Vec<Duration> = closed.iter().flatten().copied().collect();
    took.sort();
    eprintln!(
        "{} silent admin connections closed after {:?} to {:?}",
        took.len(),
        took.first(),
        took.last()
    );
    assert_eq!(took.len(), MAX_CONNECTIONS, "closed within 24 s");
    assert!(
        took[0] >= Duration::from_millis(14_500),
        "closed before its idle time: {:?}",
        took[0]
    );

    let (code, _) = http::get(admin, "/status").await;
    assert_eq!(code, 200, "served again");
}
