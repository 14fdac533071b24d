//! Texts that differ only in literals share one cached classification: for
//! every text of a corpus, variants with other literals of other lengths
//! must classify, through a cache that saw the original first, exactly as
//! they classify uncached (kinds, tables, spans, digest and all).

mod classify_support;
mod shape_support;

use pgshift_rules::classify::shape::shape;
use pgshift_rules::Classifier;
use proptest::prelude::*;
use shape_support::with_literals;

const TEXTS: &[&str] = &[
    "SELECT abalance FROM pgbench_accounts WHERE aid = 4521;",
    "UPDATE pgbench_accounts SET abalance = abalance + -3771 WHERE aid = 51231;",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (3, 1, 80123, -1234, CURRENT_TIMESTAMP);",
    "SELECT * FROM users WHERE email = 'a@b.c' AND age > 21 ORDER BY 1 LIMIT 10 OFFSET 20",
    "SELECT id FROM t WHERE x IN (1, 2, 3) AND y = 'it''s' AND z BETWEEN 1.5 AND 2.25",
    "select u.id, o.total from users u join orders o on o.user_id = u.id where o.created_at > '2024-01-01'::date and o.total >= 100.00",
    "SELECT CASE WHEN a > 1 THEN 'big' ELSE 'small' END FROM t WHERE b <> 'x' /* it's a comment */ -- trailing 'quote'\n",
    "SELECT now() - INTERVAL '1 day', 'a' || 'b', 1 + 2 * 3",
    "WITH moved AS (DELETE FROM queue WHERE id = 7 RETURNING *) INSERT INTO done SELECT * FROM moved",
    "DELETE FROM sessions WHERE expires < '2024-06-01 00:00:00' AND user_id = 42",
    "SELECT nextval('orders_id_seq'), 5",
    "SELECT set_config('search_path', 'app', false)",
    "SELECT pg_advisory_lock(12345)",
    "SELECT * FROM t WHERE a = 1 FOR UPDATE",
    "SELECT 1; SELECT 'two'; UPDATE t SET a = 3 WHERE b = 'four';",
    "BEGIN; UPDATE accounts SET balance = balance - 100 WHERE id = 1; COMMIT;",
    "EXPLAIN (ANALYZE 0) UPDATE t SET a = 1",
    "EXPLAIN (ANALYZE 1) UPDATE t SET a = 1",
    "PREPARE TRANSACTION 'gid-1'",
    "COMMIT PREPARED 'gid-22'",
    "SET statement_timeout = 5000",
    "SET search_path TO 'app', public",
    "INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y') ON CONFLICT (a) DO UPDATE SET b = 'z'",
    "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = 1 WHEN NOT MATCHED THEN INSERT VALUES (s.id, 2)",
    "VALUES (1, 'a'), (2, 'b') ORDER BY 1",
    "TABLE t",
    "SELECT * FROM t LIMIT 5",
    "COPY (SELECT * FROM t WHERE a = 1 ORDER BY b) TO STDOUT",
    "DO 'BEGIN PERFORM 1; END'",
    "CALL do_things(1, 'a')",
    "LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT 1",
    "CREATE TABLE t (a int DEFAULT 5, b text DEFAULT 'x')",
    "ALTER TABLE t ALTER COLUMN a SET DEFAULT 7",
    "DECLARE c CURSOR FOR SELECT * FROM t WHERE a = 1",
    "FETCH 5 FROM c",
    "SELECT * FROM t WHERE a = $1 AND b = 3",
    "SELECT 'a'\n'b' FROM t",
    "SELECT 1 FROM t WHERE \"weird'col\" = 'v'",
    "SELECT 123456789, 1234567890",
    "SELECT  1 ;  ",
    "SELECT -- only a comment: 'x'\n 2",
];

/// Checks the variants of `sql`; true when they were served from the
/// original's cached classification (a single parse).
fn check_variants(sql: &str) -> bool {
    let Some(s) = shape(sql) else { return false };
    let shared = Classifier::new(1000);
    shared.classify(sql);
    for pick in 0..4 {
        let variant = with_literals(sql, &s.literals, pick);
        assert_eq!(
            shape(&variant).map(|v| v.key).as_ref(),
            Some(&s.key),
            "{variant}"
        );
        let expected = Classifier::new(0).classify(&variant);
        assert_eq!(
            *shared.classify(&variant),
            *expected,
            "{sql}\n -> {variant}"
        );
        for st in &expected.statements {
            assert!(variant.get(st.span.clone()).is_some(), "{variant}");
        }
    }
    shared.stats().misses == 1
}

#[test]
fn variants_of_the_corpus_classify_as_uncached() {
    let (mut shaped, mut shared) = (0, 0);
    for sql in TEXTS {
        if shape(sql).is_some() {
            shaped += 1;
        }
        if check_variants(sql) {
            shared += 1;
        }
    }
    assert!(shaped >= 35, "only {shaped} texts have a shape");
    assert!(shared >= 20, "only {shared} texts shared a parse");
}

#[test]
fn variants_of_the_classification_corpus_classify_as_uncached() {
    let shaped = classify_support::CORPUS
        .iter()
        .filter(|case| shape(case.sql).is_some())
        .count();
    for case in classify_support::CORPUS {
        check_variants(case.sql);
    }
    assert!(
        shaped >= 40,
        "only {shaped} corpus statements have literals"
    );
}

#[test]
fn variants_of_the_rewrite_corpus_classify_as_uncached() {
    let corpus = include_str!("data/rewrite_corpus.txt");
    let mut inputs = 0;
    for case in corpus.split("\n=== ").skip(1) {
        let Some((_, rest)) = case.split_once('\n') else {
            continue;
        };
        let Some((input, _)) = rest.split_once("\n---\n") else {
            continue;
        };
        inputs += 1;
        check_variants(input);
    }
    assert!(inputs > 50, "{inputs}");
}

proptest! {
    #[test]
    fn any_text_shapes_and_classifies_as_uncached(
        sql in prop_oneof!["\\PC{0,80}", "['\"$0-9a-zE_.*/\\\\ \n();,&:-]{0,120}"],
    ) {
        if let Some(s) = shape(&sql) {
            let mut last = 0;
            for r in &s.literals {
                prop_assert!(r.start >= last && r.end > r.start);
                let lit = &sql[r.clone()];
                prop_assert!(lit.starts_with('\'') || lit.as_bytes()[0].is_ascii_digit());
                last = r.end;
            }
            check_variants(&sql);
        }
    }

    #[test]
    fn generated_statements_classify_as_uncached(
        cols in prop::collection::vec("[a-z]{1,6}", 1..4),
        lits in prop::collection::vec(
            prop_oneof![
                (0u32..2_000_000_000).prop_map(|n| n.to_string()),
                "[a-z' ]{0,12}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
                (0u32..100_000, 0u32..1000).prop_map(|(a, b)| format!("{a}.{b}")),
            ],
            1..5,
        ),
        template in 0usize..4,
    ) {
        let conds: Vec<String> = cols
            .iter()
            .zip(lits.iter().cycle())
            .map(|(c, l)| format!("{c} = {l}"))
            .collect();
        let sql = match template {
            0 => format!("SELECT * FROM t WHERE {}", conds.join(" AND ")),
            1 => format!("UPDATE t SET {} WHERE id = {}", conds.join(", "), lits[0]),
            2 => format!("INSERT INTO t VALUES ({})", lits.join(", ")),
            _ => format!("SELECT {} FROM t ORDER BY 1; DELETE FROM t WHERE {}", lits.join(", "), conds[0]),
        };
        check_variants(&sql);
    }
}
