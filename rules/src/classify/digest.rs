//! Literal-free digests of query texts: the normalized text and its
//! fingerprint, both built from the Postgres scanner's tokens.
//!
//! Working from tokens rather than from the parse tree (as pg_query's
//! `normalize` does) costs one scan instead of a second parse, treats text
//! that does not parse the same way as text that does (so a broken statement
//! never leaks its literals into logs), and makes whitespace folding exact:
//! string literals and quoted identifiers are single tokens, so no space
//! inside them is touched.

use std::sync::Arc;

use pg_query::protobuf::{KeywordKind, ScanToken, Token};

use crate::hash::{stable_hash, StableHasher};

/// Bound on the normalized text kept per classification.
pub(super) const MAX_NORMALIZED_BYTES: usize = 4096;
const ELLIPSIS: &str = "…";

pub(super) struct Digest {
    pub normalized: Arc<str>,
    pub fingerprint: u64,
}

/// The Postgres scanner's tokens (comments included), or `None` when it
/// rejects the text.
///
/// Text without a single token is answered here: pg_query 18.1's
/// `scan_tokens` builds a slice from the C library's null pointer in that
/// case, which is undefined behaviour (a debug build aborts). The scanner
/// skips nothing but whitespace, so "no token" means "only whitespace".
pub(super) fn scan(sql: &str) -> Option<Vec<ScanToken>> {
    if sql.chars().all(super::parse::is_space) {
        return Some(Vec::new());
    }
    pg_query::scan_tokens(sql).ok()
}

/// `tokens` is the scanner's output for `sql`, or `None` when the scanner
/// rejected it (an unterminated quote, comment or dollar-quoted string).
pub(super) fn digest(sql: &str, tokens: Option<&[ScanToken]>) -> Digest {
    match tokens {
        Some(tokens) => from_tokens(sql, tokens),
        None => unscannable(sql),
    }
}

/// How one token takes part in the fingerprint.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Atom {
    /// A literal or a `$n` parameter: the value does not matter.
    Constant,
    /// Anything else, by token id and (case-folded where Postgres folds)
    /// text.
    Other { token: i32, hash: u64 },
    /// A squashed list of constants (see [`squash_constant_lists`]).
    ConstantList,
}

fn from_tokens(sql: &str, tokens: &[ScanToken]) -> Digest {
    let mut next_param = tokens
        .iter()
        .filter(|t| t.token == Token::Param as i32)
        .filter_map(|t| text(sql, t).get(1..)?.parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    let mut out = Bounded::new(sql.len());
    let mut atoms = Vec::with_capacity(tokens.len());
    let mut prev_end = 0usize;
    let mut gap = false;
    for t in tokens {
        let (start, end) = (to_usize(t.start), to_usize(t.end));
        gap |= start > prev_end;
        prev_end = end;
        if is_comment(t.token) {
            gap = true;
            continue;
        }
        if gap && !out.is_empty() {
            out.push(" ");
        }
        gap = false;
        if is_literal(t.token) {
            next_param += 1;
            out.push_param(next_param);
            atoms.push(Atom::Constant);
        } else {
            let text = text(sql, t);
            out.push(text);
            atoms.push(if t.token == Token::Param as i32 {
                Atom::Constant
            } else {
                Atom::Other {
                    token: t.token,
                    hash: token_hash(t, text),
                }
            });
        }
    }
    let atoms = squash_constant_lists(&atoms);
    let mut h = StableHasher::new();
    for atom in &atoms {
        match atom {
            Atom::Constant => h.write_u8(1),
            Atom::ConstantList => h.write_u8(2),
            Atom::Other { hash, .. } => {
                h.write_u8(3);
                h.write(&hash.to_le_bytes());
            }
        }
    }
    Digest {
        normalized: out.finish(),
        fingerprint: h.finish(),
    }
}

fn to_usize(v: i32) -> usize {
    usize::try_from(v).unwrap_or(0)
}

fn text<'a>(sql: &'a str, t: &ScanToken) -> &'a str {
    sql.get(to_usize(t.start)..to_usize(t.end)).unwrap_or("")
}

fn is_comment(token: i32) -> bool {
    token == Token::SqlComment as i32 || token == Token::CComment as i32
}

fn is_literal(token: i32) -> bool {
    [
        Token::Sconst,
        Token::Usconst,
        Token::Iconst,
        Token::Fconst,
        Token::Bconst,
        Token::Xconst,
    ]
    .iter()
    .any(|t| *t as i32 == token)
}

/// Keywords by id (so `select` = `SELECT`), unquoted identifiers lowercased
/// as Postgres folds them, everything else by its exact text.
fn token_hash(t: &ScanToken, text: &str) -> u64 {
    let mut h = StableHasher::new();
    h.write(&t.token.to_le_bytes());
    let keyword = t.keyword_kind != KeywordKind::NoKeyword as i32;
    if t.token == Token::Ident as i32 && !text.starts_with('"') {
        for b in text.bytes() {
            h.write_u8(b.to_ascii_lowercase());
        }
    } else if t.token == Token::Ident as i32 {
        // "users" names the same table as users: hash the name, not quotes.
        let inner = text.strip_prefix('"').and_then(|s| s.strip_suffix('"'));
        h.write(inner.unwrap_or(text).replace("\"\"", "\"").as_bytes());
    } else if !keyword {
        h.write(text.as_bytes());
    }
    h.finish()
}

/// Collapses the constant lists whose length varies from call to call in
/// otherwise identical statements: `IN (1, 2, 3)`, `ARRAY[1, 2]` and the rows
/// of `VALUES (1, 'a'), (2, 'b')`, each to a single [`Atom::ConstantList`],
/// so an ORM's `IN` list of 3 and of 30 ids share one digest. Constants may
/// carry a sign.
fn squash_constant_lists(atoms: &[Atom]) -> Vec<Atom> {
    let is = |i: usize, token: Token| matches!(atoms.get(i), Some(Atom::Other { token: t, .. }) if *t == token as i32);
    // The index after a `(const, ...)` group starting at `i`, if it is one.
    let group = |i: usize, open: Token, close: Token| -> Option<usize> {
        if !is(i, open) {
            return None;
        }
        let mut j = i + 1;
        loop {
            if is(j, Token::Ascii45) || is(j, Token::Ascii43) {
                j += 1;
            }
            if atoms.get(j) != Some(&Atom::Constant) {
                return None;
            }
            j += 1;
            if is(j, close) {
                return Some(j + 1);
            }
            if !is(j, Token::Ascii44) {
                return None;
            }
            j += 1;
        }
    };
    let mut out = Vec::with_capacity(atoms.len());
    let mut i = 0;
    while i < atoms.len() {
        out.push(atoms[i]);
        let squashed = if is(i, Token::InP) {
            group(i + 1, Token::Ascii40, Token::Ascii41)
        } else if is(i, Token::Array) {
            group(i + 1, Token::Ascii91, Token::Ascii93)
        } else if is(i, Token::Values) {
            group(i + 1, Token::Ascii40, Token::Ascii41).map(|mut end| {
                while is(end, Token::Ascii44) {
                    match group(end + 1, Token::Ascii40, Token::Ascii41) {
                        Some(next) => end = next,
                        None => break,
                    }
                }
                end
            })
        } else {
            None
        };
        match squashed {
            Some(end) => {
                out.push(Atom::ConstantList);
                i = end;
            }
            None => i += 1,
        }
    }
    out
}

/// Text the scanner rejects ends in an unterminated quote, comment or
/// dollar-quoted string. Keep only what comes before the first character
/// that could start a literal, quoted name or comment, so nothing secret is
/// logged.
fn unscannable(sql: &str) -> Digest {
    let bytes = sql.as_bytes();
    let cut = (0..bytes.len())
        .find(|&i| match bytes[i] {
            b'\'' | b'"' | b'$' | b'0'..=b'9' => true,
            b'/' => bytes.get(i + 1) == Some(&b'*'),
            b'-' => bytes.get(i + 1) == Some(&b'-'),
            _ => false,
        })
        .unwrap_or(bytes.len());
    let mut out = Bounded::new(cut);
    for (i, word) in sql[..cut].split_ascii_whitespace().enumerate() {
        if i > 0 {
            out.push(" ");
        }
        out.push(word);
    }
    if cut < sql.len() {
        out.push(" ");
        out.truncated = true;
    }
    let normalized = out.finish();
    Digest {
        fingerprint: stable_hash(normalized.as_bytes()),
        normalized,
    }
}

/// A string that stops growing at [`MAX_NORMALIZED_BYTES`] (on a char
/// boundary) and then ends in an ellipsis.
struct Bounded {
    text: String,
    truncated: bool,
}

impl Bounded {
    fn new(hint: usize) -> Self {
        Bounded {
            text: String::with_capacity(hint.min(MAX_NORMALIZED_BYTES) + ELLIPSIS.len()),
            truncated: false,
        }
    }

    fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    fn push(&mut self, s: &str) {
        if self.truncated {
            return;
        }
        let room = MAX_NORMALIZED_BYTES - self.text.len();
        if s.len() <= room {
            self.text.push_str(s);
        } else {
            let mut end = room;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.text.push_str(&s[..end]);
            self.truncated = true;
        }
    }

    fn push_param(&mut self, n: u32) {
        let mut buf = [0u8; 11];
        let digits = format_u32(n, &mut buf);
        self.push("$");
        self.push(digits);
    }

    fn finish(mut self) -> Arc<str> {
        if self.truncated {
            self.text.push_str(ELLIPSIS);
        }
        Arc::from(self.text)
    }
}

fn format_u32(mut n: u32, buf: &mut [u8; 11]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(sql: &str) -> Digest {
        digest(sql, scan(sql).as_deref())
    }

    #[test]
    fn replaces_literals_and_folds_space() {
        let x = d("SELECT  a, 'it''s' ,\n\t1.5e3 /* c */ FROM \"My  T\" WHERE b = E'\\n' -- end");
        assert_eq!(
            &*x.normalized,
            "SELECT a, $1 , $2 FROM \"My  T\" WHERE b = $3"
        );
    }

    #[test]
    fn numbers_after_existing_params() {
        let x = d("SELECT $2, 'x', $1, 42");
        assert_eq!(&*x.normalized, "SELECT $2, $3, $1, $4");
    }

    #[test]
    fn fingerprint_ignores_case_space_comments_and_list_lengths() {
        let base = d("SELECT * FROM users WHERE id IN (1, 2, 3)").fingerprint;
        for same in [
            "select *   from USERS where ID in (4)",
            "SELECT * FROM users /* hi */ WHERE id IN ($1, -2)",
            "SELECT * FROM \"users\" WHERE id IN (1,2,3,4,5,6,7)",
        ] {
            assert_eq!(d(same).fingerprint, base, "{same}");
        }
        for different in [
            "SELECT * FROM \"Users\" WHERE id IN (1)",
            "SELECT * FROM other.users WHERE id IN (1)",
            "SELECT * FROM users WHERE id NOT IN (1)",
            "SELECT * FROM users WHERE id IN (SELECT 1)",
            "SELECT * FROM users WHERE id = 1",
        ] {
            assert_ne!(d(different).fingerprint, base, "{different}");
        }
        assert_eq!(
            d("INSERT INTO t VALUES (1, 'a'), (2, 'b')").fingerprint,
            d("INSERT INTO t VALUES ($1, $2)").fingerprint
        );
        assert_eq!(
            d("SELECT ARRAY[1,2]").fingerprint,
            d("SELECT array[3]").fingerprint
        );
    }

    #[test]
    fn unscannable_text_keeps_no_literal() {
        let x = digest("SELECT * FROM t WHERE secret = 'hunter2", None);
        assert_eq!(&*x.normalized, "SELECT * FROM t WHERE secret = …");
        assert!(scan("SELECT 'unterminated").is_none());
        assert_eq!(scan(" \t\n").map(|t| t.len()), Some(0));
        assert_eq!(&*digest("", scan("").as_deref()).normalized, "");
    }

    #[test]
    fn bounded() {
        let sql = format!("SELECT {}", "a, ".repeat(3000) + "b");
        let x = d(&sql);
        assert!(x.normalized.len() <= MAX_NORMALIZED_BYTES + ELLIPSIS.len());
        assert!(x.normalized.ends_with(ELLIPSIS));
        let other = d(&format!("SELECT {}", "a, ".repeat(3000) + "c"));
        assert_ne!(
            x.fingerprint, other.fingerprint,
            "hash covers the whole text"
        );
    }
}
