//! listen, admin, tls, limits, telemetry.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::model::{Limits, ListenAddr, LogFormat, Telemetry, TlsFiles};
use crate::config::reader::{Ctx, Field, Fields};

pub(super) fn listen(ctx: &mut Ctx<'_>, top: &Fields<'_>) -> ListenAddr {
    let default = ListenAddr {
        host: "127.0.0.1".into(),
        port: 6432,
    };
    top.get("listen")
        .and_then(|f| listen_addr(ctx, &f))
        .unwrap_or(default)
}

pub(super) fn listen_addr(ctx: &mut Ctx<'_>, field: &Field<'_>) -> Option<ListenAddr> {
    let text = ctx.expanded(field)?;
    parse_listen(text.trim())
        .map_err(|e| ctx.error_at(field, e))
        .ok()
}

fn parse_listen(s: &str) -> Result<ListenAddr, String> {
    const HINT: &str = "expected host:port, e.g. 127.0.0.1:6432, 0.0.0.0:6432 or [::1]:6432";
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or(HINT)?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("invalid IPv6 address in brackets; {HINT}"));
        }
        (host, port)
    } else {
        let (host, port) = s.rsplit_once(':').ok_or(HINT)?;
        if host.contains(':') {
            return Err(format!("IPv6 addresses need brackets; {HINT}"));
        }
        (host, port)
    };
    let valid_name = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if !valid_name && host.parse::<IpAddr>().is_err() {
        return Err(format!("invalid host \"{host}\"; {HINT}"));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("invalid port \"{port}\": expected 0-65535"))?;
    Ok(ListenAddr {
        host: host.to_owned(),
        port,
    })
}

pub(super) fn tls(ctx: &mut Ctx<'_>, top: &Fields<'_>) -> Option<TlsFiles> {
    top.get("tls")?;
    let tls = top.child(ctx, "tls", &["cert", "key"]);
    let cert = tls
        .require(ctx, "cert")
        .and_then(|f| ctx.expanded_nonempty(&f));
    let key = tls
        .require(ctx, "key")
        .and_then(|f| ctx.expanded_nonempty(&f));
    Some(TlsFiles {
        cert: PathBuf::from(cert?),
        key: PathBuf::from(key?),
    })
}

pub(super) fn limits(ctx: &mut Ctx<'_>, top: &Fields<'_>) -> Limits {
    let f = top.child(
        ctx,
        "limits",
        &[
            "max_clients",
            "startup_timeout",
            "max_message_size",
            "shutdown_grace",
            "tcp_keepalive",
        ],
    );
    let mut limits = Limits::default();
    if let Some(n) = f
        .get("max_clients")
        .and_then(|x| ctx.integer(&x, 1, 1_000_000))
    {
        limits.max_clients = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(field) = f.get("startup_timeout") {
        match ctx.duration(&field) {
            Some(d) if d.is_zero() => ctx.error_at(&field, "must be greater than 0"),
            Some(d) => limits.startup_timeout = d,
            None => {}
        }
    }
    if let Some(field) = f.get("max_message_size") {
        // The wire format's length field is an i32, and Postgres itself
        // refuses anything near that; below 1KiB even startup packets fail.
        const MIN: u64 = 1 << 10;
        const MAX: u64 = i32::MAX as u64;
        match ctx.size(&field) {
            Some(n) if !(MIN..=MAX).contains(&n) => ctx.error_at(
                &field,
                "must be between 1KiB and 2GiB-1 (the protocol's limit)",
            ),
            Some(n) => match usize::try_from(n) {
                Ok(n) => limits.max_message_size = n,
                Err(_) => ctx.error_at(&field, "too large for this platform"),
            },
            None => {}
        }
    }
    if let Some(d) = f.get("shutdown_grace").and_then(|x| ctx.duration(&x)) {
        limits.shutdown_grace = d;
    }
    if let Some(field) = f.get("tcp_keepalive") {
        // Linux takes the idle time in whole seconds, up to 32767.
        const MAX: Duration = Duration::from_secs(32_767);
        match ctx.duration(&field) {
            Some(d) if d.is_zero() => limits.tcp_keepalive = None,
            Some(d) if d > MAX || d.subsec_nanos() != 0 => ctx.error_at(
                &field,
                "must be 0s (off) or whole seconds from 1s to 32767s",
            ),
            Some(d) => limits.tcp_keepalive = Some(d),
            None => {}
        }
    }
    limits
}

pub(super) fn telemetry(ctx: &mut Ctx<'_>, top: &Fields<'_>) -> Telemetry {
    let f = top.child(ctx, "telemetry", &["otlp_endpoint", "log_format"]);
    let mut telemetry = Telemetry::default();
    if let Some(field) = f.get("otlp_endpoint") {
        if let Some(url) = ctx.expanded_nonempty(&field) {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            if rest.is_some_and(|r| !r.is_empty()) {
                telemetry.otlp_endpoint = Some(url);
            } else {
                ctx.error_at(
                    &field,
                    "expected an http:// or https:// URL, e.g. http://127.0.0.1:4317",
                );
            }
        }
    }
    if let Some(format) = f
        .get("log_format")
        .and_then(|x| ctx.choice(&x, LogFormat::CHOICES))
    {
        telemetry.log_format = format;
    }
    telemetry
}

#[cfg(test)]
mod tests {
    use super::parse_listen;

    #[test]
    fn listen_forms() {
        let a = parse_listen("127.0.0.1:6432").unwrap();
        assert_eq!(
            a.socket_addr().map(|s| s.to_string()).as_deref(),
            Some("127.0.0.1:6432")
        );
        let a = parse_listen("[::1]:6432").unwrap();
        assert_eq!(a.host, "::1");
        assert_eq!(a.to_string(), "[::1]:6432");
        let a = parse_listen("localhost:0").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.socket_addr()),
            ("localhost", 0, None)
        );
        for bad in [
            "6432",
            ":6432",
            "::1:6432",
            "[::1]",
            "host:port",
            "a b:1",
            "h:70000",
            "[zz]:1",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }
}
