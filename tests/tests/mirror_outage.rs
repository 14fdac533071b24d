//! NEW goes away in the middle of a mirrored pgbench run: clients notice
//! nothing, the mirror's losses are counted, sessions are marked diverged.
//! (Its own test binary: NEW stays down afterwards.)

use std::time::Duration;

use pgshift_rules::config::BackendId;
use pgshift_tests::{fresh_db, old_and_new, pgbench, proxy_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_stopped_mid_run_costs_clients_nothing() {
    let db = fresh_db("mirror_outage");
    pgbench::init_both(&db);
    let proxy = proxy_with(&db, "defaults: { primary: old, mirror: new }\n").await;
    let conn = proxy.conninfo();
    let run = tokio::spawn(pgbench::run(
        conn,
        vec!["-n", "-c", "4", "-j", "2", "-T", "5", "-M", "prepared"],
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Fast shutdown of NEW's postmaster: every mirror connection breaks and
    // reconnecting fails from here on.
    let pid = old_and_new().new.postmaster_pid().expect("NEW is running");
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGINT) }, 0);
    let report = run.await.unwrap();
    assert_eq!(report.failed(), 0, "{}", report.text);
    assert!(report.processed().0 > 0, "{}", report.text);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counters = proxy.mirror_counters(BackendId::New);
    assert!(counters.dropped > 0, "{counters:?}");
    assert!(counters.applied > 0, "{counters:?}");
    // The sessions have ended (and left the list of diverged sessions), but
    // they were counted.
    assert!(proxy.inner().shared().mirroring.diverged_total() > 0);
}
