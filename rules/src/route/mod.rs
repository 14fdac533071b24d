//! Routing: which backend is a statement's primary, and whether it is
//! mirrored and compared, given the compiled rules and the session.
//!
//! Rules are tried in file order and the first that applies wins. A rule
//! applies when every criterion it has matches the statement and the
//! session, and the session's sticky bucket is inside the rule's percent.
//! A rule whose criteria match but whose bucket is outside its percent does
//! not apply and evaluation goes on, so "10% of reads on users to new" can
//! be followed by rules (or the defaults) for the other 90%.

mod bucket;
mod explain;
mod matcher;
mod patterns;

use std::net::IpAddr;

use crate::classify::Statement;
use crate::config::BackendId;
use crate::config::{Config, Route, Rule};

pub use bucket::{bucket, in_percent, BUCKETS};
pub use explain::explain;
pub use matcher::{sticky_key, Criterion, Verdict};

use matcher::{evaluate, Buckets, Lazy};
use patterns::SqlPatterns;

/// What routing knows about the session a statement comes from.
#[derive(Debug, Clone, Copy)]
pub struct SessionContext<'a> {
    pub user: &'a str,
    pub database: &'a str,
    /// Empty when the client sent none.
    pub application_name: &'a str,
    /// `None` for Unix-socket clients.
    pub client_addr: Option<IpAddr>,
    /// Random per session; the sticky key of `sticky: session` rules.
    pub session_key: u64,
}

/// Where one statement goes and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Index into `config.rules` of the rule that applied; `None` for the
    /// defaults (or rollback).
    pub rule: Option<usize>,
    pub route: Route,
    /// The session's bucket (0..10000) for the last rule with a percent
    /// below 100 whose criteria all matched, whether or not the bucket was
    /// inside it. `None` when no such rule was consulted.
    pub bucket: Option<u16>,
}

/// The routing half of a configuration, cheap to share and to swap on
/// reload.
#[derive(Debug, Clone)]
pub struct Router {
    rollback: bool,
    defaults: Route,
    rules: Vec<Rule>,
    sql_patterns: SqlPatterns,
}

impl Router {
    pub fn new(config: &Config) -> Self {
        Router {
            rollback: config.rollback,
            defaults: config.defaults,
            rules: config.rules.clone(),
            sql_patterns: SqlPatterns::new(&config.rules),
        }
    }

    /// Routes `stmt`, whose own text (for `match.sql`) is `sql`: usually
    /// `stmt.text(query)`.
    pub fn route(&self, stmt: &Statement, sql: &str, ctx: &SessionContext<'_>) -> Decision {
        self.route_with(stmt, sql, ctx, |_, _| {})
    }

    /// [`Router::route`], reporting the verdict of each rule it checks.
    pub(crate) fn route_with(
        &self,
        stmt: &Statement,
        sql: &str,
        ctx: &SessionContext<'_>,
        mut observe: impl FnMut(usize, Verdict),
    ) -> Decision {
        if self.rollback {
            return Decision {
                rule: None,
                route: Route::OLD_ONLY,
                bucket: None,
            };
        }
        let mut lazy = Lazy {
            buckets: Buckets::new(ctx),
            sql: self.sql_patterns.matcher(sql),
        };
        let mut consulted = None;
        for (i, rule) in self.rules.iter().enumerate() {
            let verdict = evaluate(i, rule, stmt, ctx, &mut lazy);
            observe(i, verdict);
            match verdict {
                Verdict::Mismatch(_) => {}
                Verdict::OutsidePercent { bucket } => consulted = Some(bucket),
                Verdict::Match { bucket } => {
                    return Decision {
                        rule: Some(i),
                        route: rule.route(),
                        bucket: bucket.or(consulted),
                    };
                }
            }
        }
        Decision {
            rule: None,
            route: self.defaults,
            bucket: consulted,
        }
    }

    pub fn rollback(&self) -> bool {
        self.rollback
    }

    /// The primary every statement gets when no rule can apply (rollback,
    /// or no rules and no mirror): routing then needs no classification.
    pub fn constant_primary(&self) -> Option<BackendId> {
        if self.rollback {
            Some(BackendId::Old)
        } else if self.rules.is_empty() && self.defaults.mirror.is_none() {
            Some(self.defaults.primary)
        } else {
            None
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn defaults(&self) -> Route {
        self.defaults
    }
}
