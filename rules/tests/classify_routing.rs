//! Routing classified statements: each match criterion, first match wins,
//! percent fall-through, sticky buckets, rollback, and `explain`.

use std::net::IpAddr;

use pgshift_rules::route::{bucket, in_percent, BUCKETS};
use pgshift_rules::{
    explain, parse_config, BackendId, Classifier, Config, Decision, Route, Router, SessionContext,
    Sticky,
};

const BASE: &str = r#"
backends:
  old: { url: "postgres://app@127.0.0.1:5432/app" }
  new: { url: "postgres://app@127.0.0.1:5433/app" }
auth: { method: trust }
"#;

fn config(extra: &str) -> Config {
    parse_config(&format!("{BASE}{extra}"), &|_| None)
        .unwrap_or_else(|e| panic!("invalid test config:\n{e}\n{extra}"))
}

fn ctx() -> SessionContext<'static> {
    SessionContext {
        user: "app",
        database: "shop",
        application_name: "api",
        client_addr: Some("10.1.2.3".parse().unwrap()),
        session_key: 42,
    }
}

/// Routes the first statement of `sql`.
fn route(router: &Router, sql: &str, ctx: &SessionContext<'_>) -> Decision {
    let classifier = Classifier::new(0);
    let c = classifier.classify(sql);
    let stmt = &c.statements[0];
    router.route(stmt, stmt.text(sql), ctx)
}

const TO_NEW: Route = Route {
    primary: BackendId::New,
    mirror: None,
    compare: false,
};

/// One rule sending matches to new; `None` means "defaults" (old).
fn rule_to_new(matcher: &str) -> Router {
    Router::new(&config(&format!(
        "rules:\n  - name: r\n    match: {matcher}\n    primary: new\n"
    )))
}

fn goes_new(router: &Router, sql: &str, ctx: &SessionContext<'_>) -> bool {
    let d = route(router, sql, ctx);
    match d.rule {
        Some(0) => {
            assert_eq!(d.route, TO_NEW);
            true
        }
        None => {
            assert_eq!(d.route, Route::OLD_ONLY);
            false
        }
        other => panic!("unexpected rule {other:?}"),
    }
}

#[test]
fn kind_criterion() {
    let r = rule_to_new("{ kind: [read, copy] }");
    assert!(goes_new(&r, "SELECT 1", &ctx()));
    assert!(goes_new(&r, "COPY t TO STDOUT", &ctx()));
    assert!(!goes_new(&r, "SELECT 1 FOR UPDATE", &ctx()));
    assert!(!goes_new(&r, "INSERT INTO t VALUES (1)", &ctx()));
}

#[test]
fn tables_criterion_and_schemas() {
    let r = rule_to_new(r#"{ tables: [users, billing.invoices, '"Mixed"'] }"#);
    assert!(goes_new(&r, "SELECT * FROM users", &ctx()));
    assert!(
        goes_new(&r, "SELECT * FROM app.users", &ctx()),
        "bare rule name: any schema"
    );
    assert!(goes_new(
        &r,
        "SELECT * FROM x JOIN (SELECT * FROM USERS) u ON true",
        &ctx()
    ));
    assert!(goes_new(&r, "SELECT * FROM billing.invoices", &ctx()));
    assert!(!goes_new(&r, "SELECT * FROM sales.invoices", &ctx()));
    assert!(
        !goes_new(&r, "SELECT * FROM invoices", &ctx()),
        "schema unknown: no match"
    );
    assert!(goes_new(&r, "SELECT * FROM \"Mixed\"", &ctx()));
    assert!(!goes_new(&r, "SELECT * FROM mixed", &ctx()));
    assert!(!goes_new(
        &r,
        "WITH users AS (SELECT 1) SELECT * FROM users",
        &ctx()
    ));
}

#[test]
fn sql_criterion_searches_the_statement_text() {
    let r = rule_to_new("{ sql: \"(?i)from\\\\s+users\" }");
    assert!(goes_new(&r, "select * FROM   users", &ctx()));
    assert!(!goes_new(&r, "select * from accounts", &ctx()));
    // Only the statement's own text is searched.
    let classifier = Classifier::new(0);
    let sql = "SELECT 1; SELECT * FROM users";
    let c = classifier.classify(sql);
    let first = &c.statements[0];
    assert_eq!(r.route(first, first.text(sql), &ctx()).rule, None);
    let second = &c.statements[1];
    assert_eq!(r.route(second, second.text(sql), &ctx()).rule, Some(0));
}

#[test]
fn session_criteria() {
    let sql = "SELECT 1";
    let r = rule_to_new("{ user: [app, batch] }");
    assert!(goes_new(&r, sql, &ctx()));
    assert!(!goes_new(
        &r,
        sql,
        &SessionContext {
            user: "App",
            ..ctx()
        }
    ));

    let r = rule_to_new("{ database: [shop] }");
    assert!(goes_new(&r, sql, &ctx()));
    assert!(!goes_new(
        &r,
        sql,
        &SessionContext {
            database: "other",
            ..ctx()
        }
    ));

    let r = rule_to_new("{ application_name: [api] }");
    assert!(goes_new(&r, sql, &ctx()));
    assert!(!goes_new(
        &r,
        sql,
        &SessionContext {
            application_name: "",
            ..ctx()
        }
    ));

    let r = rule_to_new("{ client_addr: [10.0.0.0/8, \"2001:db8::/32\", 192.168.1.7] }");
    let at = |a: &str| SessionContext {
        client_addr: Some(a.parse::<IpAddr>().unwrap()),
        ..ctx()
    };
    assert!(goes_new(&r, sql, &at("10.200.0.1")));
    assert!(
        goes_new(&r, sql, &at("::ffff:10.200.0.1")),
        "IPv4-mapped IPv6"
    );
    assert!(goes_new(&r, sql, &at("2001:db8::99")));
    assert!(goes_new(&r, sql, &at("192.168.1.7")));
    assert!(!goes_new(&r, sql, &at("192.168.1.8")));
    assert!(!goes_new(
        &r,
        sql,
        &SessionContext {
            client_addr: None,
            ..ctx()
        }
    ));
}

#[test]
fn all_criteria_must_hold() {
    let r = rule_to_new("{ kind: [write], tables: [orders], user: [app] }");
    assert!(goes_new(&r, "UPDATE orders SET x = 1", &ctx()));
    assert!(!goes_new(&r, "SELECT * FROM orders", &ctx()));
    assert!(!goes_new(&r, "UPDATE items SET x = 1", &ctx()));
    assert!(!goes_new(
        &r,
        "UPDATE orders SET x = 1",
        &SessionContext { user: "x", ..ctx() }
    ));
}

#[test]
fn first_match_wins_and_defaults() {
    let r = Router::new(&config(
        r#"
defaults: { primary: new, mirror: old }
rules:
  - { name: reads-old, match: { kind: [read] }, primary: old, mirror: new, compare: true }
  - { name: users-new, match: { tables: [users] }, primary: new }
  - { name: catch-all, primary: old }
"#,
    ));
    let d = route(&r, "SELECT * FROM users", &ctx());
    assert_eq!(d.rule, Some(0));
    assert_eq!(
        d.route,
        Route {
            primary: BackendId::Old,
            mirror: Some(BackendId::New),
            compare: true
        }
    );
    assert_eq!(route(&r, "DELETE FROM users", &ctx()).rule, Some(1));
    assert_eq!(route(&r, "DELETE FROM items", &ctx()).rule, Some(2));
    assert_eq!(d.bucket, None, "no percent rule consulted");

    let r = Router::new(&config("defaults: { primary: new, mirror: old }\n"));
    let d = route(&r, "DELETE FROM items", &ctx());
    assert_eq!(d.rule, None);
    assert_eq!(d.route.primary, BackendId::New);
    assert_eq!(d.route.mirror, Some(BackendId::Old));
}

#[test]
fn rollback_ignores_rules() {
    let r = Router::new(&config(
        "rollback: true\ndefaults: { primary: new, mirror: old }\nrules:\n  - { name: all-new, primary: new }\n",
    ));
    let d = route(&r, "SELECT 1", &ctx());
    assert_eq!(
        d,
        Decision {
            rule: None,
            route: Route::OLD_ONLY,
            bucket: None
        }
    );
}

fn percent_router(percent: u8, sticky: &str) -> Router {
    Router::new(&config(&format!(
        r#"
rules:
  - {{ name: slice, match: {{ kind: [read] }}, percent: {percent}, sticky: {sticky}, primary: new }}
  - {{ name: rest, match: {{ kind: [read] }}, primary: old, mirror: new }}
"#
    )))
}

#[test]
fn outside_percent_falls_through_to_later_rules() {
    let r = percent_router(50, "session");
    let (mut inside, mut outside) = (0, 0);
    for key in 0..200u64 {
        let c = SessionContext {
            session_key: key,
            ..ctx()
        };
        let d = route(&r, "SELECT 1", &c);
        let b = bucket(Sticky::Session, &key.to_string());
        assert_eq!(d.bucket, Some(b));
        if in_percent(b, 50) {
            assert_eq!(d.rule, Some(0));
            inside += 1;
        } else {
            assert_eq!(d.rule, Some(1), "falls through to the next rule");
            assert_eq!(d.route.mirror, Some(BackendId::New));
            outside += 1;
        }
    }
    assert!(inside > 50 && outside > 50, "{inside} {outside}");
    // Writes do not match either rule: defaults, no bucket consulted.
    let d = route(&r, "INSERT INTO t VALUES (1)", &ctx());
    assert_eq!((d.rule, d.bucket), (None, None));
}

#[test]
fn percent_extremes() {
    for key in 0..100u64 {
        let c = SessionContext {
            session_key: key,
            ..ctx()
        };
        assert_eq!(
            route(&percent_router(0, "session"), "SELECT 1", &c).rule,
            Some(1)
        );
        let d = route(&percent_router(100, "session"), "SELECT 1", &c);
        assert_eq!((d.rule, d.bucket), (Some(0), None));
    }
}

#[test]
fn sticky_keys_are_sticky_and_monotonic() {
    // The same user lands on the same side in every session, and a user
    // routed to new at 10% is still routed to new at 20% (and in other rules).
    let users: Vec<String> = (0..2000).map(|i| format!("user{i}")).collect();
    let mut previous: Option<Vec<bool>> = None;
    for percent in [0u8, 1, 5, 10, 20, 50, 99, 100] {
        let r = percent_router(percent, "user");
        let now: Vec<bool> = users
            .iter()
            .map(|u| {
                let a = route(
                    &r,
                    "SELECT 1",
                    &SessionContext {
                        user: u,
                        session_key: 1,
                        ..ctx()
                    },
                );
                let b = route(
                    &r,
                    "SELECT 2",
                    &SessionContext {
                        user: u,
                        session_key: 2,
                        ..ctx()
                    },
                );
                assert_eq!(a.rule, b.rule, "sticky on user, not session");
                a.rule == Some(0)
            })
            .collect();
        let share = now.iter().filter(|x| **x).count();
        let expected = users.len() * usize::from(percent) / 100;
        assert!(
            share.abs_diff(expected) <= 70,
            "{percent}%: {share} of {}",
            users.len()
        );
        if let Some(prev) = &previous {
            assert!(
                prev.iter().zip(&now).all(|(was, is)| !was || *is),
                "raising to {percent}% moved a user back to old"
            );
        }
        previous = Some(now);
    }
}

#[test]
fn sticky_dimensions() {
    let app = |name: &'static str, key: u64| SessionContext {
        application_name: name,
        session_key: key,
        ..ctx()
    };
    let r = percent_router(30, "application_name");
    for name in ["api", "worker", "psql", ""] {
        let first = route(&r, "SELECT 1", &app(name, 1));
        assert_eq!(first.bucket, Some(bucket(Sticky::ApplicationName, name)));
        for key in 2..20 {
            assert_eq!(route(&r, "SELECT 1", &app(name, key)).rule, first.rule);
        }
    }
    let r = percent_router(30, "client_addr");
    let at = |a: &str| SessionContext {
        client_addr: Some(a.parse().unwrap()),
        ..ctx()
    };
    let v4 = route(&r, "SELECT 1", &at("10.9.8.7"));
    assert_eq!(v4.bucket, Some(bucket(Sticky::ClientAddr, "10.9.8.7")));
    assert_eq!(
        route(&r, "SELECT 1", &at("::ffff:10.9.8.7")).bucket,
        v4.bucket
    );
}

#[test]
fn bucket_distribution() {
    // 10 000 random session keys (fixed-seed splitmix64) and 10 000
    // structured user names: 10% each within ±1% of the keys.
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let random_in = (0..10_000)
        .filter(|_| in_percent(bucket(Sticky::Session, &next().to_string()), 10))
        .count();
    assert!((900..=1100).contains(&random_in), "{random_in}");
    let users_in = (0..10_000)
        .filter(|i| in_percent(bucket(Sticky::User, &format!("user{i}")), 10))
        .count();
    assert!((900..=1100).contains(&users_in), "{users_in}");
    let addrs_in = (0..10_000u32)
        .filter(|i| {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            in_percent(bucket(Sticky::ClientAddr, &ip.to_string()), 10)
        })
        .count();
    assert!((900..=1100).contains(&addrs_in), "{addrs_in}");
    assert!((0..10_000).all(|i| bucket(Sticky::Session, &i.to_string()) < BUCKETS));
}

#[test]
fn documented_buckets() {
    // Computed with the Python in route/bucket.rs' tests.
    assert_eq!(bucket(Sticky::Session, "42"), 3314);
    assert_eq!(bucket(Sticky::User, "app"), 6045);
    assert_eq!(bucket(Sticky::ApplicationName, "psql"), 6202);
    assert_eq!(bucket(Sticky::ClientAddr, "10.1.2.3"), 3635);
}

#[test]
fn explain_reports_everything() {
    let cfg = config(
        r#"
rules:
  - { name: users-read-shift, match: { kind: [read], tables: [users] }, percent: 10, sticky: user, primary: new, mirror: old, compare: true }
  - { name: reads, match: { kind: [read] }, primary: old, mirror: new }
  - { name: writes, match: { kind: [write] }, percent: 100, primary: old }
"#,
    );
    let classifier = Classifier::new(100);
    let text = explain(
        &cfg,
        &classifier,
        &ctx(),
        "BEGIN; SELECT * FROM users WHERE id = 7; UPDATE users SET n = 'x'; COMMIT",
    );
    for needle in [
        "statements:   4, strongest kind write",
        "statement 2: SELECT * FROM users WHERE id = 7",
        "kind:         read",
        "tables:       users",
        "order by:     no",
        "transaction:  begin",
        "digest:       SELECT * FROM users WHERE id = $1",
        "fingerprint:  ",
        // user "app" is bucket 6045: outside 10%.
        "#0 users-read-shift: criteria match, but user bucket 6045 is outside 10% (buckets 0-999): next rule",
        "#1 reads: applies",
        "rule:         #1 reads",
        "route:        primary=old mirror=new",
        "decides the transaction's primary: old until it ends",
        "inside a transaction: primary pinned to old by statement 2",
        "#1 reads: kind does not match",
        "digest:       UPDATE users SET n = $1",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(text.contains("starts a transaction"), "{text}");

    let inside = explain(
        &cfg,
        &classifier,
        &SessionContext {
            user: "user31",
            ..ctx()
        },
        "SELECT * FROM users",
    );
    let b = bucket(Sticky::User, "user31");
    assert!(
        b < 1000,
        "pick a user inside 10% for this test (bucket {b})"
    );
    assert!(
        inside.contains(&format!(
            "sticky:       user key \"user31\" -> bucket {b}, inside 10% (buckets 0-999)"
        )),
        "{inside}"
    );
    assert!(
        inside.contains("rule:         #0 users-read-shift"),
        "{inside}"
    );

    let defaults = explain(&cfg, &classifier, &ctx(), "VACUUM t");
    assert!(
        defaults.contains("rule:         no rule: defaults"),
        "{defaults}"
    );

    let broken = explain(&cfg, &classifier, &ctx(), "SELEC 1");
    assert!(broken.contains("parse error:  syntax error"), "{broken}");
    assert!(broken.contains("kind:         write"), "{broken}");

    let mut rolled_back = cfg.clone();
    rolled_back.rollback = true;
    let text = explain(&rolled_back, &classifier, &ctx(), "SELECT * FROM users");
    assert!(text.contains("rollback:     ON"), "{text}");
    assert!(text.contains("rule:         none: rollback"), "{text}");
    assert!(
        text.contains("route:        primary=old mirror=none"),
        "{text}"
    );
}

#[test]
fn many_sql_rules_agree_with_their_own_regexes() {
    // Several `sql` rules are answered by one combined scan; the outcome
    // must be what each rule's regex says on its own.
    let patterns = [
        r"(?i)\bfrom\s+users\b",
        r"^UPDATE",
        r"shard_(\d+)",
        r"(?i)limit\s+1$",
        r"ünï",
    ];
    let mut yaml = String::from("rules:\n");
    for (i, p) in patterns.iter().enumerate() {
        let kind = if i == 1 { "[write]" } else { "[read, write]" };
        yaml.push_str(&format!(
            "  - {{ name: p{i}, match: {{ kind: {kind}, sql: '{p}' }}, primary: new }}\n"
        ));
    }
    let cfg = config(&yaml);
    let router = Router::new(&cfg);
    let regexes: Vec<regex::Regex> = patterns
        .iter()
        .map(|p| regex::Regex::new(p).unwrap())
        .collect();
    for sql in [
        "SELECT * FROM users LIMIT 1",
        "SELECT * FROM accounts WHERE shard_7 LIMIT 1",
        "UPDATE t SET a = 'ünïcode'",
        "update t set a = 1",
        "SELECT 1",
    ] {
        let classifier = Classifier::new(0);
        let c = classifier.classify(sql);
        let stmt = &c.statements[0];
        let expected = (0..patterns.len()).find(|&i| {
            (i != 1 || stmt.kind == pgshift_rules::Kind::Write) && regexes[i].is_match(sql)
        });
        assert_eq!(router.route(stmt, sql, &ctx()).rule, expected, "{sql}");
    }
}
