//! The rewrite maps of a configuration, with the backends' catalogs they
//! are checked against: which catalogs a configuration needs, reading them,
//! checking the maps, and building one [`Rewriter`] per backend.

use std::sync::Arc;
use std::time::Duration;

use pgshift_rules::config::{BackendId, Config};
use pgshift_rules::rewrite::{self, Catalog, Rewriter};

use crate::catalog::{self, CatalogError};

/// Rewritten statements remembered per backend.
const REWRITE_CACHE: usize = 10_000;

/// The catalogs a configuration was checked against.
#[derive(Clone, Default)]
pub struct Catalogs {
    pub by_backend: [Option<Arc<Catalog>>; 2],
    /// The `rewrite:` section they were read for: an unchanged section is
    /// not worth reading them again on every reload.
    read_for: Option<String>,
}

impl Catalogs {
    pub fn get(&self, b: BackendId) -> Option<&Arc<Catalog>> {
        self.by_backend[b.index()].as_ref()
    }

    /// Whether loading `config` should read the catalogs first. Never under
    /// `rollback: true`: the switch must take effect at once even when a
    /// backend is down.
    pub fn stale_for(&self, config: &Config) -> bool {
        if config.rollback || !has_rewrites(config) {
            return false;
        }
        let missing = BackendId::ALL
            .iter()
            .any(|&b| !config.rewrite.get(b).is_empty() && self.get(b).is_none());
        missing || self.read_for.as_deref() != Some(section(config).as_str())
    }

    /// Reads both catalogs for `config`. A backend that cannot be read is
    /// logged and left out: its map is then used unchecked, and `SELECT *`
    /// over tables with renamed columns is not expanded.
    pub async fn read(
        config: &Config,
        tls: Option<&tokio_rustls::TlsConnector>,
        timeout: Duration,
    ) -> (Catalogs, Vec<CatalogError>) {
        let [old, new] = catalog::fetch_both(config, tls, timeout).await;
        let mut out = Catalogs {
            read_for: Some(section(config)),
            ..Catalogs::default()
        };
        let mut errors = Vec::new();
        for (b, r) in [(BackendId::Old, old), (BackendId::New, new)] {
            match r {
                Ok(c) => out.by_backend[b.index()] = Some(Arc::new(c)),
                Err(e) => errors.push(e),
            }
        }
        (out, errors)
    }

    /// Every problem of `config`'s rewrite maps against the catalogs known.
    pub fn check(&self, config: &Config) -> Vec<String> {
        let mut problems = Vec::new();
        for &b in BackendId::ALL {
            let map = config.rewrite.get(b);
            if map.is_empty() {
                continue;
            }
            let Some(target) = self.get(b) else { continue };
            let source = self.get(b.other()).map(|c| &**c);
            for p in rewrite::validate(map, target, source) {
                problems.push(format!("rewrite.{b}: {p}"));
            }
        }
        problems
    }
}

fn has_rewrites(config: &Config) -> bool {
    BackendId::ALL
        .iter()
        .any(|&b| !config.rewrite.get(b).is_empty())
}

/// The section as text, for telling whether it changed.
fn section(config: &Config) -> String {
    format!("{:?}", config.rewrite)
}

/// Per backend: its rewriter, when its schema differs.
pub type Rewriters = [Option<Arc<Rewriter>>; 2];

/// One rewriter per backend with a non-empty map; a previous one is kept
/// (with its cache) when neither the map nor the catalogs changed.
pub fn rewriters(
    config: &Config,
    catalogs: &Catalogs,
    previous: Option<(&Config, &Catalogs, &Rewriters)>,
) -> Rewriters {
    [BackendId::Old, BackendId::New].map(|b| {
        let map = config.rewrite.get(b);
        if map.is_empty() {
            return None;
        }
        let (target, source) = (catalogs.get(b).cloned(), catalogs.get(b.other()).cloned());
        if let Some((pc, pcat, pr)) = previous {
            let same_map = format!("{:?}", pc.rewrite.get(b)) == format!("{map:?}");
            let same_cat = |x: Option<&Arc<Catalog>>, y: Option<&Arc<Catalog>>| match (x, y) {
                (Some(x), Some(y)) => Arc::ptr_eq(x, y),
                (None, None) => true,
                _ => false,
            };
            if same_map
                && same_cat(pcat.get(b), catalogs.get(b))
                && same_cat(pcat.get(b.other()), catalogs.get(b.other()))
            {
                if let Some(r) = &pr[b.index()] {
                    return Some(Arc::clone(r));
                }
            }
        }
        let r = Rewriter::new(map, target, source, REWRITE_CACHE);
        (!r.is_noop()).then(|| Arc::new(r))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        let base = "backends:\n  old: { url: \"postgres://a@127.0.0.1:1/a\" }\n  new: { url: \"postgres://a@127.0.0.1:2/a\" }\nauth: { method: trust }\n";
        pgshift_rules::config::parse_config(&format!("{base}{yaml}"), &|_| None).unwrap()
    }

    const MAP: &str = "rewrite:\n  new:\n    tables: { users: accounts }\n";

    /// What `Catalogs::read` leaves behind when both backends answered.
    fn read_for(config: &Config) -> Catalogs {
        let mut c = Catalogs {
            read_for: Some(section(config)),
            ..Catalogs::default()
        };
        for b in [BackendId::Old, BackendId::New] {
            c.by_backend[b.index()] = Some(Arc::new(Catalog::new(vec!["public".into()])));
        }
        c
    }

    #[test]
    fn catalogs_are_read_only_when_the_maps_need_them() {
        let none = Catalogs::default();
        assert!(!none.stale_for(&config("")), "no rewrite: nothing to read");
        let with_map = config(MAP);
        assert!(none.stale_for(&with_map), "a map and no catalog yet");
        let current = read_for(&with_map);
        assert!(!current.stale_for(&with_map), "the same section again");
        assert!(
            current.stale_for(&config(&format!(
                "{MAP}    columns: {{ users.email: email_address }}\n"
            ))),
            "a changed section"
        );
        let mut missing = current.clone();
        missing.by_backend[BackendId::New.index()] = None;
        assert!(
            missing.stale_for(&with_map),
            "new's catalog could not be read before"
        );
        // The rollback switch must never wait for a backend (guarantee 5).
        assert!(!none.stale_for(&config(&format!("rollback: true\n{MAP}"))));
        assert!(!missing.stale_for(&config(&format!("rollback: true\n{MAP}"))));
    }
}
