//! Client messages on their way to a backend whose schema differs from
//! the application's: the SQL of a Query or Parse is replaced by what the
//! backend's [`Rewriter`] makes of it; every other message, and every
//! statement the rewriter leaves alone, goes as the bytes it arrived in.
//!
//! A statement the rewriter refuses (it names a renamed table or column
//! and cannot be rewritten safely) must not reach the backend as written,
//! and the client must see a clear error. The backend itself is made to
//! raise that error, so its transaction state (failed, in a transaction
//! block) stays exactly what the client sees.

use bytes::{BufMut, BytesMut};
use pgshift_protocol::encode;
use pgshift_protocol::frontend::{tag, Parse, Query};
use pgshift_protocol::HEADER_LEN;
use pgshift_rules::config::BackendId;
use pgshift_rules::rewrite::{Rewrite, Rewriter};

/// Appends one whole client frame for `backend`, rewritten when needed.
/// `true` when the rewriter refused its statement (the backend gets one
/// that fails with the reason instead).
#[must_use]
pub fn push_frame(
    rw: Option<&Rewriter>,
    backend: BackendId,
    frame: &[u8],
    out: &mut BytesMut,
) -> bool {
    let Some(rw) = rw else {
        out.extend_from_slice(frame);
        return false;
    };
    let body = frame.get(HEADER_LEN..).unwrap_or_default();
    match frame.first().copied() {
        Some(tag::QUERY) => {
            let Some(sql) = Query::decode(body).ok().and_then(|q| q.sql_str()) else {
                out.extend_from_slice(frame);
                return false;
            };
            match rw.rewrite(sql) {
                Rewrite::Unchanged => out.extend_from_slice(frame),
                Rewrite::Changed(new) => encode::query(out, &new),
                Rewrite::Refused(reason) => {
                    encode::query(out, &refusal_query(backend, &reason, sql));
                    return true;
                }
            }
        }
        Some(tag::PARSE) => {
            let Ok(p) = Parse::decode(body) else {
                out.extend_from_slice(frame);
                return false;
            };
            let Some(sql) = p.sql_str() else {
                out.extend_from_slice(frame);
                return false;
            };
            match rw.rewrite(sql) {
                Rewrite::Unchanged => out.extend_from_slice(frame),
                Rewrite::Changed(new) => parse_frame(out, p.name, &new, p.param_types),
                Rewrite::Refused(reason) => {
                    let sql = refusal_parse(backend, &reason, sql);
                    parse_frame(out, p.name, &sql, p.param_types);
                    return true;
                }
            }
        }
        _ => out.extend_from_slice(frame),
    }
    false
}

/// The SQL of a Query or Parse frame.
pub fn frame_sql(frame: &[u8]) -> Option<&str> {
    let body = frame.get(HEADER_LEN..)?;
    match frame.first().copied() {
        Some(tag::QUERY) => Query::decode(body).ok()?.sql_str(),
        Some(tag::PARSE) => Parse::decode(body).ok()?.sql_str(),
        _ => None,
    }
}

/// Appends a simple Query carrying `sql` (session state replayed by the
/// proxy), rewritten for `backend`.
pub fn push_query(rw: Option<&Rewriter>, backend: BackendId, sql: &str, out: &mut BytesMut) {
    match rw.map(|rw| rw.rewrite(sql)) {
        None | Some(Rewrite::Unchanged) => encode::query(out, sql),
        Some(Rewrite::Changed(new)) => encode::query(out, &new),
        Some(Rewrite::Refused(reason)) => encode::query(out, &refusal_query(backend, &reason, sql)),
    }
}

/// Whether `sql` would be refused on a backend with `rw`.
pub fn refuses(rw: Option<&Rewriter>, sql: &str) -> bool {
    rw.is_some_and(|rw| matches!(rw.rewrite(sql), Rewrite::Refused(_)))
}

fn parse_frame(out: &mut BytesMut, name: &[u8], sql: &str, param_types: &[u8]) {
    encode::frame(out, tag::PARSE, |b| {
        b.extend_from_slice(name);
        b.put_u8(0);
        b.extend_from_slice(sql.as_bytes());
        b.put_u8(0);
        b.put_i16((param_types.len() / 4) as i16);
        b.extend_from_slice(param_types);
    });
}

/// The words the client reads: which backend, why, and the start of the
/// statement.
fn refusal_message(backend: BackendId, reason: &str, sql: &str) -> String {
    const SHOWN: usize = 200;
    let mut end = sql.len().min(SHOWN);
    while !sql.is_char_boundary(end) {
        end -= 1;
    }
    let more = if end < sql.len() { "..." } else { "" };
    format!(
        "pgshift cannot send this statement to {backend}: {reason} (statement: {}{more})",
        sql[..end].trim()
    )
}

/// A dollar-quoted literal that cannot be closed early by its content.
fn literal(text: &str) -> String {
    const Q: &str = "$pgshift_msg$";
    format!("{Q}{}{Q}", text.replace(Q, "$ pgshift_msg$"))
}

/// A simple Query that fails on the backend with the refusal as its
/// message (SQLSTATE 0A000, feature_not_supported).
fn refusal_query(backend: BackendId, reason: &str, sql: &str) -> String {
    let msg = literal(&refusal_message(backend, reason, sql).replace("$pgshift_do$", ""));
    format!(
        "DO $pgshift_do$BEGIN RAISE EXCEPTION USING MESSAGE = {msg}, ERRCODE = 'feature_not_supported'; END$pgshift_do$"
    )
}

/// A statement whose Parse fails on the backend with the refusal in its
/// message: a literal that is not an integer is rejected while the
/// statement is analysed, before anything runs. (A DO block would parse
/// fine and fail only when executed, and a Bind carrying parameters would
/// fail first, with a misleading message.)
fn refusal_parse(backend: BackendId, reason: &str, sql: &str) -> String {
    format!(
        "SELECT {}::pg_catalog.int4",
        literal(&refusal_message(backend, reason, sql))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_sql_cannot_be_escaped() {
        let hostile = "x$pgshift_msg$; DROP TABLE t; --$pgshift_do$";
        let q = refusal_query(BackendId::New, "r", hostile);
        assert_eq!(q.matches("$pgshift_msg$").count(), 2, "{q}");
        assert_eq!(q.matches("$pgshift_do$").count(), 2, "{q}");
        let p = refusal_parse(BackendId::New, "r", hostile);
        assert_eq!(p.matches("$pgshift_msg$").count(), 2, "{p}");
    }

    #[test]
    fn long_statements_are_cut_on_a_char_boundary() {
        let sql = "é".repeat(300);
        let m = refusal_message(BackendId::Old, "r", &sql);
        assert!(m.ends_with("...)"));
    }
}
