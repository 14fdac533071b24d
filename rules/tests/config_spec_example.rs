//! The example from SPEC.md, verbatim, must parse into the expected values.

use std::time::Duration;

use pgshift_rules::{
    parse_config, AuthMethod, BackendId, BackendTls, Kind, LogFormat, MirrorErrorPolicy,
    MirrorMode, OverflowPolicy, Secret, Sticky, TableName,
};

const SPEC_EXAMPLE: &str = r#"
listen: 127.0.0.1:6432                 # client-facing Postgres port
admin: 127.0.0.1:9930                  # HTTP: /metrics /status /rules /digests /mismatches /reload and a dashboard at /
admin_token: "${ADMIN_TOKEN}"          # optional bearer token; required for POST when set
tls: { cert: server.crt, key: server.key }   # optional: TLS for clients (SSLRequest answered 'S')
limits: { max_clients: 1000, startup_timeout: 10s, max_message_size: 1GiB, shutdown_grace: 30s }
telemetry: { otlp_endpoint: "http://127.0.0.1:4317", log_format: text }   # both optional
backends:
  old: { url: "postgres://app:${OLD_PASSWORD}@127.0.0.1:5432/app" }   # ${VAR} is read from the environment
  new: { url: "postgres://app@127.0.0.1:5433/app", tls: prefer }
auth:                                  # how clients log in to the proxy
  method: scram-sha-256                # scram-sha-256 | md5 | trust
  users:
    - { name: app, password: "${APP_PASSWORD}" }   # or a stored SCRAM verifier
rollback: false                        # the big switch: true sends everything to old, mirrors nothing, ignores rules
defaults:                              # what a statement gets when no rule matches
  primary: old                         # old | new : the backend whose answer the client receives
  mirror: none                         # none | old | new : replay the statement there too
mirror:
  mode: async                          # async: client never waits for the mirror | sync: waits for both
  queue: 10000                         # per-session bound on statements waiting for the mirror
  on_overflow: drop                    # drop the rest of the transaction (counted, session marked diverged) | block
  on_mirror_error: ignore              # sync mode only: ignore (counted) | fail (the client gets the error)
  read_your_writes_wait: 50ms          # a read routed to the mirror target waits this long for the session's queue
compare:
  sample: 100                          # percent of mirrored reads whose results are compared
  ignore_columns: [updated_at]
  float_tolerance: 1e-9
  log: mismatches.jsonl                # one JSON object per mismatch
  redact_literals: true                # SQL in logs and endpoints has literals replaced by $n
  log_values: false                    # include differing row values in mismatch records
rules:                                 # first match wins
  - name: users-read-shift
    match:
      kind: [read]                     # read | write | ddl | transaction | session | copy | other
      tables: [users, profiles]        # statement touches any of these
      sql: "(?i)from\\s+users"         # optional regex on the statement text
      user: [app]                      # optional; also database, application_name, client_addr (CIDR)
    percent: 10                        # share of sticky buckets the rule applies to (0-100, default 100)
    sticky: session                    # session | user | application_name | client_addr
    primary: new
    mirror: old
    compare: true
rewrite:                               # applied to every statement sent to that backend
  new:
    tables: { users: accounts }        # schema.table also accepted
    columns: { users.email: email_address }
    replace: [ { pattern: "\\blegacy_total\\(", with: "order_total(" } ]   # regex escape hatch
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "ADMIN_TOKEN" => Some("tok-7f3a".into()),
        "OLD_PASSWORD" => Some("old-s3cret".into()),
        "APP_PASSWORD" => Some("app-s3cret".into()),
        _ => None,
    }
}

#[test]
fn spec_example_parses_to_expected_values() {
    let c = parse_config(SPEC_EXAMPLE, &env).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(c.listen.to_string(), "127.0.0.1:6432");
    assert_eq!(c.listen.socket_addr().unwrap().port(), 6432);
    assert_eq!(c.admin.as_ref().unwrap().to_string(), "127.0.0.1:9930");
    assert_eq!(c.admin_token.as_deref(), Some("tok-7f3a"));
    let tls = c.tls.as_ref().unwrap();
    assert_eq!(tls.cert.to_str(), Some("server.crt"));
    assert_eq!(tls.key.to_str(), Some("server.key"));

    assert_eq!(c.limits.max_clients, 1000);
    assert_eq!(c.limits.startup_timeout, Duration::from_secs(10));
    assert_eq!(c.limits.max_message_size, 1 << 30);
    assert_eq!(c.limits.shutdown_grace, Duration::from_secs(30));
    assert_eq!(
        c.telemetry.otlp_endpoint.as_deref(),
        Some("http://127.0.0.1:4317")
    );
    assert_eq!(c.telemetry.log_format, LogFormat::Text);

    let old = &c.backends.old;
    assert_eq!(
        (
            old.host.as_str(),
            old.port,
            old.user.as_str(),
            old.database.as_str()
        ),
        ("127.0.0.1", 5432, "app", "app")
    );
    assert_eq!(old.password.as_deref(), Some("old-s3cret"));
    assert_eq!(old.tls, BackendTls::Prefer);
    assert_eq!(old.url, "postgres://app:****@127.0.0.1:5432/app");
    let new = &c.backends[BackendId::New];
    assert_eq!((new.port, new.password.as_deref()), (5433, None));
    assert_eq!(new.tls, BackendTls::Prefer);
    assert!(new.options.is_empty());

    assert_eq!(c.auth.method, AuthMethod::ScramSha256);
    assert_eq!(c.auth.users.len(), 1);
    assert_eq!(c.auth.users[0].name, "app");
    assert_eq!(
        c.auth.users[0].secret,
        Some(Secret::Plain("app-s3cret".into()))
    );

    assert!(!c.rollback);
    assert_eq!(c.defaults.primary, BackendId::Old);
    assert_eq!(c.defaults.mirror, None);
    assert!(!c.defaults.compare);

    assert_eq!(c.mirror.mode, MirrorMode::Async);
    assert_eq!(c.mirror.queue, 10_000);
    assert_eq!(c.mirror.on_overflow, OverflowPolicy::Drop);
    assert_eq!(c.mirror.on_mirror_error, MirrorErrorPolicy::Ignore);
    assert_eq!(c.mirror.read_your_writes_wait, Duration::from_millis(50));

    assert_eq!(c.compare.sample, 100);
    assert_eq!(c.compare.ignore_columns, vec!["updated_at".to_owned()]);
    assert_eq!(c.compare.float_tolerance, 1e-9);
    assert_eq!(
        c.compare.log.as_deref().and_then(|p| p.to_str()),
        Some("mismatches.jsonl")
    );
    assert!(c.compare.redact_literals);
    assert!(!c.compare.log_values);

    assert_eq!(c.rules.len(), 1);
    let r = &c.rules[0];
    assert_eq!(r.name, "users-read-shift");
    let kinds = r.matcher.kinds.unwrap();
    assert_eq!(kinds.iter().collect::<Vec<_>>(), vec![Kind::Read]);
    assert_eq!(
        r.matcher.tables,
        vec![
            TableName::new(None, "users"),
            TableName::new(None, "profiles")
        ]
    );
    let sql = r.matcher.sql.as_ref().unwrap();
    assert!(sql.is_match("SELECT * FROM   Users"));
    assert!(!sql.is_match("select 1"));
    assert_eq!(r.matcher.user, vec!["app".to_owned()]);
    assert!(r.matcher.database.is_empty() && r.matcher.client_addr.is_empty());
    assert_eq!(r.percent, 10);
    assert_eq!(r.sticky, Sticky::Session);
    assert_eq!(
        (r.primary, r.mirror, r.compare),
        (BackendId::New, Some(BackendId::Old), true)
    );

    assert!(c.rewrite.old.is_empty());
    let rw = &c.rewrite.new;
    assert_eq!(
        rw.tables,
        vec![(
            TableName::new(None, "users"),
            TableName::new(None, "accounts")
        )]
    );
    assert_eq!(
        rw.columns,
        vec![(
            TableName::new(None, "users"),
            "email".to_owned(),
            "email_address".to_owned()
        )]
    );
    assert_eq!(rw.replace.len(), 1);
    let (re, with) = &rw.replace[0];
    assert_eq!(
        re.replace_all("select legacy_total(1)", with.as_str()),
        "select order_total(1)"
    );
}

#[test]
fn spec_example_describe_and_debug_hide_secrets() {
    let c = parse_config(SPEC_EXAMPLE, &env).unwrap();
    let described = c.describe();
    let debugged = format!("{c:?}");
    for text in [&described, &debugged] {
        for secret in ["tok-7f3a", "old-s3cret", "app-s3cret"] {
            assert!(!text.contains(secret), "{secret} leaked in:\n{text}");
        }
    }
    assert!(
        described.contains("postgres://app:****@127.0.0.1:5432/app"),
        "{described}"
    );
    assert!(described.contains("users-read-shift"));
    assert!(described.contains("primary=new mirror=old compare"));
    assert!(described.contains("kind=read tables=users,profiles"));
    println!("{described}");
}

#[test]
fn spec_example_missing_env_vars_are_each_reported() {
    let errs = parse_config(SPEC_EXAMPLE, &|_| None).unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        vec!["admin_token", "backends.old.url", "auth.users[0].password"]
    );
    assert!(errs.errors[0].message.contains("ADMIN_TOKEN is not set"));
    assert_eq!(errs.errors[0].line, Some(4));
}
