//! `GET /rules`: the configuration in force as routing sees it, compiled
//! (regexes as their source, tables normalised, defaults filled in).
//! Secrets never appear: no passwords, no admin token, backend URLs in the
//! masked form the config keeps for display.

use pgshift_rules::config::{Config, RewriteMap};
use serde_json::{json, Value};

use crate::server::Loaded;

pub fn rules_json(loaded: &Loaded) -> Value {
    let c = &loaded.config;
    json!({
        "version": loaded.version,
        "loaded_at": super::rfc3339(loaded.loaded_at),
        "rollback": c.rollback,
        "effective": if c.rollback {
            "rollback: every statement goes to old, nothing is mirrored, rules are ignored"
        } else {
            "rules in order, first match wins; defaults otherwise"
        },
        "defaults": route(c.defaults.primary, c.defaults.mirror, c.defaults.compare),
        "rules": c.rules.iter().enumerate().map(|(i, r)| {
            let m = &r.matcher;
            json!({
                "index": i,
                "name": r.name,
                "match": {
                    "kind": m.kinds.map(|k| k.iter().map(|k| k.as_str()).collect::<Vec<_>>()),
                    "tables": m.tables.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "sql": m.sql.as_ref().map(|r| r.as_str()),
                    "user": m.user,
                    "database": m.database,
                    "application_name": m.application_name,
                    "client_addr": m.client_addr.iter().map(ToString::to_string).collect::<Vec<_>>(),
                },
                "percent": r.percent,
                "sticky": r.sticky.as_str(),
                "route": route(r.primary, r.mirror, r.compare),
            })
        }).collect::<Vec<_>>(),
        "mirror": {
            "mode": c.mirror.mode.as_str(),
            "queue": c.mirror.queue,
            "on_overflow": c.mirror.on_overflow.as_str(),
            "on_mirror_error": c.mirror.on_mirror_error.as_str(),
            "read_your_writes_wait_ms": c.mirror.read_your_writes_wait.as_millis() as u64,
        },
        "compare": {
            "sample": c.compare.sample,
            "ignore_columns": c.compare.ignore_columns,
            "float_tolerance": c.compare.float_tolerance,
            "log": c.compare.log.as_ref().map(|p| p.display().to_string()),
            "redact_literals": c.compare.redact_literals,
            "log_values": c.compare.log_values,
        },
        "rewrite": {
            "old": rewrite(&c.rewrite.old),
            "new": rewrite(&c.rewrite.new),
        },
        "backends": backends(c),
    })
}

fn route(
    primary: pgshift_rules::config::BackendId,
    mirror: Option<pgshift_rules::config::BackendId>,
    compare: bool,
) -> Value {
    json!({
        "primary": primary.as_str(),
        "mirror": mirror.map(|m| m.as_str()),
        "compare": compare,
    })
}

fn rewrite(m: &RewriteMap) -> Value {
    json!({
        "tables": m.tables.iter().map(|(from, to)| json!({"from": from.to_string(), "to": to.to_string()})).collect::<Vec<_>>(),
        "columns": m.columns.iter().map(|(t, from, to)| json!({"table": t.to_string(), "from": from, "to": to})).collect::<Vec<_>>(),
        "replace": m.replace.iter().map(|(re, with)| json!({"pattern": re.as_str(), "with": with})).collect::<Vec<_>>(),
    })
}

fn backends(c: &Config) -> Value {
    let one = |b: &pgshift_rules::config::Backend| json!({ "url": b.url, "tls": b.tls.as_str() });
    json!({ "old": one(&c.backends.old), "new": one(&c.backends.new) })
}
