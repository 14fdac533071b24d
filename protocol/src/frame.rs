//! Framing: one tag byte, a big-endian length that counts itself, a body.
//!
//! The length is checked against a limit before the caller reserves room for
//! the body, so a peer announcing a 2 GiB message costs five bytes of reading,
//! not a 2 GiB allocation.

use bytes::{Bytes, BytesMut};

use crate::error::ProtocolError;

/// Tag byte plus the four length bytes.
pub const HEADER_LEN: usize = 5;

/// Postgres' own ceiling for a message (`PQ_LARGE_MESSAGE_LIMIT`-ish: 1 GiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 30;

/// What the five header bytes say about the frame that follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Length of the whole frame, tag and length bytes included.
    pub frame_len: usize,
}

/// Reads a header from the front of `buf`; `Ok(None)` if fewer than five bytes
/// are there. A length under 4 (it counts itself) or over `max` is a broken peer.
#[inline]
pub fn peek_header(buf: &[u8], max: usize) -> Result<Option<Header>, ProtocolError> {
    let Some(h) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    if len < 4 {
        return Err(ProtocolError::BadLength { tag: h[0], len });
    }
    if len > max {
        return Err(ProtocolError::TooLarge {
            tag: h[0],
            len,
            max,
        });
    }
    Ok(Some(Header {
        tag: h[0],
        frame_len: len + 1,
    }))
}

/// One whole message as it arrived: tag, length and body in one `Bytes` view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    bytes: Bytes,
}

impl Frame {
    /// Wraps bytes already known to be exactly one frame (e.g. from an encoder).
    pub fn from_bytes_unchecked(bytes: Bytes) -> Self {
        debug_assert!(bytes.len() >= HEADER_LEN);
        Frame { bytes }
    }

    #[inline]
    pub fn tag(&self) -> u8 {
        self.bytes[0]
    }

    #[inline]
    pub fn body(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }

    /// The original bytes, to be forwarded unchanged.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    #[inline]
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Splits one whole frame off the front of `buf`.
///
/// `Ok(None)` means more bytes are needed; in that case enough capacity for
/// the announced frame has been reserved, so the next read fills it without
/// reallocating along the way.
pub fn decode_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, ProtocolError> {
    let Some(header) = peek_header(buf, max)? else {
        return Ok(None);
    };
    if buf.len() < header.frame_len {
        buf.reserve(header.frame_len - buf.len());
        return Ok(None);
    }
    Ok(Some(Frame {
        bytes: buf.split_to(header.frame_len).freeze(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_more_until_whole() {
        let mut buf = BytesMut::from(&b"Q\x00\x00\x00\x0dSELECT 1\x00"[..]);
        let whole = buf.clone();
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            assert_eq!(decode_frame(&mut part, 1024).unwrap(), None, "cut {cut}");
        }
        let frame = decode_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(frame.tag(), b'Q');
        assert_eq!(frame.body(), b"SELECT 1\x00");
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_short_and_huge_lengths() {
        let mut short = BytesMut::from(&b"Q\x00\x00\x00\x03"[..]);
        assert!(matches!(
            decode_frame(&mut short, 1024),
            Err(ProtocolError::BadLength { .. })
        ));
        let mut huge = BytesMut::from(&b"Q\x7f\xff\xff\xff"[..]);
        assert!(matches!(
            decode_frame(&mut huge, 1 << 30),
            Err(ProtocolError::TooLarge { .. })
        ));
        // The limit is checked before any room is reserved for the body.
        assert!(huge.capacity() < 1024);
    }

    #[test]
    fn splits_consecutive_frames() {
        let mut buf = BytesMut::from(&b"S\x00\x00\x00\x04H\x00\x00\x00\x04"[..]);
        assert_eq!(decode_frame(&mut buf, 64).unwrap().unwrap().tag(), b'S');
        assert_eq!(decode_frame(&mut buf, 64).unwrap().unwrap().tag(), b'H');
        assert_eq!(decode_frame(&mut buf, 64).unwrap(), None);
    }
}
