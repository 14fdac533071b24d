//! Walking a server's byte stream for forwarding.
//!
//! The forwarding path must see each message's tag (to find ReadyForQuery,
//! errors, COPY mode switches) but must not hold a 500 MB DataRow in memory
//! just to pass it on. The scanner reports whole frames when they are
//! buffered, and lets the caller stream the bytes of a large DataRow or
//! CopyData as they arrive.

use crate::backend::tag;
use crate::error::ProtocolError;
use crate::frame::{peek_header, Header};

/// What the front of the unscanned bytes holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A whole frame of this header is buffered at the front.
    Frame(Header),
    /// The next `n` bytes belong to a streamed frame and can be forwarded as
    /// they are; the caller never sees that frame whole.
    Pass(usize),
    /// Nothing more can be said until more bytes arrive.
    NeedMore,
}

/// Row and copy payloads are the only messages that grow with the data;
/// every other message is small and worth seeing whole.
#[inline]
pub fn is_streamable(t: u8) -> bool {
    t == tag::DATA_ROW || t == tag::COPY_DATA
}

/// A client's CopyData is its only message that grows with the data (a Bind
/// can be large too, but routing needs it whole).
#[inline]
pub fn is_streamable_frontend(t: u8) -> bool {
    t == crate::frontend::tag::COPY_DATA
}

#[derive(Debug, Clone)]
pub struct StreamScanner {
    /// Bytes of a streamed frame that are still to come.
    remaining: usize,
    max_message_size: usize,
    streamable: fn(u8) -> bool,
    whole_only: bool,
}

impl StreamScanner {
    /// For a server's stream: DataRow and CopyData are streamed.
    pub fn new(max_message_size: usize) -> Self {
        StreamScanner {
            remaining: 0,
            max_message_size,
            streamable: is_streamable,
            whole_only: false,
        }
    }

    /// For a client's stream: only CopyData is streamed.
    pub fn frontend(max_message_size: usize) -> Self {
        StreamScanner {
            remaining: 0,
            max_message_size,
            streamable: is_streamable_frontend,
            whole_only: false,
        }
    }

    /// How many bytes the frame at the front of `unscanned` still needs,
    /// so the caller can reserve room once instead of growing by doubling.
    pub fn shortfall(&self, unscanned: &[u8]) -> usize {
        if self.remaining > 0 {
            return self.remaining;
        }
        match peek_header(unscanned, usize::MAX) {
            Ok(Some(h)) => h.frame_len.saturating_sub(unscanned.len()),
            _ => 0,
        }
    }

    /// Whether DataRow/CopyData frames may be streamed in pieces (the
    /// default) or must be delivered whole, bounded by the message size
    /// limit, for a caller that reads their contents. Takes effect at the
    /// next frame boundary.
    pub fn set_streaming(&mut self, on: bool) {
        self.whole_only = !on;
    }

    /// True between frames, i.e. when a whole frame will come next.
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Looks at `unscanned` (the bytes after everything already stepped
    /// over). After `Frame(h)` the caller must step over `h.frame_len` bytes,
    /// after `Pass(n)` over `n` bytes.
    #[inline]
    pub fn step(&mut self, unscanned: &[u8]) -> Result<Step, ProtocolError> {
        if self.remaining > 0 {
            if unscanned.is_empty() {
                return Ok(Step::NeedMore);
            }
            let n = self.remaining.min(unscanned.len());
            self.remaining -= n;
            return Ok(Step::Pass(n));
        }
        // Streamed frames have no size limit of ours: Postgres bounds them
        // and pgshift never buffers one whole.
        let limit = match unscanned.first() {
            Some(&t) if (self.streamable)(t) && !self.whole_only => u32::MAX as usize,
            _ => self.max_message_size,
        };
        let Some(h) = peek_header(unscanned, limit)? else {
            return Ok(Step::NeedMore);
        };
        if unscanned.len() >= h.frame_len {
            return Ok(Step::Frame(h));
        }
        if (self.streamable)(h.tag) && !self.whole_only {
            self.remaining = h.frame_len - unscanned.len();
            return Ok(Step::Pass(unscanned.len()));
        }
        Ok(Step::NeedMore)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_row(len: usize) -> Vec<u8> {
        let mut v = vec![b'D'];
        v.extend_from_slice(&((len + 4) as u32).to_be_bytes());
        v.extend(std::iter::repeat_n(7u8, len));
        v
    }

    /// Feeds `stream` in chunks of `chunk` bytes and returns the tags seen
    /// whole plus the number of bytes passed through in pieces.
    fn scan_in_chunks(stream: &[u8], chunk: usize) -> (Vec<u8>, usize) {
        let mut s = StreamScanner::new(1024);
        let mut tags = Vec::new();
        let mut passed = 0;
        let mut buf: Vec<u8> = Vec::new();
        for piece in stream.chunks(chunk) {
            buf.extend_from_slice(piece);
            let mut at = 0;
            loop {
                match s.step(&buf[at..]).unwrap() {
                    Step::Frame(h) => {
                        tags.push(h.tag);
                        at += h.frame_len;
                    }
                    Step::Pass(n) => {
                        passed += n;
                        at += n;
                    }
                    Step::NeedMore => break,
                }
            }
            buf.drain(..at);
        }
        assert!(buf.is_empty());
        assert!(s.at_boundary());
        (tags, passed)
    }

    #[test]
    fn large_rows_stream_and_small_frames_come_whole() {
        let mut stream = data_row(10_000);
        stream.extend_from_slice(b"C\x00\x00\x00\x0dSELECT 1\x00Z\x00\x00\x00\x05I");
        let (tags, passed) = scan_in_chunks(&stream, 4096);
        assert_eq!(tags, vec![b'C', b'Z']);
        assert_eq!(passed, 10_005);
        let (tags, passed) = scan_in_chunks(&stream, 1 << 20);
        assert_eq!(tags, vec![b'D', b'C', b'Z']);
        assert_eq!(passed, 0);
        for chunk in [1, 2, 3, 5, 7, 4095] {
            let (tags, passed) = scan_in_chunks(&stream, chunk);
            assert_eq!(&tags[tags.len() - 2..], b"CZ", "chunk {chunk}");
            assert!(passed == 0 || passed == 10_005, "chunk {chunk}: {passed}");
        }
    }

    #[test]
    fn oversized_control_messages_are_refused() {
        let mut s = StreamScanner::new(1024);
        assert!(s.step(b"E\x00\x10\x00\x00").is_err());
        let mut s = StreamScanner::new(1024);
        assert!(matches!(s.step(b"D\x00\x10\x00\x00xx"), Ok(Step::Pass(7))));
    }
}
