//! Graceful shutdown: stop accepting, let transactions finish, close idle
//! sessions, force the rest when the grace period runs out.

use std::time::{Duration, Instant};

use pgshift_tests::{fresh_db, proxy_with, url_old};

async fn wait_closed(c: &tokio_postgres::Client, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if c.is_closed() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn drain_lets_open_transactions_finish() {
    let db = fresh_db("drain");
    let proxy = proxy_with(&db, "limits: { shutdown_grace: 10s }\n").await;
    let busy = proxy.client().await;
    let idle = proxy.client().await;
    busy.batch_execute("CREATE TABLE t (i int); BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();

    proxy.inner().begin_shutdown();
    assert!(
        wait_closed(&idle, Duration::from_secs(3)).await,
        "idle session closed at once"
    );
    // No new sessions.
    let refused = tokio::time::timeout(
        Duration::from_secs(3),
        pgshift_tests::try_connect(&proxy.url()),
    )
    .await;
    assert!(
        matches!(refused, Ok(Err(_))),
        "new connections are refused while draining"
    );
    // The open transaction goes on and commits.
    busy.batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    busy.batch_execute("COMMIT").await.unwrap();
    assert!(
        wait_closed(&busy, Duration::from_secs(3)).await,
        "closed once idle"
    );

    let started = Instant::now();
    proxy.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(3));
    let direct = pgshift_tests::connect(&url_old(&db)).await;
    let n: i64 = direct
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "both inserts committed");
}

#[tokio::test]
async fn grace_period_ends_stuck_sessions() {
    let db = fresh_db("grace");
    let proxy = proxy_with(&db, "limits: { shutdown_grace: 500ms }\n").await;
    let stuck = proxy.client().await;
    stuck.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let started = Instant::now();
    proxy.inner().begin_shutdown();
    assert!(wait_closed(&stuck, Duration::from_secs(5)).await);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(4),
        "{took:?}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn backend_sessions_end_with_their_clients() {
    let db = fresh_db("idle_backends");
    let proxy = proxy_with(&db, "").await;
    let direct = pgshift_tests::connect(&url_old(&db)).await;
    let count = || async {
        let n: i64 = direct
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        n
    };
    let clients: Vec<_> = futures_util::future::join_all((0..5).map(|_| proxy.client())).await;
    assert_eq!(count().await, 5);
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(5);
    while count().await > 0 {
        assert!(
            Instant::now() < deadline,
            "backend sessions outlived their clients"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The keepalive timer of the established TCP connection from local port
/// `local` (to remote port `remote`, if given), from the kernel's table:
/// `Some(seconds until the next probe)` when keepalive is on, `None` when
/// no timer runs. Until the last data sent is acknowledged the kernel
/// shows the retransmission timer instead: waits (at most 5 s) for that.
async fn keepalive_timer(local: u16, remote: Option<u16>) -> Option<f64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match socket_timer(local, remote) {
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(line) => panic!("another timer runs: {line}"),
            Ok(t) => return t,
        }
    }
}

/// `tr` 2 is the socket timer, which on an established connection is the
/// keepalive timer, its expiry in 1/100 s; `Err` (the line) for another.
fn socket_timer(local: u16, remote: Option<u16>) -> Result<Option<f64>, String> {
    let table = std::fs::read_to_string("/proc/self/net/tcp").unwrap();
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next().unwrap(), 16).unwrap();
    let line = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f[3] == "01" && port(f[1]) == local && remote.is_none_or(|r| port(f[2]) == r))
        .unwrap_or_else(|| panic!("no established connection from port {local}:\n{table}"));
    let (tr, when) = line[5].split_once(':').unwrap();
    match tr {
        "00" => Ok(None),
        "02" => Ok(Some(u64::from_str_radix(when, 16).unwrap() as f64 / 100.0)),
        _ => Err(line.join(" ")),
    }
}

#[tokio::test]
async fn tcp_keepalive_on_client_and_backend_connections() {
    let db = fresh_db("keepalive");
    let old_port = pgshift_tests::old_and_new().old.port();
    for (setting, want) in [("7s", true), ("0s", false)] {
        let proxy = proxy_with(&db, &format!("limits: {{ tcp_keepalive: {setting} }}\n")).await;
        let c = proxy.client().await;
        let backend_port: i32 = c
            .query_one("SELECT inet_client_port()", &[])
            .await
            .unwrap()
            .get(0);
        let backend_port = u16::try_from(backend_port).unwrap();
        for (side, timer) in [
            ("client", keepalive_timer(proxy.addr.port(), None).await),
            (
                "backend",
                keepalive_timer(backend_port, Some(old_port)).await,
            ),
        ] {
            match (want, timer) {
                (true, Some(s)) => assert!((0.0..=7.0).contains(&s), "{side}: next probe in {s}s"),
                (false, None) => {}
                _ => panic!("tcp_keepalive {setting}: {side} connection's timer {timer:?}"),
            }
        }
    }
}
