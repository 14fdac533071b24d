//! Shared harness for end-to-end tests against real Postgres.
//!
//! Every test binary (`tests/tests/*.rs`) gets one pair of throwaway clusters,
//! started on first use by [`old_and_new`] and shared by all its tests, which
//! run in parallel threads. Tests keep out of each other's way by working in
//! their own database from [`fresh_db`].
//!
//! - OLD stores passwords as SCRAM-SHA-256 and NEW as MD5, so both backend
//!   authentication paths get exercised.
//! - On both, the app user is [`APP_USER`] / [`APP_PASSWORD`]; the
//!   superuser `postgres` is trusted; [`TRUST_USER`] logs in over TCP without a
//!   password and [`PLAIN_USER`] with a cleartext password (also [`APP_PASSWORD`]);
//!   both are members of the app role, so they can use what the app user made.
//! - Teardown: the clusters live in a `static` that is never dropped; each has
//!   a reaper process that stops it and removes its directory when the test
//!   binary exits, however it exits.
//!
//! Set `PGSHIFT_PG_BIN` to pick the Postgres binaries (default: `initdb` on
//! PATH, else the newest `/usr/lib/postgresql/*/bin`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

pub use pgshift::cluster::{ClusterOptions, ClusterPair, LocalCluster, PLAIN_USER, TRUST_USER};

/// The app role on both clusters.
pub const APP_USER: &str = "app";
/// The password of [`APP_USER`] (and of [`TRUST_USER`] / [`PLAIN_USER`]).
pub const APP_PASSWORD: &str = pgshift::cluster::PAIR_APP_PASSWORD;
/// The app database created on both clusters at start-up.
pub const APP_DB: &str = "app";

static CLUSTERS: OnceLock<Result<ClusterPair, String>> = OnceLock::new();

/// The OLD and NEW clusters of this test binary, started on first call.
///
/// Panics, with the reason (including the server log tail), when Postgres
/// cannot be started; every later call panics with the same message rather than
/// trying again.
pub fn old_and_new() -> &'static ClusterPair {
    let clusters =
        CLUSTERS.get_or_init(|| ClusterPair::start_pair().map_err(|err| format!("{err:#}")));
    match clusters {
        Ok(pair) => pair,
        Err(err) => panic!(
            "the test harness could not start its throwaway Postgres clusters:\n{err}\n\
             (these tests need the PostgreSQL server programs: `apt-get install postgresql`, \
             or set PGSHIFT_PG_BIN)"
        ),
    }
}

/// Creates a database named after `prefix` plus a counter, owned by
/// [`APP_USER`], on BOTH clusters, and returns its name. `prefix` is lowered
/// and anything but `[a-z0-9_]` becomes `_`.
pub fn fresh_db(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let pair = old_and_new();
    let mut base: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if !base.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        base.insert_str(0, "db_");
    }
    let name = format!("{base}_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    std::thread::scope(|s| {
        let old = s.spawn(|| pair.old.create_database(&name));
        let new = s.spawn(|| pair.new.create_database(&name));
        for (side, handle) in [("OLD", old), ("NEW", new)] {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(err)) => panic!("creating database {name} on {side}: {err:#}"),
                Err(_) => panic!("creating database {name} on {side}: thread panicked"),
            }
        }
    });
    name
}

/// URL for a direct connection to database `db` on OLD as the app user.
pub fn url_old(db: &str) -> String {
    old_and_new().old.app_url(db)
}

/// URL for a direct connection to database `db` on NEW as the app user.
pub fn url_new(db: &str) -> String {
    old_and_new().new.app_url(db)
}

/// Connects with tokio-postgres (no TLS) and spawns the connection task on the
/// current runtime. Panics if the connection fails.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    try_connect(url)
        .await
        .unwrap_or_else(|err| panic!("connecting to {url}: {err}"))
}

/// [`connect`] that returns the error instead of panicking.
pub async fn try_connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            eprintln!("tokio-postgres connection error: {err}");
        }
    });
    Ok(client)
}

/// Runs `sql` (as the superuser) in database `db` on OLD and on NEW.
pub fn psql_both(db: &str, sql: &str) {
    for c in [&old_and_new().old, &old_and_new().new] {
        c.psql(db, sql)
            .unwrap_or_else(|e| panic!("{} on {}: {e:#}", sql, c.name()));
    }
}

/// A loopback port free right now (for a process that must be told its
/// port in advance; in-process servers bind port 0 instead).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub mod http;
pub mod pgbench;
mod proxy;
pub mod raw;
pub use proxy::{
    base_yaml, mark_sides, proxy_from_file, proxy_with, proxy_with_yaml, side, side_simple,
    TestProxy, SCRAM_AUTH, TRUST_AUTH,
};

/// The built `pgshift` binary: `$PGSHIFT_BIN`, else the one `cargo test
/// --workspace` builds next to the test executables (the proxy crate's own
/// `tests/binary.rs` makes cargo build it), else built here on demand.
/// Running only this crate's tests after changing the proxy? Build the
/// binary first (`cargo build -p pgshift`) or run the whole workspace.
pub fn pgshift_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("PGSHIFT_BIN") {
        return p.into();
    }
    static BUILT: OnceLock<std::path::PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test executable path");
            // target/<profile>/deps/<test> -> target/<profile>/pgshift
            let profile_dir = exe
                .parent()
                .and_then(|d| d.parent())
                .expect("target layout");
            let bin = profile_dir.join("pgshift");
            if bin.exists() {
                return bin;
            }
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = std::process::Command::new(cargo);
            cmd.args(["build", "-p", "pgshift", "--bin", "pgshift"]);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("running cargo build");
            assert!(status.success(), "cargo build -p pgshift failed");
            assert!(bin.exists(), "{} missing after build", bin.display());
            bin
        })
        .clone()
}
