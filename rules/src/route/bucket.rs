//! Sticky percentage buckets (SPEC guarantee 10). The algorithm, which
//! other tools may re-implement to predict a bucket, is documented on
//! [`bucket`].

use std::net::IpAddr;

use crate::config::Sticky;
use crate::hash::StableHasher;

/// Buckets per sticky dimension; a percent point is 100 buckets.
pub const BUCKETS: u16 = 10_000;

/// The bucket of `key` for rules sticky on `sticky`.
///
/// A rule with `percent: P` applies to a session when the bucket of the
/// session's sticky key is below `P * 100`. The bucket is
///
/// ```text
/// bucket = H(sticky ++ "\0" ++ key) mod 10000
/// ```
///
/// where `sticky` is the rule's `sticky:` value as spelled in the config
/// (`session`, `user`, `application_name`, `client_addr`), `key` is the
/// UTF-8 text below, and `H` is FNV-1a 64 (offset basis
/// `0xcbf29ce484222325`, prime `0x100000001b3`) followed by MurmurHash3's
/// `fmix64` finaliser (`h ^= h >> 33; h *= 0xff51afd7ed558ccd; h ^= h >> 33;
/// h *= 0xc4ceb9fe1a85ec53; h ^= h >> 33`, wrapping). Consequences:
///
/// - the same key lands in the same bucket on every instance and after every
///   restart (no random seed, no platform dependence);
/// - every rule sticky on the same thing puts a given key in the same
///   bucket, so raising a percentage only adds buckets: a key inside 10% is
///   inside 20%, in this rule or any other;
/// - the `sticky` prefix keeps the dimensions independent: the sessions of
///   user `x` and of application `x` are not split the same way.
///
/// Keys: `session` is the session's random 64-bit key in decimal; `user` and
/// `application_name` are the startup values as sent (an empty application
/// name is the empty key, shared by all such clients); `client_addr` is the
/// address in its canonical text form (IPv4 dotted quad, IPv6 as RFC 5952),
/// with IPv4-mapped IPv6 (`::ffff:10.1.2.3`) read as the IPv4 address so a
/// client is bucketed alike by dual-stack and IPv4 listeners. Unix-socket
/// clients have no address and share the empty key.
pub fn bucket(sticky: Sticky, key: &str) -> u16 {
    let mut h = StableHasher::new();
    h.write(sticky.as_str().as_bytes());
    h.write_u8(0);
    h.write(key.as_bytes());
    (h.finish() % u64::from(BUCKETS)) as u16
}

/// Whether `bucket` is among the first `percent` percent.
pub fn in_percent(bucket: u16, percent: u8) -> bool {
    u32::from(bucket) < u32::from(percent) * 100
}

/// The canonical form of a client address for matching and bucketing.
pub fn canonical_addr(addr: IpAddr) -> IpAddr {
    addr.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values computed independently, in Python:
    ///
    /// ```python
    /// def h(b):
    ///     x = 0xcbf29ce484222325
    ///     for c in b:
    ///         x = ((x ^ c) * 0x100000001b3) % 2**64
    ///     M = 2**64
    ///     x ^= x >> 33; x = (x * 0xff51afd7ed558ccd) % M
    ///     x ^= x >> 33; x = (x * 0xc4ceb9fe1a85ec53) % M
    ///     x ^= x >> 33
    ///     return x
    /// bucket = lambda sticky, key: h(sticky.encode() + b"\0" + key.encode()) % 10000
    /// ```
    #[test]
    fn documented_algorithm() {
        for (sticky, key, expected) in EXPECTED {
            assert_eq!(bucket(*sticky, key), *expected, "{sticky} {key:?}");
        }
    }

    const EXPECTED: &[(Sticky, &str, u16)] = &[
        (Sticky::Session, "0", 6730),
        (Sticky::Session, "42", 3314),
        (Sticky::Session, "18446744073709551615", 9212),
        (Sticky::User, "app", 6045),
        (Sticky::User, "alice", 6741),
        (Sticky::ApplicationName, "", 1600),
        (Sticky::ApplicationName, "psql", 6202),
        (Sticky::ClientAddr, "10.1.2.3", 3635),
        (Sticky::ClientAddr, "2001:db8::1", 9098),
        (Sticky::ClientAddr, "", 4983),
    ];

    #[test]
    fn monotonic_over_percent() {
        for key in 0..2000u32 {
            let b = bucket(Sticky::Session, &key.to_string());
            let first_in = (0..=100u8).find(|p| in_percent(b, *p)).unwrap();
            assert!((0..=100u8).all(|p| in_percent(b, p) == (p >= first_in)));
        }
        assert!(!in_percent(0, 0));
        assert!(in_percent(BUCKETS - 1, 100));
    }

    #[test]
    fn canonical_addresses() {
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(canonical_addr(mapped).to_string(), "10.1.2.3");
        let v6: IpAddr = "2001:DB8:0:0:0:0:0:1".parse().unwrap();
        assert_eq!(canonical_addr(v6).to_string(), "2001:db8::1");
    }
}
