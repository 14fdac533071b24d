//! Compares the primary's and the mirror's [`ResultSummary`] for one
//! statement and says why they differ.
//!
//! Errors come first: two errors with the same SQLSTATE are a match (their
//! messages may differ between server versions), one error is a mismatch.
//! Writes are then compared by command tag alone: rows a write RETURNs carry
//! sequence values and timestamps that legitimately differ between two
//! databases. Reads are compared by shape (column count, types by position),
//! row count, row values through the digests (ordered only when the
//! statement has ORDER BY) and command tag.

use std::collections::HashMap;

use serde::Serialize;

use super::digest::{ResultSummary, SampleRow};
use super::Role;

/// At most this many differing rows are reported per mismatch.
pub const MAX_DIFFERING_ROWS: usize = 10;
/// At most this many column type differences are reported.
const MAX_COLUMN_REASONS: usize = 8;

/// How a statement's results are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareKind {
    /// Rows and shape, plus the command tag.
    Read,
    /// The command tag (`UPDATE 3`) only.
    Write,
}

impl CompareKind {
    /// Reads compare rows; everything else (writes, DDL, ...) compares tags.
    pub fn of(kind: pgshift_rules::Kind) -> CompareKind {
        match kind {
            pgshift_rules::Kind::Read => CompareKind::Read,
            _ => CompareKind::Write,
        }
    }
}

/// Why two results differ. Reasons never carry row values or SQL literals,
/// so they can be logged whatever the redaction settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// One side failed, the other did not.
    ErrorOnOneSide {
        failed: Role,
        sqlstate: String,
    },
    /// Both failed, with different SQLSTATEs.
    DifferentErrors {
        primary: String,
        mirror: String,
    },
    /// A side's messages did not decode; its digests cannot be trusted.
    Malformed {
        side: Role,
        detail: String,
    },
    CommandTag {
        primary: Option<String>,
        mirror: Option<String>,
    },
    /// `None`: that side sent no RowDescription.
    ColumnCount {
        primary: Option<usize>,
        mirror: Option<usize>,
    },
    ColumnType {
        position: usize,
        primary_oid: u32,
        mirror_oid: u32,
        primary_format: i16,
        mirror_format: i16,
    },
    /// The sides ignored different positions, so their values cannot be
    /// compared (the mirror's digest was not built with the primary's
    /// positions).
    IgnoredColumns {
        primary: Vec<usize>,
        mirror: Vec<usize>,
    },
    ResultSets {
        primary: u32,
        mirror: u32,
    },
    RowCount {
        primary: u64,
        mirror: u64,
    },
    /// Same rows, different order, and the statement has ORDER BY.
    RowOrder,
    /// Same number of rows, different values.
    RowValues,
}

/// A row found on one side and not the other (unordered), or at a position
/// where the sides differ (ordered).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DifferingRow {
    /// The side the row comes from.
    pub side: Role,
    /// Zero-based position in that side's result.
    pub row: u64,
    /// From that side's samples, when the row was sampled.
    pub values: Option<SampleRow>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Match,
    Mismatch {
        reasons: Vec<Reason>,
        /// Up to [`MAX_DIFFERING_ROWS`]; may be empty when the differing
        /// rows lie beyond the kept row hashes.
        differing_rows: Vec<DifferingRow>,
    },
}

impl Verdict {
    pub fn is_match(&self) -> bool {
        matches!(self, Verdict::Match)
    }
}

pub fn compare(primary: &ResultSummary, mirror: &ResultSummary, kind: CompareKind) -> Verdict {
    let mut reasons = Vec::new();
    let mut differing_rows = Vec::new();
    match (&primary.error, &mirror.error) {
        (Some(p), Some(m)) if p.sqlstate == m.sqlstate => return Verdict::Match,
        (Some(p), Some(m)) => reasons.push(Reason::DifferentErrors {
            primary: p.sqlstate.clone(),
            mirror: m.sqlstate.clone(),
        }),
        (Some(e), None) | (None, Some(e)) => reasons.push(Reason::ErrorOnOneSide {
            failed: if primary.error.is_some() {
                Role::Primary
            } else {
                Role::Mirror
            },
            sqlstate: e.sqlstate.clone(),
        }),
        (None, None) => match kind {
            CompareKind::Write => compare_tags(primary, mirror, &mut reasons),
            CompareKind::Read => compare_read(primary, mirror, &mut reasons, &mut differing_rows),
        },
    }
    if reasons.is_empty() {
        Verdict::Match
    } else {
        Verdict::Mismatch {
            reasons,
            differing_rows,
        }
    }
}

fn compare_tags(primary: &ResultSummary, mirror: &ResultSummary, reasons: &mut Vec<Reason>) {
    if primary.tag != mirror.tag {
        reasons.push(Reason::CommandTag {
            primary: primary.tag.clone(),
            mirror: mirror.tag.clone(),
        });
    }
}

fn compare_read(
    primary: &ResultSummary,
    mirror: &ResultSummary,
    reasons: &mut Vec<Reason>,
    differing_rows: &mut Vec<DifferingRow>,
) {
    let mut values_comparable = true;
    for (side, s) in [(Role::Primary, primary), (Role::Mirror, mirror)] {
        if let Some(detail) = &s.malformed {
            reasons.push(Reason::Malformed {
                side,
                detail: detail.clone(),
            });
            values_comparable = false;
        }
    }
    if primary.result_sets != mirror.result_sets {
        reasons.push(Reason::ResultSets {
            primary: primary.result_sets,
            mirror: mirror.result_sets,
        });
    }
    let same_columns = compare_columns(primary, mirror, reasons);
    values_comparable &= same_columns;
    if same_columns && primary.ignored != mirror.ignored {
        reasons.push(Reason::IgnoredColumns {
            primary: primary.ignored.clone(),
            mirror: mirror.ignored.clone(),
        });
        values_comparable = false;
    }

    let same_count = primary.rows == mirror.rows;
    if !same_count {
        reasons.push(Reason::RowCount {
            primary: primary.rows,
            mirror: mirror.rows,
        });
    }
    if values_comparable {
        let same_multiset = primary.multiset_digest == mirror.multiset_digest;
        let same_rows = if primary.ordered {
            primary.ordered_digest == mirror.ordered_digest
        } else {
            same_multiset
        };
        if !same_rows {
            if same_count {
                reasons.push(if same_multiset {
                    Reason::RowOrder
                } else {
                    Reason::RowValues
                });
            }
            *differing_rows = if primary.ordered {
                differing_by_position(primary, mirror)
            } else {
                differing_as_multisets(primary, mirror)
            };
        }
    }
    // A tag that differs only by the row count says nothing new.
    if same_count {
        compare_tags(primary, mirror, reasons);
    }
}

/// Compares column count and, for columns neither side ignores, type and
/// format. Returns whether row values can still be compared.
fn compare_columns(
    primary: &ResultSummary,
    mirror: &ResultSummary,
    reasons: &mut Vec<Reason>,
) -> bool {
    let (p, m) = (primary.columns.as_deref(), mirror.columns.as_deref());
    if p.map(<[_]>::len) != m.map(<[_]>::len) {
        reasons.push(Reason::ColumnCount {
            primary: p.map(<[_]>::len),
            mirror: m.map(<[_]>::len),
        });
        return false;
    }
    let (Some(p), Some(m)) = (p, m) else {
        return true;
    };
    let ignored = |i: &usize| {
        primary.ignored.binary_search(i).is_ok() || mirror.ignored.binary_search(i).is_ok()
    };
    let differing =
        p.iter().zip(m).enumerate().filter(|(i, (a, b))| {
            !ignored(i) && (a.type_oid != b.type_oid || a.format != b.format)
        });
    for (position, (a, b)) in differing.take(MAX_COLUMN_REASONS) {
        reasons.push(Reason::ColumnType {
            position,
            primary_oid: a.type_oid,
            mirror_oid: b.type_oid,
            primary_format: a.format,
            mirror_format: b.format,
        });
    }
    // Text values of different types (int4 and int8) still compare.
    true
}

fn row_of(summary: &ResultSummary, side: Role, row: usize) -> DifferingRow {
    DifferingRow {
        side,
        row: row as u64,
        values: summary.sample(row),
    }
}

/// Ordered results: the first positions whose row hashes differ, each as
/// the pair of rows, then rows past the end of the shorter side.
fn differing_by_position(primary: &ResultSummary, mirror: &ResultSummary) -> Vec<DifferingRow> {
    let (p, m) = (&primary.row_hashes, &mirror.row_hashes);
    let mut out = Vec::new();
    for i in 0..p.len().max(m.len()) {
        if out.len() >= MAX_DIFFERING_ROWS {
            break;
        }
        match (p.get(i), m.get(i)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(_), Some(_)) => {
                out.push(row_of(primary, Role::Primary, i));
                out.push(row_of(mirror, Role::Mirror, i));
            }
            // Past the other side's last row: present on one side only.
            (Some(_), None) if i as u64 >= mirror.rows => {
                out.push(row_of(primary, Role::Primary, i))
            }
            (None, Some(_)) if i as u64 >= primary.rows => {
                out.push(row_of(mirror, Role::Mirror, i))
            }
            // The other side's hash at i was not kept: nothing more is known.
            _ => break,
        }
    }
    out.truncate(MAX_DIFFERING_ROWS);
    out
}

/// Unordered results: rows in one multiset and not the other. Only when
/// both sides kept every row hash; otherwise the kept prefixes of the two
/// sides may be different subsets of the same rows.
fn differing_as_multisets(primary: &ResultSummary, mirror: &ResultSummary) -> Vec<DifferingRow> {
    if !primary.all_row_hashes_kept() || !mirror.all_row_hashes_kept() {
        return Vec::new();
    }
    let only_p = one_sided(primary, mirror, Role::Primary);
    let only_m = one_sided(mirror, primary, Role::Mirror);
    // Share the budget, giving one side's unused half to the other.
    let half = MAX_DIFFERING_ROWS / 2;
    let take_p = only_p
        .len()
        .min(MAX_DIFFERING_ROWS - only_m.len().min(half));
    let take_m = only_m.len().min(MAX_DIFFERING_ROWS - take_p);
    only_p
        .into_iter()
        .take(take_p)
        .chain(only_m.into_iter().take(take_m))
        .collect()
}

/// Rows of `this` left over after removing, with multiplicity, every row of
/// `other`; at most [`MAX_DIFFERING_ROWS`].
fn one_sided(this: &ResultSummary, other: &ResultSummary, side: Role) -> Vec<DifferingRow> {
    let mut counts: HashMap<u64, u32> = HashMap::with_capacity(other.row_hashes.len());
    for h in &other.row_hashes {
        *counts.entry(*h).or_default() += 1;
    }
    let mut out = Vec::new();
    for (i, h) in this.row_hashes.iter().enumerate() {
        match counts.get_mut(h) {
            Some(n) if *n > 0 => *n -= 1,
            _ => {
                out.push(row_of(this, side, i));
                if out.len() == MAX_DIFFERING_ROWS {
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::compare::digest::{DigestOptions, IgnoreColumns, ResultDigest};

    fn users() -> Vec<Col> {
        vec![text_col("id", 23), text_col("name", 25)]
    }

    fn rows(data: &[(&'static str, &'static str)]) -> Vec<Vec<Option<&'static str>>> {
        data.iter().map(|(a, b)| vec![Some(*a), Some(*b)]).collect()
    }

    fn mismatch(v: Verdict) -> (Vec<Reason>, Vec<DifferingRow>) {
        match v {
            Verdict::Mismatch {
                reasons,
                differing_rows,
            } => (reasons, differing_rows),
            Verdict::Match => panic!("expected a mismatch"),
        }
    }

    #[test]
    fn identical_results_match() {
        let r = rows(&[("1", "ann"), ("2", "bob")]);
        let p = summarize(&opts(), &users(), &r);
        let m = summarize(&opts(), &users(), &r);
        assert_eq!(compare(&p, &m, CompareKind::Read), Verdict::Match);
        let ordered = opts().ordered(true);
        let p = summarize(&ordered, &users(), &r);
        let m = summarize(&ordered, &users(), &r);
        assert!(compare(&p, &m, CompareKind::Read).is_match());
    }

    #[test]
    fn a_changed_value_mismatches_and_names_the_row() {
        let p = summarize(
            &opts(),
            &users(),
            &rows(&[("1", "ann"), ("2", "bob"), ("3", "cy")]),
        );
        let m = summarize(
            &opts(),
            &users(),
            &rows(&[("1", "ann"), ("2", "bobby"), ("3", "cy")]),
        );
        let (reasons, diff) = mismatch(compare(&p, &m, CompareKind::Read));
        assert_eq!(reasons, vec![Reason::RowValues]);
        assert_eq!(
            diff,
            vec![
                DifferingRow {
                    side: Role::Primary,
                    row: 1,
                    values: Some(vec![Some("2".into()), Some("bob".into())]),
                },
                DifferingRow {
                    side: Role::Mirror,
                    row: 1,
                    values: Some(vec![Some("2".into()), Some("bobby".into())]),
                },
            ]
        );
    }

    #[test]
    fn order_matters_only_when_ordered() {
        let a = rows(&[("1", "ann"), ("2", "bob"), ("3", "cy")]);
        let b = rows(&[("3", "cy"), ("1", "ann"), ("2", "bob")]);
        let p = summarize(&opts(), &users(), &a);
        let m = summarize(&opts(), &users(), &b);
        assert!(compare(&p, &m, CompareKind::Read).is_match());

        let ordered = opts().ordered(true);
        let p = summarize(&ordered, &users(), &a);
        let m = summarize(&ordered, &users(), &b);
        let (reasons, diff) = mismatch(compare(&p, &m, CompareKind::Read));
        assert_eq!(reasons, vec![Reason::RowOrder]);
        assert_eq!(diff.len(), 6);
        assert_eq!((diff[0].side, diff[0].row), (Role::Primary, 0));
        assert_eq!(
            diff[1].values,
            Some(vec![Some("3".into()), Some("cy".into())])
        );
    }

    #[test]
    fn duplicates_count_in_the_multiset() {
        let p = summarize(
            &opts(),
            &users(),
            &rows(&[("1", "ann"), ("1", "ann"), ("2", "bob")]),
        );
        let m = summarize(
            &opts(),
            &users(),
            &rows(&[("1", "ann"), ("2", "bob"), ("2", "bob")]),
        );
        let (reasons, diff) = mismatch(compare(&p, &m, CompareKind::Read));
        assert_eq!(reasons, vec![Reason::RowValues]);
        assert_eq!(
            diff.iter().map(|d| (d.side, d.row)).collect::<Vec<_>>(),
            vec![(Role::Primary, 1), (Role::Mirror, 2)]
        );
    }

    #[test]
    fn extra_rows_are_reported_from_the_longer_side() {
        let p = summarize(&opts(), &users(), &rows(&[("1", "ann"), ("2", "bob")]));
        let m = summarize(&opts(), &users(), &rows(&[("2", "bob")]));
        let (reasons, diff) = mismatch(compare(&p, &m, CompareKind::Read));
        assert_eq!(
            reasons,
            vec![Reason::RowCount {
                primary: 2,
                mirror: 1
            }]
        );
        assert_eq!(
            diff.iter().map(|d| (d.side, d.row)).collect::<Vec<_>>(),
            vec![(Role::Primary, 0)]
        );

        let ordered = opts().ordered(true);
        let p = summarize(&ordered, &users(), &rows(&[("1", "ann"), ("2", "bob")]));
        let m = summarize(&ordered, &users(), &rows(&[("1", "ann")]));
        let (_, diff) = mismatch(compare(&p, &m, CompareKind::Read));
        assert_eq!(
            diff.iter().map(|d| (d.side, d.row)).collect::<Vec<_>>(),
            vec![(Role::Primary, 1)]
        );
    }

    #[test]
    fn ignored_columns_by_name_even_when_the_mirror_renamed_them() {
        let o = DigestOptions {
            ignore: IgnoreColumns::names(["updated_at"]),
            ..opts()
        };
        let primary_cols = vec![text_col("id", 23), text_col("updated_at", 1184)];
        let mirror_cols = vec![text_col("id", 23), text_col("modified_at", 1184)];
        let p = summarize(
            &o,
            &primary_cols,
            &[vec![Some("1"), Some("2024-01-01 00:00:00+00")]],
        );
        let m = summarize(
            &o.with_positions(&p.ignored),
            &mirror_cols,
            &[vec![Some("1"), Some("2025-06-30 12:00:00+00")]],
        );
        assert_eq!(p.ignored, vec![1]);
        assert!(compare(&p, &m, CompareKind::Read).is_match());

        // Resolved by name on each side, the renamed column is not ignored.
        let m = summarize(
            &o,
            &mirror_cols,
            &[vec![Some("1"), Some("2025-06-30 12:00:00+00")]],
        );
        let (reasons, _) = mismatch(compare(&p, &m, CompareKind::Read));
        assert_eq!(
            reasons,
            vec![Reason::IgnoredColumns {
                primary: vec![1],
                mirror: vec![],
            }]
        );

        // A value change outside the ignored column still shows.
        let m = summarize(
            &o.with_positions(&p.ignored),
            &mirror_cols,
            &[vec![Some("9"), Some("2024-01-01 00:00:00+00")]],
        );
        assert!(!compare(&p, &m, CompareKind::Read).is_match());
    }

    #[test]
    fn ignored_columns_types_are_not_compared_but_counted() {
        let o = DigestOptions {
            ignore: IgnoreColumns::positions([1]),
            ..opts()
        };
        let p = summarize(
            &o,
            &[text_col("id", 23), text_col("t", 1114)],
            &[vec![Some("1"), Some("a")]],
        );
        let m = summarize(
            &o,
            &[text_col("id", 23), text_col("t", 1184)],
            &[vec![Some("1"), Some("b")]],
        );
        assert!(compare(&p, &m, CompareKind::Read).is_match());
        let m = summarize(&o, &[text_col("id", 23)], &[vec![Some("1")]]);
        let (reasons, _) = mismatch(compare(&p, &m, CompareKind::Read));
        assert_eq!(
            reasons,
            vec![Reason::ColumnCount {
                primary: Some(2),
                mirror: Some(1),
            }]
        );
    }

    #[test]
    fn column_types_compare_by_position() {
        let p = summarize(&opts(), &[text_col("n", 23)], &[vec![Some("1")]]);
        let m = summarize(&opts(), &[text_col("n", 20)], &[vec![Some("1")]]);
        let (reasons, diff) = mismatch(compare(&p, &m, CompareKind::Read));
        assert_eq!(
            reasons,
            vec![Reason::ColumnType {
                position: 0,
                primary_oid: 23,
                mirror_oid: 20,
                primary_format: 0,
                mirror_format: 0,
            }]
        );
        assert!(diff.is_empty());
    }

    #[test]
    fn float_tolerance_in_text() {
        let o = DigestOptions {
            float_tolerance: 1e-9,
            ..opts()
        };
        for oid in [700, 701, 1700] {
            let cols = [text_col("x", oid)];
            let p = summarize(&o, &cols, &[vec![Some("1.0")]]);
            let m = summarize(&o, &cols, &[vec![Some("1.0000000001")]]);
            assert!(compare(&p, &m, CompareKind::Read).is_match(), "oid {oid}");
            let m = summarize(&o, &cols, &[vec![Some("1.1")]]);
            assert!(!compare(&p, &m, CompareKind::Read).is_match(), "oid {oid}");
        }
        // Without a tolerance the bytes must agree.
        let cols = [text_col("x", 701)];
        let p = summarize(&opts(), &cols, &[vec![Some("1.0")]]);
        let m = summarize(&opts(), &cols, &[vec![Some("1.0000000001")]]);
        assert!(!compare(&p, &m, CompareKind::Read).is_match());
        // Text columns are never treated as numbers.
        let cols = [text_col("x", 25)];
        let p = summarize(&o, &cols, &[vec![Some("1.0")]]);
        let m = summarize(&o, &cols, &[vec![Some("1.0000000001")]]);
        assert!(!compare(&p, &m, CompareKind::Read).is_match());
    }

    #[test]
    fn float_tolerance_in_binary() {
        let o = DigestOptions {
            float_tolerance: 1e-9,
            ..opts()
        };
        let digest = |oid: u32, value: &[u8]| {
            let mut d = ResultDigest::new(&o);
            d.row_description(&row_description_body(&[binary_col("x", oid)]));
            d.data_row(&data_row_body(&[Some(value)]));
            d.command_complete(b"SELECT 1\0");
            d.finish()
        };
        let one = digest(701, &1.0f64.to_be_bytes());
        let close = digest(701, &1.000_000_000_1f64.to_be_bytes());
        let far = digest(701, &1.1f64.to_be_bytes());
        assert!(compare(&one, &close, CompareKind::Read).is_match());
        assert!(!compare(&one, &far, CompareKind::Read).is_match());
        assert_eq!(
            one.sample(0).unwrap()[0].as_deref(),
            Some("\\x3ff0000000000000")
        );

        let one4 = digest(700, &1.0f32.to_be_bytes());
        let far4 = digest(700, &1.5f32.to_be_bytes());
        assert!(!compare(&one4, &far4, CompareKind::Read).is_match());
        assert!(compare(
            &one4,
            &digest(700, &1.0f32.to_be_bytes()),
            CompareKind::Read
        )
        .is_match());

        // A float8 of the wrong width is compared as bytes, not misread.
        let odd = digest(701, &[1, 2, 3]);
        assert!(!compare(&one, &odd, CompareKind::Read).is_match());

        // Binary numeric 1.0 (dscale 1) and 1.00 (dscale 2) agree with a tolerance.
        let n10 = digest(1700, &[0, 1, 0, 0, 0, 0, 0, 1, 0, 1]);
        let n100 = digest(1700, &[0, 1, 0, 0, 0, 0, 0, 2, 0, 1]);
        assert!(compare(&n10, &n100, CompareKind::Read).is_match());
    }

    #[test]
    fn null_differs_from_empty_string() {
        let cols = [text_col("v", 25)];
        let p = summarize(&opts(), &cols, &[vec![None]]);
        let m = summarize(&opts(), &cols, &[vec![Some("")]]);
        let (reasons, diff) = mismatch(compare(&p, &m, CompareKind::Read));
        assert_eq!(reasons, vec![Reason::RowValues]);
        assert_eq!(diff[0].values, Some(vec![None]));
        assert_eq!(diff[1].values, Some(vec![Some(String::new())]));
    }

    #[test]
    fn errors() {
        let ok = summarize(&opts(), &users(), &rows(&[("1", "ann")]));
        let failed = |code: &str| {
            let mut d = ResultDigest::new(&opts());
            d.error(&error_body(code, "boom"));
            d.finish()
        };
        assert!(compare(&failed("42P01"), &failed("42P01"), CompareKind::Read).is_match());
        assert!(compare(&failed("23505"), &failed("23505"), CompareKind::Write).is_match());
        let (reasons, _) = mismatch(compare(
            &failed("42P01"),
            &failed("42703"),
            CompareKind::Read,
        ));
        assert_eq!(
            reasons,
            vec![Reason::DifferentErrors {
                primary: "42P01".into(),
                mirror: "42703".into(),
            }]
        );
        let (reasons, _) = mismatch(compare(&ok, &failed("42P01"), CompareKind::Read));
        assert_eq!(
            reasons,
            vec![Reason::ErrorOnOneSide {
                failed: Role::Mirror,
                sqlstate: "42P01".into(),
            }]
        );
        let (reasons, _) = mismatch(compare(&failed("23505"), &ok, CompareKind::Write));
        assert_eq!(
            reasons,
            vec![Reason::ErrorOnOneSide {
                failed: Role::Primary,
                sqlstate: "23505".into(),
            }]
        );
    }

    #[test]
    fn writes_compare_command_tags() {
        let tagged = |tag: &str| {
            let mut d = ResultDigest::new(&opts());
            d.command_complete(format!("{tag}\0").as_bytes());
            d.finish()
        };
        assert!(compare(
            &tagged("INSERT 0 5"),
            &tagged("INSERT 0 5"),
            CompareKind::Write
        )
        .is_match());
        let (reasons, _) = mismatch(compare(
            &tagged("UPDATE 3"),
            &tagged("UPDATE 2"),
            CompareKind::Write,
        ));
        assert_eq!(
            reasons,
            vec![Reason::CommandTag {
                primary: Some("UPDATE 3".into()),
                mirror: Some("UPDATE 2".into()),
            }]
        );
        // RETURNING rows of a write are not compared.
        let p = summarize(&opts(), &users(), &rows(&[("1", "ann")]));
        let m = summarize(&opts(), &users(), &rows(&[("7", "ann")]));
        assert!(compare(&p, &m, CompareKind::Write).is_match());
        assert_eq!(
            CompareKind::of(pgshift_rules::Kind::Ddl),
            CompareKind::Write
        );
    }

    #[test]
    fn unordered_differences_beyond_kept_hashes_are_not_guessed() {
        let o = DigestOptions {
            max_row_hashes: 2,
            ..opts()
        };
        let p = summarize(&o, &users(), &rows(&[("1", "a"), ("2", "b"), ("3", "c")]));
        let m = summarize(&o, &users(), &rows(&[("1", "a"), ("2", "b"), ("3", "x")]));
        let (reasons, diff) = mismatch(compare(&p, &m, CompareKind::Read));
        assert_eq!(reasons, vec![Reason::RowValues]);
        assert!(diff.is_empty());
    }

    #[test]
    fn differing_rows_are_capped() {
        let a: Vec<_> = (0..50).map(|i| vec![Some(i.to_string())]).collect();
        let b: Vec<_> = (50..100).map(|i| vec![Some(i.to_string())]).collect();
        let cols = [text_col("n", 23)];
        let p = summarize(&opts(), &cols, &borrowed(&a));
        let m = summarize(&opts(), &cols, &borrowed(&b));
        let (_, diff) = mismatch(compare(&p, &m, CompareKind::Read));
        assert_eq!(diff.len(), MAX_DIFFERING_ROWS);
        assert_eq!(
            diff.iter().filter(|d| d.side == Role::Primary).count(),
            MAX_DIFFERING_ROWS / 2
        );
    }
}
