//! Client passwords as stored in the config: plain text, a SCRAM verifier or
//! an md5 hash, told apart by the same prefixes Postgres uses in pg_authid.

use std::fmt;

/// A client credential. `Debug` and `Display` never show the secret itself.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Plain(String),
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    ScramVerifier(String),
    /// `md5` followed by 32 lowercase hex digits: md5(password || user).
    Md5Hash(String),
}

impl Secret {
    /// The secret text; only for the code that performs authentication.
    pub fn expose(&self) -> &str {
        match self {
            Secret::Plain(s) | Secret::ScramVerifier(s) | Secret::Md5Hash(s) => s,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Secret::Plain(_) => "password",
            Secret::ScramVerifier(_) => "SCRAM verifier",
            Secret::Md5Hash(_) => "md5 hash",
        }
    }

    /// Classifies a configured password, checking stored verifiers' shape so
    /// a truncated paste fails at load time rather than at first login.
    pub(crate) fn classify(text: String) -> Result<Secret, String> {
        if text.is_empty() {
            return Err("password is empty".into());
        }
        if let Some(body) = text.strip_prefix("SCRAM-SHA-256$") {
            return if scram_shape_ok(body) {
                Ok(Secret::ScramVerifier(text))
            } else {
                Err("looks like a SCRAM verifier but is malformed: expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> (base64, 32-byte keys)".into())
            };
        }
        if let Some(hex) = text.strip_prefix("md5") {
            if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(Secret::Md5Hash(text.to_ascii_lowercase()));
            }
        }
        Ok(Secret::Plain(text))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Secret::Plain(_) => "Plain",
            Secret::ScramVerifier(_) => "ScramVerifier",
            Secret::Md5Hash(_) => "Md5Hash",
        };
        write!(f, "{name}(****)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.kind_name())
    }
}

fn scram_shape_ok(body: &str) -> bool {
    let Some((iter_salt, keys)) = body.split_once('$') else {
        return false;
    };
    let Some((iterations, salt)) = iter_salt.split_once(':') else {
        return false;
    };
    let Some((stored, server)) = keys.split_once(':') else {
        return false;
    };
    matches!(iterations.parse::<u32>(), Ok(n) if n > 0 && !iterations.starts_with('+'))
        && matches!(base64_len(salt), Some(n) if n > 0)
        && base64_len(stored) == Some(32)
        && base64_len(server) == Some(32)
}

/// Decoded length of padded standard base64, or None if it is not base64.
fn base64_len(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return None;
    }
    let body = s.trim_end_matches('=');
    let padding = s.len() - body.len();
    let alphabet = |b: u8| b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
    if padding > 2 || !body.bytes().all(alphabet) {
        return None;
    }
    Some(bytes.len() / 4 * 3 - padding)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    #[test]
    fn classifies() {
        let v = format!("SCRAM-SHA-256$4096:c2FsdA==${KEY}:{KEY}");
        assert!(matches!(Secret::classify(v), Ok(Secret::ScramVerifier(_))));
        let md5 = format!("md5{}", "A".repeat(32));
        assert_eq!(
            Secret::classify(md5).unwrap(),
            Secret::Md5Hash(format!("md5{}", "a".repeat(32)))
        );
        assert!(matches!(
            Secret::classify("md5short".into()),
            Ok(Secret::Plain(_))
        ));
        assert!(matches!(
            Secret::classify("hunter2".into()),
            Ok(Secret::Plain(_))
        ));
        assert!(Secret::classify(String::new()).is_err());
    }

    #[test]
    fn rejects_malformed_verifiers() {
        for bad in [
            "SCRAM-SHA-256$",
            "SCRAM-SHA-256$4096:c2FsdA==",
            "SCRAM-SHA-256$0:c2FsdA==$K:K",
            "SCRAM-SHA-256$x:c2FsdA==$K:K",
        ] {
            assert!(Secret::classify(bad.into()).is_err(), "{bad}");
        }
        let short = format!("SCRAM-SHA-256$4096:c2FsdA==$c2FsdA==:{KEY}");
        assert!(Secret::classify(short).is_err());
        let bad_salt = format!("SCRAM-SHA-256$4096:!!!!${KEY}:{KEY}");
        assert!(Secret::classify(bad_salt).is_err());
    }

    #[test]
    fn never_prints_secret() {
        let s = Secret::Plain("hunter2".into());
        assert!(!format!("{s:?} {s}").contains("hunter2"));
    }
}
