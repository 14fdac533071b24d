//! auth: how clients log in to the proxy.

use std::collections::HashMap;

use crate::config::model::{Auth, AuthMethod, AuthUser};
use crate::config::reader::{Ctx, Fields};
use crate::config::secret::Secret;

pub(super) fn auth(ctx: &mut Ctx<'_>, top: &Fields<'_>) -> Auth {
    let f = top.child(ctx, "auth", &["method", "users"]);
    // None when the method itself is invalid: checks that depend on it would
    // only pile follow-on errors onto the one that matters.
    let checked = match f.get("method") {
        Some(x) => ctx.choice(&x, AuthMethod::CHOICES),
        None => Some(AuthMethod::ScramSha256),
    };
    let method = checked.unwrap_or(AuthMethod::ScramSha256);

    let mut users = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    let user_fields = f.get("users").map(|x| ctx.list(&x)).unwrap_or_default();
    for field in &user_fields {
        let u = Fields::open(
            ctx,
            Some(field.node),
            field.path.clone(),
            &["name", "password"],
        );
        let name = u.require(ctx, "name").and_then(|x| {
            let name = ctx.nonempty_text(&x)?;
            let here = x.path.as_str().to_owned();
            if let Some(first) = seen.insert(name.clone(), here) {
                ctx.error_at(&x, format!("duplicate user \"{name}\" (also at {first})"));
            }
            Some(name)
        });
        let secret = match u.get("password") {
            None if checked.is_some_and(|m| m != AuthMethod::Trust) => {
                ctx.error(
                    &u.path().key("password"),
                    u.loc(),
                    format!("required key is missing (auth.method is {method})"),
                );
                None
            }
            None => None,
            Some(x) => ctx.expanded(&x).and_then(|text| {
                let secret = Secret::classify(text).map_err(|e| ctx.error_at(&x, e)).ok()?;
                match (checked, &secret) {
                    (Some(AuthMethod::Md5), Secret::ScramVerifier(_)) => ctx.error_at(
                        &x,
                        "a SCRAM verifier cannot serve md5 authentication: give the password or an md5 hash, or use method scram-sha-256",
                    ),
                    (Some(AuthMethod::ScramSha256), Secret::Md5Hash(_)) => ctx.error_at(
                        &x,
                        "an md5 hash cannot serve scram-sha-256 authentication: give the password or a SCRAM verifier, or use method md5",
                    ),
                    _ => {}
                }
                Some(secret)
            }),
        };
        if let Some(name) = name {
            users.push(AuthUser { name, secret });
        }
    }

    if checked.is_some_and(|m| m != AuthMethod::Trust) && user_fields.is_empty() {
        let path = f.path().key("users");
        let loc = f.get("users").and_then(|x| x.loc()).or(f.loc());
        ctx.error(
            &path,
            loc,
            format!("auth.method {method} needs at least one user (or use method: trust)"),
        );
    }
    Auth { method, users }
}
