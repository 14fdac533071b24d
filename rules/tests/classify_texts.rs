//! Whole query texts: multi-statement spans, transaction and session
//! effects, digests, parse failures, hostile nesting and the cache.

use std::sync::Arc;

use pgshift_rules::{Classifier, ClassifierOptions, Kind, SessionEffect, TableName, TxnControl};

fn classifier() -> Classifier {
    Classifier::new(1000)
}

fn texts<'a>(sql: &'a str, c: &pgshift_rules::Classification) -> Vec<&'a str> {
    c.statements.iter().map(|s| s.text(sql)).collect()
}

#[test]
fn multi_statement_spans() {
    let cl = classifier();
    let sql = "  BEGIN;\n  UPDATE t SET a = ';' WHERE id = 1 ;; /* why */ SELECT 1\n; COMMIT ;  -- done\n";
    let c = cl.classify(sql);
    assert_eq!(
        texts(sql, &c),
        [
            "BEGIN",
            "UPDATE t SET a = ';' WHERE id = 1",
            "SELECT 1",
            "COMMIT"
        ]
    );
    // A comment before the semicolon belongs to the statement.
    let commented = "SELECT 1 /* a */; SELECT 2 -- b";
    assert_eq!(
        texts(commented, &cl.classify(commented)),
        ["SELECT 1 /* a */", "SELECT 2 -- b"]
    );
    let spans: Vec<_> = c.statements.iter().map(|s| s.span.clone()).collect();
    assert_eq!(spans[0], 2..7);
    assert_eq!(&sql[spans[1].clone()], "UPDATE t SET a = ';' WHERE id = 1");
    let kinds: Vec<Kind> = c.statements.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            Kind::Transaction,
            Kind::Write,
            Kind::Read,
            Kind::Transaction
        ]
    );
    assert_eq!(c.kind(), Kind::Write);
    assert_eq!(c.first_routable().map(|s| s.kind), Some(Kind::Write));
}

#[test]
fn spans_are_bytes_with_multibyte_text() {
    let cl = classifier();
    let sql = "SELECT 'héllo ☃'; SELECT * FROM \"tåble\"";
    let c = cl.classify(sql);
    assert_eq!(
        texts(sql, &c),
        ["SELECT 'héllo ☃'", "SELECT * FROM \"tåble\""]
    );
    assert_eq!(c.statements[1].tables, [TableName::new(None, "tåble")]);
}

#[test]
fn empty_texts_have_no_statements() {
    let cl = classifier();
    for sql in [
        "",
        "   \n\t",
        ";",
        " ; ;; ",
        "-- nothing\n",
        "/* nothing */",
    ] {
        let c = cl.classify(sql);
        assert!(c.statements.is_empty(), "{sql:?}");
        assert!(c.parse_error.is_none(), "{sql:?}");
        assert_eq!(c.kind(), Kind::Read);
        assert!(c.first_routable().is_none());
    }
}

#[test]
fn kind_order_of_a_text() {
    let cl = classifier();
    let cases = [
        ("SELECT 1; SET x = 1", Kind::Session),
        ("BEGIN; SELECT 1", Kind::Transaction),
        ("SET x = 1; VACUUM t", Kind::Other),
        ("VACUUM t; COPY t TO STDOUT", Kind::Copy),
        ("COPY t TO STDOUT; CREATE TABLE u (a int)", Kind::Ddl),
        (
            "CREATE TABLE u (a int); INSERT INTO u VALUES (1); SELECT 1",
            Kind::Write,
        ),
    ];
    for (sql, kind) in cases {
        assert_eq!(cl.classify(sql).kind(), kind, "{sql}");
    }
}

#[test]
fn tables_union_in_first_appearance_order() {
    let c =
        classifier().classify("SELECT * FROM b, a; UPDATE a SET x = 1 FROM c; SELECT * FROM s.a");
    let names: Vec<String> = c.tables().map(ToString::to_string).collect();
    assert_eq!(names, ["b", "a", "c", "s.a"]);
}

#[test]
fn transaction_control_details() {
    let cl = classifier();
    let cases = [
        ("BEGIN ISOLATION LEVEL SERIALIZABLE", TxnControl::Begin),
        ("START TRANSACTION", TxnControl::Begin),
        ("COMMIT", TxnControl::Commit { chain: false }),
        ("END", TxnControl::Commit { chain: false }),
        ("COMMIT AND CHAIN", TxnControl::Commit { chain: true }),
        ("ABORT", TxnControl::Rollback { chain: false }),
        ("ROLLBACK AND CHAIN", TxnControl::Rollback { chain: true }),
        ("SAVEPOINT a", TxnControl::Savepoint { name: "a".into() }),
        ("RELEASE a", TxnControl::Release { name: "a".into() }),
        ("ROLLBACK TO a", TxnControl::RollbackTo { name: "a".into() }),
        (
            "PREPARE TRANSACTION 'g1'",
            TxnControl::PrepareTransaction { gid: "g1".into() },
        ),
        (
            "COMMIT PREPARED 'g1'",
            TxnControl::CommitPrepared { gid: "g1".into() },
        ),
        (
            "ROLLBACK PREPARED 'g1'",
            TxnControl::RollbackPrepared { gid: "g1".into() },
        ),
        ("SET TRANSACTION READ ONLY", TxnControl::SetTransaction),
        (
            "SET LOCAL search_path = x",
            TxnControl::SetLocal {
                name: "search_path".into(),
            },
        ),
        ("SET CONSTRAINTS ALL IMMEDIATE", TxnControl::SetConstraints),
    ];
    for (sql, expected) in cases {
        let c = cl.classify(sql);
        let s = &c.statements[0];
        assert_eq!(s.txn.as_ref(), Some(&expected), "{sql}");
        assert_eq!(s.kind, Kind::Transaction, "{sql}");
        assert!(s.session.is_none(), "{sql}");
    }
}

#[test]
fn first_routable_skips_transaction_scoped_statements() {
    let c = classifier()
        .classify("BEGIN; SET LOCAL lock_timeout = '1s'; SET TRANSACTION READ WRITE; SAVEPOINT a; SELECT * FROM t; COMMIT");
    let first = c.first_routable().expect("a routable statement");
    assert_eq!(first.kind, Kind::Read);
    assert_eq!(first.tables, [TableName::new(None, "t")]);
}

#[test]
fn session_effect_details() {
    let cl = classifier();
    let set = |name: &str| SessionEffect::Set { name: name.into() };
    let cases = [
        ("SET search_path = app", set("search_path")),
        ("SET SESSION work_mem TO '1MB'", set("work_mem")),
        ("SET TIME ZONE 'UTC'", set("timezone")),
        ("SET NAMES 'UTF8'", set("client_encoding")),
        ("SET ROLE admin", set("role")),
        (
            "SET SESSION AUTHORIZATION bob",
            set("session_authorization"),
        ),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            set("session characteristics"),
        ),
        ("SET x.y TO DEFAULT", set("x.y")),
        (
            "RESET statement_timeout",
            SessionEffect::Reset {
                name: Some("statement_timeout".into()),
            },
        ),
        ("RESET ALL", SessionEffect::Reset { name: None }),
        (
            "DEALLOCATE PREPARE q1",
            SessionEffect::Deallocate {
                name: Some("q1".into()),
            },
        ),
        ("DEALLOCATE ALL", SessionEffect::Deallocate { name: None }),
        (
            "LISTEN \"Jobs\"",
            SessionEffect::Listen {
                channel: "Jobs".into(),
            },
        ),
        (
            "UNLISTEN jobs",
            SessionEffect::Unlisten {
                channel: Some("jobs".into()),
            },
        ),
        ("UNLISTEN *", SessionEffect::Unlisten { channel: None }),
        ("DISCARD ALL", SessionEffect::Discard { all: true }),
        ("DISCARD TEMP", SessionEffect::Discard { all: false }),
        (
            "DECLARE c SCROLL CURSOR WITH HOLD FOR SELECT 1",
            SessionEffect::DeclareCursor {
                name: "c".into(),
                hold: true,
            },
        ),
        (
            "DECLARE c CURSOR FOR SELECT 1",
            SessionEffect::DeclareCursor {
                name: "c".into(),
                hold: false,
            },
        ),
        (
            "CLOSE c",
            SessionEffect::CloseCursor {
                name: Some("c".into()),
            },
        ),
        ("CLOSE ALL", SessionEffect::CloseCursor { name: None }),
    ];
    for (sql, expected) in cases {
        let c = cl.classify(sql);
        assert_eq!(c.statements[0].session.as_ref(), Some(&expected), "{sql}");
        assert!(c.statements[0].txn.is_none(), "{sql}");
    }
    // Transaction-scoped settings are not session state.
    for sql in ["SET LOCAL x = 1", "SET TRANSACTION READ ONLY"] {
        assert!(cl.classify(sql).statements[0].session.is_none(), "{sql}");
    }
}

#[test]
fn prepare_carries_the_prepared_statement() {
    let sql = "PREPARE upd (int) AS UPDATE accounts SET n = n + 1 WHERE id = $1";
    let c = classifier().classify(sql);
    let s = &c.statements[0];
    assert_eq!(s.kind, Kind::Session);
    let Some(SessionEffect::Prepare { name, query }) = &s.session else {
        panic!("{s:?}");
    };
    assert_eq!(name, "upd");
    assert_eq!(query.kind, Kind::Write);
    assert_eq!(query.tables, [TableName::new(None, "accounts")]);
    let c = classifier().classify("PREPARE r AS SELECT * FROM t ORDER BY 1");
    let Some(SessionEffect::Prepare { query, .. }) = &c.statements[0].session else {
        panic!()
    };
    assert_eq!((query.kind, query.has_order_by), (Kind::Read, true));
}

#[test]
fn normalized_and_fingerprint() {
    let cl = classifier();
    let a = cl.classify("SELECT * FROM t WHERE id = 1");
    let b = cl.classify("SELECT *\n  FROM t\n WHERE id = 2 -- second");
    assert_eq!(&*a.normalized, "SELECT * FROM t WHERE id = $1");
    assert_eq!(a.normalized, b.normalized);
    assert_eq!(a.fingerprint, b.fingerprint);
    for different in [
        "SELECT * FROM t WHERE id > 1",
        "SELECT * FROM u WHERE id = 1",
        "SELECT id FROM t WHERE id = 1",
        "SELECT * FROM t WHERE id = 1 ORDER BY id",
        "SELECT * FROM s.t WHERE id = 1",
    ] {
        assert_ne!(
            cl.classify(different).fingerprint,
            a.fingerprint,
            "{different}"
        );
    }
    let with_params = cl.classify("SELECT * FROM t WHERE id = $1");
    assert_eq!(with_params.normalized, a.normalized);
    assert_eq!(with_params.fingerprint, a.fingerprint);
}

#[test]
fn literals_never_reach_the_digest() {
    let cl = classifier();
    for sql in [
        "INSERT INTO users (email) VALUES ('alice@example.com')",
        "SELEC * FROM users WHERE email = 'alice@example.com'",
        "SELECT * FROM users WHERE email = $$alice@example.com$$",
        "SELECT * FROM users WHERE email = 'alice@example.com",
        "SELECT 1 /* alice@example.com */",
    ] {
        let c = cl.classify(sql);
        assert!(!c.normalized.contains("alice"), "{sql} -> {}", c.normalized);
    }
}

#[test]
fn parse_failures_are_one_conservative_write() {
    let cl = classifier();
    let sql = "  SELEC * FROM users JOIN s.orders o ON true; SELECT 1  ";
    let c = cl.classify(sql);
    let error = c.parse_error.as_deref().expect("a parse error");
    assert!(error.contains("syntax error"), "{error}");
    assert_eq!(c.statements.len(), 1);
    let s = &c.statements[0];
    assert_eq!(s.kind, Kind::Write);
    assert_eq!(s.text(sql), sql.trim());
    assert_eq!(
        s.tables,
        [
            TableName::new(None, "users"),
            TableName::new(Some("s"), "orders")
        ]
    );
    assert_eq!(c.kind(), Kind::Write);
    assert_eq!(
        &*c.normalized,
        "SELEC * FROM users JOIN s.orders o ON true; SELECT $1"
    );

    let nul = cl.classify("SELECT 1\0");
    assert!(nul.parse_error.as_deref().unwrap().contains("NUL"));
    assert_eq!(nul.kind(), Kind::Write);

    let unterminated = cl.classify("SELECT 'abc");
    assert_eq!(unterminated.kind(), Kind::Write);
    assert_eq!(cl.stats().parse_failures, 3);
}

#[test]
fn hostile_nesting_is_an_error_not_a_crash() {
    let cl = classifier();
    let deep = 10_000;
    let texts = [
        format!("SELECT {}1{}", "(SELECT ".repeat(deep), ")".repeat(deep)),
        format!("SELECT 1{}", " + 1".repeat(deep)),
        format!("SELECT {}1{}", "ARRAY[".repeat(deep), "]".repeat(deep)),
        format!("SELECT {}1{}", "f(".repeat(deep), ")".repeat(deep)),
        format!("SELECT {}", "NOT ".repeat(deep) + "true"),
    ];
    for sql in &texts {
        let c = cl.classify(sql);
        assert_eq!(c.kind(), Kind::Write, "{}", &sql[..40]);
        assert!(c.parse_error.is_some(), "{}", &sql[..40]);
    }
    // Also from a thread with a small stack, as a tokio worker might be.
    let sql = texts[1].clone();
    let handle = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || Classifier::new(0).classify(&sql).kind())
        .unwrap();
    assert_eq!(handle.join().unwrap(), Kind::Write);
}

#[test]
fn moderately_deep_statements_are_still_classified() {
    // Too deep for the protobuf decoder (100 levels), fine for Postgres.
    let cl = classifier();
    let chain = " || b".repeat(200);
    let sql = format!("SELECT a{chain} FROM t1 JOIN s.t2 ON true; UPDATE t3 SET x = 1");
    let c = cl.classify(&sql);
    assert!(c.parse_error.is_none());
    assert_eq!(c.statements.len(), 2);
    assert_eq!(c.statements[0].kind, Kind::Read);
    assert_eq!(
        c.statements[0].tables,
        [TableName::new(None, "t1"), TableName::new(Some("s"), "t2")]
    );
    assert_eq!(c.statements[1].text(&sql), "UPDATE t3 SET x = 1");
    assert_eq!(c.statements[1].kind, Kind::Write);

    let nested = format!("SELECT {}1{}", "(SELECT ".repeat(30), ")".repeat(30));
    assert_eq!(cl.classify(&nested).kind(), Kind::Read);
    for (sql, kind) in [
        (format!("SELECT a{chain} FROM t FOR UPDATE"), Kind::Write),
        (format!("SELECT nextval('s'){chain}"), Kind::Write),
        (format!("INSERT INTO t SELECT a{chain} FROM u"), Kind::Write),
        (
            format!("WITH x AS (DELETE FROM q RETURNING a) SELECT a{chain} FROM x"),
            Kind::Write,
        ),
    ] {
        assert_eq!(cl.classify(&sql).kind(), kind, "{}", &sql[..40]);
    }
    assert_eq!(cl.stats().too_deep, 6);
    assert_eq!(cl.stats().parse_failures, 0);
}

#[test]
fn cache_hits_share_the_arc() {
    let cl = Classifier::new(10);
    let a = cl.classify("SELECT * FROM t WHERE id = $1");
    let b = cl.classify("SELECT * FROM t WHERE id = $1");
    assert!(Arc::ptr_eq(&a, &b));
    let other = cl.classify("SELECT * FROM t WHERE id = $1 ");
    assert!(!Arc::ptr_eq(&a, &other), "keyed by the exact text");
    let s = cl.stats();
    assert_eq!((s.hits, s.misses, s.entries), (1, 2, 2));
}

#[test]
fn cache_is_shared_across_threads() {
    let cl = Arc::new(Classifier::new(10_000));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let cl = Arc::clone(&cl);
            std::thread::spawn(move || {
                for i in 0..500 {
                    let sql = format!("SELECT * FROM t{} WHERE id = $1", i % 50);
                    let c = cl.classify(&sql);
                    assert_eq!(c.statements[0].tables[0].name, format!("t{}", i % 50));
                    let _ = t;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = cl.stats();
    assert_eq!(s.hits + s.misses, 2000);
    assert_eq!(s.entries, 50);
    assert!(s.misses >= 50 && s.misses <= 200, "{s:?}");
}

#[test]
fn extra_write_functions() {
    let cl = Classifier::with_options(ClassifierOptions {
        write_functions: vec!["bump_counter".to_owned()],
        ..ClassifierOptions::default()
    });
    assert_eq!(cl.classify("SELECT bump_counter(1)").kind(), Kind::Write);
    assert_eq!(
        classifier().classify("SELECT bump_counter(1)").kind(),
        Kind::Read
    );
}

#[test]
fn texts_over_the_parse_limit_are_not_parsed() {
    let cl = Classifier::with_options(ClassifierOptions {
        max_parse_bytes: 10_000,
        ..ClassifierOptions::default()
    });
    let rows = vec!["(1, 'secret')"; 2000].join(", ");
    let sql = format!("INSERT INTO audit.events (id, v) VALUES {rows}");
    let c = cl.classify(&sql);
    assert_eq!(c.kind(), Kind::Write);
    assert_eq!(c.statements.len(), 1);
    assert_eq!(
        c.statements[0].tables,
        [TableName::new(Some("audit"), "events")]
    );
    assert_eq!(c.statements[0].span, 0..sql.len());
    assert!(c
        .parse_error
        .as_deref()
        .unwrap()
        .contains("classification limit"));
    assert!(c
        .normalized
        .starts_with("INSERT INTO audit.events (id, v) VALUES ($1, $2), ($3, $4)"));
    assert!(!c.normalized.contains("secret"));
    let s = cl.stats();
    assert_eq!((s.too_large, s.parse_failures, s.entries), (1, 0, 1));
    assert!(
        Arc::ptr_eq(&c, &cl.classify(&sql)),
        "still cached: it is under 64 KiB"
    );
    // Just under the limit is parsed as usual.
    let small = format!("INSERT INTO t VALUES {}", vec!["(1)"; 1000].join(","));
    assert!(small.len() < 10_000);
    assert!(cl.classify(&small).parse_error.is_none());
}

#[test]
fn wrappable_writes() {
    let cl = classifier();
    for sql in [
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = a + 1 WHERE id = $1",
        "DELETE FROM t WHERE id = 2",
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
        "INSERT INTO t VALUES (1); UPDATE t SET a = 2; SELECT 1",
        "WITH d AS (DELETE FROM t RETURNING *) INSERT INTO u SELECT * FROM d",
        "SELECT nextval('s')",
        "SELECT * FROM t FOR UPDATE",
        "COPY t FROM STDIN",
    ] {
        assert!(cl.classify(sql).wrappable_write(), "{sql}");
    }
    for sql in [
        "SELECT 1",
        "CALL p()",
        "DO $$ BEGIN COMMIT; END $$",
        "VACUUM t",
        "CREATE INDEX CONCURRENTLY i ON t (a)",
        "TRUNCATE t",
        "CREATE TABLE x (a int)",
        "BEGIN; INSERT INTO t VALUES (1); COMMIT",
        "INSERT INTO t VALUES (1); COMMIT",
        "INSERT INTO t VALUES (1); VACUUM t",
        "SET a.b = 1",
        "INSERT INTO t VALUES (",
        "EXPLAIN ANALYZE INSERT INTO t VALUES (1)",
    ] {
        assert!(!cl.classify(sql).wrappable_write(), "{sql}");
    }
}

#[test]
fn copy_from_stdin_is_told_from_the_statement() {
    let cl = classifier();
    for (sql, copies) in [
        ("COPY t FROM STDIN", 1),
        ("copy t from  \t stdin", 1),
        ("COPY t /* a */ FROM -- b\n STDIN", 1),
        (
            "COPY s.t (a, b) FROM STDIN WITH (FORMAT csv) WHERE a > 0",
            1,
        ),
        ("COPY t FROM STDIN; COPY u FROM STDIN", 2),
        ("COPY t FROM STDIN; SELECT 1; COPY u TO STDOUT", 1),
        ("COPY t FROM '/tmp/data'", 0),
        ("COPY t FROM PROGRAM 'cat data'", 0),
        ("COPY t TO STDOUT", 0),
        ("COPY (SELECT 'from stdin') TO STDOUT", 0),
        ("SELECT 'COPY t FROM STDIN'", 0),
        ("COPY t FROM STDIN garbage", 0),
    ] {
        assert_eq!(cl.classify(sql).copies_in(), copies, "{sql}");
    }
    // Too deep for the tree, or too long to parse: told from the tokens.
    let chain = " || b".repeat(200);
    let deep = format!("COPY t FROM STDIN WHERE a{chain} = 'x'");
    assert_eq!(cl.classify(&deep).copies_in(), 1);
    let deep_out = format!("COPY (SELECT a{chain} FROM t) TO STDOUT");
    assert_eq!(cl.classify(&deep_out).copies_in(), 0);
    assert_eq!(cl.stats().too_deep, 2);
    let small = Classifier::with_options(ClassifierOptions {
        max_parse_bytes: 1_000,
        ..ClassifierOptions::default()
    });
    let pad = "x".repeat(2_000);
    let long = format!("COPY t (a) FROM STDIN /* {pad} */");
    assert_eq!(small.classify(&long).copies_in(), 1);
    let long_out = format!("COPY (SELECT '{pad}') TO STDOUT");
    assert_eq!(small.classify(&long_out).copies_in(), 0);
    assert_eq!(small.stats().too_large, 2);
}
