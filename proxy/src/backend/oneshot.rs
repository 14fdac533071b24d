//! One request to a backend outside any session, over a connection of
//! pgshift's own (the backend's credentials and TLS setting): the catalog
//! read of a reload, the lookup of a prepared transaction nobody here
//! remembers. Nothing here needs a second Postgres client library.

use std::time::Duration;

use bytes::BytesMut;
use pgshift_protocol::backend::{tag, ErrorFields};
use pgshift_protocol::{encode, Frame};
use pgshift_rules::config::{Backend, BackendId};

use super::{connect, ConnectError, ConnectOptions};
use crate::wire::{read_frame, send};

#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("{0}")]
    Connect(#[from] ConnectError),
    /// The backend's error, the connection's, or the caller's objection to
    /// the answer.
    #[error("{0}")]
    Answer(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Where and how to ask.
pub struct Asking<'a> {
    pub id: BackendId,
    pub target: &'a Backend,
    pub tls: Option<&'a tokio_rustls::TlsConnector>,
    pub max_message_size: usize,
    /// For everything: connecting, logging in and the answer.
    pub timeout: Duration,
    /// What the backend's `pg_stat_activity` shows for the connection.
    pub application_name: &'a str,
}

/// Sends `request` (ending in a Sync or a simple Query) and hands every
/// frame of the answer up to its ReadyForQuery to `on_frame`. An
/// ErrorResponse ends the exchange as an error.
pub async fn ask(
    how: &Asking<'_>,
    mut request: BytesMut,
    mut on_frame: impl FnMut(&Frame) -> Result<(), String>,
) -> Result<(), AskError> {
    let Asking {
        id,
        target,
        tls,
        max_message_size,
        timeout,
        application_name,
    } = *how;
    let work = async {
        let opts = ConnectOptions {
            timeout,
            max_message_size,
            tls,
            // Sessions and probes report backend health; these requests
            // run beside them (a reload's even before them).
            health: None,
            keepalive: None,
        };
        let params = [("application_name".to_owned(), application_name.to_owned())];
        let mut conn = connect(id, target, &params, &opts).await?;
        // Postgres answers the request before it reads the Terminate.
        encode::terminate(&mut request);
        send(&mut conn.stream, &mut request)
            .await
            .map_err(|e| AskError::Answer(e.to_string()))?;
        let mut buf = conn.leftover;
        loop {
            let frame = read_frame(&mut conn.stream, &mut buf, max_message_size)
                .await
                .map_err(|e| AskError::Answer(e.to_string()))?;
            match frame.tag() {
                tag::ERROR_RESPONSE => {
                    let fields = ErrorFields::new(frame.body());
                    let message = fields.message().unwrap_or(b"unknown error");
                    return Err(AskError::Answer(
                        String::from_utf8_lossy(message).into_owned(),
                    ));
                }
                tag::READY_FOR_QUERY => return Ok(()),
                _ => on_frame(&frame).map_err(AskError::Answer)?,
            }
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(AskError::Timeout(timeout)),
    }
}
