//! Postgres' legacy MD5 password scheme, in both roles.
//!
//! MD5 is weak (the stored hash is password-equivalent, and the salt is only
//! four bytes) but older clients and servers still use it, so a proxy has to
//! speak it. The computations mirror libpq's `pg_md5_encrypt`, which is the
//! only definition that matters for interoperability.

use std::fmt;

use ::md5::{Digest, Md5};

use super::{constant_time_eq, AuthError};

/// Prefix Postgres puts before MD5 hashes, in `pg_authid` and on the wire.
const PREFIX: &str = "md5";
/// Hex digits in an MD5 digest.
const HEX_LEN: usize = 32;

/// Lower-case hex of the MD5 of the concatenation of `parts`.
///
/// Taking parts avoids building `password ++ user` in a temporary buffer that
/// would need zeroing; lower case is what Postgres writes and compares
/// against byte for byte.
pub fn md5_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    to_hex(&hasher.finalize())
}

/// What `pg_authid.rolpassword` holds for an MD5 role:
/// `"md5" + hex(md5(password ++ user))`.
///
/// The user name is the salt, which is why renaming an MD5 role clears its
/// password in Postgres.
pub fn stored_hash(user: &str, password: &str) -> String {
    format!(
        "{PREFIX}{}",
        md5_hex(&[password.as_bytes(), user.as_bytes()])
    )
}

/// What a client puts in its `PasswordMessage` after
/// `AuthenticationMD5Password`: `"md5" + hex(md5(hex(md5(password ++ user)) ++ salt))`.
///
/// pgshift uses this towards a backend that asks for MD5.
pub fn client_response(user: &str, password: &str, salt: [u8; 4]) -> String {
    let inner = md5_hex(&[password.as_bytes(), user.as_bytes()]);
    salted_response(inner.as_bytes(), salt)
}

/// The response a client holding `inner_hex` (the 32 hex digits of the
/// stored hash) must send for `salt`.
fn salted_response(inner_hex: &[u8], salt: [u8; 4]) -> String {
    format!("{PREFIX}{}", md5_hex(&[inner_hex, &salt]))
}

/// A secret that can check a client's MD5 response.
///
/// Both forms are accepted because the proxy may be configured with a
/// plaintext password or with the hash copied out of `pg_authid`; a stored
/// hash is bound to the user name it was created with, exactly as in Postgres.
#[derive(Clone, PartialEq, Eq)]
pub enum Md5Secret {
    /// The password itself; the hash is derived per user at check time.
    Plaintext(String),
    /// The 32 lower-case hex digits that follow `"md5"` in a stored hash.
    /// Construct it with [`Md5Secret::from_stored`] so the digits are checked.
    Stored([u8; HEX_LEN]),
}

impl Md5Secret {
    /// Parses a `pg_authid`-style `"md5" + 32 hex digits` string.
    ///
    /// Upper-case hex is normalised to lower case because Postgres compares
    /// the client's lower-case response textually; a hash pasted in upper
    /// case would otherwise never match.
    pub fn from_stored(stored: &str) -> Result<Self, AuthError> {
        let hex = stored
            .strip_prefix(PREFIX)
            .ok_or(AuthError::InvalidVerifier)?
            .as_bytes();
        let digits: [u8; HEX_LEN] = hex.try_into().map_err(|_| AuthError::InvalidVerifier)?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(AuthError::InvalidVerifier);
        }
        Ok(Md5Secret::Stored(digits.map(|b| b.to_ascii_lowercase())))
    }

    /// The inner hex digest (`hex(md5(password ++ user))`) for `user`.
    fn inner_hex(&self, user: &str) -> String {
        match self {
            Md5Secret::Plaintext(password) => md5_hex(&[password.as_bytes(), user.as_bytes()]),
            // Only ASCII hex digits ever get here, so this is lossless.
            Md5Secret::Stored(digits) => digits.iter().map(|&b| char::from(b)).collect(),
        }
    }
}

impl fmt::Debug for Md5Secret {
    // Both variants are password-equivalent, so they must never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Md5Secret::Plaintext(_) => f.write_str("Md5Secret::Plaintext(<redacted>)"),
            Md5Secret::Stored(_) => f.write_str("Md5Secret::Stored(<redacted>)"),
        }
    }
}

/// Checks a client's `PasswordMessage` payload against `secret`.
///
/// `user` must be the user from the startup packet (it salts the hash).
/// The payload is a C string on the wire; a trailing NUL is accepted or not,
/// depending on whether the proxy already stripped it. The comparison is
/// constant-time so response timing does not leak how close a guess was.
pub fn verify(secret: &Md5Secret, user: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let response = response.strip_suffix(&[0]).unwrap_or(response);
    let expected = salted_response(secret.inner_hex(user).as_bytes(), salt);
    constant_time_eq(expected.as_bytes(), response)
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // python3: "md5" + hashlib.md5(hashlib.md5(b"passwordpostgres").hexdigest().encode()
    //                              + b"\x01\x02\x03\x04").hexdigest()
    const POSTGRES_RESPONSE: &str = "md598511ceaec347a656f032c7f2a16ef17";
    const SALT: [u8; 4] = [0x01, 0x02, 0x03, 0x04];

    #[test]
    fn md5_hex_matches_known_digests() {
        // RFC 1321 test suite.
        assert_eq!(md5_hex(&[]), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(&[b"abc"]), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            md5_hex(&[b"a", b"", b"bc"]),
            "900150983cd24fb0d6963f7d28e17f72"
        );
    }

    #[test]
    fn client_response_matches_python() {
        assert_eq!(
            client_response("postgres", "password", SALT),
            POSTGRES_RESPONSE
        );
    }

    #[test]
    fn stored_hash_matches_postgres() {
        // PostgreSQL 15 with password_encryption = md5:
        //   CREATE ROLE md5_user PASSWORD 'password';
        //   SELECT rolpassword FROM pg_authid WHERE rolname = 'md5_user';
        assert_eq!(
            stored_hash("md5_user", "password"),
            "md57cd2b9a92689eab2e58caf2da80afa15"
        );
    }

    #[test]
    fn verify_accepts_right_response_for_both_secret_forms() {
        let plain = Md5Secret::Plaintext("password".to_owned());
        let stored = Md5Secret::from_stored(&stored_hash("postgres", "password")).unwrap();
        for secret in [&plain, &stored] {
            assert!(verify(
                secret,
                "postgres",
                SALT,
                POSTGRES_RESPONSE.as_bytes()
            ));
            let mut with_nul = POSTGRES_RESPONSE.as_bytes().to_vec();
            with_nul.push(0);
            assert!(verify(secret, "postgres", SALT, &with_nul));
        }
    }

    #[test]
    fn verify_rejects_wrong_responses() {
        let plain = Md5Secret::Plaintext("password".to_owned());
        let stored = Md5Secret::from_stored(&stored_hash("postgres", "password")).unwrap();
        let wrong_password = client_response("postgres", "passw0rd", SALT);
        let wrong_salt = client_response("postgres", "password", [4, 3, 2, 1]);
        let wrong_user = client_response("other", "password", SALT);
        for secret in [&plain, &stored] {
            assert!(!verify(secret, "postgres", SALT, wrong_password.as_bytes()));
            assert!(!verify(secret, "postgres", SALT, wrong_salt.as_bytes()));
            assert!(!verify(secret, "postgres", SALT, wrong_user.as_bytes()));
            // The stored hash itself is not a valid response (no salt applied).
            let hash = stored_hash("postgres", "password");
            assert!(!verify(secret, "postgres", SALT, hash.as_bytes()));
            assert!(!verify(secret, "postgres", SALT, b""));
            assert!(!verify(secret, "postgres", SALT, b"\0"));
            // Only one trailing NUL is tolerated.
            let mut two_nuls = POSTGRES_RESPONSE.as_bytes().to_vec();
            two_nuls.extend_from_slice(b"\0\0");
            assert!(!verify(secret, "postgres", SALT, &two_nuls));
        }
        // The right response for one user does not authenticate another.
        assert!(!verify(&plain, "other", SALT, POSTGRES_RESPONSE.as_bytes()));
    }

    #[test]
    fn from_stored_validates_format() {
        let hash = "md57cd2b9a92689eab2e58caf2da80afa15";
        assert!(Md5Secret::from_stored(hash).is_ok());
        assert_eq!(
            Md5Secret::from_stored(&hash.to_ascii_uppercase().replacen("MD5", "md5", 1)),
            Md5Secret::from_stored(hash)
        );
        for bad in [
            "",
            "md5",
            "7cd2b9a92689eab2e58caf2da80afa15",
            "md57cd2b9a92689eab2e58caf2da80afa1",
            "md57cd2b9a92689eab2e58caf2da80afa150",
            "md57cd2b9a92689eab2e58caf2da80afa1g",
            "MD57cd2b9a92689eab2e58caf2da80afa15",
            "SCRAM-SHA-256$4096:abc$def:ghi",
        ] {
            assert_eq!(
                Md5Secret::from_stored(bad),
                Err(AuthError::InvalidVerifier),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let plain = format!("{:?}", Md5Secret::Plaintext("hunter2".to_owned()));
        assert!(!plain.contains("hunter2"));
        let stored = Md5Secret::from_stored("md57cd2b9a92689eab2e58caf2da80afa15").unwrap();
        assert!(!format!("{stored:?}").contains("7cd2b9"));
    }
}
