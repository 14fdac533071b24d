//! A corpus of single statements: kind, tables and top-level ORDER BY of
//! each, as the classifier must report them.

use pgshift_rules::{Classifier, Kind, TableName};

mod classify_support;

use classify_support::CORPUS;

fn table_strings(tables: &[TableName]) -> Vec<String> {
    tables.iter().map(ToString::to_string).collect()
}

#[test]
fn corpus() {
    assert!(CORPUS.len() >= 60);
    let classifier = Classifier::new(1000);
    let mut failures = Vec::new();
    for case in CORPUS {
        let c = classifier.classify(case.sql);
        let got = match c.statements.as_slice() {
            [one] => one,
            other => {
                failures.push(format!("{}: {} statements", case.sql, other.len()));
                continue;
            }
        };
        if c.parse_error.is_some() {
            failures.push(format!("{}: parse error {:?}", case.sql, c.parse_error));
        }
        if got.kind != case.kind {
            failures.push(format!("{}: kind {} != {}", case.sql, got.kind, case.kind));
        }
        if table_strings(&got.tables) != case.tables {
            failures.push(format!(
                "{}: tables {:?} != {:?}",
                case.sql,
                table_strings(&got.tables),
                case.tables
            ));
        }
        if got.has_order_by != case.order_by {
            failures.push(format!("{}: order by {}", case.sql, got.has_order_by));
        }
        if (got.kind == Kind::Transaction) != got.txn.is_some() {
            failures.push(format!("{}: kind/txn disagree", case.sql));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    let stats = classifier.stats();
    assert_eq!(stats.parse_failures, 0);
    assert_eq!(stats.misses as usize, CORPUS.len());
}

#[test]
fn every_kind_is_covered() {
    for kind in Kind::ALL {
        assert!(
            CORPUS.iter().any(|c| c.kind == *kind),
            "no corpus entry of kind {kind}"
        );
    }
}
