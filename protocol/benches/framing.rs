//! Costs of the forwarding path's protocol work, without sockets.
//!
//! * `scan_rows`: walking ~1 MiB of backend output (a `SELECT * FROM
//!   pgbench_accounts`-like result) with `StreamScanner::step`, the way the
//!   relay's backend-to-client loop does, reported as bytes/s and rows/s.
//! * `scan_rows_chunked`: the same stream arriving in 8 KiB reads, so frames
//!   straddle read boundaries and the scanner's partial-frame (`Pass`) path
//!   runs, with the buffer handling the relay does around each read.
//! * `frontend_batch`: splitting a pipelined extended-protocol batch with
//!   `decode_frame` and decoding each message with `FrontendMessage::parse`.
//! * `startup`: `decode_startup` of a typical libpq StartupMessage.
//!
//! Run with `cargo bench -p pgshift-protocol --bench framing`.

use std::hint::black_box;

use bytes::{Buf, BufMut, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pgshift_protocol::backend::tag as btag;
use pgshift_protocol::frontend::FrontendMessage;
use pgshift_protocol::scan::{Step, StreamScanner};
use pgshift_protocol::startup::{decode_startup, StartupPacket};
use pgshift_protocol::{decode_frame, encode, DEFAULT_MAX_MESSAGE_SIZE, HEADER_LEN};

/// Size the result stream is grown to.
const STREAM_TARGET: usize = 1 << 20;
/// Read size for the chunked variant.
const CHUNK: usize = 8 * 1024;
/// Extended-protocol transactions in the pipelined batch.
const BATCH_TXNS: usize = 100;

/// A backend's answer to `SELECT * FROM pgbench_accounts` in text format:
/// RowDescription, DataRows of (aid int4, bid int4, abalance int4,
/// filler char(84)) -- about 110 bytes a frame -- CommandComplete and
/// ReadyForQuery. Returns the bytes and the number of DataRows.
fn accounts_result() -> (Vec<u8>, u64) {
    let mut buf = BytesMut::with_capacity(STREAM_TARGET + 4096);
    encode::frame(&mut buf, btag::ROW_DESCRIPTION, |b| {
        let cols: [(&str, u32, i16, i32); 4] = [
            ("aid", 23, 4, -1),
            ("bid", 23, 4, -1),
            ("abalance", 23, 4, -1),
            ("filler", 1042, -1, 88),
        ];
        b.put_i16(cols.len() as i16);
        for (i, (name, oid, len, typmod)) in cols.iter().enumerate() {
            b.put_slice(name.as_bytes());
            b.put_u8(0);
            b.put_u32(16_400); // table oid
            b.put_i16(i as i16 + 1);
            b.put_u32(*oid);
            b.put_i16(*len);
            b.put_i32(*typmod);
            b.put_i16(0);
        }
    });
    let filler = [b' '; 84];
    let mut rows = 0u64;
    let mut aid = 1u64;
    while buf.len() < STREAM_TARGET {
        let aid_s = aid.to_string();
        let bid_s = ((aid - 1) / 100_000 + 1).to_string();
        let bal_s = ((aid * 7919) % 10_000).to_string();
        let cols: [&[u8]; 4] = [
            aid_s.as_bytes(),
            bid_s.as_bytes(),
            bal_s.as_bytes(),
            &filler,
        ];
        encode::frame(&mut buf, btag::DATA_ROW, |b| {
            b.put_i16(cols.len() as i16);
            for c in cols {
                b.put_i32(c.len() as i32);
                b.put_slice(c);
            }
        });
        rows += 1;
        aid += 1;
    }
    let tag = format!("SELECT {rows}");
    encode::frame(&mut buf, btag::COMMAND_COMPLETE, |b| {
        b.put_slice(tag.as_bytes());
        b.put_u8(0);
    });
    encode::ready_for_query(&mut buf, pgshift_protocol::backend::TransactionStatus::Idle);
    (buf.to_vec(), rows)
}

/// The relay's inner loop over what is buffered: step until `NeedMore`,
/// advancing by `frame_len` or `n`, and look inside ReadyForQuery as the
/// relay does. Returns how far it got (what the relay would write out).
#[inline]
fn scan_buffered(scanner: &mut StreamScanner, buf: &[u8], frames: &mut u64) -> usize {
    let mut at = 0;
    loop {
        match scanner.step(&buf[at..]).expect("valid stream") {
            Step::Frame(h) => {
                if h.tag == btag::READY_FOR_QUERY {
                    let body = &buf[at + HEADER_LEN..at + h.frame_len];
                    black_box(pgshift_protocol::backend::ready_for_query(body).unwrap());
                }
                *frames += 1;
                at += h.frame_len;
            }
            Step::Pass(n) => at += n,
            Step::NeedMore => break,
        }
    }
    at
}

fn scan_rows(c: &mut Criterion) {
    let (stream, rows) = accounts_result();
    let len = stream.len() as u64;
    eprintln!(
        "scan stream: {} bytes, {rows} DataRows ({:.1} bytes/frame)",
        len,
        len as f64 / rows as f64
    );

    let whole = |stream: &[u8]| {
        let mut scanner = StreamScanner::new(DEFAULT_MAX_MESSAGE_SIZE);
        let mut frames = 0;
        let at = scan_buffered(&mut scanner, black_box(stream), &mut frames);
        assert_eq!(at, stream.len());
        black_box(frames)
    };

    let chunked = |stream: &[u8], buf: &mut BytesMut| {
        let mut scanner = StreamScanner::new(DEFAULT_MAX_MESSAGE_SIZE);
        let mut frames = 0;
        let mut written = 0;
        buf.clear();
        for piece in black_box(stream).chunks(CHUNK) {
            // What `read_buf` does: append the new bytes after the leftover
            // partial header (if any) from the previous read.
            if buf.capacity() - buf.len() < piece.len() {
                buf.reserve(64 * 1024);
            }
            buf.extend_from_slice(piece);
            let at = scan_buffered(&mut scanner, buf, &mut frames);
            written += at;
            buf.advance(at);
        }
        assert_eq!(written, stream.len());
        black_box(frames)
    };

    let mut g = c.benchmark_group("scan_rows/bytes");
    g.throughput(Throughput::Bytes(len));
    g.bench_function("whole_1MiB", |b| b.iter(|| whole(&stream)));
    let mut buf = BytesMut::with_capacity(128 * 1024);
    g.bench_function("chunked_8KiB", |b| b.iter(|| chunked(&stream, &mut buf)));
    g.finish();

    let mut g = c.benchmark_group("scan_rows/rows");
    g.throughput(Throughput::Elements(rows));
    g.bench_function("whole_1MiB", |b| b.iter(|| whole(&stream)));
    g.bench_function("chunked_8KiB", |b| b.iter(|| chunked(&stream, &mut buf)));
    g.finish();
}

/// What `pgbench -M extended -S` pipelines when batched: per transaction
/// Parse (unnamed), Bind, Describe portal, Execute, Sync.
fn extended_batch() -> (BytesMut, u64) {
    let mut buf = BytesMut::new();
    let mut msgs = 0;
    for i in 0..BATCH_TXNS {
        let aid = (i * 7919 % 1_000_000 + 1).to_string();
        encode::parse(
            &mut buf,
            "",
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
            &[23],
        );
        encode::bind(&mut buf, "", "", &[Some(aid.as_bytes())], &[0]);
        encode::frame(&mut buf, b'D', |b| {
            b.put_u8(b'P');
            b.put_u8(0);
        });
        encode::execute(&mut buf, "", 0);
        encode::sync(&mut buf);
        msgs += 5;
    }
    (buf, msgs)
}

fn frontend_batch(c: &mut Criterion) {
    let (batch, msgs) = extended_batch();
    let mut g = c.benchmark_group("frontend_batch");
    g.throughput(Throughput::ElementsAndBytes {
        elements: msgs,
        bytes: batch.len() as u64,
    });
    g.bench_function(format!("{BATCH_TXNS}_txns_PBDES"), |b| {
        b.iter_batched(
            || batch.clone(),
            |mut buf| {
                let mut n = 0u64;
                while let Some(frame) = decode_frame(&mut buf, DEFAULT_MAX_MESSAGE_SIZE).unwrap() {
                    let msg = FrontendMessage::parse(&frame).unwrap();
                    black_box(&msg);
                    n += 1;
                }
                assert_eq!(n, msgs);
                n
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn startup(c: &mut Criterion) {
    let mut packet = BytesMut::new();
    encode::startup_message(
        &mut packet,
        [
            ("user", "app"),
            ("database", "app"),
            ("application_name", "pgbench"),
            ("client_encoding", "UTF8"),
            ("options", "-c search_path=public -c statement_timeout=30s"),
        ],
    );
    let mut g = c.benchmark_group("startup");
    g.throughput(Throughput::Bytes(packet.len() as u64));
    g.bench_function("decode_startup", |b| {
        b.iter_batched(
            || packet.clone(),
            |mut buf| match decode_startup(&mut buf).unwrap() {
                Some(StartupPacket::Startup(m)) => m,
                other => panic!("unexpected {other:?}"),
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, scan_rows, frontend_batch, startup);
criterion_main!(benches);
