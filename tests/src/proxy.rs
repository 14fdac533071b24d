//! pgshift in front of the shared clusters, one proxy per test.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::{old_and_new, APP_PASSWORD, APP_USER};

/// A pgshift serving on a free loopback port inside the test's runtime.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub db: String,
    proxy: Option<pgshift::Proxy>,
    /// The file the config was read from, for proxies that reload it.
    config_file: Option<(tempfile::TempDir, PathBuf)>,
}

impl TestProxy {
    /// URL for the app user through the proxy.
    pub fn url(&self) -> String {
        self.url_as(APP_USER, APP_PASSWORD)
    }

    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("postgres://{user}:{password}@{}/{}", self.addr, self.db)
    }

    /// A libpq-style keyword string, for psql and pgbench.
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={} user={APP_USER} password={APP_PASSWORD} dbname={}",
            self.addr.ip(),
            self.addr.port(),
            self.db
        )
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        crate::connect(&self.url()).await
    }

    pub fn inner(&self) -> &pgshift::Proxy {
        self.proxy.as_ref().expect("proxy is running")
    }

    /// The mirror counters of backend `b` now.
    pub fn mirror_counters(
        &self,
        b: pgshift_rules::config::BackendId,
    ) -> pgshift::mirror::CountersSnapshot {
        self.inner().shared().mirroring.counters(b).snapshot()
    }

    /// Waits (at most 30 s, then fails the test) until both mirror queues
    /// are empty, then a moment more for the last comparison to be
    /// recorded after its statement was applied.
    pub async fn mirrors_drained(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        for &b in pgshift_rules::config::BackendId::ALL {
            let c = self.inner().shared().mirroring.counters(b);
            while c.depth.load(std::sync::atomic::Ordering::Acquire) > 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "mirror queue of {b} did not drain"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    /// The admin HTTP address; the config must have `admin:`.
    pub fn admin(&self) -> SocketAddr {
        self.inner()
            .admin_addr()
            .expect("the test config has no admin: key")
    }

    /// Replaces the config file (see [`proxy_from_file`]) in one atomic
    /// rename, so the file watcher sees one change and reloads it once.
    pub fn rewrite_config(&self, yaml: &str) {
        let (dir, path) = self
            .config_file
            .as_ref()
            .expect("this proxy was not started from a file");
        let next = dir.path().join("pgshift.yaml.next");
        std::fs::write(&next, yaml).expect("writing the config file");
        std::fs::rename(&next, path).expect("renaming the config file into place");
    }

    /// Graceful shutdown, waiting for sessions as the config's grace allows.
    pub async fn shutdown(mut self) {
        if let Some(p) = self.proxy.take() {
            p.shutdown().await;
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(p) = self.proxy.take() {
            p.force_shutdown();
        }
    }
}

/// The YAML every test proxy starts from: both backends on database `db`,
/// SCRAM for the app user, no TLS to the backends (the clusters have none).
pub fn base_yaml(db: &str) -> String {
    let pair = old_and_new();
    format!(
        "listen: 127.0.0.1:0
backends:
  old: {{ url: \"{old}\", tls: disable }}
  new: {{ url: \"{new}\", tls: disable }}
",
        old = pair.old.app_url(db),
        new = pair.new.app_url(db),
    )
}

pub const SCRAM_AUTH: &str = "auth:
  method: scram-sha-256
  users:
    - { name: app, password: \"app-secret\" }
";

/// pgshift on database `db` with SCRAM client auth plus `extra` top-level
/// YAML (limits, tls, defaults, rules ...).
pub async fn proxy_with(db: &str, extra: &str) -> TestProxy {
    proxy_with_yaml(db, &format!("{}{SCRAM_AUTH}{extra}", base_yaml(db))).await
}

/// pgshift with exactly this YAML (see [`base_yaml`]).
pub async fn proxy_with_yaml(db: &str, yaml: &str) -> TestProxy {
    pgshift::logging::init_with_default(pgshift::logging::Format::Text, "warn");
    let config = pgshift_rules::config::parse_config(yaml, &|k| std::env::var(k).ok())
        .unwrap_or_else(|e| panic!("test config is invalid:\n{e}\n---\n{yaml}"));
    started(db, pgshift::start(config).await, None)
}

fn started(
    db: &str,
    proxy: anyhow::Result<pgshift::Proxy>,
    config_file: Option<(tempfile::TempDir, PathBuf)>,
) -> TestProxy {
    let proxy = proxy.unwrap_or_else(|e| panic!("starting pgshift: {e:#}"));
    TestProxy {
        addr: proxy.local_addr(),
        db: db.to_owned(),
        proxy: Some(proxy),
        config_file,
    }
}

/// pgshift with exactly this YAML, read from a file so that it can be
/// reloaded (`POST /reload`, [`TestProxy::rewrite_config`]).
pub async fn proxy_from_file(db: &str, yaml: &str) -> TestProxy {
    pgshift::logging::init_with_default(pgshift::logging::Format::Text, "warn");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("pgshift.yaml");
    std::fs::write(&path, yaml).expect("writing the config file");
    let config = pgshift::config_file::load(&path)
        .unwrap_or_else(|e| panic!("test config is invalid:\n{e}\n---\n{yaml}"));
    let proxy = pgshift::server::start_with(config, Some(path.clone())).await;
    started(db, proxy, Some((dir, path)))
}

/// Gives database `db` a table `whereami(side text)` holding 'old' on OLD
/// and 'new' on NEW, so a query through the proxy can tell where it went.
pub fn mark_sides(db: &str) {
    let pair = old_and_new();
    for (c, side) in [(&pair.old, "old"), (&pair.new, "new")] {
        c.psql(
            db,
            &format!(
                "CREATE TABLE whereami (side text); INSERT INTO whereami VALUES ('{side}');
                 GRANT ALL ON whereami TO PUBLIC;"
            ),
        )
        .unwrap_or_else(|e| panic!("marking {side}: {e:#}"));
    }
}

/// Which backend answered: reads `whereami` through `client`.
pub async fn side(client: &impl tokio_postgres::GenericClient) -> String {
    client
        .query_one("SELECT side FROM whereami", &[])
        .await
        .unwrap_or_else(|e| panic!("SELECT side FROM whereami: {e}"))
        .get(0)
}

/// [`side`] over the simple protocol.
pub async fn side_simple(client: &tokio_postgres::Client) -> String {
    let msgs = client
        .simple_query("SELECT side FROM whereami")
        .await
        .unwrap_or_else(|e| panic!("SELECT side FROM whereami: {e}"));
    msgs.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a row")
}

/// Trust authentication for tests that open many sessions.
pub const TRUST_AUTH: &str = "auth: { method: trust }\n";
