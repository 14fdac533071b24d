//! The forwarding path: client bytes to the backend, backend bytes to the
//! client, both directions at once.
//!
//! Each direction reads what the socket has, steps over whole frames by
//! their headers (streaming the bytes of large rows and COPY data instead
//! of buffering them), and writes everything it stepped over in one write.
//! A slow reader on one side stops the reads on the other: backpressure
//! through the sockets, no queue in between. Running both directions
//! concurrently matters: a client that pipelines more than the socket
//! buffers hold must never find pgshift blocked writing one way while the
//! other way fills up.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::{Buf, BytesMut};
use pgshift_protocol::backend::{self, TransactionStatus};
use pgshift_protocol::frontend;
use pgshift_protocol::scan::{Step, StreamScanner};
use pgshift_protocol::ProtocolError;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::stream::{ReadHalf, WriteHalf};

/// Reads grow the buffer in steps of this much at least.
const READ_CHUNK: usize = 64 * 1024;

/// What both directions know about the session.
#[derive(Default)]
pub struct RelayState {
    /// Requests (Query, Sync, FunctionCall) sent and not yet answered by
    /// ReadyForQuery.
    in_flight: AtomicUsize,
    idle: AtomicBool,
    /// Signalled at every ReadyForQuery.
    ready: Notify,
}

impl RelayState {
    pub fn new() -> Self {
        RelayState {
            in_flight: AtomicUsize::new(0),
            idle: AtomicBool::new(true),
            ready: Notify::new(),
        }
    }

    /// Idle between transactions with nothing outstanding: the moment a
    /// graceful shutdown may close the session without losing anything.
    pub fn is_quiet(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.idle.load(Ordering::Acquire)
    }

    pub async fn wait_quiet(&self) {
        loop {
            let notified = self.ready.notified();
            if self.is_quiet() {
                return;
            }
            notified.await;
        }
    }
}

#[derive(Debug)]
pub enum End {
    /// The client sent Terminate or closed its socket.
    ClientLeft,
    /// The backend closed (after a FATAL, or a restart).
    BackendClosed,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("client: {0}")]
    ClientIo(std::io::Error),
    #[error("backend: {0}")]
    BackendIo(std::io::Error),
    #[error("client sent an invalid message: {0}")]
    ClientProtocol(ProtocolError),
    #[error("backend sent an invalid message: {0}")]
    BackendProtocol(ProtocolError),
}

/// Client → backend until the client leaves.
pub async fn client_to_backend(
    client: &mut ReadHalf,
    backend_w: &mut WriteHalf,
    buf: &mut BytesMut,
    state: &RelayState,
    max_message_size: usize,
) -> Result<End, RelayError> {
    let mut scanner = StreamScanner::frontend(max_message_size);
    loop {
        let mut at = 0;
        let mut terminated = false;
        loop {
            match scanner
                .step(&buf[at..])
                .map_err(RelayError::ClientProtocol)?
            {
                Step::Frame(h) => {
                    match h.tag {
                        frontend::tag::QUERY
                        | frontend::tag::SYNC
                        | frontend::tag::FUNCTION_CALL => {
                            state.in_flight.fetch_add(1, Ordering::AcqRel);
                        }
                        frontend::tag::TERMINATE => terminated = true,
                        _ => {}
                    }
                    at += h.frame_len;
                    if terminated {
                        break;
                    }
                }
                Step::Pass(n) => at += n,
                Step::NeedMore => break,
            }
        }
        if at > 0 {
            write_out(backend_w, &buf[..at])
                .await
                .map_err(RelayError::BackendIo)?;
            buf.advance(at);
        }
        if terminated {
            return Ok(End::ClientLeft);
        }
        reserve_for_read(buf, scanner.shortfall(buf));
        if client.read_buf(buf).await.map_err(RelayError::ClientIo)? == 0 {
            return Ok(End::ClientLeft);
        }
    }
}

/// Backend → client until the backend closes.
pub async fn backend_to_client(
    backend_r: &mut ReadHalf,
    client: &mut WriteHalf,
    buf: &mut BytesMut,
    state: &RelayState,
    max_message_size: usize,
) -> Result<End, RelayError> {
    let mut scanner = StreamScanner::new(max_message_size);
    loop {
        let mut at = 0;
        let mut ready = false;
        loop {
            match scanner
                .step(&buf[at..])
                .map_err(RelayError::BackendProtocol)?
            {
                Step::Frame(h) => {
                    if h.tag == backend::tag::READY_FOR_QUERY {
                        let body = &buf[at + pgshift_protocol::HEADER_LEN..at + h.frame_len];
                        let status =
                            backend::ready_for_query(body).map_err(RelayError::BackendProtocol)?;
                        state
                            .idle
                            .store(status == TransactionStatus::Idle, Ordering::Release);
                        // Saturating: an RFQ the client did not ask for (none
                        // exists in the protocol) must not wrap the count.
                        let _ = state.in_flight.fetch_update(
                            Ordering::AcqRel,
                            Ordering::Acquire,
                            |n| n.checked_sub(1),
                        );
                        ready = true;
                    }
                    at += h.frame_len;
                }
                Step::Pass(n) => at += n,
                Step::NeedMore => break,
            }
        }
        if at > 0 {
            write_out(client, &buf[..at])
                .await
                .map_err(RelayError::ClientIo)?;
            buf.advance(at);
        }
        if ready {
            state.ready.notify_waiters();
        }
        reserve_for_read(buf, scanner.shortfall(buf));
        if backend_r
            .read_buf(buf)
            .await
            .map_err(RelayError::BackendIo)?
            == 0
        {
            return Ok(End::BackendClosed);
        }
    }
}

async fn write_out<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

/// Makes room for the next read: at least a chunk, and the whole of an
/// announced frame at once when it is larger (bounded by the scanner's
/// size check, which ran before the header was accepted).
fn reserve_for_read(buf: &mut BytesMut, shortfall: usize) {
    let want = shortfall.clamp(READ_CHUNK, 16 * READ_CHUNK);
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
}
