//! Running pgbench (from the clusters' own Postgres installation) and
//! reading its report.

use std::path::PathBuf;
use std::process::Command;

use crate::{old_and_new, url_new, url_old, APP_PASSWORD};

/// A client program of the Postgres installation the clusters use.
pub fn pg_program(name: &str) -> PathBuf {
    let in_bin = old_and_new().old.bin_dir().join(name);
    if in_bin.exists() {
        in_bin
    } else {
        PathBuf::from(name)
    }
}

/// `pgbench -i -s 1` directly on both sides, so either can serve the
/// pgbench workload (and a mirror has the same data as its primary).
pub fn init_both(db: &str) {
    for url in [url_old(db), url_new(db)] {
        let out = Command::new(pg_program("pgbench"))
            .args(["-i", "-s", "1", "-q"])
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// What pgbench printed.
pub struct Report {
    pub text: String,
}

impl Report {
    /// (done, wanted) from "number of transactions actually processed".
    pub fn processed(&self) -> (u64, u64) {
        let line = self
            .text
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .unwrap_or_else(|| panic!("no processed line in:\n{}", self.text));
        let mut parts = line.split('/').map(|p| {
            p.split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        });
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }

    /// Failed transactions (pgbench 15+ prints the line; older ones abort
    /// the client instead, which makes the run fail).
    pub fn failed(&self) -> u64 {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix("number of failed transactions: "))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

/// Runs pgbench with `args` against `conninfo` off the runtime thread (the
/// proxy under test may share the test's runtime) and asserts it exited 0.
pub async fn run(conninfo: String, args: Vec<&'static str>) -> Report {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(pg_program("pgbench"))
            .env("PGPASSWORD", APP_PASSWORD)
            .args(&args)
            .arg(&conninfo)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
        Report { text }
    })
    .await
    .unwrap()
}
