//! Texts that differ only in their literals share a classification.
//!
//! Applications that inline values (`... WHERE id = 42`, common with the
//! simple protocol and client-side parameter binding) send a new text for
//! every statement, so a cache keyed by the exact text never hits and every
//! statement pays a full parse. The key built here is the text with each
//! plain literal replaced by a marker of its category; two texts with the
//! same key are the same token sequence apart from those literal values, so
//! they classify alike. Only the statement spans move with the literals'
//! lengths, and [`remap`] moves them.
//!
//! The lexer only vouches for what it fully understands: integer and
//! decimal numbers, and standard `'...'` strings without backslashes.
//! Anything it is unsure of (dollar quotes, `E'...'`, `U&`, exponents, hex
//! numbers, control characters, unterminated quotes or comments) makes it
//! give up, and the text is then cached by its exact text as before. Which
//! classifications may be shared is decided by [`shareable`]: the ones
//! whose content cannot depend on a literal's value.

use std::ops::Range;
use std::sync::Arc;

use super::Classification;

/// Most literals one key abstracts; longer texts (bulk VALUES lists) are
/// cached by their exact text, if at all.
const MAX_LITERALS: usize = 1024;

/// Marker bytes in a key, one per literal category. The lexer gives up on
/// any text holding control characters, so they cannot be confused with
/// the text's own bytes.
const STRING: char = '\u{1}';
const INTEGER: char = '\u{2}';
const DECIMAL: char = '\u{3}';

/// A text's literal-free key and where its literals are.
#[derive(Debug, PartialEq, Eq)]
pub struct Shape {
    pub key: String,
    pub literals: Vec<Range<usize>>,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// The shape of `sql`, or `None` when it has no literal to abstract or
/// holds something the lexer does not vouch for.
pub fn shape(sql: &str) -> Option<Shape> {
    let s = sql.as_bytes();
    let mut key = String::with_capacity(sql.len());
    let mut literals = Vec::new();
    // Start of the text not yet copied into the key.
    let mut copied = 0;
    let mut i = 0;
    let mut abstract_literal = |range: Range<usize>, marker: char| {
        key.push_str(&sql[copied..range.start]);
        key.push(marker);
        copied = range.end;
        literals.push(range);
        literals.len() <= MAX_LITERALS
    };
    while i < s.len() {
        let b = s[i];
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => i += 1,
            0..=0x1f | 0x7f => return None,
            b'-' if s.get(i + 1) == Some(&b'-') => {
                i += s[i..]
                    .iter()
                    .position(|&c| c == b'\n' || c == b'\r')
                    .unwrap_or(s.len() - i);
            }
            b'/' if s.get(i + 1) == Some(&b'*') => i = skip_block_comment(s, i)?,
            b'\'' => {
                // A prefix (E, B, X, N, U&) changes how the string reads.
                if i > 0 && (is_ident_cont(s[i - 1]) || s[i - 1] == b'&') {
                    return None;
                }
                let end = string_end(s, i)?;
                if !abstract_literal(i..end, STRING) {
                    return None;
                }
                i = end;
            }
            b'"' => {
                if i > 0 && s[i - 1] == b'&' {
                    return None;
                }
                i = quoted_end(s, i, b'"')?;
            }
            b'$' => {
                // Only a parameter ($1); a dollar quote is not vouched for.
                let digits = s[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                if digits == 0 {
                    return None;
                }
                i += 1 + digits;
            }
            b'0'..=b'9' => {
                let (end, marker) = number(s, i)?;
                if let Some(m) = marker {
                    if !abstract_literal(i..end, m) {
                        return None;
                    }
                }
                i = end;
            }
            b'.' if s.get(i + 1).is_some_and(u8::is_ascii_digit) => return None,
            _ if is_ident_start(b) => {
                i += 1;
                while i < s.len() && is_ident_cont(s[i]) {
                    i += 1;
                }
            }
            // Operators and punctuation.
            _ => i += 1,
        }
    }
    if literals.is_empty() {
        return None;
    }
    key.push_str(&sql[copied..]);
    Some(Shape { key, literals })
}

/// End of the nested `/* */` comment starting at `i`.
fn skip_block_comment(s: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    while i < s.len() {
        if s[i] == b'/' && s.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if s[i] == b'*' && s.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// End of the string literal starting at `i`; `None` when it holds a
/// backslash (read as an escape when `standard_conforming_strings` is off)
/// or does not end.
fn string_end(s: &[u8], i: usize) -> Option<usize> {
    let end = quoted_end(s, i, b'\'')?;
    (!s[i..end].contains(&b'\\')).then_some(end)
}

/// End of the `quote`-delimited token starting at `i`, a doubled quote
/// standing for itself.
fn quoted_end(s: &[u8], i: usize, quote: u8) -> Option<usize> {
    let mut j = i + 1;
    loop {
        let at = j + s.get(j..)?.iter().position(|&c| c == quote)?;
        if s.get(at + 1) == Some(&quote) {
            j = at + 2;
        } else {
            return Some(at + 1);
        }
    }
}

/// The number starting at `i` (a digit): its end, and its marker when it is
/// one the key abstracts. Integers of up to 9 digits always fit the
/// grammar's integer token; longer ones may not, so they stay in the key.
fn number(s: &[u8], i: usize) -> Option<(usize, Option<char>)> {
    let int_end = i + s[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    let (end, marker) = match s.get(int_end) {
        Some(b'.') => {
            let frac = s[int_end + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if frac == 0 {
                return None;
            }
            (int_end + 1 + frac, Some(DECIMAL))
        }
        _ if int_end - i <= 9 => (int_end, Some(INTEGER)),
        _ => (int_end, None),
    };
    // Exponents, hex/octal/binary prefixes, underscores and trailing junk.
    match s.get(end) {
        Some(&c) if is_ident_cont(c) || c == b'.' => None,
        _ => Some((end, marker)),
    }
}

/// Whether a classification may stand for every text of its shape: parsed
/// without error, and made only of statements whose classification reads
/// no literal (queries and DML; not EXPLAIN, whose options may be literals,
/// nor transaction or session statements, which keep names and gids).
pub(crate) fn shareable(class: &Classification, sql: &str) -> bool {
    const FIRST_WORDS: &[&str] = &[
        "select", "insert", "update", "delete", "with", "values", "table", "merge",
    ];
    class.parse_error.is_none()
        && !class.statements.is_empty()
        && class.statements.iter().all(|st| {
            let text = st.text(sql);
            let word_len = text.bytes().take_while(u8::is_ascii_alphabetic).count();
            st.txn.is_none()
                && st.session.is_none()
                && FIRST_WORDS
                    .iter()
                    .any(|w| w.eq_ignore_ascii_case(&text[..word_len]))
        })
}

/// `class`, classified from a text whose literals were at `from`, for a
/// text of the same shape whose literals are at `to`: the same, with its
/// statement spans moved by the literals' change in length.
pub(crate) fn remap(
    class: &Arc<Classification>,
    from: &[Range<usize>],
    to: &[Range<usize>],
) -> Arc<Classification> {
    if from.iter().zip(to).all(|(a, b)| a == b) {
        return Arc::clone(class);
    }
    let map = |offset: usize| -> usize {
        let mut shift: isize = 0;
        for (a, b) in from.iter().zip(to) {
            if a.end <= offset {
                shift += b.len() as isize - a.len() as isize;
            } else {
                break;
            }
        }
        offset.saturating_add_signed(shift)
    };
    let mut moved = Classification::clone(class);
    for st in &mut moved.statements {
        st.span = map(st.span.start)..map(st.span.end);
    }
    Arc::new(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sql: &str) -> Option<String> {
        shape(sql).map(|s| s.key)
    }

    #[test]
    fn literals_become_markers_of_their_category() {
        let a = shape("SELECT * FROM t WHERE id = 42 AND name = 'x''y' AND r > 1.5").unwrap();
        let b = shape("SELECT * FROM t WHERE id = 7 AND name = 'zz' AND r > 10.25").unwrap();
        assert_eq!(a.key, b.key);
        assert_eq!(a.literals.len(), 3);
        assert_eq!(
            &"SELECT * FROM t WHERE id = 42 AND name = 'x''y'"[a.literals[1].clone()],
            "'x''y'"
        );
        // A string where the other has a number is another shape.
        assert_ne!(key("SELECT 1"), key("SELECT '1'"));
        assert_ne!(key("SELECT 1"), key("SELECT 1.0"));
    }

    #[test]
    fn everything_but_literals_is_kept() {
        assert_ne!(key("SELECT 1 FROM a"), key("SELECT 1 FROM b"));
        assert_ne!(key("SELECT 1  FROM a"), key("SELECT 1 FROM a"));
        assert_ne!(key("SELECT 1 -- x\n"), key("SELECT 1 -- y\n"));
        assert_ne!(key("SELECT $1, 2"), key("SELECT $2, 2"));
        assert_ne!(
            key(r#"SELECT 1 FROM "a""b""#),
            key(r#"SELECT 1 FROM "a""c""#)
        );
        // Digits inside names are not literals.
        assert_eq!(key("SELECT c1 FROM t2"), None);
        assert_ne!(key("SELECT c1, 5 FROM t2"), key("SELECT c2, 5 FROM t2"));
    }

    #[test]
    fn quotes_inside_comments_and_names_do_not_start_strings() {
        let s = shape("SELECT /* it's /* nested */ ok */ \"o'k\", 'v' -- it's\n").unwrap();
        assert_eq!(s.literals.len(), 1);
        assert_eq!(
            key("SELECT /* it's /* nested */ ok */ \"o'k\", 'w' -- it's\n"),
            Some(s.key)
        );
    }

    #[test]
    fn gives_up_on_what_it_does_not_vouch_for() {
        for sql in [
            "SELECT E'a\\'b'",
            "SELECT 'a\\'",
            "SELECT x'1F'",
            "SELECT U&'d\\0061t'",
            "SELECT U&\"d!0061t\" UESCAPE '!' FROM t",
            "SELECT $$a$$, 1",
            "SELECT $tag$a$tag$, 1",
            "SELECT 1e5",
            "SELECT 0x1F",
            "SELECT 1_000",
            "SELECT .5",
            "SELECT 1.",
            "SELECT 'unterminated",
            "SELECT /* unterminated 1",
            "SELECT \u{1}, 1",
            "SELECT 123abc",
        ] {
            assert_eq!(shape(sql), None, "{sql}");
        }
    }

    #[test]
    fn long_integers_stay_in_the_key() {
        assert_ne!(key("SELECT 1, 1234567890"), key("SELECT 1, 1234567891"));
        assert_eq!(key("SELECT 1, 123456789"), key("SELECT 1, 987654321"));
    }

    #[test]
    fn too_many_literals_give_up() {
        let many = (0..=MAX_LITERALS)
            .map(|i| i.to_string())
            .collect::<Vec<_>>();
        assert_eq!(shape(&format!("VALUES ({})", many.join("),("))), None);
    }

    #[test]
    fn remap_moves_spans_by_the_literals_change_in_length() {
        use crate::classify::Classifier;
        let c = Classifier::new(0);
        let a = "SELECT 1 FROM t WHERE x = 'a'; SELECT 2;";
        let b = "SELECT 100 FROM t WHERE x = ''; SELECT 20000;";
        let (sa, sb) = (shape(a).unwrap(), shape(b).unwrap());
        assert_eq!(sa.key, sb.key);
        let class = c.classify_uncached(a).0;
        let moved = remap(&Arc::new(class), &sa.literals, &sb.literals);
        let texts: Vec<_> = moved.statements.iter().map(|s| s.text(b)).collect();
        assert_eq!(texts, ["SELECT 100 FROM t WHERE x = ''", "SELECT 20000"]);
        assert_eq!(*moved, c.classify_uncached(b).0);
    }
}
