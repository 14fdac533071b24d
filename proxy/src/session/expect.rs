//! The ordered list of answers the client is owed.
//!
//! The request side routes each batch (a simple Query, or extended-protocol
//! messages up to Sync) to one backend and records here, in the order the
//! client sent them, what the response side must do: relay that backend's
//! answer up to its ReadyForQuery, swallow the answer to something pgshift
//! sent on its own (a replayed SET or Parse), or write an answer pgshift
//! made up (a held BEGIN). Responses therefore reach the client in request
//! order even when consecutive batches went to different backends.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use pgshift_protocol::backend::TransactionStatus;
use pgshift_protocol::extended::Completions;
use pgshift_rules::config::BackendId;
use tokio::sync::Notify;

use super::observe::Observer;
use crate::stream::ReadHalf;

/// Most batches a client may have outstanding before pgshift stops reading
/// its requests: pipelining is welcome, unbounded memory is not.
pub const MAX_OUTSTANDING: usize = 4096;

pub enum Expect {
    /// A new backend connection: from here on, answers come from it too.
    Attach {
        backend: BackendId,
        reader: ReadHalf,
        leftover: BytesMut,
    },
    /// Forward the backend's messages to the client up to and including
    /// its next ReadyForQuery, showing them to the observer (a mirrored
    /// batch's mirror wants to know how it went).
    Relay(BackendId, Option<Box<Observer>>),
    /// Read and drop the backend's messages up to its next ReadyForQuery;
    /// the request was pgshift's own.
    Swallow {
        backend: BackendId,
        what: &'static str,
    },
    /// Write these bytes to the client (they end with a ReadyForQuery
    /// carrying `status`).
    Synth {
        bytes: Bytes,
        status: TransactionStatus,
    },
}

/// Shared by the two halves of a session.
pub struct Expectations {
    queue: Mutex<Queue>,
    /// Wakes the request side when something is done.
    popped: Notify,
    /// The transaction status of the last ReadyForQuery the client got.
    visible: AtomicU8,
    /// How the answer being relayed stands (see [`Progress`]), for the
    /// request side deciding what a Query inside an unsynced batch does.
    progress: AtomicU64,
    /// The request side waits on `progress`: publish with a wake-up.
    watching: AtomicBool,
}

#[derive(Default)]
struct Queue {
    entries: VecDeque<Expect>,
    /// Entries pushed so far: the next one's number.
    pushed: u64,
}

impl Default for Expectations {
    fn default() -> Self {
        Expectations {
            queue: Mutex::new(Queue::default()),
            popped: Notify::new(),
            visible: AtomicU8::new(TransactionStatus::Idle.as_byte()),
            progress: AtomicU64::new(0),
            watching: AtomicBool::new(false),
        }
    }
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `e` and returns its number: entries are numbered from 0 in
    /// the order pushed, which is the order they are worked through.
    pub fn push(&self, e: Expect) -> u64 {
        let number = {
            let mut q = self.lock();
            q.entries.push_back(e);
            q.pushed += 1;
            q.pushed - 1
        };
        number
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    /// What the head entry asks for, without taking it (an Attach or Synth
    /// is taken, since acting on it needs ownership).
    pub fn head(&self) -> Option<Head> {
        let mut q = self.lock();
        match q.entries.front_mut()? {
            Expect::Relay(b, observer) => Some(Head::Relay(*b, observer.take())),
            Expect::Swallow { backend, what } => Some(Head::Swallow(*backend, what)),
            Expect::Attach { .. } | Expect::Synth { .. } => q.entries.pop_front().map(Head::Owned),
        }
    }

    /// The head Relay/Swallow is complete.
    pub fn pop(&self) {
        self.lock().entries.pop_front();
        self.popped.notify_waiters();
    }

    /// The response side's account of entry `number`'s answer so far.
    /// Cheap when nobody waits: one store and one load.
    pub fn publish(&self, number: u64, p: Progress) {
        self.progress.store(p.pack(number), Ordering::SeqCst);
        // Paired with `wait_progress`: storing `watching` there and then
        // loading `progress`, against storing `progress` here and then
        // loading `watching`, one side always sees the other.
        if self.watching.load(Ordering::SeqCst) {
            self.popped.notify_waiters();
        }
    }

    /// Waits until entry `number`'s answer satisfies `done`, or is
    /// complete (`None`: a later entry's answer is being relayed). The
    /// backend must owe that answer without further requests (the caller
    /// flushed what it sent, with a Flush where Postgres would hold it).
    pub async fn wait_progress(
        &self,
        number: u64,
        done: impl Fn(&Progress) -> bool,
    ) -> Option<Progress> {
        self.watching.store(true, Ordering::SeqCst);
        let seen = loop {
            let popped = self.popped.notified();
            tokio::pin!(popped);
            popped.as_mut().enable();
            let (at, p) = Progress::unpack(self.progress.load(Ordering::SeqCst));
            // Entry numbers compared in their low 32 bits, as published:
            // the two sides are never 2^31 entries apart.
            let ahead = at.wrapping_sub(number as u32) as i32;
            if ahead > 0 {
                break None;
            }
            if ahead == 0 && (p.ended || done(&p)) {
                break Some(p);
            }
            popped.await;
        };
        self.watching.store(false, Ordering::SeqCst);
        seen
    }

    /// Ready once something is owed. It registers no waker, and a push
    /// wakes nobody: the request side, the only one that pushes, runs in
    /// the same task as the response side and is polled before it on every
    /// wake-up (see `relay::run`), so a push is always seen in the pass
    /// that made it. A wake-up per push would poll the whole session once
    /// more per statement for nothing.
    pub fn owed(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |_| {
            if self.is_empty() {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
    }

    /// Resolves once nothing is outstanding.
    pub async fn wait_empty(&self) {
        self.wait_until(Self::is_empty).await
    }

    /// Resolves once fewer than `MAX_OUTSTANDING` entries are queued.
    pub async fn wait_room(&self) {
        self.wait_until(|e| e.len() < MAX_OUTSTANDING).await
    }

    /// Resolves once `done` holds after a pop (or a progress notice). Looks
    /// first: registering with `popped` takes its lock, and the request
    /// side asks for room before every batch.
    async fn wait_until(&self, done: impl Fn(&Self) -> bool) {
        while !done(self) {
            let popped = self.popped.notified();
            tokio::pin!(popped);
            popped.as_mut().enable();
            if done(self) {
                return;
            }
            popped.await;
        }
    }

    /// Wakes request-side waiters after the client-visible state changed
    /// without a pop (a Synth written).
    pub fn notify_progress(&self) {
        self.popped.notify_waiters();
    }

    pub fn visible_status(&self) -> TransactionStatus {
        TransactionStatus::from_byte(self.visible.load(Ordering::Acquire))
            .unwrap_or(TransactionStatus::Idle)
    }

    pub fn set_visible_status(&self, s: TransactionStatus) {
        self.visible.store(s.as_byte(), Ordering::Release);
    }

    /// Idle between transactions with nothing outstanding: the moment a
    /// graceful shutdown may close the session without losing anything.
    pub fn is_quiet(&self) -> bool {
        self.is_empty() && self.visible_status() == TransactionStatus::Idle
    }

    pub async fn wait_quiet(&self) {
        self.wait_until(Self::is_quiet).await
    }
}

/// How a relayed answer stands, as far as the request side needs to know
/// it: which of its extended-protocol requests are answered, and whether
/// the backend is in COPY FROM STDIN.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub completions: Completions,
    pub copy: CopyPhase,
    /// CopyInResponses so far (saturating at [`Progress::MAX_COPIES`]):
    /// which COPY `copy` is about.
    pub copies: u8,
    /// Its ReadyForQuery came.
    pub ended: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CopyPhase {
    #[default]
    NotYet,
    /// CopyInResponse came: the backend takes COPY data, and ignores Sync
    /// and Flush, until CopyDone or CopyFail.
    In,
    /// The COPY is over: its CommandComplete or ErrorResponse came.
    Over,
}

impl Progress {
    pub const MAX_COMPLETIONS: u32 = 0x00ff_ffff;
    pub const MAX_COPIES: u8 = 15;

    /// Feeds one backend message of the answer.
    pub fn observe(&mut self, backend_tag: u8) {
        use pgshift_protocol::backend::tag;
        self.completions.observe(backend_tag, u32::MAX);
        match (backend_tag, self.copy) {
            (tag::COPY_IN_RESPONSE, _) => {
                self.copy = CopyPhase::In;
                self.copies = (self.copies + 1).min(Self::MAX_COPIES);
            }
            (tag::COMMAND_COMPLETE | tag::ERROR_RESPONSE, CopyPhase::In) => {
                self.copy = CopyPhase::Over
            }
            (tag::READY_FOR_QUERY, _) => self.ended = true,
            _ => {}
        }
    }

    /// The entry's number in the high 32 bits, then `ended`, `failed`, the
    /// copy phase (2 bits), `copies` (4 bits) and the completions (24
    /// bits, saturating).
    fn pack(self, number: u64) -> u64 {
        let copy = match self.copy {
            CopyPhase::NotYet => 0,
            CopyPhase::In => 1,
            CopyPhase::Over => 2,
        };
        ((number & 0xffff_ffff) << 32)
            | (u64::from(self.ended) << 31)
            | (u64::from(self.completions.failed) << 30)
            | (copy << 28)
            | (u64::from(self.copies.min(Self::MAX_COPIES)) << 24)
            | u64::from(self.completions.completed.min(Self::MAX_COMPLETIONS))
    }

    fn unpack(p: u64) -> (u32, Progress) {
        let copy = match (p >> 28) & 3 {
            1 => CopyPhase::In,
            2 => CopyPhase::Over,
            _ => CopyPhase::NotYet,
        };
        let progress = Progress {
            completions: Completions {
                completed: (p & u64::from(Self::MAX_COMPLETIONS)) as u32,
                failed: p & (1 << 30) != 0,
            },
            copy,
            copies: ((p >> 24) & 0xf) as u8,
            ended: p & (1 << 31) != 0,
        };
        ((p >> 32) as u32, progress)
    }
}

pub enum Head {
    Relay(BackendId, Option<Box<Observer>>),
    Swallow(BackendId, &'static str),
    Owned(Expect),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_packs_and_unpacks() {
        let mut p = Progress::default();
        for t in *b"12GdC2G" {
            p.observe(t);
        }
        assert_eq!((p.copy, p.copies), (CopyPhase::In, 2));
        p.observe(b'C');
        assert_eq!(p.copy, CopyPhase::Over);
        assert_eq!(p.completions.completed, 5);
        let (n, q) = Progress::unpack(p.pack((1 << 32) + 7));
        assert_eq!((n, q), (7, p));
        p.observe(b'E');
        p.observe(b'Z');
        assert_eq!(Progress::unpack(p.pack(9)), (9, p));
        assert!(p.ended && p.completions.failed);
    }

    #[test]
    fn a_copy_is_in_from_copy_in_response_to_its_end() {
        let mut p = Progress::default();
        p.observe(b'C'); // an earlier statement of the same Query
        assert_eq!(p.copy, CopyPhase::NotYet);
        p.observe(b'G');
        assert_eq!(p.copy, CopyPhase::In);
        p.observe(b'E');
        assert_eq!(p.copy, CopyPhase::Over);
    }

    #[tokio::test]
    async fn waiting_sees_progress_and_later_entries() {
        let e = Expectations::default();
        let mut p = Progress::default();
        p.observe(b'1');
        e.publish(4, p);
        let seen = e.wait_progress(4, |p| p.completions.completed >= 1).await;
        assert_eq!(seen, Some(p));
        e.publish(5, Progress::default());
        assert_eq!(e.wait_progress(4, |_| false).await, None);
    }
}
