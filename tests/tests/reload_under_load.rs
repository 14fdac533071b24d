//! Reloads while clients are busy: no transaction is lost or fails, a
//! transaction never changes backend, and `rollback: true` written to the
//! file takes effect within 100 ms (SPEC guarantees 2, 3, 5).

use std::path::Path;
use std::time::{Duration, Instant};

use pgshift_tests::{
    base_yaml, fresh_db, mark_sides, pgbench, side_simple, url_new, url_old, APP_PASSWORD,
    SCRAM_AUTH,
};

fn parse(db: &str, extra: &str) -> pgshift_rules::config::Config {
    let yaml = format!("{}{SCRAM_AUTH}{extra}", base_yaml(db));
    pgshift_rules::config::parse_config(&yaml, &|_| None).unwrap()
}

async fn history(url: &str) -> i64 {
    pgshift_tests::connect(url)
        .await
        .query_one("SELECT count(*) FROM pgbench_history", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_reloads_under_pgbench_lose_no_transaction() {
    let db = fresh_db("reload_pgbench");
    pgbench::init_both(&db);
    // Reads of the accounts table alternate between OLD and NEW; TPC-B's
    // transactions start with an UPDATE (OLD by default) and stay there.
    let shifted = "rules:\n  - name: accounts-reads\n    match: { kind: [read], tables: [pgbench_accounts] }\n    primary: new\n";
    let proxy = pgshift::start(parse(&db, "")).await.unwrap();
    let conninfo = format!(
        "host=127.0.0.1 port={} user=app dbname={db}",
        proxy.local_addr().port()
    );
    let tpcb = tokio::spawn(pgbench::run(
        conninfo.clone(),
        vec!["-n", "-c", "4", "-j", "2", "-t", "300", "-M", "extended"],
    ));
    let reads = tokio::spawn(pgbench::run(
        conninfo,
        vec![
            "-n", "-S", "-c", "2", "-j", "1", "-t", "1500", "-M", "prepared",
        ],
    ));
    for i in 0..100 {
        let config = parse(&db, if i % 2 == 0 { shifted } else { "" });
        proxy.shared().install(config).unwrap();
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let (tpcb, reads) = (tpcb.await.unwrap(), reads.await.unwrap());
    assert_eq!(tpcb.processed(), (1200, 1200), "{}", tpcb.text);
    assert_eq!(tpcb.failed(), 0, "{}", tpcb.text);
    assert_eq!(reads.processed(), (3000, 3000), "{}", reads.text);
    assert_eq!(reads.failed(), 0, "{}", reads.text);
    assert!(proxy.shared().current().version >= 101);
    // Every TPC-B transaction ran whole on OLD.
    assert_eq!(history(&url_old(&db)).await, 1200);
    assert_eq!(history(&url_new(&db)).await, 0);
    proxy.force_shutdown();
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_written_to_the_file_takes_effect_within_100ms_under_load() {
    let db = fresh_db("reload_rollback");
    pgbench::init_both(&db);
    mark_sides(&db);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgshift.yaml");
    let everything_on_new = "defaults: { primary: new }\n";
    let yaml = format!("{}{SCRAM_AUTH}{everything_on_new}", base_yaml(&db));
    std::fs::write(&path, &yaml).unwrap();
    let config = pgshift_rules::config::parse_config(&yaml, &|_| None).unwrap();
    let proxy = pgshift::server::start_with(config, Some(path.clone()))
        .await
        .unwrap();
    let url = format!("postgres://app:{APP_PASSWORD}@{}/{db}", proxy.local_addr());
    let probe = pgshift_tests::connect(&url).await;
    assert_eq!(side_simple(&probe).await, "new");

    let conninfo = format!(
        "host=127.0.0.1 port={} user=app dbname={db}",
        proxy.local_addr().port()
    );
    let load = tokio::spawn(pgbench::run(
        conninfo,
        vec!["-n", "-c", "4", "-j", "2", "-T", "4", "-M", "extended"],
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let written = Instant::now();
    write_atomically(&path, &format!("{yaml}rollback: true\n"));
    // In force: the configuration every session's next transaction reads.
    let took = loop {
        if proxy.shared().current().config.rollback {
            break written.elapsed();
        }
        assert!(
            written.elapsed() < Duration::from_secs(5),
            "rollback never took effect"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    eprintln!("rollback in force {took:?} after the file was written (under pgbench load)");
    assert!(took < Duration::from_millis(100), "rollback took {took:?}");
    assert_eq!(
        side_simple(&probe).await,
        "old",
        "the next transaction runs on OLD"
    );
    let history_old_at_switch = history(&url_old(&db)).await;

    let load = load.await.unwrap();
    assert_eq!(load.failed(), 0, "{}", load.text);
    let (done, _) = load.processed();
    assert!(done > 0);
    // Transactions after the switch went to OLD; none were lost.
    let (old, new) = (history(&url_old(&db)).await, history(&url_new(&db)).await);
    assert!(
        old > history_old_at_switch,
        "transactions after the switch ran on OLD"
    );
    assert_eq!(
        (old + new) as u64,
        done,
        "every processed transaction is in one history"
    );
    proxy.force_shutdown();
}
