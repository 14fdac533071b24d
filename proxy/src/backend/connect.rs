//! Opening a session's connection to a backend: TCP (optionally TLS) or a
//! Unix socket, the startup message with the client's options, and
//! authentication with the backend's own credentials.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pgshift_protocol::auth::{md5, scram};
use pgshift_protocol::backend::{self, tag, Authentication};
use pgshift_protocol::encode;
use pgshift_rules::config::{Backend, BackendId, BackendTls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::stream::Stream;
use crate::wire::{read_frame, send, WireError};

/// Startup parameters that are the proxy's to choose, not the client's.
const RESERVED_PARAMS: &[&str] = &["user", "database", "replication"];

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("could not connect to backend {backend} ({addr}): {source}")]
    Unreachable {
        backend: BackendId,
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out connecting to backend {0}")]
    Timeout(BackendId),
    #[error("backend {0} refused TLS, and its tls setting is require")]
    TlsRefused(BackendId),
    #[error("TLS handshake with backend {backend} failed: {reason}")]
    Tls { backend: BackendId, reason: String },
    #[error("authentication to backend {backend} failed: {reason}")]
    Auth { backend: BackendId, reason: String },
    /// The backend said no with an ErrorResponse; the frame is relayed to
    /// the client as it is, so it sees Postgres' own words.
    #[error("backend {backend} rejected the connection: {message}")]
    Rejected {
        backend: BackendId,
        message: String,
        frame: Bytes,
    },
    #[error("backend {backend}: {source}")]
    Wire {
        backend: BackendId,
        source: WireError,
    },
}

/// What a client needs to cancel a statement on this backend.
#[derive(Debug, Clone)]
pub struct CancelKey {
    pub host: String,
    pub port: u16,
    pub tls: BackendTls,
    pub pid: u32,
    pub secret: Vec<u8>,
}

/// An authenticated backend connection, ready for queries.
pub struct BackendConn {
    pub id: BackendId,
    pub stream: Stream,
    pub cancel: CancelKey,
    /// ParameterStatus and NoticeResponse frames from startup, in order,
    /// for relaying to the client.
    pub startup_messages: BytesMut,
    /// Bytes the backend sent after ReadyForQuery (normally none).
    pub leftover: BytesMut,
}

pub struct ConnectOptions<'a> {
    pub timeout: Duration,
    pub max_message_size: usize,
    pub tls: Option<&'a tokio_rustls::TlsConnector>,
    /// Where the outcome is recorded for `pgshift_backend_up` and /status.
    pub health: Option<&'a crate::telemetry::BackendHealth>,
    /// TCP keepalive for a connection that lives as long as a session.
    pub keepalive: Option<Duration>,
}

impl<'a> ConnectOptions<'a> {
    /// What a session's backend connection (primary or mirror) uses.
    pub fn for_session(
        limits: &pgshift_rules::config::Limits,
        shared: &'a crate::server::Shared,
    ) -> Self {
        ConnectOptions {
            timeout: limits.startup_timeout,
            max_message_size: limits.max_message_size,
            tls: shared.backend_tls.as_ref(),
            health: Some(&shared.telemetry.health),
            keepalive: limits.tcp_keepalive,
        }
    }
}

pub async fn connect(
    id: BackendId,
    target: &Backend,
    client_params: &[(String, String)],
    opts: &ConnectOptions<'_>,
) -> Result<BackendConn, ConnectError> {
    let result =
        match tokio::time::timeout(opts.timeout, connect_inner(id, target, client_params, opts))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout(id)),
        };
    if let Some(health) = opts.health {
        match &result {
            Ok(_) => health.record(id, Ok(())),
            Err(e) if e.backend_unusable() => health.record(id, Err(e.to_string())),
            // The client's own startup options were refused: says nothing
            // about the backend.
            Err(_) => {}
        }
    }
    result
}

impl ConnectError {
    /// Whether the failure means nobody can use the backend now, rather
    /// than that this client's startup options were refused.
    pub fn backend_unusable(&self) -> bool {
        let ConnectError::Rejected { frame, .. } = self else {
            return true;
        };
        let sqlstate = frame.get(pgshift_protocol::HEADER_LEN..).and_then(|body| {
            backend::ErrorFields::new(body)
                .sqlstate()
                .map(<[u8]>::to_vec)
        });
        // Connection exceptions, authentication, database missing, too many
        // connections, shutting down or starting up.
        sqlstate.is_none_or(|s| matches!(s.get(..2), Some(b"08" | b"28" | b"3D" | b"53" | b"57")))
    }
}

async fn connect_inner(
    id: BackendId,
    target: &Backend,
    client_params: &[(String, String)],
    opts: &ConnectOptions<'_>,
) -> Result<BackendConn, ConnectError> {
    let mut stream = open_stream(id, &target.host, target.port, target.tls, opts.tls).await?;
    if let Some(tcp) = stream.tcp() {
        crate::stream::keepalive(tcp, opts.keepalive);
    }
    let wire = |source| ConnectError::Wire {
        backend: id,
        source,
    };

    let mut out = BytesMut::with_capacity(256);
    let params = startup_params(target, client_params);
    encode::startup_message(&mut out, params.iter().map(|(k, v)| (*k, *v)));
    send(&mut stream, &mut out)
        .await
        .map_err(|e| wire(e.into()))?;

    let mut buf = BytesMut::with_capacity(8 * 1024);
    authenticate(id, target, &mut stream, &mut buf, opts.max_message_size).await?;

    let mut startup_messages = BytesMut::new();
    let mut key = None;
    loop {
        let frame = read_frame(&mut stream, &mut buf, opts.max_message_size)
            .await
            .map_err(wire)?;
        match frame.tag() {
            tag::BACKEND_KEY_DATA => {
                let k = backend::backend_key_data(frame.body()).map_err(|e| wire(e.into()))?;
                key = Some((k.pid, k.secret.to_vec()));
            }
            tag::PARAMETER_STATUS | tag::NOTICE_RESPONSE => {
                startup_messages.extend_from_slice(frame.as_bytes());
            }
            tag::READY_FOR_QUERY => break,
            tag::ERROR_RESPONSE => return Err(rejected(id, frame.into_bytes())),
            tag::NEGOTIATE_PROTOCOL_VERSION => {}
            _ => {
                return Err(wire(WireError::Protocol(
                    pgshift_protocol::ProtocolError::Malformed {
                        what: "startup",
                        reason: "unexpected message before ReadyForQuery",
                    },
                )))
            }
        }
    }
    let Some((pid, secret)) = key else {
        return Err(ConnectError::Auth {
            backend: id,
            reason: "backend sent no BackendKeyData".into(),
        });
    };
    Ok(BackendConn {
        id,
        stream,
        cancel: CancelKey {
            host: target.host.clone(),
            port: target.port,
            tls: target.tls,
            pid,
            secret,
        },
        startup_messages,
        leftover: buf,
    })
}

/// The backend's user and database, then the client's own options
/// (application_name, options=-c ..., DateStyle, ...), then the defaults the
/// backend URL adds for anything the client did not set.
fn startup_params<'a>(
    target: &'a Backend,
    client: &'a [(String, String)],
) -> Vec<(&'a str, &'a str)> {
    let mut params: Vec<(&str, &str)> =
        vec![("user", &target.user), ("database", &target.database)];
    for (k, v) in client {
        if !RESERVED_PARAMS.contains(&k.as_str()) {
            params.push((k, v));
        }
    }
    for (k, v) in &target.options {
        if !params.iter().any(|(pk, _)| pk == k) {
            params.push((k, v));
        }
    }
    params
}

/// TCP, then TLS as the backend's `tls` setting asks; or the Unix socket
/// when the host is a directory.
pub async fn open_stream(
    id: BackendId,
    host: &str,
    port: u16,
    mode: BackendTls,
    connector: Option<&tokio_rustls::TlsConnector>,
) -> Result<Stream, ConnectError> {
    if let Some(path) = pgshift_rules::config::unix_socket_path(host, port) {
        // No SSLRequest: Postgres refuses TLS on its Unix sockets, and the
        // configuration rejects `tls: require` for them.
        return match UnixStream::connect(&path).await {
            Ok(unix) => Ok(Stream::Unix(unix)),
            Err(source) => Err(ConnectError::Unreachable {
                backend: id,
                addr: path,
                source,
            }),
        };
    }
    let addr = format!("{host}:{port}");
    let mut tcp =
        TcpStream::connect((host, port))
            .await
            .map_err(|source| ConnectError::Unreachable {
                backend: id,
                addr: addr.clone(),
                source,
            })?;
    let _ = tcp.set_nodelay(true);
    let connector = match (mode, connector) {
        (BackendTls::Disable, _) | (_, None) => return Ok(Stream::Plain(tcp)),
        (_, Some(c)) => c,
    };
    let mut req = BytesMut::new();
    encode::ssl_request(&mut req);
    let io = |source| ConnectError::Unreachable {
        backend: id,
        addr: addr.clone(),
        source,
    };
    tcp.write_all(&req).await.map_err(io)?;
    let answer = tcp.read_u8().await.map_err(io)?;
    match answer {
        b'S' => {
            let name = crate::tls::server_name(host).map_err(|e| ConnectError::Tls {
                backend: id,
                reason: e.to_string(),
            })?;
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| ConnectError::Tls {
                    backend: id,
                    reason: e.to_string(),
                })?;
            Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(tls))))
        }
        b'N' if mode == BackendTls::Require => Err(ConnectError::TlsRefused(id)),
        b'N' => Ok(Stream::Plain(tcp)),
        _ => Err(ConnectError::Tls {
            backend: id,
            reason: format!("unexpected answer {answer:#x} to SSLRequest"),
        }),
    }
}

async fn authenticate(
    id: BackendId,
    target: &Backend,
    stream: &mut Stream,
    buf: &mut BytesMut,
    max: usize,
) -> Result<(), ConnectError> {
    let auth_err = |reason: String| ConnectError::Auth {
        backend: id,
        reason,
    };
    let wire = |source| ConnectError::Wire {
        backend: id,
        source,
    };
    let password = || {
        target
            .password
            .as_deref()
            .ok_or_else(|| auth_err("the backend asks for a password and its url has none".into()))
    };
    let mut out = BytesMut::with_capacity(256);
    let mut scram: Option<scram::ScramClient> = None;
    let mut scram_verified = false;
    loop {
        let frame = read_frame(stream, buf, max).await.map_err(wire)?;
        match frame.tag() {
            tag::AUTHENTICATION => {}
            tag::ERROR_RESPONSE => return Err(rejected(id, frame.into_bytes())),
            tag::NEGOTIATE_PROTOCOL_VERSION => continue,
            _ => return Err(auth_err("unexpected message during authentication".into())),
        }
        match backend::authentication(frame.body()).map_err(|e| wire(e.into()))? {
            // A server that skips SASLFinal has not proved it knows the
            // password; libpq refuses such a server too.
            Authentication::Ok if scram.is_some() && !scram_verified => {
                return Err(auth_err(
                    "server did not complete SCRAM authentication".into(),
                ))
            }
            Authentication::Ok => return Ok(()),
            Authentication::CleartextPassword => {
                encode::password_message(&mut out, password()?.as_bytes());
            }
            Authentication::Md5Password { salt } => {
                let resp = md5::client_response(&target.user, password()?, salt);
                encode::password_message(&mut out, resp.as_bytes());
            }
            Authentication::Sasl { mechanisms } => {
                let mech =
                    scram::choose_mechanism(mechanisms).map_err(|e| auth_err(e.to_string()))?;
                let client = scram::ScramClient::new(password()?.as_bytes());
                encode::sasl_initial_response(&mut out, mech, client.client_first());
                scram = Some(client);
            }
            Authentication::SaslContinue { data } => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| auth_err("SASL continue before SASL start".into()))?;
                let reply = client
                    .server_first_with(data, super::salted::salted_password)
                    .map_err(|e| auth_err(e.to_string()))?;
                encode::sasl_response(&mut out, &reply);
            }
            Authentication::SaslFinal { data } => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| auth_err("SASL final before SASL start".into()))?;
                client
                    .server_final(data)
                    .map_err(|e| auth_err(e.to_string()))?;
                scram_verified = true;
                continue;
            }
            Authentication::Unsupported { code } => {
                return Err(auth_err(format!(
                    "unsupported authentication request {code}"
                )))
            }
        }
        send(stream, &mut out).await.map_err(|e| wire(e.into()))?;
    }
}

fn rejected(backend: BackendId, frame: Bytes) -> ConnectError {
    let message = backend::ErrorFields::new(&frame[pgshift_protocol::HEADER_LEN..])
        .message()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_default();
    ConnectError::Rejected {
        backend,
        message,
        frame,
    }
}
