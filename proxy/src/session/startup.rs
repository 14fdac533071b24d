//! The client's side of the startup phase: SSL/GSS negotiation, cancel
//! requests, and the StartupMessage.

use bytes::BytesMut;
use pgshift_protocol::startup::{decode_startup, StartupMessage, StartupPacket};
use pgshift_protocol::ProtocolError;
use tokio::io::AsyncWriteExt;

use crate::server::Shared;
use crate::stream::Stream;
use crate::wire::{fill, WireError};

pub enum Opening {
    Session {
        stream: Stream,
        startup: StartupMessage,
        /// Anything the client sent after its StartupMessage (pipelined
        /// password messages, for instance).
        buf: BytesMut,
    },
    /// The connection carried a CancelRequest and has been dealt with.
    Cancelled,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("received unencrypted data after SSL request")]
    DataAfterSslRequest,
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
}

impl StartupError {
    /// SQLSTATE for the FATAL the client gets, if it is worth sending one.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            StartupError::Protocol(ProtocolError::UnsupportedVersion { .. }) => "0A000",
            _ => "08P01",
        }
    }
}

/// On failure the stream comes back (when there still is one) so the
/// client can be told why before the connection closes.
pub async fn open(
    mut stream: Stream,
    shared: &Shared,
) -> Result<Opening, (StartupError, Option<Stream>)> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        let packet = loop {
            match decode_startup(&mut buf) {
                Ok(Some(p)) => break p,
                Ok(None) => {}
                Err(e) => return Err((e.into(), Some(stream))),
            }
            if let Err(e) = fill(&mut stream, &mut buf).await {
                return Err((e.into(), None));
            }
        };
        match packet {
            StartupPacket::SslRequest => {
                // Bytes pipelined behind an SSLRequest would be read as if
                // they had come over TLS (CVE-2021-23222): refuse them.
                if !buf.is_empty() {
                    return Err((StartupError::DataAfterSslRequest, Some(stream)));
                }
                stream = negotiate_tls(stream, shared).await.map_err(|e| (e, None))?;
            }
            StartupPacket::GssEncRequest => {
                if let Err(e) = stream.write_all(b"N").await {
                    return Err((WireError::Io(e).into(), None));
                }
            }
            StartupPacket::Cancel { pid, secret } => {
                shared
                    .cancels
                    .cancel(pid, &secret, shared.backend_tls.as_ref())
                    .await;
                return Ok(Opening::Cancelled);
            }
            StartupPacket::Startup(startup) => {
                return Ok(Opening::Session {
                    stream,
                    startup,
                    buf,
                })
            }
        }
    }
}

async fn negotiate_tls(stream: Stream, shared: &Shared) -> Result<Stream, StartupError> {
    match (stream, shared.client_tls.as_ref()) {
        (Stream::Plain(mut tcp), Some(acceptor)) => {
            tcp.write_all(b"S").await.map_err(WireError::Io)?;
            let tls = acceptor.accept(tcp).await.map_err(StartupError::Tls)?;
            Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls))))
        }
        (mut stream, _) => {
            stream.write_all(b"N").await.map_err(WireError::Io)?;
            Ok(stream)
        }
    }
}
