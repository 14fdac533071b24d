//! Comparing the primary's and the mirror's answers to one statement,
//! without IO.
//!
//! The session feeds each backend's result messages into a
//! [`ResultDigest`] as they pass (bounded memory whatever the result size),
//! [`compare`]s the two [`ResultSummary`]s when both are complete, and turns a
//! mismatch into a [`MismatchRecord`] for the log and `/mismatches`.
//!
//! ```text
//! let base = DigestOptions::from_settings(&config.compare);   // once per config
//! let opts = base.ordered(statement.has_order_by);
//! let mut primary = ResultDigest::new(&opts);
//! primary.row_description(body); primary.data_row(body); ... primary.command_complete(body);
//! // Ignored columns are resolved by name on the primary, by position on the mirror.
//! let mut mirror = ResultDigest::new(&opts.with_positions(&primary.ignore_positions()));
//! ...
//! let verdict = compare(&primary.finish(), &mirror.finish(), CompareKind::of(statement.kind));
//! ```

pub mod digest;
pub mod record;
pub mod verdict;

use serde::Serialize;

pub use digest::{
    BackendError, ColumnInfo, DigestOptions, IgnoreColumns, MultisetDigest, ResultDigest,
    ResultSummary, SampleRow, Samples,
};
pub use record::{MismatchContext, MismatchRecord, Redaction};
pub use verdict::{compare, CompareKind, DifferingRow, Reason, Verdict};

/// The part a backend plays for one statement; the `role` metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Its answer goes to the client.
    Primary,
    /// It replays the statement; its answer is only compared.
    Mirror,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Mirror => "mirror",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Builders for the backend message bodies the tests feed in.
#[cfg(test)]
pub(crate) mod testing {
    use super::digest::{DigestOptions, ResultDigest, ResultSummary};

    pub struct Col {
        pub name: &'static str,
        pub type_oid: u32,
        pub format: i16,
    }

    pub fn text_col(name: &'static str, type_oid: u32) -> Col {
        Col {
            name,
            type_oid,
            format: 0,
        }
    }

    pub fn binary_col(name: &'static str, type_oid: u32) -> Col {
        Col {
            name,
            type_oid,
            format: 1,
        }
    }

    pub fn opts() -> DigestOptions {
        DigestOptions::default()
    }

    pub fn row_description_body(cols: &[Col]) -> Vec<u8> {
        let mut b = (cols.len() as u16).to_be_bytes().to_vec();
        for c in cols {
            b.extend_from_slice(c.name.as_bytes());
            b.push(0);
            b.extend_from_slice(&0u32.to_be_bytes());
            b.extend_from_slice(&0i16.to_be_bytes());
            b.extend_from_slice(&c.type_oid.to_be_bytes());
            b.extend_from_slice(&(-1i16).to_be_bytes());
            b.extend_from_slice(&(-1i32).to_be_bytes());
            b.extend_from_slice(&c.format.to_be_bytes());
        }
        b
    }

    pub fn data_row_into(b: &mut Vec<u8>, values: &[Option<&[u8]>]) {
        b.extend_from_slice(&(values.len() as u16).to_be_bytes());
        for v in values {
            match v {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        }
    }

    pub fn data_row_body(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = Vec::new();
        data_row_into(&mut b, values);
        b
    }

    pub fn error_body(code: &str, message: &str) -> Vec<u8> {
        let mut b = Vec::new();
        for (k, v) in [(b'S', "ERROR"), (b'C', code), (b'M', message)] {
            b.push(k);
            b.extend_from_slice(v.as_bytes());
            b.push(0);
        }
        b.push(0);
        b
    }

    /// Borrows owned test rows in the shape [`summarize`] takes.
    pub fn borrowed(rows: &[Vec<Option<String>>]) -> Vec<Vec<Option<&str>>> {
        rows.iter()
            .map(|row| row.iter().map(|v| v.as_deref()).collect())
            .collect()
    }

    /// A complete text-format result: RowDescription, rows, `SELECT n`.
    pub fn summarize(
        opts: &DigestOptions,
        cols: &[Col],
        rows: &[Vec<Option<&str>>],
    ) -> ResultSummary {
        let mut d = ResultDigest::new(opts);
        d.row_description(&row_description_body(cols));
        let mut body = Vec::new();
        for row in rows {
            body.clear();
            let values: Vec<Option<&[u8]>> = row.iter().map(|v| v.map(str::as_bytes)).collect();
            data_row_into(&mut body, &values);
            d.data_row(&body);
        }
        d.command_complete(format!("SELECT {}\0", rows.len()).as_bytes());
        d.finish()
    }
}
