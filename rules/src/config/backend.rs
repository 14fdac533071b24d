//! The two backends and how to reach them.

use std::fmt;

use super::names::named_enum;

named_enum! {
    /// One of the two databases. `as usize` is 0 for old, 1 for new, so
    /// per-backend state can live in `[T; 2]`.
    pub enum BackendId {
        Old = "old",
        New = "new",
    }
}

impl BackendId {
    pub fn other(self) -> BackendId {
        match self {
            BackendId::Old => BackendId::New,
            BackendId::New => BackendId::Old,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone)]
pub struct Backends {
    pub old: Backend,
    pub new: Backend,
}

impl Backends {
    pub fn get(&self, id: BackendId) -> &Backend {
        match id {
            BackendId::Old => &self.old,
            BackendId::New => &self.new,
        }
    }
}

impl std::ops::Index<BackendId> for Backends {
    type Output = Backend;
    fn index(&self, id: BackendId) -> &Backend {
        self.get(id)
    }
}

named_enum! {
    /// TLS towards a backend, with libpq's sslmode meanings.
    pub enum BackendTls {
        Disable = "disable",
        /// Try TLS, fall back to plain text if the server refuses.
        Prefer = "prefer",
        /// TLS or fail (the certificate is not verified, as in libpq).
        Require = "require",
    }
}

/// Where and how to connect to one backend. `Debug` hides the password.
#[derive(Clone)]
pub struct Backend {
    /// The URL for display: canonical form, password replaced by `****`.
    /// Connect with the parsed fields below, not with this.
    pub url: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    /// Defaults to the user name, as in libpq.
    pub database: String,
    pub tls: BackendTls,
    /// Extra startup parameters from the URL query (application_name,
    /// options, ...), in URL order.
    pub options: Vec<(String, String)>,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("url", &self.url)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "****"))
            .field("database", &self.database)
            .field("tls", &self.tls)
            .field("options", &self.options)
            .finish()
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}
