//! One mismatch as one JSON line, for the `compare.log` file and
//! `GET /mismatches`.
//!
//! Redaction follows the `compare:` settings. With `redact_literals` the SQL
//! is the normalised text (literals as `$n`) and quoted fragments of error
//! messages (`invalid input syntax for type integer: "abc"`) are blanked,
//! since Postgres quotes the offending input there. Without `log_values`,
//! differing rows keep their position but their values become
//! `"<redacted>"`. Reasons never carry values, so they are always logged.

use std::time::{SystemTime, UNIX_EPOCH};

use pgshift_rules::CompareSettings;
use serde::{Serialize, Serializer};

use super::digest::{BackendError, ResultSummary, SampleRow};
use super::verdict::{DifferingRow, Reason, Verdict};
use super::Role;

/// SQL longer than this is cut (on a character boundary) and ends in `…`.
const MAX_SQL_BYTES: usize = 16 * 1024;
const REDACTED: &str = "<redacted>";

/// What of a mismatch may be written down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redaction {
    pub redact_literals: bool,
    pub log_values: bool,
}

impl From<&CompareSettings> for Redaction {
    fn from(s: &CompareSettings) -> Self {
        Redaction {
            redact_literals: s.redact_literals,
            log_values: s.log_values,
        }
    }
}

/// The statement a mismatch is about and where it ran.
#[derive(Clone, Copy, Debug)]
pub struct MismatchContext<'a> {
    pub time: SystemTime,
    pub rule: Option<&'a str>,
    /// The statement's digest fingerprint.
    pub fingerprint: u64,
    /// The statement as the client sent it.
    pub sql: &'a str,
    /// The normalised text, literals as `$n`.
    pub normalized_sql: &'a str,
    pub primary_backend: &'a str,
    pub mirror_backend: &'a str,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MismatchRecord {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub rule: Option<String>,
    /// The fingerprint as 16 hex digits, as `/digests` shows it.
    pub digest: String,
    pub sql: String,
    pub primary: SideRecord,
    pub mirror: SideRecord,
    pub reasons: Vec<Reason>,
    pub differing_rows: Vec<RowRecord>,
    /// `differing_rows` is a sample: capped, or drawn only from the first
    /// rows of each side, so more rows may differ.
    pub sample: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SideRecord {
    pub backend: String,
    pub tag: Option<String>,
    pub rows: u64,
    pub error: Option<BackendError>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RowRecord {
    pub side: Role,
    pub row: u64,
    /// `None` when the row was not among the sampled ones.
    pub values: Option<RowValues>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowValues {
    Shown(SampleRow),
    Redacted,
}

impl Serialize for RowValues {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RowValues::Shown(v) => v.serialize(s),
            RowValues::Redacted => s.serialize_str(REDACTED),
        }
    }
}

impl MismatchRecord {
    /// The record of a mismatch; `None` for a match.
    pub fn from_verdict(
        ctx: &MismatchContext<'_>,
        primary: &ResultSummary,
        mirror: &ResultSummary,
        verdict: &Verdict,
        redaction: Redaction,
    ) -> Option<Self> {
        match verdict {
            Verdict::Match => None,
            Verdict::Mismatch {
                reasons,
                differing_rows,
            } => Some(Self::new(
                ctx,
                primary,
                mirror,
                reasons,
                differing_rows,
                redaction,
            )),
        }
    }

    pub fn new(
        ctx: &MismatchContext<'_>,
        primary: &ResultSummary,
        mirror: &ResultSummary,
        reasons: &[Reason],
        differing_rows: &[DifferingRow],
        redaction: Redaction,
    ) -> Self {
        let sql = if redaction.redact_literals {
            ctx.normalized_sql
        } else {
            ctx.sql
        };
        let side = |backend: &str, s: &ResultSummary| SideRecord {
            backend: backend.to_owned(),
            tag: s.tag.clone(),
            rows: s.rows,
            error: s.error.as_ref().map(|e| BackendError {
                sqlstate: e.sqlstate.clone(),
                message: if redaction.redact_literals || !redaction.log_values {
                    blank_quoted(&e.message)
                } else {
                    e.message.clone()
                },
            }),
        };
        let rows_differ = reasons.iter().any(|r| {
            matches!(
                r,
                Reason::RowValues | Reason::RowOrder | Reason::RowCount { .. }
            )
        });
        let exhaustive = differing_rows.len() < super::verdict::MAX_DIFFERING_ROWS
            && primary.all_row_hashes_kept()
            && mirror.all_row_hashes_kept();
        MismatchRecord {
            time: rfc3339_utc(ctx.time),
            rule: ctx.rule.map(str::to_owned),
            digest: format!("{:016x}", ctx.fingerprint),
            sql: bounded_sql(sql),
            primary: side(ctx.primary_backend, primary),
            mirror: side(ctx.mirror_backend, mirror),
            reasons: reasons.to_vec(),
            differing_rows: differing_rows
                .iter()
                .map(|d| RowRecord {
                    side: d.side,
                    row: d.row,
                    values: d.values.as_ref().map(|v| {
                        if redaction.log_values {
                            RowValues::Shown(v.clone())
                        } else {
                            RowValues::Redacted
                        }
                    }),
                })
                .collect(),
            sample: rows_differ && !exhaustive,
        }
    }

    /// The record as one line of JSON, newline included.
    pub fn to_json_line(&self) -> String {
        // Serializing plain structs of strings and numbers cannot fail.
        let mut line =
            serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        line.push('\n');
        line
    }
}

fn bounded_sql(sql: &str) -> String {
    if sql.len() <= MAX_SQL_BYTES {
        return sql.to_owned();
    }
    let mut end = MAX_SQL_BYTES;
    while !sql.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &sql[..end])
}

/// Replaces every `"..."` fragment with `"<redacted>"`; an unclosed quote
/// blanks the rest.
fn blank_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..=open]);
        out.push_str(REDACTED);
        out.push('"');
        match rest[open + 1..].find('"') {
            Some(close) => rest = &rest[open + 1 + close + 1..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// `2024-05-01T12:34:56.789Z`. Times before 1970 print as the epoch.
pub fn rfc3339_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::*;
    use super::*;
    use crate::compare::verdict::{compare, CompareKind};

    #[test]
    fn rfc3339_known_instants() {
        let at = |s: u64, ms: u64| rfc3339_utc(UNIX_EPOCH + Duration::from_millis(s * 1000 + ms));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_709_251_199, 999), "2024-02-29T23:59:59.999Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn quoted_fragments_are_blanked() {
        assert_eq!(
            blank_quoted("invalid input syntax for type integer: \"abc\""),
            "invalid input syntax for type integer: \"<redacted>\""
        );
        assert_eq!(
            blank_quoted("a \"b\" c \"d"),
            "a \"<redacted>\" c \"<redacted>\""
        );
        assert_eq!(blank_quoted("division by zero"), "division by zero");
    }

    fn mismatching_pair() -> (ResultSummary, ResultSummary) {
        let cols = [text_col("id", 23), text_col("email", 25)];
        let p = summarize(&opts(), &cols, &[vec![Some("1"), Some("ann@example.com")]]);
        let m = summarize(&opts(), &cols, &[vec![Some("1"), Some("ann@example.org")]]);
        (p, m)
    }

    fn ctx() -> MismatchContext<'static> {
        MismatchContext {
            time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            rule: Some("users-read-shift"),
            fingerprint: 0xabc,
            sql: "SELECT id, email FROM users WHERE email = 'ann@example.com'",
            normalized_sql: "SELECT id, email FROM users WHERE email = $1",
            primary_backend: "new",
            mirror_backend: "old",
        }
    }

    #[test]
    fn redacted_record_has_neither_values_nor_literals() {
        let (p, m) = mismatching_pair();
        let verdict = compare(&p, &m, CompareKind::Read);
        let redaction = Redaction {
            redact_literals: true,
            log_values: false,
        };
        let line = MismatchRecord::from_verdict(&ctx(), &p, &m, &verdict, redaction)
            .unwrap()
            .to_json_line();
        assert!(line.ends_with('\n') && line.trim_end().lines().count() == 1);
        assert!(!line.contains("ann@example"), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(v["rule"], "users-read-shift");
        assert_eq!(v["digest"], "0000000000000abc");
        assert_eq!(v["sql"], "SELECT id, email FROM users WHERE email = $1");
        assert_eq!(v["primary"]["backend"], "new");
        assert_eq!(v["mirror"]["rows"], 1);
        assert_eq!(v["primary"]["tag"], "SELECT 1");
        assert_eq!(v["reasons"][0]["reason"], "row_values");
        assert_eq!(v["differing_rows"][0]["side"], "primary");
        assert_eq!(v["differing_rows"][0]["values"], "<redacted>");
        assert_eq!(v["differing_rows"][1]["side"], "mirror");
        assert_eq!(v["sample"], false);
    }

    #[test]
    fn unredacted_record_shows_values_and_sql() {
        let (p, m) = mismatching_pair();
        let verdict = compare(&p, &m, CompareKind::Read);
        let redaction = Redaction {
            redact_literals: false,
            log_values: true,
        };
        let rec = MismatchRecord::from_verdict(&ctx(), &p, &m, &verdict, redaction).unwrap();
        let v: serde_json::Value = serde_json::from_str(&rec.to_json_line()).unwrap();
        assert_eq!(v["sql"], ctx().sql);
        assert_eq!(
            v["differing_rows"][1]["values"],
            serde_json::json!(["1", "ann@example.org"])
        );
        assert!(MismatchRecord::from_verdict(&ctx(), &p, &p, &Verdict::Match, redaction).is_none());
    }

    #[test]
    fn error_messages_are_redacted_with_literals() {
        let ok = summarize(&opts(), &[text_col("n", 23)], &[vec![Some("1")]]);
        let mut d = crate::compare::ResultDigest::new(&opts());
        d.error(&error_body(
            "22P02",
            "invalid input syntax for type integer: \"secret\"",
        ));
        let failed = d.finish();
        let verdict = compare(&ok, &failed, CompareKind::Read);
        let redacted = Redaction {
            redact_literals: true,
            log_values: true,
        };
        let line = MismatchRecord::from_verdict(&ctx(), &ok, &failed, &verdict, redacted)
            .unwrap()
            .to_json_line();
        assert!(!line.contains("secret"), "{line}");
        assert!(line.contains("22P02"));
        let open = Redaction {
            redact_literals: false,
            log_values: true,
        };
        let line = MismatchRecord::from_verdict(&ctx(), &ok, &failed, &verdict, open)
            .unwrap()
            .to_json_line();
        assert!(line.contains("secret"));
    }

    #[test]
    fn long_sql_is_cut_on_a_char_boundary() {
        let sql = "é".repeat(MAX_SQL_BYTES);
        let cut = bounded_sql(&sql);
        assert!(cut.len() <= MAX_SQL_BYTES + 3 && cut.ends_with('…'));
    }
}
