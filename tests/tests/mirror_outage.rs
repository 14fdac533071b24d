//! NEW goes away in the middle of a mirrored pgbench run: clients notice
//! nothing, the mirror's losses are counted, sessions are marked diverged.
//! (Its own test binary: NEW stays down afterwards.)

use std::process::Command;
use std::time::Duration;

use pgshift_rules::config::BackendId;
use pgshift_tests::{fresh_db, old_and_new, proxy_with, url_new, url_old};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_stopped_mid_run_costs_clients_nothing() {
    let db = fresh_db("mirror_outage");
    let pgbench = old_and_new().old.bin_dir().join("pgbench");
    for url in [url_old(&db), url_new(&db)] {
        let out = Command::new(&pgbench)
            .args(["-i", "-s", "1", "-q"])
            .arg(&url)
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let proxy = proxy_with(&db, "defaults: { primary: old, mirror: new }\n").await;
    let conn = proxy.conninfo();
    let run = tokio::task::spawn_blocking(move || {
        Command::new(pgbench)
            .env("PGPASSWORD", pgshift_tests::APP_PASSWORD)
            .args(["-n", "-c", "4", "-j", "2", "-T", "5", "-M", "prepared"])
            .arg(conn)
            .output()
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Fast shutdown of NEW's postmaster: every mirror connection breaks and
    // reconnecting fails from here on.
    let pid = old_and_new().new.postmaster_pid().expect("NEW is running");
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGINT) }, 0);
    let out = run.await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let failed = text
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|r| r.split_whitespace().next())
        .map(|n| n.parse::<u64>().unwrap());
    assert!(failed.is_none_or(|f| f == 0), "{text}");
    assert!(
        text.contains("number of transactions actually processed"),
        "{text}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counters = proxy
        .inner()
        .shared()
        .mirroring
        .counters(BackendId::New)
        .snapshot();
    assert!(counters.dropped > 0, "{counters:?}");
    assert!(counters.applied > 0, "{counters:?}");
    assert!(!proxy.inner().shared().mirroring.diverged().is_empty());
}
