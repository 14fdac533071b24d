//! Classification and routing costs on the per-statement path.
//!
//! `cargo bench -p pgshift-rules --bench classify`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use pgshift_rules::route::bucket;
use pgshift_rules::{parse_config, Classifier, Router, SessionContext, Sticky};

/// A typical ORM statement, ~100 bytes.
const TYPICAL: &str =
    "SELECT id, email, name, created_at FROM users WHERE tenant_id = $1 AND id = $2 LIMIT 1";

const JOIN3: &str = "SELECT u.id, o.total, p.name FROM users u \
    JOIN orders o ON o.user_id = u.id JOIN products p ON p.id = o.product_id \
    WHERE u.id = 42 AND o.status = 'paid' ORDER BY o.created_at DESC LIMIT 10";

fn classify(c: &mut Criterion) {
    let cached = Classifier::new(10_000);
    cached.classify(TYPICAL);
    c.bench_function("classify/cached_100B", |b| {
        b.iter(|| cached.classify(black_box(TYPICAL)))
    });

    // Two threads hitting the same warm cache (different shards mostly).
    let shared = Arc::new(Classifier::new(10_000));
    let texts: Vec<String> = (0..64)
        .map(|i| format!("SELECT * FROM users WHERE id = $1 AND shard_{i} = $2"))
        .collect();
    texts.iter().for_each(|t| {
        shared.classify(t);
    });
    let texts = Arc::new(texts);
    c.bench_function("classify/cached_2_threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let handles: Vec<_> = (0..2)
                .map(|t| {
                    let (shared, texts) = (Arc::clone(&shared), Arc::clone(&texts));
                    std::thread::spawn(move || {
                        for i in 0..iters as usize {
                            black_box(shared.classify(&texts[(i * 7 + t) % texts.len()]));
                        }
                    })
                })
                .collect();
            handles.into_iter().for_each(|h| h.join().unwrap());
            start.elapsed()
        })
    });

    // Inlined values: every text is new, the shape is not.
    let variants: Vec<String> = (0..1000)
        .map(|i| {
            format!(
                "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
                i * 7919
            )
        })
        .collect();
    let by_shape = Classifier::new(10_000);
    by_shape.classify(&variants[0]);
    let mut next = 0;
    c.bench_function("classify/literal_variant", |b| {
        b.iter(|| {
            next = (next + 1) % variants.len();
            by_shape.classify(black_box(&variants[next]))
        })
    });
    let uncached = Classifier::new(0);
    c.bench_function("classify/uncached_pgbench_select", |b| {
        b.iter(|| uncached.classify(black_box(&variants[1])))
    });

    c.bench_function("classify/uncached_3_table_join", |b| {
        b.iter(|| uncached.classify(black_box(JOIN3)))
    });
    c.bench_function("classify/uncached_typical", |b| {
        b.iter(|| uncached.classify(black_box(TYPICAL)))
    });
    // The parser alone, for comparison with the full classification.
    c.bench_function("pg_query/parse_3_table_join", |b| {
        b.iter(|| pg_query::parse(black_box(JOIN3), 0).unwrap())
    });
    c.bench_function("pg_query/scan_tokens_3_table_join", |b| {
        b.iter(|| pg_query::scan_tokens(black_box(JOIN3)).unwrap())
    });
}

const BACKENDS: &str = r#"
backends:
  old: { url: "postgres://app@127.0.0.1:5432/app" }
  new: { url: "postgres://app@127.0.0.1:5433/app" }
auth: { method: trust }
rules:
"#;

/// 99 rules that do not apply, failing at every stage of the check, then
/// one that does (a 50% sticky-session slice, so the bucket is computed).
fn mixed_rules() -> String {
    let mut yaml = BACKENDS.to_owned();
    for i in 0..99 {
        let matcher = match i % 5 {
            0 => "{ kind: [write, ddl] }".to_owned(),
            1 => format!("{{ kind: [read], user: [batch{i}, etl{i}] }}"),
            2 => format!("{{ application_name: [worker{i}], database: [shop] }}"),
            3 => format!("{{ kind: [read], tables: [orders{i}, s.items{i}, invoices{i}] }}"),
            _ => format!("{{ kind: [read], tables: [users], sql: \"(?i)\\\\bshard_{i}\\\\b\" }}"),
        };
        yaml.push_str(&format!(
            "  - {{ name: r{i}, match: {matcher}, primary: new }}\n"
        ));
    }
    yaml.push_str("  - { name: last, match: { kind: [read], tables: [users] }, percent: 50, sticky: session, primary: new, mirror: old }\n");
    yaml
}

/// The worst case: 99 rules whose every criterion matches except a regex.
fn regex_rules() -> String {
    let mut yaml = BACKENDS.to_owned();
    for i in 0..99 {
        yaml.push_str(&format!(
            "  - {{ name: r{i}, match: {{ kind: [read], tables: [users], user: [app], sql: \"(?i)from\\\\s+users_{i}\\\\b\" }}, primary: new }}\n"
        ));
    }
    yaml.push_str("  - { name: last, match: { kind: [read] }, primary: new }\n");
    yaml
}

fn route(c: &mut Criterion) {
    let classifier = Classifier::new(100);
    let classification = classifier.classify(TYPICAL);
    let stmt = &classification.statements[0];
    let ctx = SessionContext {
        user: "app",
        database: "shop",
        application_name: "api",
        client_addr: Some("10.1.2.3".parse().unwrap()),
        session_key: 0x1234_5678,
    };
    for (name, yaml) in [
        ("route/100_rules_last_matches", mixed_rules()),
        ("route/100_rules_99_regex_misses", regex_rules()),
    ] {
        let config = parse_config(&yaml, &|_| None).expect("bench config");
        let router = Router::new(&config);
        let d = router.route(stmt, TYPICAL, &ctx);
        assert_eq!(d.rule, Some(99), "{name}");
        c.bench_function(name, |b| {
            b.iter(|| router.route(black_box(stmt), black_box(TYPICAL), black_box(&ctx)))
        });
    }
}

fn buckets(c: &mut Criterion) {
    c.bench_function("bucket/session_key", |b| {
        b.iter(|| bucket(Sticky::Session, black_box("12345678901234567890")))
    });
    c.bench_function("bucket/client_addr", |b| {
        b.iter(|| bucket(Sticky::ClientAddr, black_box("2001:db8::42")))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = classify, route, buckets
}
criterion_main!(benches);
