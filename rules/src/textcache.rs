//! A bounded, sharded cache keyed by statement text, shared by the
//! classifier and the rewriter.
//!
//! Every session of the proxy looks up every statement, so the hit path
//! must be cheap and must not serialise sessions on one lock. The text is
//! hashed once with SipHash (randomly keyed per process: statement text comes
//! from clients, and a predictable hash would let one flood a shard); the
//! hash picks one of up to 64 shards, each a `Mutex` around an index from
//! hash to slot and a CLOCK ring of slots. A hit costs the hash, an
//! uncontended lock, one probe, one string compare and a clone of the value
//! (an `Arc` or a small enum of them).
//!
//! The cache is bounded by entries and by bytes, so huge one-off texts (bulk
//! INSERTs with inline values) cannot pin memory: texts over
//! [`MAX_CACHED_TEXT_BYTES`] are not kept, and eviction continues until both
//! budgets fit. CLOCK (second chance) keeps statements that are used again
//! and lets one-off texts go first, at the cost of one flag write per hit.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::classify::shape::{shape, Shape};

/// Longest text kept in the cache.
pub const MAX_CACHED_TEXT_BYTES: usize = 64 * 1024;
const MAX_SHARDS: usize = 64;
/// Per-entry overhead beyond the text and value (slot, index).
const ENTRY_OVERHEAD: usize = 64;

/// A cached value's share of the byte budget, beyond its text.
pub(crate) trait Weigh {
    fn approx_bytes(&self) -> usize;
}

/// Hits and size of a [`TextCache`]; with the misses (computations) of a
/// [`TextAndShape`] pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
    pub bytes: usize,
}

/// The shape a [`TextAndShape`] would cache `sql` by; `None` for a text
/// too long to cache or without one.
pub(crate) fn cacheable_shape(sql: &str) -> Option<Shape> {
    if sql.len() > MAX_CACHED_TEXT_BYTES {
        return None;
    }
    shape(sql)
}

/// A cache by exact text beside one by literal-free shape (see
/// [`crate::classify::shape`]), sharing one budget: a workload of repeated
/// texts fills the first, one of inlined values the second. What may be
/// shared by shape, and how, is the user's business; the misses it counts
/// are its computations.
pub(crate) struct TextAndShape<V, S> {
    pub texts: TextCache<V>,
    pub shapes: TextCache<S>,
    misses: AtomicU64,
}

impl<V: Clone + Weigh, S: Clone + Weigh> TextAndShape<V, S> {
    /// `capacity` texts and as many shapes, within `max_bytes` in all.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        TextAndShape {
            texts: TextCache::new(capacity, max_bytes / 2),
            shapes: TextCache::new(capacity, max_bytes / 2),
            misses: AtomicU64::new(0),
        }
    }

    /// A value had to be computed (rare, next to a parse: a shared atomic
    /// costs nothing here).
    pub fn count_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> CacheStats {
        let mut stats = CacheStats {
            misses: self.misses.load(Ordering::Relaxed),
            ..CacheStats::default()
        };
        for cache in [self.texts.stats(), self.shapes.stats()] {
            stats.hits += cache.hits;
            stats.entries += cache.entries;
            stats.bytes += cache.bytes;
        }
        stats
    }
}

pub(crate) struct TextCache<V> {
    shards: Box<[Shard<V>]>,
    /// Bits of the hash below the top used to pick the shard.
    shard_shift: u32,
    hasher: RandomState,
}

impl<V: Clone + Weigh> TextCache<V> {
    /// Up to `capacity` texts (0 disables caching) within `max_bytes`.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        // Enough shards to spread contention, few enough that each still
        // holds a useful number of entries (at least 32).
        let shards = (capacity / 32).clamp(1, MAX_SHARDS);
        let shards = if shards.is_power_of_two() {
            shards
        } else {
            shards.next_power_of_two() / 2
        };
        let per_shard = capacity.div_ceil(shards);
        let bytes_per_shard = max_bytes / shards;
        TextCache {
            shards: (0..shards)
                .map(|_| Shard::new(per_shard, bytes_per_shard))
                .collect(),
            shard_shift: 64 - shards.trailing_zeros(),
            hasher: RandomState::new(),
        }
    }

    /// The cached value for `sql`, if any. Hits are counted here; what a
    /// miss is (a parse) the caller knows and counts.
    pub fn get(&self, sql: &str) -> Option<V> {
        if sql.len() > MAX_CACHED_TEXT_BYTES {
            return None;
        }
        let hash = self.hasher.hash_one(sql);
        self.shards[self.shard_index(hash)].lock().get(hash, sql)
    }

    /// Keeps `value` for `sql` (when the text is short enough).
    pub fn insert(&self, sql: &str, value: V) {
        if sql.len() > MAX_CACHED_TEXT_BYTES {
            return;
        }
        let hash = self.hasher.hash_one(sql);
        self.shards[self.shard_index(hash)]
            .lock()
            .insert(hash, sql, value);
    }

    pub fn stats(&self) -> CacheStats {
        let mut stats = CacheStats::default();
        for shard in self.shards.iter() {
            let s = shard.lock();
            stats.hits += s.hits;
            stats.entries += s.slots.len();
            stats.bytes += s.bytes;
        }
        stats
    }

    #[cfg(test)]
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn shard_index(&self, hash: u64) -> usize {
        // The top bits pick the shard; the index inside a shard rehashes
        // (see `SlotHasher`), so it does not see them constant.
        hash.checked_shr(self.shard_shift).unwrap_or(0) as usize
    }
}

/// One shard, padded to its own cache lines so that sessions hitting
/// different shards do not contend on the lock words.
#[repr(align(128))]
struct Shard<V>(Mutex<ShardState<V>>);

impl<V: Clone + Weigh> Shard<V> {
    fn new(capacity: usize, max_bytes: usize) -> Self {
        Shard(Mutex::new(ShardState {
            index: HashMap::default(),
            slots: Vec::new(),
            hand: 0,
            capacity,
            max_bytes,
            bytes: 0,
            hits: 0,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, ShardState<V>> {
        // Nothing in a shard can be left inconsistent by a panic between
        // two statements, so a poisoned lock is still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct ShardState<V> {
    /// Text hash to position in `slots`.
    index: HashMap<u64, u32, BuildHasherDefault<SlotHasher>>,
    slots: Vec<Slot<V>>,
    /// CLOCK hand: the next slot considered for eviction.
    hand: usize,
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
    hits: u64,
}

struct Slot<V> {
    hash: u64,
    sql: Box<str>,
    value: V,
    /// Used since the hand last passed.
    referenced: bool,
    bytes: usize,
}

impl<V: Clone + Weigh> ShardState<V> {
    fn get(&mut self, hash: u64, sql: &str) -> Option<V> {
        let found = self.index.get(&hash).and_then(|&i| {
            let slot = &mut self.slots[i as usize];
            // Equal hashes with different texts are possible, just unlikely.
            (*slot.sql == *sql).then(|| {
                slot.referenced = true;
                slot.value.clone()
            })
        });
        if found.is_some() {
            self.hits += 1;
        }
        found
    }

    fn insert(&mut self, hash: u64, sql: &str, value: V) {
        let bytes = sql.len() + value.approx_bytes() + ENTRY_OVERHEAD;
        if self.capacity == 0 || bytes > self.max_bytes {
            return;
        }
        if let Some(&i) = self.index.get(&hash) {
            // Another session computed the same text meanwhile (or, very
            // rarely, a different text with the same hash): keep the newer.
            self.remove(i as usize);
        }
        while !self.slots.is_empty()
            && (self.slots.len() >= self.capacity || self.bytes + bytes > self.max_bytes)
        {
            self.evict_one();
        }
        let Ok(position) = u32::try_from(self.slots.len()) else {
            return;
        };
        self.index.insert(hash, position);
        self.bytes += bytes;
        self.slots.push(Slot {
            hash,
            sql: sql.into(),
            value,
            referenced: false,
            bytes,
        });
    }

    /// Advances the hand past recently used slots (clearing their flag) and
    /// removes the first one that was not.
    fn evict_one(&mut self) {
        loop {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let slot = &mut self.slots[self.hand];
            if slot.referenced {
                slot.referenced = false;
                self.hand += 1;
            } else {
                self.remove(self.hand);
                return;
            }
        }
    }

    fn remove(&mut self, i: usize) {
        let slot = self.slots.swap_remove(i);
        self.index.remove(&slot.hash);
        self.bytes -= slot.bytes;
        if let Some(moved) = self.slots.get(i) {
            self.index.insert(moved.hash, i as u32);
        }
    }
}

/// The index's keys are already SipHash outputs; mixing them once more with
/// a multiply is enough, and spreads the bits the shard choice fixed.
#[derive(Default)]
struct SlotHasher(u64);

impl Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Weigh for u32 {
        fn approx_bytes(&self) -> usize {
            4
        }
    }

    #[test]
    fn shards_scale_with_capacity() {
        assert_eq!(TextCache::<u32>::new(10_000, 1 << 20).shard_count(), 64);
        assert_eq!(TextCache::<u32>::new(100, 1 << 20).shard_count(), 2);
        assert_eq!(TextCache::<u32>::new(200, 1 << 20).shard_count(), 4);
    }

    #[test]
    fn keeps_what_is_inserted_and_counts_hits() {
        let c = TextCache::<u32>::new(100, 1 << 20);
        assert_eq!(c.get("a"), None);
        c.insert("a", 1);
        assert_eq!(c.get("a"), Some(1));
        c.insert("a", 2);
        assert_eq!(c.get("a"), Some(2));
        let s = c.stats();
        assert_eq!((s.hits, s.entries), (2, 1));
        // Too long to keep.
        let long = "x".repeat(MAX_CACHED_TEXT_BYTES + 1);
        c.insert(&long, 3);
        assert_eq!(c.get(&long), None);
    }
}
