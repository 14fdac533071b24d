//! `pgshift demo`: two throwaway clusters, pgshift in front, a sample
//! workload, and what to try next.

use std::time::Duration;

use anyhow::Context as _;

use crate::cluster::ClusterPair;

const SCHEMA: &str = "
CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders (id serial PRIMARY KEY, user_id int NOT NULL REFERENCES users(id), total numeric(10,2) NOT NULL);
INSERT INTO users (email, name) SELECT 'user' || g || '@example.com', 'User ' || g FROM generate_series(1, 100) g;
INSERT INTO orders (user_id, total) SELECT 1 + g % 100, (g * 7 % 1000) / 10.0 FROM generate_series(1, 500) g;
GRANT ALL ON ALL TABLES IN SCHEMA public TO app;
GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO app;
";

const DEMO_PASSWORD: &str = "demo";

pub async fn run(unattended: bool) -> anyhow::Result<()> {
    println!("pgshift demo: starting two throwaway Postgres clusters (OLD and NEW)...");
    let pair = tokio::task::spawn_blocking(ClusterPair::start_pair)
        .await
        .context("cluster start-up task failed")??;
    for c in [&pair.old, &pair.new] {
        c.psql("app", SCHEMA)
            .with_context(|| format!("loading the sample schema into {}", c.name()))?;
    }
    println!(
        "  OLD: 127.0.0.1:{}   NEW: 127.0.0.1:{}",
        pair.old.port(),
        pair.new.port()
    );

    let yaml = config_yaml(&pair);
    let config = pgshift_rules::config::parse_config(&yaml, &|_| None)
        .map_err(|e| anyhow::anyhow!("demo config is invalid:\n{e}"))?;
    let proxy = crate::start(config).await?;
    let addr = proxy.local_addr();
    let url = format!("postgres://app:{DEMO_PASSWORD}@{addr}/app");
    println!("  pgshift: {addr} (every statement goes to OLD: defaults.primary = old)\n");

    workload(&url, pair.old.port()).await?;
    phases(&proxy, &pair, &url).await?;

    println!("\nConnect yourself:\n  psql \"{url}\"");
    println!(
        "Try: SELECT count(*) FROM users;  SHOW port;  -- port {} is OLD",
        pair.old.port()
    );
    if unattended {
        println!("\n--yes given: cleaning up.");
    } else {
        println!("\nPress Ctrl-C to stop and remove both clusters.");
        tokio::signal::ctrl_c().await?;
    }
    proxy.force_shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(5), proxy.wait()).await;
    drop(pair);
    Ok(())
}

/// The read shift of a migration, phase by phase: the operator's config
/// change, then where a burst of sessions' reads went.
async fn phases(proxy: &crate::Proxy, pair: &ClusterPair, url: &str) -> anyhow::Result<()> {
    let steps: [(&str, String); 4] = [
        ("old only", String::new()),
        ("10% of sessions read users from NEW", read_shift_rule(10)),
        ("100% of reads of users on NEW", read_shift_rule(100)),
        (
            "rollback: true (everything back on OLD)",
            format!("rollback: true\n{}", read_shift_rule(100)),
        ),
    ];
    println!("\nShifting reads of `users` to NEW, one config change at a time:");
    for (i, (title, extra)) in steps.iter().enumerate() {
        let yaml = format!("{}{extra}", config_yaml(pair));
        let config = pgshift_rules::config::parse_config(&yaml, &|_| None)
            .map_err(|e| anyhow::anyhow!("demo config is invalid:\n{e}"))?;
        let loaded = proxy
            .shared()
            .install(config)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let (old, new) = read_burst(url, pair.old.port(), 100).await?;
        println!(
            "  {}. {title:<42} config v{}: reads of users -> OLD {old:>3}, NEW {new:>3}",
            i + 1,
            loaded.version
        );
        if !extra.is_empty() {
            for line in extra.lines() {
                println!("       | {line}");
            }
        }
    }
    Ok(())
}

fn read_shift_rule(percent: u8) -> String {
    format!(
        "rules:
  - name: users-read-shift
    match: {{ kind: [read], tables: [users] }}
    percent: {percent}
    sticky: session
    primary: new
"
    )
}

/// `sessions` short sessions each read `users` once; returns how many were
/// answered by OLD and by NEW (told apart by the server's port).
async fn read_burst(url: &str, old_port: u16, sessions: usize) -> anyhow::Result<(usize, usize)> {
    let mut tasks = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            let row = client
                .query_one("SELECT inet_server_port(), count(*) FROM users", &[])
                .await?;
            Ok::<i32, tokio_postgres::Error>(row.get(0))
        }));
    }
    let (mut old, mut new) = (0, 0);
    for t in tasks {
        if t.await?? == i32::from(old_port) {
            old += 1;
        } else {
            new += 1;
        }
    }
    Ok((old, new))
}

fn config_yaml(pair: &ClusterPair) -> String {
    format!(
        "listen: 127.0.0.1:0
backends:
  old: {{ url: \"{old}\", tls: disable }}
  new: {{ url: \"{new}\", tls: disable }}
auth:
  method: scram-sha-256
  users:
    - {{ name: app, password: \"{DEMO_PASSWORD}\" }}
defaults: {{ primary: old, mirror: none }}
",
        old = pair.old.app_url("app"),
        new = pair.new.app_url("app"),
    )
}

async fn workload(url: &str, old_port: u16) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting through pgshift")?;
    tokio::spawn(conn);
    let port: String = client.query_one("SHOW port", &[]).await?.get(0);
    let users: i64 = client
        .query_one("SELECT count(*) FROM users", &[])
        .await?
        .get(0);
    let stmt = client
        .prepare("SELECT name FROM users WHERE email = $1")
        .await?;
    let name: String = client
        .query_one(&stmt, &[&"user7@example.com"])
        .await?
        .get(0);
    client
        .execute(
            "INSERT INTO users (email, name) VALUES ($1, $2)",
            &[&"demo@example.com", &"Demo"],
        )
        .await?;
    let where_ = if port == old_port.to_string() {
        "OLD"
    } else {
        "NEW"
    };
    println!("Sample workload through pgshift:");
    println!("  SHOW port                         -> {port} ({where_})");
    println!("  SELECT count(*) FROM users        -> {users}");
    println!("  prepared SELECT name ... WHERE email = $1 -> {name}");
    println!("  INSERT INTO users ...             -> 1 row, on {where_}");
    Ok(())
}
