//! [`Classifier`]: classification behind a bounded, sharded cache.
//!
//! Every session of the proxy classifies every statement, so the hit path
//! must be cheap and must not serialise sessions on one lock. The text is
//! hashed once with SipHash (randomly keyed per process: statement text comes
//! from clients, and a predictable hash would let one flood a shard); the
//! hash picks one of up to 64 shards, each a `Mutex` around an index from
//! hash to slot and a CLOCK ring of slots. A hit costs the hash, an
//! uncontended lock, one probe, one string compare and an `Arc` clone.
//!
//! The cache is bounded by entries and by bytes, so huge one-off texts (bulk
//! INSERTs with inline values) cannot pin memory: texts over
//! [`MAX_CACHED_TEXT_BYTES`] are classified but not kept, and eviction
//! continues until both budgets fit. CLOCK (second chance) keeps statements
//! that are used again and lets one-off texts go first, at the cost of one
//! flag write per hit.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::functions::WriteFunctions;
use super::parse::{classify_text, ParsePath, Settings};
use super::Classification;

/// Longest text kept in the cache.
pub const MAX_CACHED_TEXT_BYTES: usize = 64 * 1024;
const MAX_SHARDS: usize = 64;
/// Per-entry overhead beyond the text and classification (slot, index).
const ENTRY_OVERHEAD: usize = 64;

/// How a [`Classifier`] is sized and what it counts as a write.
#[derive(Debug, Clone)]
pub struct ClassifierOptions {
    /// Texts kept in the cache; 0 disables caching. Default 10 000.
    pub capacity: usize,
    /// Memory budget of the cache over all shards (texts plus
    /// classifications). Default 64 MiB.
    pub cache_bytes: usize,
    /// Longer texts are not parsed but classified as one conservative write
    /// from a scan of their head: parsing costs about 0.3 s of CPU and
    /// 200 MB of memory per MB of text. Default 256 KiB.
    pub max_parse_bytes: usize,
    /// Function names (as Postgres stores them: unquoted names in lower
    /// case, no schema) whose call makes a SELECT a write, on top of
    /// [`super::DEFAULT_WRITE_FUNCTIONS`].
    pub write_functions: Vec<String>,
}

impl Default for ClassifierOptions {
    fn default() -> Self {
        ClassifierOptions {
            capacity: 10_000,
            cache_bytes: 64 << 20,
            max_parse_bytes: 256 << 10,
            write_functions: Vec::new(),
        }
    }
}

/// Classifies query texts, remembering recent results. `Send + Sync`; share
/// one per configuration (or per process) behind an `Arc`.
pub struct Classifier {
    shards: Box<[Shard]>,
    /// Bits of the hash below the top used to pick the shard.
    shard_shift: u32,
    hasher: RandomState,
    settings: Settings,
    /// Rare events, so a shared atomic costs nothing on the hit path.
    parse_failures: AtomicU64,
    too_deep: AtomicU64,
    too_large: AtomicU64,
}

/// Counters since the classifier was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassifierStats {
    pub hits: u64,
    /// Lookups that had to classify (texts too long to cache included).
    pub misses: u64,
    /// Texts that did not parse (classified as one conservative write).
    /// Counted per classification, so a cached failure counts once.
    pub parse_failures: u64,
    /// Texts that parsed but were too deep to decode and were classified
    /// from the parser's summary instead.
    pub too_deep: u64,
    /// Texts over `max_parse_bytes`, classified without parsing.
    pub too_large: u64,
    pub entries: usize,
    /// Approximate bytes held by cached entries.
    pub bytes: usize,
}

impl Classifier {
    /// A classifier caching up to `capacity` texts (0 disables caching),
    /// otherwise with the default [`ClassifierOptions`].
    pub fn new(capacity: usize) -> Self {
        Self::with_options(ClassifierOptions {
            capacity,
            ..ClassifierOptions::default()
        })
    }

    pub fn with_options(options: ClassifierOptions) -> Self {
        let capacity = options.capacity;
        // Enough shards to spread contention, few enough that each still
        // holds a useful number of entries (at least 32).
        let shards = (capacity / 32).clamp(1, MAX_SHARDS);
        let shards = if shards.is_power_of_two() {
            shards
        } else {
            shards.next_power_of_two() / 2
        };
        let per_shard = capacity.div_ceil(shards);
        let bytes_per_shard = options.cache_bytes / shards;
        Classifier {
            shards: (0..shards)
                .map(|_| Shard::new(per_shard, bytes_per_shard))
                .collect(),
            shard_shift: 64 - shards.trailing_zeros(),
            hasher: RandomState::new(),
            settings: Settings {
                write_functions: WriteFunctions::with_extra(options.write_functions),
                max_parse_bytes: options.max_parse_bytes,
            },
            parse_failures: AtomicU64::new(0),
            too_deep: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
        }
    }

    /// The classification of `sql`, from the cache when this exact text was
    /// classified recently.
    pub fn classify(&self, sql: &str) -> Arc<Classification> {
        if sql.len() > MAX_CACHED_TEXT_BYTES {
            // Not even hashed: hashing a huge text costs more than scanning
            // its head, and it would not be kept anyway.
            self.shards[0].lock().misses += 1;
            return Arc::new(self.classify_uncached(sql));
        }
        let hash = self.hasher.hash_one(sql);
        let shard = &self.shards[self.shard_index(hash)];
        if let Some(hit) = shard.lock().get(hash, sql) {
            return hit;
        }
        let classification = Arc::new(self.classify_uncached(sql));
        shard.lock().insert(hash, sql, Arc::clone(&classification));
        classification
    }

    fn classify_uncached(&self, sql: &str) -> Classification {
        let (classification, path) = classify_text(sql, &self.settings);
        let counter = match path {
            ParsePath::Parsed => return classification,
            ParsePath::TooDeep => &self.too_deep,
            ParsePath::Unparsed => &self.parse_failures,
            ParsePath::TooLarge => &self.too_large,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        classification
    }

    pub fn stats(&self) -> ClassifierStats {
        let mut stats = ClassifierStats {
            parse_failures: self.parse_failures.load(Ordering::Relaxed),
            too_deep: self.too_deep.load(Ordering::Relaxed),
            too_large: self.too_large.load(Ordering::Relaxed),
            ..ClassifierStats::default()
        };
        for shard in self.shards.iter() {
            let s = shard.lock();
            stats.hits += s.hits;
            stats.misses += s.misses;
            stats.entries += s.slots.len();
            stats.bytes += s.bytes;
        }
        stats
    }

    fn shard_index(&self, hash: u64) -> usize {
        // The top bits pick the shard; the index inside a shard rehashes
        // (see `SlotHasher`), so it does not see them constant.
        hash.checked_shr(self.shard_shift).unwrap_or(0) as usize
    }
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("shards", &self.shards.len())
            .field("stats", &self.stats())
            .finish()
    }
}

/// One shard, padded to its own cache lines so that sessions hitting
/// different shards do not contend on the lock words.
#[repr(align(128))]
struct Shard(Mutex<ShardState>);

impl Shard {
    fn new(capacity: usize, max_bytes: usize) -> Self {
        Shard(Mutex::new(ShardState {
            index: HashMap::default(),
            slots: Vec::new(),
            hand: 0,
            capacity,
            max_bytes,
            bytes: 0,
            hits: 0,
            misses: 0,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, ShardState> {
        // Nothing in a shard can be left inconsistent by a panic between
        // two statements, so a poisoned lock is still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct ShardState {
    /// Text hash to position in `slots`.
    index: HashMap<u64, u32, BuildHasherDefault<SlotHasher>>,
    slots: Vec<Slot>,
    /// CLOCK hand: the next slot considered for eviction.
    hand: usize,
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
    hits: u64,
    misses: u64,
}

struct Slot {
    hash: u64,
    sql: Box<str>,
    value: Arc<Classification>,
    /// Used since the hand last passed.
    referenced: bool,
    bytes: usize,
}

impl ShardState {
    fn get(&mut self, hash: u64, sql: &str) -> Option<Arc<Classification>> {
        let found = self.index.get(&hash).and_then(|&i| {
            let slot = &mut self.slots[i as usize];
            // Equal hashes with different texts are possible, just unlikely.
            (*slot.sql == *sql).then(|| {
                slot.referenced = true;
                Arc::clone(&slot.value)
            })
        });
        match found {
            Some(_) => self.hits += 1,
            None => self.misses += 1,
        }
        found
    }

    fn insert(&mut self, hash: u64, sql: &str, value: Arc<Classification>) {
        let bytes = sql.len() + value.approx_bytes() + ENTRY_OVERHEAD;
        if self.capacity == 0 || bytes > self.max_bytes {
            return;
        }
        if let Some(&i) = self.index.get(&hash) {
            // Another session classified the same text meanwhile (or, very
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

    #[test]
    fn hit_returns_the_same_arc() {
        let c = Classifier::new(100);
        let a = c.classify("SELECT 1");
        let b = c.classify("SELECT 1");
        assert!(Arc::ptr_eq(&a, &b));
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.entries), (1, 1, 1));
    }

    #[test]
    fn evicts_to_capacity_and_keeps_used_entries() {
        let c = Classifier::new(40);
        assert_eq!(c.shards.len(), 1);
        let hot = c.classify("SELECT 'hot'");
        for i in 0..200 {
            c.classify(&format!("SELECT {i}"));
            // Touch the hot entry so CLOCK gives it a second chance.
            assert!(Arc::ptr_eq(&hot, &c.classify("SELECT 'hot'")));
        }
        assert!(c.stats().entries <= 40);
    }

    #[test]
    fn byte_budget_and_oversized_texts() {
        let c = Classifier::with_options(ClassifierOptions {
            capacity: 1000,
            cache_bytes: 20_000,
            ..ClassifierOptions::default()
        });
        for i in 0..100 {
            c.classify(&format!("SELECT {i}, '{}'", "x".repeat(500)));
        }
        let s = c.stats();
        assert!(s.bytes <= 20_000, "{s:?}");
        assert!(s.entries > 0 && s.entries < 100, "{s:?}");

        let big = format!("SELECT '{}'", "y".repeat(MAX_CACHED_TEXT_BYTES));
        let c = Classifier::new(10);
        c.classify(&big);
        assert_eq!(c.stats().entries, 0);
    }

    #[test]
    fn zero_capacity_never_caches() {
        let c = Classifier::new(0);
        let a = c.classify("SELECT 1");
        let b = c.classify("SELECT 1");
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(c.stats().entries, 0);
        assert_eq!(c.stats().misses, 2);
    }

    #[test]
    fn shards_scale_with_capacity() {
        assert_eq!(Classifier::new(10_000).shards.len(), 64);
        assert_eq!(Classifier::new(100).shards.len(), 2);
        assert_eq!(Classifier::new(200).shards.len(), 4);
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Classifier>();
        check::<Arc<Classification>>();
    }
}
