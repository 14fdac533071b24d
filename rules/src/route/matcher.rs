//! Does one rule apply to one statement of one session?

use std::net::IpAddr;

use super::bucket::{bucket, canonical_addr, in_percent};
use super::patterns::SqlMatcher;
use super::SessionContext;
use crate::classify::Statement;
use crate::config::{Rule, Sticky, TableName};

/// The first criterion of a rule that a statement failed, in the order they
/// are checked (cheapest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criterion {
    Kind,
    User,
    Database,
    ApplicationName,
    ClientAddr,
    Tables,
    Sql,
}

impl Criterion {
    pub fn as_str(self) -> &'static str {
        match self {
            Criterion::Kind => "kind",
            Criterion::User => "user",
            Criterion::Database => "database",
            Criterion::ApplicationName => "application_name",
            Criterion::ClientAddr => "client_addr",
            Criterion::Tables => "tables",
            Criterion::Sql => "sql",
        }
    }
}

/// The outcome of checking one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Mismatch(Criterion),
    /// Every criterion matched but the session's bucket is not inside the
    /// rule's percent: the rule does not apply, later rules are tried.
    OutsidePercent {
        bucket: u16,
    },
    /// The rule applies; `bucket` is set when its percent is below 100.
    Match {
        bucket: Option<u16>,
    },
}

/// The sticky key of each dimension, hashed at most once per statement.
pub(super) struct Buckets<'c, 'a> {
    ctx: &'c SessionContext<'a>,
    cached: [Option<u16>; 4],
}

impl<'c, 'a> Buckets<'c, 'a> {
    pub(super) fn new(ctx: &'c SessionContext<'a>) -> Self {
        Buckets {
            ctx,
            cached: [None; 4],
        }
    }

    pub(super) fn get(&mut self, sticky: Sticky) -> u16 {
        let slot = &mut self.cached[sticky as usize];
        *slot.get_or_insert_with(|| bucket(sticky, &sticky_key(self.ctx, sticky)))
    }
}

/// The text a session's bucket is computed from (see [`super::bucket`]).
pub fn sticky_key(ctx: &SessionContext<'_>, sticky: Sticky) -> String {
    match sticky {
        Sticky::Session => ctx.session_key.to_string(),
        Sticky::User => ctx.user.to_owned(),
        Sticky::ApplicationName => ctx.application_name.to_owned(),
        Sticky::ClientAddr => ctx
            .client_addr
            .map(|a| canonical_addr(a).to_string())
            .unwrap_or_default(),
    }
}

/// What evaluating rules for one statement computes at most once.
pub(super) struct Lazy<'s, 'c, 'a> {
    pub(super) buckets: Buckets<'c, 'a>,
    pub(super) sql: SqlMatcher<'s>,
}

/// Checks rule number `index`.
pub(super) fn evaluate(
    index: usize,
    rule: &Rule,
    stmt: &Statement,
    ctx: &SessionContext<'_>,
    lazy: &mut Lazy<'_, '_, '_>,
) -> Verdict {
    if let Some(failed) = failed_criterion(index, rule, stmt, ctx, &mut lazy.sql) {
        return Verdict::Mismatch(failed);
    }
    if rule.percent >= 100 {
        return Verdict::Match { bucket: None };
    }
    let bucket = lazy.buckets.get(rule.sticky);
    if in_percent(bucket, rule.percent) {
        Verdict::Match {
            bucket: Some(bucket),
        }
    } else {
        Verdict::OutsidePercent { bucket }
    }
}

fn failed_criterion(
    index: usize,
    rule: &Rule,
    stmt: &Statement,
    ctx: &SessionContext<'_>,
    sql: &mut SqlMatcher<'_>,
) -> Option<Criterion> {
    let m = &rule.matcher;
    if m.kinds.is_some_and(|k| !k.contains(stmt.kind)) {
        return Some(Criterion::Kind);
    }
    if !listed(&m.user, ctx.user) {
        return Some(Criterion::User);
    }
    if !listed(&m.database, ctx.database) {
        return Some(Criterion::Database);
    }
    if !listed(&m.application_name, ctx.application_name) {
        return Some(Criterion::ApplicationName);
    }
    if !m.client_addr.is_empty() && !ctx.client_addr.is_some_and(|a| in_networks(rule, a)) {
        return Some(Criterion::ClientAddr);
    }
    if !m.tables.is_empty() && !m.tables.iter().any(|t| touches(&stmt.tables, t)) {
        return Some(Criterion::Tables);
    }
    if !sql.is_match(index, rule) {
        return Some(Criterion::Sql);
    }
    None
}

/// An empty list is no condition.
fn listed(list: &[String], value: &str) -> bool {
    list.is_empty() || list.iter().any(|v| v == value)
}

fn in_networks(rule: &Rule, addr: IpAddr) -> bool {
    let addr = canonical_addr(addr);
    rule.matcher
        .client_addr
        .iter()
        .any(|net| net.contains(&addr))
}

/// A rule's table without a schema matches that name in any schema (or
/// none); a schema-qualified one matches only a statement that names the
/// same schema. An unqualified name in SQL resolves through the session's
/// search_path, which the proxy does not know, so it never matches a
/// qualified rule entry: list the bare name to catch it.
fn touches(tables: &[TableName], wanted: &TableName) -> bool {
    tables.iter().any(|t| {
        t.name == wanted.name
            && match &wanted.schema {
                None => true,
                Some(schema) => t.schema.as_ref() == Some(schema),
            }
    })
}
