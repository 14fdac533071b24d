//! A look at a query text's first word, for the cases where a full parse
//! buys nothing.
//!
//! With no rules to match (a pass-through configuration, or rollback) the
//! backend of a statement is known without parsing it; what still matters
//! is anything that changes the session or the transaction, because a
//! later reload may route the session elsewhere and that state must follow
//! it, and a COPY FROM STDIN, whose data the proxy must not take for
//! requests. This test finds every such text (it may also flag some that
//! are not), so the proxy parses only those.

/// First words of statements that change session or transaction state, or
/// (COPY) the protocol's.
const STATEFUL: &[&str] = &[
    "copy",
    "set",
    "reset",
    "prepare",
    "deallocate",
    "listen",
    "unlisten",
    "discard",
    "begin",
    "start",
    "commit",
    "end",
    "rollback",
    "abort",
    "savepoint",
    "release",
    "declare",
    "close",
    "fetch",
    "move",
];

/// False only for a single statement whose first word is not one that
/// changes the session, the transaction or the protocol's state. Anything odd (several
/// statements, a `;` inside a literal, no word at all) says true.
pub fn must_parse(sql: &str) -> bool {
    let text = skip_space_and_comments(sql);
    let trimmed = text.trim_end_matches(|c: char| c.is_whitespace() || c == ';');
    if trimmed.contains(';') {
        return true;
    }
    let word_len = trimmed
        .bytes()
        .take_while(|b| b.is_ascii_alphabetic() || *b == b'_')
        .count();
    if word_len == 0 {
        return true;
    }
    let word = &trimmed[..word_len];
    STATEFUL.iter().any(|s| s.eq_ignore_ascii_case(word))
}

fn skip_space_and_comments(mut s: &str) -> &str {
    loop {
        let t = s.trim_start();
        if let Some(rest) = t.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(rest) = t.strip_prefix("/*") {
            // Nested comments are legal in Postgres; an unterminated or
            // nested one just ends the fast path (the caller parses).
            match rest.split_once("*/") {
                Some((body, r)) if !body.contains("/*") => s = r,
                _ => return "/*",
            }
        } else {
            return t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::must_parse;

    #[test]
    fn plain_statements_skip_the_parse() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 42;",
            "  update t set x = 1 where id = 2",
            "-- hi\nINSERT INTO t VALUES (1)",
            "/* c */ select 1",
            "WITH x AS (SELECT 1) SELECT * FROM x",
        ] {
            assert!(!must_parse(sql), "{sql}");
        }
    }

    #[test]
    fn stateful_or_odd_texts_are_parsed() {
        for sql in [
            "SET search_path = x",
            "begin",
            "  Commit;",
            "START TRANSACTION",
            "select 1; set x = 1",
            "SELECT ';'",
            "",
            ";",
            "/* a /* nested */ */ SELECT 1",
            "/* unterminated",
            "PREPARE q AS SELECT 1",
            "LISTEN ch",
            "DISCARD ALL",
            "DECLARE c CURSOR FOR SELECT 1",
            "copy t from stdin",
            "-- load\nCOPY t (a) FROM STDIN",
        ] {
            assert!(must_parse(sql), "{sql:?}");
        }
    }
}
