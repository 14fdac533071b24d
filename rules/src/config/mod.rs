//! The YAML configuration: parsing, validation and the compiled model.
//!
//! [`parse_config`] is the only way in. It reports every problem it finds at
//! once, each with a path such as `rules[3].match.sql` and a line/column.

mod backend;
mod compile;
mod describe;
mod env;
mod error;
mod ident;
mod kind;
mod model;
mod names;
mod pgurl;
mod reader;
mod rule;
mod secret;
mod units;
mod yaml;

pub use backend::{Backend, BackendId, BackendTls, Backends};
pub use error::{ConfigError, ConfigErrors};
pub use ident::{NameError, TableName};
pub use kind::{Kind, KindSet};
pub use model::{
    Auth, AuthMethod, AuthUser, CompareSettings, Config, Limits, ListenAddr, LogFormat,
    MirrorErrorPolicy, MirrorMode, MirrorSettings, OverflowPolicy, RewriteMap, Rewrites, Route,
    Telemetry, TlsFiles,
};
pub use pgurl::unix_socket_path;
pub use rule::{Match, Rule, Sticky};
pub use secret::Secret;

/// Parses and validates a configuration.
///
/// `env` looks up `${VAR}` references (pass `|k| std::env::var(k).ok()` in
/// the binary, a map in tests). Expansion applies to listen/admin addresses,
/// `admin_token`, TLS and log paths, `otlp_endpoint`, backend URLs and
/// client passwords — never to regexes or SQL, where `$` means something.
pub fn parse_config(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let root = yaml::load(text).map_err(|e| ConfigErrors::new(vec![e]))?;
    let mut ctx = reader::Ctx::new(env);
    let config = compile::compile(&root, &mut ctx);
    match config {
        Some(config) if ctx.errors.is_empty() => Ok(config),
        _ => {
            if ctx.errors.is_empty() {
                ctx.errors
                    .push(ConfigError::new("", "invalid configuration", None));
            }
            Err(ConfigErrors::new(ctx.errors))
        }
    }
}
