//! `pgshift demo`: a whole migration on two throwaway clusters, phase by
//! phase, with the config change an operator would make at each step and
//! what pgshift saw: where statements went, what the comparison caught.

use std::time::{Duration, Instant};

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

/// Short sessions per phase; each reads one user and, when the phase
/// writes, adds one order.
const SESSIONS: usize = 40;
/// The user whose name is made to differ on NEW before the shadow reads.
const PLANTED_USER: i32 = 7;

struct Phase {
    title: &'static str,
    /// What this step is for and how an operator knows it is safe.
    why: &'static str,
    /// The part of the YAML the operator changes at this step.
    yaml: &'static str,
    writes: bool,
}

const PHASES: &[Phase] = &[
    Phase {
        title: "OLD only",
        why: "pgshift in front, nothing changed: every statement on OLD (reads only: writes before dual writes start would be missing on NEW)",
        yaml: "defaults: { primary: old, mirror: none }\n",
        writes: false,
    },
    Phase {
        title: "dual writes",
        why: "every write also replayed on NEW (NEW was backfilled first)",
        yaml: "defaults: { primary: old, mirror: none }
rules:
  - { name: dual-writes, match: { kind: [write] }, primary: old, mirror: new, compare: true }
",
        writes: true,
    },
    Phase {
        title: "shadow reads, compared",
        why: "reads also run on NEW and both answers are compared (a row was changed on NEW to show a catch)",
        yaml: "defaults: { primary: old, mirror: none }
rules:
  - { name: dual-writes, match: { kind: [write] }, primary: old, mirror: new, compare: true }
  - { name: shadow-reads, match: { kind: [read] }, primary: old, mirror: new, compare: true }
",
        writes: true,
    },
    Phase {
        title: "10% of reads on NEW",
        why: "a sticky 10% of sessions read from NEW, still compared against OLD",
        yaml: "defaults: { primary: old, mirror: none }
rules:
  - { name: dual-writes, match: { kind: [write] }, primary: old, mirror: new, compare: true }
  - { name: reads-on-new, match: { kind: [read] }, percent: 10, primary: new, mirror: old, compare: true }
  - { name: shadow-reads, match: { kind: [read] }, primary: old, mirror: new, compare: true }
",
        writes: true,
    },
    Phase {
        title: "100% of reads on NEW",
        why: "every read answered by NEW",
        yaml: "defaults: { primary: old, mirror: none }
rules:
  - { name: dual-writes, match: { kind: [write] }, primary: old, mirror: new, compare: true }
  - { name: reads-on-new, match: { kind: [read] }, primary: new, mirror: old, compare: true }
",
        writes: true,
    },
    Phase {
        title: "writes on NEW, mirrored to OLD",
        why: "NEW is the primary for everything; OLD still gets every write, so rolling back loses nothing",
        yaml: "defaults: { primary: new, mirror: old }
rules:
  - { name: reads-on-new, match: { kind: [read] }, primary: new, mirror: old, compare: true }
",
        writes: true,
    },
    Phase {
        title: "rollback",
        why: "one key: everything back on OLD, nothing mirrored (reads only here: writes now would reach OLD alone)",
        yaml: "rollback: true
defaults: { primary: new, mirror: old }
",
        writes: false,
    },
    Phase {
        title: "NEW only",
        why: "the migration is done: OLD gets nothing and can be retired",
        yaml: "defaults: { primary: new, mirror: none }\n",
        writes: true,
    },
];

pub async fn run(unattended: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    println!("pgshift demo: starting two throwaway Postgres clusters (OLD and NEW)...");
    let pair = tokio::task::spawn_blocking(ClusterPair::start_pair)
        .await
        .context("cluster start-up task failed")??;
    for c in [&pair.old, &pair.new] {
        c.psql("app", SCHEMA)
            .with_context(|| format!("loading the sample schema into {}", c.name()))?;
    }
    println!(
        "  OLD: 127.0.0.1:{}   NEW: 127.0.0.1:{} (NEW starts as a copy of OLD: the backfill)",
        pair.old.port(),
        pair.new.port()
    );

    let yaml = format!("{}{}", config_yaml(&pair), PHASES[0].yaml);
    let config = pgshift_rules::config::parse_config(&yaml, &|_| None)
        .map_err(|e| anyhow::anyhow!("demo config is invalid:\n{e}"))?;
    let proxy = crate::start(config).await?;
    let addr = proxy.local_addr();
    let url = format!("postgres://app:{DEMO_PASSWORD}@{addr}/app");
    let dashboard = proxy
        .admin_addr()
        .map(|a| format!("http://{a}/"))
        .unwrap_or_default();
    println!("  pgshift: {addr}   dashboard: {dashboard}\n");

    workload(&url, pair.old.port()).await?;
    phases(&proxy, &pair, &url).await?;

    println!(
        "\nThe whole migration took {:.0?}. Connect yourself:\n  psql \"{url}\"\n  dashboard: {dashboard}",
        started.elapsed()
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

/// Statements per backend and role, and mismatches: read from the same
/// metrics `/metrics` serves.
#[derive(Default, Clone, Copy)]
struct Seen {
    /// [old, new] x [primary, mirror]
    statements: [[u64; 2]; 2],
    mismatched: u64,
}

fn seen(proxy: &crate::Proxy) -> Seen {
    let text = proxy
        .shared()
        .telemetry
        .prometheus_text()
        .unwrap_or_default();
    let mut s = Seen::default();
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value = value.parse::<f64>().unwrap_or(0.0) as u64;
        let label = |name: &str| {
            let at = series.find(&format!("{name}=\""))? + name.len() + 2;
            series[at..].split('"').next()
        };
        if series.starts_with("pgshift_statements_total{") {
            let b = usize::from(label("backend") == Some("new"));
            let r = usize::from(label("role") == Some("mirror"));
            s.statements[b][r] += value;
        } else if series == r#"pgshift_compare_total{result="mismatch"}"# {
            s.mismatched = value;
        }
    }
    s
}

/// The migration, one config change at a time, as an operator makes it.
async fn phases(proxy: &crate::Proxy, pair: &ClusterPair, url: &str) -> anyhow::Result<()> {
    println!("\nThe migration, one config change (and reload) at a time:");
    for (i, phase) in PHASES.iter().enumerate() {
        if i == 2 {
            pair.new.psql(
                "app",
                &format!(
                    "UPDATE users SET name = name || ' (typo on NEW)' WHERE id = {PLANTED_USER}"
                ),
            )?;
        }
        let yaml = format!("{}{}", config_yaml(pair), phase.yaml);
        let config = pgshift_rules::config::parse_config(&yaml, &|_| None)
            .map_err(|e| anyhow::anyhow!("demo config is invalid:\n{e}"))?;
        let loaded = proxy
            .shared()
            .install(config)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        sessions_closed(proxy).await;
        let before = seen(proxy);
        let orders_before = [order_count(&pair.old)?, order_count(&pair.new)?];
        burst(url, phase.writes).await?;
        sessions_closed(proxy).await;
        mirrors_drained(proxy).await;
        let after = seen(proxy);
        let orders = [order_count(&pair.old)?, order_count(&pair.new)?];
        let d = |b: usize, r: usize| after.statements[b][r] - before.statements[b][r];
        println!(
            "\n  {}. {} (config v{})",
            i + 1,
            phase.title,
            loaded.version
        );
        println!("     {}", phase.why);
        for line in phase.yaml.lines() {
            println!("     | {line}");
        }
        println!(
            "     statements: OLD {} primary + {} mirrored   NEW {} primary + {} mirrored",
            d(0, 0),
            d(0, 1),
            d(1, 0),
            d(1, 1)
        );
        println!(
            "     orders added: OLD +{}  NEW +{}",
            orders[0] - orders_before[0],
            orders[1] - orders_before[1]
        );
        let mismatches = after.mismatched - before.mismatched;
        println!("     mismatches: {mismatches}");
        if mismatches > 0 {
            if let Some(m) = proxy.shared().mirroring.recent_mismatches(1).first() {
                println!(
                    "       caught: {}  reasons: {}",
                    m.sql,
                    serde_json::to_string(&m.reasons).unwrap_or_default()
                );
            }
            pair.new.psql(
                "app",
                &format!("UPDATE users SET name = replace(name, ' (typo on NEW)', '') WHERE id = {PLANTED_USER}"),
            )?;
            println!("       (the operator repairs the row on NEW before going on)");
        }
    }
    Ok(())
}

fn order_count(c: &crate::cluster::LocalCluster) -> anyhow::Result<i64> {
    Ok(c.psql("app", "SELECT count(*) FROM orders")?
        .trim()
        .parse()?)
}

/// Waits (bounded) until the clients' sessions have ended. A statement is
/// counted on its session's thread just after the client has its answer,
/// so only then are the counts of everything the clients ran complete.
async fn sessions_closed(proxy: &crate::Proxy) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.shared().telemetry.sessions() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (bounded) until every queued mirror statement has been applied,
/// so a phase's numbers are complete.
async fn mirrors_drained(proxy: &crate::Proxy) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for &b in pgshift_rules::config::BackendId::ALL {
        let c = proxy.shared().mirroring.counters(b);
        while c.depth.load(std::sync::atomic::Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // The comparison of the last answer finishes just after its reply.
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// [`SESSIONS`] short sessions, each reading one user (the planted one
/// among them) and, when `writes`, adding an order.
async fn burst(url: &str, writes: bool) -> anyhow::Result<()> {
    let mut tasks = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS {
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            let id = 1 + i % 20;
            // The simple protocol: one request per statement, so the counts
            // below are statements (a prepared statement's Parse and
            // Describe are a round trip of their own).
            client
                .simple_query(&format!(
                    "SELECT id, email, name FROM users WHERE id = {id}"
                ))
                .await?;
            if writes {
                client
                    .simple_query(&format!(
                        "INSERT INTO orders (user_id, total) VALUES ({id}, 9.99)"
                    ))
                    .await?;
            }
            Ok::<(), tokio_postgres::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

fn config_yaml(pair: &ClusterPair) -> String {
    format!(
        "listen: 127.0.0.1:0
admin: 127.0.0.1:0
backends:
  old: {{ url: \"{old}\", tls: disable }}
  new: {{ url: \"{new}\", tls: disable }}
auth:
  method: scram-sha-256
  users:
    - {{ name: app, password: \"{DEMO_PASSWORD}\" }}
mirror: {{ mode: async }}
compare: {{ sample: 100, ignore_columns: [created_at] }}
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
    let where_ = if port == old_port.to_string() {
        "OLD"
    } else {
        "NEW"
    };
    println!("Sample workload through pgshift:");
    println!("  SHOW port                         -> {port} ({where_})");
    println!("  SELECT count(*) FROM users        -> {users}");
    println!("  prepared SELECT name ... WHERE email = $1 -> {name}");
    Ok(())
}
