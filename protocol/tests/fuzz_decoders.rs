//! Property tests over everything that reads bytes from a peer: whatever
//! arrives, decoders return a value or an error, never panic, and never
//! reserve memory beyond the configured limit.

use bytes::BytesMut;
use pgshift_protocol::backend;
use pgshift_protocol::frontend::FrontendMessage;
use pgshift_protocol::scan::{Step, StreamScanner};
use pgshift_protocol::startup::decode_startup;
use pgshift_protocol::{decode_frame, encode};
use proptest::prelude::*;

const MAX: usize = 64 * 1024;

/// Decodes frames until the decoder needs more or reports an error, and
/// runs every typed view over each frame.
fn exercise_frames(bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(frame)) = decode_frame(&mut buf, MAX) {
        let _ = FrontendMessage::parse(&frame);
        let body = frame.body();
        let _ = backend::ready_for_query(body);
        let _ = backend::command_complete(body).map(backend::command_rows);
        let _ = backend::parameter_status(body);
        let _ = backend::backend_key_data(body);
        let _ = backend::authentication(body);
        let _ = backend::row_description(body);
        if let Ok(row) = backend::DataRow::parse(body) {
            for col in row.columns() {
                let _ = col;
            }
        }
        let fields = backend::ErrorFields::new(body);
        let _ = (fields.sqlstate(), fields.message(), fields.severity());
    }
    assert!(
        buf.capacity() <= bytes.len().max(MAX) + 64 * 1024,
        "reserved past the limit"
    );
}

/// A valid stream of server messages of assorted sizes.
fn server_stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((0u8..5, 0usize..3000), 1..40).prop_map(|msgs| {
        let mut b = BytesMut::new();
        for (kind, size) in msgs {
            match kind {
                0 => encode::frame(&mut b, b'D', |b| {
                    b.extend_from_slice(&1i16.to_be_bytes());
                    b.extend_from_slice(&(size as i32).to_be_bytes());
                    b.extend(std::iter::repeat_n(b'x', size));
                }),
                1 => encode::frame(&mut b, b'd', |b| b.extend(std::iter::repeat_n(b'y', size))),
                2 => encode::frame(&mut b, b'C', |b| b.extend_from_slice(b"SELECT 1\0")),
                3 => encode::notice_response(&mut b, "NOTICE", "00000", &"n".repeat(size % 200)),
                _ => encode::ready_for_query(&mut b, backend::TransactionStatus::Idle),
            }
        }
        b.to_vec()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        exercise_frames(&bytes);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decode_startup(&mut buf) {}
        let mut scanner = StreamScanner::new(MAX);
        let mut at = 0;
        while let Ok(step) = scanner.step(&bytes[at..]) {
            match step {
                Step::Frame(h) => at += h.frame_len,
                Step::Pass(n) => at += n,
                Step::NeedMore => break,
            }
        }
        prop_assert!(at <= bytes.len());
    }

    #[test]
    fn frames_with_plausible_headers_never_panic(
        tag in any::<u8>(),
        body in prop::collection::vec(any::<u8>(), 0..256),
        lie in -8i64..8,
    ) {
        let mut bytes = vec![tag];
        let len = (body.len() as i64 + 4 + lie).max(0) as u32;
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&body);
        exercise_frames(&bytes);
        // The same bytes as a startup packet.
        let mut sp = BytesMut::new();
        sp.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
        sp.extend_from_slice(&(196_608u32 + u32::from(tag % 3)).to_be_bytes());
        sp.extend_from_slice(&body);
        let _ = decode_startup(&mut sp);
    }

    /// However the stream is cut into reads, the scanner steps over exactly
    /// the bytes that arrived and sees every small message whole.
    #[test]
    fn scanning_is_independent_of_chunking(stream in server_stream(), cuts in prop::collection::vec(1usize..4096, 1..64)) {
        let whole_tags: Vec<u8> = {
            let mut s = StreamScanner::new(MAX);
            let mut tags = Vec::new();
            let mut at = 0;
            loop {
                match s.step(&stream[at..]).unwrap() {
                    Step::Frame(h) => { tags.push(h.tag); at += h.frame_len; }
                    Step::Pass(n) => at += n,
                    Step::NeedMore => break,
                }
            }
            prop_assert_eq!(at, stream.len());
            tags
        };
        let mut s = StreamScanner::new(MAX);
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut stepped = 0;
        let mut small_tags = Vec::new();
        let mut cut = cuts.iter().cycle();
        while fed < stream.len() || !buf.is_empty() {
            let n = (*cut.next().unwrap()).min(stream.len() - fed);
            buf.extend_from_slice(&stream[fed..fed + n]);
            fed += n;
            let mut at = 0;
            loop {
                match s.step(&buf[at..]).unwrap() {
                    Step::Frame(h) => {
                        if !pgshift_protocol::scan::is_streamable(h.tag) {
                            small_tags.push(h.tag);
                        }
                        at += h.frame_len;
                    }
                    Step::Pass(n) => at += n,
                    Step::NeedMore => break,
                }
            }
            stepped += at;
            buf.drain(..at);
            if n == 0 && at == 0 {
                break;
            }
        }
        prop_assert_eq!(stepped, stream.len());
        let expected: Vec<u8> = whole_tags.into_iter().filter(|t| !pgshift_protocol::scan::is_streamable(*t)).collect();
        prop_assert_eq!(small_tags, expected);
    }
}
