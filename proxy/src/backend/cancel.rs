//! Cancel requests: the client holds pgshift's key, not the backend's.
//!
//! A client gets the real pid of its first backend (so `pg_backend_pid()`
//! agrees with what the driver reports) and a secret of pgshift's own. A
//! CancelRequest carrying that pair is looked up here and re-sent, with the
//! backend's own key, to whichever backend the session is using.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use dashmap::DashMap;
use pgshift_protocol::encode;
use pgshift_rules::config::{BackendId, BackendTls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::connect::{open_stream, CancelKey};

/// The backends a session may have a statement running on.
#[derive(Default)]
pub struct SessionCancel {
    targets: Mutex<Vec<(BackendId, CancelKey)>>,
}

impl SessionCancel {
    pub fn set(&self, id: BackendId, key: CancelKey) {
        let mut t = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        t.retain(|(b, _)| *b != id);
        t.push((id, key));
    }

    fn snapshot(&self) -> Vec<(BackendId, CancelKey)> {
        self.targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[derive(Default)]
pub struct CancelRegistry {
    sessions: DashMap<(u32, [u8; 4]), Arc<SessionCancel>>,
}

/// Removes the session's key when the session ends, however it ends.
pub struct Registration {
    registry: Arc<CancelRegistry>,
    key: (u32, [u8; 4]),
}

impl Registration {
    pub fn secret(&self) -> [u8; 4] {
        self.key.1
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.sessions.remove(&self.key);
    }
}

impl CancelRegistry {
    /// Issues a fresh secret for `pid` and registers the session under it.
    pub fn register(self: &Arc<Self>, pid: u32, session: Arc<SessionCancel>) -> Registration {
        loop {
            let secret: [u8; 4] = rand::random();
            let key = (pid, secret);
            if let dashmap::Entry::Vacant(v) = self.sessions.entry(key) {
                v.insert(session);
                return Registration {
                    registry: Arc::clone(self),
                    key,
                };
            }
        }
    }

    fn lookup(&self, pid: u32, secret: &[u8]) -> Option<Arc<SessionCancel>> {
        let secret: [u8; 4] = secret.try_into().ok()?;
        self.sessions
            .get(&(pid, secret))
            .map(|s| Arc::clone(s.value()))
    }

    /// Forwards a client's CancelRequest. Unknown keys are ignored silently,
    /// as Postgres does, so a guesser learns nothing.
    pub async fn cancel(
        &self,
        pid: u32,
        secret: &[u8],
        tls: Option<&tokio_rustls::TlsConnector>,
    ) -> usize {
        let Some(session) = self.lookup(pid, secret) else {
            tracing::debug!(pid, "cancel request with an unknown key");
            return 0;
        };
        let mut sent = 0;
        for (id, key) in session.snapshot() {
            match send_cancel(id, &key, tls).await {
                Ok(_) => sent += 1,
                Err(e) => {
                    tracing::warn!(backend = %id, error = %e, "could not forward cancel request")
                }
            }
        }
        sent
    }
}

/// Sends a CancelRequest; `true` once Postgres has acted on it (it closes
/// the connection then), `false` if it has not within 5 s.
pub(crate) async fn send_cancel(
    id: BackendId,
    key: &CancelKey,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> anyhow::Result<bool> {
    // A cancel needs TLS only where the backend insists on it.
    let mode = match key.tls {
        BackendTls::Require => BackendTls::Require,
        _ => BackendTls::Disable,
    };
    let mut stream = open_stream(id, &key.host, key.port, mode, tls).await?;
    let mut buf = BytesMut::new();
    encode::cancel_request(&mut buf, key.pid, &key.secret);
    stream.write_all(&buf).await?;
    stream.flush().await?;
    // Postgres closes the connection once it has acted on the request.
    let mut sink = [0u8; 64];
    let acted = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut sink)).await;
    Ok(acted.is_ok())
}
