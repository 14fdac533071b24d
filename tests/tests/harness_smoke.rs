//! The test harness itself: both clusters come up, accept the logins the other
//! tests rely on, hand out separate databases, and clean up after themselves.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgshift_tests::{
    connect, fresh_db, old_and_new, try_connect, url_new, url_old, ClusterOptions, LocalCluster,
    APP_DB, APP_PASSWORD, APP_USER, PLAIN_USER, TRUST_USER,
};

async fn one_string(client: &tokio_postgres::Client, sql: &str) -> String {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .get(0)
}

#[tokio::test]
async fn clusters_accept_app_plain_and_trust_logins() {
    let pair = old_and_new();
    assert_ne!(pair.old.port(), pair.new.port());
    eprintln!(
        "old: port {} in {:?} ({:?}); new: port {} in {:?} ({:?})",
        pair.old.port(),
        pair.old.socket_dir(),
        pair.old.startup_time(),
        pair.new.port(),
        pair.new.socket_dir(),
        pair.new.startup_time(),
    );

    // App user with a password: SCRAM on OLD, MD5 on NEW.
    let old = connect(&pair.old.url(APP_USER, APP_PASSWORD)).await;
    let new = connect(&pair.new.url(APP_USER, APP_PASSWORD)).await;
    let old_version = one_string(&old, "SHOW server_version").await;
    let new_version = one_string(&new, "SHOW server_version").await;
    assert!(!old_version.is_empty());
    assert_eq!(
        old_version, new_version,
        "both clusters use the same binaries"
    );
    let enc = "SELECT current_setting('password_encryption')";
    assert_eq!(one_string(&old, enc).await, "scram-sha-256");
    assert_eq!(one_string(&new, enc).await, "md5");
    assert_eq!(one_string(&old, "SELECT current_database()").await, APP_DB);
    assert_eq!(one_string(&new, "SELECT current_user").await, APP_USER);

    // The stored verifiers really are of the two kinds.
    let stored = "SELECT CASE WHEN rolpassword LIKE 'SCRAM-SHA-256$%' THEN 'scram' \
                  WHEN rolpassword LIKE 'md5%' THEN 'md5' ELSE rolpassword END \
                  FROM pg_authid WHERE rolname = 'app'";
    assert_eq!(pair.old.psql("postgres", stored).unwrap().trim(), "scram");
    assert_eq!(pair.new.psql("postgres", stored).unwrap().trim(), "md5");

    // A wrong password is refused, so the app login is not trusted.
    for cluster in [&pair.old, &pair.new] {
        let err = try_connect(&cluster.url(APP_USER, "wrong"))
            .await
            .err()
            .unwrap_or_else(|| panic!("{}: wrong password accepted", cluster.name()));
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD),
            "{}: {err:?}",
            cluster.name()
        );
    }

    // plain_user (cleartext password) and trust_user (no password).
    for cluster in [&pair.old, &pair.new] {
        let plain = connect(&cluster.url(PLAIN_USER, APP_PASSWORD)).await;
        assert_eq!(one_string(&plain, "SELECT current_user").await, PLAIN_USER);
        let trust = connect(&cluster.url(TRUST_USER, "")).await;
        assert_eq!(one_string(&trust, "SELECT current_user").await, TRUST_USER);
    }
}

#[tokio::test]
async fn fresh_db_gives_separate_databases_on_both_clusters() {
    let a = fresh_db("smoke");
    let b = fresh_db("smoke");
    assert_ne!(a, b);
    for db in [&a, &b] {
        for url in [url_old(db), url_new(db)] {
            let client = connect(&url).await;
            assert_eq!(one_string(&client, "SELECT current_database()").await, *db);
            client
                .batch_execute("CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1)")
                .await
                .unwrap();
        }
    }
    // Owned by app, and the table went into each database separately.
    let owner = format!("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{a}'");
    assert_eq!(
        old_and_new().old.psql("postgres", &owner).unwrap().trim(),
        APP_USER
    );
    assert_eq!(
        old_and_new()
            .new
            .psql(&b, "SELECT count(*) FROM t")
            .unwrap()
            .trim(),
        "1"
    );

    // Odd prefixes are made safe.
    let odd = fresh_db("9 Odd-Name!");
    assert!(odd.starts_with("db_9_odd_name__"), "{odd}");
}

/// The long-lived processes (postgres, the reaper) share no pipe with this
/// process, except the reaper's stdin: otherwise the reaper would never see
/// end-of-file, and whoever waits on a pipe we inherited (cargo, a CI runner,
/// a shell) could wait for the postmaster too.
#[test]
fn postgres_and_reaper_inherit_no_pipes() {
    let pair = old_and_new();
    let our_pipes: Vec<PathBuf> = fds_of(std::process::id())
        .into_iter()
        .filter(|fd| fd.to_string_lossy().starts_with("pipe:"))
        .collect();
    for cluster in [&pair.old, &pair.new] {
        let reaper = cluster.reaper_pid().expect("a reaper");
        let reaper_stdin = std::fs::read_link(format!("/proc/{reaper}/fd/0")).unwrap();
        assert!(our_pipes.contains(&reaper_stdin), "{reaper_stdin:?}");
        assert_eq!(
            our_pipes.iter().filter(|p| **p == reaper_stdin).count(),
            1,
            "this process holds the write end of the reaper's stdin once"
        );
        let reaper_fds = fds_of(reaper);
        let shared: Vec<_> = reaper_fds
            .iter()
            .filter(|fd| our_pipes.contains(fd))
            .collect();
        assert_eq!(shared, [&reaper_stdin], "reaper of {}", cluster.name());

        let postmaster = cluster.postmaster_pid().expect("postmaster.pid");
        let mut pids = children_of(postmaster);
        pids.push(postmaster);
        for pid in pids {
            let shared: Vec<_> = fds_of(pid)
                .into_iter()
                .filter(|fd| our_pipes.contains(fd))
                .collect();
            assert!(
                shared.is_empty(),
                "postgres process {pid} of {} holds pipes of this process: {shared:?}",
                cluster.name()
            );
        }
    }
}

fn fds_of(pid: u32) -> Vec<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|entry| std::fs::read_link(entry.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn children_of(parent: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may contain spaces, so split after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            children.push(pid);
        }
    }
    children
}

const REAPER_CHILD_ENV: &str = "PGSHIFT_TEST_REAPER_CHILD";

/// Kills (SIGKILL) a process that owns a running cluster and checks the
/// reaper stops the server and removes its directory.
#[test]
fn reaper_cleans_up_after_sigkill() {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "reaper_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(REAPER_CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut cluster = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        // libtest prints "test reaper_child ... " in front, on the same line.
        if let Some((_, rest)) = line.split_once("CLUSTER ") {
            let (pid, dir) = rest.split_once(' ').unwrap();
            cluster = Some((pid.parse::<u32>().unwrap(), PathBuf::from(dir)));
            break;
        }
    }
    let (postmaster, dir) = cluster.expect("the child reported its cluster");
    assert!(dir.exists() && Path::new(&format!("/proc/{postmaster}")).exists());
    child.kill().unwrap();
    child.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    while (dir.exists() || Path::new(&format!("/proc/{postmaster}")).exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!dir.exists(), "{dir:?} still exists 30s after SIGKILL");
    assert!(
        !Path::new(&format!("/proc/{postmaster}")).exists(),
        "postmaster {postmaster} still runs 30s after SIGKILL"
    );
}

/// Helper process for [`reaper_cleans_up_after_sigkill`]; does nothing when run
/// on its own.
#[test]
#[ignore = "helper process for reaper_cleans_up_after_sigkill"]
fn reaper_child() {
    if std::env::var_os(REAPER_CHILD_ENV).is_none() {
        return;
    }
    let cluster = LocalCluster::start(ClusterOptions {
        name: "reaped".to_string(),
        ..ClusterOptions::default()
    })
    .unwrap();
    println!(
        "CLUSTER {} {}",
        cluster.postmaster_pid().unwrap(),
        cluster.socket_dir().display()
    );
    std::thread::sleep(Duration::from_secs(120));
    drop(cluster);
}
