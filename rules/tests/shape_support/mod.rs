//! Variants of a text with other literals, for the tests of what texts of
//! one shape share (classifications, rewrites).

use std::ops::Range;

/// A literal of the same category as `lit`, of another length.
fn other_literal(lit: &str, pick: usize) -> String {
    if lit.starts_with('\'') {
        ["''", "'x''yz'", "'a much longer string than before'"][pick % 3].to_owned()
    } else if lit.contains('.') {
        ["0.5", "12345.678901", "1.0"][pick % 3].to_owned()
    } else {
        let candidates = ["7", "98765", "123456789", "0"];
        let c = candidates[pick % candidates.len()];
        if c == lit {
            "31".to_owned()
        } else {
            c.to_owned()
        }
    }
}

/// `sql` with each literal at `literals` replaced by another of its kind.
pub fn with_literals(sql: &str, literals: &[Range<usize>], pick: usize) -> String {
    let mut out = String::new();
    let mut at = 0;
    for (i, r) in literals.iter().enumerate() {
        out.push_str(&sql[at..r.start]);
        out.push_str(&other_literal(&sql[r.clone()], pick + i));
        at = r.end;
    }
    out.push_str(&sql[at..]);
    out
}
