//! One client session, from the first byte to the last: startup, client
//! authentication, the backend connection, then the relay.

mod client_auth;
pub mod relay;
mod startup;

pub use client_auth::ClientAuth;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use pgshift_protocol::backend::TransactionStatus;
use pgshift_protocol::encode;
use pgshift_protocol::startup::StartupMessage;
use pgshift_rules::config::BackendId;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::backend::cancel::{Registration, SessionCancel};
use crate::backend::{self, BackendConn, ConnectError, ConnectOptions};
use crate::server::{Shared, Shutdown};
use crate::stream::Stream;
use relay::{End, RelayError, RelayState};
use startup::Opening;

/// Everything the client gets after a successful startup, and the session
/// state the relay starts from.
struct Established {
    client: Stream,
    client_buf: BytesMut,
    backend: BackendConn,
    _registration: Registration,
}

pub async fn run(tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>, shutdown: Shutdown) {
    let _ = tcp.set_nodelay(true);
    let span = tracing::info_span!("session", %peer, user = tracing::field::Empty);
    async move {
        let timeout = shared.current().config.limits.startup_timeout;
        let established = tokio::time::timeout(timeout, establish(tcp, peer, &shared)).await;
        let est = match established {
            Ok(Ok(Some(est))) => est,
            Ok(Ok(None)) => return,
            Ok(Err(())) => return,
            Err(_) => {
                tracing::info!("startup timed out after {timeout:?}");
                return;
            }
        };
        relay(est, &shared, shutdown).await;
    }
    .instrument(span)
    .await
}

/// Startup, authentication and the backend connection. `Ok(None)` when the
/// connection was a cancel request; `Err` once the client has been told why.
async fn establish(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
) -> Result<Option<Established>, ()> {
    let loaded = shared.current();
    let limits = &loaded.config.limits;
    let (mut client, startup, mut client_buf) =
        match startup::open(Stream::Plain(tcp), shared).await {
            Ok(Opening::Session {
                stream,
                startup,
                buf,
            }) => (stream, startup, buf),
            Ok(Opening::Cancelled) => return Ok(None),
            Err((e, stream)) => {
                tracing::info!(error = %e, "startup failed");
                if let Some(mut stream) = stream {
                    fatal(&mut stream, e.sqlstate(), &e.to_string()).await;
                }
                return Err(());
            }
        };
    let Some(user) = startup.get("user").map(str::to_owned) else {
        fatal(
            &mut client,
            "28000",
            "no PostgreSQL user name specified in startup packet",
        )
        .await;
        return Err(());
    };
    tracing::Span::current().record("user", user.as_str());
    negotiate_version(&mut client, &startup).await?;

    if let Err(e) = loaded
        .client_auth
        .authenticate(&mut client, &mut client_buf, &user, limits.max_message_size)
        .await
    {
        tracing::info!(error = %e, "client authentication failed");
        fatal(&mut client, e.sqlstate(), &e.to_string()).await;
        return Err(());
    }

    let primary = first_backend(&loaded.config);
    let target = loaded.config.backends.get(primary);
    let opts = ConnectOptions {
        timeout: limits.startup_timeout,
        max_message_size: limits.max_message_size,
        tls: shared.backend_tls.as_ref(),
    };
    let backend = match backend::connect(primary, target, &startup.params, &opts).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "backend connection failed");
            refuse(&mut client, e).await;
            return Err(());
        }
    };

    let cancel = Arc::new(SessionCancel::default());
    cancel.set(primary, backend.cancel.clone());
    let registration = shared.cancels.register(backend.cancel.pid, cancel);

    let mut out = BytesMut::with_capacity(512 + backend.startup_messages.len());
    encode::authentication_ok(&mut out);
    out.extend_from_slice(&backend.startup_messages);
    encode::backend_key_data(&mut out, backend.cancel.pid, &registration.secret());
    encode::ready_for_query(&mut out, TransactionStatus::Idle);
    if crate::wire::send(&mut client, &mut out).await.is_err() {
        return Err(());
    }
    tracing::debug!(%peer, backend = %primary, pid = backend.cancel.pid, "session established");
    Ok(Some(Established {
        client,
        client_buf,
        backend,
        _registration: registration,
    }))
}

/// Rollback sends everything to old; otherwise the default primary.
fn first_backend(config: &pgshift_rules::config::Config) -> BackendId {
    if config.rollback {
        BackendId::Old
    } else {
        config.defaults.primary
    }
}

/// pgshift speaks protocol 3.0 to its backends; a client asking for a newer
/// minor version or for protocol options is told so, as Postgres would.
async fn negotiate_version(client: &mut Stream, startup: &StartupMessage) -> Result<(), ()> {
    let options: Vec<&str> = startup.protocol_options().collect();
    if startup.minor == 0 && options.is_empty() {
        return Ok(());
    }
    let mut out = BytesMut::new();
    encode::negotiate_protocol_version(&mut out, 0, &options);
    crate::wire::send(client, &mut out).await.map_err(|_| ())
}

async fn relay(est: Established, shared: &Shared, shutdown: Shutdown) {
    let Established {
        client,
        mut client_buf,
        backend,
        _registration,
    } = est;
    let max = shared.current().config.limits.max_message_size;
    let (mut client_r, mut client_w) = client.split();
    let (mut backend_r, mut backend_w) = backend.stream.split();
    let mut backend_buf = backend.leftover;
    let state = RelayState::new();

    let outcome = {
        let front =
            relay::client_to_backend(&mut client_r, &mut backend_w, &mut client_buf, &state, max);
        let back =
            relay::backend_to_client(&mut backend_r, &mut client_w, &mut backend_buf, &state, max);
        let drain = async {
            shutdown.draining.cancelled().await;
            state.wait_quiet().await;
        };
        tokio::select! {
            r = front => Outcome::Relay(r),
            r = back => Outcome::Relay(r),
            _ = drain => Outcome::Drained,
            _ = shutdown.force.cancelled() => Outcome::Forced,
        }
    };
    match outcome {
        Outcome::Relay(Ok(End::ClientLeft)) => tracing::debug!("client left"),
        Outcome::Relay(Ok(End::BackendClosed)) => tracing::info!("backend closed the connection"),
        Outcome::Relay(Err(RelayError::ClientProtocol(e))) => {
            tracing::info!(error = %e, "closing session: invalid client message");
            fatal(
                &mut client_w,
                "08P01",
                &format!("invalid frontend message: {e}"),
            )
            .await;
        }
        Outcome::Relay(Err(e)) => tracing::info!(error = %e, "session ended"),
        Outcome::Drained | Outcome::Forced => {
            fatal(
                &mut client_w,
                "57P01",
                "terminating connection due to administrator command",
            )
            .await;
        }
    }
    let mut bye = BytesMut::new();
    encode::terminate(&mut bye);
    let _ = backend_w.write_all(&bye).await;
    let _ = backend_w.shutdown().await;
    let _ = client_w.shutdown().await;
}

enum Outcome {
    Relay(Result<End, RelayError>),
    Drained,
    Forced,
}

/// Sends a FATAL ErrorResponse; the connection is closed by the caller.
async fn fatal<W: tokio::io::AsyncWrite + Unpin + ?Sized>(w: &mut W, code: &str, message: &str) {
    let mut out = BytesMut::new();
    encode::error_response(&mut out, "FATAL", code, message);
    let _ = crate::wire::send(w, &mut out).await;
}

async fn refuse(client: &mut Stream, e: ConnectError) {
    match e {
        ConnectError::Rejected { frame, .. } => {
            let _ = client.write_all(&frame).await;
            let _ = client.flush().await;
        }
        e => fatal(client, "08006", &e.to_string()).await,
    }
}
