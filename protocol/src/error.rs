//! What can be wrong with bytes from a peer.

/// The peer sent something that is not the Postgres protocol. Every variant
/// is a reason to answer with an ErrorResponse and close, never to panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid message length {len} for message type {:?}", *tag as char)]
    BadLength { tag: u8, len: usize },
    #[error("message type {:?} of {len} bytes exceeds the limit of {max} bytes", *tag as char)]
    TooLarge { tag: u8, len: usize, max: usize },
    #[error("invalid startup packet length {0}")]
    BadStartupLength(usize),
    #[error("unsupported frontend protocol {major}.{minor}")]
    UnsupportedVersion { major: u16, minor: u16 },
    #[error("malformed {what} message: {reason}")]
    Malformed {
        what: &'static str,
        reason: &'static str,
    },
}

impl ProtocolError {
    pub(crate) fn malformed(what: &'static str, reason: &'static str) -> Self {
        ProtocolError::Malformed { what, reason }
    }
}
