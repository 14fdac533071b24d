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
