//! The listener: accepts clients, enforces the connection limit, and shuts
//! down in two steps (drain, then force) so no transaction is cut short
//! unless the grace period runs out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use bytes::BytesMut;
use pgshift_protocol::encode;
use pgshift_rules::classify::Classifier;
use pgshift_rules::config::Config;
use pgshift_rules::route::Router;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::cancel::CancelRegistry;
use crate::rewrites::Catalogs;
use crate::session::{self, ClientAuth};
use crate::telemetry::Telemetry;
use crate::workers::Workers;

/// One loaded configuration and what was derived from it.
pub struct Loaded {
    pub version: u64,
    pub loaded_at: SystemTime,
    pub config: Config,
    pub client_auth: Arc<ClientAuth>,
    pub router: Router,
    /// Per backend, when its schema differs from the application's.
    pub rewriters: crate::rewrites::Rewriters,
    /// What the rewrite maps were checked against.
    pub catalogs: Catalogs,
    /// Statement counters labelled with this configuration's rule names.
    pub meters: Arc<crate::telemetry::StatementMeters>,
}

impl Loaded {
    pub fn new(
        version: u64,
        config: Config,
        catalogs: Catalogs,
        telemetry: &Telemetry,
    ) -> anyhow::Result<Self> {
        Self::with_auth(version, config, None, catalogs, telemetry)
    }

    /// Reuses `previous`' client authentication when the `auth` section
    /// did not change: deriving SCRAM verifiers costs a PBKDF2 per user,
    /// which a reload (rollback: true, say) should not pay.
    fn with_auth(
        version: u64,
        config: Config,
        previous: Option<&Loaded>,
        catalogs: Catalogs,
        telemetry: &Telemetry,
    ) -> anyhow::Result<Self> {
        let problems = catalogs.check(&config);
        if !problems.is_empty() {
            anyhow::bail!("{}", problems.join("\n"));
        }
        let client_auth = match previous {
            Some(p) if p.config.auth == config.auth => Arc::clone(&p.client_auth),
            _ => Arc::new(ClientAuth::new(&config.auth)?),
        };
        let router = Router::new(&config);
        let rewriters = crate::rewrites::rewriters(
            &config,
            &catalogs,
            previous.map(|p| (&p.config, &p.catalogs, &p.rewriters)),
        );
        let meters = telemetry.statement_meters(&config);
        Ok(Loaded {
            version,
            loaded_at: SystemTime::now(),
            config,
            client_auth,
            router,
            rewriters,
            catalogs,
            meters,
        })
    }
}

/// What every session shares.
pub struct Shared {
    current: ArcSwap<Loaded>,
    /// The version of `current`, stored after it: a session finds out
    /// whether its snapshot is still current with one atomic load.
    version: AtomicU64,
    /// The file the configuration came from; `None` for configs built in
    /// memory (tests, the demo), which can still be replaced with `install`.
    pub config_path: Option<PathBuf>,
    /// One reload at a time, so versions are handed out in order.
    reload_lock: std::sync::Mutex<ReloadLog>,
    pub client_tls: Option<tokio_rustls::TlsAcceptor>,
    pub backend_tls: Option<tokio_rustls::TlsConnector>,
    pub cancels: Arc<CancelRegistry>,
    pub classifier: Classifier,
    pub mirroring: crate::mirror::MirrorHub,
    /// Where each two-phase transaction prepared through this pgshift lives.
    pub prepared: Arc<crate::prepared::PreparedXacts>,
    /// Sessions' mirror tasks, which outlive their sessions until their
    /// queues are replayed (bounded by the shutdown grace period), on
    /// threads of their own.
    pub mirror_tasks: crate::mirror::threads::MirrorTasks,
    pub digests: crate::stats::DigestStore,
    pub telemetry: Telemetry,
}

/// Reads the catalogs `config` needs, logging the backends that could not
/// be read (their maps are used unchecked).
async fn read_catalogs(config: &Config, tls: Option<&tokio_rustls::TlsConnector>) -> Catalogs {
    let (catalogs, errors) = Catalogs::read(config, tls, crate::catalog::DEFAULT_TIMEOUT).await;
    for e in errors {
        tracing::warn!(error = %e, "rewrite map not checked against this backend's catalog, and SELECT * over renamed columns is not expanded there");
    }
    catalogs
}

/// Statements classified once and remembered: a repeated statement costs a
/// hash lookup, not a parse.
const CLASSIFIER_CAPACITY: usize = 10_000;

/// What /status and metrics report about reloads.
#[derive(Debug, Clone, Default)]
pub struct ReloadLog {
    pub ok: u64,
    pub failed: u64,
    /// The reason the most recent failed reload gave, cleared by a success.
    pub last_error: Option<String>,
}

/// A reload that changed nothing: every reason, one per line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ReloadError(pub String);

impl Shared {
    /// The configuration in force now. Sessions take a snapshot at the
    /// points where a change may apply.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.load_full()
    }

    /// Replaces `snapshot` with the configuration in force if a newer one
    /// has been installed. Called per statement, so the common case is a
    /// single atomic load rather than a load of `current`.
    pub fn refresh(&self, snapshot: &mut Arc<Loaded>) {
        if self.version.load(Ordering::Acquire) != snapshot.version {
            *snapshot = self.current();
        }
    }

    pub fn reload_log(&self) -> ReloadLog {
        self.reload_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads `config_path` and installs it; on any error the running
    /// configuration stays in force and the error is recorded.
    pub fn reload_from_file(&self) -> Result<Arc<Loaded>, ReloadError> {
        let Some(path) = &self.config_path else {
            return Err(self.record_failure("no configuration file to reload".into()));
        };
        match crate::config_file::load(path) {
            Ok(config) => {
                // Reloads run on blocking threads, which may wait on IO.
                let catalogs = match tokio::runtime::Handle::try_current() {
                    Ok(rt) => Some(rt.block_on(self.catalogs_for(&config))),
                    Err(_) => None,
                };
                self.install_with(config, catalogs)
            }
            Err(e) => Err(self.record_failure(e.to_string())),
        }
    }

    /// The catalogs `config`'s rewrite maps need: the ones in force when
    /// still good for it, else read afresh.
    pub async fn catalogs_for(&self, config: &Config) -> Catalogs {
        let current = self.current.load();
        if !current.catalogs.stale_for(config) {
            return current.catalogs.clone();
        }
        read_catalogs(config, self.backend_tls.as_ref()).await
    }

    /// [`Self::install`] after reading the catalogs `config` needs.
    pub async fn install_fresh(&self, config: Config) -> Result<Arc<Loaded>, ReloadError> {
        let catalogs = self.catalogs_for(&config).await;
        self.install_with(config, Some(catalogs))
    }

    /// Installs a validated configuration as the next version. Settings
    /// that only apply at start (listen, tls, max_clients) keep their old
    /// values and a warning says so.
    pub fn install(&self, config: Config) -> Result<Arc<Loaded>, ReloadError> {
        self.install_with(config, None)
    }

    /// `catalogs`: read for this configuration; `None` keeps those in force.
    fn install_with(
        &self,
        config: Config,
        catalogs: Option<Catalogs>,
    ) -> Result<Arc<Loaded>, ReloadError> {
        let mut log = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.current.load_full();
        for key in restart_only_changes(&old.config, &config) {
            tracing::warn!(
                key,
                "changed in the configuration file; takes effect after a restart"
            );
        }
        let catalogs = catalogs.unwrap_or_else(|| old.catalogs.clone());
        let loaded = match Loaded::with_auth(
            old.version + 1,
            config,
            Some(&old),
            catalogs,
            &self.telemetry,
        ) {
            Ok(l) => Arc::new(l),
            Err(e) => {
                drop(log);
                return Err(self.record_failure(format!("{e:#}")));
            }
        };
        self.current.store(Arc::clone(&loaded));
        self.version.store(loaded.version, Ordering::Release);
        log.ok += 1;
        log.last_error = None;
        tracing::info!(version = loaded.version, "configuration loaded");
        Ok(loaded)
    }

    fn record_failure(&self, reason: String) -> ReloadError {
        let mut log = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        log.failed += 1;
        log.last_error = Some(reason.clone());
        let version = self.current.load().version;
        tracing::error!(
            version,
            "reload rejected, version {version} stays in force:\n{reason}"
        );
        ReloadError(reason)
    }
}

fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.listen != new.listen {
        changed.push("listen");
    }
    if old.admin != new.admin {
        changed.push("admin");
    }
    if old.tls != new.tls {
        changed.push("tls");
    }
    if old.limits.max_clients != new.limits.max_clients {
        changed.push("limits.max_clients");
    }
    if old.limits.shutdown_grace != new.limits.shutdown_grace {
        changed.push("limits.shutdown_grace");
    }
    if old.telemetry.otlp_endpoint != new.telemetry.otlp_endpoint {
        changed.push("telemetry.otlp_endpoint");
    }
    changed
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
    admin_addr: Option<SocketAddr>,
    shutdown: Shutdown,
    done: CancellationToken,
    shared: Arc<Shared>,
    reloader: Arc<crate::reload::Reloader>,
    /// The admin server and the reload triggers; they stop on `draining`.
    background: TaskTracker,
    task: tokio::task::JoinHandle<()>,
}

/// Binds the listener and starts serving in the background.
pub async fn start(config: Config) -> anyhow::Result<Proxy> {
    start_with(config, None).await
}

/// Like [`start`], remembering the file the config came from so it can be
/// reloaded.
pub async fn start_with(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<Proxy> {
    // As close as we get to the read that produced `config`: whatever the
    // file holds after this is a change to reload.
    let on_disk = config_path
        .as_deref()
        .and_then(|p| crate::reload::read_config(p).ok());
    let client_tls = match &config.tls {
        Some(files) => Some(crate::tls::acceptor(&files.cert, &files.key)?),
        None => None,
    };
    let backend_tls = Some(crate::tls::backend_connector()?);
    let catalogs = if Catalogs::default().stale_for(&config) {
        read_catalogs(&config, backend_tls.as_ref()).await
    } else {
        Catalogs::default()
    };
    let listen = config.listen.clone();
    let admin = config.admin.clone();
    let max_clients = config.limits.max_clients;
    let grace = config.limits.shutdown_grace;
    let telemetry = Telemetry::new(&config)?;
    let probing = telemetry.observed(&config);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let session_threads = Workers::from_env("pgshift-session", "PGSHIFT_THREADS", cpus)
        .context("cannot start the session threads")?;
    let shared = Arc::new(Shared {
        current: ArcSwap::from_pointee(Loaded::new(1, config, catalogs, &telemetry)?),
        version: AtomicU64::new(1),
        config_path,
        reload_lock: std::sync::Mutex::new(ReloadLog::default()),
        client_tls,
        backend_tls,
        cancels: Arc::new(CancelRegistry::default()),
        classifier: Classifier::new(CLASSIFIER_CAPACITY),
        mirroring: crate::mirror::MirrorHub::default(),
        prepared: Arc::default(),
        mirror_tasks: Default::default(),
        digests: crate::stats::DigestStore::new(crate::stats::DEFAULT_CAPACITY),
        telemetry,
    });
    shared.telemetry.observe(Arc::downgrade(&shared));
    let shutdown = Shutdown::default();
    let done = CancellationToken::new();
    let reloader = crate::reload::Reloader::new(Arc::clone(&shared), on_disk);
    // Watching starts before anything is reachable, so an edit made once
    // the proxy answers is never missed.
    let watching = shared
        .config_path
        .is_some()
        .then(|| crate::reload::watch_file(Arc::clone(&reloader), shutdown.draining.clone()));
    let listener = TcpListener::bind((listen.host.as_str(), listen.port))
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local_addr = listener.local_addr()?;
    let admin_listener = match &admin {
        Some(addr) => Some(crate::admin::bind(addr).await?),
        None => None,
    };
    let admin_addr = admin_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let background = TaskTracker::new();
    if let Some(watching) = watching {
        background.spawn(watching);
    }
    if probing {
        background.spawn(crate::telemetry::health::probe_idle_backends(
            Arc::clone(&shared),
            shutdown.draining.clone(),
        ));
    }
    if let Some(admin) = admin_listener {
        background.spawn(crate::admin::serve(
            admin,
            Arc::clone(&reloader),
            shutdown.draining.clone(),
        ));
    }
    let task = tokio::spawn({
        let done = done.clone();
        let shared_for_flush = Arc::clone(&shared);
        let background = background.clone();
        let serving = serve(
            listener,
            session_threads,
            Arc::clone(&shared),
            shutdown.clone(),
            max_clients,
            grace,
        );
        async move {
            serving.await;
            background.close();
            if tokio::time::timeout(Duration::from_secs(5), background.wait())
                .await
                .is_err()
            {
                tracing::warn!("admin server or reload watcher did not stop in time");
            }
            // The last metrics reach the collector before the proxy
            // reports itself finished.
            let flushing = Arc::clone(&shared_for_flush);
            let _ = tokio::task::spawn_blocking(move || flushing.telemetry.shutdown()).await;
            done.cancel();
        }
    });
    tracing::info!(%local_addr, "pgshift listening");
    if let Some(admin_addr) = admin_addr {
        tracing::info!(%admin_addr, "admin HTTP listening");
    }
    Ok(Proxy {
        local_addr,
        admin_addr,
        shutdown,
        done,
        shared,
        reloader,
        background,
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

    /// Where the admin HTTP server listens, when `admin` is configured
    /// (with port 0, the port the OS picked).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Reloads on behalf of every trigger (file watch, SIGHUP, POST /reload).
    pub fn reloader(&self) -> &Arc<crate::reload::Reloader> {
        &self.reloader
    }

    /// Reload on every SIGHUP until shutdown. Opt-in, so a proxy inside a
    /// test binary leaves that process's signals alone; `hangup` is made by
    /// the caller before [`start_with`], so an early SIGHUP cannot kill it.
    pub fn reload_on_sighup(&self, hangup: tokio::signal::unix::Signal) {
        self.background.spawn(crate::reload::reload_on_sighup(
            Arc::clone(&self.reloader),
            hangup,
            self.shutdown.draining.clone(),
        ));
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
    threads: Workers,
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
                // The socket moves to the session's thread, whose runtime
                // then owns its readiness.
                let tcp = match tcp.into_std() {
                    Ok(tcp) => tcp,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "cannot hand the connection to a session thread");
                        continue;
                    }
                };
                let shared = Arc::clone(&shared);
                let shutdown = shutdown.clone();
                let open = SessionOpen::new(&shared);
                threads.spawn(sessions.track_future(async move {
                    match TcpStream::from_std(tcp) {
                        Ok(tcp) => session::run(tcp, peer, shared, shutdown).await,
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "cannot register the connection")
                        }
                    }
                    drop(open);
                    drop(permit);
                }));
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
    let deadline = tokio::time::Instant::now() + grace;
    let drained = tokio::time::timeout_at(deadline, sessions.wait())
        .await
        .is_ok();
    // Mirrors finish replaying what their sessions queued, within the same
    // grace period: a dual write still queued at exit would be lost.
    shared.mirror_tasks.close();
    let mirrored = drained
        && tokio::time::timeout_at(deadline, shared.mirror_tasks.wait())
            .await
            .is_ok();
    if !mirrored {
        tracing::warn!(
            sessions = sessions.len(),
            mirrors = shared.mirror_tasks.len(),
            "grace period over, closing remaining sessions and mirrors"
        );
        shutdown.force.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), sessions.wait()).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), shared.mirror_tasks.wait()).await;
    }
    let _ = tokio::task::spawn_blocking(move || {
        threads.stop();
        shared.mirror_tasks.stop();
    })
    .await;
    tracing::info!("shutdown complete");
}

/// Counts a client connection in `pgshift_sessions` while it lives,
/// however its task ends.
struct SessionOpen(Arc<Shared>);

impl SessionOpen {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.telemetry.session_opened();
        SessionOpen(Arc::clone(shared))
    }
}

impl Drop for SessionOpen {
    fn drop(&mut self) {
        self.0.telemetry.session_closed();
    }
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
