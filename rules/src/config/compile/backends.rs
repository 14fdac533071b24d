//! backends.old / backends.new.

use crate::config::backend::{Backend, BackendId, BackendTls, Backends};
use crate::config::pgurl;
use crate::config::reader::{Ctx, Fields};

const DEFAULT_PORT: u16 = 5432;

pub(super) fn backends(ctx: &mut Ctx<'_>, top: &Fields<'_>) -> Option<Backends> {
    let section = top.child(ctx, "backends", &["old", "new"]);
    let old = backend(ctx, &section, BackendId::Old);
    let new = backend(ctx, &section, BackendId::New);
    let (old, new) = (old?, new?);
    if (old.host.as_str(), old.port, old.database.as_str())
        == (new.host.as_str(), new.port, new.database.as_str())
    {
        // Mirroring into the database the primary already wrote would apply
        // every write twice.
        let path = section.path().key("new").key("url");
        let loc = section.get("new").and_then(|f| f.loc());
        ctx.error(
            &path,
            loc,
            format!(
                "old and new are the same database ({}:{}/{})",
                new.host, new.port, new.database
            ),
        );
    }
    Some(Backends { old, new })
}

fn backend(ctx: &mut Ctx<'_>, section: &Fields<'_>, id: BackendId) -> Option<Backend> {
    section.require(ctx, id.as_str())?;
    let f = section.child(ctx, id.as_str(), &["url", "tls"]);
    let tls_field = f.get("tls");
    let tls_key = tls_field
        .as_ref()
        .and_then(|x| ctx.choice(x, BackendTls::CHOICES));

    let url_field = f.require(ctx, "url")?;
    let url = ctx.expanded_nonempty(&url_field)?;
    let mut parsed = match pgurl::parse(url.trim()) {
        Ok(p) => p,
        Err(e) => {
            ctx.error_at(&url_field, format!("invalid URL: {e}"));
            return None;
        }
    };
    let Some(user) = parsed.user.take() else {
        ctx.error_at(
            &url_field,
            "the URL has no user name, e.g. postgres://app@host:5432/db",
        );
        return None;
    };

    let sslmode = match parsed.params.iter().position(|(k, _)| k == "sslmode") {
        Some(i) => Some(parsed.params.remove(i).1),
        None => None,
    };
    let url_tls = match sslmode.as_deref() {
        None => None,
        Some(mode) => match mode.parse::<BackendTls>() {
            Ok(t) => Some(t),
            Err(_) => {
                ctx.error_at(
                    &url_field,
                    format!("sslmode={mode} is not supported: use disable, prefer or require"),
                );
                return None;
            }
        },
    };
    let tls = match (tls_key, url_tls) {
        (Some(k), Some(u)) if k != u => {
            if let Some(field) = &tls_field {
                ctx.error_at(
                    field,
                    format!("tls: {k} conflicts with sslmode={u} in the URL"),
                );
            }
            return None;
        }
        (Some(t), _) | (None, Some(t)) => t,
        // A rejected tls value has been reported; carry on with the default.
        (None, None) => BackendTls::Prefer,
    };
    if tls == BackendTls::Require && parsed.host.starts_with('/') {
        // Postgres answers 'N' to an SSLRequest on its Unix sockets, so
        // `require` could never be met; libpq ignores sslmode there instead,
        // which would hide the operator's mistake.
        let at = tls_field.as_ref().unwrap_or(&url_field);
        ctx.error_at(
            at,
            "tls: require cannot be met over a Unix-domain socket (Postgres offers no TLS on \
             them): use disable or prefer, or a TCP host",
        );
        return None;
    }

    let port = parsed.port.unwrap_or(DEFAULT_PORT);
    let database = parsed.database.take().unwrap_or_else(|| user.clone());
    let url = pgurl::masked(
        &parsed.host,
        port,
        &user,
        parsed.password.is_some(),
        &database,
        &parsed.params,
    );
    Some(Backend {
        url,
        host: parsed.host,
        port,
        user,
        password: parsed.password,
        database,
        tls,
        options: parsed.params,
    })
}
