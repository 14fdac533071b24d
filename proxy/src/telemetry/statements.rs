//! `pgshift_statements_total{backend,role,kind,rule}` and
//! `pgshift_statement_duration_seconds{backend,role}`.
//!
//! A statement is counted through a counter already bound to its label
//! set: the first statement with a given (rule, kind, backend, role) binds
//! it, every later one is an atomic add behind a `OnceLock` load. The rule
//! label is the rule's name, so the bound counters belong to one loaded
//! configuration ([`StatementMeters`], built at load); the four duration
//! histograms are bound once per proxy.
//!
//! Labels stay bounded: backend and role have two values each, kind eight,
//! rule the configured names plus `default` and `rollback`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::metrics::{BoundCounter, BoundHistogram, Counter, Meter};
use opentelemetry::{KeyValue, Value};
use pgshift_rules::config::{BackendId, Config, Kind};

use crate::compare::Role;

/// The seven statement kinds, plus `unclassified` for statements routed
/// without being parsed (no rule could apply, nothing mirrored).
const KINDS: usize = Kind::ALL.len() + 1;
const UNCLASSIFIED: usize = Kind::ALL.len();
const BACKENDS: usize = 2;
const ROLES: usize = 2;
const PER_RULE: usize = KINDS * BACKENDS * ROLES;

/// Rule label slots before the configured rules.
const DEFAULT_SLOT: usize = 0;
const ROLLBACK_SLOT: usize = 1;
const FIRST_RULE_SLOT: usize = 2;

/// Upper bounds, in seconds, from 100 us (a cached read next door) to 10 s.
const DURATION_BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The per-proxy instruments.
pub struct Instruments {
    statements: Counter<u64>,
    durations: [[BoundHistogram<f64>; ROLES]; BACKENDS],
}

impl Instruments {
    pub fn new(meter: &Meter) -> Self {
        let statements = meter
            .u64_counter("pgshift.statements")
            .with_description("Statements run (a simple Query, or extended-protocol messages up to a Sync with an Execute), by backend, role, kind and rule")
            .with_unit("{statement}")
            .build();
        let durations = meter
            .f64_histogram("pgshift.statement.duration")
            .with_description(
                "Time from sending a statement to its last answer, by backend and role",
            )
            .with_unit("s")
            .with_boundaries(DURATION_BOUNDS.to_vec())
            .build();
        let bind = |b: BackendId, r: Role| {
            durations.bind(&[
                KeyValue::new("backend", b.as_str()),
                KeyValue::new("role", r.as_str()),
            ])
        };
        Instruments {
            statements,
            durations: [
                [
                    bind(BackendId::Old, Role::Primary),
                    bind(BackendId::Old, Role::Mirror),
                ],
                [
                    bind(BackendId::New, Role::Primary),
                    bind(BackendId::New, Role::Mirror),
                ],
            ],
        }
    }
}

/// The statement counters of one loaded configuration.
pub struct StatementMeters {
    instruments: Arc<Instruments>,
    rollback: bool,
    /// Rule label values by slot: `default`, `rollback`, then each rule.
    rule_labels: Box<[Value]>,
    /// Bound on first use, indexed by [`StatementMeters::index`]. Most
    /// combinations never happen, so none is bound ahead of time.
    counters: Box<[OnceLock<BoundCounter<u64>>]>,
}

impl StatementMeters {
    pub fn new(instruments: &Arc<Instruments>, config: &Config) -> Self {
        let mut rule_labels: Vec<Value> = Vec::with_capacity(FIRST_RULE_SLOT + config.rules.len());
        rule_labels.push(Value::from("default"));
        rule_labels.push(Value::from("rollback"));
        rule_labels.extend(config.rules.iter().map(|r| Value::from(r.name.clone())));
        let counters = (0..rule_labels.len() * PER_RULE)
            .map(|_| OnceLock::new())
            .collect();
        StatementMeters {
            instruments: Arc::clone(instruments),
            rollback: config.rollback,
            rule_labels: rule_labels.into_boxed_slice(),
            counters,
        }
    }

    /// What a statement routed by rule `rule` (an index into the config's
    /// rules, `None` for the defaults) is counted under. `kind` is `None`
    /// when the statement was not parsed.
    pub fn tally(self: &Arc<Self>, rule: Option<usize>, kind: Option<Kind>) -> Tally {
        let slot = if self.rollback {
            ROLLBACK_SLOT
        } else {
            match rule {
                Some(i) if FIRST_RULE_SLOT + i < self.rule_labels.len() => FIRST_RULE_SLOT + i,
                _ => DEFAULT_SLOT,
            }
        };
        Tally {
            meters: Arc::clone(self),
            slot: slot as u32,
            kind: kind.map_or(UNCLASSIFIED, |k| k as usize) as u8,
        }
    }

    fn index(slot: usize, kind: usize, backend: BackendId, role: Role) -> usize {
        ((slot * KINDS + kind) * BACKENDS + backend.index()) * ROLES + role.index()
    }

    fn counter(
        &self,
        slot: usize,
        kind: usize,
        backend: BackendId,
        role: Role,
    ) -> &BoundCounter<u64> {
        self.counters[Self::index(slot, kind, backend, role)].get_or_init(|| {
            let kind = Kind::ALL.get(kind).map_or("unclassified", |k| k.as_str());
            self.instruments.statements.bind(&[
                KeyValue::new("backend", backend.as_str()),
                KeyValue::new("role", role.as_str()),
                KeyValue::new("kind", kind),
                KeyValue::new("rule", self.rule_labels[slot].clone()),
            ])
        })
    }
}

/// The labels of one routed statement; cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct Tally {
    meters: Arc<StatementMeters>,
    slot: u32,
    kind: u8,
}

impl Tally {
    /// Counts the statement as run on `backend` in `role`.
    pub fn count(&self, backend: BackendId, role: Role) {
        self.meters
            .counter(self.slot as usize, self.kind as usize, backend, role)
            .add(1);
    }

    /// Counts the statement and records how long it took.
    pub fn record(&self, backend: BackendId, role: Role, elapsed: Duration) {
        self.count(backend, role);
        self.meters.instruments.durations[backend.index()][role.index()]
            .record(elapsed.as_secs_f64());
    }

    pub fn rule(&self) -> &Value {
        &self.meters.rule_labels[self.slot as usize]
    }

    pub fn kind(&self) -> &'static str {
        Kind::ALL
            .get(self.kind as usize)
            .map_or("unclassified", |k| k.as_str())
    }

    /// A span for the statement on `backend`, exported when OTLP tracing
    /// is on; otherwise a disabled span, which costs a branch.
    pub fn span(&self, backend: BackendId, role: Role, digest: u64) -> tracing::Span {
        if !super::otlp::tracing_enabled() {
            return tracing::Span::none();
        }
        tracing::info_span!(
            target: super::otlp::STATEMENT_TARGET,
            "statement",
            otel.kind = "client",
            db.system = "postgresql",
            pgshift.backend = backend.as_str(),
            pgshift.role = role.as_str(),
            pgshift.kind = self.kind(),
            pgshift.rule = %self.rule(),
            pgshift.digest = %format_args!("{digest:016x}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::SdkMeterProvider;

    fn config(yaml: &str) -> Config {
        let base = "backends:\n  old: { url: \"postgres://a@127.0.0.1:1/a\" }\n  new: { url: \"postgres://a@127.0.0.1:2/a\" }\nauth: { method: trust }\n";
        pgshift_rules::config::parse_config(&format!("{base}{yaml}"), &|_| None).unwrap()
    }

    #[test]
    fn rule_slots_and_indexes_are_distinct() {
        let provider = SdkMeterProvider::builder().build();
        let instruments = Arc::new(Instruments::new(&provider.meter("t")));
        let c = config("rules:\n  - { name: r0, match: { kind: [read] }, primary: new }\n  - { name: r1, match: { kind: [write] }, primary: new }\n");
        let m = Arc::new(StatementMeters::new(&instruments, &c));
        assert_eq!(m.tally(None, Some(Kind::Read)).rule().as_str(), "default");
        assert_eq!(m.tally(Some(0), Some(Kind::Read)).rule().as_str(), "r0");
        assert_eq!(m.tally(Some(1), None).rule().as_str(), "r1");
        assert_eq!(m.tally(Some(1), None).kind(), "unclassified");
        // An index past the rules (a stale one) falls back to the defaults.
        assert_eq!(m.tally(Some(7), None).rule().as_str(), "default");
        let mut seen = std::collections::HashSet::new();
        for slot in 0..4 {
            for kind in 0..KINDS {
                for b in BackendId::ALL {
                    for r in [Role::Primary, Role::Mirror] {
                        let i = StatementMeters::index(slot, kind, *b, r);
                        assert!(i < 4 * PER_RULE && seen.insert(i));
                    }
                }
            }
        }
        let rb = Arc::new(StatementMeters::new(
            &instruments,
            &config("rollback: true\n"),
        ));
        assert_eq!(
            rb.tally(Some(0), Some(Kind::Write)).rule().as_str(),
            "rollback"
        );
    }

    #[test]
    fn counts_and_durations_reach_prometheus() {
        let c = config(
            "rules:\n  - { name: shift, match: { kind: [read] }, primary: new, mirror: old }\n",
        );
        let telemetry = crate::telemetry::Telemetry::new(&c).unwrap();
        let m = telemetry.statement_meters(&c);
        let t = m.tally(Some(0), Some(Kind::Read));
        for _ in 0..3 {
            t.record(BackendId::New, Role::Primary, Duration::from_millis(2));
        }
        t.record(BackendId::Old, Role::Mirror, Duration::from_millis(40));
        m.tally(None, None).count(BackendId::Old, Role::Primary);
        let text = telemetry.prometheus_text().unwrap();
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(
            has(
                r#"pgshift_statements_total{backend="new",kind="read",role="primary",rule="shift"} 3"#
            ),
            "{text}"
        );
        assert!(
            has(
                r#"pgshift_statements_total{backend="old",kind="read",role="mirror",rule="shift"} 1"#
            ),
            "{text}"
        );
        assert!(
            has(
                r#"pgshift_statements_total{backend="old",kind="unclassified",role="primary",rule="default"} 1"#
            ),
            "{text}"
        );
        assert!(
            has(
                r#"pgshift_statement_duration_seconds_bucket{backend="new",role="primary",le="0.0025"} 3"#
            ),
            "{text}"
        );
        assert!(
            has(
                r#"pgshift_statement_duration_seconds_bucket{backend="old",role="mirror",le="0.025"} 0"#
            ),
            "{text}"
        );
        assert!(
            has(r#"pgshift_statement_duration_seconds_count{backend="old",role="mirror"} 1"#),
            "{text}"
        );
    }
}
