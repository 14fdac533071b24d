//! The compiled configuration: everything validated, defaults filled in.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;

use super::backend::{BackendId, Backends};
use super::ident::TableName;
use super::names::named_enum;
use super::rule::Rule;
use super::secret::Secret;

/// A validated pgshift configuration. `Debug` hides secrets.
#[derive(Clone)]
pub struct Config {
    /// Client-facing Postgres listener.
    pub listen: ListenAddr,
    /// Admin HTTP listener, if enabled.
    pub admin: Option<ListenAddr>,
    /// Bearer token required for admin POSTs when set.
    pub admin_token: Option<String>,
    /// TLS for client connections.
    pub tls: Option<TlsFiles>,
    pub limits: Limits,
    pub telemetry: Telemetry,
    pub backends: Backends,
    pub auth: Auth,
    /// The big switch: everything to old, no mirroring, rules ignored.
    pub rollback: bool,
    /// The route of statements no rule matches.
    pub defaults: Route,
    pub mirror: MirrorSettings,
    pub compare: CompareSettings,
    /// In file order; the first match wins.
    pub rules: Vec<Rule>,
    pub rewrite: Rewrites,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("admin", &self.admin)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "****"))
            .field("tls", &self.tls)
            .field("limits", &self.limits)
            .field("telemetry", &self.telemetry)
            .field("backends", &self.backends)
            .field("auth", &self.auth)
            .field("rollback", &self.rollback)
            .field("defaults", &self.defaults)
            .field("mirror", &self.mirror)
            .field("compare", &self.compare)
            .field("rules", &self.rules)
            .field("rewrite", &self.rewrite)
            .finish()
    }
}

/// `host:port` to listen on. The host is kept as written (it may be a name
/// such as `localhost`, resolved by whoever binds).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenAddr {
    /// IP literal (IPv6 without brackets) or host name.
    pub host: String,
    /// 0 asks the OS for a free port.
    pub port: u16,
}

impl ListenAddr {
    /// The address when the host is an IP literal; None for names.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.host.parse().ok()?;
        Some(SocketAddr::new(ip, self.port))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Certificate and key (PEM) for client-facing TLS, paths as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent client connections; more are refused. Default 1000.
    pub max_clients: usize,
    /// Time a client has to finish startup and authentication. Default 10s.
    pub startup_timeout: Duration,
    /// Largest protocol message accepted from either side. Default 1GiB.
    pub max_message_size: usize,
    /// How long shutdown waits for sessions to finish. Default 30s.
    pub shutdown_grace: Duration,
    /// Silence on a client or backend connection after which TCP
    /// keepalive probes start (`None`: no probes). Default 60s.
    pub tcp_keepalive: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: 1000,
            startup_timeout: Duration::from_secs(10),
            max_message_size: 1 << 30,
            shutdown_grace: Duration::from_secs(30),
            tcp_keepalive: Some(Duration::from_secs(60)),
        }
    }
}

named_enum! {
    pub enum LogFormat {
        Text = "text",
        Json = "json",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Telemetry {
    /// OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`.
    pub otlp_endpoint: Option<String>,
    pub log_format: LogFormat,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            otlp_endpoint: None,
            log_format: LogFormat::Text,
        }
    }
}

named_enum! {
    /// How clients authenticate to pgshift.
    pub enum AuthMethod {
        ScramSha256 = "scram-sha-256",
        Md5 = "md5",
        Trust = "trust",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub method: AuthMethod,
    pub users: Vec<AuthUser>,
}

impl Auth {
    pub fn user(&self, name: &str) -> Option<&AuthUser> {
        self.users.iter().find(|u| u.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    pub name: String,
    /// None only with `method: trust`.
    pub secret: Option<Secret>,
}

/// Where a statement goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// The backend whose answer the client gets.
    pub primary: BackendId,
    /// Replays the statement there too; never equal to `primary`.
    pub mirror: Option<BackendId>,
    /// Compare mirrored results; only with a mirror.
    pub compare: bool,
}

impl Route {
    /// Everything to old, nothing mirrored: the rollback route.
    pub const OLD_ONLY: Route = Route {
        primary: BackendId::Old,
        mirror: None,
        compare: false,
    };
}

impl Default for Route {
    fn default() -> Self {
        Route::OLD_ONLY
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "primary={}", self.primary)?;
        match self.mirror {
            Some(m) => write!(f, " mirror={m}")?,
            None => f.write_str(" mirror=none")?,
        }
        if self.compare {
            f.write_str(" compare")?;
        }
        Ok(())
    }
}

named_enum! {
    pub enum MirrorMode {
        /// The client never waits for the mirror.
        Async = "async",
        /// The client waits for both backends.
        Sync = "sync",
    }
}

named_enum! {
    /// What happens when a session's mirror queue is full.
    pub enum OverflowPolicy {
        /// Drop the rest of the transaction for the mirror; session diverged.
        Drop = "drop",
        /// Make the client wait for room.
        Block = "block",
    }
}

named_enum! {
    /// Sync mode: what the client sees when only the mirror fails.
    pub enum MirrorErrorPolicy {
        Ignore = "ignore",
        Fail = "fail",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSettings {
    pub mode: MirrorMode,
    /// Per-session bound on statements waiting for the mirror (>= 1).
    pub queue: usize,
    pub on_overflow: OverflowPolicy,
    /// Only consulted in sync mode.
    pub on_mirror_error: MirrorErrorPolicy,
    /// Bound on the read-your-writes wait for the session's mirror queue.
    pub read_your_writes_wait: Duration,
}

impl Default for MirrorSettings {
    fn default() -> Self {
        MirrorSettings {
            mode: MirrorMode::Async,
            queue: 10_000,
            on_overflow: OverflowPolicy::Drop,
            on_mirror_error: MirrorErrorPolicy::Ignore,
            read_your_writes_wait: Duration::from_millis(50),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompareSettings {
    /// Percent (0-100) of mirrored reads whose results are compared.
    pub sample: u8,
    /// Column names, normalised like SQL identifiers (unquoted folds to lower case).
    pub ignore_columns: Vec<String>,
    /// Absolute tolerance for float comparison; finite and >= 0.
    pub float_tolerance: f64,
    /// JSON-lines mismatch log.
    pub log: Option<PathBuf>,
    pub redact_literals: bool,
    pub log_values: bool,
}

impl Default for CompareSettings {
    fn default() -> Self {
        CompareSettings {
            sample: 100,
            ignore_columns: Vec::new(),
            float_tolerance: 0.0,
            log: None,
            redact_literals: true,
            log_values: false,
        }
    }
}

/// Per-backend rewrites applied to every statement sent to that backend.
#[derive(Debug, Clone, Default)]
pub struct Rewrites {
    pub old: RewriteMap,
    pub new: RewriteMap,
}

impl Rewrites {
    pub fn get(&self, id: BackendId) -> &RewriteMap {
        match id {
            BackendId::Old => &self.old,
            BackendId::New => &self.new,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RewriteMap {
    /// (table as the application names it, table on this backend).
    pub tables: Vec<(TableName, TableName)>,
    /// (table, column as the application names it, column on this backend).
    pub columns: Vec<(TableName, String, String)>,
    /// Regex replacements on the SQL text, applied in order after the
    /// AST-based renames. `$1`/`${name}` in the replacement refer to groups.
    pub replace: Vec<(Regex, String)>,
}

impl RewriteMap {
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.columns.is_empty() && self.replace.is_empty()
    }
}
