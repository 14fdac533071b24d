//! Rewrites shared by texts that differ only in literals (see
//! [`crate::classify::shape`]): a client that inlines values sends a new
//! text per statement, and each would otherwise be parsed and deparsed.
//!
//! The rewrite of a shape is learned once, as a template: the text is
//! rewritten again with every literal replaced by a sentinel literal of the
//! same kind, and the deparsed output, with the sentinels found in it, says
//! where each literal goes. A template is kept only when it reproduces the
//! rewrite of the text it was learned from exactly, so a deparser that
//! reorders, drops or reformats a literal leaves the shape uncached.

use std::ops::Range;
use std::sync::Arc;

use super::{Rewrite, Rewriter};
use crate::textcache::Weigh;

#[derive(Clone)]
pub(super) enum ShapeRewrite {
    /// No template could be learned: each text is rewritten on its own
    /// (remembered so that the learning, a second rewrite, is not retried
    /// for every text of the shape).
    PerText,
    Unchanged,
    /// `out` with the literal `holes[i].1` of the text at `holes[i].0`.
    Template {
        out: Arc<str>,
        holes: Arc<[(Range<usize>, usize)]>,
    },
}

impl Weigh for ShapeRewrite {
    fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + match self {
                ShapeRewrite::PerText | ShapeRewrite::Unchanged => 0,
                ShapeRewrite::Template { out, holes } => {
                    out.len() + holes.len() * std::mem::size_of::<(Range<usize>, usize)>()
                }
            }
    }
}

impl ShapeRewrite {
    /// The rewrite of `sql`, a text of this shape with its literals at
    /// `literals`; `None` for a shape whose texts are rewritten one by one.
    pub(super) fn apply(&self, sql: &str, literals: &[Range<usize>]) -> Option<Rewrite> {
        let (out, holes) = match self {
            ShapeRewrite::PerText => return None,
            ShapeRewrite::Unchanged => return Some(Rewrite::Unchanged),
            ShapeRewrite::Template { out, holes } => (out, holes),
        };
        let extra: usize = holes.iter().map(|(_, i)| literals[*i].len()).sum();
        let mut text = String::with_capacity(out.len() + extra);
        let mut at = 0;
        for (hole, i) in holes.iter() {
            text.push_str(&out[at..hole.start]);
            text.push_str(&sql[literals[*i].clone()]);
            at = hole.end;
        }
        text.push_str(&out[at..]);
        Some(Rewrite::Changed(text.into()))
    }
}

/// A literal of the kind of `lit`, unlikely in any statement, and distinct
/// for each `i`.
fn sentinel(lit: &str, i: usize) -> String {
    if lit.starts_with('\'') {
        format!("'pgshift_sentinel_{i}'")
    } else if lit.contains('.') {
        format!("9173.5{i:04}")
    } else {
        // Nine digits at most, like the integers the shape abstracts.
        format!("{}", 917_350_000 + i)
    }
}

/// Where `needle` stands alone in `hay`, when it does exactly once.
fn find_once(hay: &str, needle: &str) -> Option<Range<usize>> {
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'$';
    let mut found = None;
    let mut from = 0;
    while let Some(at) = hay[from..].find(needle).map(|p| p + from) {
        let end = at + needle.len();
        let before = at.checked_sub(1).map(|p| hay.as_bytes()[p]);
        let after = hay.as_bytes().get(end).copied();
        let alone = needle.starts_with('\'')
            || (!before.is_some_and(is_word) && !after.is_some_and(is_word));
        if alone {
            if found.is_some() {
                return None;
            }
            found = Some(at..end);
        }
        from = at + 1;
    }
    found
}

/// What the texts of the shape of `sql` (literals at `literals`), whose
/// rewrite is `rewritten`, can share.
pub(super) fn learn(
    rewriter: &Rewriter,
    sql: &str,
    literals: &[Range<usize>],
    rewritten: &Rewrite,
) -> ShapeRewrite {
    match rewritten {
        Rewrite::Unchanged => ShapeRewrite::Unchanged,
        // A refusal's reason may quote the text.
        Rewrite::Refused(_) => ShapeRewrite::PerText,
        Rewrite::Changed(_) => {
            template(rewriter, sql, literals, rewritten).unwrap_or(ShapeRewrite::PerText)
        }
    }
}

fn template(
    rewriter: &Rewriter,
    sql: &str,
    literals: &[Range<usize>],
    rewritten: &Rewrite,
) -> Option<ShapeRewrite> {
    let mut probe = String::with_capacity(sql.len() + literals.len() * 16);
    let mut sentinels = Vec::with_capacity(literals.len());
    let mut at = 0;
    for (i, r) in literals.iter().enumerate() {
        let s = sentinel(&sql[r.clone()], i);
        probe.push_str(&sql[at..r.start]);
        probe.push_str(&s);
        sentinels.push(s);
        at = r.end;
    }
    probe.push_str(&sql[at..]);
    let Rewrite::Changed(out) = rewriter.rewrite_uncached(&probe) else {
        return None;
    };
    let mut holes = sentinels
        .iter()
        .enumerate()
        .map(|(i, s)| find_once(&out, s).map(|r| (r, i)))
        .collect::<Option<Vec<_>>>()?;
    holes.sort_by_key(|(r, _)| r.start);
    let template = ShapeRewrite::Template {
        out,
        holes: holes.into(),
    };
    (template.apply(sql, literals).as_ref() == Some(rewritten)).then_some(template)
}
