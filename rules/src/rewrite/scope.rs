//! Name resolution the way Postgres does it, for the names the map cares
//! about: which FROM item a column reference belongs to.
//!
//! Scopes are a stack of query levels (a subquery's level above its
//! parent's). A qualified reference `q.c` goes to the innermost item named
//! `q`. An unqualified `c` goes to the innermost level that has a column
//! `c`; the statement is assumed valid on the application's database, so a
//! level where exactly one item is known to have `c` settles it (two would
//! have been "ambiguous" there). When a level has items whose columns are
//! unknown (no catalog, a function, a subquery with `*`) and none known to
//! have `c`, the column may be theirs; if an outer renamed table also has
//! `c` the walk cannot tell and refuses rather than guess.

/// What is known about the columns of a FROM item, application-side.
#[derive(Debug, Clone)]
pub(super) enum Cols {
    Known(Vec<String>),
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Has {
    Yes,
    No,
    Maybe,
}

#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// The name qualifiers use: the alias, else the relation name.
    pub refname: String,
    /// The schema written in the FROM item (three-part column references).
    pub schema: Option<String>,
    /// Index of the map's [`super::names::TableInfo`] for a mapped table.
    pub table: Option<usize>,
    /// The qualifier references must use after the rewrite, when the table
    /// was renamed and has no alias: (schema as written after the rewrite,
    /// new name).
    pub new_ref: Option<(Option<String>, String)>,
    pub cols: Cols,
}

#[derive(Debug, Default)]
pub(super) struct Level {
    pub entries: Vec<Entry>,
    /// A JOIN with USING, NATURAL or an alias merges or hides columns, so
    /// `*` there is not the concatenation of each item's `t.*`.
    pub merged_columns: bool,
}

pub(super) fn has(entry: &Entry, column: &str, renamed: impl Fn(usize, &str) -> bool) -> Has {
    match &entry.cols {
        Cols::Known(cols) if cols.iter().any(|c| c == column) => Has::Yes,
        Cols::Known(_) => Has::No,
        Cols::Unknown => match entry.table {
            Some(t) if renamed(t, column) => Has::Yes,
            _ => Has::Maybe,
        },
    }
}
