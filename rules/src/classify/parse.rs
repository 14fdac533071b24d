//! From query text to [`Classification`]: scan, parse, split into
//! statements, and pick the fallback when the tree is not available.

use std::ops::Range;

use pg_query::protobuf::ParseResult;
use pg_query::NodeEnum;

use super::functions::WriteFunctions;
use super::tables::Walk;
use super::{digest, fallback, kind, Classification, Statement};

/// What classification needs besides the text.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub write_functions: WriteFunctions,
    /// Longer texts are not parsed (see [`classify_text`]).
    pub max_parse_bytes: usize,
}

/// How much of a text too long to parse is scanned for its digest and
/// tables: the statement kind and target table come first.
const OVERSIZE_SCAN_BYTES: usize = 64 * 1024;

/// Which way a text was classified, for the classifier's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParsePath {
    Parsed,
    /// Parsed by Postgres' grammar but too deep to decode; see
    /// [`fallback::too_deep`].
    TooDeep,
    Unparsed,
    TooLarge,
}

/// Classifies `sql`. Texts over `max_parse_bytes` are not parsed: a parse
/// costs about 0.3 s and 200 MB per MB of text (the protobuf tree is large),
/// so one hostile or bulk statement could stall a worker thread and exhaust
/// memory. They are classified like text that does not parse (one
/// conservative write), from a scan of their first 64 KiB; in practice they
/// are multi-row INSERTs and COPY-like loads, which are writes anyway.
pub(crate) fn classify_text(sql: &str, settings: &Settings) -> (Classification, ParsePath) {
    if sql.len() > settings.max_parse_bytes {
        let mut cut = OVERSIZE_SCAN_BYTES.min(sql.len());
        while !sql.is_char_boundary(cut) {
            cut -= 1;
        }
        let head = &sql[..cut];
        let tokens = digest::scan(head);
        let digest = digest::digest(head, tokens.as_deref());
        // Not parsed, but it may well run: a COPY FROM STDIN in it must be
        // known, or its data would be taken for requests.
        let copy_in = tokens.as_deref().is_some_and(fallback::copies_from_stdin);
        let classification = Classification {
            statements: vec![Statement {
                copy_in,
                ..fallback::unparsed(sql, tokens.as_deref())
            }],
            parse_error: Some(format!(
                "not parsed: the text is {} bytes, over the {} byte classification limit",
                sql.len(),
                settings.max_parse_bytes
            )),
            fingerprint: digest.fingerprint,
            normalized: digest.normalized,
        };
        return (classification, ParsePath::TooLarge);
    }
    let write_functions = &settings.write_functions;
    let tokens = digest::scan(sql);
    let digest = digest::digest(sql, tokens.as_deref());
    let (statements, parse_error, path) = match pg_query::parse(sql, 0) {
        Ok(tree) => (
            statements(sql, &tree.protobuf, 0, write_functions),
            None,
            ParsePath::Parsed,
        ),
        Err(pg_query::Error::Decode(_)) => {
            (too_deep(sql, write_functions), None, ParsePath::TooDeep)
        }
        Err(e) => (
            vec![fallback::unparsed(sql, tokens.as_deref())],
            Some(error_message(e)),
            ParsePath::Unparsed,
        ),
    };
    let classification = Classification {
        statements,
        parse_error,
        fingerprint: digest.fingerprint,
        normalized: digest.normalized,
    };
    (classification, path)
}

/// Postgres' own message (which may quote the offending token).
fn error_message(e: pg_query::Error) -> String {
    match e {
        pg_query::Error::Parse(message) => message,
        pg_query::Error::Conversion(_) => "statement text contains a NUL byte".to_owned(),
        other => other.to_string(),
    }
}

/// The statements of a parsed `text` that starts at byte `offset` of the
/// classified text.
fn statements(
    text: &str,
    tree: &ParseResult,
    offset: usize,
    write_functions: &WriteFunctions,
) -> Vec<Statement> {
    tree.stmts
        .iter()
        .filter_map(|raw| {
            let node = raw.stmt.as_ref()?.node.as_ref()?;
            let span = raw_span(text, raw.stmt_location, raw.stmt_len);
            Some(statement(
                node,
                span.start + offset..span.end + offset,
                write_functions,
            ))
        })
        .collect()
}

fn statement(node: &NodeEnum, span: Range<usize>, write_functions: &WriteFunctions) -> Statement {
    let walk = Walk::run(node, write_functions);
    let prepared = |inner: &NodeEnum| statement(inner, span.clone(), write_functions);
    let shape = kind::shape(node, walk.effects, &prepared);
    Statement {
        kind: shape.kind,
        tables: walk.tables,
        has_order_by: shape.has_order_by,
        span,
        txn: shape.txn,
        session: shape.session,
        transaction_safe: shape.transaction_safe,
        copy_in: shape.copy_in,
    }
}

/// Postgres reports a statement from just after the previous semicolon
/// (`stmt_location`) for `stmt_len` bytes, 0 meaning "to the end".
fn raw_span(text: &str, location: i32, len: i32) -> Range<usize> {
    let start = usize::try_from(location).unwrap_or(0).min(text.len());
    let end = match usize::try_from(len) {
        Ok(0) | Err(_) => text.len(),
        Ok(len) => start.saturating_add(len).min(text.len()),
    };
    if !text.is_char_boundary(start) || !text.is_char_boundary(end) {
        return trimmed(text, 0..text.len());
    }
    trimmed(text, start..end)
}

/// `range` without leading and trailing whitespace and semicolons.
pub(super) fn trimmed(text: &str, range: Range<usize>) -> Range<usize> {
    let junk = |c: char| c == ';' || is_space(c);
    let inner = &text[range.clone()];
    let start = range.start + (inner.len() - inner.trim_start_matches(junk).len());
    let end = range.end - (inner.len() - inner.trim_end_matches(junk).len());
    start..end.max(start)
}

/// Postgres' whitespace: space, tab, newline, carriage return, form feed,
/// vertical tab.
pub(super) fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c' | '\x0b')
}

/// Text whose tree is too deep for the decoder: split it with the parser
/// (which does not build the protobuf tree) and decode each statement on its
/// own, so only the deep ones lose precision.
fn too_deep(sql: &str, write_functions: &WriteFunctions) -> Vec<Statement> {
    let pieces = match pg_query::split_with_parser(sql) {
        // One statement: it is the deep one, no need to parse it again.
        Ok(pieces) if pieces.len() > 1 => pieces,
        _ => return vec![fallback::too_deep(sql, 0, write_functions)],
    };
    let base = sql.as_ptr() as usize;
    let mut out = Vec::with_capacity(pieces.len());
    for piece in pieces {
        let offset = (piece.as_ptr() as usize).saturating_sub(base);
        match pg_query::parse(piece, 0) {
            Ok(tree) => out.extend(statements(piece, &tree.protobuf, offset, write_functions)),
            Err(_) => out.push(fallback::too_deep(piece, offset, write_functions)),
        }
    }
    out
}
