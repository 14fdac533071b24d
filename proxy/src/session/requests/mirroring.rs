//! The request side's part in mirroring: deciding per batch whether it is
//! mirrored, compared, or ends a transaction the mirror must end the same
//! way; assembling the batch's bytes; and queueing them, with the session
//! state the mirror connection lacks, in order.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pgshift_protocol::extended::awaits_completion;
use pgshift_protocol::frontend::{tag, Parse};
use pgshift_protocol::{encode, Frame};
use pgshift_rules::classify::{Classification, TxnControl};
use pgshift_rules::config::{BackendId, Kind, MirrorErrorPolicy, MirrorMode, OverflowPolicy};
use pgshift_rules::rewrite::Rewriter;
use tokio::sync::oneshot;

use super::Requests;
use crate::compare::{CompareKind, DigestOptions};
use crate::mirror::link::{CompareJob, Job, MirrorItem, MirrorLink, StatementJob};
use crate::mirror::task::{self, SessionMeta};
use crate::mirror::{now_rfc3339, Diverged};
use crate::prepared::{MirrorPrepare, PrepareSignal, Prepared, PreparedXacts, TwoPhase};
use crate::session::observe::{Observer, PrimaryOutcome};
use crate::session::relay::RelayError;
use crate::session::rewriting;
use crate::session::state::mirror_slot;
use crate::stats::DigestStats;
use crate::telemetry::Tally;

/// A mirrored batch in the making.
pub(super) struct BatchMirror {
    target: BackendId,
    /// The held opening of the transaction (BEGIN, savepoints) to replay
    /// first, and the answers it gets.
    begin: Option<(Bytes, usize)>,
    bytes: BytesMut,
    /// The batch will be dropped (a COPY too large to hold): its messages
    /// are counted but no longer kept.
    discarding: bool,
    /// Names of statements the batch parses (the mirror gets them too).
    parsed: Vec<Bytes>,
    /// Names of statements the held opening and the batch itself close:
    /// recorded as closed on the mirror too, so if the batch never gets
    /// there the mirror must be sent the Closes later.
    closed_in_begin: Vec<Bytes>,
    closed: Vec<Bytes>,
    write: bool,
    /// See [`StatementJob::changes_data`].
    changes_data: bool,
    ends_transaction: bool,
    /// A write outside any transaction: the mirror runs it in one of its
    /// own and commits only if the primary's batch succeeded.
    wrap: bool,
    /// See [`StatementJob::applies_alone`].
    applies_alone: bool,
    /// Executes and Queries in the batch: none when it only prepares or
    /// describes (then it is not compared), one when a cancel of it can
    /// be followed on the mirror.
    runs: u32,
    /// No statement of the deciding text controls the transaction.
    no_txn_control: bool,
    /// The batch's number on its mirror link.
    seq: u64,
    /// Messages in it that await a completion (see [`awaits_completion`]).
    requests: u32,
    /// A Query or FunctionCall follows this many of them before a Sync:
    /// one the mirror skips when one of those fails there.
    run_after: Option<u32>,
    /// That Query ends the transaction.
    run_ends_transaction: bool,
    done: Option<oneshot::Sender<crate::session::observe::MirrorResult>>,
    primary: oneshot::Receiver<PrimaryOutcome>,
    compare: Option<CompareJob>,
    stats: Arc<DigestStats>,
    /// The target's rewriter, when its schema differs.
    rewriter: Option<Arc<Rewriter>>,
    tally: Tally,
    /// See [`StatementJob::prepare`] and [`StatementJob::after_prepare`].
    prepare: Option<PrepareSignal>,
    after_prepare: Option<Arc<MirrorPrepare>>,
}

impl BatchMirror {
    /// The next message is a Query or FunctionCall ending the batch (see
    /// [`Requests::ends_open_batch`]), whose statements are `class`. A
    /// COMMIT there ends the transaction; transaction control of any kind
    /// means the batch is not the mirror's to wrap.
    pub(super) fn run_follows(&mut self, class: Option<&Classification>) {
        self.run_after = Some(self.requests);
        if let Some(class) = class {
            self.run_ends_transaction = ends_transaction(class);
            self.ends_transaction |= self.run_ends_transaction;
            let control = class.statements.iter().any(|s| s.txn.is_some());
            self.no_txn_control &= !control;
            self.wrap &= !control;
            self.applies_alone &= !control && !self.ends_transaction;
        }
    }

    /// The COPY the batch started is over on the primary without the
    /// client's CopyDone (it failed, or never began): on the mirror too.
    pub(super) fn copy_failed(&mut self) {
        encode::frame(&mut self.bytes, tag::COPY_FAIL, |b| {
            b.extend_from_slice(b"COPY failed on the primary\0");
        });
    }

    pub(super) fn add(&mut self, frame: &Frame) {
        let refused = !self.discarding
            && rewriting::push_frame(
                self.rewriter.as_deref(),
                self.target,
                frame.as_bytes(),
                &mut self.bytes,
            );
        if refused {
            self.stats.record_rewrite_refused();
        }
        if matches!(frame.tag(), tag::EXECUTE | tag::QUERY) {
            self.runs += 1;
        }
        self.requests += u32::from(awaits_completion(frame.tag()));
        if frame.tag() == tag::PARSE {
            if let Ok(p) = Parse::decode(frame.body()) {
                self.parsed.push(Bytes::copy_from_slice(p.name));
            }
        }
        if let Some(name) = super::closed_statement(frame) {
            self.closed.push(Bytes::copy_from_slice(name));
        }
    }
}

/// Whether a text leaves a transaction open (`Some(true)`), closed
/// (`Some(false)`), or does not say, by its last transaction control.
fn leaves_transaction(class: &Classification) -> Option<bool> {
    class.statements.iter().rev().find_map(|s| match s.txn {
        Some(TxnControl::Begin)
        | Some(TxnControl::Commit { chain: true })
        | Some(TxnControl::Rollback { chain: true }) => Some(true),
        Some(TxnControl::Commit { chain: false })
        | Some(TxnControl::Rollback { chain: false })
        | Some(TxnControl::PrepareTransaction { .. }) => Some(false),
        _ => None,
    })
}

/// The statements `frames` close.
fn closed_names<'f>(frames: impl Iterator<Item = &'f Frame>) -> Vec<Bytes> {
    frames
        .filter_map(|f| super::closed_statement(f).map(Bytes::copy_from_slice))
        .collect()
}

fn ends_transaction(class: &Classification) -> bool {
    class.statements.iter().any(|s| {
        matches!(
            s.txn,
            Some(
                TxnControl::Commit { .. }
                    | TxnControl::Rollback { .. }
                    | TxnControl::PrepareTransaction { .. }
            )
        )
    })
}

impl Requests<'_> {
    /// Called when a routed batch starts on `b`: records the call for its
    /// digest, and when the route mirrors, prepares the mirror's copy.
    /// Returns what the primary's answer must be shown to.
    pub(super) fn plan_batch(
        &mut self,
        b: BackendId,
        class: Option<&Arc<Classification>>,
        sql: Option<&Arc<str>>,
        ends_txn: bool,
    ) -> Option<Box<Observer>> {
        let begun = self.begun.take();
        let Some(class) = class else {
            // Routed unparsed: counted, not timed (nothing watches its answer).
            let tally = self.loaded.meters.tally(self.rule, None);
            tally.count(b, crate::compare::Role::Primary);
            return None;
        };
        let tally = self.loaded.meters.tally(self.rule, Some(class.kind()));
        let stats = self
            .shared
            .digests
            .entry(class.fingerprint, &class.normalized, class.kind());
        let rule_name = self
            .rule
            .and_then(|i| self.loaded.config.rules.get(i))
            .map(|r| r.name.as_str());
        let mirror = self.route.mirror.filter(|m| *m != b);
        stats.record_call(b, mirror, rule_name);
        let two_phase = TwoPhase::of(class);
        let Some(target) = mirror else {
            let mut observer = Observer::timing_only(stats, b, tally);
            if let Some(phase) = two_phase {
                let at = Prepared {
                    primary: b,
                    mirror: None,
                };
                let at = matches!(phase, TwoPhase::Prepare(_)).then_some(at);
                observer.on_two_phase(Arc::clone(&self.shared.prepared), phase, at);
            }
            return Some(observer);
        };
        let kind = class.kind();
        let ends_transaction = ends_txn || ends_transaction(class);
        let compare_settings = &self.loaded.config.compare;
        let sampled = self.route.compare
            && (compare_settings.sample >= 100
                || rand::random::<u8>() % 100 < compare_settings.sample);
        if self.route.compare && !sampled {
            self.shared
                .mirroring
                .counters(target)
                .compare_skipped
                .fetch_add(1, Ordering::Relaxed);
        }
        let compare = sampled.then(|| CompareJob {
            opts: DigestOptions::from_settings(compare_settings)
                .ordered(class.statements.iter().any(|s| s.has_order_by))
                .learned(stats.learned_ignore()),
            kind: CompareKind::of(kind),
            sql: sql.map_or_else(|| Arc::from(""), Arc::clone),
            rule: rule_name.map(str::to_owned),
        });
        let sync = self.loaded.config.mirror.mode == MirrorMode::Sync;
        // In autocommit, a write the primary failed (a deadlock, a cancel, a
        // constraint only OLD enforces) must not stick on the mirror.
        let wrap = !ends_transaction
            && begun.is_none()
            && class.wrappable_write()
            && !self.in_transaction();
        let changes_data = matches!(kind, Kind::Write | Kind::Ddl | Kind::Copy);
        let finishes_prepared = matches!(two_phase, Some(TwoPhase::Finish(_)));
        let applies_alone = !wrap
            && !ends_transaction
            && begun.is_none()
            && (matches!(kind, Kind::Write | Kind::Ddl) || finishes_prepared)
            && !self.in_transaction();
        // Every mirrored batch reports its outcome: a failure on the mirror
        // is told from one on both sides by it.
        let (observer, primary) = Observer::new(compare.as_ref().map(|c| &c.opts));
        let mut observer = observer.timed(Arc::clone(&stats), b, tally.clone());
        let done = sync.then(|| {
            let (tx, rx) = oneshot::channel();
            let fail = self.loaded.config.mirror.on_mirror_error == MirrorErrorPolicy::Fail;
            observer.mirror_done = Some((rx, fail));
            tx
        });
        // A PREPARE TRANSACTION is remembered with how the mirror's went;
        // COMMIT or ROLLBACK PREPARED waits on the mirror for that.
        let (mut prepare, mut after_prepare) = (None, None);
        match two_phase {
            Some(TwoPhase::Prepare(gid)) => {
                let (signal, handle) = PreparedXacts::mirror_signal();
                prepare = Some(signal);
                let at = Prepared {
                    primary: b,
                    mirror: Some((target, handle)),
                };
                let phase = TwoPhase::Prepare(gid);
                observer.on_two_phase(Arc::clone(&self.shared.prepared), phase, Some(at));
            }
            Some(TwoPhase::Finish(gid)) => {
                after_prepare = self
                    .shared
                    .prepared
                    .find(&gid)
                    .and_then(|p| p.mirror)
                    .filter(|(m, _)| *m == target)
                    .map(|(_, handle)| handle);
                let phase = TwoPhase::Finish(gid);
                observer.on_two_phase(Arc::clone(&self.shared.prepared), phase, None);
            }
            None => {}
        }
        let link = self.ensure_mirror(target);
        let seq = link.next_seq();
        observer.on_cancel(Arc::clone(&link.state), seq);
        let observer = Some(observer);
        // The transaction's held BEGIN goes to the mirror just before the
        // batch (after the catch-up its statements may need).
        let mut begin = BytesMut::new();
        let mut parsed = Vec::new();
        let answers = begun.as_deref().map_or(0, super::held::answers);
        for f in begun.iter().flatten() {
            begin.extend_from_slice(f.as_bytes());
            if f.tag() == tag::PARSE {
                if let Ok(p) = Parse::decode(f.body()) {
                    parsed.push(Bytes::copy_from_slice(p.name));
                }
            }
        }
        let closed_in_begin = closed_names(begun.iter().flatten());
        // Statements the batch may run and then close reach the mirror
        // now, while the session still has them: by the batch's end they
        // may be gone. Those the held frames parse go with them, not twice.
        for name in &parsed {
            self.state.also_parsed_on(name, mirror_slot(target));
        }
        self.mirror_catch_up(target);
        self.batch_mirror = Some(BatchMirror {
            target,
            begin: (!begin.is_empty()).then(|| (begin.freeze(), answers)),
            bytes: BytesMut::new(),
            discarding: false,
            parsed,
            closed_in_begin,
            closed: Vec::new(),
            write: kind != Kind::Read,
            changes_data,
            ends_transaction,
            wrap,
            runs: 0,
            no_txn_control: class.statements.iter().all(|s| s.txn.is_none()),
            seq,
            requests: 0,
            run_after: None,
            run_ends_transaction: false,
            done,
            primary,
            applies_alone,
            compare,
            stats,
            rewriter: self.loaded.rewriters[target.index()].clone(),
            tally,
            prepare,
            after_prepare,
        });
        observer
    }

    /// A batch with no deciding statement (a lone Sync, or transaction
    /// control sent through the extended protocol): mirrored only inside a
    /// mirrored transaction, whose end it may be.
    pub(super) fn plan_unrouted_batch(&mut self, b: BackendId) -> Option<Box<Observer>> {
        if self.route.mirror.is_none() || !self.in_transaction() {
            // The held frames' Closes were counted as going to the route's
            // mirror (see `start_batch`), which is not getting them now.
            let begun = self.begun.take();
            if let Some(target) = self.route.mirror.filter(|m| *m != b) {
                let closed = closed_names(begun.iter().flatten());
                self.state.close_later(mirror_slot(target), &closed);
            }
            return None;
        }
        let held = match &self.batch {
            super::Batch::Held(frames) => frames.clone(),
            _ => Vec::new(),
        };
        let mut class = None;
        let mut ends = false;
        for f in &held {
            if f.tag() == tag::PARSE {
                if let Ok((c, Some(_))) = self.parse_text(f) {
                    ends |= ends_transaction(&c);
                    class.get_or_insert(c);
                }
            } else if f.tag() == tag::BIND {
                if let Ok(bind) = pgshift_protocol::frontend::Bind::decode(f.body()) {
                    if let Some(p) = self.state.statement(bind.statement) {
                        ends |= ends_transaction(&p.class);
                        class.get_or_insert_with(|| Arc::clone(&p.class));
                    }
                }
            }
        }
        let class = class.unwrap_or_else(|| self.shared.classifier.classify(""));
        self.plan_batch(b, Some(&class), None, ends)
    }

    /// Queues the finished batch for its mirror, if it has one.
    pub(super) async fn end_batch_mirror(
        &mut self,
        class: Option<&Classification>,
        sql: Option<&str>,
    ) -> Result<(), RelayError> {
        // Looked at before it is taken: taking moves the whole batch.
        if self.batch_mirror.is_none() {
            return Ok(());
        }
        let Some(batch) = self.batch_mirror.take() else {
            return Ok(());
        };
        // Preparing a COMMIT (Parse and Sync, no Execute) ends nothing:
        // treating it as the end would close the mirror's transaction early.
        let executes = batch.runs > 0;
        let ends_transaction = batch.ends_transaction && executes;
        let target = batch.target;
        let slot = mirror_slot(target);
        self.ensure_mirror(target);
        let i = target.index();
        if self.mirrors[i]
            .as_mut()
            .is_some_and(MirrorLink::reconnected)
        {
            self.state.reset(slot);
            // The transaction's earlier statements died with the old
            // connection (or were never run on the new one): the rest must
            // not be applied there on its own. A batch that carries the
            // held BEGIN starts the mirror's transaction afresh.
            if self.in_transaction() && batch.begin.is_none() && self.dropping[i].is_none() {
                self.dropping[i] = Some("mirror connection lost: rest of the transaction dropped");
            }
        }
        // Whether the session's transaction is open before and after this
        // batch, as far as what it sent says.
        let was_open = self.txn_open;
        let leaves_open = match class.and_then(leaves_transaction) {
            Some(open) => open,
            None => (was_open || batch.begin.is_some()) && !ends_transaction,
        };
        self.txn_open = leaves_open;
        if let Some(reason) = self.dropping[i] {
            self.state.close_later(slot, &batch.closed_in_begin);
            self.state.close_later(slot, &batch.closed);
            self.count_dropped(target, &batch.stats, reason);
            if !leaves_open {
                self.dropping[i] = None;
                // Only an earlier batch can have opened a transaction
                // there: this one never reaches the mirror.
                if was_open {
                    self.mirror_rollback(target);
                }
            }
            return Ok(());
        }
        // The batch's own Parses reach the mirror with it: not catch-up.
        for name in &batch.parsed {
            self.state.also_parsed_on(name, slot);
        }
        self.mirror_catch_up(target);
        if let Some((begin, answers)) = batch.begin.clone() {
            self.mirror_control(target, begin, answers);
        }
        let Some(link) = self.mirrors[i].as_ref() else {
            return Ok(());
        };
        let len = batch.bytes.len();
        // An empty queue takes a statement of any size.
        if link.is_full(len) && link.state.queued.load(Ordering::Acquire) > 0 {
            match self.loaded.config.mirror.on_overflow {
                OverflowPolicy::Block => {
                    let (state, cap) = (Arc::clone(&link.state), link.cap);
                    self.flush().await?;
                    state.wait_room(cap, len).await;
                }
                OverflowPolicy::Drop => {
                    self.state.close_later(slot, &batch.closed);
                    self.drop_full(target, &batch.stats, was_open, leaves_open);
                    return Ok(());
                }
            }
        }
        if let (Some(class), Some(sql)) = (class, sql) {
            self.state.ran(sql, class, slot);
        }
        let write = batch.write;
        let compare = batch.compare.filter(|_| executes);
        let cancellable = batch.runs == 1 && batch.no_txn_control && !ends_transaction;
        let mut item = MirrorItem::new(
            batch.bytes.freeze(),
            1,
            Job::Statement(Box::new(StatementJob {
                stats: Arc::clone(&batch.stats),
                tally: batch.tally,
                write,
                changes_data: batch.changes_data,
                executes,
                primary: Some(batch.primary),
                ends_transaction,
                wrap: batch.wrap && executes,
                applies_alone: batch.applies_alone && executes,
                cancellable,
                run_after: batch.run_after,
                run_ends_transaction: batch.run_ends_transaction,
                compare,
                primary_backend: target.other(),
                done: batch.done,
                // A batch that only prepares the statement commits nothing.
                prepare: batch.prepare.filter(|_| executes),
                after_prepare: batch.after_prepare.filter(|_| executes),
            })),
        );
        item.seq = batch.seq;
        let counters = self.shared.mirroring.counters(target);
        let Some(link) = self.mirrors[i].as_ref() else {
            return Ok(());
        };
        if link.push_statement(item, write) {
            counters.queued.fetch_add(1, Ordering::Relaxed);
            counters.depth.fetch_add(1, Ordering::Relaxed);
        } else {
            self.state.close_later(slot, &batch.closed);
            self.drop_full(target, &batch.stats, was_open, leaves_open);
        }
        Ok(())
    }

    /// A batch the full queue has no room for: dropped, and when it opens a
    /// transaction (or runs inside one) the rest of that goes with it; the
    /// mirror's half, if it has one, is rolled back.
    fn drop_full(
        &mut self,
        target: BackendId,
        stats: &DigestStats,
        was_open: bool,
        leaves_open: bool,
    ) {
        self.count_dropped(target, stats, "mirror queue full");
        if leaves_open {
            self.dropping[target.index()] =
                Some("mirror queue full: rest of the transaction dropped");
        } else if was_open {
            self.mirror_rollback(target);
        }
    }

    /// Ends the mirror's open transaction, whose rest was dropped.
    fn mirror_rollback(&mut self, target: BackendId) {
        let mut rb = BytesMut::new();
        encode::query(&mut rb, "ROLLBACK");
        self.mirror_control(target, rb.freeze(), 1);
    }

    /// A mirrored COPY's data is held for the mirror in memory; past this
    /// much the mirror's copy is dropped (counted, session diverged) rather
    /// than letting one COPY grow pgshift without bound. Inside a
    /// transaction the rest of it is dropped too: a half-applied
    /// transaction is worse than a missing one.
    pub(super) fn cap_copy_mirror(&mut self) {
        const MAX_MIRRORED_COPY: usize = 64 * 1024 * 1024;
        let Some(b) = self
            .batch_mirror
            .as_mut()
            .filter(|b| b.bytes.len() > MAX_MIRRORED_COPY)
        else {
            return;
        };
        b.discarding = true;
        b.bytes = BytesMut::new();
        self.dropping[b.target.index()].get_or_insert("COPY too large to mirror");
    }

    /// Reads routed to a backend this session's mirror still owes writes
    /// wait for them (bounded), else go to the backend that took them.
    pub(super) async fn read_your_writes(
        &mut self,
        target: BackendId,
        kind: Kind,
    ) -> Result<BackendId, RelayError> {
        if kind != Kind::Read {
            return Ok(target);
        }
        let Some(link) = self.mirrors[target.index()].as_ref() else {
            return Ok(target);
        };
        if link.state.pending_writes.load(Ordering::Acquire) == 0 {
            return Ok(target);
        }
        let state = Arc::clone(&link.state);
        let counters = self.shared.mirroring.counters(target);
        counters.ryw_waits.fetch_add(1, Ordering::Relaxed);
        self.flush().await?;
        let wait = self.loaded.config.mirror.read_your_writes_wait;
        if tokio::time::timeout(wait, state.wait_writes_done())
            .await
            .is_ok()
        {
            return Ok(target);
        }
        counters.ryw_fallbacks.fetch_add(1, Ordering::Relaxed);
        Ok(target.other())
    }

    fn ensure_mirror(&mut self, target: BackendId) -> &mut MirrorLink {
        let i = target.index();
        let link = match self.mirrors[i].take() {
            Some(link) => link,
            None => self.start_mirror(target),
        };
        self.mirrors[i].insert(link)
    }

    fn start_mirror(&self, target: BackendId) -> MirrorLink {
        let (link, rx, state) = MirrorLink::channel(target, self.loaded.config.mirror.queue);
        let meta = SessionMeta {
            key: self.info.session_key,
            user: self.info.user.clone(),
            application_name: self.info.application_name.clone(),
            startup_params: self.info.startup_params.clone(),
        };
        let run = task::run(
            target,
            Arc::clone(self.shared_arc()),
            meta,
            rx,
            state,
            self.mirror_stop.clone(),
        );
        self.shared.mirror_tasks.spawn(run);
        link
    }

    /// The session state and prepared statements the mirror connection
    /// lacks, queued ahead of the batch.
    /// Before a held transaction opening goes to `b`: the mirror the
    /// route has gets the statements it may run and close (a driver that
    /// prepares BEGIN, runs it and closes it) while they still exist.
    pub(super) fn catch_up_mirror_before_held(&mut self, b: BackendId) -> Option<BackendId> {
        let target = self.route.mirror.filter(|m| *m != b)?;
        self.ensure_mirror(target);
        self.mirror_catch_up(target);
        Some(target)
    }

    /// The mirror the batch being sent goes to, if any.
    pub(super) fn mirror_of_batch(&self) -> Option<BackendId> {
        self.batch_mirror.as_ref().map(|m| m.target)
    }

    fn mirror_catch_up(&mut self, target: BackendId) {
        let c = self.state.catch_up(mirror_slot(target));
        if c.is_empty() {
            return;
        }
        let rw = self.loaded.rewriters[target.index()].clone();
        let rw = rw.as_deref();
        let mut bytes = BytesMut::new();
        let mut answers = 0;
        for sql in &c.sql {
            rewriting::push_query(rw, target, sql, &mut bytes);
            answers += 1;
        }
        if !c.closes.is_empty() || !c.parses.is_empty() {
            for name in &c.closes {
                encode::frame(&mut bytes, tag::CLOSE, |o| {
                    o.extend_from_slice(b"S");
                    o.extend_from_slice(name);
                    o.extend_from_slice(&[0]);
                });
            }
            for parse in &c.parses {
                // A refused statement was counted when the client sent it.
                let _ = rewriting::push_frame(rw, target, parse, &mut bytes);
            }
            encode::sync(&mut bytes);
            answers += 1;
        }
        self.mirror_control(target, bytes.freeze(), answers);
    }

    fn mirror_control(&mut self, target: BackendId, bytes: Bytes, answers: usize) {
        self.ensure_mirror(target);
        let item = MirrorItem::new(bytes, answers, Job::Replay);
        let pushed = self.mirrors[target.index()]
            .as_ref()
            .is_some_and(|l| l.push_control(item));
        if !pushed {
            self.shared
                .mirroring
                .counters(target)
                .replay_errors
                .fetch_add(1, Ordering::Relaxed);
            self.diverge(target, "mirror queue full: session state not replayed");
        }
    }

    fn count_dropped(&self, target: BackendId, stats: &DigestStats, reason: &str) {
        self.shared
            .mirroring
            .counters(target)
            .dropped
            .fetch_add(1, Ordering::Relaxed);
        stats.record_mirror_dropped();
        self.diverge(target, reason);
    }

    fn diverge(&self, target: BackendId, reason: &str) {
        self.shared
            .mirroring
            .mark_diverged(self.info.session_key, || Diverged {
                user: self.info.user.clone(),
                application_name: self.info.application_name.clone(),
                backend: target,
                reason: reason.to_owned(),
                since: now_rfc3339(),
            });
    }
}
