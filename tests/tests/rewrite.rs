//! Rewriting for NEW's schema, end to end: OLD has `users(email)` and
//! `orders`, NEW has `accounts(email_address)` (columns in another order)
//! and `sales.orders`. The application's SQL names only OLD's schema and
//! runs unchanged through pgshift with reads on NEW, writes mirrored to
//! NEW, and every result compared.

use std::process::Command;

use pgshift_rules::config::BackendId;
use pgshift_tests::pgbench::pg_program;
use pgshift_tests::{fresh_db, old_and_new, proxy_with, url_new, url_old, TestProxy};
use tokio_postgres::SimpleQueryMessage;

const OLD_SCHEMA: &str = "
CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL UNIQUE, name text,
                    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders (id serial PRIMARY KEY, user_id int NOT NULL REFERENCES users(id),
                     total numeric(10,2) NOT NULL, note text);";

const NEW_SCHEMA: &str = "
CREATE SCHEMA sales;
CREATE TABLE accounts (id serial PRIMARY KEY, name text, email_address text NOT NULL UNIQUE,
                       created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE sales.orders (id serial PRIMARY KEY, user_id int NOT NULL REFERENCES accounts(id),
                           total numeric(10,2) NOT NULL, note text);";

const REWRITE: &str = "
rewrite:
  new:
    tables: { users: accounts, orders: sales.orders }
    columns: { users.email: email_address }
";

const MIGRATION: &str = "
defaults: { primary: old, mirror: new }
mirror: { mode: async }
compare: { sample: 100, ignore_columns: [created_at], log_values: true }
rules:
  - name: reads-on-new
    match: { kind: [read] }
    primary: new
    mirror: old
    compare: true
  - name: dual-writes
    match: { kind: [write] }
    primary: old
    mirror: new
    compare: true
";

/// Both schemas, owned by the app role like an application's own tables.
fn schemas(db: &str) {
    let pair = old_and_new();
    pair.old
        .psql(db, &format!("SET ROLE app; {OLD_SCHEMA}"))
        .expect("OLD schema");
    pair.new
        .psql(db, &format!("SET ROLE app; {NEW_SCHEMA}"))
        .expect("NEW schema");
}

/// The pgshift binary with `args`, then `file`.
fn pgshift(args: &[&str], file: &std::path::Path) -> std::process::Output {
    Command::new(pgshift_tests::pgshift_bin())
        .args(args)
        .arg(file)
        .output()
        .unwrap()
}

/// The server's message in a failed request.
fn server_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e}"))
        .message()
        .to_owned()
}

async fn migration_proxy(db: &str) -> TestProxy {
    proxy_with(db, &format!("{MIGRATION}{REWRITE}")).await
}

async fn column(url: &str, sql: &str) -> Vec<String> {
    let c = pgshift_tests::connect(url).await;
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_owned()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_workload_runs_on_the_new_schema_with_zero_mismatches() {
    let db = fresh_db("rewrite_e2e");
    schemas(&db);
    let proxy = migration_proxy(&db).await;
    let c = proxy.client().await;

    // Writes: primary OLD, mirrored (rewritten) to NEW.
    let insert = c
        .prepare("INSERT INTO users (email, name) VALUES ($1, $2) RETURNING id, email")
        .await
        .unwrap();
    for i in 1..=5 {
        let row = c
            .query_one(
                &insert,
                &[&format!("u{i}@example.com"), &format!("user {i}")],
            )
            .await
            .unwrap();
        assert_eq!(row.columns()[1].name(), "email");
        assert_eq!(row.get::<_, String>(1), format!("u{i}@example.com"));
    }
    for i in 1..=5i32 {
        c.execute(
            "INSERT INTO orders (user_id, total, note) VALUES ($1, $2::text::numeric, 'see users.email')",
            &[&i, &format!("{}.50", i * 10)],
        )
        .await
        .unwrap();
    }
    c.execute(
        "UPDATE users SET email = $1 WHERE email = $2",
        &[&"renamed@example.com", &"u3@example.com"],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO users AS t (id, email, name) VALUES (1, $1, 'upserted') \
         ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, name = t.name || '!'",
        &[&"one@example.com"],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE orders o SET note = u.email FROM users u WHERE u.id = o.user_id AND u.id = $1",
        &[&2i32],
    )
    .await
    .unwrap();
    c.batch_execute("BEGIN; UPDATE users SET name = 'in txn' WHERE id = 4; COMMIT")
        .await
        .unwrap();
    proxy.mirrors_drained().await;

    // Reads: primary NEW (rewritten), mirrored to OLD and compared.
    let by_email = c
        .prepare(
            "SELECT u.id, u.email, o.total::text FROM users u JOIN orders o ON o.user_id = u.id \
             WHERE u.email = $1 ORDER BY o.id",
        )
        .await
        .unwrap();
    let rows = c.query(&by_email, &[&"renamed@example.com"]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].columns()[1].name(), "email");
    assert_eq!(rows[0].get::<_, String>(2), "30.50");

    let all = c
        .query("SELECT * FROM users ORDER BY id", &[])
        .await
        .unwrap();
    let names: Vec<&str> = all[0].columns().iter().map(|c| c.name()).collect();
    assert_eq!(
        names,
        ["id", "email", "name", "created_at"],
        "OLD's names, OLD's order"
    );
    let emails: Vec<String> = all.iter().map(|r| r.get("email")).collect();
    assert_eq!(
        emails,
        [
            "one@example.com",
            "u2@example.com",
            "renamed@example.com",
            "u4@example.com",
            "u5@example.com"
        ]
    );
    let grouped = c
        .query(
            "SELECT email, count(*) FROM users WHERE email LIKE $1 GROUP BY email ORDER BY email",
            &[&"u%"],
        )
        .await
        .unwrap();
    assert_eq!(grouped.len(), 3);
    let sub = c
        .query_one(
            "SELECT count(*) FROM orders WHERE user_id IN (SELECT id FROM users WHERE email <> 'users.email')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(sub.get::<_, i64>(0), 5);
    let simple = column(
        &proxy.url(),
        "WITH recent AS (SELECT id, email FROM users WHERE id > 3) SELECT email FROM recent ORDER BY id",
    )
    .await;
    assert_eq!(simple, ["u4@example.com", "u5@example.com"]);
    for _ in 0..3 {
        c.query(&by_email, &[&"u2@example.com"]).await.unwrap();
    }
    proxy.mirrors_drained().await;

    // NEW really holds what OLD holds, under its own names.
    assert_eq!(
        column(
            &url_new(&db),
            "SELECT email_address FROM accounts ORDER BY id"
        )
        .await,
        column(&url_old(&db), "SELECT email FROM users ORDER BY id").await
    );
    assert_eq!(
        column(&url_new(&db), "SELECT note FROM sales.orders ORDER BY id").await,
        column(&url_old(&db), "SELECT note FROM orders ORDER BY id").await
    );

    let digests = proxy.inner().shared().digests.snapshot(1000);
    let compared: u64 = digests.iter().map(|d| d.compared).sum();
    assert!(compared >= 10, "reads and writes compared: {digests:#?}");
    for d in &digests {
        assert_eq!(
            d.mismatched,
            0,
            "mismatch on {}: {d:#?}\n{:#?}",
            d.text,
            proxy.inner().shared().mirroring.recent_mismatches(5)
        );
        assert_eq!(d.mirror_errors, 0, "mirror error on {}: {d:#?}", d.text);
        assert_eq!(d.rewrite_refused, 0, "{d:#?}");
    }
    for &b in BackendId::ALL {
        let s = proxy.mirror_counters(b);
        assert_eq!(s.dropped, 0, "{b}: {s:?}");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_sees_the_old_names() {
    let db = fresh_db("rewrite_psql");
    schemas(&db);
    old_and_new()
        .old
        .psql(
            &db,
            "INSERT INTO users (email, name) VALUES ('a@x', 'A'), ('b@x', 'B')",
        )
        .unwrap();
    old_and_new()
        .new
        .psql(
            &db,
            "INSERT INTO accounts (email_address, name) VALUES ('a@x', 'A'), ('b@x', 'B')",
        )
        .unwrap();
    let proxy = migration_proxy(&db).await;
    let script = "SELECT id, email FROM users ORDER BY id;
\\x on
SELECT * FROM users WHERE email = 'b@x';
";
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), script).unwrap();
    let mut cmd = Command::new(pg_program("psql"));
    cmd.args(["-X", "-A", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(file.path())
        .arg(proxy.conninfo());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("id|email\n1|a@x\n2|b@x\n"), "{stdout}");
    assert!(stdout.contains("email|b@x"), "expanded *: {stdout}");
    assert!(stdout.contains("name|B"), "{stdout}");
    assert!(!stdout.contains("email_address"), "{stdout}");
    proxy.mirrors_drained().await;
    let digests = proxy.inner().shared().digests.snapshot(100);
    assert!(digests.iter().all(|d| d.mismatched == 0), "{digests:#?}");
    assert!(digests.iter().any(|d| d.compared > 0), "{digests:#?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_that_cannot_be_rewritten_never_reaches_new_as_written() {
    let db = fresh_db("rewrite_refused");
    schemas(&db);
    let proxy = migration_proxy(&db).await;
    let c = proxy.client().await;
    c.batch_execute("INSERT INTO users (email) VALUES ('x@y')")
        .await
        .unwrap();
    proxy.mirrors_drained().await;

    // Outside a transaction it goes to OLD, which answers as Postgres does.
    let e = c.simple_query("SELEC email FROM users").await.unwrap_err();
    let e = server_message(&e);
    assert!(e.contains("syntax error"), "{e}");

    // Inside a transaction pinned to NEW it cannot move: a clear error,
    // raised by NEW itself so the transaction is really failed.
    c.batch_execute("BEGIN").await.unwrap();
    let side = c
        .simple_query("SELECT email FROM users")
        .await
        .expect("read on NEW");
    assert!(side.len() > 1);
    let e = c.simple_query("SELEC email FROM users").await.unwrap_err();
    let msg = server_message(&e);
    assert!(
        msg.contains("pgshift cannot send this statement to new") && msg.contains("SELEC email"),
        "{msg}"
    );
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    let msg = server_message(&e);
    assert!(msg.contains("aborted"), "{msg}");
    c.batch_execute("ROLLBACK").await.unwrap();

    // The extended protocol gets its error at Parse.
    c.batch_execute("BEGIN").await.unwrap();
    c.query("SELECT email FROM users", &[]).await.unwrap();
    let e = c
        .prepare("SELEC email FROM users WHERE id = $1")
        .await
        .unwrap_err();
    let msg = server_message(&e);
    assert!(
        msg.contains("pgshift cannot send this statement to new"),
        "{msg}"
    );
    c.batch_execute("ROLLBACK").await.unwrap();

    let refused: u64 = proxy
        .inner()
        .shared()
        .digests
        .snapshot(100)
        .iter()
        .map(|d| d.rewrite_refused)
        .sum();
    assert!(refused >= 3, "refusals counted per digest: {refused}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_naming_what_new_lacks_is_a_config_error() {
    let db = fresh_db("rewrite_check");
    schemas(&db);
    let proxy = migration_proxy(&db).await;
    let bad = format!(
        "{}{}{MIGRATION}rewrite:\n  new:\n    tables: {{ users: acounts }}\n",
        pgshift_tests::base_yaml(&db),
        pgshift_tests::SCRAM_AUTH,
    );
    let config = pgshift_rules::config::parse_config(&bad, &|k| std::env::var(k).ok()).unwrap();
    let before = proxy.inner().shared().current().version;
    let Err(err) = proxy.inner().shared().install_fresh(config).await else {
        panic!("a rewrite target NEW lacks is refused");
    };
    assert!(err.to_string().contains("acounts"), "{err}");
    assert_eq!(proxy.inner().shared().current().version, before);

    // `pgshift check` says the same; --skip-catalog checks offline.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &bad).unwrap();
    let out = pgshift(&["check", "--config"], file.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("rewrite.new") && stderr.contains("acounts"),
        "{stderr}"
    );
    let out = pgshift(&["check", "--skip-catalog", "--config"], file.path());
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // An unreachable backend: check cannot tell, and says how to go on.
    let unreachable = bad.replace(
        &format!(":{}/", old_and_new().new.port()),
        &format!(":{}/", pgshift_tests::free_port()),
    );
    std::fs::write(file.path(), unreachable).unwrap();
    let out = pgshift(&["check", "--config"], file.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--skip-catalog"), "{stderr}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn explain_prints_the_sql_each_backend_receives() {
    let db = fresh_db("rewrite_explain");
    schemas(&db);
    let yaml = format!(
        "{}{}{MIGRATION}{REWRITE}",
        pgshift_tests::base_yaml(&db),
        pgshift_tests::SCRAM_AUTH
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), yaml).unwrap();
    let out = Command::new(pgshift_tests::pgshift_bin())
        .args(["explain", "--config"])
        .arg(file.path())
        .arg("SELECT * FROM users u WHERE u.email = $1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("sql old:   SELECT * FROM users u WHERE u.email = $1"),
        "{stdout}"
    );
    let new_line = stdout
        .lines()
        .find(|l| l.starts_with("sql new:"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(new_line.contains("accounts"), "{new_line}");
    assert!(new_line.contains("email_address AS email"), "{new_line}");
    assert!(
        !new_line.contains('*'),
        "expanded with the catalog: {new_line}"
    );
}
