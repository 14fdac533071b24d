//! Rewriting costs on the per-statement path.
//!
//! `cargo bench -p pgshift-rules --bench rewrite`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use pgshift_rules::{parse_config, BackendId, Catalog, Rewriter};

const CONFIG: &str = r#"
backends:
  old: { url: "postgres://app@old-db/app" }
  new: { url: "postgres://app@new-db/app" }
auth: { method: trust }
rewrite:
  new:
    tables: { users: accounts, public.orders: sales.orders }
    columns: { users.email: email_address, orders.total: amount }
"#;

/// An ORM-style join over both renamed tables, ~230 bytes.
const JOIN: &str = "SELECT u.id, u.email, o.id, o.total, o.status FROM users u \
    JOIN orders o ON o.user_id = u.id \
    WHERE u.email = $1 AND o.status = 'paid' ORDER BY o.created_at DESC LIMIT 10";

/// Names nothing the map renames: decided by the prefilter alone.
const UNRELATED: &str =
    "SELECT id, name, price, created_at FROM products WHERE tenant_id = $1 AND id = $2 LIMIT 1";

fn catalogs() -> (Arc<Catalog>, Arc<Catalog>) {
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let mut source = Catalog::new(s(&["public"]));
    source.add_table("public", "users", s(&["id", "email", "name"]));
    source.add_table(
        "public",
        "orders",
        s(&["id", "user_id", "total", "status", "created_at"]),
    );
    let mut target = Catalog::new(s(&["public"]));
    target.add_table("public", "accounts", s(&["id", "email_address", "name"]));
    target.add_table(
        "sales",
        "orders",
        s(&["id", "user_id", "amount", "status", "created_at"]),
    );
    (Arc::new(target), Arc::new(source))
}

fn rewrite(c: &mut Criterion) {
    let config = parse_config(CONFIG, &|_| None).expect("bench config");
    let (target, source) = catalogs();
    let rewriter = Rewriter::new(
        config.rewrite.get(BackendId::New),
        Some(target),
        Some(source),
        10_000,
    );
    rewriter.rewrite(JOIN);
    c.bench_function("rewrite/cached_join", |b| {
        b.iter(|| rewriter.rewrite(black_box(JOIN)))
    });
    c.bench_function("rewrite/uncached_join", |b| {
        b.iter(|| rewriter.rewrite_uncached(black_box(JOIN)))
    });
    // Inlined values: every text is new, the shape is not.
    let variants: Vec<String> = (0..1000)
        .map(|i| JOIN.replace("$1", &(i * 7919).to_string()))
        .collect();
    rewriter.rewrite(&variants[0]);
    let mut next = 0;
    c.bench_function("rewrite/literal_variant_join", |b| {
        b.iter(|| {
            next = (next + 1) % variants.len();
            rewriter.rewrite(black_box(&variants[next]))
        })
    });
    c.bench_function("rewrite/uncached_unrelated_prefilter", |b| {
        b.iter(|| rewriter.rewrite_uncached(black_box(UNRELATED)))
    });
}

criterion_group!(benches, rewrite);
criterion_main!(benches);
