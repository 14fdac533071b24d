//! [`Classifier`]: classification behind a bounded, sharded cache (see
//! [`crate::textcache`]): applications repeat the same few hundred
//! statements, and a hit costs a hash and a string compare, not a parse.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::functions::WriteFunctions;
use super::parse::{classify_text, ParsePath, Settings};
use super::Classification;
pub use crate::textcache::MAX_CACHED_TEXT_BYTES;
use crate::textcache::{TextCache, Weigh};

impl Weigh for Arc<Classification> {
    fn approx_bytes(&self) -> usize {
        Classification::approx_bytes(self)
    }
}

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
    cache: TextCache<Arc<Classification>>,
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
        Classifier {
            cache: TextCache::new(options.capacity, options.cache_bytes),
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
        self.cache
            .get_or_insert_with(sql, |sql| Arc::new(self.classify_uncached(sql)))
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
        let cache = self.cache.stats();
        stats.hits = cache.hits;
        stats.misses = cache.misses;
        stats.entries = cache.entries;
        stats.bytes = cache.bytes;
        stats
    }
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("stats", &self.stats())
            .finish()
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
        assert_eq!(c.cache.shard_count(), 1);
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
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Classifier>();
        check::<Arc<Classification>>();
    }
}
