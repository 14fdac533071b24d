//! [`Classifier`]: classification behind bounded, sharded caches (see
//! [`crate::textcache`]): applications repeat the same few hundred
//! statements, and a hit costs a hash and a string compare, not a parse.
//! Texts with inlined literals are cached by their shape (see
//! [`super::shape`]), so `... WHERE id = 1` and `... WHERE id = 2` share
//! one entry and one parse.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::functions::WriteFunctions;
use super::parse::{classify_text, ParsePath, Settings};
use super::shape::{self, Shape};
use super::Classification;
pub use crate::textcache::MAX_CACHED_TEXT_BYTES;
use crate::textcache::{cacheable_shape, TextAndShape, Weigh};

impl Weigh for Arc<Classification> {
    fn approx_bytes(&self) -> usize {
        Classification::approx_bytes(self)
    }
}

/// The classification of one text of a shape, with where that text's
/// literals were (to move the spans for another text of the shape).
#[derive(Clone)]
struct ShapeEntry {
    class: Arc<Classification>,
    literals: Arc<[std::ops::Range<usize>]>,
}

impl Weigh for ShapeEntry {
    fn approx_bytes(&self) -> usize {
        self.class.approx_bytes()
            + self.literals.len() * std::mem::size_of::<std::ops::Range<usize>>()
    }
}

/// How a [`Classifier`] is sized and what it counts as a write.
#[derive(Debug, Clone)]
pub struct ClassifierOptions {
    /// Texts kept in the cache, and as many shapes; 0 disables caching.
    /// Default 10 000.
    pub capacity: usize,
    /// Memory budget over all shards (texts plus classifications), half
    /// for exact texts and half for shapes. Default 64 MiB.
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
    /// By exact text, and by shape for texts whose classification is
    /// shareable.
    cache: TextAndShape<Arc<Classification>, ShapeEntry>,
    settings: Settings,
    /// Rare events, so a shared atomic costs nothing on the hit path.
    parse_failures: AtomicU64,
    too_deep: AtomicU64,
    too_large: AtomicU64,
}

/// Counters since the classifier was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassifierStats {
    /// Lookups answered from the cache, by text or by shape.
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
            cache: TextAndShape::new(options.capacity, options.cache_bytes),
            settings: Settings {
                write_functions: WriteFunctions::with_extra(options.write_functions),
                max_parse_bytes: options.max_parse_bytes,
            },
            parse_failures: AtomicU64::new(0),
            too_deep: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
        }
    }

    /// The classification of `sql`, from the cache when this text, or one
    /// differing from it only in literals, was classified recently.
    pub fn classify(&self, sql: &str) -> Arc<Classification> {
        if let Some(hit) = self.cache.texts.get(sql) {
            return hit;
        }
        let shape = cacheable_shape(sql);
        if let Some(s) = &shape {
            if let Some(e) = self.cache.shapes.get(&s.key) {
                // Not kept by its text: a text with inlined values is seldom
                // seen twice, and would only push out texts that are.
                return shape::remap(&e.class, &e.literals, &s.literals);
            }
        }
        let (class, parsed) = self.classify_uncached(sql);
        let class = Arc::new(class);
        if let Some(Shape { key, literals }) = shape {
            if parsed && shape::shareable(&class, sql) {
                let entry = ShapeEntry {
                    class: Arc::clone(&class),
                    literals: literals.into(),
                };
                self.cache.shapes.insert(&key, entry);
            }
        }
        self.cache.texts.insert(sql, Arc::clone(&class));
        class
    }

    /// The classification, and whether the text parsed.
    pub(super) fn classify_uncached(&self, sql: &str) -> (Classification, bool) {
        self.cache.count_miss();
        let (classification, path) = classify_text(sql, &self.settings);
        let counter = match path {
            ParsePath::Parsed => return (classification, true),
            ParsePath::TooDeep => &self.too_deep,
            ParsePath::Unparsed => &self.parse_failures,
            ParsePath::TooLarge => &self.too_large,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        (classification, false)
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
        // Kept by its text, and by its shape.
        assert_eq!((s.hits, s.misses, s.entries), (1, 1, 2));
    }

    #[test]
    fn evicts_to_capacity_and_keeps_used_entries() {
        let c = Classifier::new(40);
        assert_eq!(c.cache.texts.shard_count(), 1);
        let hot = c.classify("SELECT hot");
        for i in 0..200 {
            c.classify(&format!("SELECT c{i}"));
            // Touch the hot entry so CLOCK gives it a second chance.
            assert!(Arc::ptr_eq(&hot, &c.classify("SELECT hot")));
        }
        assert!(c.stats().entries <= 40);
    }

    #[test]
    fn byte_budget_and_oversized_texts() {
        let c = Classifier::with_options(ClassifierOptions {
            capacity: 1000,
            // Half of it for texts, half for shapes.
            cache_bytes: 40_000,
            ..ClassifierOptions::default()
        });
        for i in 0..100 {
            c.classify(&format!("SELECT c{i}, {}", "x".repeat(300)));
        }
        let s = c.stats();
        assert!(s.bytes <= 20_000, "{s:?}");
        assert!(s.entries > 0 && s.entries < 100, "{s:?}");

        let big = format!("SELECT {}", "y".repeat(MAX_CACHED_TEXT_BYTES));
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
    fn texts_differing_only_in_literals_share_one_parse() {
        let c = Classifier::new(100);
        let texts = [
            "SELECT * FROM t WHERE id = 1 AND name = 'a'",
            "SELECT * FROM t WHERE id = 22 AND name = 'bbb'",
            "UPDATE t SET n = n + 1.5 WHERE id = 333",
            "UPDATE t SET n = n + 10.25 WHERE id = 4",
        ];
        for sql in texts {
            let (uncached, _) = Classifier::new(0).classify_uncached(sql);
            assert_eq!(*c.classify(sql), uncached, "{sql}");
        }
        let s = c.stats();
        // Two parses, each kept by text and by shape; the variants are kept
        // by neither.
        assert_eq!((s.misses, s.hits, s.entries), (2, 2, 4), "{s:?}");
    }

    #[test]
    fn classifications_that_read_literals_are_not_shared() {
        let c = Classifier::new(100);
        let kinds = |sql: &str| c.classify(sql).statements.clone();
        for (a, b) in [
            (
                "EXPLAIN (ANALYZE 0) UPDATE t SET a = 1",
                "EXPLAIN (ANALYZE 1) UPDATE t SET a = 1",
            ),
            ("PREPARE TRANSACTION 'a'", "PREPARE TRANSACTION 'b'"),
            ("COMMIT PREPARED 'a'", "COMMIT PREPARED 'b'"),
        ] {
            assert_ne!(kinds(a), kinds(b), "{a} / {b}");
            let (uncached, _) = Classifier::new(0).classify_uncached(b);
            assert_eq!(*c.classify(b), uncached);
        }
        // Repeated, they are still found by their text.
        c.classify("SET statement_timeout = 2");
        let before = c.stats().misses;
        c.classify("SET statement_timeout = 2");
        assert_eq!(c.stats().misses, before);
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Classifier>();
        check::<Arc<Classification>>();
    }
}
