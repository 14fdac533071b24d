//! Finding a prepared transaction this pgshift does not remember: one
//! prepared before it restarted, or through another pgshift in front of
//! the same databases. Its second phase must still reach every backend
//! that holds it, or the one left over keeps its locks and holds back
//! vacuum until someone finds it in `pg_prepared_xacts` by hand.

use std::time::Duration;

use bytes::BytesMut;
use pgshift_protocol::backend::tag;
use pgshift_protocol::encode;
use pgshift_rules::config::{BackendId, Config};

use crate::backend::oneshot::{ask, Asking};

/// A lookup waits at most this long per backend, whatever
/// `startup_timeout` allows: a backend that does not answer is taken not to
/// hold the transaction.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Sessions connect with the backend's own user and database, so a
/// transaction they prepared is in this database.
const HOLDS_SQL: &str = "SELECT 1 FROM pg_catalog.pg_prepared_xacts \
     WHERE gid = $1 AND database = pg_catalog.current_database()";

/// Lookups running at once, across sessions; more wait their turn.
pub const MAX_LOOKUPS: usize = 4;

impl super::PreparedXacts {
    /// Which backends hold a transaction prepared as `gid`, indexed by
    /// [`BackendId::index`]. A backend that cannot be asked counts as not
    /// holding it, and is logged; so does every backend when no lookup
    /// could start within [`LOOKUP_TIMEOUT`].
    pub async fn holders(
        &self,
        config: &Config,
        tls: Option<&tokio_rustls::TlsConnector>,
        gid: &str,
    ) -> [bool; 2] {
        let permit = tokio::time::timeout(LOOKUP_TIMEOUT, self.lookups.acquire()).await;
        let Ok(Ok(_permit)) = permit else {
            tracing::warn!(
                gid,
                "too many prepared transactions being looked up at once: this one is not"
            );
            return [false, false];
        };
        let (old, new) = tokio::join!(
            holds(config, tls, BackendId::Old, gid),
            holds(config, tls, BackendId::New, gid)
        );
        [old, new]
    }
}

async fn holds(
    config: &Config,
    tls: Option<&tokio_rustls::TlsConnector>,
    id: BackendId,
    gid: &str,
) -> bool {
    let how = Asking {
        id,
        target: config.backends.get(id),
        tls,
        max_message_size: config.limits.max_message_size,
        timeout: config.limits.startup_timeout.min(LOOKUP_TIMEOUT),
        application_name: "pgshift prepared transaction lookup",
    };
    let mut request = BytesMut::new();
    encode::parse(&mut request, "", HOLDS_SQL, &[TEXT_OID]);
    encode::bind(&mut request, "", "", &[Some(gid.as_bytes())], &[]);
    encode::execute(&mut request, "", 1);
    encode::sync(&mut request);
    let mut found = false;
    let asked = ask(&how, request, |frame| {
        found |= frame.tag() == tag::DATA_ROW;
        Ok(())
    })
    .await;
    match asked {
        Ok(()) => found,
        Err(e) => {
            tracing::warn!(backend = %id, gid, error = %e, "could not look for a prepared transaction there: its second phase goes only where it was found");
            false
        }
    }
}

const TEXT_OID: u32 = 25;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepared::PreparedXacts;

    fn unreachable_backends() -> Config {
        // Port 1 on loopback: refused at once.
        let yaml = "backends:\n  old: { url: \"postgres://a@127.0.0.1:1/a\" }\n  new: { url: \"postgres://a@127.0.0.1:1/b\" }\nauth: { method: trust }\n";
        pgshift_rules::config::parse_config(yaml, &|_| None).unwrap()
    }

    #[tokio::test]
    async fn a_backend_that_cannot_be_asked_does_not_hold_it() {
        let xacts = PreparedXacts::default();
        let got = xacts.holders(&unreachable_backends(), None, "g").await;
        assert_eq!(got, [false, false]);
        assert_eq!(xacts.lookups.available_permits(), MAX_LOOKUPS);
    }

    #[tokio::test(start_paused = true)]
    async fn lookups_beyond_the_limit_give_up_rather_than_pile_up() {
        let xacts = PreparedXacts::default();
        let taken = xacts.lookups.acquire_many(MAX_LOOKUPS as u32).await;
        let started = tokio::time::Instant::now();
        let got = xacts.holders(&unreachable_backends(), None, "g").await;
        assert_eq!(got, [false, false]);
        assert_eq!(started.elapsed(), LOOKUP_TIMEOUT);
        drop(taken);
        assert_eq!(xacts.lookups.available_permits(), MAX_LOOKUPS);
    }
}
