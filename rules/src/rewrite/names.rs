//! The rename map compiled for lookups during the walk, and the cheap text
//! prefilter that lets most statements skip parsing altogether.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use super::catalog::Catalog;
use crate::config::{RewriteMap, TableName};

/// Where an unqualified name is assumed to live when no catalog says
/// otherwise: the first existing schema of Postgres' default search_path.
pub(super) const DEFAULT_SCHEMA: &str = "public";

/// One application-side table the map says something about.
#[derive(Debug)]
pub(super) struct TableInfo {
    /// Schema and name as the application sees them; the schema resolved.
    pub app: TableName,
    /// Its name on this backend (`None`: not renamed).
    pub target: Option<TableName>,
    /// (application column, backend column).
    pub columns: Vec<(String, String)>,
    /// The application's column order, when a catalog tells it.
    pub app_columns: Option<Vec<String>>,
}

impl TableInfo {
    pub fn renamed_column(&self, app: &str) -> Option<&str> {
        self.columns
            .iter()
            .find(|(a, _)| a == app)
            .map(|(_, b)| b.as_str())
    }
}

pub(super) struct Names {
    pub tables: Vec<TableInfo>,
    pub source: Option<Arc<Catalog>>,
    pub target: Option<Arc<Catalog>>,
    /// Every application-side table and column name the map mentions.
    prefilter: Option<AhoCorasick>,
}

impl Names {
    pub fn new(
        map: &RewriteMap,
        target: Option<Arc<Catalog>>,
        source: Option<Arc<Catalog>>,
    ) -> Names {
        let mut names = Names {
            tables: Vec::new(),
            source,
            target,
            prefilter: None,
        };
        for (from, to) in &map.tables {
            let i = names.info(from);
            names.tables[i].target = Some(to.clone());
        }
        for (table, app, backend) in &map.columns {
            let i = names.info(table);
            names.tables[i].columns.push((app.clone(), backend.clone()));
        }
        for i in 0..names.tables.len() {
            names.tables[i].app_columns = names.app_columns(&names.tables[i]);
        }
        let mut patterns: Vec<&str> = Vec::new();
        for t in &names.tables {
            patterns.push(&t.app.name);
            patterns.extend(t.columns.iter().map(|(a, _)| a.as_str()));
        }
        patterns.sort_unstable();
        patterns.dedup();
        names.prefilter = (!patterns.is_empty())
            .then(|| {
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::LeftmostFirst)
                    .build(&patterns)
                    .ok()
            })
            .flatten();
        names
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The first application-side name `text` mentions (case-insensitively,
    /// anywhere: a hit only means the statement is worth parsing).
    pub fn mentioned<'t>(&self, text: &'t str) -> Option<&'t str> {
        let m = self.prefilter.as_ref()?.find(text)?;
        text.get(m.range())
    }

    fn info(&mut self, name: &TableName) -> usize {
        let app = self.effective(name.schema.as_deref(), &name.name);
        if let Some(i) = self.tables.iter().position(|t| t.app == app) {
            return i;
        }
        self.tables.push(TableInfo {
            app,
            target: None,
            columns: Vec::new(),
            app_columns: None,
        });
        self.tables.len() - 1
    }

    /// `schema.name` with the schema Postgres would pick on the application
    /// side: as written, else through the source catalog's search_path,
    /// else [`DEFAULT_SCHEMA`].
    pub fn effective(&self, schema: Option<&str>, name: &str) -> TableName {
        let schema = schema
            .or_else(|| self.source.as_deref().and_then(|c| c.resolve(name)))
            .unwrap_or(DEFAULT_SCHEMA);
        TableName::new(Some(schema), name)
    }

    /// The map entry for a table reference, if any.
    pub fn lookup(&self, schema: Option<&str>, name: &str) -> Option<usize> {
        if !self.tables.iter().any(|t| t.app.name == name) {
            return None;
        }
        let app = self.effective(schema, name);
        self.tables.iter().position(|t| t.app == app)
    }

    /// The application-side columns of any table, in order, when a catalog
    /// knows them: the source catalog's, else the target's with renamed
    /// columns mapped back.
    pub fn columns_of(&self, schema: Option<&str>, name: &str) -> Option<Vec<String>> {
        match self.lookup(schema, name) {
            Some(i) => self.tables[i].app_columns.clone(),
            None => {
                let app = self.effective(schema, name);
                self.source
                    .as_deref()
                    .or(self.target.as_deref())
                    .and_then(|c| c.columns(&app))
                    .map(<[String]>::to_vec)
            }
        }
    }

    fn app_columns(&self, info: &TableInfo) -> Option<Vec<String>> {
        if let Some(cols) = self.source.as_deref().and_then(|c| c.columns(&info.app)) {
            return Some(cols.to_vec());
        }
        let target = self.target.as_deref()?;
        let name = match &info.target {
            Some(t) if t.schema.is_none() => TableName::new(info.app.schema.as_deref(), &t.name),
            Some(t) => t.clone(),
            None => info.app.clone(),
        };
        let cols = target
            .columns(&name)
            .or_else(|| target.columns(&TableName::new(None, &name.name)))?;
        Some(
            cols.iter()
                .map(|c| {
                    info.columns
                        .iter()
                        .find(|(_, b)| b == c)
                        .map_or_else(|| c.clone(), |(a, _)| a.clone())
                })
                .collect(),
        )
    }
}
