//! Every class of configuration error is reported with the right path, and
//! all of them at once.

use pgshift_rules::{parse_config, BackendId, BackendTls, Config, ConfigError, ConfigErrors};

const BACKENDS: &str = r#"
backends:
  old: { url: "postgres://app@127.0.0.1:5432/app" }
  new: { url: "postgres://app@127.0.0.1:5433/app" }
auth: { method: trust }
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "PW" => Some("hunter2".into()),
        "BAD_URL" => Some("mysql://app:hunter2@h/db".into()),
        _ => None,
    }
}

fn parse(extra: &str) -> Result<Config, ConfigErrors> {
    parse_config(&format!("{BACKENDS}{extra}"), &env)
}

fn ok(extra: &str) -> Config {
    parse(extra).unwrap_or_else(|e| panic!("expected success, got:\n{e}"))
}

fn errors(extra: &str) -> ConfigErrors {
    match parse(extra) {
        Ok(_) => panic!("expected errors for:\n{extra}"),
        Err(e) => e,
    }
}

/// Asserts exactly one error, at `path`, whose message contains `needle`.
fn one_error(extra: &str, path: &str, needle: &str) -> ConfigError {
    let errs = errors(extra);
    assert_eq!(errs.len(), 1, "expected one error, got:\n{errs}");
    let e = errs.errors[0].clone();
    assert_eq!(e.path, path, "{e}");
    assert!(
        e.message.contains(needle),
        "message {:?} lacks {needle:?}",
        e.message
    );
    e
}

fn rule(body: &str) -> String {
    format!("rules:\n  - name: r1\n{body}")
}

#[test]
fn minimal_config_takes_defaults() {
    let c = ok("");
    assert_eq!(c.listen.to_string(), "127.0.0.1:6432");
    assert!(c.admin.is_none() && c.admin_token.is_none() && c.tls.is_none());
    assert_eq!(c.limits.max_clients, 1000);
    assert_eq!(c.defaults.primary, BackendId::Old);
    assert!(c.rules.is_empty());
    assert_eq!(c.backends.new.tls, BackendTls::Prefer);
    assert!(c.describe().contains("rules            none"));
}

#[test]
fn bad_regex() {
    let e = one_error(
        &rule("    match: { sql: \"from (users\" }\n"),
        "rules[0].match.sql",
        "invalid regex: unclosed group",
    );
    assert_eq!(e.line, Some(8));
    assert!(e
        .to_string()
        .starts_with("rules[0].match.sql: invalid regex: unclosed group"));
    assert!(!e.message.contains('\n'));
}

#[test]
fn oversized_regex() {
    one_error(
        &rule("    match: { sql: \"\\\\w{1000}\\\\w{1000}\\\\w{1000}\" }\n"),
        "rules[0].match.sql",
        "too large",
    );
}

#[test]
fn bad_cidr() {
    one_error(
        &rule("    match: { client_addr: [10.0.0.0/8, 10.0.0.0/40] }\n"),
        "rules[0].match.client_addr[1]",
        "invalid CIDR",
    );
    let c = ok(&rule(
        "    match: { client_addr: [10.1.2.3/8, 192.168.1.7, \"::1\"] }\n",
    ));
    let nets: Vec<String> = c.rules[0]
        .matcher
        .client_addr
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, vec!["10.0.0.0/8", "192.168.1.7/32", "::1/128"]);
}

#[test]
fn percent_out_of_range() {
    one_error(
        &rule("    percent: 101\n"),
        "rules[0].percent",
        "from 0 to 100",
    );
    one_error(
        &rule("    percent: -1\n"),
        "rules[0].percent",
        "from 0 to 100",
    );
    one_error(
        &rule("    percent: 10.5\n"),
        "rules[0].percent",
        "found a number",
    );
    one_error(
        &rule("    percent: ten\n"),
        "rules[0].percent",
        "found a string",
    );
    one_error(
        "compare: { sample: 101 }\n",
        "compare.sample",
        "from 0 to 100",
    );
}

#[test]
fn unknown_keys() {
    let e = one_error(
        &rule("    match: { tabels: [users] }\n"),
        "rules[0].match.tabels",
        "unknown key; did you mean tables? expected one of kind, tables, sql",
    );
    assert_eq!((e.line, e.column), (Some(8), Some(14)));
    one_error("lsiten: 1.2.3.4:5\n", "lsiten", "did you mean listen?");
    one_error(
        "limits: { max_conns: 5 }\n",
        "limits.max_conns",
        "max_clients",
    );
    one_error(
        "rewrite: { new: { tables: {}, renames: {} } }\n",
        "rewrite.new.renames",
        "unknown key",
    );
}

#[test]
fn bad_enum_values() {
    one_error(
        &rule("    sticky: banana\n"),
        "rules[0].sticky",
        "unknown value \"banana\": expected one of session, user, application_name, client_addr",
    );
    one_error(
        &rule("    match: { kind: [read, wirte] }\n"),
        "rules[0].match.kind[1]",
        "wirte",
    );
    one_error(
        "defaults: { primary: newer }\n",
        "defaults.primary",
        "expected one of old, new",
    );
    one_error(
        "defaults: { mirror: both }\n",
        "defaults.mirror",
        "none, old, new",
    );
    one_error("mirror: { mode: later }\n", "mirror.mode", "async, sync");
    one_error(
        "telemetry: { log_format: xml }\n",
        "telemetry.log_format",
        "text, json",
    );
    one_error("rollback: maybe\n", "rollback", "expected true or false");
}

#[test]
fn missing_env_var() {
    one_error(
        "admin_token: \"${NOPE}\"\n",
        "admin_token",
        "environment variable NOPE is not set",
    );
    one_error(
        "compare: { log: \"${LOGDIR}/m.jsonl\" }\n",
        "compare.log",
        "LOGDIR is not set",
    );
    // Regexes are not expanded: `$` is an anchor there.
    let c = ok(&rule("    match: { sql: \"users${1}$\" }\n"));
    assert_eq!(
        c.rules[0].matcher.sql.as_ref().unwrap().as_str(),
        "users${1}$"
    );
}

#[test]
fn mirror_equal_to_primary() {
    one_error(
        &rule("    primary: new\n    mirror: new\n"),
        "rules[0].mirror",
        "mirror must differ from primary (both are new)",
    );
    one_error(
        &rule("    mirror: old\n"),
        "rules[0].mirror",
        "primary taken from defaults.primary",
    );
    one_error(
        "defaults: { primary: old, mirror: old }\n",
        "defaults.mirror",
        "differ",
    );
}

#[test]
fn compare_without_mirror() {
    one_error(
        &rule("    primary: new\n    compare: true\n"),
        "rules[0].compare",
        "compare needs a mirror: set mirror: old",
    );
    one_error(
        &rule("    primary: new\n    mirror: none\n    compare: true\n"),
        "rules[0].compare",
        "needs a mirror",
    );
    one_error(
        "defaults: { compare: true }\n",
        "defaults.compare",
        "needs a mirror",
    );
}

#[test]
fn duplicate_rule_names() {
    let e = one_error(
        "rules:\n  - { name: a }\n  - { name: b }\n  - { name: a }\n",
        "rules[2].name",
        "duplicate rule name \"a\" (also at rules[0].name)",
    );
    assert_eq!(e.line, Some(9));
    one_error(
        "rules:\n  - { percent: 5 }\n",
        "rules[0].name",
        "required key is missing",
    );
    one_error(
        "rules:\n  - { name: \"  \" }\n",
        "rules[0].name",
        "must not be empty",
    );
}

#[test]
fn bad_duration() {
    one_error(
        "limits: { startup_timeout: 10 }\n",
        "limits.startup_timeout",
        "a bare number is ambiguous",
    );
    one_error(
        "mirror: { read_your_writes_wait: 10 parsecs }\n",
        "mirror.read_your_writes_wait",
        "unknown unit",
    );
    one_error(
        "limits: { startup_timeout: 0s }\n",
        "limits.startup_timeout",
        "greater than 0",
    );
    let c = ok("limits: { startup_timeout: 1.5s, shutdown_grace: 2m }\nmirror: { read_your_writes_wait: 0ms }\n");
    assert_eq!(c.limits.startup_timeout.as_millis(), 1500);
    assert_eq!(c.limits.shutdown_grace.as_secs(), 120);
    assert!(c.mirror.read_your_writes_wait.is_zero());
}

#[test]
fn tcp_keepalive() {
    assert_eq!(ok("").limits.tcp_keepalive.map(|d| d.as_secs()), Some(60));
    let c = ok("limits: { tcp_keepalive: 2m }\n");
    assert_eq!(c.limits.tcp_keepalive.map(|d| d.as_secs()), Some(120));
    assert_eq!(
        ok("limits: { tcp_keepalive: 0s }\n").limits.tcp_keepalive,
        None
    );
    for bad in ["500ms", "1500ms", "10h"] {
        one_error(
            &format!("limits: {{ tcp_keepalive: {bad} }}\n"),
            "limits.tcp_keepalive",
            "whole seconds from 1s to 32767s",
        );
    }
}

#[test]
fn bad_size() {
    one_error(
        "limits: { max_message_size: 1PB }\n",
        "limits.max_message_size",
        "unknown unit",
    );
    one_error(
        "limits: { max_message_size: 100 }\n",
        "limits.max_message_size",
        "between 1KiB",
    );
    one_error(
        "limits: { max_message_size: 4GiB }\n",
        "limits.max_message_size",
        "between 1KiB",
    );
    for (text, bytes) in [
        ("64MiB", 64 << 20),
        ("512KiB", 512 << 10),
        ("1024", 1024),
        ("1GB", 1 << 30),
    ] {
        let c = ok(&format!("limits: {{ max_message_size: {text} }}\n"));
        assert_eq!(c.limits.max_message_size, bytes, "{text}");
    }
}

#[test]
fn bad_urls() {
    let cases = [
        ("mysql://app@h/db", "must start with postgres://"),
        ("postgres://h/db", "no user name"),
        ("postgres://app@/db", "no host"),
        ("postgres://app@h:99999/db", "port"),
        ("postgres://app@h1,h2/db", "multiple hosts"),
        ("postgres://app@h/db?host=%2Ftmp", "given both"),
        ("postgres://app@/db?host=tmp%2Fpg", "invalid characters"),
        (
            "postgres://app@h/db?sslmode=verify-full",
            "sslmode=verify-full is not supported",
        ),
        (
            "postgres://app@h/db?connect_timeout=5",
            "connect_timeout is not supported",
        ),
    ];
    for (url, needle) in cases {
        let yaml = format!(
            "backends:\n  old: {{ url: \"{url}\" }}\n  new: {{ url: \"postgres://app@127.0.0.1:5433/app\" }}\nauth: {{ method: trust }}\n"
        );
        let errs = parse_config(&yaml, &env).unwrap_err();
        assert_eq!(errs.len(), 1, "{url}: {errs}");
        assert_eq!(errs.errors[0].path, "backends.old.url");
        assert!(errs.errors[0].message.contains(needle), "{url}: {errs}");
    }
}

#[test]
fn url_details() {
    let yaml = r#"
backends:
  old: { url: "postgresql://app:p%40ss@[::1]/shop?application_name=pgshift&sslmode=require&options=-c%20search_path%3Dx" }
  new: { url: "postgres://ro:${PW}@db.internal:6543", tls: disable }
auth: { method: trust }
"#;
    let c = parse_config(yaml, &env).unwrap_or_else(|e| panic!("{e}"));
    let old = &c.backends.old;
    assert_eq!((old.host.as_str(), old.port), ("::1", 5432));
    assert_eq!(old.password.as_deref(), Some("p@ss"));
    assert_eq!(old.database, "shop");
    assert_eq!(old.tls, BackendTls::Require);
    assert_eq!(
        old.options,
        vec![
            ("application_name".to_owned(), "pgshift".to_owned()),
            ("options".to_owned(), "-c search_path=x".to_owned())
        ]
    );
    assert!(
        old.url.starts_with("postgres://app:****@[::1]:5432/shop?"),
        "{}",
        old.url
    );
    let new = &c.backends.new;
    assert_eq!((new.user.as_str(), new.database.as_str()), ("ro", "ro"));
    assert_eq!(new.password.as_deref(), Some("hunter2"));
    assert_eq!(new.tls, BackendTls::Disable);
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("hunter2") && !debug.contains("p@ss"),
        "{debug}"
    );
}

#[test]
fn sslmode_conflicting_with_tls_key() {
    let yaml = r#"
backends:
  old: { url: "postgres://app@h/db?sslmode=disable", tls: require }
  new: { url: "postgres://app@h2/db?sslmode=require", tls: require }
auth: { method: trust }
"#;
    let errs = parse_config(yaml, &env).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs}");
    assert_eq!(errs.errors[0].path, "backends.old.tls");
    assert!(errs.errors[0]
        .message
        .contains("conflicts with sslmode=disable"));
}

#[test]
fn unix_socket_backends() {
    let yaml = r#"
backends:
  old: { url: "postgres://app@%2Fvar%2Frun%2Fpostgresql:5433/shop" }
  new: { url: "postgres://app@/shop_new?host=/tmp/pg&port=6000", tls: disable }
auth: { method: trust }
"#;
    let c = parse_config(yaml, &env).unwrap_or_else(|e| panic!("{e}"));
    let old = &c.backends.old;
    assert_eq!((old.host.as_str(), old.port), ("/var/run/postgresql", 5433));
    assert_eq!(
        old.url,
        "postgres://app@%2Fvar%2Frun%2Fpostgresql:5433/shop"
    );
    assert_eq!(
        pgshift_rules::config::unix_socket_path(&old.host, old.port).as_deref(),
        Some("/var/run/postgresql/.s.PGSQL.5433")
    );
    let new = &c.backends.new;
    assert_eq!((new.host.as_str(), new.port), ("/tmp/pg", 6000));
    assert!(new.options.is_empty(), "{:?}", new.options);

    // Postgres never offers TLS on a Unix socket, so `require` is refused
    // where it is written.
    for (old, field) in [
        (
            "{ url: \"postgres://app@%2Ftmp/db\", tls: require }",
            "backends.old.tls",
        ),
        (
            "{ url: \"postgres://app@%2Ftmp/db?sslmode=require\" }",
            "backends.old.url",
        ),
    ] {
        let yaml = format!(
            "backends:\n  old: {old}\n  new: {{ url: \"postgres://app@127.0.0.1:5433/app\" }}\nauth: {{ method: trust }}\n"
        );
        let errs = parse_config(&yaml, &env).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs}");
        assert_eq!(errs.errors[0].path, field, "{errs}");
        assert!(
            errs.errors[0].message.contains("Unix-domain socket"),
            "{errs}"
        );
    }
}

#[test]
fn url_from_env_never_leaks_password_in_errors() {
    let yaml = "backends:\n  old: { url: \"${BAD_URL}\" }\n  new: { url: \"postgres://app@127.0.0.1:5433/app\" }\nauth: { method: trust }\n";
    let errs = parse_config(yaml, &env).unwrap_err();
    assert_eq!(errs.errors[0].path, "backends.old.url");
    assert!(!errs.to_string().contains("hunter2"), "{errs}");
}

#[test]
fn same_database_twice() {
    let yaml = "backends:\n  old: { url: \"postgres://a@h:5432/db\" }\n  new: { url: \"postgres://b@h/db\" }\nauth: { method: trust }\n";
    let errs = parse_config(yaml, &env).unwrap_err();
    assert_eq!(errs.errors[0].path, "backends.new.url");
    assert!(errs.errors[0].message.contains("same database"));
}

#[test]
fn three_different_errors_reported_together() {
    let yaml = format!(
        "{}{}",
        "limits: { startup_timeout: soon }\n",
        "rules:\n  - name: a\n    percent: 101\n    match: { sql: \"(\", client_addr: [nope] }\n"
    );
    let errs = errors(&yaml);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "limits.startup_timeout",
            "rules[0].percent",
            "rules[0].match.sql",
            "rules[0].match.client_addr[0]"
        ],
        "{errs}"
    );
    let text = errs.to_string();
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.lines().all(|l| l.contains("(line ")), "{text}");
}

#[test]
fn structural_errors_do_not_stop_validation() {
    let yaml =
        "listen: [1, 2]\nbogus: 1\nlimits: 5\nrules: { a: 1 }\ncompare: { float_tolerance: -1 }\n";
    let errs = errors(yaml);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "listen",
            "bogus",
            "limits",
            "rules",
            "compare.float_tolerance"
        ],
        "{errs}"
    );
    assert!(errs.errors[0]
        .message
        .contains("expected a string, found a list"));
    assert!(errs.errors[2]
        .message
        .contains("expected a mapping, found an integer"));
}

#[test]
fn document_level_errors() {
    for text in ["", "   \n", "# just a comment\n"] {
        let errs = parse_config(text, &env).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs.errors[0].path, "");
        assert!(errs.errors[0].message.contains("empty"), "{errs}");
    }
    let errs = parse_config("- a\n- b\n", &env).unwrap_err();
    assert!(errs.errors[0].message.contains("top level"), "{errs}");
    let errs = parse_config("hello", &env).unwrap_err();
    assert!(errs.errors[0].message.contains("top level"), "{errs}");

    let errs = parse_config("listen: x\nrules: [\n  {a: 1\nfoo: 2\n", &env).unwrap_err();
    assert_eq!(errs.len(), 1);
    let e = &errs.errors[0];
    assert!(e.message.starts_with("invalid YAML"), "{e}");
    assert!(e.line.is_some() && e.column.is_some(), "{e:?}");
    assert!(!e.message.contains(" at line "), "{e}");

    let errs = parse_config("a: 1\na: 2\n", &env).unwrap_err();
    assert!(errs.errors[0].message.contains("duplicate"), "{errs}");
    assert_eq!(errs.errors[0].line, Some(2));
}

#[test]
fn missing_backends() {
    let errs = parse_config("auth: { method: trust }\n", &env).unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, vec!["backends.old", "backends.new"], "{errs}");
    let errs = parse_config(
        "backends:\n  old: {}\n  new: { url: \"postgres://a@h/d\" }\nauth: { method: trust }\n",
        &env,
    )
    .unwrap_err();
    assert_eq!(errs.errors[0].path, "backends.old.url");
}

const SCRAM: &str = "SCRAM-SHA-256$4096:c2FsdA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const MD5: &str = "md5d41d8cd98f00b204e9800998ecf8427e";

fn with_auth(auth: &str) -> String {
    let mut s = BACKENDS.replace("auth: { method: trust }\n", "");
    s.push_str(auth);
    s
}

#[test]
fn auth_rules() {
    let check = |auth: &str, path: &str, needle: &str| {
        let errs = parse_config(&with_auth(auth), &env).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs}");
        assert_eq!(errs.errors[0].path, path, "{errs}");
        assert!(errs.errors[0].message.contains(needle), "{errs}");
    };
    check(
        &format!("auth:\n  method: md5\n  users: [{{ name: a, password: \"{SCRAM}\" }}]\n"),
        "auth.users[0].password",
        "SCRAM verifier cannot serve md5",
    );
    check(
        &format!("auth:\n  users: [{{ name: a, password: {MD5} }}]\n"),
        "auth.users[0].password",
        "md5 hash cannot serve scram-sha-256",
    );
    check(
        "auth:\n  users: [{ name: a, password: x }, { name: a, password: y }]\n",
        "auth.users[1].name",
        "duplicate user \"a\"",
    );
    check("", "auth.users", "needs at least one user");
    check(
        "auth: { method: md5, users: [] }\n",
        "auth.users",
        "needs at least one user",
    );
    check(
        "auth:\n  users: [{ name: a }]\n",
        "auth.users[0].password",
        "required key is missing",
    );
    check(
        "auth:\n  users: [{ name: a, password: \"SCRAM-SHA-256$4096:abc\" }]\n",
        "auth.users[0].password",
        "malformed",
    );
    check(
        "auth:\n  users: [{ name: a, password: \"\" }]\n",
        "auth.users[0].password",
        "empty",
    );
    check(
        "auth: { method: kerberos }\n",
        "auth.method",
        "scram-sha-256, md5, trust",
    );

    let c = parse_config(
        &with_auth(&format!(
            "auth:\n  method: scram-sha-256\n  users:\n    - {{ name: a, password: \"{SCRAM}\" }}\n    - {{ name: b, password: \"${{PW}}\" }}\n"
        )),
        &env,
    )
    .unwrap();
    assert_eq!(c.auth.users.len(), 2);
    assert_eq!(
        c.auth
            .user("a")
            .unwrap()
            .secret
            .as_ref()
            .unwrap()
            .kind_name(),
        "SCRAM verifier"
    );
    let shown = format!("{:?}\n{}", c, c.describe());
    assert!(
        !shown.contains("hunter2") && !shown.contains("c2FsdA"),
        "{shown}"
    );

    let c = parse_config(
        &with_auth(&format!(
            "auth: {{ method: md5, users: [{{ name: a, password: {MD5} }}] }}\n"
        )),
        &env,
    )
    .unwrap();
    assert!(matches!(
        c.auth.users[0].secret,
        Some(pgshift_rules::Secret::Md5Hash(_))
    ));
}

#[test]
fn strings_keep_their_spelling() {
    // YAML 1.1 would read `no` as false and 0123 as a number.
    let c = ok(&rule(
        "    match: { user: [no, 0123, on], application_name: 1e3 }\n",
    ));
    assert_eq!(c.rules[0].matcher.user, vec!["no", "0123", "on"]);
    assert_eq!(c.rules[0].matcher.application_name, vec!["1e3"]);
}

#[test]
fn scalar_accepted_where_a_list_is_expected() {
    let c = ok(&rule("    match: { kind: write, tables: Public.Orders }\n"));
    let m = &c.rules[0].matcher;
    assert_eq!(m.kinds.unwrap().to_string(), "write");
    assert_eq!(m.tables[0].to_string(), "public.orders");
    one_error(
        &rule("    match: { tables: [] }\n"),
        "rules[0].match.tables",
        "empty list matches nothing",
    );
    one_error(
        &rule("    match: { tables: [a..b] }\n"),
        "rules[0].match.tables[0]",
        "invalid table name",
    );
}

#[test]
fn rules_inherit_defaults_primary() {
    let c = ok(&format!(
        "defaults: {{ primary: new, mirror: old, compare: true }}\n{}",
        rule("    mirror: old\n    sticky: client_addr\n")
    ));
    let r = &c.rules[0];
    assert_eq!(
        (r.primary, r.mirror, r.compare),
        (BackendId::New, Some(BackendId::Old), false)
    );
    assert_eq!(r.percent, 100);
    assert!(r.matcher.is_catch_all());
    assert!(c.defaults.compare);
}

#[test]
fn rewrite_validation() {
    let e = one_error(
        "rewrite:\n  new:\n    columns: { \"users.email\": \"a.b\" }\n",
        "rewrite.new.columns[\"users.email\"]",
        "invalid column name",
    );
    assert_eq!(e.line, Some(8));
    one_error(
        "rewrite:\n  old:\n    columns: { email: x }\n",
        "rewrite.old.columns.email",
        "table.column",
    );
    one_error(
        "rewrite:\n  new:\n    tables: { users: accounts, Users: other }\n",
        "rewrite.new.tables.Users",
        "renamed twice",
    );
    one_error(
        "rewrite:\n  new:\n    replace: [ { pattern: \"(\", with: x } ]\n",
        "rewrite.new.replace[0].pattern",
        "invalid regex",
    );
    one_error(
        "rewrite:\n  new:\n    replace: [ { pattern: x } ]\n",
        "rewrite.new.replace[0].with",
        "required",
    );
    let c = ok("rewrite:\n  old:\n    tables: { \"public.Users\": \"legacy.\\\"Users\\\"\" }\n    columns: { public.users.Email: mail }\n");
    assert_eq!(c.rewrite.old.tables[0].0.to_string(), "public.users");
    assert_eq!(c.rewrite.old.tables[0].1.to_string(), "legacy.\"Users\"");
    assert_eq!(c.rewrite.old.columns[0].1, "email");
}

#[test]
fn listen_admin_and_tls() {
    let c =
        ok("listen: \"[::]:6432\"\nadmin: localhost:0\ntls: { cert: \"${PW}.crt\", key: k.pem }\n");
    assert_eq!(c.listen.host, "::");
    assert_eq!(c.admin.unwrap().port, 0);
    assert_eq!(c.tls.unwrap().cert.to_str(), Some("hunter2.crt"));
    one_error("listen: 6432\n", "listen", "expected host:port");
    one_error("admin: \"1.2.3.4\"\n", "admin", "expected host:port");
    one_error(
        "tls: { cert: c.pem }\n",
        "tls.key",
        "required key is missing",
    );
    one_error("admin_token: \"\"\n", "admin_token", "must not be empty");
    one_error(
        "telemetry: { otlp_endpoint: \"grpc://x\" }\n",
        "telemetry.otlp_endpoint",
        "http://",
    );
}

#[test]
fn compare_settings() {
    let c = ok("compare: { sample: 0, ignore_columns: [UpdatedAt, \"\\\"CreatedAt\\\"\"], float_tolerance: 0, log_values: yes }\n");
    assert_eq!(c.compare.sample, 0);
    assert_eq!(c.compare.ignore_columns, vec!["updatedat", "CreatedAt"]);
    assert_eq!(c.compare.float_tolerance, 0.0);
    assert!(c.compare.log_values);
    one_error(
        "compare: { float_tolerance: .nan }\n",
        "compare.float_tolerance",
        "finite",
    );
    one_error("mirror: { queue: 0 }\n", "mirror.queue", "from 1 to");
}

#[test]
fn one_typo_gives_one_error() {
    one_error(
        &rule("    primary: neww\n    mirror: old\n"),
        "rules[0].primary",
        "neww",
    );
    one_error(
        &rule("    mirror: olld\n    compare: true\n"),
        "rules[0].mirror",
        "olld",
    );
}
