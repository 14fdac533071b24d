//! The rewriter's contract beyond single statements: validation against
//! catalogs, refusals, regex replacements, the cache, and hostile input.

mod rewrite_support;

use std::sync::Arc;

use pgshift_rules::{validate, Catalog, Rewrite, RewriteMap, Rewriter, TableName};
use proptest::prelude::*;
use regex::Regex;
use rewrite_support::{map, rewriter, source, target};

fn changed(r: Rewrite) -> String {
    match r {
        Rewrite::Changed(s) => s.to_string(),
        other => panic!("expected Changed, got {other:?}"),
    }
}

fn refused(r: Rewrite) -> String {
    match r {
        Rewrite::Refused(s) => s.to_string(),
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[test]
fn validate_accepts_a_consistent_map() {
    assert_eq!(
        validate(&map(), &target(), Some(&source())),
        Vec::<String>::new()
    );
    assert_eq!(validate(&map(), &target(), None), Vec::<String>::new());
}

#[test]
fn validate_names_every_broken_entry() {
    let mut m = map();
    m.tables.push((
        TableName::new(None, "ghosts"),
        TableName::new(None, "spirits"),
    ));
    m.columns.push((
        TableName::new(None, "users"),
        "phone".into(),
        "phone_number".into(),
    ));
    m.columns
        .push((TableName::new(None, "nowhere"), "a".into(), "b".into()));
    let problems = validate(&m, &target(), Some(&source()));
    let has = |needle: &str| problems.iter().any(|p| p.contains(needle));
    assert!(
        has("ghosts -> spirits: table spirits does not exist on this backend"),
        "{problems:#?}"
    );
    assert!(has(
        "ghosts -> spirits: table ghosts does not exist on the application's backend"
    ));
    assert!(has(
        "users.phone -> phone_number: table accounts has no column phone_number on this backend"
    ));
    assert!(has(
        "users.phone -> phone_number: table users has no column phone on the application's backend"
    ));
    assert!(has(
        "nowhere.a -> b: table nowhere does not exist on this backend"
    ));
    assert_eq!(problems.len(), 6, "{problems:#?}");
}

#[test]
fn validate_resolves_unqualified_targets_through_search_path() {
    let mut t = Catalog::new(vec!["app".into(), "public".into()]);
    t.add_table("public", "accounts", vec!["email_address".into()]);
    let m = RewriteMap {
        tables: vec![(
            TableName::new(None, "users"),
            TableName::new(None, "accounts"),
        )],
        columns: vec![(
            TableName::new(None, "users"),
            "email".into(),
            "email_address".into(),
        )],
        replace: Vec::new(),
    };
    assert!(validate(&m, &t, None).is_empty());
    let t = Catalog::new(vec!["app".into()]);
    assert_eq!(validate(&m, &t, None).len(), 2);
}

#[test]
fn refusals_say_why() {
    let r = rewriter(false);
    let reason = refused(r.rewrite("SELECT email FROM users WHERE"));
    assert!(reason.starts_with("cannot parse: syntax error"), "{reason}");
    assert!(
        reason.contains("users") || reason.contains("email"),
        "{reason}"
    );
    assert!(refused(r.rewrite("SELECT * FROM users")).contains("needs the catalog"));
    assert!(refused(r.rewrite("ALTER TABLE users ADD COLUMN x int")).contains("AlterTableStmt"));
    assert!(refused(r.rewrite(
        "MERGE INTO users u USING orders o ON o.user_id = u.id WHEN MATCHED THEN DELETE"
    ))
    .contains("MergeStmt"));
    // A NUL byte cannot reach the parser.
    assert!(refused(r.rewrite("SELECT email\0 FROM users")).contains("NUL"));
    // Huge texts are not parsed.
    let big = format!(
        "SELECT email FROM users WHERE id IN ({})",
        "1,".repeat(200_000) + "1"
    );
    assert!(refused(r.rewrite(&big)).contains("byte rewrite limit"));
    // Text that does not parse and names nothing renamed goes as is.
    assert_eq!(r.rewrite("SELEC 1 FROM products"), Rewrite::Unchanged);
}

#[test]
fn replace_runs_after_the_tree_and_alone() {
    let mut m = map();
    m.replace.push((
        Regex::new(r"\blegacy_total\(").unwrap(),
        "order_total(".into(),
    ));
    let r = Rewriter::new(&m, None, None, 10);
    assert_eq!(
        changed(r.rewrite("SELECT legacy_total(id) FROM products")),
        "SELECT order_total(id) FROM products"
    );
    assert_eq!(
        changed(r.rewrite("SELECT legacy_total(id), email FROM users")),
        "SELECT order_total(id), email_address AS email FROM accounts"
    );
    assert_eq!(r.rewrite("SELECT 1"), Rewrite::Unchanged);

    let only_replace = RewriteMap {
        replace: vec![(Regex::new("(?i)nolock").unwrap(), "".into())],
        ..RewriteMap::default()
    };
    let r = Rewriter::new(&only_replace, None, None, 10);
    assert!(!r.is_noop());
    assert_eq!(changed(r.rewrite("SELECT 1 /*NOLOCK*/")), "SELECT 1 /**/");
}

#[test]
fn catalog_lookups() {
    let c = source();
    assert_eq!(c.resolve("users"), Some("public"));
    assert_eq!(c.resolve("nope"), None);
    assert_eq!(
        c.columns(&TableName::new(None, "users"))
            .map(<[String]>::len),
        Some(4)
    );
    assert!(c.has_table(&TableName::new(Some("public"), "LegacyItems")));
    assert!(!c.has_table(&TableName::new(Some("sales"), "users")));
}

#[test]
fn source_search_path_decides_what_unqualified_names_mean() {
    // The application's users live in schema app, found first.
    let m = RewriteMap {
        tables: vec![(
            TableName::new(Some("app"), "users"),
            TableName::new(Some("core"), "users"),
        )],
        columns: Vec::new(),
        replace: Vec::new(),
    };
    let mut s = Catalog::new(vec!["app".into(), "public".into()]);
    s.add_table("app", "users", vec!["id".into()]);
    let r = Rewriter::new(&m, None, Some(Arc::new(s)), 10);
    assert_eq!(
        changed(r.rewrite("SELECT id FROM users")),
        "SELECT id FROM core.users"
    );
    assert_eq!(r.rewrite("SELECT id FROM public.users"), Rewrite::Unchanged);
    // Without a catalog an unqualified name is taken to be in public.
    let r = Rewriter::new(&m, None, None, 10);
    assert_eq!(r.rewrite("SELECT id FROM users"), Rewrite::Unchanged);
    assert_eq!(
        changed(r.rewrite("SELECT id FROM app.users")),
        "SELECT id FROM core.users"
    );
}

#[test]
fn cache_hits_and_stays_bounded() {
    let r = Rewriter::new(&map(), None, None, 40);
    let a = r.rewrite("SELECT email FROM users");
    let b = r.rewrite("SELECT email FROM users");
    match (&a, &b) {
        (Rewrite::Changed(x), Rewrite::Changed(y)) => assert!(Arc::ptr_eq(x, y)),
        _ => panic!("{a:?}"),
    }
    // Texts that differ only in literals share one rewrite of their shape.
    for i in 0..500 {
        let got = r.rewrite(&format!("SELECT email FROM users WHERE id = {i}"));
        assert_eq!(
            changed(got),
            format!("SELECT email_address AS email FROM accounts WHERE id = {i}")
        );
    }
    let s = r.stats();
    assert_eq!((s.misses, s.hits), (2, 500), "{s:?}");
    for i in 0..500 {
        r.rewrite(&format!("SELECT email, c{i} FROM users"));
    }
    let s = r.stats();
    assert!(s.entries <= 80, "{s:?}");
    assert!(s.misses >= 500, "{s:?}");
    // Huge texts are answered but never kept.
    let r = Rewriter::new(&map(), None, None, 40);
    let big = format!(
        "SELECT email FROM users WHERE name = '{}'",
        "x".repeat(70_000)
    );
    assert!(matches!(r.rewrite(&big), Rewrite::Changed(_)));
    assert_eq!(r.stats().entries, 0);
    // Capacity 0 disables the cache.
    let r = Rewriter::new(&map(), None, None, 0);
    r.rewrite("SELECT email FROM users");
    assert_eq!(r.stats().entries, 0);
}

#[test]
fn comments_survive_when_safe() {
    let r = rewriter(false);
    let out = changed(r.rewrite("/* controller:users,action:show */ SELECT email FROM users"));
    assert!(out.contains("/* controller:users,action:show */"), "{out}");
    let out = changed(r.rewrite("SELECT email -- the address\nFROM users WHERE id = 1"));
    assert!(pg_query::parse(&out, 0).is_ok(), "{out}");
    assert!(out.contains("accounts"), "{out}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Never a panic, whatever the text; a Changed text always parses.
    #[test]
    fn any_text_is_answered(sql in prop_oneof![
        "\\PC{0,80}",
        "(SELECT|FROM|WHERE|users|email|u\\.|\\*|,|\\(|\\)|'|\"|\\$\\$|;|--|/\\*| )*",
    ]) {
        for r in [rewriter(false), rewriter(true)] {
            if let Rewrite::Changed(out) = r.rewrite(&sql) {
                prop_assert!(pg_query::parse(&out, 0).is_ok(), "{sql:?} -> {out}");
            }
        }
    }
}

#[test]
fn a_shape_without_a_template_is_rewritten_text_by_text() {
    // The comment holds the sentinel the literal is replaced by when the
    // template is learned, so the template cannot tell where the literal
    // went: each text is rewritten on its own, correctly, and the shape is
    // remembered as one to rewrite text by text (not learned again).
    let r = Rewriter::new(&map(), None, None, 40);
    for id in [5, 61, 7] {
        let sql = format!("SELECT email FROM users WHERE id = {id} /* 917350000 */");
        let got = r.rewrite(&sql);
        assert_eq!(got, r.rewrite_uncached(&sql), "{sql}");
        assert!(changed(got).contains(&format!("id = {id}")));
    }
    let s = r.stats();
    assert_eq!((s.misses, s.entries), (3, 4), "{s:?}");
}
