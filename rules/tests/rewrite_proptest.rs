//! Properties of the rewriter over generated statements: the trip through
//! the parse tree and the deparser keeps the statement's meaning (same tree,
//! locations aside), and an empty map never changes anything.

use pgshift_rules::{Rewrite, RewriteMap, Rewriter, TableName};
use proptest::prelude::*;
use serde_json::Value;

fn table() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "users",
        "orders",
        "public.orders",
        "\"Mixed Case\"",
        "app.line_items",
    ])
}

fn column() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "id",
        "email",
        "total",
        "\"Created At\"",
        "status",
        "user_id",
    ])
}

fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        (0i64..1000).prop_map(|n| n.to_string()),
        "[a-z' ]{0,8}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
        (1u8..5).prop_map(|n| format!("${n}")),
        Just("NULL".to_owned()),
        Just("$$users.email$$".to_owned()),
    ]
}

fn expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        column().prop_map(str::to_owned),
        ("[tu]", column()).prop_map(|(q, c)| format!("{q}.{c}")),
        literal(),
    ];
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop::sample::select(vec!["=", "<", "+", "||", "<>"]),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("coalesce({a}, {b})")),
            inner.clone().prop_map(|a| format!("{a} IS NOT NULL")),
            (inner.clone(), inner.clone())
                .prop_map(|(a, b)| format!("CASE WHEN {a} THEN {b} ELSE NULL END")),
            (table(), inner.clone())
                .prop_map(|(t, w)| format!("EXISTS (SELECT 1 FROM {t} x WHERE {w})")),
            inner.clone().prop_map(|a| format!("lower({a}::text)")),
        ]
    })
}

fn select() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(expr(), 1..4),
        table(),
        prop::option::of((table(), expr())),
        prop::option::of(expr()),
        prop::option::of(column()),
        any::<bool>(),
    )
        .prop_map(|(targets, t, join, filter, order, window)| {
            let mut s = format!("SELECT {}", targets.join(", "));
            if window {
                s.push_str(", row_number() OVER (PARTITION BY t.id ORDER BY t.status DESC)");
            }
            s.push_str(&format!(" FROM {t} t"));
            if let Some((j, on)) = join {
                s.push_str(&format!(" LEFT JOIN {j} u ON {on}"));
            }
            if let Some(w) = filter {
                s.push_str(&format!(" WHERE {w}"));
            }
            if let Some(o) = order {
                s.push_str(&format!(" ORDER BY {o} DESC NULLS LAST LIMIT 10"));
            }
            s
        })
}

fn statement() -> impl Strategy<Value = String> {
    prop_oneof![
        select(),
        (select(), select()).prop_map(|(a, b)| format!("WITH w AS ({a}) {b}")),
        (table(), prop::collection::vec(literal(), 2..3)).prop_map(|(t, v)| format!(
            "INSERT INTO {t} (email, total) VALUES ({}) ON CONFLICT (email) DO UPDATE SET total = EXCLUDED.total RETURNING id, email",
            v.join(", ")
        )),
        (table(), expr(), expr()).prop_map(|(t, a, w)| format!(
            "UPDATE {t} AS t SET email = {a} FROM orders u WHERE {w} RETURNING t.*"
        )),
        (table(), expr()).prop_map(|(t, w)| format!("DELETE FROM {t} t USING users u WHERE {w}")),
        (select(), select()).prop_map(|(a, b)| format!("{a}; {b}")),
    ]
}

/// The tree as JSON, without anything that records where text was.
fn shape(sql: &str) -> Value {
    let tree = pg_query::parse(sql, 0).expect("generated statement parses");
    let mut value = serde_json::to_value(&tree.protobuf).expect("tree serialises");
    strip(&mut value);
    value
}

fn strip(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for key in [
                "location",
                "stmt_location",
                "stmt_len",
                "rexpr_list_start",
                "rexpr_list_end",
                "list_start",
                "list_end",
            ] {
                map.remove(key);
            }
            map.values_mut().for_each(strip);
        }
        Value::Array(items) => items.iter_mut().for_each(strip),
        _ => {}
    }
}

fn unrelated_map() -> RewriteMap {
    RewriteMap {
        tables: vec![(
            TableName::new(None, "zz_absent"),
            TableName::new(None, "zz_other"),
        )],
        columns: vec![(
            TableName::new(None, "zz_absent"),
            "zz_col".into(),
            "zz_new".into(),
        )],
        replace: Vec::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn tree_round_trip_keeps_the_statement(sql in statement()) {
        let rewriter = Rewriter::new(&unrelated_map(), None, None, 0);
        match rewriter.rewrite_through_tree(&sql) {
            Rewrite::Changed(out) => prop_assert_eq!(shape(&sql), shape(&out), "{} -> {}", sql, out),
            other => prop_assert!(false, "{sql}: {other:?}"),
        }
        // The prefilter sees none of the map's names: the text goes as is.
        prop_assert_eq!(rewriter.rewrite(&sql), Rewrite::Unchanged);
    }

    #[test]
    fn empty_map_never_changes_anything(sql in statement(), junk in "\\PC{0,40}") {
        let rewriter = Rewriter::new(&RewriteMap::default(), None, None, 100);
        prop_assert!(rewriter.is_noop());
        prop_assert_eq!(rewriter.rewrite(&sql), Rewrite::Unchanged);
        prop_assert_eq!(rewriter.rewrite(&junk), Rewrite::Unchanged);
    }
}
