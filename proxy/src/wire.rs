//! Framed reads and writes for the request/response phases (startup and
//! authentication), where one message at a time is the natural unit.

use bytes::BytesMut;
use pgshift_protocol::{decode_frame, Frame, ProtocolError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("connection closed by peer")]
    Closed,
}

/// Reads until one whole frame is buffered and returns it.
pub async fn read_frame<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Frame, WireError> {
    loop {
        if let Some(f) = decode_frame(buf, max)? {
            return Ok(f);
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(8 * 1024);
        }
        if r.read_buf(buf).await? == 0 {
            return Err(WireError::Closed);
        }
    }
}

/// Reads more bytes into `buf`; `Closed` on EOF.
pub async fn fill<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    buf: &mut BytesMut,
) -> Result<(), WireError> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(8 * 1024);
    }
    if r.read_buf(buf).await? == 0 {
        return Err(WireError::Closed);
    }
    Ok(())
}

/// Writes and flushes everything in `buf`, leaving it empty for reuse.
pub async fn send<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    buf: &mut BytesMut,
) -> std::io::Result<()> {
    w.write_all(buf).await?;
    w.flush().await?;
    buf.clear();
    Ok(())
}
