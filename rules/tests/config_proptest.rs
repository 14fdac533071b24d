//! Hostile or random input never panics (or overflows the stack).

use pgshift_rules::{parse_config, TableName};
use proptest::prelude::*;

fn env(name: &str) -> Option<String> {
    (name == "X").then(|| "p@ss:w/rd?%".to_owned())
}

const KEYS: &[&str] = &[
    "listen",
    "admin",
    "admin_token",
    "tls",
    "cert",
    "key",
    "limits",
    "max_clients",
    "startup_timeout",
    "max_message_size",
    "telemetry",
    "log_format",
    "backends",
    "old",
    "new",
    "url",
    "auth",
    "method",
    "users",
    "name",
    "password",
    "rollback",
    "defaults",
    "primary",
    "mirror",
    "compare",
    "mode",
    "queue",
    "sample",
    "float_tolerance",
    "rules",
    "match",
    "kind",
    "tables",
    "sql",
    "client_addr",
    "percent",
    "sticky",
    "rewrite",
    "columns",
    "replace",
    "pattern",
    "with",
    "- name",
    "-",
];

const VALUES: &[&str] = &[
    "",
    "~",
    "true",
    "no",
    "0",
    "-1",
    "101",
    "1e999",
    ".nan",
    "10s",
    "10",
    "1.5s",
    "1GiB",
    "\"${X}\"",
    "\"${NOPE}\"",
    "\"$${X}\"",
    "old",
    "new",
    "none",
    "[read, write]",
    "[]",
    "{}",
    "\"(\"",
    "\"postgres://a:${X}@h/d\"",
    "\"postgres://[::1\"",
    "\"SCRAM-SHA-256$1:a$b:c\"",
    "md5d41d8cd98f00b204e9800998ecf8427e",
    "\"a..b\"",
    "\"\\\"x\"",
    "[10.0.0.0/8, ::1, x]",
    "&a 5",
    "*a",
    "!!str 5",
    "{ a: [1, {b: c}] }",
    "'it''s'",
    "|\n  block",
];

fn yamlish() -> impl Strategy<Value = String> {
    let line = (
        0usize..4,
        prop::sample::select(KEYS),
        prop::sample::select(VALUES),
    )
        .prop_map(|(indent, k, v)| format!("{}{k}: {v}", "  ".repeat(indent)));
    prop::collection::vec(line, 0..24).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = parse_config(&text, &env);
    }

    #[test]
    fn config_shaped_text_never_panics(text in yamlish()) {
        if let Err(errs) = parse_config(&text, &env) {
            prop_assert!(!errs.is_empty());
            for e in &errs {
                prop_assert!(!e.message.contains('\n'));
                // The password from the environment never shows up.
                prop_assert!(!e.to_string().contains("p@ss:w/rd"));
            }
        }
    }

    #[test]
    fn table_name_parse_never_panics_and_round_trips(text in any::<String>()) {
        if let Ok(name) = TableName::parse(&text) {
            prop_assert_eq!(TableName::parse(&name.to_string()), Ok(name));
        }
    }

    #[test]
    fn table_name_ident_like_round_trips(text in "[A-Za-z_\".$ ]{0,20}") {
        if let Ok(name) = TableName::parse(&text) {
            prop_assert_eq!(TableName::parse(&name.to_string()), Ok(name));
        }
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for open in ["[", "{a: ", "- "] {
        let text = format!("rules: {}", open.repeat(100_000));
        assert!(parse_config(&text, &env).is_err());
    }
    let mut text = String::from("rules:\n");
    for depth in 0..5_000 {
        text.push_str(&" ".repeat(depth));
        text.push_str("- \n");
    }
    assert!(parse_config(&text, &env).is_err());
}

#[test]
fn alias_bombs_are_bounded() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..30 {
        let p = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    assert!(parse_config(&text, &env).is_err());
}
