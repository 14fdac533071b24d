//! One session's mirror: its own connection to the mirror backend, which
//! replays the queued batches in order, reads the answers (they never reach
//! the client), compares them with the primary's when asked, and counts
//! whatever it could not apply.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use pgshift_protocol::backend::{command_complete, keeps_transaction, tag, ErrorFields};
use pgshift_protocol::extended::Completions;
use pgshift_protocol::{encode, peek_header, HEADER_LEN};
use pgshift_rules::config::BackendId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::link::{CompareJob, Job, MirrorItem, MirrorState, StatementJob};
use super::{now_rfc3339, Diverged};
use crate::backend::{self, ConnectOptions};
use crate::bounded::Bound;
use crate::compare::{
    compare, MismatchContext, MismatchRecord, Redaction, ResultDigest, ResultSummary, Role,
};
use crate::gate::Gated;
use crate::server::Shared;
use crate::session::observe::{MirrorResult, PrimaryOutcome, QUERY_CANCELED};
use crate::stream::Stream;
use tokio::sync::futures::Notified;

/// How long the mirror waits for the primary's outcome of a batch it only
/// compares; past that the comparison is skipped. With comparison on, every
/// statement waits, hence one [`Bound`] per mirror rather than a timer each.
/// Whether to commit is another matter: that wait lasts as long as the
/// primary's statement does (a 10-minute UPDATE must not be rolled back on
/// the mirror at minute 1), and ends with the session at the latest, whose
/// end drops the sender.
const PRIMARY_WAIT: Duration = Duration::from_secs(60);

/// How long cancelling the mirror's copy of a cancelled statement may
/// take (connecting included) before the mirror gives up and lets it run.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

/// Most items sent in one write.
const MAX_BATCH: usize = 256;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Who the session is, for the diverged list.
#[derive(Clone)]
pub struct SessionMeta {
    pub key: u64,
    pub user: String,
    pub application_name: String,
    pub startup_params: Vec<(String, String)>,
}

struct Conn {
    stream: Stream,
    buf: BytesMut,
    cancel: backend::CancelKey,
    /// The transaction open on the connection has changed data: losing
    /// it (a COMMIT that reports ROLLBACK) loses writes.
    txn_changed_data: bool,
}

/// What the mirror waits on besides its own socket.
struct Waits<'s> {
    /// The primary's outcome of a batch it only compares.
    primary: Bound,
    cancels: CancelWatch<'s>,
}

/// Watches for the primary's cancels of the batches the mirror runs.
struct CancelWatch<'s> {
    state: &'s MirrorState,
    /// Made once and polled only when woken, like `stopped` in `run`.
    notified: Gated<Notified<'s>>,
    /// `MirrorState::cancels` when the list was last seen empty.
    seen: u64,
}

impl<'s> CancelWatch<'s> {
    fn new(state: &'s MirrorState) -> Self {
        CancelWatch {
            state,
            notified: Gated::new(state.cancel.notified()),
            seen: 0,
        }
    }

    /// Whether the primary cancelled batch `seq`. One atomic load unless a
    /// cancel came since the list was last empty.
    fn cancelled(&mut self, seq: u64) -> bool {
        let now = self.state.cancels.load(Ordering::Acquire);
        if now == self.seen {
            return false;
        }
        let (found, empty) = self.state.take_cancel(seq);
        if empty {
            self.seen = now;
        }
        found
    }

    /// Waits for the next cancel; re-armed after each.
    async fn next(&mut self) {
        (&mut self.notified).await;
        self.notified = Gated::new(self.state.cancel.notified());
    }
}

/// Where an item stands when [`process`] takes it.
#[derive(Clone, Copy)]
enum Sent {
    /// Not yet: `process` sends it, on its own.
    No,
    /// At `at`; `last` when nothing went out after it.
    At { at: Instant, last: bool },
}

/// What one answer held.
#[derive(Default)]
struct Answer {
    error: Option<(String, String)>,
    /// A warning that a transaction was already in progress (25001).
    already_in_transaction: bool,
    /// The primary's run of the statement was cancelled: so may the
    /// mirror's be, and that is no mirror failure.
    primary_cancelled: bool,
    /// A Query after extended-protocol messages was skipped, since one of
    /// them failed (see [`StatementJob::run_after`]).
    skipped_run: bool,
    /// A COMMIT reported COMMIT, or a PREPARE TRANSACTION reported that
    /// (in a failed transaction either reports ROLLBACK).
    committed: bool,
    /// The last ReadyForQuery's transaction status.
    status: u8,
}

/// Lets [`receive`] cancel the statement it awaits when the primary's run
/// of it is cancelled.
struct Watch<'a, 's> {
    cancels: &'a mut CancelWatch<'s>,
    seq: u64,
    backend: BackendId,
    shared: &'a Shared,
}

pub async fn run(
    backend: BackendId,
    shared: Arc<Shared>,
    session: SessionMeta,
    mut rx: mpsc::Receiver<MirrorItem>,
    state: Arc<MirrorState>,
    stop: CancellationToken,
) {
    let mut conn: Option<Conn> = None;
    // Anything queued before a connection that is not the first attempt's
    // was queued for another connection, or for none: either way the
    // session's state is not on it.
    let mut tried = false;
    // The epoch of `conn`: items queued for another one are stale.
    let mut conn_epoch = 0;
    let mut backoff = MIN_BACKOFF;
    let mut retry_at = Instant::now();
    let mut batch: Vec<MirrorItem> = Vec::new();
    let mut out = BytesMut::new();
    let mut waits = Waits {
        primary: Bound::new(PRIMARY_WAIT),
        cancels: CancelWatch::new(&state),
    };
    // Made once and polled only when woken: a token's future registers with
    // a lock when made and when polled (see `gate`).
    let mut stopped = Gated::new(stop.cancelled());
    loop {
        let first = tokio::select! {
            item = rx.recv() => match item { Some(i) => i, None => break },
            _ = &mut stopped => {
                abandon(&mut rx, backend, &shared, &session, &state);
                break;
            }
        };
        // What else is queued goes out with it, in one write; an item that
        // must see the primary's outcome before it is sent, or before what
        // follows it may be, ends the batch.
        batch.push(first);
        while batch.len() < MAX_BATCH && !ends_batch(&batch[batch.len() - 1]) {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        if conn.is_none() && Instant::now() >= retry_at {
            let retry = std::mem::replace(&mut tried, true);
            match connect(backend, &shared, &session).await {
                Ok(c) => {
                    if retry {
                        // A new connection has none of the session's state.
                        conn_epoch = state.epoch.fetch_add(1, Ordering::AcqRel) + 1;
                    }
                    backoff = MIN_BACKOFF;
                    conn = Some(c);
                }
                Err(e) => {
                    tracing::warn!(%backend, error = %e, retry_in = ?backoff, "mirror backend unreachable");
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        // What the session queued before it knew of a reconnection leans on
        // state (SETs, prepared statements, an open transaction) that died
        // with the old connection: running it here would fail, or apply half
        // a transaction. It is missed; the session replays its state and
        // drops the rest of an open transaction once it sees the new epoch.
        let mut stale = 0;
        if conn.is_some() {
            stale = batch.iter().take_while(|i| i.epoch != conn_epoch).count();
            for item in &mut batch[..stale] {
                missed(&shared, backend, &session, item, "mirror connection lost");
            }
        }
        let mut finished = 0;
        let outcome = match conn.as_mut() {
            Some(c) if stale < batch.len() => {
                let mut b = Batch {
                    session: &session,
                    items: &mut batch[stale..],
                    out: &mut out,
                    waits: &mut waits,
                    finished: &mut finished,
                };
                run_batch(c, backend, &shared, &mut b).await
            }
            Some(_) => Ok(()),
            None => Err("mirror backend unreachable".to_owned()),
        };
        finished += stale;
        if let Err(reason) = &outcome {
            if conn.take().is_some() {
                tracing::warn!(%backend, %reason, "mirror connection lost");
                retry_at = Instant::now();
            }
            for item in &mut batch[finished..] {
                missed(&shared, backend, &session, item, reason);
            }
        }
        for item in batch.drain(..) {
            done(&shared, backend, &state, &item);
        }
    }
    if let Some(mut c) = conn {
        let mut bye = BytesMut::new();
        encode::terminate(&mut bye);
        let _ = c.stream.write_all(&bye).await;
    }
}

async fn connect(
    backend: BackendId,
    shared: &Shared,
    session: &SessionMeta,
) -> Result<Conn, String> {
    let loaded = shared.current();
    let limits = &loaded.config.limits;
    let opts = ConnectOptions::for_session(limits, shared);
    let c = backend::connect(
        backend,
        loaded.config.backends.get(backend),
        &session.startup_params,
        &opts,
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(Conn {
        stream: c.stream,
        buf: c.leftover,
        cancel: c.cancel,
        txn_changed_data: false,
    })
}

/// Whether an item can go out before the primary's outcome is known:
/// everything but a transaction's end, and the second phase of a
/// two-phase commit, which waits for the mirror's first.
fn sends_early(item: &MirrorItem) -> bool {
    match &item.job {
        Job::Replay => true,
        Job::Statement(job) => !job.ends_transaction && job.after_prepare.is_none(),
    }
}

/// Whether nothing may follow the item in the same write: a transaction's
/// end, and a wrapped write, whose COMMIT or ROLLBACK must come before
/// the next item; and what is not sent early (see [`sends_early`]).
fn ends_batch(item: &MirrorItem) -> bool {
    match &item.job {
        Job::Replay => false,
        // A Query the mirror may skip must not have anything after it on
        // the wire, which Postgres would skip too.
        Job::Statement(job) => {
            job.ends_transaction
                || job.wrap
                || job.run_after.is_some()
                || job.after_prepare.is_some()
        }
    }
}

fn wraps(item: &MirrorItem) -> bool {
    matches!(&item.job, Job::Statement(job) if job.wrap)
}

/// One write's worth of queued items and what handling them needs.
struct Batch<'a, 's> {
    session: &'a SessionMeta,
    items: &'a mut [MirrorItem],
    out: &'a mut BytesMut,
    waits: &'a mut Waits<'s>,
    /// How many items are done.
    finished: &'a mut usize,
}

/// Sends the batch (all of it but a final transaction end in one write)
/// and handles the answers in order.
async fn run_batch(
    c: &mut Conn,
    backend: BackendId,
    shared: &Shared,
    b: &mut Batch<'_, '_>,
) -> Result<(), String> {
    let early = b.items.iter().take_while(|i| sends_early(i)).count();
    if early == 1 && !wraps(&b.items[0]) {
        send(c, &b.items[0].bytes).await?;
    } else if early > 0 {
        b.out.clear();
        for item in &b.items[..early] {
            if wraps(item) {
                encode::query(b.out, "BEGIN");
            }
            b.out.extend_from_slice(&item.bytes);
        }
        send(c, b.out).await?;
    }
    let at = Instant::now();
    for (i, item) in b.items.iter_mut().enumerate() {
        let sent = if i < early {
            Sent::At {
                at,
                last: i + 1 == early,
            }
        } else {
            Sent::No
        };
        process(c, backend, shared, b.session, item, sent, b.waits).await?;
        *b.finished = i + 1;
    }
    Ok(())
}

/// Runs one item on the mirror. `Err` means the connection is unusable.
async fn process(
    c: &mut Conn,
    backend: BackendId,
    shared: &Shared,
    session: &SessionMeta,
    item: &mut MirrorItem,
    sent: Sent,
    waits: &mut Waits<'_>,
) -> Result<(), String> {
    let answers = item.answers;
    let Job::Statement(job) = &mut item.job else {
        if matches!(sent, Sent::No) {
            send(c, &item.bytes).await?;
        }
        let answer = receive(c, answers, None, None, None).await?;
        // pgshift's own ROLLBACK of a dropped transaction is one of these.
        if answer.status == b'I' {
            c.txn_changed_data = false;
        }
        if let Some((code, message)) = answer.error {
            shared
                .mirroring
                .counters(backend)
                .replay_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%backend, sqlstate = %code, error = %message, "replaying session state on the mirror failed");
        }
        return Ok(());
    };
    // The statement went out before the primary's outcome is awaited, so
    // the mirror runs it alongside the primary rather than after it; only
    // a transaction's end waits, since COMMIT must not commit here what
    // the primary did not.
    let span = job
        .tally
        .span(backend, Role::Mirror, job.stats.fingerprint());
    let (started, alone) = match sent {
        Sent::At { at, last } => (at, last),
        Sent::No => (Instant::now(), true),
    };
    // Whether to commit waits as long as the primary runs; a comparison,
    // bounded; anything else only if the answer below needs to know.
    let mut later = None;
    let outcome = match job.primary.take() {
        Some(rx) if job.wrap || job.ends_transaction => rx.await.ok(),
        Some(rx) if job.compare.is_some() => waits.primary.wait(rx).await.ok().and_then(Result::ok),
        rx => {
            later = rx;
            None
        }
    };
    // Whether the batch itself went out (rather than a ROLLBACK for it).
    let mut ran = true;
    // The primary committed part of the batch and then failed: what it
    // kept, the mirror never gets.
    let mut partly_committed = false;
    if let Some(prepare) = job.after_prepare.take() {
        let reason = match prepare.applied(PRIMARY_WAIT).await {
            Some(true) => None,
            // Whoever sent the PREPARE saw it fail or go missing here, and
            // said so; what it would have committed is not on the mirror.
            Some(false) => Some("the mirror never prepared this transaction"),
            // Still queued behind another session's backlog: when it lands
            // it stays prepared on the mirror until someone finishes it.
            None => {
                tracing::warn!(%backend, "the mirror had not prepared a transaction 60 s after the primary finished it: it may be left prepared there (see pg_prepared_xacts)");
                Some("the mirror had not prepared this transaction in time")
            }
        };
        if let Some(reason) = reason {
            not_applied(shared, backend, session, job, reason);
            if let Some(done) = job.done.take() {
                let _ = done.send(MirrorResult {
                    error: Some(("42704".to_owned(), reason.to_owned())),
                });
            }
            return Ok(());
        }
        send(c, &item.bytes).await?;
    } else if matches!(sent, Sent::No) {
        if outcome.as_ref().is_some_and(PrimaryOutcome::committed) {
            send(c, &item.bytes).await?;
        } else {
            send(c, &rollback_query()).await?;
            ran = false;
            partly_committed = outcome.as_ref().is_some_and(|o| o.committed_some);
        }
    }
    // A statement the primary gave up on is no comparison of the backends:
    // whether the mirror's copy finished first is a matter of timing.
    let mut digest = match (&job.compare, &outcome) {
        (Some(cj), Some(o))
            if o.summary.is_some() && o.sqlstate.as_deref() != Some(QUERY_CANCELED) =>
        {
            Some(ResultDigest::new(
                &cj.opts.with_positions(&o.ignore_positions),
            ))
        }
        _ => None,
    };
    let compare_wanted = job.compare.is_some();
    // A BEGIN that finds a transaction open (the session's view of its
    // state lagged behind a pipeline) warns and changes nothing: then the
    // statement belongs to that transaction and is not ours to end.
    let own_transaction = if job.wrap {
        !receive(c, 1, None, None, None)
            .await?
            .already_in_transaction
    } else {
        false
    };
    // Cancelling the copy is safe only while nothing sent after it could
    // be hit instead.
    let watch = (job.cancellable && alone).then_some(Watch {
        cancels: &mut waits.cancels,
        seq: item.seq,
        backend,
        shared,
    });
    let run_after = job.run_after.filter(|_| ran);
    let answer = receive(c, answers, digest.as_mut(), watch, run_after).await?;
    let mut status = answer.status;
    if answer.skipped_run && (job.ends_transaction || job.run_ends_transaction) {
        // The skipped Query was to end the transaction, which the Sync
        // left open (and failed): end it, as the primary's did end.
        send(c, &rollback_query()).await?;
        status = receive(c, 1, None, None, None).await?.status;
    }
    if own_transaction {
        let commit =
            answer.error.is_none() && outcome.as_ref().is_some_and(|o| o.sqlstate.is_none());
        if commit {
            send(c, &commit_query()).await?;
        } else {
            send(c, &rollback_query()).await?;
        }
        status = receive(c, 1, None, None, None).await?.status;
    }
    if let Some(prepare) = job.prepare.take() {
        prepare.applied(ran && answer.error.is_none() && answer.committed);
    }
    let changed_data = c.txn_changed_data || (ran && job.changes_data && answer.error.is_none());
    c.txn_changed_data = changed_data && status != b'I';
    let outcome = match later {
        Some(rx) if answer.error.is_some() || job.applies_alone => {
            waits.primary.wait(rx).await.ok().and_then(Result::ok)
        }
        _ => outcome,
    };
    // Rolled back where the primary may have kept it.
    let rolled_back = if (own_transaction || job.ends_transaction) && outcome.is_none() {
        Some("primary's outcome unknown: rolled back on the mirror")
    } else if partly_committed {
        Some("primary committed part of a batch that then failed: rolled back on the mirror")
    } else {
        None
    };
    if let Some(reason) = rolled_back {
        not_applied(shared, backend, session, job, reason);
    }
    let lost = rolled_back.is_some();
    let elapsed = started.elapsed();
    drop(span);
    // Told (in sync mode) once everything below is counted, so that a
    // client holding its answer sees the counters that answer moved.
    let done = job.done.take();
    if job.executes {
        job.stats.record_latency(backend, Role::Mirror, elapsed);
        job.tally.record(backend, Role::Mirror, elapsed);
    }
    let counters = shared.mirroring.counters(backend);
    if !lost {
        counters.applied.fetch_add(1, Ordering::Relaxed);
    }
    if compare_wanted && digest.is_none() {
        // The primary's digest never came (timed out, or it had none).
        counters.compare_skipped.fetch_add(1, Ordering::Relaxed);
    }
    let primary_sqlstate = outcome.as_ref().and_then(|o| o.sqlstate.clone());
    if let Some(apart) = divergence(job, ran, outcome.as_ref(), &answer, changed_data) {
        // The mirror's own failure is counted with the others below.
        if apart == Apart::AppliedOnMirrorOnly {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            job.stats.record_mirror_error();
            tracing::warn!(
                %backend,
                digest = %format!("{:016x}", job.stats.fingerprint()),
                sqlstate = primary_sqlstate.as_deref().unwrap_or_default(),
                "statement applied on the mirror failed on the primary"
            );
        }
        diverge(shared, backend, session, apart.reason());
    }
    if let (Some(cj), Some(o), Some(d)) = (&job.compare, &outcome, digest) {
        if let (Some(primary), mirror) = (o.summary.as_ref(), d.finish()) {
            compared(shared, backend, job, cj, primary, &mirror);
        } else {
            counters.compare_skipped.fetch_add(1, Ordering::Relaxed);
        }
    } else if let Some((code, message)) =
        answer.error.as_ref().filter(|_| !answer.primary_cancelled)
    {
        if primary_sqlstate.as_deref() != Some(code.as_str()) {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            job.stats.record_mirror_error();
            tracing::warn!(
                %backend,
                digest = %format!("{:016x}", job.stats.fingerprint()),
                sqlstate = %code,
                error = %message,
                "statement failed on the mirror only"
            );
        }
    }
    if let Some(done) = done {
        let _ = done.send(MirrorResult {
            error: answer.error.clone(),
        });
    }
    Ok(())
}

/// Counts and, when they differ, records the comparison of the two answers.
fn compared(
    shared: &Shared,
    backend: BackendId,
    job: &StatementJob,
    cj: &CompareJob,
    primary: &ResultSummary,
    mirror: &ResultSummary,
) {
    let counters = shared.mirroring.counters(backend);
    let verdict = compare(primary, mirror, cj.kind);
    counters.compared.fetch_add(1, Ordering::Relaxed);
    job.stats.record_comparison(verdict.is_match());
    if !verdict.is_match() {
        counters.mismatched.fetch_add(1, Ordering::Relaxed);
        let loaded = shared.current();
        let ctx = MismatchContext {
            time: SystemTime::now(),
            rule: cj.rule.as_deref(),
            fingerprint: job.stats.fingerprint(),
            sql: &cj.sql,
            normalized_sql: job.stats.text(),
            primary_backend: job.primary_backend.as_str(),
            mirror_backend: backend.as_str(),
        };
        let redaction = Redaction::from(&loaded.config.compare);
        if let Some(record) =
            MismatchRecord::from_verdict(&ctx, primary, mirror, &verdict, redaction)
        {
            tracing::info!(digest = %format!("{:016x}", job.stats.fingerprint()), "results differ between primary and mirror");
            shared
                .mirroring
                .record_mismatch(record, loaded.config.compare.log.as_deref());
        }
    }
}

/// How a batch left the mirror apart from the primary.
#[derive(Clone, Copy, PartialEq)]
enum Apart {
    /// A write failed on the mirror only.
    FailedOnMirrorOnly,
    /// A statement run unwrapped (DDL, TRUNCATE, CALL, DO) was applied on
    /// the mirror and refused by the primary.
    AppliedOnMirrorOnly,
    /// A transaction that changed data on the mirror, which the primary
    /// committed, rolled back there.
    CommitLost,
}

impl Apart {
    fn reason(self) -> &'static str {
        match self {
            Apart::FailedOnMirrorOnly => "a write failed on the mirror only",
            Apart::AppliedOnMirrorOnly => "applied on the mirror, failed on the primary",
            Apart::CommitLost => "the primary committed a transaction the mirror rolled back",
        }
    }
}

/// Whether the batch the mirror ran left it apart from the primary in a
/// way nothing else says (`changed_data`: the mirror's transaction had
/// changed data). Unknown outcomes count as success: a wrapped or
/// transaction-ending batch without one was rolled back and said so.
fn divergence(
    job: &StatementJob,
    ran: bool,
    outcome: Option<&PrimaryOutcome>,
    answer: &Answer,
    changed_data: bool,
) -> Option<Apart> {
    let primary_failed = outcome.is_some_and(|o| o.sqlstate.is_some());
    if !ran || answer.primary_cancelled {
        return None;
    }
    if answer.error.is_some() {
        return (job.write && !primary_failed).then_some(Apart::FailedOnMirrorOnly);
    }
    if job.applies_alone && primary_failed {
        return Some(Apart::AppliedOnMirrorOnly);
    }
    let commit_lost = job.ends_transaction
        && changed_data
        && outcome.is_some_and(PrimaryOutcome::committed)
        && !answer.committed;
    commit_lost.then_some(Apart::CommitLost)
}

async fn send(c: &mut Conn, bytes: &[u8]) -> Result<(), String> {
    c.stream.write_all(bytes).await.map_err(|e| e.to_string())?;
    c.stream.flush().await.map_err(|e| e.to_string())
}

/// A forced shutdown (the grace period ran out): what the session queued
/// and the mirror has not run never will, and is counted so.
fn abandon(
    rx: &mut mpsc::Receiver<MirrorItem>,
    backend: BackendId,
    shared: &Shared,
    session: &SessionMeta,
    state: &MirrorState,
) {
    let mut left = 0;
    while let Ok(mut item) = rx.try_recv() {
        missed(
            shared,
            backend,
            session,
            &mut item,
            "shutdown before the mirror ran it",
        );
        done(shared, backend, state, &item);
        left += 1;
    }
    if left > 0 {
        tracing::warn!(%backend, items = left, "shutdown stopped a mirror before it applied what its session queued");
    }
}

/// A batch whose commit on the mirror depends on the primary's outcome
/// was rolled back there, and the primary may have kept (some of) it: its
/// outcome never came (the session ended before the primary answered), or
/// it committed part of the batch before failing. Counted as dropped.
fn not_applied(
    shared: &Shared,
    backend: BackendId,
    session: &SessionMeta,
    job: &StatementJob,
    reason: &str,
) {
    shared
        .mirroring
        .counters(backend)
        .dropped
        .fetch_add(1, Ordering::Relaxed);
    job.stats.record_mirror_dropped();
    diverge(shared, backend, session, reason);
}

fn diverge(shared: &Shared, backend: BackendId, session: &SessionMeta, reason: &str) {
    shared.mirroring.mark_diverged(session.key, || Diverged {
        user: session.user.clone(),
        application_name: session.application_name.clone(),
        backend,
        reason: reason.to_owned(),
        since: now_rfc3339(),
    });
}

/// Reads `answers` ReadyForQuery-terminated answers, feeding every message
/// to `digest` when given. `run_after`: see [`StatementJob::run_after`].
async fn receive(
    c: &mut Conn,
    answers: usize,
    mut digest: Option<&mut ResultDigest>,
    mut watch: Option<Watch<'_, '_>>,
    mut run_after: Option<u32>,
) -> Result<Answer, String> {
    let mut answer = Answer::default();
    let mut left = answers;
    let mut completions = Completions::default();
    while left > 0 {
        let Some(h) = peek_header(&c.buf, usize::MAX).map_err(|e| e.to_string())? else {
            read_watching(c, &mut watch, &mut answer).await?;
            continue;
        };
        if c.buf.len() < h.frame_len {
            c.buf.reserve(h.frame_len - c.buf.len());
            read_watching(c, &mut watch, &mut answer).await?;
            continue;
        }
        let body = &c.buf[HEADER_LEN..h.frame_len];
        match h.tag {
            tag::READY_FOR_QUERY => {
                left -= 1;
                answer.status = body.first().copied().unwrap_or_default();
            }
            tag::COMMAND_COMPLETE => {
                answer.committed |= command_complete(body).is_ok_and(keeps_transaction);
            }
            tag::NOTICE_RESPONSE => {
                answer.already_in_transaction |=
                    ErrorFields::new(body).sqlstate() == Some(b"25001");
            }
            tag::ERROR_RESPONSE => {
                let f = ErrorFields::new(body);
                let text = |v: Option<&[u8]>| {
                    v.map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default()
                };
                answer
                    .error
                    .get_or_insert((text(f.sqlstate()), text(f.message())));
            }
            _ => {}
        }
        if let Some(d) = digest.as_deref_mut() {
            match h.tag {
                tag::ROW_DESCRIPTION => d.row_description(body),
                tag::DATA_ROW => d.data_row(body),
                tag::COMMAND_COMPLETE => d.command_complete(body),
                tag::ERROR_RESPONSE => d.error(body),
                _ => {}
            }
        }
        c.buf.advance(h.frame_len);
        if let Some(expected) = run_after {
            completions.observe(h.tag, expected);
            if completions.failed {
                // The Query is skipped, and with it its ReadyForQuery: the
                // Sync's stands in.
                run_after = None;
                answer.skipped_run = true;
                let mut sync = BytesMut::new();
                encode::sync(&mut sync);
                send(c, &sync).await?;
            }
        }
    }
    Ok(answer)
}

/// [`read_more`], and when the primary's run of the awaited statement is
/// cancelled, cancels it here too (once).
async fn read_watching(
    c: &mut Conn,
    watch: &mut Option<Watch<'_, '_>>,
    answer: &mut Answer,
) -> Result<(), String> {
    loop {
        let Some(w) = watch.as_mut() else {
            return read_more(c).await;
        };
        if w.cancels.cancelled(w.seq) {
            answer.primary_cancelled = true;
            cancel_copy(&c.cancel, w.backend, w.shared).await;
            *watch = None;
            continue;
        }
        tokio::select! {
            biased;
            r = read_more(c) => return r,
            () = w.cancels.next() => {}
        }
    }
}

/// Sends the mirror backend a CancelRequest for `key`'s connection and
/// waits for Postgres to act on it: nothing else may go out on that
/// connection before, or the cancel could hit the next statement.
async fn cancel_copy(key: &backend::CancelKey, backend: BackendId, shared: &Shared) {
    if !shared.mirroring.allow_cancel(backend) {
        tracing::debug!(%backend, "too many mirror cancels this second: the copy runs out");
        return;
    }
    let sent = tokio::time::timeout(
        CANCEL_TIMEOUT,
        backend::cancel::send_cancel(backend, key, shared.backend_tls.as_ref()),
    )
    .await;
    match sent {
        Ok(Ok(acted)) => {
            shared
                .mirroring
                .counters(backend)
                .cancelled
                .fetch_add(1, Ordering::Relaxed);
            if !acted {
                // It may yet land, on whatever runs then.
                tracing::warn!(%backend, "the mirror backend did not confirm a cancel within 5 s");
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(%backend, error = %e, "could not cancel the mirror's copy of a cancelled statement")
        }
        Err(_) => {
            tracing::warn!(%backend, "cancelling the mirror's copy of a cancelled statement timed out")
        }
    }
}

async fn read_more(c: &mut Conn) -> Result<(), String> {
    if c.buf.capacity() - c.buf.len() < 8192 {
        c.buf.reserve(64 * 1024);
    }
    match c.stream.read_buf(&mut c.buf).await {
        Ok(0) => Err("mirror backend closed the connection".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

fn missed(
    shared: &Shared,
    backend: BackendId,
    session: &SessionMeta,
    item: &mut MirrorItem,
    reason: &str,
) {
    let counters = shared.mirroring.counters(backend);
    match &mut item.job {
        Job::Statement(job) => {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            job.stats.record_mirror_dropped();
            if job.compare.is_some() {
                counters.compare_skipped.fetch_add(1, Ordering::Relaxed);
            }
            // Sync mirroring: the waiting client hears of it now, once it
            // is counted.
            if let Some(done) = job.done.take() {
                let _ = done.send(MirrorResult {
                    error: Some(("08006".to_owned(), reason.to_owned())),
                });
            }
        }
        Job::Replay => {
            counters.replay_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    diverge(shared, backend, session, reason);
}

fn done(shared: &Shared, backend: BackendId, state: &MirrorState, item: &MirrorItem) {
    if let Job::Statement(job) = &item.job {
        state.queued.fetch_sub(1, Ordering::AcqRel);
        state
            .queued_bytes
            .fetch_sub(item.bytes.len(), Ordering::AcqRel);
        if job.write {
            state.pending_writes.fetch_sub(1, Ordering::AcqRel);
        }
        // Release: whoever sees the queue drained sees what it counted.
        shared
            .mirroring
            .counters(backend)
            .depth
            .fetch_sub(1, Ordering::Release);
    }
    state.progress.notify_waiters();
}

fn rollback_query() -> Bytes {
    let mut b = BytesMut::new();
    encode::query(&mut b, "ROLLBACK");
    b.freeze()
}

fn commit_query() -> Bytes {
    let mut b = BytesMut::new();
    encode::query(&mut b, "COMMIT");
    b.freeze()
}
