//! The response side: backend answers to the client, in request order.
//!
//! Works through the expectations the request side queued. For a Relay it
//! forwards the backend's bytes as they arrive, stepping over message
//! headers (decoding only ReadyForQuery), and writes each read's worth in
//! one write. Between requests it still listens to every backend, so a
//! NOTIFY or a NOTICE reaches the client while the session is idle.

use bytes::{Buf, BytesMut};
use pgshift_protocol::backend::{self, tag, ErrorFields};
use pgshift_protocol::scan::{Step, StreamScanner};
use pgshift_protocol::HEADER_LEN;
use pgshift_rules::config::BackendId;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::expect::{Expect, Expectations, Head, Progress};
use super::observe::Observer;
use super::relay::{End, RelayError};
use crate::bounded::Bound;
use crate::stream::{ReadHalf, WriteHalf};

/// How long a client waits for the mirror in `mirror.mode: sync` before it
/// gets its answer anyway (with an error when failures are returned). Every
/// statement waits, hence one [`Bound`] per session rather than a timer each.
const SYNC_MIRROR_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads grow a buffer in steps of at least this much.
const READ_CHUNK: usize = 64 * 1024;

struct Reader {
    half: ReadHalf,
    buf: BytesMut,
    scanner: StreamScanner,
}

pub struct Responses<'a> {
    client: &'a mut WriteHalf,
    exp: &'a Expectations,
    readers: [Option<Reader>; 2],
    max_message_size: usize,
    span: tracing::Span,
    sync_wait: Bound,
    /// The number of the entry being worked on (see [`Expectations::push`]).
    entry: u64,
}

impl<'a> Responses<'a> {
    pub fn new(
        client: &'a mut WriteHalf,
        exp: &'a Expectations,
        max_message_size: usize,
        span: tracing::Span,
    ) -> Self {
        Responses {
            client,
            exp,
            readers: [None, None],
            max_message_size,
            span,
            sync_wait: Bound::new(SYNC_MIRROR_WAIT),
            entry: 0,
        }
    }

    pub fn attach(&mut self, backend: BackendId, half: ReadHalf, leftover: BytesMut) {
        self.readers[backend.index()] = Some(Reader {
            half,
            buf: leftover,
            scanner: StreamScanner::new(self.max_message_size),
        });
    }

    pub async fn run(&mut self) -> Result<End, RelayError> {
        loop {
            match self.exp.head() {
                None => {
                    self.idle().await?;
                    continue;
                }
                Some(Head::Owned(Expect::Attach {
                    backend,
                    reader,
                    leftover,
                })) => self.attach(backend, reader, leftover),
                Some(Head::Owned(Expect::Synth { bytes, status })) => {
                    write_out(self.client, &bytes)
                        .await
                        .map_err(RelayError::ClientIo)?;
                    self.exp.set_visible_status(status);
                    self.exp.notify_progress();
                }
                Some(Head::Owned(_)) => {}
                Some(Head::Relay(b, observer)) => {
                    self.answer(b, None, observer).await?;
                    self.exp.pop();
                }
                Some(Head::Swallow(b, what)) => {
                    self.answer(b, Some(what), None).await?;
                    self.exp.pop();
                }
            }
            self.entry += 1;
        }
    }

    /// One answer from `backend`, up to its ReadyForQuery: relayed to the
    /// client, or dropped when `swallow` names what pgshift itself asked.
    async fn answer(
        &mut self,
        backend: BackendId,
        swallow: Option<&'static str>,
        mut observer: Option<Box<Observer>>,
    ) -> Result<(), RelayError> {
        let Some(r) = self.readers[backend.index()].as_mut() else {
            return Err(RelayError::Internal(
                "answer expected from a backend that is not connected",
            ));
        };
        // A compared answer's rows are hashed, so they must be seen whole.
        r.scanner
            .set_streaming(!observer.as_ref().is_some_and(|o| o.needs_rows()));
        // Counted for every relayed answer, since the request side learns
        // only later whether it needs to know (a Query before the Sync).
        let mut progress = Progress::default();
        loop {
            let mut at = 0;
            let mut rfq_at = 0;
            let mut ready = None;
            loop {
                match r
                    .scanner
                    .step(&r.buf[at..])
                    .map_err(|e| RelayError::BackendProtocol(backend, e))?
                {
                    Step::Frame(h) => {
                        let body = &r.buf[at + HEADER_LEN..at + h.frame_len];
                        if let Some(o) = observer.as_mut() {
                            o.frame(h.tag, body);
                        }
                        progress.observe(h.tag);
                        match h.tag {
                            tag::READY_FOR_QUERY => {
                                ready = Some(
                                    backend::ready_for_query(body)
                                        .map_err(|e| RelayError::BackendProtocol(backend, e))?,
                                );
                                rfq_at = at;
                                at += h.frame_len;
                                break;
                            }
                            tag::ERROR_RESPONSE if swallow.is_some() => {
                                log_replay_error(&self.span, backend, swallow, body)
                            }
                            _ => {}
                        }
                        at += h.frame_len;
                    }
                    Step::Pass(n) => at += n,
                    Step::NeedMore => break,
                }
            }
            // Before any wait for the mirror: the request side may need to
            // know how this went to let the mirror's copy go.
            if swallow.is_none() {
                self.exp.publish(self.entry, progress);
            }
            let sync =
                ready.is_some() && observer.as_ref().is_some_and(|o| o.mirror_done.is_some());
            if sync {
                // Sync mirroring: everything but the ReadyForQuery now, the
                // ReadyForQuery once the mirror is done (with its error
                // first, when a mirror-only failure fails the client).
                write_out(self.client, &r.buf[..rfq_at])
                    .await
                    .map_err(RelayError::ClientIo)?;
                if let Some((o, (done, fail))) = observer
                    .take()
                    .and_then(|mut o| o.mirror_done.take().map(|d| (o, d)))
                {
                    let primary_failed = o.primary_failed();
                    o.finish();
                    let error = match self.sync_wait.wait(done).await {
                        Ok(Ok(result)) => result.error,
                        Ok(Err(_)) => Some((
                            "08006".to_owned(),
                            "the mirror did not apply the statement".to_owned(),
                        )),
                        Err(_) => Some((
                            "57014".to_owned(),
                            "timed out waiting for the mirror".to_owned(),
                        )),
                    };
                    if let (true, false, Some((code, message))) = (fail, primary_failed, error) {
                        let mut e = BytesMut::new();
                        let other = backend.other();
                        pgshift_protocol::encode::error_response(
                            &mut e,
                            "ERROR",
                            &code,
                            &format!("mirror backend {other}: {message}"),
                        );
                        write_out(self.client, &e)
                            .await
                            .map_err(RelayError::ClientIo)?;
                    }
                }
                write_out(self.client, &r.buf[rfq_at..at])
                    .await
                    .map_err(RelayError::ClientIo)?;
            } else if swallow.is_none() && at > 0 {
                write_out(self.client, &r.buf[..at])
                    .await
                    .map_err(RelayError::ClientIo)?;
            }
            r.buf.advance(at);
            if let Some(status) = ready {
                if let Some(o) = observer.take() {
                    o.finish();
                }
                if swallow.is_none() {
                    self.exp.set_visible_status(status);
                }
                return Ok(());
            }
            let shortfall = r.scanner.shortfall(&r.buf);
            reserve_for_read(&mut r.buf, shortfall);
            if r.half
                .read_buf(&mut r.buf)
                .await
                .map_err(|e| RelayError::BackendIo(backend, e))?
                == 0
            {
                return Err(RelayError::BackendClosed(backend));
            }
        }
    }

    /// Nothing is owed: wait for the next request, and meanwhile pass on
    /// what backends say unprompted (notifications, notices, parameter
    /// changes, a FATAL before a backend goes away).
    async fn idle(&mut self) -> Result<(), RelayError> {
        let exp = self.exp;
        let [old, new] = &mut self.readers;
        // Biased: a random branch order costs a random number per wake-up.
        let which = tokio::select! {
            biased;
            _ = exp.owed() => return Ok(()),
            r = read_more(old) => (BackendId::Old, r),
            r = read_more(new) => (BackendId::New, r),
        };
        match which {
            (b, Ok(0)) => {
                // Whatever it said last (a FATAL, typically) goes to the client.
                self.forward_unprompted(b).await?;
                Err(RelayError::BackendClosed(b))
            }
            (b, Ok(_)) => {
                // A request may have been queued while we were reading: if
                // so these bytes may be its answer, handled by the loop.
                if exp.is_empty() {
                    self.forward_unprompted(b).await?;
                }
                Ok(())
            }
            (b, Err(e)) => Err(RelayError::BackendIo(b, e)),
        }
    }

    async fn forward_unprompted(&mut self, backend: BackendId) -> Result<(), RelayError> {
        let Some(r) = self.readers[backend.index()].as_mut() else {
            return Ok(());
        };
        let mut at = 0;
        while let Some(h) = pgshift_protocol::peek_header(&r.buf[at..], self.max_message_size)
            .map_err(|e| RelayError::BackendProtocol(backend, e))?
        {
            if r.buf.len() - at < h.frame_len {
                break;
            }
            match h.tag {
                tag::NOTIFICATION_RESPONSE
                | tag::NOTICE_RESPONSE
                | tag::PARAMETER_STATUS
                | tag::ERROR_RESPONSE => {}
                other => {
                    return Err(RelayError::Unprompted {
                        backend,
                        tag: other,
                    })
                }
            }
            at += h.frame_len;
        }
        if at > 0 {
            write_out(self.client, &r.buf[..at])
                .await
                .map_err(RelayError::ClientIo)?;
            r.buf.advance(at);
        }
        Ok(())
    }
}

async fn read_more(r: &mut Option<Reader>) -> std::io::Result<usize> {
    match r {
        Some(r) => {
            reserve_for_read(&mut r.buf, 0);
            r.half.read_buf(&mut r.buf).await
        }
        None => std::future::pending().await,
    }
}

fn log_replay_error(
    span: &tracing::Span,
    backend: BackendId,
    what: Option<&'static str>,
    body: &[u8],
) {
    let f = ErrorFields::new(body);
    let text = |v: Option<&[u8]>| {
        v.map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    tracing::warn!(
        parent: span,
        %backend,
        replay = what.unwrap_or(""),
        sqlstate = %text(f.sqlstate()),
        error = %text(f.message()),
        "replaying session state failed on this backend"
    );
}

pub async fn write_out<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

/// Room for the next read: at least a chunk, and a large announced frame
/// at once (its size was checked against the limit with its header).
pub fn reserve_for_read(buf: &mut BytesMut, shortfall: usize) {
    let want = shortfall.clamp(READ_CHUNK, 16 * READ_CHUNK);
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
}
