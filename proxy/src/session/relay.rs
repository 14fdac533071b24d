//! Runs a session's two halves at once: requests (client to backends) and
//! responses (backends to client).
//!
//! Both directions run concurrently: a client that pipelines more than the
//! socket buffers hold must never find pgshift blocked writing one way
//! while the other way fills up. A slow reader on either side stops the
//! reads on the other (backpressure through the sockets, bounded queues).

use std::time::Duration;

use bytes::BytesMut;
use pgshift_protocol::ProtocolError;
use pgshift_rules::config::BackendId;

use super::expect::Expectations;
use super::requests::Requests;
use super::responses::Responses;
use crate::backend::ConnectError;
use crate::gate::Gated;
use crate::server::Shutdown;
use crate::stream::ReadHalf;

#[derive(Debug)]
pub enum End {
    /// The client sent Terminate or closed its socket.
    ClientLeft,
    /// A graceful shutdown found the session idle.
    Drained,
    /// The grace period ran out.
    Forced,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("client: {0}")]
    ClientIo(std::io::Error),
    #[error("client sent an invalid message: {0}")]
    ClientProtocol(ProtocolError),
    #[error("backend {0}: {1}")]
    BackendIo(BackendId, std::io::Error),
    #[error("backend {0} closed the connection")]
    BackendClosed(BackendId),
    #[error("backend {0} sent an invalid message: {1}")]
    BackendProtocol(BackendId, ProtocolError),
    #[error("backend {backend} sent message type {:?} while no request was outstanding", *tag as char)]
    Unprompted { backend: BackendId, tag: u8 },
    #[error("{0}")]
    Connect(ConnectError),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// How long the response side may keep going, after the request side
/// stopped with an error, to deliver what the client is already owed.
const DRAIN_AFTER_ERROR: Duration = Duration::from_secs(5);

pub async fn run(
    requests: &mut Requests<'_>,
    responses: &mut Responses<'_>,
    client: &mut ReadHalf,
    client_buf: &mut BytesMut,
    exp: &Expectations,
    shutdown: &Shutdown,
) -> Result<End, RelayError> {
    let front = requests.run(client, client_buf);
    let back = responses.run();
    tokio::pin!(front, back);
    // Every wake-up of the session polls all four branches, the request
    // side first: whatever it queues, the response side sees in the same
    // pass, without a wake-up of its own (see `Expectations::owed`). The
    // two that wait for a shutdown are polled only when one of their own
    // wakers fired.
    let drain = Gated::new(async {
        shutdown.draining.cancelled().await;
        exp.wait_quiet().await;
    });
    let mut forced = Gated::new(shutdown.force.cancelled());
    tokio::select! {
        biased;
        r = &mut front => match r {
            Ok(End::ClientLeft) => {
                // Postgres sends every answer owed before it reads a
                // Terminate (or notices the end of the stream): a client
                // that pipelines and leaves gets them from pgshift too, for
                // as long as it reads.
                tokio::select! {
                    _ = &mut back => {},
                    _ = exp.wait_empty() => {},
                    _ = &mut forced => return Ok(End::Forced),
                }
                Ok(End::ClientLeft)
            }
            Ok(end) => Ok(end),
            Err(e) => {
                // Let the client have the answers it is owed (including an
                // error queued for it) before the connection closes.
                let _ = tokio::time::timeout(DRAIN_AFTER_ERROR, async {
                    tokio::select! {
                        _ = &mut back => {},
                        _ = exp.wait_empty() => {},
                    }
                })
                .await;
                Err(e)
            }
        },
        r = &mut back => r,
        _ = drain => Ok(End::Drained),
        _ = &mut forced => Ok(End::Forced),
    }
}
