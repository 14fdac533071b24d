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
    /// Wakes the response side when something is queued.
    pushed: Notify,
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
            pushed: Notify::new(),
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
        self.pushed.notify_one();
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
    pub fn publish(&self, number: u64, c: Completions) {
        self.progress
            .store(Progress::pack(number, c), Ordering::SeqCst);
        // Paired with `wait_settled`: storing `watching` there and then
        // loading `progress`, against storing `progress` here and then
        // loading `watching`, one side always sees the other.
        if self.watching.load(Ordering::SeqCst) {
            self.popped.notify_waiters();
        }
    }

    /// Waits until entry `number`'s answer holds all `expected`
    /// completions or a failure, and says which. The entry must be a
    /// Relay whose messages up to here the backend will answer without a
    /// Sync (the caller sent a Flush).
    pub async fn wait_settled(&self, number: u64, expected: u32) -> Completions {
        self.watching.store(true, Ordering::SeqCst);
        let c = loop {
            let popped = self.popped.notified();
            tokio::pin!(popped);
            popped.as_mut().enable();
            if let Some(c) = Progress::unpack(self.progress.load(Ordering::SeqCst), number) {
                if c.settled(expected) {
                    break c;
                }
            }
            popped.await;
        };
        self.watching.store(false, Ordering::SeqCst);
        c
    }

    pub async fn wait_pushed(&self) {
        self.pushed.notified().await;
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

/// Entry number (its low 32 bits: the entry waited for is never 2^32
/// entries ahead of the one relayed), a failure bit, and the completions.
struct Progress;

impl Progress {
    fn pack(number: u64, c: Completions) -> u64 {
        ((number & 0xffff_ffff) << 32)
            | (u64::from(c.failed) << 31)
            | u64::from(c.completed.min(0x7fff_ffff))
    }

    fn unpack(p: u64, number: u64) -> Option<Completions> {
        (p >> 32 == number & 0xffff_ffff).then_some(Completions {
            completed: (p & 0x7fff_ffff) as u32,
            failed: p & (1 << 31) != 0,
        })
    }
}

pub enum Head {
    Relay(BackendId, Option<Box<Observer>>),
    Swallow(BackendId, &'static str),
    Owned(Expect),
}
