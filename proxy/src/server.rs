//! The listener: accepts clients, enforces the connection limit, and shuts
//! down in two steps (drain, then force) so no transaction is cut short
//! unless the grace period runs out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use bytes::BytesMut;
use pgshift_protocol::encode;
use pgshift_rules::config::Config;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::cancel::CancelRegistry;
use crate::session::{self, ClientAuth};

/// One loaded configuration and what was derived from it.
pub struct Loaded {
    pub version: u64,
    pub loaded_at: SystemTime,
    pub config: Config,
    pub client_auth: ClientAuth,
}

impl Loaded {
    pub fn new(version: u64, config: Config) -> anyhow::Result<Self> {
        let client_auth = ClientAuth::new(&config.auth)?;
        Ok(Loaded {
            version,
            loaded_at: SystemTime::now(),
            config,
            client_auth,
        })
    }
}

/// What every session shares.
pub struct Shared {
    current: ArcSwap<Loaded>,
    pub client_tls: Option<tokio_rustls::TlsAcceptor>,
    pub backend_tls: Option<tokio_rustls::TlsConnector>,
    pub cancels: Arc<CancelRegistry>,
}

impl Shared {
    /// The configuration in force now. Sessions take a snapshot at the
    /// points where a change may apply.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.load_full()
    }
}

/// The two steps of shutdown, as sessions see them.
#[derive(Clone, Default)]
pub struct Shutdown {
    /// Stop accepting; sessions close at their next idle point.
    pub draining: CancellationToken,
    /// Grace is over: close now.
    pub force: CancellationToken,
}

pub struct Proxy {
    local_addr: SocketAddr,
    shutdown: Shutdown,
    done: CancellationToken,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// Binds the listener and starts serving in the background.
pub async fn start(config: Config) -> anyhow::Result<Proxy> {
    let client_tls = match &config.tls {
        Some(files) => Some(crate::tls::acceptor(&files.cert, &files.key)?),
        None => None,
    };
    let backend_tls = Some(crate::tls::backend_connector()?);
    let listener = TcpListener::bind((config.listen.host.as_str(), config.listen.port))
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local_addr = listener.local_addr()?;
    let max_clients = config.limits.max_clients;
    let grace = config.limits.shutdown_grace;
    let shared = Arc::new(Shared {
        current: ArcSwap::from_pointee(Loaded::new(1, config)?),
        client_tls,
        backend_tls,
        cancels: Arc::new(CancelRegistry::default()),
    });
    let shutdown = Shutdown::default();
    let done = CancellationToken::new();
    let task = tokio::spawn({
        let done = done.clone();
        let serving = serve(
            listener,
            Arc::clone(&shared),
            shutdown.clone(),
            max_clients,
            grace,
        );
        async move {
            serving.await;
            done.cancel();
        }
    });
    tracing::info!(%local_addr, "pgshift listening");
    Ok(Proxy {
        local_addr,
        shutdown,
        done,
        shared,
        task,
    })
}

impl Proxy {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stop accepting and let sessions finish (see `limits.shutdown_grace`).
    pub fn begin_shutdown(&self) {
        self.shutdown.draining.cancel();
    }

    /// Skip the rest of the grace period.
    pub fn force_shutdown(&self) {
        self.shutdown.draining.cancel();
        self.shutdown.force.cancel();
    }

    /// Resolves once shutdown has completed, without consuming the handle.
    pub async fn finished(&self) {
        self.done.cancelled().await;
    }

    /// Waits until the listener and every session have ended.
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    pub async fn shutdown(self) {
        self.begin_shutdown();
        self.wait().await;
    }
}

async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: Shutdown,
    max_clients: usize,
    grace: Duration,
) {
    let sessions = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(max_clients));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.draining.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of
                // spinning, and keep serving the sessions already open.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => {
                let shared = Arc::clone(&shared);
                let shutdown = shutdown.clone();
                sessions.spawn(async move {
                    session::run(tcp, peer, shared, shutdown).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tracing::warn!(%peer, max_clients, "connection refused: too many clients");
                sessions.spawn(too_many_clients(tcp));
            }
        }
    }
    drop(listener);
    sessions.close();
    tracing::info!(sessions = sessions.len(), "draining sessions");
    if tokio::time::timeout(grace, sessions.wait()).await.is_err() {
        tracing::warn!(
            sessions = sessions.len(),
            "grace period over, closing remaining sessions"
        );
        shutdown.force.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), sessions.wait()).await;
    }
    tracing::info!("shutdown complete");
}

async fn too_many_clients(mut tcp: TcpStream) {
    let mut out = BytesMut::new();
    encode::error_response(
        &mut out,
        "FATAL",
        "53300",
        "sorry, too many clients already",
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(&out)).await;
}
