//! The session's end of a mirror: a bounded, ordered queue of what the
//! mirror backend must replay.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use pgshift_rules::config::BackendId;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::compare::{CompareKind, DigestOptions};
use crate::prepared::{MirrorPrepare, PrepareSignal};
use crate::session::observe::PrimaryOutcome;
use crate::stats::DigestStats;

/// Room in the channel beyond `mirror.queue` for pgshift's own items
/// (session-state catch-up, the ROLLBACK that closes a dropped
/// transaction), which must not be refused because statements filled it.
const CONTROL_SLACK: usize = 64;

/// Bytes of statements one session may have waiting for one mirror; past
/// this the overflow policy applies as when the count is reached.
pub const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;

/// Batches whose primary run was cancelled that the mirror has yet to
/// reach; past this the oldest is forgotten (its copy then runs in full).
const CANCELS_KEPT: usize = 16;

pub struct MirrorItem {
    pub bytes: Bytes,
    /// ReadyForQuery messages the bytes produce.
    pub answers: usize,
    pub job: Job,
    /// The mirror connection (by [`MirrorState::epoch`]) the session had
    /// seen when it queued the item: the bytes may lean on session state
    /// that only that connection has.
    pub epoch: u64,
    /// The batch's number in the session's order (from 1); 0 for
    /// pgshift's own items.
    pub seq: u64,
}

impl MirrorItem {
    pub fn new(bytes: Bytes, answers: usize, job: Job) -> Self {
        MirrorItem {
            bytes,
            answers,
            job,
            epoch: 0,
            seq: 0,
        }
    }
}

pub enum Job {
    /// Catch-up pgshift sends on its own; failures are replay errors.
    Replay,
    Statement(Box<StatementJob>),
}

pub struct StatementJob {
    pub stats: Arc<DigestStats>,
    /// The statement's labels for `pgshift_statements_total`.
    pub tally: crate::telemetry::Tally,
    pub write: bool,
    /// A write in the narrow sense (DML, DDL, COPY): what a transaction
    /// the mirror loses would take with it.
    pub changes_data: bool,
    /// The batch runs a statement (not only Parse/Describe): counted and
    /// timed as one.
    pub executes: bool,
    /// The primary's outcome: awaited before the mirror runs the batch
    /// when the batch is compared, wrapped or ends a transaction; else
    /// only when the mirror's answer needs it (a failure to tell from the
    /// primary's, a write applied alone).
    pub primary: Option<oneshot::Receiver<PrimaryOutcome>>,
    /// Ends a transaction: replay it as ROLLBACK unless the primary committed.
    pub ends_transaction: bool,
    /// A write outside any transaction: run it inside BEGIN and COMMIT
    /// only if the primary's batch succeeded, else ROLLBACK.
    pub wrap: bool,
    /// A write run outside any transaction and not wrapped in one (DDL,
    /// TRUNCATE, CALL, DO): applied on the mirror whatever the primary's
    /// outcome, which is then checked.
    pub applies_alone: bool,
    /// One statement, no transaction control: when the primary's run is
    /// cancelled, cancelling the mirror's copy leaves it where the
    /// primary is. (Cancelling a batch with a COMMIT inside could stop it
    /// on the other side of that COMMIT.)
    pub cancellable: bool,
    /// A Query or FunctionCall follows this many extended-protocol
    /// messages that await a completion, with no Sync between: should one
    /// of them fail here, Postgres skips it up to a Sync, which the mirror
    /// then sends to get the answer's end.
    pub run_after: Option<u32>,
    /// That Query ends the transaction: skipped, the mirror ends it.
    pub run_ends_transaction: bool,
    pub compare: Option<CompareJob>,
    pub primary_backend: BackendId,
    /// Sync mirroring: the client's answer waits for this.
    pub done: Option<oneshot::Sender<crate::session::observe::MirrorResult>>,
    /// The batch is a PREPARE TRANSACTION: settled with whether the
    /// mirror prepared it.
    pub prepare: Option<PrepareSignal>,
    /// The batch is a COMMIT or ROLLBACK PREPARED of a transaction whose
    /// PREPARE went to this mirror, from this session or another: sent
    /// once that PREPARE is answered, and only if it prepared.
    pub after_prepare: Option<Arc<MirrorPrepare>>,
}

pub struct CompareJob {
    pub opts: DigestOptions,
    pub kind: CompareKind,
    pub sql: Arc<str>,
    pub rule: Option<String>,
}

/// Shared between the session and its mirror task.
#[derive(Default)]
pub struct MirrorState {
    /// Statements queued and not yet done.
    pub queued: AtomicUsize,
    /// Their bytes: the queue is bounded in memory as well as in count, so
    /// a burst of large statements cannot hold gigabytes.
    pub queued_bytes: AtomicUsize,
    /// Writes among them: a read routed to this backend waits for them.
    pub pending_writes: AtomicUsize,
    /// Signalled whenever an item is done.
    pub progress: Notify,
    /// Bumped when the task reconnects: the new connection has none of the
    /// session's state, which must then be replayed.
    pub epoch: AtomicU64,
    /// Batches (by `MirrorItem::seq`) the primary's run of which ended in
    /// a cancel (57014): the mirror cancels its copy too.
    cancelled: Mutex<VecDeque<u64>>,
    /// Bumped with each entry, so the task looks at the list only when it
    /// moved.
    pub cancels: AtomicU64,
    /// Signalled with each entry.
    pub cancel: Notify,
}

impl MirrorState {
    /// The primary's run of batch `seq` was cancelled.
    pub fn primary_cancelled(&self, seq: u64) {
        let mut list = self.cancelled.lock().unwrap_or_else(|p| p.into_inner());
        if list.len() == CANCELS_KEPT {
            list.pop_front();
        }
        list.push_back(seq);
        drop(list);
        self.cancels.fetch_add(1, Ordering::AcqRel);
        self.cancel.notify_one();
    }

    /// Whether the primary cancelled batch `seq`, and whether none after
    /// it is known to be; forgets `seq` and every earlier one (the mirror
    /// is past them).
    pub fn take_cancel(&self, seq: u64) -> (bool, bool) {
        let mut list = self.cancelled.lock().unwrap_or_else(|p| p.into_inner());
        let found = list.contains(&seq);
        list.retain(|&s| s > seq);
        (found, list.is_empty())
    }

    pub async fn wait_writes_done(&self) {
        loop {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if self.pending_writes.load(Ordering::Acquire) == 0 {
                return;
            }
            progress.await;
        }
    }

    pub async fn wait_room(&self, cap: usize, len: usize) {
        loop {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            let bytes = self.queued_bytes.load(Ordering::Acquire);
            // An empty queue takes a statement of any size.
            if self.queued.load(Ordering::Acquire) < cap
                && (bytes == 0 || bytes + len <= MAX_QUEUED_BYTES)
            {
                return;
            }
            progress.await;
        }
    }
}

pub struct MirrorLink {
    pub backend: BackendId,
    tx: mpsc::Sender<MirrorItem>,
    pub state: Arc<MirrorState>,
    pub cap: usize,
    seen_epoch: u64,
    /// The last batch number handed out.
    seq: u64,
}

impl MirrorLink {
    pub fn channel(
        backend: BackendId,
        cap: usize,
    ) -> (Self, mpsc::Receiver<MirrorItem>, Arc<MirrorState>) {
        let cap = cap.max(1);
        let (tx, rx) = mpsc::channel(cap + CONTROL_SLACK);
        let state = Arc::new(MirrorState::default());
        let link = MirrorLink {
            backend,
            tx,
            state: Arc::clone(&state),
            cap,
            seen_epoch: 0,
            seq: 0,
        };
        (link, rx, state)
    }

    /// Numbers the next batch planned for the mirror.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// True once after the task reconnected.
    pub fn reconnected(&mut self) -> bool {
        let e = self.state.epoch.load(Ordering::Acquire);
        let changed = e != self.seen_epoch;
        self.seen_epoch = e;
        changed
    }

    /// No room for one more statement of `len` bytes.
    pub fn is_full(&self, len: usize) -> bool {
        self.state.queued.load(Ordering::Acquire) >= self.cap
            || self.state.queued_bytes.load(Ordering::Acquire) + len > MAX_QUEUED_BYTES
    }

    /// Queues a statement; the caller checked for room (or decided to
    /// exceed nothing: the channel has slack only for control items).
    pub fn push_statement(&self, mut item: MirrorItem, write: bool) -> bool {
        item.epoch = self.seen_epoch;
        let len = item.bytes.len();
        self.state.queued.fetch_add(1, Ordering::AcqRel);
        self.state.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if write {
            self.state.pending_writes.fetch_add(1, Ordering::AcqRel);
        }
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(_) => {
                self.state.queued.fetch_sub(1, Ordering::AcqRel);
                self.state.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                if write {
                    self.state.pending_writes.fetch_sub(1, Ordering::AcqRel);
                }
                false
            }
        }
    }

    /// Queues pgshift's own item; false when even the slack is used up.
    pub fn push_control(&self, mut item: MirrorItem) -> bool {
        item.epoch = self.seen_epoch;
        self.tx.try_send(item).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancels_are_found_once_and_passed_ones_forgotten() {
        let s = MirrorState::default();
        assert_eq!(s.take_cancel(1), (false, true));
        s.primary_cancelled(3);
        s.primary_cancelled(5);
        assert_eq!(s.cancels.load(Ordering::Acquire), 2);
        // The mirror at batch 2: not cancelled, two still ahead.
        assert_eq!(s.take_cancel(2), (false, false));
        assert_eq!(s.take_cancel(3), (true, false));
        assert_eq!(s.take_cancel(3), (false, false));
        // Past 5 without stopping there (its copy was sent with others).
        assert_eq!(s.take_cancel(6), (false, true));
    }

    #[test]
    fn only_the_latest_cancels_are_kept() {
        let s = MirrorState::default();
        for seq in 1..=(CANCELS_KEPT as u64 + 4) {
            s.primary_cancelled(seq);
        }
        assert_eq!(s.take_cancel(4), (false, false));
        assert_eq!(s.take_cancel(5), (true, false));
    }
}
