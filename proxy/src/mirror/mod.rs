//! Mirroring: replaying a session's statements on the other backend (dual
//! writes, shadow reads) and comparing the answers.
//!
//! Each session that mirrors gets, per mirror backend, its own connection
//! and task (`task`), fed in order through a bounded queue (`link`). The
//! client never waits for the mirror in async mode; what the mirror could
//! not apply is counted here, per backend and per digest, and the session
//! is marked diverged (SPEC guarantee 6).

pub mod link;
pub mod task;
pub mod threads;

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use pgshift_rules::config::BackendId;
use serde::Serialize;

use crate::compare::MismatchRecord;

/// Mismatch records kept in memory for `GET /mismatches`.
const RECENT_MISMATCHES: usize = 1000;

/// Cancels the mirrors may send per second and backend. Each costs that
/// backend a connection (for Postgres, a process); when statements time
/// out by the thousand, the copies past this run out instead.
const MAX_CANCELS_PER_SECOND: u32 = 20;

#[derive(Default)]
struct CancelBudget {
    window: Option<Instant>,
    used: u32,
}

/// Counters of one mirror backend.
#[derive(Default)]
pub struct MirrorCounters {
    /// Statements queued for this backend.
    pub queued: AtomicU64,
    /// Statements that ran there.
    pub applied: AtomicU64,
    /// Statements never sent: queue overflow, or the backend unreachable.
    pub dropped: AtomicU64,
    /// Statements that failed there but not on the primary.
    pub errors: AtomicU64,
    /// Session state or prepared statements that failed to replay there.
    pub replay_errors: AtomicU64,
    pub compared: AtomicU64,
    pub mismatched: AtomicU64,
    /// Batches a compare route did not compare: sampled out
    /// (`compare.sample`), or the mirror or the primary's answer was
    /// missing.
    pub compare_skipped: AtomicU64,
    /// Statements cancelled here because the primary's run of them was
    /// cancelled (a cancel request, a statement timeout).
    pub cancelled: AtomicU64,
    /// Reads that waited for the session's queued writes (read-your-writes).
    pub ryw_waits: AtomicU64,
    /// ... and were served by the write primary because the wait ran out.
    pub ryw_fallbacks: AtomicU64,
    /// Statements waiting in sessions' queues now.
    pub depth: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CountersSnapshot {
    pub queued: u64,
    pub applied: u64,
    pub dropped: u64,
    pub errors: u64,
    pub replay_errors: u64,
    pub compared: u64,
    pub mismatched: u64,
    pub compare_skipped: u64,
    pub cancelled: u64,
    pub ryw_waits: u64,
    pub ryw_fallbacks: u64,
    pub queue_depth: u64,
}

impl MirrorCounters {
    pub fn snapshot(&self) -> CountersSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CountersSnapshot {
            queued: g(&self.queued),
            applied: g(&self.applied),
            dropped: g(&self.dropped),
            errors: g(&self.errors),
            replay_errors: g(&self.replay_errors),
            compared: g(&self.compared),
            mismatched: g(&self.mismatched),
            compare_skipped: g(&self.compare_skipped),
            cancelled: g(&self.cancelled),
            ryw_waits: g(&self.ryw_waits),
            ryw_fallbacks: g(&self.ryw_fallbacks),
            queue_depth: g(&self.depth),
        }
    }
}

/// A session whose mirror missed something.
#[derive(Debug, Clone, Serialize)]
pub struct Diverged {
    pub user: String,
    pub application_name: String,
    #[serde(serialize_with = "backend_name")]
    pub backend: BackendId,
    pub reason: String,
    pub since: String,
}

/// What every session's mirroring shares.
#[derive(Default)]
pub struct MirrorHub {
    counters: [MirrorCounters; 2],
    /// Sessions (by their key) that diverged, while they are connected.
    diverged: DashMap<u64, Diverged>,
    /// Sessions that ever diverged.
    diverged_total: AtomicU64,
    recent: Mutex<VecDeque<MismatchRecord>>,
    log: Mutex<Option<(PathBuf, std::fs::File)>>,
    cancel_budget: [Mutex<CancelBudget>; 2],
}

impl MirrorHub {
    pub fn counters(&self, b: BackendId) -> &MirrorCounters {
        &self.counters[b.index()]
    }

    pub fn mark_diverged(&self, session: u64, info: impl FnOnce() -> Diverged) {
        if let dashmap::Entry::Vacant(v) = self.diverged.entry(session) {
            let d = info();
            tracing::warn!(backend = %d.backend, reason = %d.reason, user = %d.user, application_name = %d.application_name, "session diverged: its mirror missed statements");
            v.insert(d);
            self.diverged_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether a mirror may send `b` one more cancel now.
    pub fn allow_cancel(&self, b: BackendId) -> bool {
        self.allow_cancel_at(b, Instant::now())
    }

    fn allow_cancel_at(&self, b: BackendId, now: Instant) -> bool {
        let mut budget = self.cancel_budget[b.index()]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if budget
            .window
            .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1))
        {
            *budget = CancelBudget {
                window: Some(now),
                used: 0,
            };
        }
        if budget.used >= MAX_CANCELS_PER_SECOND {
            return false;
        }
        budget.used += 1;
        true
    }

    pub fn session_ended(&self, session: u64) {
        self.diverged.remove(&session);
    }

    pub fn diverged(&self) -> Vec<Diverged> {
        self.diverged.iter().map(|e| e.value().clone()).collect()
    }

    pub fn diverged_total(&self) -> u64 {
        self.diverged_total.load(Ordering::Relaxed)
    }

    /// Keeps the record for `/mismatches` and appends it to `compare.log`.
    pub fn record_mismatch(&self, record: MismatchRecord, log: Option<&Path>) {
        if let Some(path) = log {
            let line = record.to_json_line();
            let mut file = self.log.lock().unwrap_or_else(|p| p.into_inner());
            if file.as_ref().map(|(p, _)| p.as_path()) != Some(path) {
                *file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map(|f| (path.to_path_buf(), f))
                    .map_err(|e| tracing::error!(path = %path.display(), error = %e, "cannot open compare.log"))
                    .ok();
            }
            if let Some((_, f)) = file.as_mut() {
                if let Err(e) = f.write_all(line.as_bytes()) {
                    tracing::error!(error = %e, "cannot write compare.log");
                }
            }
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_MISMATCHES {
            recent.pop_front();
        }
        recent.push_back(record);
    }

    /// The newest mismatch records, newest first.
    pub fn recent_mismatches(&self, limit: usize) -> Vec<MismatchRecord> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().rev().take(limit).cloned().collect()
    }
}

pub fn now_rfc3339() -> String {
    crate::compare::record::rfc3339_utc(SystemTime::now())
}

fn backend_name<S: serde::Serializer>(b: &BackendId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(b.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancels_are_limited_per_second_and_backend() {
        let hub = MirrorHub::default();
        let t0 = Instant::now();
        for _ in 0..MAX_CANCELS_PER_SECOND {
            assert!(hub.allow_cancel_at(BackendId::New, t0));
        }
        assert!(!hub.allow_cancel_at(BackendId::New, t0 + Duration::from_millis(999)));
        // The other backend has its own budget.
        assert!(hub.allow_cancel_at(BackendId::Old, t0));
        assert!(hub.allow_cancel_at(BackendId::New, t0 + Duration::from_secs(1)));
    }
}
