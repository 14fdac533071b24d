//! The one stable 64-bit hash pgshift persists or compares across processes:
//! sticky percentage buckets and statement fingerprints.
//!
//! Both must come out the same on every proxy instance, every restart and
//! every platform, so neither may use `std`'s randomly seeded hasher. The
//! algorithm is FNV-1a 64 (offset basis `0xcbf29ce484222325`, prime
//! `0x100000001b3`) over the bytes, followed by the MurmurHash3 `fmix64`
//! finaliser. FNV-1a alone mixes its low bits poorly (they depend only on the
//! low bits of the input bytes), and buckets are taken modulo 10 000, so the
//! finaliser spreads every input bit over the whole word. It is three lines
//! of arithmetic that anyone can re-implement to predict a bucket.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Incremental FNV-1a 64; [`StableHasher::finish`] applies `fmix64`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StableHasher(u64);

impl StableHasher {
    pub(crate) fn new() -> Self {
        StableHasher(FNV_OFFSET)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    pub(crate) fn write_u8(&mut self, b: u8) {
        self.write(&[b]);
    }

    pub(crate) fn finish(self) -> u64 {
        fmix64(self.0)
    }
}

/// MurmurHash3's 64-bit finaliser: a bijection that spreads every bit.
#[inline(always)]
pub fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// `finish(write(bytes))` in one call.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h = StableHasher::new();
    h.write(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_reference_vectors_before_finaliser() {
        // Published FNV-1a 64 test vectors.
        let raw = |s: &[u8]| {
            let mut h = StableHasher::new();
            h.write(s);
            h.0
        };
        assert_eq!(raw(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(raw(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(raw(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn incremental_equals_one_shot() {
        let mut h = StableHasher::new();
        h.write(b"user");
        h.write_u8(0);
        h.write(b"app");
        assert_eq!(h.finish(), stable_hash(b"user\0app"));
    }
}
