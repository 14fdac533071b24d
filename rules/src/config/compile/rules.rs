//! rules: first match wins.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::backend::BackendId;
use crate::config::ident::TableName;
use crate::config::kind::{Kind, KindSet};
use crate::config::reader::{Ctx, Field, Fields};
use crate::config::rule::{Match, Rule, Sticky};

const RULE_KEYS: &[&str] = &[
    "name", "match", "percent", "sticky", "primary", "mirror", "compare",
];
const MATCH_KEYS: &[&str] = &[
    "kind",
    "tables",
    "sql",
    "user",
    "database",
    "application_name",
    "client_addr",
];

pub(super) fn rules(ctx: &mut Ctx<'_>, top: &Fields<'_>, default_primary: BackendId) -> Vec<Rule> {
    let Some(field) = top.get("rules") else {
        return Vec::new();
    };
    if field.node.scalar_text().is_some() {
        ctx.error_at(
            &field,
            format!("expected a list of rules, found {}", field.node.kind_name()),
        );
        return Vec::new();
    }
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut rules = Vec::new();
    for item in ctx.list(&field) {
        if let Some(rule) = rule(ctx, &item, default_primary, &mut seen) {
            rules.push(rule);
        }
    }
    rules
}

fn rule(
    ctx: &mut Ctx<'_>,
    item: &Field<'_>,
    default_primary: BackendId,
    seen: &mut HashMap<String, String>,
) -> Option<Rule> {
    let f = Fields::open(ctx, Some(item.node), item.path.clone(), RULE_KEYS);
    let name = f.require(ctx, "name").and_then(|x| {
        let name = ctx.nonempty_text(&x)?;
        if let Some(first) = seen.insert(name.clone(), x.path.as_str().to_owned()) {
            ctx.error_at(
                &x,
                format!("duplicate rule name \"{name}\" (also at {first})"),
            );
        }
        Some(name)
    });
    let matcher = matcher(ctx, &f);
    let percent = f
        .get("percent")
        .and_then(|x| ctx.integer(&x, 0, 100))
        .and_then(|p| u8::try_from(p).ok())
        .unwrap_or(100);
    let sticky = f
        .get("sticky")
        .and_then(|x| ctx.choice(&x, Sticky::CHOICES))
        .unwrap_or(Sticky::Session);
    let route = super::routing::route(
        ctx,
        &f,
        default_primary,
        ", primary taken from defaults.primary",
    );
    Some(Rule {
        name: name?,
        matcher,
        percent,
        sticky,
        primary: route.primary,
        mirror: route.mirror,
        compare: route.compare,
    })
}

fn matcher(ctx: &mut Ctx<'_>, rule: &Fields<'_>) -> Match {
    let f = rule.child(ctx, "match", MATCH_KEYS);
    let mut m = Match::default();
    if let Some(items) = nonempty_list(ctx, &f, "kind") {
        let kinds: KindSet = items
            .iter()
            .filter_map(|x| ctx.choice(x, Kind::CHOICES))
            .collect();
        m.kinds = Some(kinds);
    }
    for item in nonempty_list(ctx, &f, "tables").unwrap_or_default() {
        if let Some(text) = ctx.text(&item) {
            match TableName::parse(&text) {
                Ok(t) => m.tables.push(t),
                Err(e) => ctx.error_at(&item, format!("invalid table name: {e}")),
            }
        }
    }
    m.sql = f.get("sql").and_then(|x| super::regex(ctx, &x));
    m.user = strings(ctx, &f, "user");
    m.database = strings(ctx, &f, "database");
    m.application_name = strings(ctx, &f, "application_name");
    for item in nonempty_list(ctx, &f, "client_addr").unwrap_or_default() {
        if let Some(text) = ctx.text(&item) {
            match parse_net(text.trim()) {
                Some(net) => m.client_addr.push(net),
                None => ctx.error_at(
                    &item,
                    format!(
                        "invalid CIDR \"{text}\": expected e.g. 10.0.0.0/8, 192.168.1.7 or ::1/128"
                    ),
                ),
            }
        }
    }
    m
}

/// The list under `key`. An explicitly empty list is an error: it would match
/// nothing, and a rule that can never fire is almost surely a mistake.
fn nonempty_list<'n>(ctx: &mut Ctx<'_>, f: &Fields<'n>, key: &str) -> Option<Vec<Field<'n>>> {
    let field = f.get(key)?;
    let items = ctx.list(&field);
    if items.is_empty() && field.node.scalar_text().is_none() {
        ctx.error_at(
            &field,
            "an empty list matches nothing: remove the key to match anything",
        );
        return None;
    }
    Some(items)
}

fn strings(ctx: &mut Ctx<'_>, f: &Fields<'_>, key: &str) -> Vec<String> {
    nonempty_list(ctx, f, key)
        .unwrap_or_default()
        .iter()
        .filter_map(|x| ctx.nonempty_text(x))
        .collect()
}

/// A CIDR, or a bare address as a single-host network. Host bits are
/// cleared so `10.1.2.3/8` means 10.0.0.0/8, as in pg_hba.conf.
fn parse_net(s: &str) -> Option<IpNet> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Some(net.trunc());
    }
    s.parse::<IpAddr>().ok().map(IpNet::from)
}

#[cfg(test)]
mod tests {
    use super::parse_net;

    #[test]
    fn nets() {
        assert_eq!(parse_net("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(
            parse_net("192.168.1.7").unwrap().to_string(),
            "192.168.1.7/32"
        );
        assert_eq!(parse_net("::1").unwrap().to_string(), "::1/128");
        assert!(parse_net("10.0.0.0/33").is_none());
        assert!(parse_net("bogus").is_none());
    }
}
