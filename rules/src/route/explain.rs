//! The report `pgshift explain` prints: how a query text is classified,
//! which rule each statement matches and why, and where it goes.

use std::fmt::Write as _;

use super::bucket::in_percent;
use super::matcher::{sticky_key, Verdict};
use super::{Decision, Router, SessionContext};
use crate::classify::{Classification, Classifier, SessionEffect, Statement, TxnControl};
use crate::config::{BackendId, Config, Kind, Rule};

const LABEL: usize = 13;

/// Human-readable explanation of how `sql` is classified and routed for the
/// session `ctx` under `config`.
pub fn explain(
    config: &Config,
    classifier: &Classifier,
    ctx: &SessionContext<'_>,
    sql: &str,
) -> String {
    let router = Router::new(config);
    let text = classifier.classify(sql);
    let mut out = Out(String::new());
    header(&mut out, config, ctx, &text);
    let mut txn = TxnState::Outside;
    for (n, stmt) in text.statements.iter().enumerate() {
        out.blank();
        let own = stmt.text(sql);
        out.raw(&format!("statement {}: {}", n + 1, one_line(own, 200)));
        describe_statement(&mut out, classifier, stmt, own);
        let decision = describe_rules(&mut out, &router, stmt, own, ctx);
        txn = describe_route(&mut out, config, ctx, stmt, n + 1, decision, txn);
    }
    out.0
}

fn header(out: &mut Out, config: &Config, ctx: &SessionContext<'_>, text: &Classification) {
    if config.rollback {
        out.line(
            "rollback",
            "ON: every statement goes to old, nothing is mirrored, rules are ignored",
        );
    }
    let addr = ctx
        .client_addr
        .map_or_else(|| "none (unix socket)".to_owned(), |a| a.to_string());
    out.line(
        "session",
        &format!(
            "user={:?} database={:?} application_name={:?} client_addr={addr} session_key={}",
            ctx.user, ctx.database, ctx.application_name, ctx.session_key
        ),
    );
    if let Some(error) = &text.parse_error {
        out.line("parse error", error);
        out.line(
            "",
            "the text is classified as one write covering all of it (never routed as a read)",
        );
    }
    match text.statements.len() {
        0 => out.line("statements", "none (empty query)"),
        1 => {}
        n => out.line(
            "statements",
            &format!(
                "{n}, strongest kind {} (a multi-statement query runs on one backend connection)",
                text.kind()
            ),
        ),
    }
    if text.statements.len() != 1 {
        out.line("digest", &text.normalized);
        out.line("fingerprint", &format!("{:016x}", text.fingerprint));
    }
}

fn describe_statement(out: &mut Out, classifier: &Classifier, stmt: &Statement, own: &str) {
    out.line("kind", stmt.kind.as_str());
    let tables: Vec<String> = stmt.tables.iter().map(ToString::to_string).collect();
    out.line(
        "tables",
        &if tables.is_empty() {
            "-".to_owned()
        } else {
            tables.join(", ")
        },
    );
    out.line("order by", if stmt.has_order_by { "yes" } else { "no" });
    out.line(
        "transaction",
        &stmt.txn.as_ref().map_or_else(|| "-".to_owned(), txn_text),
    );
    out.line(
        "session",
        &stmt
            .session
            .as_ref()
            .map_or_else(|| "-".to_owned(), session_text),
    );
    let digest = classifier.classify(own);
    out.line("digest", &digest.normalized);
    out.line("fingerprint", &format!("{:016x}", digest.fingerprint));
}

fn describe_rules(
    out: &mut Out,
    router: &Router,
    stmt: &Statement,
    own: &str,
    ctx: &SessionContext<'_>,
) -> Decision {
    let mut lines = Vec::new();
    let decision = router.route_with(stmt, own, ctx, |i, verdict| {
        let rule = &router.rules()[i];
        let what = match verdict {
            Verdict::Mismatch(c) => format!("{} does not match", c.as_str()),
            Verdict::OutsidePercent { bucket } => format!(
                "criteria match, but {} bucket {bucket} is outside {}% (buckets 0-{}): next rule",
                rule.sticky,
                rule.percent,
                last_bucket(rule.percent)
            ),
            Verdict::Match { .. } => "applies".to_owned(),
        };
        lines.push(format!("#{i} {}: {what}", rule.name));
    });
    if router.rollback() {
        out.line("rules", "ignored (rollback)");
    }
    for (i, line) in lines.iter().enumerate() {
        out.line(if i == 0 { "rules" } else { "" }, line);
    }
    if lines.is_empty() && !router.rollback() {
        out.line("rules", "none configured");
    }
    decision
}

/// Where a statement is inside the text's explicit transaction, if any.
#[derive(Clone, Copy)]
enum TxnState {
    Outside,
    /// After BEGIN, before the statement that decides the primary.
    Undecided,
    /// Pinned to `primary` by statement `by`.
    Pinned {
        primary: BackendId,
        by: usize,
    },
}

fn describe_route(
    out: &mut Out,
    config: &Config,
    ctx: &SessionContext<'_>,
    stmt: &Statement,
    n: usize,
    decision: Decision,
    txn: TxnState,
) -> TxnState {
    match decision.rule {
        Some(i) => out.line("rule", &format!("#{i} {}", config.rules[i].name)),
        None if config.rollback => out.line("rule", "none: rollback"),
        None => out.line("rule", "no rule: defaults"),
    }
    out.line("route", &decision.route.to_string());
    if let Some(rule) = decision.rule.map(|i| &config.rules[i]) {
        sticky_line(out, ctx, rule, decision);
    }
    let next = match (txn, stmt.kind) {
        (TxnState::Outside, _) if matches!(stmt.txn, Some(TxnControl::Begin)) => {
            out.line(
                "",
                "starts a transaction: it goes where the first statement after it goes",
            );
            TxnState::Undecided
        }
        (TxnState::Undecided, Kind::Transaction) => {
            out.line("", "goes to the transaction's primary, once decided");
            TxnState::Undecided
        }
        (TxnState::Undecided, _) => {
            out.line(
                "",
                &format!(
                    "decides the transaction's primary: {} until it ends",
                    decision.route.primary
                ),
            );
            TxnState::Pinned {
                primary: decision.route.primary,
                by: n,
            }
        }
        (TxnState::Pinned { primary, by }, _) => {
            out.line(
                "",
                &format!("inside a transaction: primary pinned to {primary} by statement {by}"),
            );
            txn
        }
        (TxnState::Outside, _) => TxnState::Outside,
    };
    match stmt.txn {
        Some(TxnControl::Commit { chain: false })
        | Some(TxnControl::Rollback { chain: false })
        | Some(TxnControl::PrepareTransaction { .. }) => TxnState::Outside,
        _ => next,
    }
}

fn sticky_line(out: &mut Out, ctx: &SessionContext<'_>, rule: &Rule, decision: Decision) {
    if rule.percent >= 100 {
        return;
    }
    let Some(bucket) = decision.bucket else {
        return;
    };
    let inside = if in_percent(bucket, rule.percent) {
        "inside"
    } else {
        "outside"
    };
    out.line(
        "sticky",
        &format!(
            "{} key {:?} -> bucket {bucket}, {inside} {}% (buckets 0-{})",
            rule.sticky,
            sticky_key(ctx, rule.sticky),
            rule.percent,
            last_bucket(rule.percent)
        ),
    );
}

fn last_bucket(percent: u8) -> String {
    match u32::from(percent) * 100 {
        0 => "none".to_owned(),
        n => (n - 1).to_string(),
    }
}

fn txn_text(t: &TxnControl) -> String {
    match t {
        TxnControl::Begin => "begin".to_owned(),
        TxnControl::Commit { chain } => format!("commit{}", chain_text(*chain)),
        TxnControl::Rollback { chain } => format!("rollback{}", chain_text(*chain)),
        TxnControl::Savepoint { name } => format!("savepoint {name}"),
        TxnControl::Release { name } => format!("release savepoint {name}"),
        TxnControl::RollbackTo { name } => format!("rollback to savepoint {name}"),
        TxnControl::PrepareTransaction { gid } => format!("prepare transaction {gid:?}"),
        TxnControl::CommitPrepared { gid } => format!("commit prepared {gid:?}"),
        TxnControl::RollbackPrepared { gid } => format!("rollback prepared {gid:?}"),
        TxnControl::SetTransaction => "set transaction characteristics".to_owned(),
        TxnControl::SetLocal { name } => format!("set local {name} (until the transaction ends)"),
        TxnControl::SetConstraints => "set constraints".to_owned(),
    }
}

fn chain_text(chain: bool) -> &'static str {
    if chain {
        " and chain (a new transaction starts on the same backend)"
    } else {
        ""
    }
}

fn session_text(s: &SessionEffect) -> String {
    match s {
        SessionEffect::Set { name } => format!("set {name}"),
        SessionEffect::Reset { name: Some(name) } => format!("reset {name}"),
        SessionEffect::Reset { name: None } => "reset all".to_owned(),
        SessionEffect::Prepare { name, query } => {
            format!("prepare {name} (a {} statement)", query.kind)
        }
        SessionEffect::Deallocate { name: Some(name) } => format!("deallocate {name}"),
        SessionEffect::Deallocate { name: None } => "deallocate all".to_owned(),
        SessionEffect::Listen { channel } => format!("listen {channel}"),
        SessionEffect::Unlisten { channel: Some(c) } => format!("unlisten {c}"),
        SessionEffect::Unlisten { channel: None } => "unlisten *".to_owned(),
        SessionEffect::Discard { all: true } => "discard all".to_owned(),
        SessionEffect::Discard { all: false } => "discard (plans, sequences or temp)".to_owned(),
        SessionEffect::DeclareCursor { name, hold } => format!(
            "declare cursor {name}{}",
            if *hold { " with hold" } else { "" }
        ),
        SessionEffect::CloseCursor { name: Some(name) } => format!("close cursor {name}"),
        SessionEffect::CloseCursor { name: None } => "close all cursors".to_owned(),
    }
}

/// Whitespace folded, cut at `max` chars.
fn one_line(s: &str, max: usize) -> String {
    let folded = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match folded.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &folded[..i]),
        None => folded,
    }
}

struct Out(String);

impl Out {
    fn line(&mut self, label: &str, value: &str) {
        let label = if label.is_empty() {
            String::new()
        } else {
            format!("{label}:")
        };
        let _ = writeln!(self.0, "  {label:<LABEL$} {value}");
    }

    fn raw(&mut self, text: &str) {
        self.0.push_str(text);
        self.0.push('\n');
    }

    fn blank(&mut self) {
        if !self.0.is_empty() {
            self.0.push('\n');
        }
    }
}
