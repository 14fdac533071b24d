//! A fixed-size log-linear latency histogram with atomic counters.
//!
//! Microsecond values below 8 get a bucket each; above, every power of two
//! is split into 8 equal buckets, so a bucket is at most 12.5% wide and a
//! percentile reported at its bucket's midpoint is within about 6% of the
//! truth. Values from 2^32 µs (about 71 minutes) on share the last bucket.
//! 240 counters, about 2 KiB; recording is a few atomic adds and never
//! allocates or locks.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// Values at or above 2^MAX_EXP µs land in the last bucket.
const MAX_EXP: u32 = 32;
pub const BUCKETS: usize = (SUB + (MAX_EXP - SUB_BITS) as u64 * SUB) as usize;

pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS],
    sum_micros: AtomicU64,
    max_micros: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
            max_micros: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count())
            .field("p50_micros", &self.p50())
            .field("p99_micros", &self.p99())
            .finish()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&self, d: Duration) {
        self.record_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn record_micros(&self, us: u64) {
        self.buckets[bucket_of(us)].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(us, Relaxed);
        // Reading first keeps the common case free of a contended write.
        if us > self.max_micros.load(Relaxed) {
            self.max_micros.fetch_max(us, Relaxed);
        }
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    pub fn max_micros(&self) -> u64 {
        self.max_micros.load(Relaxed)
    }

    pub fn mean_micros(&self) -> Option<f64> {
        let n = self.count();
        (n > 0).then(|| self.sum_micros.load(Relaxed) as f64 / n as f64)
    }

    /// The `q` quantile (0.0..=1.0) in microseconds, `None` when empty: the
    /// midpoint of the bucket holding the rank-`ceil(q·n)` value, never above
    /// the largest value recorded; the largest value itself for the top rank
    /// or the open-ended last bucket.
    pub fn percentile(&self, q: f64) -> Option<u64> {
        // Counts may move while we read; rank against the counts we saw.
        let mut counts = [0u64; BUCKETS];
        for (c, b) in counts.iter_mut().zip(&self.buckets) {
            *c = b.load(Relaxed);
        }
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        if rank == total {
            return Some(self.max_micros());
        }
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                if i == BUCKETS - 1 {
                    return Some(self.max_micros());
                }
                let (low, width) = bucket_bounds(i);
                let max = self.max_micros().max(low);
                return Some((low + width / 2).min(max));
            }
        }
        Some(self.max_micros())
    }

    pub fn p50(&self) -> Option<u64> {
        self.percentile(0.5)
    }

    pub fn p99(&self) -> Option<u64> {
        self.percentile(0.99)
    }
}

fn bucket_of(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let e = 63 - us.leading_zeros();
    if e >= MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = (us >> (e - SUB_BITS)) & (SUB - 1);
    ((u64::from(e - SUB_BITS + 1)) * SUB + sub) as usize
}

/// A bucket's lowest value and width.
fn bucket_bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB {
        return (i, 1);
    }
    let e = (i / SUB) as u32 + SUB_BITS - 1;
    let sub = i % SUB;
    let width = 1u64 << (e - SUB_BITS);
    ((SUB + sub) * width, width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range() {
        assert_eq!(BUCKETS, 240);
        let mut next = 0;
        for i in 0..BUCKETS {
            let (low, width) = bucket_bounds(i);
            assert_eq!(low, next, "bucket {i}");
            assert_eq!(bucket_of(low), i);
            assert_eq!(bucket_of(low + width - 1), i);
            assert!(width == 1 || width * 8 <= low, "bucket {i} is too wide");
            next = low + width;
        }
        assert_eq!(next, 1 << MAX_EXP);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_of_known_data() {
        let h = LatencyHistogram::new();
        assert_eq!(h.p50(), None);
        for us in 1..=10_000 {
            h.record_micros(us);
        }
        assert_eq!(h.count(), 10_000);
        let within = |got: Option<u64>, want: f64| {
            let got = got.unwrap() as f64;
            assert!(
                (got - want).abs() / want <= 0.0625,
                "got {got}, want {want}"
            );
        };
        within(h.p50(), 5_000.0);
        within(h.p99(), 9_900.0);
        within(h.percentile(0.9), 9_000.0);
        assert_eq!(h.percentile(1.0), Some(10_000));
        assert_eq!(h.percentile(0.0), Some(1));
        assert!((h.mean_micros().unwrap() - 5_000.5).abs() < 1e-9);
    }

    #[test]
    fn skewed_data_and_small_values() {
        let h = LatencyHistogram::new();
        for _ in 0..990 {
            h.record(Duration::from_micros(3));
        }
        for _ in 0..10 {
            h.record(Duration::from_millis(250));
        }
        assert_eq!(h.p50(), Some(3));
        assert_eq!(h.percentile(0.99), Some(3));
        let p999 = h.percentile(0.999).unwrap() as f64;
        assert!((p999 - 250_000.0).abs() / 250_000.0 <= 0.0625, "{p999}");
        h.record(Duration::from_secs(10 * 3600));
        assert_eq!(h.percentile(1.0), Some(36_000_000_000));
    }
}
