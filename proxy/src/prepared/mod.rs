//! Transactions prepared for two-phase commit. A `PREPARE TRANSACTION
//! 'gid'` leaves its transaction on the backend that ran it until a
//! session (any session: transaction managers often use another
//! connection) sends `COMMIT PREPARED 'gid'` or `ROLLBACK PREPARED 'gid'`.
//! By then the committing session may be on the other backend, so pgshift
//! remembers where each gid was prepared, and whether its mirror prepared
//! it too, and sends the second phase to the same backends. A gid it does
//! not remember (prepared before a restart, or through another instance)
//! is looked up on the backends themselves ([`locate`]).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use pgshift_rules::classify::{Classification, TxnControl};
use pgshift_rules::config::BackendId;
use tokio::sync::Notify;

pub mod locate;

/// Most gids remembered at once. Postgres keeps at most
/// `max_prepared_transactions` (often 0, rarely above `max_connections`);
/// past this a new gid is not remembered and its second phase goes where
/// the session is, as it would without pgshift's help.
pub const MAX_PREPARED: usize = 16_384;

/// Which phase of two-phase commit a text runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwoPhase {
    Prepare(Box<str>),
    /// COMMIT PREPARED or ROLLBACK PREPARED.
    Finish(Box<str>),
}

impl TwoPhase {
    /// The first two-phase statement of a text, if it has one.
    pub fn of(class: &Classification) -> Option<TwoPhase> {
        class.statements.iter().find_map(|s| match &s.txn {
            Some(TxnControl::PrepareTransaction { gid }) => {
                Some(TwoPhase::Prepare(gid.as_str().into()))
            }
            Some(TxnControl::CommitPrepared { gid } | TxnControl::RollbackPrepared { gid }) => {
                Some(TwoPhase::Finish(gid.as_str().into()))
            }
            _ => None,
        })
    }
}

/// Where a gid was prepared.
#[derive(Clone)]
pub struct Prepared {
    pub primary: BackendId,
    /// The mirror that was sent the PREPARE TRANSACTION too, and how that went.
    pub mirror: Option<(BackendId, Arc<MirrorPrepare>)>,
}

const PENDING: u8 = 0;
const APPLIED: u8 = 1;
const NOT_APPLIED: u8 = 2;

/// Whether the mirror prepared a gid: settled by the mirror task once its
/// PREPARE TRANSACTION is answered (or never sent).
#[derive(Default)]
pub struct MirrorPrepare {
    state: AtomicU8,
    settled: Notify,
}

impl MirrorPrepare {
    fn settle(&self, applied: bool) {
        let to = if applied { APPLIED } else { NOT_APPLIED };
        if self
            .state
            .compare_exchange(PENDING, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.settled.notify_waiters();
        }
    }

    /// Whether the mirror holds the prepared transaction, waiting up to
    /// `limit` for its PREPARE to be answered; `None` if it still is not.
    /// (The committing session's mirror may be ahead of the preparing
    /// session's.)
    pub async fn applied(&self, limit: Duration) -> Option<bool> {
        let settled = self.settled.notified();
        tokio::pin!(settled);
        settled.as_mut().enable();
        if self.state.load(Ordering::Acquire) == PENDING {
            let _ = tokio::time::timeout(limit, settled).await;
        }
        match self.state.load(Ordering::Acquire) {
            APPLIED => Some(true),
            NOT_APPLIED => Some(false),
            _ => None,
        }
    }
}

/// The mirror task's hold on a [`MirrorPrepare`]: dropped unsettled (the
/// batch was dropped, missed, or its connection lost), it settles as not
/// applied, so no second phase waits for it in vain.
pub struct PrepareSignal(Arc<MirrorPrepare>);

impl PrepareSignal {
    pub fn applied(self, applied: bool) {
        self.0.settle(applied);
    }
}

impl Drop for PrepareSignal {
    fn drop(&mut self) {
        self.0.settle(false);
    }
}

/// The gids prepared through this pgshift and not yet finished.
pub struct PreparedXacts {
    map: DashMap<Box<str>, Prepared>,
    /// Room for lookups of gids not in the map (see [`locate`]). Each takes
    /// a connection on both backends, so a client repeating unknown gids
    /// must not take many of them away from the sessions.
    lookups: tokio::sync::Semaphore,
}

impl Default for PreparedXacts {
    fn default() -> Self {
        PreparedXacts {
            map: DashMap::default(),
            lookups: tokio::sync::Semaphore::new(locate::MAX_LOOKUPS),
        }
    }
}

impl PreparedXacts {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A mirror's share in a PREPARE TRANSACTION about to be sent: the
    /// signal goes with the mirror's copy, the handle to [`Self::prepared`].
    pub fn mirror_signal() -> (PrepareSignal, Arc<MirrorPrepare>) {
        let m = Arc::new(MirrorPrepare::default());
        (PrepareSignal(Arc::clone(&m)), m)
    }

    /// The primary prepared `gid`. False when too many are remembered.
    pub fn prepared(&self, gid: &str, at: Prepared) -> bool {
        if let Some(mut e) = self.map.get_mut(gid) {
            *e = at;
            return true;
        }
        if self.map.len() >= MAX_PREPARED {
            tracing::warn!(gid, limit = MAX_PREPARED, "too many prepared transactions remembered: COMMIT PREPARED of this one goes where its session is");
            return false;
        }
        self.map.insert(gid.into(), at);
        true
    }

    /// Where `gid` was prepared, if this pgshift prepared it.
    pub fn find(&self, gid: &str) -> Option<Prepared> {
        self.map.get(gid).map(|e| e.value().clone())
    }

    /// The primary finished `gid` (committed or rolled it back).
    pub fn finished(&self, gid: &str) {
        self.map.remove(gid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_finished() {
        let xacts = PreparedXacts::default();
        assert_eq!(xacts.len(), 0);
        let at = Prepared {
            primary: BackendId::New,
            mirror: None,
        };
        assert!(xacts.prepared("g1", at.clone()));
        assert_eq!(xacts.len(), 1);
        assert_eq!(xacts.find("g1").map(|p| p.primary), Some(BackendId::New));
        assert!(xacts.find("g2").is_none());
        // A gid used again after its transaction failed to prepare.
        assert!(xacts.prepared(
            "g1",
            Prepared {
                primary: BackendId::Old,
                mirror: None
            }
        ));
        assert_eq!(xacts.find("g1").map(|p| p.primary), Some(BackendId::Old));
        xacts.finished("g1");
        xacts.finished("g1");
        assert!(xacts.find("g1").is_none());
        assert_eq!(xacts.len(), 0);
    }

    #[test]
    fn bounded() {
        let xacts = PreparedXacts::default();
        let at = Prepared {
            primary: BackendId::Old,
            mirror: None,
        };
        for i in 0..MAX_PREPARED {
            assert!(xacts.prepared(&format!("g{i}"), at.clone()));
        }
        assert!(!xacts.prepared("one too many", at.clone()));
        assert!(xacts.find("one too many").is_none());
        // Known gids are still updated.
        assert!(xacts.prepared("g0", at));
    }

    #[tokio::test]
    async fn a_dropped_signal_settles_as_not_applied() {
        let (signal, handle) = PreparedXacts::mirror_signal();
        let waiter = {
            let handle = Arc::clone(&handle);
            tokio::spawn(async move { handle.applied(Duration::from_secs(10)).await })
        };
        tokio::task::yield_now().await;
        drop(signal);
        assert_eq!(waiter.await.unwrap(), Some(false));

        let (signal, handle) = PreparedXacts::mirror_signal();
        signal.applied(true);
        assert_eq!(handle.applied(Duration::ZERO).await, Some(true));

        let (_signal, handle) = PreparedXacts::mirror_signal();
        assert_eq!(handle.applied(Duration::from_millis(10)).await, None);
    }

    #[test]
    fn two_phase_statements() {
        let c = pgshift_rules::classify::Classifier::new(16);
        let of = |sql: &str| TwoPhase::of(&c.classify(sql));
        assert_eq!(
            of("PREPARE TRANSACTION 'a'"),
            Some(TwoPhase::Prepare("a".into()))
        );
        assert_eq!(
            of("COMMIT PREPARED 'b'"),
            Some(TwoPhase::Finish("b".into()))
        );
        assert_eq!(
            of("ROLLBACK PREPARED 'c'"),
            Some(TwoPhase::Finish("c".into()))
        );
        assert_eq!(of("COMMIT"), None);
        assert_eq!(of("PREPARE p AS SELECT 1"), None);
    }
}
