//! Rewriting statements for a backend whose schema differs from the one the
//! application was written for: renamed tables (also moved to another
//! schema) and renamed columns, from the `rewrite:` section of the config.
//!
//! Renames are applied to the parse tree, never to the text, so string
//! literals, comments and dollar-quoted bodies are left alone, and the
//! result is deparsed by Postgres' own deparser (libpg_query). Columns keep
//! the names the application expects in result sets: a renamed column in a
//! select list or RETURNING is aliased back, and `*` over a table with
//! renamed columns is expanded when a catalog says which columns it has.
//! `replace:` regexes run afterwards on the text to be sent.
//!
//! Most statements name nothing the map renames; a case-insensitive scan
//! for the application-side names decides that before any parse, and the
//! [`Rewriter`]'s cache remembers every result by text, and by shape for
//! texts that differ only in literals (see [`by_shape`]).

mod by_shape;
mod catalog;
mod names;
mod scope;
mod walk;

use std::sync::Arc;

use regex::Regex;

pub use catalog::{validate, Catalog};

use crate::classify::shape::Shape;
use crate::config::RewriteMap;
use crate::textcache::{cacheable_shape, CacheStats, TextAndShape, Weigh};
use by_shape::ShapeRewrite;
use names::Names;
use walk::Walker;

/// Longest text the rewriter parses; see [`crate::ClassifierOptions`] for
/// what a parse of a huge text costs.
pub const MAX_REWRITE_BYTES: usize = 256 << 10;
/// Memory budget of a rewriter's cache.
const CACHE_BYTES: usize = 32 << 20;

/// What to send instead of a statement text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Send the original text.
    Unchanged,
    /// Send this text instead.
    Changed(Arc<str>),
    /// Do not send it: it names something renamed on this backend but could
    /// not be rewritten safely. The reason is meant for the client and logs.
    Refused(Arc<str>),
}

impl Weigh for Rewrite {
    fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + match self {
                Rewrite::Unchanged => 0,
                Rewrite::Changed(s) | Rewrite::Refused(s) => s.len() + 16,
            }
    }
}

/// Rewrites statement texts for one backend. `Send + Sync`; build one per
/// backend per configuration and share it.
pub struct Rewriter {
    names: Names,
    replace: Vec<(Regex, String)>,
    cache: TextAndShape<Rewrite, ShapeRewrite>,
}

/// Cache counters of a [`Rewriter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewriterStats {
    /// Answers from the cache, by text or by shape.
    pub hits: u64,
    /// Texts rewritten (parsed, unless the name scan ruled them out).
    pub misses: u64,
    /// Texts and shapes kept.
    pub entries: usize,
    pub bytes: usize,
}

impl Rewriter {
    /// `target`: this backend's catalog; `source`: the catalog of the
    /// backend the application was written for. Either may be missing (see
    /// the README for what then cannot be rewritten). `cache_capacity`:
    /// texts remembered, and as many shapes; 0 for none.
    pub fn new(
        map: &RewriteMap,
        target: Option<Arc<Catalog>>,
        source: Option<Arc<Catalog>>,
        cache_capacity: usize,
    ) -> Self {
        Rewriter {
            names: Names::new(map, target, source),
            replace: map.replace.clone(),
            cache: TextAndShape::new(cache_capacity, CACHE_BYTES),
        }
    }

    /// Nothing to rewrite: callers can skip the rewriter entirely.
    pub fn is_noop(&self) -> bool {
        self.names.is_empty() && self.replace.is_empty()
    }

    /// [`Rewriter::rewrite_uncached`], remembered by text and by shape.
    pub fn rewrite(&self, sql: &str) -> Rewrite {
        if self.is_noop() {
            return Rewrite::Unchanged;
        }
        if let Some(hit) = self.cache.texts.get(sql) {
            return hit;
        }
        // `replace:` regexes may match inside literals: no sharing then.
        let mut shape = self
            .replace
            .is_empty()
            .then(|| cacheable_shape(sql))
            .flatten();
        if let Some(s) = &shape {
            if let Some(t) = self.cache.shapes.get(&s.key) {
                match t.apply(sql, &s.literals) {
                    Some(shared) => return shared,
                    // Already found to need a rewrite per text: not
                    // learned again.
                    None => shape = None,
                }
            }
        }
        self.cache.count_miss();
        let result = self.rewrite_uncached(sql);
        if let Some(Shape { key, literals }) = shape {
            let shared = by_shape::learn(self, sql, &literals, &result);
            self.cache.shapes.insert(&key, shared);
        }
        self.cache.texts.insert(sql, result.clone());
        result
    }

    /// The text to send to this backend instead of `sql` (one or more
    /// statements).
    pub fn rewrite_uncached(&self, sql: &str) -> Rewrite {
        let ast = self.rewrite_tree(sql, false);
        self.replace(sql, ast)
    }

    pub fn stats(&self) -> RewriterStats {
        let CacheStats {
            hits,
            misses,
            entries,
            bytes,
        } = self.cache.stats();
        RewriterStats {
            hits,
            misses,
            entries,
            bytes,
        }
    }

    /// Always parses and deparses, whatever the text names, so tests can
    /// check that the round trip through the tree preserves meaning.
    #[doc(hidden)]
    pub fn rewrite_through_tree(&self, sql: &str) -> Rewrite {
        self.rewrite_tree(sql, true)
    }

    fn rewrite_tree(&self, sql: &str, force: bool) -> Rewrite {
        let mentioned = match self.names.mentioned(sql) {
            Some(name) => name,
            None if force => "",
            None => return Rewrite::Unchanged,
        };
        let names_it = || {
            if mentioned.is_empty() {
                String::new()
            } else {
                format!("; it mentions {mentioned}, which is renamed on this backend")
            }
        };
        if sql.len() > MAX_REWRITE_BYTES {
            return refused(format!(
                "not parsed: the text is {} bytes, over the {MAX_REWRITE_BYTES} byte rewrite limit{}",
                sql.len(),
                names_it()
            ));
        }
        let mut tree = match pg_query::parse(sql, 0) {
            Ok(tree) => tree.protobuf,
            Err(e) => {
                let message = match e {
                    pg_query::Error::Parse(m) => m,
                    pg_query::Error::Decode(_) => "statement nested too deeply".to_owned(),
                    pg_query::Error::Conversion(_) => "text contains a NUL byte".to_owned(),
                    other => other.to_string(),
                };
                return refused(format!("cannot parse: {message}{}", names_it()));
            }
        };
        let mut walker = Walker::new(&self.names);
        for raw in &mut tree.stmts {
            if let Some(node) = raw.stmt.as_deref_mut().and_then(|s| s.node.as_mut()) {
                walker.statement(node);
            }
        }
        if let Some(reason) = walker.refused {
            return refused(format!("cannot rewrite: {reason}"));
        }
        if !walker.changed && !force {
            return Rewrite::Unchanged;
        }
        match deparse::deparse(sql, &tree) {
            Ok(text) => Rewrite::Changed(text.into()),
            Err(e) => refused(format!("cannot rewrite: deparse failed: {e}")),
        }
    }

    fn replace(&self, sql: &str, ast: Rewrite) -> Rewrite {
        if self.replace.is_empty() {
            return ast;
        }
        let mut text: std::borrow::Cow<'_, str> = match &ast {
            Rewrite::Refused(_) => return ast,
            Rewrite::Unchanged => sql.into(),
            Rewrite::Changed(s) => s.to_string().into(),
        };
        let mut changed = matches!(ast, Rewrite::Changed(_));
        for (re, with) in &self.replace {
            if let std::borrow::Cow::Owned(new) = re.replace_all(&text, with.as_str()) {
                if new != *text {
                    changed = true;
                    text = new.into();
                }
            }
        }
        if changed {
            Rewrite::Changed(text.into_owned().into())
        } else {
            Rewrite::Unchanged
        }
    }
}

fn refused(reason: String) -> Rewrite {
    Rewrite::Refused(reason.into())
}

impl std::fmt::Debug for Rewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewriter")
            .field("tables", &self.names.tables.len())
            .field("replace", &self.replace.len())
            .field("stats", &self.stats())
            .finish()
    }
}

mod deparse {
    //! Tree back to text, keeping the comments when that is safe.

    use pg_query::protobuf::ParseResult;
    use pg_query::DeparseOptions;

    /// Deparses `tree` (parsed from `original`). Comments of the original
    /// are put back near where they were (SQL commenter tags, hints),
    /// unless the result would not parse to the same statements: a `--`
    /// comment placed mid-line would swallow the rest of it.
    pub(super) fn deparse(original: &str, tree: &ParseResult) -> pg_query::Result<String> {
        let plain = pg_query::deparse(tree, DeparseOptions::default())?;
        if !original.contains("--") && !original.contains("/*") {
            return Ok(plain);
        }
        let Ok(comments) = pg_query::deparse_comments_for_query(original) else {
            return Ok(plain);
        };
        if comments.is_empty() {
            return Ok(plain);
        }
        let with = pg_query::deparse(
            tree,
            DeparseOptions {
                comments,
                ..DeparseOptions::default()
            },
        );
        let same = |text: &str| {
            pg_query::parse(text, 0)
                .and_then(|t| pg_query::deparse(&t.protobuf, DeparseOptions::default()))
                .is_ok_and(|again| again == plain)
        };
        match with {
            Ok(with) if same(&with) => Ok(with),
            _ => Ok(plain),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Rewriter>();
        check::<Rewrite>();
    }
}
