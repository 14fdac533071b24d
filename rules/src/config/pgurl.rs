//! `postgres://` connection URLs, parsed by hand: the url crate's generic
//! rules differ from libpq's (IPv6 hosts, empty hosts, query parameters).
//!
//! Error messages never quote the URL: it may carry a password.

use std::net::Ipv6Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PgUrl {
    pub host: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub database: Option<String>,
    pub params: Vec<(String, String)>,
}

/// libpq connection settings that are not server startup parameters and that
/// pgshift does not implement; accepting them silently would mislead.
const UNSUPPORTED_PARAMS: &[&str] = &[
    "hostaddr",
    "dbname",
    "user",
    "password",
    "passfile",
    "service",
    "connect_timeout",
    "sslcert",
    "sslkey",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslpassword",
    "sslcompression",
    "sslsni",
    "sslnegotiation",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "requirepeer",
    "require_auth",
    "channel_binding",
    "gssencmode",
    "gsslib",
    "gssdelegation",
    "krbsrvname",
    "target_session_attrs",
    "load_balance_hosts",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
];

/// Parses `postgres[ql]://[user[:password]@]host[:port][/database][?k=v&...]`.
///
/// A host that starts with `/` is the directory of a Unix-domain socket, as
/// in libpq: written percent-encoded (`%2Fvar%2Frun%2Fpostgresql`) or as a
/// `host=` query parameter after an empty host. `port=` may likewise be a
/// query parameter; it names the socket file (`.s.PGSQL.<port>`).
///
/// The user info ends at the last `@` before any `?`, so a password pasted
/// from the environment may contain `@`, `/` or `:`; it may not contain `?`,
/// and a literal `%` must be written `%25`.
pub(crate) fn parse(url: &str) -> Result<PgUrl, String> {
    let rest = strip_scheme(url).ok_or("must start with postgres:// or postgresql://")?;
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let (userinfo, hostpath) = match main.rfind('@') {
        Some(at) => (Some(&main[..at]), &main[at + 1..]),
        None => (None, main),
    };
    let (hostport, path) = match hostpath.find('/') {
        Some(slash) => (&hostpath[..slash], Some(&hostpath[slash + 1..])),
        None => (hostpath, None),
    };

    let (mut user, mut password) = (None, None);
    if let Some(info) = userinfo {
        let (u, p) = match info.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (info, None),
        };
        user = Some(decode(u).map_err(|e| format!("user name: {e}"))?).filter(|u| !u.is_empty());
        if let Some(p) = p {
            password = Some(decode(p).map_err(|e| format!("password: {e}"))?);
        }
    }

    let (mut host, mut port) = parse_host_port(hostport)?;
    let database = match path {
        Some(p) => Some(decode(p).map_err(|e| format!("database name: {e}"))?),
        None => None,
    }
    .filter(|d| !d.is_empty());

    let mut params = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or("query parameters must be written key=value")?;
        let k = decode(k).map_err(|e| format!("query parameter name: {e}"))?;
        let v = decode(v).map_err(|e| format!("query parameter {k}: {e}"))?;
        if k == "host" || k == "port" {
            let given_twice = || format!("{k} is given both in the URL and as a query parameter");
            if k == "host" {
                if !host.is_empty() {
                    return Err(given_twice());
                }
                host = v;
            } else {
                if port.is_some() {
                    return Err(given_twice());
                }
                port = Some(parse_port(&v)?);
            }
            continue;
        }
        if UNSUPPORTED_PARAMS.contains(&k.as_str()) {
            return Err(format!(
                "query parameter {k} is not supported here (put user, host, port and database in the URL itself)"
            ));
        }
        if params.iter().any(|(existing, _)| *existing == k) {
            return Err(format!("query parameter {k} is given twice"));
        }
        params.push((k, v));
    }
    check_host(&host)?;
    Ok(PgUrl {
        host,
        port,
        user,
        password,
        database,
        params,
    })
}

fn strip_scheme(url: &str) -> Option<&str> {
    ["postgresql://", "postgres://"].iter().find_map(|scheme| {
        let head = url.get(..scheme.len())?;
        head.eq_ignore_ascii_case(scheme)
            .then(|| &url[scheme.len()..])
    })
}

fn parse_host_port(hostport: &str) -> Result<(String, Option<u16>), String> {
    if hostport.contains(',') {
        return Err("multiple hosts are not supported: give one host per backend".into());
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or("unterminated [ in IPv6 host")?;
        addr.parse::<Ipv6Addr>()
            .map_err(|_| "invalid IPv6 address in brackets".to_owned())?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or("expected :port after ]")?),
        };
        (addr.to_owned(), port)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) if !p.contains(':') => (decode(h)?, Some(p)),
            Some(_) => return Err("IPv6 hosts must be written in brackets, e.g. [::1]:5432".into()),
            None => (decode(hostport)?, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p)?),
    };
    Ok((host, port))
}

/// The longest socket directory whose `/.s.PGSQL.<port>` still fits a
/// `sun_path` (108 bytes with its NUL) whatever the port.
const MAX_SOCKET_DIR: usize = 107 - "/.s.PGSQL.65535".len();

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err(
            "no host: give a TCP host (postgres://user@127.0.0.1:5432/db) or a socket \
             directory (postgres://user@%2Fvar%2Frun%2Fpostgresql/db)"
                .into(),
        );
    }
    if host.starts_with('/') {
        if host.contains('\0') {
            return Err("socket directory contains a NUL byte".into());
        }
        if host.len() > MAX_SOCKET_DIR {
            return Err(format!(
                "socket directory is {} bytes long; at most {MAX_SOCKET_DIR} fit in a socket path",
                host.len()
            ));
        }
        return Ok(());
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    {
        return Err("invalid characters in host name".into());
    }
    Ok(())
}

/// Where a backend listens when its host is a socket directory.
pub fn unix_socket_path(host: &str, port: u16) -> Option<String> {
    host.starts_with('/')
        .then(|| format!("{}/.s.PGSQL.{port}", host.trim_end_matches('/')))
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err("port must be a number from 1 to 65535".into()),
        Ok(n) => Ok(n),
    }
}

/// Percent-decoding as libpq does it: `%XX` only (no `+` for space).
fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("invalid percent-encoding (write a literal % as %25)")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-encoding does not decode to UTF-8".to_owned())
}

/// Characters left bare when printing a URL component.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A URL equivalent to the parsed one, with any password shown as `****`.
pub(crate) fn masked(
    host: &str,
    port: u16,
    user: &str,
    has_password: bool,
    database: &str,
    params: &[(String, String)],
) -> String {
    let host = if host.starts_with('/') {
        encode(host)
    } else if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let password = if has_password { ":****" } else { "" };
    let mut url = format!(
        "postgres://{}{password}@{host}:{port}/{}",
        encode(user),
        encode(database)
    );
    for (i, (k, v)) in params.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(&encode(k));
        url.push('=');
        url.push_str(&encode(v));
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_url() {
        let u = parse("postgres://app:s%40cret@db.example.com:5433/my%20db?application_name=x&sslmode=require").unwrap();
        assert_eq!(u.user.as_deref(), Some("app"));
        assert_eq!(u.password.as_deref(), Some("s@cret"));
        assert_eq!(u.host, "db.example.com");
        assert_eq!(u.port, Some(5433));
        assert_eq!(u.database.as_deref(), Some("my db"));
        assert_eq!(
            u.params,
            vec![
                ("application_name".into(), "x".into()),
                ("sslmode".into(), "require".into())
            ]
        );
    }

    #[test]
    fn minimal_and_ipv6() {
        let u = parse("postgresql://localhost").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.user, u.database),
            ("localhost", None, None, None)
        );
        let u = parse("postgres://u@[::1]:6000/d").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", Some(6000)));
        let u = parse("postgres://u@[::1]/d").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", None));
    }

    #[test]
    fn raw_password_with_url_characters() {
        let u = parse("postgres://app:p@ss/w:rd@127.0.0.1/app").unwrap();
        assert_eq!(u.password.as_deref(), Some("p@ss/w:rd"));
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.database.as_deref(), Some("app"));
    }

    #[test]
    fn errors_never_echo_password() {
        for bad in [
            "mysql://u:hunter2@h/d",
            "postgres://u:hunter2@/d",
            "postgres://u:hunter2@h:99999/d",
            "postgres://u:hunter2@h:0/d",
            "postgres://u:hunter2@::1/d",
            "postgres://u:hunter2@[::1/d",
            "postgres://u:hunter2@[zz]/d",
            "postgres://u:hunter2@a,b/d",
            "postgres://u:hunter2%zz@h/d",
            "postgres://u:hunter2@h/d?connect_timeout=3",
            "postgres://u:hunter2@h/d?x",
            "postgres://u:hunter2@h/d?a=1&a=2",
            "postgres://u:hunter2@%2Ftmp%00/d",
            "postgres://u:hunter2@h/d?host=%2Ftmp",
            "postgres://u:hunter2@h:5/d?port=6",
            "postgres://u:hunter2@h h/d",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn unix_socket_hosts() {
        let u = parse("postgres://app@%2Fvar%2Frun%2Fpostgresql:5433/db").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port),
            ("/var/run/postgresql", Some(5433))
        );
        let u = parse("postgresql://app@/db?host=/tmp/pg&port=6000&application_name=x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("/tmp/pg", Some(6000)));
        assert_eq!(u.params, vec![("application_name".into(), "x".into())]);
        assert_eq!(
            unix_socket_path("/tmp/pg/", 6000).as_deref(),
            Some("/tmp/pg/.s.PGSQL.6000")
        );
        assert_eq!(unix_socket_path("db.example.com", 5432), None);

        let longest = format!("/{}", "d".repeat(MAX_SOCKET_DIR - 1));
        let path = unix_socket_path(&longest, 65535).unwrap();
        assert_eq!(path.len(), 107);
        assert!(parse(&format!("postgres://u@/db?host={longest}")).is_ok());
        let err = parse(&format!("postgres://u@/db?host={longest}d")).unwrap_err();
        assert!(err.contains("at most 92"), "{err}");

        // Only an absolute path is a socket directory.
        assert!(parse("postgres://u@/db?host=tmp/pg").is_err());
        assert!(parse("postgres://u@/db?port=5432").is_err());
    }

    #[test]
    fn masks() {
        let m = masked(
            "::1",
            5432,
            "a b",
            true,
            "db",
            &[("options".into(), "-c x=1".into())],
        );
        assert_eq!(m, "postgres://a%20b:****@[::1]:5432/db?options=-c%20x%3D1");
        let m = masked("/tmp/pg", 6000, "app", false, "db", &[]);
        assert_eq!(m, "postgres://app@%2Ftmp%2Fpg:6000/db");
        assert_eq!(parse(&m).unwrap().host, "/tmp/pg");
    }
}
