//! Per-digest statistics: what `GET /digests` shows.
//!
//! A [`DigestStore`] maps a statement fingerprint to its [`DigestStats`]:
//! calls, the last route, latency histograms per backend and role, mirror
//! errors and drops, comparisons and mismatches. Per statement the proxy
//! pays one map lookup ([`DigestStore::entry`]) and a few relaxed atomic
//! adds; the returned `Arc` can be kept until the mirror finishes.
//!
//! Cardinality is bounded: past `capacity` fingerprints the least recently
//! seen are evicted. "Recently" is measured in insertions (a clock that only
//! ticks when a new fingerprint arrives), so a lookup of a known fingerprint
//! never writes a shared counter, and eviction takes a batch (1/16 of the
//! capacity) at a time so that a stream of one-off statements costs an
//! amortised O(16) per insertion rather than a scan each.

pub mod histogram;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use pgshift_rules::{BackendId, Kind};
use serde::Serialize;

use crate::compare::Role;
pub use histogram::LatencyHistogram;

/// A sensible default for [`DigestStore::new`].
pub const DEFAULT_CAPACITY: usize = 5000;

pub struct DigestStore {
    /// Fingerprints follow from client text, so the hash is seeded per
    /// process; foldhash costs a fraction of SipHash on a u64, looked up
    /// on every statement.
    map: DashMap<u64, Arc<DigestStats>, foldhash::fast::RandomState>,
    capacity: usize,
    /// Ticks once per inserted fingerprint.
    clock: AtomicU64,
    eviction: Mutex<()>,
    evicted: AtomicU64,
}

impl std::fmt::Debug for DigestStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestStore")
            .field("len", &self.map.len())
            .field("capacity", &self.capacity)
            .field("evicted", &self.evicted())
            .finish()
    }
}

impl DigestStore {
    pub fn new(capacity: usize) -> Self {
        DigestStore {
            map: DashMap::default(),
            capacity: capacity.max(1),
            clock: AtomicU64::new(0),
            eviction: Mutex::new(()),
            evicted: AtomicU64::new(0),
        }
    }

    /// The stats of `fingerprint`, created on first sight. `normalized` and
    /// `kind` are only read then (cloning the `Arc`).
    pub fn entry(&self, fingerprint: u64, normalized: &Arc<str>, kind: Kind) -> Arc<DigestStats> {
        if let Some(found) = self.map.get(&fingerprint) {
            let stats = Arc::clone(found.value());
            drop(found);
            stats.touch(self.clock.load(Relaxed));
            return stats;
        }
        let tick = self.clock.fetch_add(1, Relaxed) + 1;
        let (stats, inserted) = match self.map.entry(fingerprint) {
            dashmap::Entry::Occupied(o) => (Arc::clone(o.get()), false),
            dashmap::Entry::Vacant(v) => {
                let stats = Arc::new(DigestStats::new(
                    fingerprint,
                    Arc::clone(normalized),
                    kind,
                    tick,
                ));
                v.insert(Arc::clone(&stats));
                (stats, true)
            }
        };
        if inserted && self.map.len() > self.capacity {
            self.evict();
        }
        stats
    }

    /// The stats of `fingerprint` if present; does not count as a sighting.
    pub fn get(&self, fingerprint: u64) -> Option<Arc<DigestStats>> {
        self.map.get(&fingerprint).map(|e| Arc::clone(e.value()))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Fingerprints evicted so far.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Relaxed)
    }

    /// The `limit` most called digests, most calls first.
    pub fn snapshot(&self, limit: usize) -> Vec<DigestSnapshot> {
        let mut all: Vec<(u64, Arc<DigestStats>)> = self
            .map
            .iter()
            .map(|e| (e.value().calls(), Arc::clone(e.value())))
            .collect();
        all.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.fingerprint.cmp(&b.1.fingerprint)));
        all.into_iter()
            .take(limit)
            .map(|(_, s)| s.snapshot())
            .collect()
    }

    fn evict(&self) {
        let _one_evictor = self.eviction.lock().unwrap_or_else(|p| p.into_inner());
        let len = self.map.len();
        if len <= self.capacity {
            return;
        }
        let excess = len - self.capacity + self.capacity / 16;
        let mut ages: Vec<(u64, u64)> = self
            .map
            .iter()
            .map(|e| (e.value().last_seen.load(Relaxed), *e.key()))
            .collect();
        let excess = excess.min(ages.len());
        if excess == 0 {
            return;
        }
        ages.select_nth_unstable(excess - 1);
        for (_, key) in &ages[..excess] {
            self.map.remove(key);
        }
        self.evicted.fetch_add(excess as u64, Relaxed);
    }
}

/// The route a digest last took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LastRoute {
    pub primary: Option<BackendId>,
    pub mirror: Option<BackendId>,
    pub rule: Option<Arc<str>>,
}

/// One fingerprint's counters. All updates are relaxed atomics, except a
/// change of route, which takes a lock.
pub struct DigestStats {
    fingerprint: u64,
    text: Arc<str>,
    kind: Kind,
    last_seen: AtomicU64,
    calls: AtomicU64,
    /// A hash of `route`, so an unchanged route is recognised without the lock.
    route_key: AtomicU64,
    route: Mutex<LastRoute>,
    /// `[backend][role]`, allocated on first use: most digests only ever
    /// run on one or two of the four.
    latency: [[OnceLock<Box<LatencyHistogram>>; 2]; 2],
    mirror_errors: AtomicU64,
    mirror_dropped: AtomicU64,
    compared: AtomicU64,
    mismatched: AtomicU64,
    /// Times a backend's rewriter refused the statement (sent elsewhere, or
    /// answered with an error).
    rewrite_refused: AtomicU64,
    /// The result positions `compare.ignore_columns` named when this
    /// statement was last described, for executions that are not.
    learned_ignore: Mutex<Option<Arc<[usize]>>>,
}

impl std::fmt::Debug for DigestStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestStats")
            .field("fingerprint", &format_args!("{:016x}", self.fingerprint))
            .field("text", &self.text)
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

impl DigestStats {
    fn new(fingerprint: u64, text: Arc<str>, kind: Kind, tick: u64) -> Self {
        DigestStats {
            fingerprint,
            text,
            kind,
            last_seen: AtomicU64::new(tick),
            calls: AtomicU64::new(0),
            route_key: AtomicU64::new(0),
            route: Mutex::new(LastRoute::default()),
            latency: Default::default(),
            mirror_errors: AtomicU64::new(0),
            mirror_dropped: AtomicU64::new(0),
            compared: AtomicU64::new(0),
            mismatched: AtomicU64::new(0),
            rewrite_refused: AtomicU64::new(0),
            learned_ignore: Mutex::new(None),
        }
    }

    fn touch(&self, now: u64) {
        if self.last_seen.load(Relaxed) != now {
            self.last_seen.store(now, Relaxed);
        }
    }

    /// One more call, routed as given.
    pub fn record_call(&self, primary: BackendId, mirror: Option<BackendId>, rule: Option<&str>) {
        self.calls.fetch_add(1, Relaxed);
        let key = route_key(primary, mirror, rule);
        if self.route_key.load(Relaxed) == key {
            return;
        }
        let mut route = self.route.lock().unwrap_or_else(|p| p.into_inner());
        *route = LastRoute {
            primary: Some(primary),
            mirror,
            rule: rule.map(Arc::from),
        };
        self.route_key.store(key, Relaxed);
    }

    pub fn record_latency(&self, backend: BackendId, role: Role, elapsed: Duration) {
        self.latency[backend.index()][role.index()]
            .get_or_init(Box::default)
            .record(elapsed);
    }

    pub fn record_mirror_error(&self) {
        self.mirror_errors.fetch_add(1, Relaxed);
    }

    pub fn learn_ignore(&self, positions: &[usize]) {
        let mut learned = self
            .learned_ignore
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if learned.as_deref() != Some(positions) {
            *learned = Some(positions.into());
        }
    }

    pub fn learned_ignore(&self) -> Option<Arc<[usize]>> {
        self.learned_ignore
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn record_rewrite_refused(&self) {
        self.rewrite_refused.fetch_add(1, Relaxed);
    }

    pub fn record_mirror_dropped(&self) {
        self.mirror_dropped.fetch_add(1, Relaxed);
    }

    pub fn record_comparison(&self, matched: bool) {
        self.compared.fetch_add(1, Relaxed);
        if !matched {
            self.mismatched.fetch_add(1, Relaxed);
        }
    }

    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    pub fn text(&self) -> &Arc<str> {
        &self.text
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Relaxed)
    }

    pub fn last_route(&self) -> LastRoute {
        self.route.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn latency(&self, backend: BackendId, role: Role) -> Option<&LatencyHistogram> {
        self.latency[backend.index()][role.index()]
            .get()
            .map(|b| &**b)
    }

    pub fn snapshot(&self) -> DigestSnapshot {
        let route = self.last_route();
        let mut latency = Vec::new();
        for backend in BackendId::ALL {
            for role in [Role::Primary, Role::Mirror] {
                if let Some(h) = self.latency(*backend, role) {
                    latency.push(LatencySnapshot {
                        backend: backend.as_str(),
                        role: role.as_str(),
                        count: h.count(),
                        p50_us: h.p50(),
                        p99_us: h.p99(),
                        mean_us: h.mean_micros(),
                    });
                }
            }
        }
        DigestSnapshot {
            digest: format!("{:016x}", self.fingerprint),
            text: self.text.to_string(),
            kind: self.kind.as_str(),
            route: RouteSnapshot {
                primary: route.primary.map(BackendId::as_str),
                mirror: route.mirror.map(BackendId::as_str),
                rule: route.rule.map(|r| r.to_string()),
            },
            calls: self.calls(),
            latency,
            mirror_errors: self.mirror_errors.load(Relaxed),
            mirror_dropped: self.mirror_dropped.load(Relaxed),
            compared: self.compared.load(Relaxed),
            mismatched: self.mismatched.load(Relaxed),
            rewrite_refused: self.rewrite_refused.load(Relaxed),
        }
    }
}

/// FNV-1a over the route, never 0 (0 means "no route yet").
fn route_key(primary: BackendId, mirror: Option<BackendId>, rule: Option<&str>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut write = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    write(primary.index() as u8);
    write(mirror.map_or(2, |m| m.index() as u8));
    match rule {
        None => write(0),
        Some(r) => {
            write(1);
            r.bytes().for_each(&mut write);
        }
    }
    h | 1
}

/// One row of `GET /digests`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DigestSnapshot {
    /// The fingerprint, 16 hex digits.
    pub digest: String,
    /// The normalised statement text.
    pub text: String,
    pub kind: &'static str,
    pub route: RouteSnapshot,
    pub calls: u64,
    /// One entry per backend and role the digest ran on.
    pub latency: Vec<LatencySnapshot>,
    pub mirror_errors: u64,
    pub mirror_dropped: u64,
    pub compared: u64,
    pub mismatched: u64,
    pub rewrite_refused: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteSnapshot {
    pub primary: Option<&'static str>,
    pub mirror: Option<&'static str>,
    pub rule: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencySnapshot {
    pub backend: &'static str,
    pub role: &'static str,
    pub count: u64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub mean_us: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn evicts_the_least_recently_seen_at_capacity() {
        let store = DigestStore::new(4);
        for fp in 1..=4 {
            store.entry(fp, &text("SELECT $1"), Kind::Read);
        }
        store.entry(1, &text("ignored"), Kind::Read);
        store.entry(5, &text("SELECT 5"), Kind::Read);
        assert_eq!(store.len(), 4);
        assert_eq!(store.evicted(), 1);
        assert!(store.get(2).is_none(), "2 was the least recently seen");
        for fp in [1, 3, 4, 5] {
            assert!(store.get(fp).is_some(), "{fp} kept");
        }
        assert_eq!(&**store.get(1).unwrap().text(), "SELECT $1");

        store.entry(6, &text("SELECT 6"), Kind::Read);
        assert!(store.get(3).is_none());
        assert_eq!(store.len(), 4);
    }

    #[test]
    fn eviction_is_batched_and_bounded() {
        let store = DigestStore::new(160);
        for fp in 0..10_000u64 {
            store.entry(fp, &text("q"), Kind::Write);
            assert!(store.len() <= 160);
        }
        // The newest always survive.
        assert!(store.get(9_999).is_some());
        assert_eq!(store.evicted() + store.len() as u64, 10_000);
    }

    #[test]
    fn counters_routes_and_snapshot() {
        let store = DigestStore::new(10);
        let q = text("SELECT * FROM users WHERE id = $1");
        for _ in 0..3 {
            let s = store.entry(7, &q, Kind::Read);
            s.record_call(
                BackendId::New,
                Some(BackendId::Old),
                Some("users-read-shift"),
            );
            s.record_latency(BackendId::New, Role::Primary, Duration::from_micros(900));
            s.record_latency(BackendId::Old, Role::Mirror, Duration::from_micros(1500));
        }
        let s = store.entry(7, &q, Kind::Read);
        s.record_comparison(true);
        s.record_comparison(false);
        s.record_mirror_error();
        s.record_mirror_dropped();
        store
            .entry(8, &text("UPDATE t SET x = $1"), Kind::Write)
            .record_call(BackendId::Old, None, None);

        let snap = store.snapshot(10);
        assert_eq!(snap.len(), 2);
        let top = &snap[0];
        assert_eq!(top.digest, "0000000000000007");
        assert_eq!(top.calls, 3);
        assert_eq!(top.kind, "read");
        assert_eq!(
            top.route,
            RouteSnapshot {
                primary: Some("new"),
                mirror: Some("old"),
                rule: Some("users-read-shift".into()),
            }
        );
        assert_eq!(
            (
                top.compared,
                top.mismatched,
                top.mirror_errors,
                top.mirror_dropped
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(top.latency.len(), 2);
        assert_eq!(
            (top.latency[0].backend, top.latency[0].role),
            ("old", "mirror")
        );
        let p50 = top.latency[0].p50_us.unwrap();
        assert!((1400..=1600).contains(&p50), "{p50}");
        assert_eq!(snap[1].route.mirror, None);
        assert_eq!(store.snapshot(1).len(), 1);

        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json[0]["text"], "SELECT * FROM users WHERE id = $1");
        assert_eq!(json[0]["latency"][1]["backend"], "new");

        // A new route replaces the last one.
        s.record_call(BackendId::Old, None, None);
        assert_eq!(
            s.last_route(),
            LastRoute {
                primary: Some(BackendId::Old),
                mirror: None,
                rule: None,
            }
        );
    }

    #[test]
    fn concurrent_updates_all_count() {
        let store = Arc::new(DigestStore::new(50));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let q = text("SELECT 1");
                    for i in 0..10_000u64 {
                        let s = store.entry(i % 10, &q, Kind::Read);
                        s.record_call(BackendId::Old, None, None);
                        s.record_latency(
                            BackendId::Old,
                            Role::Primary,
                            Duration::from_micros(t * 10 + 1),
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let snap = store.snapshot(100);
        assert_eq!(snap.len(), 10);
        assert_eq!(snap.iter().map(|s| s.calls).sum::<u64>(), 80_000);
        assert_eq!(snap.iter().map(|s| s.latency[0].count).sum::<u64>(), 80_000);
    }
}
