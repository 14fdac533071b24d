//! Authentication exchanges in both roles.
//!
//! pgshift sits between clients and Postgres, so it authenticates twice: it
//! plays the server towards its clients and the client towards the backend.
//! Everything here is sans-IO: functions take the payloads carried inside
//! `AuthenticationSASL*`, `SASLInitialResponse`, `SASLResponse` and
//! `PasswordMessage` messages and return payloads, leaving framing and
//! sockets to the proxy. That keeps the cryptography testable against fixed
//! vectors and lets the proxy decide when to send what.

pub mod md5;
pub mod scram;

/// Why an authentication exchange stopped.
///
/// Every message is safe to relay to the peer: none of them carries a
/// password, a key, a proof or any byte the peer did not already have. The
/// proxy is still expected to collapse most of these into Postgres'
/// "password authentication failed" towards clients, as Postgres does, so
/// that a client cannot probe which step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The peer sent bytes that do not parse; the reason is static so that
    /// peer-controlled bytes never end up in logs or replies.
    #[error("malformed authentication message: {0}")]
    Malformed(&'static str),
    /// The client asked for a SASL mechanism other than SCRAM-SHA-256, or a
    /// backend offered none that we speak.
    #[error("unsupported SASL authentication mechanism")]
    UnsupportedMechanism,
    /// The client sent a `p=` gs2 header. We never advertise
    /// SCRAM-SHA-256-PLUS (TLS terminates at the proxy, so the client's
    /// channel is not the backend's), hence a binding request cannot be
    /// honoured and must not be silently downgraded.
    #[error("SCRAM channel binding was requested but is not supported")]
    ChannelBindingRequested,
    /// The nonce in a later message does not continue the exchange's nonce:
    /// either a replay or a confused peer.
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// The client's proof does not match the verifier (or an MD5 response
    /// does not match the secret).
    #[error("password authentication failed")]
    WrongPassword,
    /// The backend could not prove it knows the password's server key, so it
    /// may be an impostor; the proxy must not trust the session.
    #[error("SCRAM server signature verification failed")]
    BadServerSignature,
    /// A configured or stored secret is not in a format we understand.
    #[error("invalid password verifier")]
    InvalidVerifier,
    /// A step was called out of order (for example a final message before a
    /// first one, or any message after the exchange ended). A state machine
    /// that panicked here would let a peer crash a connection task.
    #[error("authentication exchange step out of order")]
    OutOfOrder,
}

/// The only SASL mechanism pgshift speaks, in either role.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// Compares two byte strings in time that depends only on their lengths.
///
/// Proofs, keys and MD5 responses are compared with this so that response
/// timing does not reveal how many leading bytes of a guess were right.
/// Lengths are not secret (they are fixed by the algorithm), so a length
/// mismatch may return early.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Stop the optimiser from turning the fold into an early-exit loop.
    core::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_content_and_length() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn error_messages_carry_no_input() {
        // Messages are static text: nothing from the peer can leak through.
        assert_eq!(
            AuthError::Malformed("missing nonce").to_string(),
            "malformed authentication message: missing nonce"
        );
        assert_eq!(
            AuthError::WrongPassword.to_string(),
            "password authentication failed"
        );
    }
}
