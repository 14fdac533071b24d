//! The admin HTTP API beside reload (which `reload.rs` covers): `/rules`,
//! the `/status` fields, limits on `/digests` and `/mismatches`, the token
//! policy for GETs, and the dashboard page being self-contained.

use pgshift_tests::{base_yaml, fresh_db, http, proxy_from_file, SCRAM_AUTH};
use serde_json::Value;

const TOKEN: &str = "t0ken-that-must-not-leak";

async fn rich_proxy(db: &str) -> pgshift_tests::TestProxy {
    // The rewrite maps are checked against both catalogs at start.
    let pair = pgshift_tests::old_and_new();
    pair.old
        .psql(db, "CREATE TABLE users (id int PRIMARY KEY, email text)")
        .unwrap();
    pair.new
        .psql(
            db,
            "CREATE TABLE accounts (id int PRIMARY KEY, email_address text)",
        )
        .unwrap();
    let yaml = format!(
        "{}{SCRAM_AUTH}admin: 127.0.0.1:0
admin_token: {TOKEN}
defaults: {{ primary: old, mirror: new }}
mirror: {{ mode: sync, queue: 500, on_overflow: block, read_your_writes_wait: 20ms }}
compare: {{ sample: 25, ignore_columns: [updated_at], redact_literals: true }}
rules:
  - name: users-read-shift
    match: {{ kind: [read], tables: [users, public.profiles], sql: \"(?i)from\\\\s+users\", user: [app], client_addr: [10.0.0.0/8] }}
    percent: 10
    sticky: user
    primary: new
    mirror: old
    compare: true
  - {{ name: writes-old, match: {{ kind: [write, ddl] }}, primary: old }}
rewrite:
  new: {{ tables: {{ users: accounts }}, columns: {{ users.email: email_address }} }}
",
        base_yaml(db)
    );
    proxy_from_file(db, &yaml).await
}

#[tokio::test]
async fn rules_shows_the_compiled_config_without_secrets() {
    let db = fresh_db("admin_rules");
    let proxy = rich_proxy(&db).await;
    let reply = http::request(proxy.admin(), "GET", "/rules", &[], b"").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    for secret in [TOKEN, "app-secret", pgshift_tests::APP_PASSWORD] {
        assert!(
            !reply.body.contains(secret),
            "{secret} shown: {}",
            reply.body
        );
    }
    let r = reply.json();
    assert_eq!(r["version"], 1);
    assert!(r["loaded_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(r["rollback"], false);
    assert_eq!(
        r["defaults"],
        serde_json::json!({"primary": "old", "mirror": "new", "compare": false})
    );
    let rule = &r["rules"][0];
    assert_eq!(rule["index"], 0);
    assert_eq!(rule["name"], "users-read-shift");
    assert_eq!(rule["percent"], 10);
    assert_eq!(rule["sticky"], "user");
    assert_eq!(
        rule["route"],
        serde_json::json!({"primary": "new", "mirror": "old", "compare": true})
    );
    assert_eq!(rule["match"]["kind"], serde_json::json!(["read"]));
    assert_eq!(
        rule["match"]["tables"],
        serde_json::json!(["users", "public.profiles"])
    );
    assert_eq!(rule["match"]["sql"], "(?i)from\\s+users");
    assert_eq!(rule["match"]["user"], serde_json::json!(["app"]));
    assert_eq!(
        rule["match"]["client_addr"],
        serde_json::json!(["10.0.0.0/8"])
    );
    assert_eq!(
        r["rules"][1]["match"]["kind"],
        serde_json::json!(["write", "ddl"])
    );
    assert_eq!(r["rules"][1]["percent"], 100);
    assert_eq!(r["mirror"]["mode"], "sync");
    assert_eq!(r["mirror"]["queue"], 500);
    assert_eq!(r["mirror"]["on_overflow"], "block");
    assert_eq!(r["mirror"]["read_your_writes_wait_ms"], 20);
    assert_eq!(r["compare"]["sample"], 25);
    assert_eq!(
        r["compare"]["ignore_columns"],
        serde_json::json!(["updated_at"])
    );
    assert_eq!(
        r["rewrite"]["new"]["tables"],
        serde_json::json!([{"from": "users", "to": "accounts"}])
    );
    assert!(r["backends"]["old"]["url"]
        .as_str()
        .unwrap()
        .starts_with("postgres://"));

    // The rollback switch shows once reloaded.
    let yaml = std::fs::read_to_string(proxy_config_path(&proxy)).unwrap();
    proxy.rewrite_config(&format!("{yaml}rollback: true\n"));
    let (code, body) = http::post(proxy.admin(), "/reload", Some(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    let r = http::get_json(proxy.admin(), "/rules").await;
    assert_eq!(
        (r["version"].as_u64(), r["rollback"].as_bool()),
        (Some(2), Some(true))
    );
    assert!(r["effective"]
        .as_str()
        .unwrap()
        .contains("every statement goes to old"));
}

/// The config file the proxy was started from, as `/status` reports it.
fn proxy_config_path(proxy: &pgshift_tests::TestProxy) -> std::path::PathBuf {
    proxy
        .inner()
        .shared()
        .config_path
        .clone()
        .expect("started from a file")
}

#[tokio::test]
async fn the_token_guards_post_and_gets_stay_open() {
    let db = fresh_db("admin_token");
    let proxy = rich_proxy(&db).await;
    let admin = proxy.admin();
    for path in [
        "/",
        "/metrics",
        "/status",
        "/rules",
        "/digests",
        "/mismatches",
    ] {
        let reply = http::request(admin, "GET", path, &[], b"").await;
        assert_eq!(
            reply.status, 200,
            "GET {path} without a token: {}",
            reply.body
        );
    }
    let (code, _) = http::post(admin, "/reload", None).await;
    assert_eq!(code, 401);
    let (code, _) = http::post(admin, "/reload", Some("t0ken-that-must-not-lea")).await;
    assert_eq!(code, 401);
    let (code, body) = http::post(admin, "/reload", Some(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    // Only GET and POST exist, and only where documented.
    let reply = http::request(admin, "POST", "/rules", &[], b"").await;
    assert_eq!(reply.status, 405);
    let reply = http::request(admin, "GET", "/nope", &[], b"").await;
    assert_eq!(reply.status, 404);
    assert!(reply.json()["error"].is_string());
}

#[tokio::test]
async fn status_has_every_field_of_the_contract() {
    let db = fresh_db("admin_status");
    let yaml = format!(
        "{}{SCRAM_AUTH}admin: 127.0.0.1:0\ndefaults: {{ primary: old, mirror: new }}\n",
        base_yaml(&db)
    );
    let proxy = proxy_from_file(&db, &yaml).await;
    let client = proxy.client().await;
    for _ in 0..3 {
        client.simple_query("SELECT 1").await.unwrap();
    }
    let s = http::get_json(proxy.admin(), "/status").await;
    assert_eq!(s["version"], 1);
    assert!(s["loaded_at"].is_string());
    assert_eq!(s["last_reload_error"], Value::Null);
    assert_eq!(s["sessions"], 1);
    assert_eq!(s["backends"]["old"]["state"], "up", "{s}");
    for b in ["old", "new"] {
        let m = &s["mirror"][b];
        for key in [
            "queued",
            "applied",
            "dropped",
            "errors",
            "queue_depth",
            "compare_skipped",
            "cancelled",
        ] {
            assert!(m[key].is_u64(), "mirror.{b}.{key} missing: {s}");
        }
    }
    assert!(s["mirror"]["diverged_sessions"].is_array());
    assert!(s["mirror"]["diverged_sessions_total"].is_u64());
    // The three identical selects: parsed once, then found in the cache.
    let c = &s["classifier"];
    assert!(c["misses"].as_u64().is_some_and(|n| n >= 1), "{s}");
    assert!(c["hits"].as_u64().is_some_and(|n| n >= 2), "{s}");
    assert!(c["entries"].as_u64().is_some_and(|n| n >= 1), "{s}");
    assert_eq!(c["parse_failures"], 0, "{s}");
    // No rewrite section, no rewriter.
    assert_eq!(s["rewriter"]["new"], Value::Null, "{s}");

    // limit=N bounds the lists.
    let d = http::get_json(proxy.admin(), "/digests?limit=1").await;
    assert_eq!(d["digests"].as_array().unwrap().len(), 1, "{d}");
    assert_eq!(d["digests"][0]["calls"], 3);
    let m = http::get_json(proxy.admin(), "/mismatches?limit=0").await;
    assert_eq!(m["mismatches"], serde_json::json!([]));
}

#[tokio::test]
async fn status_shows_how_the_caches_serve_the_traffic() {
    let db = fresh_db("admin_caches");
    let pair = pgshift_tests::old_and_new();
    pair.old
        .psql(
            &db,
            "CREATE TABLE users (id int PRIMARY KEY, email text); GRANT ALL ON users TO PUBLIC",
        )
        .unwrap();
    pair.new
        .psql(
            &db,
            "CREATE TABLE accounts (id int PRIMARY KEY, email text); GRANT ALL ON accounts TO PUBLIC",
        )
        .unwrap();
    let yaml = format!(
        "{}{SCRAM_AUTH}admin: 127.0.0.1:0
defaults: {{ primary: old, mirror: new }}
mirror: {{ mode: sync }}
rewrite:
  new: {{ tables: {{ users: accounts }} }}
",
        base_yaml(&db)
    );
    let proxy = proxy_from_file(&db, &yaml).await;
    let client = proxy.client().await;
    // Writes go to old and, rewritten for accounts, to the sync mirror.
    for id in 1..=3 {
        client
            .simple_query(&format!(
                "INSERT INTO users (id, email) VALUES ({id}, 'u{id}@example.com')"
            ))
            .await
            .unwrap();
    }
    let s = http::get_json(proxy.admin(), "/status").await;
    // Three texts of one shape: one parse.
    assert_eq!(s["classifier"]["misses"], 1, "{s}");
    assert!(
        s["classifier"]["hits"].as_u64().is_some_and(|n| n >= 2),
        "{s}"
    );
    // And one rewrite for NEW, the other two from its template.
    let r = &s["rewriter"]["new"];
    assert_eq!(r["misses"], 1, "{s}");
    assert_eq!(r["hits"], 2, "{s}");
    assert_eq!(s["rewriter"]["old"], Value::Null, "{s}");
    assert_eq!(s["mirror"]["new"]["applied"], 3, "{s}");
    let rows = pair
        .new
        .psql(
            &db,
            "SELECT string_agg(id || ' ' || email, ',' ORDER BY id) FROM accounts",
        )
        .unwrap();
    assert_eq!(
        rows.trim(),
        "1 u1@example.com,2 u2@example.com,3 u3@example.com"
    );
}

#[tokio::test]
async fn the_dashboard_is_one_self_contained_page() {
    let db = fresh_db("admin_page");
    let yaml = format!("{}{SCRAM_AUTH}admin: 127.0.0.1:0\n", base_yaml(&db));
    let proxy = proxy_from_file(&db, &yaml).await;
    let reply = http::request(proxy.admin(), "GET", "/", &[], b"").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(reply
        .header("content-security-policy")
        .is_some_and(|c| c.contains("default-src 'none'")));
    let page = &reply.body;
    assert!(page.starts_with("<!doctype html>"));
    // Nothing fetched from elsewhere: no external scripts, styles or fonts.
    for external in ["src=\"http", "href=\"http", "@import", "//cdn", "url(http"] {
        assert!(!page.contains(external), "{external} in the page");
    }
    for endpoint in [
        "\"status\"",
        "\"rules\"",
        "\"metrics\"",
        "\"digests?limit=200\"",
    ] {
        assert!(page.contains(endpoint), "the page does not read {endpoint}");
    }
}
