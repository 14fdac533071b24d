//! Human-readable rendering of a compiled config, for `pgshift check` and
//! the admin `/rules` page. Secrets are never printed.

use std::fmt::Write as _;

use super::backend::Backend;
use super::model::{Config, MirrorMode, RewriteMap};
use super::rule::{Match, Rule};
use super::units::{format_duration, format_size};

const LABEL: usize = 17;

impl Config {
    /// Multi-line summary: one setting per line, every rule on two lines.
    pub fn describe(&self) -> String {
        let mut out = Out(String::new());
        self.describe_server(&mut out);
        self.describe_routing(&mut out);
        self.describe_rules(&mut out);
        self.describe_rewrites(&mut out);
        out.0
    }

    fn describe_server(&self, out: &mut Out) {
        out.line("listen", &self.listen.to_string());
        let admin = match (&self.admin, &self.admin_token) {
            (None, _) => "off".to_owned(),
            (Some(a), Some(_)) => format!("{a}  (bearer token required for POST)"),
            (Some(a), None) => format!("{a}  (no token: POST is open)"),
        };
        out.line("admin", &admin);
        let tls = match &self.tls {
            Some(t) => format!("cert={} key={}", t.cert.display(), t.key.display()),
            None => "off (clients connect in plain text)".to_owned(),
        };
        out.line("client tls", &tls);
        let l = &self.limits;
        out.line(
            "limits",
            &format!(
                "max_clients={} startup_timeout={} max_message_size={} shutdown_grace={} tcp_keepalive={}",
                l.max_clients,
                format_duration(l.startup_timeout),
                format_size(u64::try_from(l.max_message_size).unwrap_or(u64::MAX)),
                format_duration(l.shutdown_grace),
                l.tcp_keepalive.map_or_else(|| "off".to_owned(), format_duration)
            ),
        );
        let t = &self.telemetry;
        let otlp = t.otlp_endpoint.as_deref().unwrap_or("off");
        out.line(
            "telemetry",
            &format!("log_format={} otlp_endpoint={otlp}", t.log_format),
        );
        out.line("backend old", &backend(&self.backends.old));
        out.line("backend new", &backend(&self.backends.new));
        let users: Vec<String> = self
            .auth
            .users
            .iter()
            .map(|u| match &u.secret {
                Some(s) => format!("{} ({})", u.name, s.kind_name()),
                None => u.name.clone(),
            })
            .collect();
        let users = if users.is_empty() {
            "any user".to_owned()
        } else {
            users.join(", ")
        };
        out.line("auth", &format!("{}: {users}", self.auth.method));
    }

    fn describe_routing(&self, out: &mut Out) {
        let rollback = if self.rollback {
            "ON: everything goes to old, nothing is mirrored, rules are ignored"
        } else {
            "off"
        };
        out.line("rollback", rollback);
        out.line("defaults", &self.defaults.to_string());
        let m = &self.mirror;
        let mut mirror = format!(
            "mode={} queue={} on_overflow={} read_your_writes_wait={}",
            m.mode,
            m.queue,
            m.on_overflow,
            format_duration(m.read_your_writes_wait)
        );
        // on_mirror_error is only consulted in sync mode; showing it for
        // async would suggest it does something.
        if m.mode == MirrorMode::Sync {
            mirror.push_str(&format!(" on_mirror_error={}", m.on_mirror_error));
        }
        out.line("mirror", &mirror);
        let c = &self.compare;
        let ignore = if c.ignore_columns.is_empty() {
            "none".to_owned()
        } else {
            c.ignore_columns.join(",")
        };
        let log = c
            .log
            .as_ref()
            .map_or("off".to_owned(), |p| p.display().to_string());
        out.line(
            "compare",
            &format!(
                "sample={}% ignore_columns={ignore} float_tolerance={:?} log={log} redact_literals={} log_values={}",
                c.sample, c.float_tolerance, c.redact_literals, c.log_values
            ),
        );
    }

    fn describe_rules(&self, out: &mut Out) {
        if self.rules.is_empty() {
            out.line("rules", "none: every statement takes the defaults");
            return;
        }
        let note = if self.rollback {
            ", all ignored while rollback is on"
        } else {
            ""
        };
        out.line(
            "rules",
            &format!("{} (first match wins{note})", self.rules.len()),
        );
        let name_width = self
            .rules
            .iter()
            .map(|r| r.name.chars().count())
            .max()
            .unwrap_or(0);
        let num_width = self.rules.len().to_string().len();
        let sticky_width = self
            .rules
            .iter()
            .map(|r| r.sticky.as_str().len())
            .max()
            .unwrap_or(0);
        for (i, rule) in self.rules.iter().enumerate() {
            let _ = writeln!(
                out.0,
                "  {:>num_width$}. {:<name_width$}  {:>3}% by {:<sticky_width$}  -> {}",
                i + 1,
                rule.name,
                rule.percent,
                rule.sticky.as_str(),
                rule.route(),
            );
            let _ = writeln!(out.0, "  {:>num_width$}  when {}", "", conditions(rule));
        }
    }

    fn describe_rewrites(&self, out: &mut Out) {
        for (label, map) in [
            ("rewrite old", &self.rewrite.old),
            ("rewrite new", &self.rewrite.new),
        ] {
            if !map.is_empty() {
                out.line(label, &rewrite(map));
            }
        }
    }
}

struct Out(String);

impl Out {
    fn line(&mut self, label: &str, value: &str) {
        let _ = writeln!(self.0, "{label:<LABEL$}{value}");
    }
}

fn backend(b: &Backend) -> String {
    let mut s = format!("{}  tls={}", b.url, b.tls);
    if b.password.is_none() {
        s.push_str("  (no password in URL)");
    }
    s
}

fn conditions(rule: &Rule) -> String {
    let m: &Match = &rule.matcher;
    if m.is_catch_all() {
        return "any statement".to_owned();
    }
    let mut parts = Vec::new();
    if let Some(k) = m.kinds {
        parts.push(format!("kind={k}"));
    }
    let join = |items: Vec<String>| items.join(",");
    if !m.tables.is_empty() {
        parts.push(format!(
            "tables={}",
            join(m.tables.iter().map(|t| t.to_string()).collect())
        ));
    }
    if let Some(re) = &m.sql {
        parts.push(format!("sql=/{}/", re.as_str()));
    }
    for (key, values) in [
        ("user", &m.user),
        ("database", &m.database),
        ("application_name", &m.application_name),
    ] {
        if !values.is_empty() {
            parts.push(format!("{key}={}", join(values.clone())));
        }
    }
    if !m.client_addr.is_empty() {
        parts.push(format!(
            "client_addr={}",
            join(m.client_addr.iter().map(|n| n.to_string()).collect())
        ));
    }
    parts.join(" ")
}

fn rewrite(map: &RewriteMap) -> String {
    let mut parts = Vec::new();
    for (from, to) in &map.tables {
        parts.push(format!("table {from} -> {to}"));
    }
    for (table, from, to) in &map.columns {
        parts.push(format!(
            "column {table}.{} -> {}",
            super::ident::quote_ident(from),
            super::ident::quote_ident(to)
        ));
    }
    for (re, with) in &map.replace {
        parts.push(format!("replace /{}/ -> {with:?}", re.as_str()));
    }
    parts.join("; ")
}
