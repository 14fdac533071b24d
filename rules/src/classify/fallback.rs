//! Classification when the parse tree is not available.
//!
//! Two cases. Text Postgres would reject becomes one conservative write
//! ([`unparsed`]), with whatever tables a token scan finds. Text Postgres
//! accepts but whose tree is nested deeper than the protobuf decoder allows
//! (prost stops at 100 levels, i.e. roughly 48 chained operators such as
//! `a || b || ...` or 20 nested scalar subqueries) is classified from
//! libpg_query's `summary`, which walks the tree in C, with Postgres' stack
//! depth check, and returns flat lists ([`too_deep`]). Lifting prost's limit
//! instead would let a hostile statement overflow the proxy's stack while
//! decoding, and pg_query's `fingerprint` (which has no depth check) is
//! never called on such a tree.

use pg_query::protobuf::{summary_result::Context, KeywordKind, ScanToken, Token};

use super::functions::WriteFunctions;
use super::Statement;
use crate::config::{Kind, TableName};

/// The single statement of a text that did not parse.
pub(super) fn unparsed(sql: &str, tokens: Option<&[ScanToken]>) -> Statement {
    Statement {
        kind: Kind::Write,
        tables: tokens.map(|t| scan_tables(sql, t)).unwrap_or_default(),
        has_order_by: false,
        span: super::parse::trimmed(sql, 0..sql.len()),
        txn: None,
        session: None,
        transaction_safe: false,
        // Postgres rejects the text: nothing in it runs.
        copy_in: false,
    }
}

/// Whether the first statement in `tokens` reads `COPY ... FROM STDIN`:
/// FROM outside parentheses (`COPY (query)` is always TO), then STDIN.
/// For texts classified without their parse tree.
pub(super) fn copies_from_stdin(tokens: &[ScanToken]) -> bool {
    let mut code = tokens
        .iter()
        .map(|t| t.token)
        .filter(|&t| t != Token::SqlComment as i32 && t != Token::CComment as i32);
    if code.next() != Some(Token::Copy as i32) {
        return false;
    }
    let mut depth = 0u32;
    let mut after_from = false;
    for t in code {
        if t == Token::Ascii59 as i32 {
            return false;
        }
        if after_from {
            return t == Token::Stdin as i32;
        }
        if t == Token::Ascii40 as i32 {
            depth += 1;
        } else if t == Token::Ascii41 as i32 {
            depth = depth.saturating_sub(1);
        } else if t == Token::From as i32 && depth == 0 {
            after_from = true;
        }
    }
    false
}

/// One statement, `text` starting at byte `offset` of the classified text,
/// that parses but is too deep to decode.
pub(super) fn too_deep(text: &str, offset: usize, write_functions: &WriteFunctions) -> Statement {
    let span = super::parse::trimmed(text, 0..text.len());
    let span = span.start + offset..span.end + offset;
    let summary = match pg_query::summary(text, 0, -1) {
        Ok(s) => s,
        Err(_) => {
            let tokens = super::digest::scan(text);
            return Statement {
                span,
                ..unparsed(text, tokens.as_deref())
            };
        }
    };
    // The protobuf lists keep the C walker's order; the wrapper's own
    // fields come from hash sets.
    let summary = summary.protobuf;
    let mut tables: Vec<TableName> = Vec::new();
    for t in &summary.tables {
        let schema = (!t.schema_name.is_empty()).then_some(t.schema_name.as_str());
        let name = TableName::new(schema, &t.table_name);
        if !tables.contains(&name) {
            tables.push(name);
        }
    }
    let types = &summary.statement_types;
    let top = types.first().map_or("", String::as_str);
    let tokens = super::digest::scan(text).unwrap_or_default();
    // Only a plain query can be shown to be a read from the summary; every
    // other statement that is deep enough to land here is data-changing
    // (INSERT ... SELECT, UPDATE ... SET x = a + b + ...) or DDL around such
    // a query, and classifying it as a write is the safe reading.
    let reads = matches!(top, "SelectStmt" | "VariableShowStmt")
        && !types.iter().any(|t| {
            matches!(
                t.as_str(),
                "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt"
            )
        })
        && !summary
            .tables
            .iter()
            .any(|t| t.context == Context::Dml as i32 || t.context == Context::Ddl as i32)
        && !summary
            .functions
            .iter()
            .any(|f| write_functions.contains(&f.function_name))
        && !locks_rows(&tokens);
    Statement {
        kind: if reads { Kind::Read } else { Kind::Write },
        tables,
        // The summary does not say where an ORDER BY sits; without one,
        // comparison treats rows as a multiset, which never reports a false
        // mismatch.
        has_order_by: false,
        span,
        txn: None,
        session: None,
        transaction_safe: false,
        copy_in: top == "CopyStmt" && copies_from_stdin(&tokens),
    }
}

/// `FOR UPDATE`, `FOR NO KEY UPDATE`, `FOR SHARE`, `FOR KEY SHARE`: FOR is
/// reserved, and no other clause puts these words right after it.
fn locks_rows(tokens: &[ScanToken]) -> bool {
    let is = |i: usize, t: Token| tokens.get(i).is_some_and(|x| x.token == t as i32);
    (0..tokens.len()).any(|i| {
        is(i, Token::For)
            && (is(i + 1, Token::Update)
                || is(i + 1, Token::Share)
                || (is(i + 1, Token::No) && is(i + 2, Token::Key))
                || (is(i + 1, Token::Key) && is(i + 2, Token::Share)))
    })
}

/// Best effort: names after FROM, JOIN, UPDATE, INTO, TABLE, TRUNCATE, LOCK
/// and COPY, with comma lists after FROM, TRUNCATE and LOCK.
fn scan_tables(sql: &str, tokens: &[ScanToken]) -> Vec<TableName> {
    let tokens: Vec<&ScanToken> = tokens
        .iter()
        .filter(|t| t.token != Token::SqlComment as i32 && t.token != Token::CComment as i32)
        .collect();
    let is = |i: usize, t: Token| tokens.get(i).is_some_and(|x| x.token == t as i32);
    let ident = |i: usize| -> Option<String> {
        let t = tokens.get(i)?;
        let text = sql.get(usize::try_from(t.start).ok()?..usize::try_from(t.end).ok()?)?;
        let usable_keyword = t.keyword_kind == KeywordKind::UnreservedKeyword as i32
            || t.keyword_kind == KeywordKind::ColNameKeyword as i32;
        if t.token == Token::Ident as i32 {
            Some(
                match text.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                    Some(quoted) => quoted.replace("\"\"", "\""),
                    None => text.to_ascii_lowercase(),
                },
            )
        } else if usable_keyword {
            Some(text.to_ascii_lowercase())
        } else {
            None
        }
    };
    let mut found: Vec<TableName> = Vec::new();
    for i in 0..tokens.len() {
        let list = is(i, Token::From) || is(i, Token::Truncate) || is(i, Token::LockP);
        let single = [
            Token::Join,
            Token::Update,
            Token::Into,
            Token::Table,
            Token::Copy,
        ]
        .iter()
        .any(|t| is(i, *t));
        if !list && !single {
            continue;
        }
        let from_item = is(i, Token::From) || is(i, Token::Join);
        let mut j = i + 1;
        loop {
            while is(j, Token::Only) || is(j, Token::Table) {
                j += 1;
            }
            let Some(first) = ident(j) else { break };
            let (name, next) = if is(j + 1, Token::Ascii46) {
                match ident(j + 2) {
                    Some(second) => (TableName::new(Some(&first), &second), j + 3),
                    None => break,
                }
            } else {
                (TableName::new(None, &first), j + 1)
            };
            if from_item && is(next, Token::Ascii40) {
                break; // a function call, e.g. FROM generate_series(...)
            }
            if !found.contains(&name) {
                found.push(name);
            }
            j = next;
            if !list {
                break;
            }
            if is(j, Token::As) {
                j += 1;
            }
            if !is(j, Token::Ascii44) && ident(j).is_some() {
                j += 1; // alias
            }
            if !is(j, Token::Ascii44) {
                break;
            }
            j += 1;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(sql: &str) -> Vec<String> {
        let tokens = super::super::digest::scan(sql).unwrap();
        scan_tables(sql, &tokens)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn scans_names_after_keywords() {
        assert_eq!(
            tables("SELEC * FROM a, s.\"B\" x JOIN c ON WHERE"),
            ["a", "s.\"B\"", "c"]
        );
        assert_eq!(tables("UPDATE ONLY Users SET"), ["users"]);
        assert_eq!(tables("INSERT INTO t (a) VALUE (1)"), ["t"]);
        assert_eq!(
            tables("SELECT FROM generate_series(1,2) g"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn lock_tokens() {
        let t = |s: &str| locks_rows(&super::super::digest::scan(s).unwrap());
        assert!(t("select 1 from t for no key update"));
        assert!(t("select 1 from t for key share"));
        assert!(!t("select substring(a from 1 for 2) from t"));
    }
}
