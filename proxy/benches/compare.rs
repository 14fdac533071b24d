//! Result digest throughput on the comparison path, in DataRow bytes per
//! second, and the per-statement cost of the digest store.
//!
//! `cargo bench -p pgshift --bench compare`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pgshift::compare::{compare, CompareKind, DigestOptions, IgnoreColumns, ResultDigest};
use pgshift::stats::DigestStore;
use pgshift_rules::{BackendId, Kind};

const ROWS: usize = 100_000;

fn row_description(cols: &[(&str, u32, i16)]) -> Vec<u8> {
    let mut b = (cols.len() as u16).to_be_bytes().to_vec();
    for (name, oid, format) in cols {
        b.extend_from_slice(name.as_bytes());
        b.push(0);
        b.extend_from_slice(&[0; 6]);
        b.extend_from_slice(&oid.to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&format.to_be_bytes());
    }
    b
}

fn data_row(values: &[Option<&[u8]>]) -> Vec<u8> {
    let mut b = (values.len() as u16).to_be_bytes().to_vec();
    for v in values {
        match v {
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v);
            }
        }
    }
    b
}

struct Workload {
    name: &'static str,
    rowdesc: Vec<u8>,
    rows: Vec<Vec<u8>>,
}

impl Workload {
    fn bytes(&self) -> u64 {
        self.rows.iter().map(|r| r.len() as u64).sum()
    }
}

/// A typical OLTP row: int, text, timestamp, numeric, a NULL.
fn narrow() -> Workload {
    let rowdesc = row_description(&[
        ("id", 23, 0),
        ("email", 25, 0),
        ("created_at", 1184, 0),
        ("total", 1700, 0),
        ("note", 25, 0),
    ]);
    let rows = (0..ROWS)
        .map(|i| {
            let id = i.to_string();
            let email = format!("user{i}@example.com");
            let total = format!("{}.{:02}", i % 10_000, i % 100);
            data_row(&[
                Some(id.as_bytes()),
                Some(email.as_bytes()),
                Some(b"2024-05-01 12:34:56.789+00"),
                Some(total.as_bytes()),
                None,
            ])
        })
        .collect();
    Workload {
        name: "narrow_5col",
        rowdesc,
        rows,
    }
}

/// Wide text rows, ~1 KiB each: hashing dominates.
fn wide() -> Workload {
    let rowdesc = row_description(&[("id", 23, 0), ("body", 25, 0)]);
    let rows = (0..ROWS / 4)
        .map(|i| {
            let id = i.to_string();
            let body = format!("{i:08}-{}", "lorem ipsum ".repeat(85));
            data_row(&[Some(id.as_bytes()), Some(body.as_bytes())])
        })
        .collect();
    Workload {
        name: "wide_1KiB",
        rowdesc,
        rows,
    }
}

/// Float columns with a tolerance: parse and quantize per value.
fn floats() -> Workload {
    let rowdesc = row_description(&[("a", 701, 0), ("b", 701, 0), ("c", 701, 1)]);
    let rows = (0..ROWS)
        .map(|i| {
            let a = format!("{}", i as f64 * 1.000_001);
            let b = format!("{}", (i as f64).sqrt());
            let c = (i as f64 / 7.0).to_be_bytes();
            data_row(&[Some(a.as_bytes()), Some(b.as_bytes()), Some(&c)])
        })
        .collect();
    Workload {
        name: "float8_tolerance",
        rowdesc,
        rows,
    }
}

fn digest(w: &Workload, opts: &DigestOptions) -> pgshift::compare::ResultSummary {
    let mut d = ResultDigest::new(opts);
    d.row_description(&w.rowdesc);
    for r in &w.rows {
        d.data_row(black_box(r));
    }
    d.command_complete(b"SELECT 100000\0");
    d.finish()
}

fn digests(c: &mut Criterion) {
    let mut group = c.benchmark_group("digest");
    group.measurement_time(Duration::from_secs(5));
    let plain = DigestOptions::default();
    let tolerant = DigestOptions {
        float_tolerance: 1e-9,
        ignore: IgnoreColumns::names(["created_at"]),
        ..DigestOptions::default()
    };
    for (w, opts) in [(narrow(), &plain), (wide(), &plain), (floats(), &tolerant)] {
        group.throughput(Throughput::Bytes(w.bytes()));
        group.bench_with_input(BenchmarkId::from_parameter(w.name), &w, |b, w| {
            b.iter(|| digest(w, opts))
        });
    }
    group.finish();

    let w = narrow();
    let p = digest(&w, &plain);
    let m = digest(&w, &plain);
    c.bench_function("verdict/match_100k_rows", |b| {
        b.iter(|| compare(black_box(&p), black_box(&m), CompareKind::Read))
    });
}

fn store(c: &mut Criterion) {
    let store = DigestStore::new(5000);
    let text: Arc<str> = Arc::from("SELECT * FROM users WHERE id = $1");
    for fp in 0..1000 {
        store.entry(fp, &text, Kind::Read);
    }
    let mut fp = 0u64;
    c.bench_function("stats/entry_call_latency", |b| {
        b.iter(|| {
            fp = (fp + 1) % 1000;
            let s = store.entry(black_box(fp), &text, Kind::Read);
            s.record_call(
                BackendId::New,
                Some(BackendId::Old),
                Some("users-read-shift"),
            );
            s.record_latency(
                BackendId::New,
                pgshift::compare::Role::Primary,
                Duration::from_micros(420),
            );
        })
    });
}

criterion_group!(benches, digests, store);
criterion_main!(benches);
