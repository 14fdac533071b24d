//! One client session, from the first byte to the last: startup, client
//! authentication, the backend connection, then the relay.

mod client_auth;
mod expect;
pub mod observe;
pub mod relay;
mod requests;
mod responses;
mod rewriting;
mod startup;
mod state;

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
use expect::Expectations;
use relay::{End, RelayError};
use requests::{Requests, SessionInfo};
use responses::Responses;
use startup::Opening;

/// Everything the client gets after a successful startup, and the session
/// state the relay starts from.
struct Established {
    client: Stream,
    client_buf: BytesMut,
    backend: BackendConn,
    info: SessionInfo,
    cancel: Arc<SessionCancel>,
    _registration: Registration,
}

pub async fn run(tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>, shutdown: Shutdown) {
    let _ = tcp.set_nodelay(true);
    let span = tracing::info_span!("session", %peer, user = tracing::field::Empty);
    let (keepalive, timeout) = {
        let limits = &shared.current().config.limits;
        (limits.tcp_keepalive, limits.startup_timeout)
    };
    crate::stream::keepalive(&tcp, keepalive);
    let established = tokio::time::timeout(timeout, establish(tcp, peer, &shared, &span))
        .instrument(span.clone())
        .await;
    let est = match established {
        Ok(Ok(Some(est))) => est,
        Ok(Ok(None)) => return,
        Ok(Err(())) => return,
        Err(_) => {
            tracing::info!(parent: &span, "startup timed out after {timeout:?}");
            return;
        }
    };
    // Not instrumented: entering the span on every poll of the relay cost
    // a tenth of the proxy's own CPU per statement.
    relay(est, &shared, shutdown).await;
}

/// Startup, authentication and the backend connection. `Ok(None)` when the
/// connection was a cancel request; `Err` once the client has been told why.
async fn establish(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    span: &tracing::Span,
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
    span.record("user", user.as_str());
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
    let opts = ConnectOptions::for_session(limits, shared);
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
    let registration = shared
        .cancels
        .register(backend.cancel.pid, Arc::clone(&cancel));

    let mut out = BytesMut::with_capacity(512 + backend.startup_messages.len());
    encode::authentication_ok(&mut out);
    out.extend_from_slice(&backend.startup_messages);
    encode::backend_key_data(&mut out, backend.cancel.pid, &registration.secret());
    encode::ready_for_query(&mut out, TransactionStatus::Idle);
    if crate::wire::send(&mut client, &mut out).await.is_err() {
        return Err(());
    }
    tracing::debug!(%peer, backend = %primary, pid = backend.cancel.pid, "session established");
    let info = SessionInfo {
        application_name: startup
            .get("application_name")
            .unwrap_or_default()
            .to_owned(),
        database: startup.get("database").unwrap_or(&user).to_owned(),
        user,
        client_addr: peer.ip(),
        session_key: rand::random(),
        startup_params: startup.params,
        span: span.clone(),
    };
    Ok(Some(Established {
        client,
        client_buf,
        backend,
        info,
        cancel,
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

async fn relay(est: Established, shared: &Arc<Shared>, shutdown: Shutdown) {
    let Established {
        client,
        mut client_buf,
        backend,
        info,
        cancel,
        _registration,
    } = est;
    let max = shared.current().config.limits.max_message_size;
    let primary = backend.id;
    let (mut client_r, mut client_w) = client.split();
    let (backend_r, backend_w) = backend.stream.split();
    let exp = Expectations::default();

    let outcome = {
        let mut requests = Requests::new(
            shared,
            shutdown.force.clone(),
            &info,
            &exp,
            &cancel,
            primary,
            backend_w,
        );
        let mut responses = Responses::new(&mut client_w, &exp, max, info.span.clone());
        responses.attach(primary, backend_r, backend.leftover);
        let outcome = relay::run(
            &mut requests,
            &mut responses,
            &mut client_r,
            &mut client_buf,
            &exp,
            &shutdown,
        )
        .await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), requests.terminate()).await;
        outcome
    };
    match outcome {
        Ok(End::ClientLeft) => tracing::debug!(parent: &info.span, "client left"),
        Ok(End::Drained) | Ok(End::Forced) => {
            fatal(
                &mut client_w,
                "57P01",
                "terminating connection due to administrator command",
            )
            .await;
        }
        Err(RelayError::ClientProtocol(e)) => {
            tracing::info!(parent: &info.span, error = %e, "closing session: invalid client message");
            fatal(
                &mut client_w,
                "08P01",
                &format!("invalid frontend message: {e}"),
            )
            .await;
        }
        Err(RelayError::Connect(e)) => {
            tracing::warn!(parent: &info.span, error = %e, "closing session: backend connection failed");
            fatal(&mut client_w, "08006", &e.to_string()).await;
        }
        Err(e) => tracing::info!(parent: &info.span, error = %e, "session ended"),
    }
    let _ = client_w.shutdown().await;
    shared.mirroring.session_ended(info.session_key);
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
