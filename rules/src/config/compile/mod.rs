//! Turns the YAML tree into a [`Config`], section by section, recording every
//! problem in the context instead of stopping at the first.

mod auth;
mod backends;
mod rewrite;
mod routing;
mod rules;
mod server;

use regex::{Regex, RegexBuilder};

use super::model::Config;
use super::reader::{Ctx, Field, Fields, Path};
use super::yaml::{Node, Value};

const TOP_LEVEL: &[&str] = &[
    "listen",
    "admin",
    "admin_token",
    "tls",
    "limits",
    "telemetry",
    "backends",
    "auth",
    "rollback",
    "defaults",
    "mirror",
    "compare",
    "rules",
    "rewrite",
];

/// Compiled regexes get this much memory at most, so a hostile or careless
/// pattern (`(a{1000}){1000}`) is an error rather than an allocation spike.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Returns None when anything is wrong; the reasons are in `ctx.errors`.
pub(crate) fn compile(root: &Node, ctx: &mut Ctx<'_>) -> Option<Config> {
    match &root.value {
        Value::Map(_) => {}
        Value::Null => {
            ctx.error(
                &Path::default(),
                None,
                "the configuration is empty: at least backends.old and backends.new are needed",
            );
            return None;
        }
        _ => {
            let found = root.kind_name();
            ctx.error(
                &Path::default(),
                root.loc,
                format!("expected a mapping of settings at the top level, found {found}"),
            );
            return None;
        }
    }
    let top = Fields::open(ctx, Some(root), Path::default(), TOP_LEVEL);

    let listen = server::listen(ctx, &top);
    let admin = top.get("admin").and_then(|f| server::listen_addr(ctx, &f));
    let admin_token = top
        .get("admin_token")
        .and_then(|f| ctx.expanded_nonempty(&f));
    let tls = server::tls(ctx, &top);
    let limits = server::limits(ctx, &top);
    let telemetry = server::telemetry(ctx, &top);
    let backends = backends::backends(ctx, &top);
    let auth = auth::auth(ctx, &top);
    let rollback = top
        .get("rollback")
        .and_then(|f| ctx.boolean(&f))
        .unwrap_or(false);
    let defaults = routing::defaults(ctx, &top);
    let mirror = routing::mirror(ctx, &top);
    let compare = routing::compare(ctx, &top);
    let rules = rules::rules(ctx, &top, defaults.primary);
    let rewrite = rewrite::rewrites(ctx, &top);

    if !ctx.errors.is_empty() {
        return None;
    }
    Some(Config {
        listen,
        admin,
        admin_token,
        tls,
        limits,
        telemetry,
        backends: backends?,
        auth,
        rollback,
        defaults,
        mirror,
        compare,
        rules,
        rewrite,
    })
}

pub(super) fn regex(ctx: &mut Ctx<'_>, field: &Field<'_>) -> Option<Regex> {
    let pattern = ctx.text(field)?;
    let built = RegexBuilder::new(&pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build();
    match built {
        Ok(re) => Some(re),
        Err(regex::Error::CompiledTooBig(_)) => {
            ctx.error_at(
                field,
                "regex is too large once compiled (limit 1MiB): simplify it or split the rule",
            );
            None
        }
        Err(e) => {
            ctx.error_at(field, format!("invalid regex: {}", regex_reason(&e)));
            None
        }
    }
}

/// regex's syntax errors draw the pattern with a caret over several lines;
/// keep the one line that says what is wrong.
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("error:"))
        .map(|s| s.trim().to_owned())
        .unwrap_or(text)
}
