//! The request side: client messages to backends, one routing decision per
//! batch.
//!
//! A batch is a simple Query, or extended-protocol messages up to a Sync.
//! Each batch goes to one backend, chosen by the named steps below:
//! `classify` (what the statement is), `decide` (which backend: the
//! transaction's pin, or the rules), `start_batch` (connect lazily and
//! catch the backend up on session state), `send`. A transaction never
//! spans two backends: its primary is decided by its first routed
//! statement (a lone BEGIN is held until then) and kept until it ends.

use std::sync::Arc;

use bytes::BytesMut;
use pgshift_protocol::backend::TransactionStatus;
use pgshift_protocol::extended::awaits_completion;
use pgshift_protocol::frontend::{self, tag, Bind, Parse, Query, TargetKind};
use pgshift_protocol::{decode_frame, encode, Frame};
use pgshift_rules::classify::{must_parse, Classification, TxnControl};
use pgshift_rules::config::{BackendId, Route};
use pgshift_rules::route::SessionContext;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

mod held;
mod mirroring;

use super::expect::{CopyPhase, Expect, Expectations, Progress};
use super::observe::Observer;
use super::relay::{End, RelayError};
use super::responses::reserve_for_read;
use super::rewriting;
use super::state::{link_slot, mirror_slot, ParseText, SessionState};
use crate::backend::cancel::SessionCancel;
use crate::backend::{self, ConnectOptions};
use crate::mirror::link::MirrorLink;
use crate::prepared::TwoPhase;
use crate::server::{Loaded, Shared};
use crate::stream::{ReadHalf, WriteHalf};

/// Who the session is, for rule matching.
pub struct SessionInfo {
    pub user: String,
    pub database: String,
    pub application_name: String,
    pub client_addr: std::net::IpAddr,
    pub session_key: u64,
    /// The client's startup parameters, sent to every backend it uses.
    pub startup_params: Vec<(String, String)>,
    /// The session's log context. Events name it as their parent rather
    /// than the relay entering it on every poll.
    pub span: tracing::Span,
}

impl SessionInfo {
    fn context(&self) -> SessionContext<'_> {
        SessionContext {
            user: &self.user,
            database: &self.database,
            application_name: &self.application_name,
            client_addr: Some(self.client_addr),
            session_key: self.session_key,
        }
    }
}

enum Batch {
    /// Between batches.
    Idle,
    /// Extended-protocol messages whose backend is not decided yet (a
    /// batch that so far only holds BEGIN, say).
    Held(Vec<Frame>),
    /// Routed; everything up to the Sync goes there.
    Open(BackendId),
}

/// A batch held this large is routed where the session already is rather
/// than held further.
const MAX_HELD_BYTES: usize = 1 << 20;

pub struct Requests<'a> {
    shared: &'a Arc<Shared>,
    /// Stops this session's mirror tasks when the grace period is over.
    mirror_stop: CancellationToken,
    loaded: Arc<Loaded>,
    info: &'a SessionInfo,
    exp: &'a Expectations,
    cancel: &'a SessionCancel,
    links: [Option<WriteHalf>; 2],
    out: [BytesMut; 2],
    /// The backend of the latest batch; a transaction's pin.
    current: BackendId,
    batch: Batch,
    /// A transaction's opening answered by pgshift and not yet sent
    /// anywhere: Queries, or extended-protocol messages ending with Sync.
    held: Option<held::HeldTxn>,
    state: SessionState,
    /// The route of the latest decision; inside a transaction, the route
    /// the transaction started with (its mirror included).
    route: Route,
    rule: Option<usize>,
    mirrors: [Option<MirrorLink>; 2],
    /// The mirrored batch being assembled, sent to the mirror at its end.
    batch_mirror: Option<mirroring::BatchMirror>,
    /// A held BEGIN just sent to the primary, for a mirror to replay too.
    begun: Option<Vec<Frame>>,
    /// Per mirror: the rest of this transaction is being dropped, and why.
    dropping: [Option<&'static str>; 2],
    /// The mirrored batches sent so far (queued or dropped) leave the
    /// session's transaction open: known as soon as a batch ends, while
    /// the client's transaction status lags behind a pipeline.
    txn_open: bool,
    /// A COPY FROM STDIN whose data is still coming: Syncs are ignored by
    /// the backend until CopyDone or CopyFail, so they end no batch here.
    copy_in: Option<CopyIn>,
    /// The latest Bind names a COPY ... FROM STDIN statement.
    bound_copy_in: bool,
    /// The open extended-protocol batch's answer (its entry number), and
    /// how many of the messages sent in it await a completion.
    open_entry: u64,
    open_requests: u32,
    /// COPY FROM STDINs started in the answer numbered `.0`.
    copies: (u64, u8),
}

impl<'a> Requests<'a> {
    pub fn new(
        shared: &'a Arc<Shared>,
        mirror_stop: CancellationToken,
        info: &'a SessionInfo,
        exp: &'a Expectations,
        cancel: &'a SessionCancel,
        first: BackendId,
        link: WriteHalf,
    ) -> Self {
        let mut links = [None, None];
        links[first.index()] = Some(link);
        Requests {
            shared,
            mirror_stop,
            loaded: shared.current(),
            info,
            exp,
            cancel,
            links,
            out: [BytesMut::with_capacity(16 * 1024), BytesMut::new()],
            current: first,
            batch: Batch::Idle,
            held: None,
            state: SessionState::default(),
            route: Route {
                primary: first,
                mirror: None,
                compare: false,
            },
            rule: None,
            mirrors: [None, None],
            batch_mirror: None,
            begun: None,
            dropping: [None; 2],
            txn_open: false,
            copy_in: None,
            bound_copy_in: false,
            open_entry: 0,
            open_requests: 0,
            copies: (u64::MAX, 0),
        }
    }

    pub async fn run(
        &mut self,
        client: &mut ReadHalf,
        buf: &mut BytesMut,
    ) -> Result<End, RelayError> {
        let max = self.loaded.config.limits.max_message_size;
        loop {
            while let Some(frame) = decode_frame(buf, max).map_err(RelayError::ClientProtocol)? {
                if frame.tag() == tag::TERMINATE {
                    for b in BackendId::ALL {
                        self.out[b.index()].extend_from_slice(frame.as_bytes());
                    }
                    self.flush().await?;
                    return Ok(End::ClientLeft);
                }
                if !self.joins_open_batch(&frame)? {
                    self.on_message(frame).await?;
                }
            }
            self.flush().await?;
            reserve_for_read(buf, 0);
            match client.read_buf(buf).await {
                Ok(0) => {}
                Ok(_) => continue,
                // A TLS client whose socket closed without a close_notify:
                // gone all the same.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
                Err(e) => return Err(RelayError::ClientIo(e)),
            }
            self.client_gone().await;
            return Ok(End::ClientLeft);
        }
    }

    async fn on_message(&mut self, frame: Frame) -> Result<(), RelayError> {
        if self.copy_in.is_some()
            && !matches!(
                frame.tag(),
                tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL
            )
        {
            self.settle_copy().await?;
        }
        match frame.tag() {
            tag::QUERY => self.on_query(frame).await,
            tag::PARSE | tag::BIND | tag::DESCRIBE | tag::EXECUTE | tag::CLOSE => {
                self.on_extended(frame).await
            }
            tag::SYNC | tag::FLUSH => self.on_sync_or_flush(frame).await,
            tag::FUNCTION_CALL => {
                // A FunctionCall is a request of its own, answered with its
                // own ReadyForQuery, on the backend the session is on.
                if let Batch::Held(_) = self.batch {
                    self.open_unrouted().await?;
                }
                if let Batch::Open(b) = self.batch {
                    match self.ends_open_batch(b, &frame, None).await? {
                        InBatch::Joined => return self.end_batch_mirror(None, None).await,
                        InBatch::Skipped => return Ok(()),
                        InBatch::Fresh => {}
                    }
                }
                let b = self.open_unrouted_idle().await?;
                self.send(b, &frame);
                self.exp.push(Expect::Relay(b, None));
                Ok(())
            }
            // COPY data follows the statement that started the COPY; anything
            // else (unknown types included) goes where the session is, and
            // that backend answers as Postgres does.
            _ => {
                let b = match self.batch {
                    Batch::Open(b) => b,
                    _ => self.current,
                };
                self.send(b, &frame);
                if matches!(frame.tag(), tag::COPY_DONE | tag::COPY_FAIL) {
                    // A simple-protocol COPY ends here, unless the Query
                    // starts another (a CopyFail fails the whole Query); an
                    // extended one at the next Sync.
                    match self.copy_in.take().filter(|c| c.simple) {
                        Some(copy) if copy.more > 0 && frame.tag() == tag::COPY_DONE => {
                            let ordinal = self.next_copy(copy.entry);
                            let next = CopyIn {
                                ordinal,
                                more: copy.more - 1,
                                ..copy
                            };
                            // Whether it begins is the backend's to say,
                            // without more from the client: should it
                            // not, the mirror gets the batch now rather
                            // than at the client's next message.
                            self.expect_copy(next, true).await?;
                        }
                        Some(copy) => {
                            self.end_batch_mirror(copy.class.as_deref(), copy.sql.as_deref())
                                .await?;
                        }
                        None => {}
                    }
                } else if self.copy_in.is_some() {
                    self.cap_copy_mirror();
                }
                Ok(())
            }
        }
    }

    // ---- simple protocol ----

    async fn on_query(&mut self, frame: Frame) -> Result<(), RelayError> {
        if let Batch::Held(_) = self.batch {
            self.open_unrouted().await?;
        }
        let sql = Query::decode(frame.body())
            .map_err(RelayError::ClientProtocol)?
            .sql_str()
            .map(Arc::<str>::from);
        // With no rule that could apply, a statement that cannot change the
        // session's state (nor start a COPY) is routed without being parsed.
        let unparsed = matches!(self.batch, Batch::Idle)
            && self.held.is_none()
            && self.shared.current().router.constant_primary().is_some()
            && sql.as_deref().is_some_and(|s| !must_parse(s));
        let class = if unparsed {
            None
        } else {
            sql.as_deref().map(|s| self.shared.classifier.classify(s))
        };
        if let (Some(class), Batch::Idle) = (&class, &self.batch) {
            if self.try_hold_transaction(class, &frame).await? {
                return Ok(());
            }
        }
        if let Batch::Open(b) = self.batch {
            match self.ends_open_batch(b, &frame, class.as_deref()).await? {
                InBatch::Joined => {
                    if let (Some(class), Some(sql)) = (&class, &sql) {
                        self.state.ran(sql, class, link_slot(b));
                    }
                    return self.after_query(class, sql, self.open_entry).await;
                }
                InBatch::Skipped => return Ok(()),
                InBatch::Fresh => {}
            }
        }
        let b = match (&self.batch, &class, &sql) {
            (_, Some(class), Some(sql)) => {
                let b = self.decide(Some((class, sql))).await?;
                self.start_batch(b).await?;
                b
            }
            _ if unparsed => {
                let b = self.decide(None).await?;
                self.start_batch(b).await?;
                b
            }
            _ => self.open_unrouted_idle().await?,
        };
        let observer = self.plan_batch(b, class.as_ref(), sql.as_ref(), false);
        self.send(b, &frame);
        let entry = self.exp.push(Expect::Relay(b, observer));
        if let (Some(class), Some(sql)) = (&class, &sql) {
            self.state.ran(sql, class, link_slot(b));
        }
        self.after_query(class, sql, entry).await
    }

    /// A Query sent: COPY ... FROM STDIN has its data follow, and the
    /// mirror's copy of the batch ends with the last COPY's CopyDone, or a
    /// CopyFail; anything else ends the mirror's batch here.
    async fn after_query(
        &mut self,
        class: Option<Arc<Classification>>,
        sql: Option<Arc<str>>,
        entry: u64,
    ) -> Result<(), RelayError> {
        let copies = class.as_deref().map_or(0, Classification::copies_in);
        if copies > 0 {
            let ordinal = self.next_copy(entry);
            let copy = CopyIn {
                simple: true,
                class,
                sql,
                entry,
                ordinal,
                requests: u32::MAX,
                more: copies - 1,
            };
            // A mirrored batch reaches its mirror when the COPY is over,
            // and in sync mode the client's ReadyForQuery waits for the
            // mirror: a COPY that fails before it begins must be known
            // over now, or that wait would outlast the client's patience.
            let synced = self.batch_mirror.is_some()
                && self.loaded.config.mirror.mode == pgshift_rules::config::MirrorMode::Sync;
            self.expect_copy(copy, synced).await
        } else {
            self.end_batch_mirror(class.as_deref(), sql.as_deref())
                .await
        }
    }

    /// A simple Query's COPY FROM STDIN may have started: its data comes
    /// next. With `settle`, whether it did is learnt now rather than at
    /// the client's next message that is not COPY data.
    async fn expect_copy(&mut self, copy: CopyIn, settle: bool) -> Result<(), RelayError> {
        self.copy_in = Some(copy);
        if settle && self.batch_mirror.is_some() {
            self.settle_copy().await?;
        }
        Ok(())
    }

    /// A simple Query or FunctionCall sent after extended-protocol
    /// messages but before their Sync runs in their implicit transaction
    /// and ends it, its ReadyForQuery closing the batch's answer; unless
    /// one of them failed, and then Postgres skips it and everything else
    /// up to the Sync, which the batch's answer ends with instead. Which
    /// of the two is known once the messages' answers are in, so this
    /// waits for them.
    async fn ends_open_batch(
        &mut self,
        b: BackendId,
        frame: &Frame,
        class: Option<&Classification>,
    ) -> Result<InBatch, RelayError> {
        // Inside a COPY, Postgres takes it for bad COPY data and ends the
        // connection.
        let seen = if self.copy_in.is_some() {
            None
        } else {
            encode::frame(&mut self.out[b.index()], tag::FLUSH, |_| {});
            self.flush().await?;
            let requests = self.open_requests.min(Progress::MAX_COMPLETIONS);
            let seen = self
                .exp
                .wait_progress(self.open_entry, |p| p.completions.settled(requests))
                .await;
            if seen.is_none_or(|p| p.ended) {
                // The batch's answer is complete after all: this is a
                // request of its own.
                self.batch = Batch::Idle;
                return Ok(InBatch::Fresh);
            }
            seen
        };
        if seen.is_none_or(|p| p.completions.failed) {
            // Sent all the same, as the client did, but not to the mirror:
            // it did not run.
            self.out[b.index()].extend_from_slice(frame.as_bytes());
            return Ok(InBatch::Skipped);
        }
        if let Some(m) = &mut self.batch_mirror {
            m.run_follows(class);
        }
        self.send(b, frame);
        self.batch = Batch::Idle;
        Ok(InBatch::Joined)
    }

    /// Whether the COPY FROM STDIN the client started still takes data.
    /// One that failed before it began (no such table, say) never does:
    /// the client sends no data, and a Sync is then a Sync. Once the COPY
    /// is known to be over, the mirror's copy of it ends with a CopyFail,
    /// which ends a COPY the mirror did begin and is ignored otherwise.
    async fn settle_copy(&mut self) -> Result<(), RelayError> {
        let Some((entry, ordinal, requests)) = self
            .copy_in
            .as_ref()
            .map(|c| (c.entry, c.ordinal, c.requests))
        else {
            return Ok(());
        };
        // Ignored inside a COPY; outside, it makes Postgres send what it
        // holds (a statement taken for a COPY FROM STDIN that is not one).
        let b = match self.batch {
            Batch::Open(b) => b,
            _ => self.current,
        };
        encode::frame(&mut self.out[b.index()], tag::FLUSH, |_| {});
        self.flush().await?;
        let seen = self
            .exp
            .wait_progress(entry, |p| {
                p.copies >= ordinal || p.completions.failed || p.completions.completed >= requests
            })
            .await;
        if seen.is_some_and(|p| p.copies == ordinal && p.copy == CopyPhase::In) {
            return Ok(());
        }
        let Some(copy) = self.copy_in.take() else {
            return Ok(());
        };
        if let Some(m) = &mut self.batch_mirror {
            m.copy_failed();
        }
        if copy.simple {
            self.end_batch_mirror(copy.class.as_deref(), copy.sql.as_deref())
                .await?;
        }
        Ok(())
    }

    /// A BEGIN outside a transaction, with any savepoint commands after
    /// it, is answered here and sent later with the statement that decides
    /// the transaction's backends; savepoint commands and a COMMIT or
    /// ROLLBACK while nothing else has come are answered here too.
    async fn try_hold_transaction(
        &mut self,
        class: &Classification,
        query: &Frame,
    ) -> Result<bool, RelayError> {
        let controls: Option<Vec<&TxnControl>> =
            class.statements.iter().map(|s| s.txn.as_ref()).collect();
        let Some(controls) = controls.filter(|c| !c.is_empty()) else {
            return Ok(false);
        };
        let begin_tag = begin_tag(query_text(query.as_bytes()));
        let Some(hold) = self.plan_hold(&controls, begin_tag).await? else {
            return Ok(false);
        };
        let mut reply = BytesMut::new();
        for t in hold.tags() {
            command_complete(&mut reply, t);
        }
        encode::ready_for_query(&mut reply, hold.status());
        self.keep_held(hold, vec![query.clone()], reply)?;
        Ok(true)
    }

    /// [`held::plan`] for this session's held transaction, when pgshift
    /// may answer for it.
    async fn plan_hold(
        &mut self,
        controls: &[&TxnControl],
        begin_tag: &'static str,
    ) -> Result<Option<held::Hold>, RelayError> {
        let held = self.held.as_ref().map(|h| h.savepoints.as_slice());
        let Some(hold) = held::plan(held, controls, begin_tag) else {
            return Ok(None);
        };
        Ok(self.may_hold().await?.then_some(hold))
    }

    /// Answers a batch pgshift holds with `reply`, and keeps its frames
    /// for the transaction's backends, or lets the transaction go when
    /// the batch ends it.
    fn keep_held(
        &mut self,
        hold: held::Hold,
        frames: Vec<Frame>,
        reply: BytesMut,
    ) -> Result<(), RelayError> {
        self.exp.push(Expect::Synth {
            bytes: reply.freeze(),
            status: hold.status(),
        });
        match hold {
            held::Hold::Open { savepoints, .. } => {
                let held = self.held.get_or_insert_with(Default::default);
                held.frames.extend(frames);
                held.savepoints = savepoints;
                Ok(())
            }
            held::Hold::Close(_) => self.release_held(&frames),
        }
    }

    /// Whether pgshift may answer for the transaction: only a session
    /// known to be idle can begin holding one.
    async fn may_hold(&mut self) -> Result<bool, RelayError> {
        if self.held.is_some() {
            return Ok(true);
        }
        if !self.exp.is_empty() {
            self.flush().await?;
            self.exp.wait_empty().await;
        }
        Ok(self.exp.visible_status() == TransactionStatus::Idle)
    }

    /// The held transaction ended without reaching a backend. Statements
    /// parsed or closed in it (and in `also`, the batch ending it) are so
    /// for the client; the backends follow with their next catch-up.
    fn release_held(&mut self, also: &[Frame]) -> Result<(), RelayError> {
        let held = self.held.take().unwrap_or_default();
        for f in held.frames.iter().chain(also) {
            match f.tag() {
                tag::PARSE => {
                    let text = self.parse_text(f)?;
                    self.state.parsed_nowhere(parse_name(f), f.as_bytes(), text);
                }
                tag::CLOSE => {
                    if let Some(name) = closed_statement(f) {
                        self.state.closed_nowhere(name);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The extended-protocol form of [`Self::try_hold_transaction`], for a
    /// batch ending with Sync. Gives the frames back when it is not such a
    /// batch.
    async fn try_hold_extended(
        &mut self,
        frames: Vec<Frame>,
    ) -> Result<Option<Vec<Frame>>, RelayError> {
        let Some((runs, begin_tag)) = self.batch_txn(&frames)? else {
            return Ok(Some(frames));
        };
        let controls: Vec<&TxnControl> = runs.iter().collect();
        let Some(hold) = self.plan_hold(&controls, begin_tag).await? else {
            return Ok(Some(frames));
        };
        let mut reply = BytesMut::new();
        let mut tags = hold.tags().iter();
        for f in &frames {
            let t = if f.tag() == tag::EXECUTE {
                tags.next().copied().unwrap_or_default()
            } else {
                ""
            };
            synth_reply(&mut reply, f, t, hold.status());
        }
        self.keep_held(hold, frames, reply)?;
        Ok(None)
    }

    /// When every statement an extended batch parses or runs is
    /// transaction control, what each Execute runs (in order; none when it
    /// only prepares) and the command tag a BEGIN among them would report.
    fn batch_txn(
        &self,
        frames: &[Frame],
    ) -> Result<Option<(Vec<TxnControl>, &'static str)>, RelayError> {
        let mut parsed: Vec<(&[u8], Arc<Classification>, Arc<str>)> = Vec::new();
        let mut runs = Vec::new();
        let mut tag_of_begin = "BEGIN";
        let mut bound_txn: Option<TxnControl> = None;
        for f in frames {
            match f.tag() {
                tag::PARSE => {
                    let (class, Some(sql)) = self.parse_text(f)? else {
                        return Ok(None);
                    };
                    if only_txn(&class).is_none() {
                        return Ok(None);
                    }
                    parsed.push((parse_name(f), class, sql));
                }
                tag::BIND => {
                    let b = Bind::decode(f.body()).map_err(RelayError::ClientProtocol)?;
                    let known = parsed
                        .iter()
                        .rev()
                        .find(|(n, _, _)| *n == b.statement)
                        .map(|(_, c, s)| (Arc::clone(c), Arc::clone(s)));
                    let known = match known {
                        Some(k) => Some(k),
                        None => self.held_statement(b.statement)?,
                    };
                    let known = known.or_else(|| {
                        self.state.statement(b.statement).map(|p| {
                            let sql = p.sql.clone().unwrap_or_else(|| Arc::from(""));
                            (Arc::clone(&p.class), sql)
                        })
                    });
                    let Some((class, sql)) = known else {
                        return Ok(None);
                    };
                    let Some(txn) = only_txn(&class).cloned() else {
                        return Ok(None);
                    };
                    if txn == TxnControl::Begin {
                        tag_of_begin = begin_tag(sql.as_bytes());
                    }
                    bound_txn = Some(txn);
                }
                tag::EXECUTE => {
                    let Some(txn) = &bound_txn else {
                        return Ok(None);
                    };
                    runs.push(txn.clone());
                }
                // tokio-postgres closes each statement it prepared for one
                // run; closing one that does not exist is no error.
                tag::DESCRIBE | tag::CLOSE | tag::SYNC => {}
                _ => return Ok(None),
            }
        }
        Ok(Some((runs, tag_of_begin)))
    }

    // ---- extended protocol ----

    /// An extended-protocol message inside a batch already routed, sent on
    /// where the batch goes; `false` when the message is not that. Most
    /// messages are, and are handled here without an async call.
    fn joins_open_batch(&mut self, frame: &Frame) -> Result<bool, RelayError> {
        let Batch::Open(b) = self.batch else {
            return Ok(false);
        };
        let extended = matches!(
            frame.tag(),
            tag::PARSE | tag::BIND | tag::DESCRIBE | tag::EXECUTE | tag::CLOSE
        );
        // Inside a COPY the message is `on_message`'s to settle first.
        if !extended || self.copy_in.is_some() {
            return Ok(false);
        }
        self.join_batch(frame, b)?;
        Ok(true)
    }

    /// Sends a message of the open batch on to `b`, noting what it changes.
    fn join_batch(&mut self, frame: &Frame, b: BackendId) -> Result<(), RelayError> {
        self.note_extended(frame, b)?;
        self.send(b, frame);
        Ok(())
    }

    async fn on_extended(&mut self, frame: Frame) -> Result<(), RelayError> {
        if let Batch::Open(b) = self.batch {
            return self.join_batch(&frame, b);
        }
        if let Some((class, sql)) = self.deciding(&frame)? {
            let b = self.decide(Some((&class, &sql))).await?;
            self.start_batch(b).await?;
            let observer = self.plan_batch(b, Some(&class), Some(&sql), false);
            self.push_open(b, observer);
            self.send_held(b)?;
            if frame.tag() == tag::PARSE {
                self.note_parse(&frame, b, (class, Some(sql)));
            } else {
                self.note_extended(&frame, b)?;
            }
            self.send(b, &frame);
            self.batch = Batch::Open(b);
            return Ok(());
        }
        match &mut self.batch {
            Batch::Held(frames) => frames.push(frame),
            _ => self.batch = Batch::Held(vec![frame]),
        }
        if let Batch::Held(frames) = &self.batch {
            if frames.iter().map(Frame::len).sum::<usize>() > MAX_HELD_BYTES {
                self.open_unrouted().await?;
            }
        }
        Ok(())
    }

    /// A statement prepared by a batch that is held itself (a driver that
    /// prepares each statement before running it): its class and text.
    fn held_statement(&self, name: &[u8]) -> Result<Option<Deciding>, RelayError> {
        let parse = self
            .held
            .iter()
            .flat_map(|h| h.frames.iter().rev())
            .find(|f| f.tag() == tag::PARSE && parse_name(f) == name);
        Ok(match parse.map(|f| self.parse_text(f)).transpose()? {
            Some((class, Some(sql))) => Some((class, sql)),
            _ => None,
        })
    }

    /// The statement that decides a batch's backend: a Parse's SQL, or the
    /// statement a Bind names. Transaction control alone decides nothing,
    /// but for two-phase commit's, whose gid says where it belongs (and
    /// whose answer says where a gid is).
    fn deciding(&self, frame: &Frame) -> Result<Option<Deciding>, RelayError> {
        let (class, sql) = match frame.tag() {
            tag::PARSE => match self.parse_text(frame)? {
                (class, Some(sql)) => (class, sql),
                (_, None) => return Ok(None),
            },
            tag::BIND => {
                let b = Bind::decode(frame.body()).map_err(RelayError::ClientProtocol)?;
                let Some(p) = self.state.statement(b.statement) else {
                    return Ok(None);
                };
                let sql = p.sql.clone().unwrap_or_else(|| Arc::from(""));
                (Arc::clone(&p.class), sql)
            }
            _ => return Ok(None),
        };
        let decides = class.first_routable().is_some() || TwoPhase::of(&class).is_some();
        Ok(decides.then_some((class, sql)))
    }

    /// What a Parse prepares: as stored when the session already has this
    /// very Parse (drivers re-send their unnamed statement's in every
    /// transaction), else classified now.
    pub(super) fn parse_text(&self, frame: &Frame) -> Result<ParseText, RelayError> {
        let p = Parse::decode(frame.body()).map_err(RelayError::ClientProtocol)?;
        if let Some(known) = self.state.same_parse(p.name, frame.as_bytes()) {
            return Ok((Arc::clone(&known.class), known.sql.clone()));
        }
        Ok(match p.sql_str() {
            Some(sql) => (self.shared.classifier.classify(sql), Some(Arc::from(sql))),
            None => (self.shared.classifier.classify(""), None),
        })
    }

    fn note_parse(&mut self, frame: &Frame, b: BackendId, text: ParseText) {
        self.state
            .parsed(parse_name(frame), frame.as_bytes(), text, link_slot(b));
    }

    /// Bookkeeping for a message about to go to `b`.
    fn note_extended(&mut self, frame: &Frame, b: BackendId) -> Result<(), RelayError> {
        match frame.tag() {
            tag::PARSE => {
                let text = self.parse_text(frame)?;
                self.note_parse(frame, b, text);
            }
            // Executing a COPY ... FROM STDIN puts the backend in copy-in
            // mode, where it ignores Sync until the data is done.
            tag::EXECUTE if self.bound_copy_in => {
                let ordinal = self.next_copy(self.open_entry);
                self.copy_in = Some(CopyIn {
                    simple: false,
                    class: None,
                    sql: None,
                    entry: self.open_entry,
                    ordinal,
                    // This Execute, counted when it is sent.
                    requests: (self.open_requests + 1).min(Progress::MAX_COMPLETIONS),
                    more: 0,
                });
            }
            tag::BIND => {
                // Executing a statement with session-wide effects (a SET sent
                // through the extended protocol) is recorded like a Query.
                let bind = Bind::decode(frame.body()).map_err(RelayError::ClientProtocol)?;
                let p = self.state.statement(bind.statement);
                self.bound_copy_in = p.is_some_and(|p| p.copy_in);
                let session = p
                    .filter(|p| p.changes_session())
                    .and_then(|p| Some((Arc::clone(&p.class), p.sql.clone()?)));
                if let Some((class, sql)) = session {
                    self.state.ran(&sql, &class, link_slot(b));
                }
            }
            tag::CLOSE => {
                if let Some(name) = closed_statement(frame) {
                    let also = self.mirror_of_batch().map(mirror_slot);
                    self.state.closed(name, link_slot(b), also);
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn on_sync_or_flush(&mut self, frame: Frame) -> Result<(), RelayError> {
        if self.copy_in.is_some() {
            // Postgres ignores both until the COPY's data is done.
            let b = match self.batch {
                Batch::Open(b) => b,
                _ => self.current,
            };
            self.send(b, &frame);
            return Ok(());
        }
        if frame.tag() == tag::FLUSH && matches!(self.batch, Batch::Idle) {
            // Nothing unsynced is outstanding, and Postgres answers a Flush
            // with no ReadyForQuery: opening a batch here would expect one,
            // and every later answer would be taken for the one before it
            // (psycopg sends Sync then Flush at each pipeline sync).
            if self.links[self.current.index()].is_some() {
                self.send(self.current, &frame);
            }
            return Ok(());
        }
        if frame.tag() == tag::SYNC {
            if let Batch::Held(frames) = &mut self.batch {
                frames.push(frame);
                let frames = std::mem::take(frames);
                self.batch = Batch::Idle;
                return match self.try_hold_extended(frames).await? {
                    None => Ok(()),
                    Some(mut frames) => {
                        let sync = frames.pop();
                        self.batch = Batch::Held(frames);
                        let b = self.open_unrouted().await?;
                        if let Some(sync) = sync {
                            self.send(b, &sync);
                        }
                        self.end_batch_mirror(None, None).await?;
                        self.batch = Batch::Idle;
                        Ok(())
                    }
                };
            }
        }
        let b = match self.batch {
            Batch::Open(b) => b,
            _ => self.open_unrouted().await?,
        };
        self.send(b, &frame);
        self.batch = if frame.tag() == tag::SYNC {
            self.end_batch_mirror(None, None).await?;
            Batch::Idle
        } else {
            Batch::Open(b)
        };
        Ok(())
    }

    /// Opens the batch (with whatever is held) where the session already is.
    async fn open_unrouted(&mut self) -> Result<BackendId, RelayError> {
        if let Batch::Open(b) = self.batch {
            return Ok(b);
        }
        let b = self.open_unrouted_idle().await?;
        let observer = self.plan_unrouted_batch(b);
        self.push_open(b, observer);
        self.send_held(b)?;
        self.batch = Batch::Open(b);
        Ok(b)
    }

    async fn open_unrouted_idle(&mut self) -> Result<BackendId, RelayError> {
        let b = self.current;
        self.start_batch(b).await?;
        Ok(b)
    }

    /// The ordinal of a COPY starting in the answer numbered `entry`.
    fn next_copy(&mut self, entry: u64) -> u8 {
        if self.copies.0 != entry {
            self.copies = (entry, 0);
        }
        self.copies.1 = (self.copies.1 + 1).min(Progress::MAX_COPIES);
        self.copies.1
    }

    /// Queues the answer of an extended-protocol batch opening on `b`.
    fn push_open(&mut self, b: BackendId, observer: Option<Box<Observer>>) {
        self.open_entry = self.exp.push(Expect::Relay(b, observer));
        self.open_requests = 0;
    }

    fn send_held(&mut self, b: BackendId) -> Result<(), RelayError> {
        if let Batch::Held(frames) = std::mem::replace(&mut self.batch, Batch::Open(b)) {
            for f in frames {
                self.join_batch(&f, b)?;
            }
        }
        Ok(())
    }

    // ---- the routing steps ----

    /// Whether the session is inside a transaction, counting what it sent
    /// and has not had answered yet. Once nothing is outstanding the
    /// client's transaction status is exact and corrects the estimate (a
    /// text whose BEGIN never ran, behind an error, does not open one).
    fn in_transaction(&mut self) -> bool {
        let visible = self.exp.visible_status() != TransactionStatus::Idle;
        if self.exp.is_empty() {
            self.txn_open = visible;
        }
        self.txn_open || visible
    }

    /// Which backend serves a batch whose deciding statement is `class`.
    /// `None` when the statement was not classified because no rule can
    /// apply (see `on_query`).
    async fn decide(
        &mut self,
        statement: Option<(&Classification, &str)>,
    ) -> Result<BackendId, RelayError> {
        // Looked up once, however often the loop below goes round.
        let mut second_phase = None;
        loop {
            let pinned = self.held.is_none() && self.in_transaction();
            if pinned {
                return Ok(self.current);
            }
            // Outside a transaction a new configuration takes effect.
            self.shared.refresh(&mut self.loaded);
            let routable = statement.and_then(|(class, sql)| Some((class.first_routable()?, sql)));
            let plain = |primary| Route {
                primary,
                mirror: None,
                compare: false,
            };
            let (mut route, rule) = match (routable, self.loaded.router.constant_primary()) {
                (Some((stmt, sql)), _) => {
                    let text = sql.get(stmt.span.clone()).unwrap_or(sql);
                    let d = self.loaded.router.route(stmt, text, &self.info.context());
                    (d.route, d.rule)
                }
                (None, Some(constant)) if statement.is_none() => (plain(constant), None),
                (None, _) => (plain(self.current), None),
            };
            if let Some((class, _)) = statement.filter(|_| routable.is_none()) {
                if second_phase.is_none() {
                    let (shared, loaded) = (&self.shared, &self.loaded);
                    let span = &self.info.span;
                    second_phase = Some(second_phase_route(shared, loaded, span, class).await);
                }
                if let Some(Some(to)) = second_phase {
                    route = to;
                }
            }
            if let Some((stmt, _)) = routable {
                route.primary = self.read_your_writes(route.primary, stmt.kind).await?;
            }
            if let Some((class, sql)) = statement {
                self.avoid_refusal(&mut route, class, sql);
            }
            let target = route.primary;
            if target == self.current || self.exp.is_empty() {
                self.route = route;
                self.rule = rule;
                return Ok(target);
            }
            // Switching backends: only once every earlier answer is in, so
            // the transaction status above is the real one.
            self.flush().await?;
            self.exp.wait_empty().await;
        }
    }

    /// A statement the primary's rewriter refuses goes to the other
    /// backend instead, unmirrored, when that one takes it as written; else
    /// it stays, and the primary answers with the refusal.
    fn avoid_refusal(&self, route: &mut Route, class: &Classification, sql: &str) {
        let rw = |b: BackendId| self.loaded.rewriters[b.index()].as_deref();
        if !rewriting::refuses(rw(route.primary), sql) {
            return;
        }
        let other = route.primary.other();
        if !rewriting::refuses(rw(other), sql) {
            self.shared
                .digests
                .entry(class.fingerprint, &class.normalized, class.kind())
                .record_rewrite_refused();
            tracing::debug!(parent: &self.info.span, from = %route.primary, to = %other, "statement refused by the rewriter, routed to the other backend");
            route.primary = other;
            route.mirror = None;
            route.compare = false;
        }
    }

    /// Connects `b` if needed, catches it up on session state and a held
    /// BEGIN, and makes it the session's current backend.
    async fn start_batch(&mut self, b: BackendId) -> Result<(), RelayError> {
        self.exp.wait_room().await;
        if self.links[b.index()].is_none() {
            self.connect(b).await?;
        }
        let catchup = self.state.catch_up(link_slot(b));
        if !catchup.is_empty() {
            let rw = self.loaded.rewriters[b.index()].as_deref();
            let out = &mut self.out[b.index()];
            for sql in &catchup.sql {
                rewriting::push_query(rw, b, sql, out);
                self.exp.push(Expect::Swallow {
                    backend: b,
                    what: "session state",
                });
            }
            if !catchup.closes.is_empty() || !catchup.parses.is_empty() {
                for name in &catchup.closes {
                    encode::frame(out, tag::CLOSE, |o| {
                        o.extend_from_slice(b"S");
                        o.extend_from_slice(name);
                        o.extend_from_slice(&[0]);
                    });
                }
                for parse in &catchup.parses {
                    // A refused statement was counted when the client sent it.
                    let _ = rewriting::push_frame(rw, b, parse, out);
                }
                encode::sync(out);
                self.exp.push(Expect::Swallow {
                    backend: b,
                    what: "prepared statements",
                });
            }
        }
        if let Some(held) = self.held.take() {
            // The held frames go to the route's mirror too (with the
            // batch they open), which must have the statements they run
            // and does not need their Closes again.
            let mirror = self.catch_up_mirror_before_held(b);
            for f in &held.frames {
                match closed_statement(f) {
                    Some(name) => self
                        .state
                        .closed(name, link_slot(b), mirror.map(mirror_slot)),
                    None => self.note_extended(f, b)?,
                }
                self.send(b, f);
            }
            for _ in 0..held::answers(&held.frames) {
                self.exp.push(Expect::Swallow {
                    backend: b,
                    what: "BEGIN",
                });
            }
            self.begun = Some(held.frames);
        }
        self.current = b;
        Ok(())
    }

    async fn connect(&mut self, b: BackendId) -> Result<(), RelayError> {
        let limits = &self.loaded.config.limits;
        let opts = ConnectOptions::for_session(limits, self.shared);
        let target = self.loaded.config.backends.get(b);
        let conn = backend::connect(b, target, &self.info.startup_params, &opts)
            .await
            .map_err(RelayError::Connect)?;
        self.cancel.set(b, conn.cancel.clone());
        let (reader, writer) = conn.stream.split();
        self.exp.push(Expect::Attach {
            backend: b,
            reader,
            leftover: conn.leftover,
        });
        self.links[b.index()] = Some(writer);
        tracing::debug!(parent: &self.info.span, backend = %b, "opened a second backend connection for this session");
        Ok(())
    }

    /// The client closed its socket: each backend's write side is shut, so
    /// that it answers what it was sent and then sees the end of the
    /// stream, as it would with the client connected directly. A COPY or
    /// an unsynced batch the client abandoned then ends (rolled back)
    /// rather than leaving its answer owed forever.
    async fn client_gone(&mut self) {
        for link in self.links.iter_mut().flatten() {
            let _ = link.shutdown().await;
        }
    }

    /// Says goodbye to every backend, as a client leaving Postgres would.
    pub async fn terminate(&mut self) {
        let mut bye = BytesMut::new();
        encode::terminate(&mut bye);
        for link in self.links.iter_mut().flatten() {
            let _ = link.write_all(&bye).await;
            let _ = link.shutdown().await;
        }
    }

    fn shared_arc(&self) -> &Arc<Shared> {
        self.shared
    }

    fn send(&mut self, b: BackendId, frame: &Frame) {
        self.open_requests += u32::from(awaits_completion(frame.tag()));
        let rw = self.loaded.rewriters[b.index()].as_deref();
        if rewriting::push_frame(rw, b, frame.as_bytes(), &mut self.out[b.index()]) {
            self.count_refusal(frame.as_bytes());
        }
        if let Some(m) = &mut self.batch_mirror {
            m.add(frame);
        }
    }

    /// A statement refused by a backend's rewriter, counted on its digest.
    fn count_refusal(&self, frame: &[u8]) {
        if let Some(sql) = rewriting::frame_sql(frame) {
            let class = self.shared.classifier.classify(sql);
            self.shared
                .digests
                .entry(class.fingerprint, &class.normalized, class.kind())
                .record_rewrite_refused();
        }
    }

    /// Writes what each backend has pending. Called after every read of
    /// the client's socket and before waiting on any answer.
    async fn flush(&mut self) -> Result<(), RelayError> {
        for &b in BackendId::ALL.iter() {
            let i = b.index();
            if self.out[i].is_empty() {
                continue;
            }
            let Some(link) = self.links[i].as_mut() else {
                self.out[i].clear();
                continue;
            };
            link.write_all(&self.out[i])
                .await
                .map_err(|e| RelayError::BackendIo(b, e))?;
            link.flush()
                .await
                .map_err(|e| RelayError::BackendIo(b, e))?;
            self.out[i].clear();
        }
        Ok(())
    }
}

/// The statement name of a Parse already decoded once (by
/// [`Requests::parse_text`]): the body's first string.
fn parse_name(parse: &Frame) -> &[u8] {
    let body = parse.body();
    &body[..body.iter().position(|&c| c == 0).unwrap_or(0)]
}

/// The statement that decides a batch's backend, and its text.
type Deciding = (Arc<Classification>, Arc<str>);

/// A COPY whose data the client sends next.
struct CopyIn {
    /// Started by a simple Query (ends at CopyDone/CopyFail) rather than
    /// by Execute (ends at the Sync after them).
    simple: bool,
    class: Option<Arc<Classification>>,
    sql: Option<Arc<str>>,
    /// The answer the COPY's is part of.
    entry: u64,
    /// Which COPY of that answer it is, counting from 1.
    ordinal: u8,
    /// Its Execute is the batch's request number this (from 1): once that
    /// many are complete with no CopyInResponse, the statement was no
    /// COPY FROM STDIN after all.
    requests: u32,
    /// COPY FROM STDINs of the same simple Query after this one.
    more: usize,
}

/// What a Query or FunctionCall inside an unsynced batch turned out to be.
enum InBatch {
    /// It runs, ending the batch.
    Joined,
    /// Postgres skips it: the batch goes on to its Sync.
    Skipped,
    /// The batch's answer was complete already: a request of its own.
    Fresh,
}

fn command_complete(out: &mut BytesMut, command_tag: &str) {
    encode::frame(out, pgshift_protocol::backend::tag::COMMAND_COMPLETE, |b| {
        b.extend_from_slice(command_tag.as_bytes());
        b.extend_from_slice(&[0]);
    });
}

/// What a backend would answer to one message of a transaction-control
/// batch: these statements take no parameters and return no rows.
fn synth_reply(out: &mut BytesMut, f: &Frame, command_tag: &str, status: TransactionStatus) {
    use pgshift_protocol::backend::tag as b;
    match f.tag() {
        tag::PARSE => encode::frame(out, b::PARSE_COMPLETE, |_| {}),
        tag::BIND => encode::frame(out, b::BIND_COMPLETE, |_| {}),
        tag::CLOSE => encode::frame(out, b::CLOSE_COMPLETE, |_| {}),
        tag::DESCRIBE => {
            if f.body().first() == Some(&b'S') {
                encode::frame(out, b::PARAMETER_DESCRIPTION, |o| {
                    o.extend_from_slice(&0i16.to_be_bytes())
                });
            }
            encode::frame(out, b::NO_DATA, |_| {});
        }
        tag::EXECUTE => command_complete(out, command_tag),
        tag::SYNC => encode::ready_for_query(out, status),
        _ => {}
    }
}

/// The transaction control a text is, when it is one statement of it.
fn only_txn(class: &Classification) -> Option<&TxnControl> {
    match class.statements.as_slice() {
        [only] => only.txn.as_ref(),
        _ => None,
    }
}

/// The prepared statement a Close message closes (not a portal).
fn closed_statement(frame: &Frame) -> Option<&[u8]> {
    match frontend::FrontendMessage::parse(frame) {
        Ok(frontend::FrontendMessage::Close(t)) if t.kind == TargetKind::Statement => Some(t.name),
        _ => None,
    }
}

/// Where a COMMIT or ROLLBACK PREPARED goes: to the backends that
/// prepared the transaction, wherever the session is now. Those this
/// pgshift prepared it on it remembers; otherwise both backends are
/// asked whether they hold it. The default primary answers when both
/// do. `None` when no backend is known to hold it: the statement stays
/// where the session is, and Postgres says what it says.
async fn second_phase_route(
    shared: &Shared,
    loaded: &Loaded,
    span: &tracing::Span,
    class: &Classification,
) -> Option<Route> {
    let Some(TwoPhase::Finish(gid)) = TwoPhase::of(class) else {
        return None;
    };
    let to = |primary, mirror| Route {
        primary,
        mirror,
        compare: false,
    };
    if let Some(at) = shared.prepared.find(&gid) {
        return Some(to(at.primary, at.mirror.map(|(m, _)| m)));
    }
    let config = &loaded.config;
    let tls = shared.backend_tls.as_ref();
    let holders = shared.prepared.holders(config, tls, &gid).await;
    let router = &loaded.router;
    let home = router
        .constant_primary()
        .unwrap_or(router.defaults().primary);
    let route = match holders {
        [true, true] => to(home, Some(home.other())),
        [true, false] => to(BackendId::Old, None),
        [false, true] => to(BackendId::New, None),
        [false, false] => return None,
    };
    tracing::info!(parent: span, gid = %gid, primary = %route.primary, mirror = ?route.mirror, "second phase of a transaction prepared elsewhere, sent where it was found");
    Some(route)
}

fn query_text(query_frame: &[u8]) -> &[u8] {
    query_frame
        .get(pgshift_protocol::HEADER_LEN..)
        .unwrap_or_default()
}

/// The command tag a BEGIN spelled as in `text` reports.
fn begin_tag(text: &[u8]) -> &'static str {
    if starts_with_word(text, "start") {
        "START TRANSACTION"
    } else {
        "BEGIN"
    }
}

fn starts_with_word(text: &[u8], word: &str) -> bool {
    let t = text.trim_ascii_start();
    t.len() >= word.len() && t[..word.len()].eq_ignore_ascii_case(word.as_bytes())
}
