//! What a backend's schema looks like, as far as rewriting needs it: which
//! tables exist, their columns in `attnum` order, and the search_path that
//! decides what an unqualified table name means.

use std::collections::HashMap;

use crate::config::{RewriteMap, TableName};

/// One backend's tables and search_path. Names are as Postgres stores them
/// (`pg_namespace.nspname`, `pg_class.relname`, `pg_attribute.attname`):
/// already folded, never quoted.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    search_path: Vec<String>,
    tables: HashMap<(String, String), Vec<String>>,
}

impl Catalog {
    /// `search_path`: the schemas an unqualified name is looked up in, in
    /// order (e.g. from `current_schemas(false)`), `$user` already expanded.
    pub fn new(search_path: Vec<String>) -> Self {
        Catalog {
            search_path,
            tables: HashMap::new(),
        }
    }

    /// Adds (or replaces) a table; `columns` in `attnum` order, dropped
    /// columns left out.
    pub fn add_table(&mut self, schema: &str, table: &str, columns: Vec<String>) {
        self.tables
            .insert((schema.to_owned(), table.to_owned()), columns);
    }

    pub fn search_path(&self) -> &[String] {
        &self.search_path
    }

    /// The schema an unqualified `table` resolves to: the first schema of
    /// the search_path that has it.
    pub fn resolve(&self, table: &str) -> Option<&str> {
        self.search_path
            .iter()
            .find(|s| self.tables.contains_key(&((*s).clone(), table.to_owned())))
            .map(String::as_str)
    }

    /// The columns of `name` (resolved through the search_path when it has
    /// no schema), in `attnum` order.
    pub fn columns(&self, name: &TableName) -> Option<&[String]> {
        let schema = match &name.schema {
            Some(s) => s.as_str(),
            None => self.resolve(&name.name)?,
        };
        self.tables
            .get(&(schema.to_owned(), name.name.clone()))
            .map(Vec::as_slice)
    }

    pub fn has_table(&self, name: &TableName) -> bool {
        self.columns(name).is_some()
    }
}

/// Checks `map` (the renames for one backend) against that backend's
/// catalog `target`, and, when given, `source`: the catalog of the side the
/// application was written for. Every problem found, one message each,
/// naming the map entry.
pub fn validate(map: &RewriteMap, target: &Catalog, source: Option<&Catalog>) -> Vec<String> {
    let mut problems = Vec::new();
    for (from, to) in &map.tables {
        if !target.has_table(to) {
            problems.push(format!(
                "rewrite tables: {from} -> {to}: table {to} does not exist on this backend"
            ));
        }
        if let Some(source) = source {
            if !source.has_table(from) {
                problems.push(format!(
                    "rewrite tables: {from} -> {to}: table {from} does not exist on the application's backend"
                ));
            }
        }
    }
    for (table, app, backend) in &map.columns {
        let entry = format!("rewrite columns: {table}.{app} -> {backend}");
        let schema_of = |t: &TableName| {
            t.schema
                .clone()
                .or_else(|| source.and_then(|c| c.resolve(&t.name)).map(str::to_owned))
                .unwrap_or_else(|| super::names::DEFAULT_SCHEMA.to_owned())
        };
        // `orders.total` belongs to the table renamed as `public.orders`.
        let renamed = map
            .tables
            .iter()
            .find(|(from, _)| from.name == table.name && schema_of(from) == schema_of(table))
            .map_or(table, |(_, to)| to);
        match target.columns(renamed) {
            None => problems.push(format!(
                "{entry}: table {renamed} does not exist on this backend"
            )),
            Some(cols) if !cols.iter().any(|c| c == backend) => problems.push(format!(
                "{entry}: table {renamed} has no column {backend} on this backend"
            )),
            Some(_) => {}
        }
        if let Some(source) = source {
            match source.columns(table) {
                None => problems.push(format!(
                    "{entry}: table {table} does not exist on the application's backend"
                )),
                Some(cols) if !cols.iter().any(|c| c == app) => problems.push(format!(
                    "{entry}: table {table} has no column {app} on the application's backend"
                )),
                Some(_) => {}
            }
        }
    }
    problems
}
