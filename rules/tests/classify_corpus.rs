//! A corpus of single statements: kind, tables and top-level ORDER BY of
//! each, as the classifier must report them.

use pgshift_rules::{Classifier, Kind, TableName};

struct Case {
    sql: &'static str,
    kind: Kind,
    tables: &'static [&'static str],
    order_by: bool,
}

const fn c(sql: &'static str, kind: Kind, tables: &'static [&'static str]) -> Case {
    Case {
        sql,
        kind,
        tables,
        order_by: false,
    }
}

const fn sorted(sql: &'static str, kind: Kind, tables: &'static [&'static str]) -> Case {
    Case {
        sql,
        kind,
        tables,
        order_by: true,
    }
}

use Kind::{Copy, Ddl, Other, Read, Session, Transaction, Write};

const CORPUS: &[Case] = &[
    // Reads.
    c("SELECT 1", Read, &[]),
    c("select * from users where id = $1", Read, &["users"]),
    c("SELECT * FROM ONLY parent_t", Read, &["parent_t"]),
    c("SELECT * FROM \"Users\" u, public.\"Order Items\" oi", Read, &["\"Users\"", "public.\"Order Items\""]),
    c("SELECT * FROM Public.Users", Read, &["public.users"]),
    c("SELECT * FROM db.sch.tbl", Read, &["sch.tbl"]),
    c("SELECT u.id FROM users u JOIN orders o ON o.user_id = u.id LEFT JOIN items i USING (order_id)", Read, &["users", "orders", "items"]),
    c("SELECT * FROM a CROSS JOIN LATERAL (SELECT * FROM b WHERE b.a_id = a.id) s", Read, &["a", "b"]),
    c("SELECT * FROM t WHERE x IN (SELECT y FROM u WHERE EXISTS (SELECT 1 FROM v))", Read, &["t", "u", "v"]),
    c("SELECT (SELECT max(id) FROM s1), ARRAY(SELECT id FROM s2), coalesce((SELECT 1 FROM s3), 0)", Read, &["s1", "s2", "s3"]),
    c("SELECT CASE WHEN EXISTS (SELECT 1 FROM flags) THEN 1 END", Read, &["flags"]),
    c("WITH recent AS (SELECT * FROM orders WHERE at > now() - interval '1 day') SELECT * FROM recent JOIN users ON true", Read, &["orders", "users"]),
    c("WITH users AS (SELECT * FROM users WHERE active) SELECT * FROM users", Read, &["users"]),
    c("WITH a AS (SELECT 1), b AS (SELECT * FROM a) SELECT * FROM b", Read, &[]),
    c("WITH b AS (SELECT * FROM a), a AS (SELECT 1) SELECT * FROM b", Read, &["a"]),
    c("WITH RECURSIVE tree AS (SELECT id FROM nodes WHERE parent IS NULL UNION ALL SELECT n.id FROM nodes n JOIN tree t ON n.parent = t.id) SELECT * FROM tree", Read, &["nodes"]),
    c("SELECT * FROM (WITH inner_cte AS (SELECT 1) SELECT * FROM inner_cte) s, inner_cte", Read, &["inner_cte"]),
    c("SELECT * FROM t1 UNION SELECT * FROM t2 EXCEPT SELECT * FROM t3", Read, &["t1", "t2", "t3"]),
    c("SELECT * FROM generate_series(1, 3) g", Read, &[]),
    c("SELECT * FROM json_to_record((SELECT doc FROM docs LIMIT 1)) AS x(a int)", Read, &["docs"]),
    c("SELECT JSON_ARRAY(SELECT v FROM vals)", Read, &["vals"]),
    c("SELECT XMLELEMENT(name e, (SELECT x FROM xmls))", Read, &["xmls"]),
    c("SELECT count(*) FILTER (WHERE x IN (SELECT y FROM f)) OVER (PARTITION BY (SELECT 1 FROM w)) FROM base", Read, &["f", "w", "base"]),
    c("SELECT * FROM t TABLESAMPLE SYSTEM (10)", Read, &["t"]),
    c("VALUES (1, 'a'), (2, 'b')", Read, &[]),
    c("TABLE accounts", Read, &["accounts"]),
    c("SHOW search_path", Read, &[]),
    c("SHOW ALL", Read, &[]),
    c("EXPLAIN SELECT * FROM t", Read, &["t"]),
    c("EXPLAIN DELETE FROM t", Read, &["t"]),
    c("EXPLAIN (ANALYZE false) UPDATE t SET a = 1", Read, &["t"]),
    c("EXPLAIN ANALYZE SELECT * FROM t", Read, &["t"]),
    c("SELECT pg_sleep(1), now(), current_setting('x')", Read, &[]),
    sorted("SELECT * FROM t ORDER BY id", Read, &["t"]),
    sorted("SELECT * FROM a UNION ALL SELECT * FROM b ORDER BY 1", Read, &["a", "b"]),
    sorted("WITH x AS (SELECT * FROM t ORDER BY a) SELECT * FROM x ORDER BY b", Read, &["t"]),
    c("SELECT * FROM (SELECT * FROM t ORDER BY id) s", Read, &["t"]),
    c("WITH x AS (SELECT * FROM t ORDER BY a) SELECT * FROM x", Read, &["t"]),
    c("SELECT array_agg(x ORDER BY x) FROM t", Read, &["t"]),
    c("SELECT row_number() OVER (ORDER BY id) FROM t", Read, &["t"]),
    // Writes hidden in reads.
    c("SELECT * FROM t FOR UPDATE", Write, &["t"]),
    c("SELECT * FROM t JOIN u ON true FOR NO KEY UPDATE OF t SKIP LOCKED", Write, &["t", "u"]),
    c("SELECT * FROM t FOR SHARE", Write, &["t"]),
    c("SELECT * FROM t FOR KEY SHARE NOWAIT", Write, &["t"]),
    c("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", Write, &["t"]),
    c("SELECT nextval('order_seq')", Write, &[]),
    c("SELECT pg_catalog.setval('s', 1)", Write, &[]),
    c("SELECT currval('s')", Write, &[]),
    c("SELECT pg_advisory_lock(42)", Write, &[]),
    c("SELECT pg_try_advisory_xact_lock(1, 2)", Write, &[]),
    c("SELECT lo_import('/tmp/x')", Write, &[]),
    c("SELECT pg_notify('ch', 'payload')", Write, &[]),
    c("SELECT set_config('search_path', 'x', false)", Write, &[]),
    c("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", Write, &["pg_stat_activity"]),
    c("SELECT txid_current()", Write, &[]),
    c("SELECT pg_current_xact_id()", Write, &[]),
    c("SELECT * FROM t WHERE id = (SELECT nextval('s'))", Write, &["t"]),
    c("VALUES (nextval('s'))", Write, &[]),
    c("WITH moved AS (DELETE FROM queue WHERE id = 1 RETURNING *) SELECT * FROM moved", Write, &["queue"]),
    c("WITH x AS (SELECT 1), y AS (INSERT INTO log SELECT * FROM x RETURNING id) SELECT * FROM y", Write, &["log"]),
    c("EXPLAIN ANALYZE DELETE FROM t WHERE id = 1", Write, &["t"]),
    c("EXPLAIN (ANALYZE, BUFFERS) SELECT nextval('s')", Write, &[]),
    // DML.
    c("INSERT INTO users (id, name) VALUES (1, 'a')", Write, &["users"]),
    c("INSERT INTO archive SELECT * FROM orders WHERE at < now()", Write, &["archive", "orders"]),
    c("INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET n = (SELECT n FROM defaults)", Write, &["t", "defaults"]),
    c("WITH src AS (SELECT * FROM staging) INSERT INTO src SELECT * FROM src", Write, &["staging", "src"]),
    c("UPDATE accounts a SET balance = b.total FROM balances b WHERE a.id = b.id RETURNING a.id", Write, &["accounts", "balances"]),
    c("UPDATE s.t SET x = (SELECT max(x) FROM s.u)", Write, &["s.t", "s.u"]),
    c("DELETE FROM orders o USING customers c WHERE o.cid = c.id AND c.gone", Write, &["orders", "customers"]),
    c("DELETE FROM ONLY events WHERE id IN (SELECT id FROM expired)", Write, &["events", "expired"]),
    c("MERGE INTO stock s USING deliveries d ON s.item = d.item WHEN MATCHED THEN UPDATE SET qty = s.qty + d.qty WHEN NOT MATCHED THEN INSERT VALUES (d.item, d.qty)", Write, &["stock", "deliveries"]),
    c("MERGE INTO t USING (SELECT * FROM src WHERE ok) s ON t.id = s.id WHEN MATCHED THEN DELETE", Write, &["t", "src"]),
    c("TRUNCATE a, ONLY b RESTART IDENTITY", Write, &["a", "b"]),
    c("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE", Write, &["accounts"]),
    c("NOTIFY jobs, 'go'", Write, &[]),
    c("CALL refresh_totals(1)", Write, &[]),
    c("DO $$ BEGIN PERFORM 1; END $$", Write, &[]),
    c("REFRESH MATERIALIZED VIEW CONCURRENTLY mv_totals", Write, &["mv_totals"]),
    c("EXECUTE fetch_user(1)", Write, &[]),
    // DDL.
    c("SELECT * INTO backup FROM users", Ddl, &["backup", "users"]),
    c("CREATE TABLE t (id int PRIMARY KEY, u int REFERENCES users(id))", Ddl, &["t", "users"]),
    c("CREATE TABLE copy AS SELECT * FROM src", Ddl, &["copy", "src"]),
    c("CREATE MATERIALIZED VIEW mv AS SELECT * FROM base", Ddl, &["mv", "base"]),
    c("CREATE VIEW v AS SELECT * FROM base", Ddl, &["v", "base"]),
    c("CREATE INDEX CONCURRENTLY idx ON s.t (a) WHERE b", Ddl, &["s.t"]),
    c("ALTER TABLE users ADD COLUMN email text", Ddl, &["users"]),
    c("ALTER TABLE users RENAME TO people", Ddl, &["users"]),
    c("DROP TABLE IF EXISTS a, s.b CASCADE", Ddl, &["a", "s.b"]),
    c("DROP INDEX idx", Ddl, &["idx"]),
    c("DROP FUNCTION f(int)", Ddl, &[]),
    c("GRANT SELECT ON users TO reader", Ddl, &["users"]),
    c("REVOKE ALL ON s.t FROM public", Ddl, &["s.t"]),
    c("COMMENT ON TABLE users IS 'people'", Ddl, &["users"]),
    c("COMMENT ON COLUMN s.users.email IS 'x'", Ddl, &["s.users"]),
    c("SECURITY LABEL ON TABLE users IS 'secret'", Ddl, &["users"]),
    c("REINDEX TABLE users", Ddl, &["users"]),
    c("CLUSTER users USING users_pkey", Ddl, &["users"]),
    c("CREATE SEQUENCE s", Ddl, &["s"]),
    c("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", Ddl, &[]),
    c("CREATE EXTENSION IF NOT EXISTS pgcrypto", Ddl, &[]),
    c("ALTER SYSTEM SET work_mem = '64MB'", Ddl, &[]),
    // Transaction control.
    c("BEGIN", Transaction, &[]),
    c("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY", Transaction, &[]),
    c("COMMIT", Transaction, &[]),
    c("END", Transaction, &[]),
    c("ROLLBACK", Transaction, &[]),
    c("ABORT", Transaction, &[]),
    c("SAVEPOINT s1", Transaction, &[]),
    c("RELEASE SAVEPOINT s1", Transaction, &[]),
    c("ROLLBACK TO SAVEPOINT s1", Transaction, &[]),
    c("PREPARE TRANSACTION 'tx1'", Transaction, &[]),
    c("COMMIT PREPARED 'tx1'", Transaction, &[]),
    c("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", Transaction, &[]),
    c("SET LOCAL statement_timeout = '5s'", Transaction, &[]),
    c("SET CONSTRAINTS ALL DEFERRED", Transaction, &[]),
    // Session state.
    c("SET search_path TO app, public", Session, &[]),
    c("SET SESSION statement_timeout = 0", Session, &[]),
    c("SET TIME ZONE 'UTC'", Session, &[]),
    c("RESET ALL", Session, &[]),
    c("RESET work_mem", Session, &[]),
    c("PREPARE q (int) AS SELECT * FROM users WHERE id = $1", Session, &["users"]),
    c("DEALLOCATE q", Session, &[]),
    c("DEALLOCATE ALL", Session, &[]),
    c("LISTEN jobs", Session, &[]),
    c("UNLISTEN *", Session, &[]),
    c("DISCARD ALL", Session, &[]),
    // COPY, both directions.
    c("COPY users FROM STDIN WITH (FORMAT csv)", Copy, &["users"]),
    c("COPY s.users (id, name) TO STDOUT", Copy, &["s.users"]),
    sorted("COPY (SELECT * FROM users ORDER BY id) TO STDOUT", Copy, &["users"]),
    // Other.
    c("VACUUM (ANALYZE) users", Other, &["users"]),
    c("ANALYZE users", Other, &["users"]),
    c("CHECKPOINT", Other, &[]),
    c("LOAD 'auto_explain'", Other, &[]),
    c("DECLARE cur CURSOR FOR SELECT * FROM t", Other, &["t"]),
    c("DECLARE cur CURSOR FOR SELECT * FROM t FOR UPDATE", Write, &["t"]),
    c("FETCH 10 FROM cur", Other, &[]),
    c("MOVE NEXT IN cur", Other, &[]),
    c("CLOSE cur", Other, &[]),
];

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
