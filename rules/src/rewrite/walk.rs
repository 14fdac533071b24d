//! The rewrite itself: one walk over a statement's parse tree that renames
//! tables and columns in place, resolving every column reference through
//! [`super::scope`].
//!
//! Only constructs the walk understands are rewritten. Any other node
//! (JSON and XML expressions, most DDL, ...) is searched as data for an
//! identifier the map renames; finding one refuses the statement rather
//! than send it half-rewritten. Literals are never looked at: they are
//! `A_Const` nodes, and comments and dollar-quoted bodies never reach the
//! tree as identifiers.

use pg_query::protobuf::{
    AStar, Alias, ColumnRef, CommonTableExpr, DeleteStmt, InsertStmt, OnConflictClause, RangeVar,
    ResTarget, ReturningClause, SelectStmt, SetOperation, SortBy, SubLinkType, UpdateStmt,
    WindowDef, WithClause,
};
use pg_query::{Node, NodeEnum};
use serde_json::Value;

use super::names::Names;
use super::scope::{has, Cols, Entry, Has, Level};

pub(super) struct Walker<'a> {
    names: &'a Names,
    levels: Vec<Level>,
    /// Visible CTEs, innermost last.
    ctes: Vec<(String, Cols)>,
    pub changed: bool,
    pub refused: Option<String>,
}

fn string(node: &Node) -> Option<&str> {
    match &node.node {
        Some(NodeEnum::String(s)) => Some(&s.sval),
        _ => None,
    }
}

fn string_node(s: &str) -> Node {
    Node {
        node: Some(NodeEnum::String(pg_query::protobuf::String {
            sval: s.to_owned(),
        })),
    }
}

fn is_star(node: &Node) -> bool {
    matches!(node.node, Some(NodeEnum::AStar(_)))
}

fn nonempty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn alias_name(alias: &Option<Alias>) -> Option<String> {
    alias.as_ref().map(|a| a.aliasname.clone())
}

/// The column names a SELECT produces (after the rewrite, which keeps them
/// application-side), as far as they can be told without a catalog.
fn output_names(s: &SelectStmt) -> Cols {
    if s.op > SetOperation::SetopNone as i32 {
        return s.larg.as_deref().map_or(Cols::Unknown, output_names);
    }
    if let Some(Node {
        node: Some(NodeEnum::List(first)),
    }) = s.values_lists.first()
    {
        return Cols::Known(
            (1..=first.items.len())
                .map(|i| format!("column{i}"))
                .collect(),
        );
    }
    target_names(&s.target_list)
}

fn target_names(list: &[Node]) -> Cols {
    let mut names = Vec::with_capacity(list.len());
    for node in list {
        let Some(NodeEnum::ResTarget(rt)) = &node.node else {
            return Cols::Unknown;
        };
        if !rt.name.is_empty() {
            names.push(rt.name.clone());
            continue;
        }
        let name = match rt.val.as_deref().and_then(|v| v.node.as_ref()) {
            Some(NodeEnum::ColumnRef(c)) => match c.fields.last() {
                Some(f) if is_star(f) => return Cols::Unknown,
                Some(f) => string(f).unwrap_or("?column?").to_owned(),
                None => "?column?".to_owned(),
            },
            Some(NodeEnum::FuncCall(f)) => f
                .funcname
                .last()
                .and_then(string)
                .unwrap_or("?column?")
                .to_owned(),
            _ => "?column?".to_owned(),
        };
        names.push(name);
    }
    Cols::Known(names)
}

/// The last name of a plain column reference.
fn last_field(val: &Option<Box<Node>>) -> Option<String> {
    match val.as_deref().and_then(|v| v.node.as_ref()) {
        Some(NodeEnum::ColumnRef(c)) => c.fields.last().and_then(string).map(str::to_owned),
        _ => None,
    }
}

impl<'a> Walker<'a> {
    pub fn new(names: &'a Names) -> Self {
        Walker {
            names,
            levels: Vec::new(),
            ctes: Vec::new(),
            changed: false,
            refused: None,
        }
    }

    fn refuse(&mut self, reason: String) {
        self.refused.get_or_insert(reason);
    }

    fn renamed_column(&self, table: Option<usize>, column: &str) -> Option<&'a str> {
        let names: &'a Names = self.names;
        names.tables.get(table?)?.renamed_column(column)
    }

    fn has_column_renames(&self, entry: &Entry) -> bool {
        entry
            .table
            .is_some_and(|t| !self.names.tables[t].columns.is_empty())
    }

    /// One top-level statement.
    pub fn statement(&mut self, node: &mut NodeEnum) {
        use NodeEnum as N;
        match node {
            N::SelectStmt(s) => self.select(s, true),
            N::InsertStmt(s) => self.insert(s),
            N::UpdateStmt(s) => self.update(s),
            N::DeleteStmt(s) => self.delete(s),
            N::ExplainStmt(s) => self.inner_statement(&mut s.query),
            N::PrepareStmt(s) => self.inner_statement(&mut s.query),
            N::DeclareCursorStmt(s) => self.inner_statement(&mut s.query),
            N::CreateTableAsStmt(s) => self.inner_statement(&mut s.query),
            N::CopyStmt(s) => {
                self.inner_statement(&mut s.query);
                if let Some(rv) = &mut s.relation {
                    let entry = self.table_ref(rv, false);
                    for col in &mut s.attlist {
                        self.rename_column_name(col, entry.table);
                    }
                    self.levels.push(Level {
                        entries: vec![entry],
                        merged_columns: false,
                    });
                    self.expr_opt(&mut s.where_clause);
                    self.levels.pop();
                }
            }
            N::TruncateStmt(s) => self.relations(&mut s.relations),
            N::LockStmt(s) => self.relations(&mut s.relations),
            other => self.unknown(other, "this kind of statement"),
        }
    }

    fn inner_statement(&mut self, node: &mut Option<Box<Node>>) {
        if let Some(n) = node.as_deref_mut().and_then(|n| n.node.as_mut()) {
            self.statement(n);
        }
    }

    fn relations(&mut self, nodes: &mut [Node]) {
        for n in nodes {
            if let Some(NodeEnum::RangeVar(rv)) = &mut n.node {
                self.table_ref(rv, false);
            }
        }
    }

    /// Renames a plain `String` node holding a column of `table`.
    fn rename_column_name(&mut self, node: &mut Node, table: Option<usize>) {
        if let Some(NodeEnum::String(s)) = &mut node.node {
            if let Some(new) = self.renamed_column(table, &s.sval) {
                s.sval = new.to_owned();
                self.changed = true;
            }
        }
    }

    /// Something the walk does not rewrite: fine unless it names a table or
    /// column the map renames.
    fn unknown(&mut self, node: &NodeEnum, what: &str) {
        let Ok(value) = serde_json::to_value(node) else {
            return;
        };
        if let Some(name) = self.mention(&value) {
            let construct = value
                .as_object()
                .and_then(|m| m.keys().next())
                .map_or("?", String::as_str);
            self.refuse(format!(
                "{what} ({construct}) is not rewritten, and it names {name}, which is renamed on this backend"
            ));
        }
    }

    fn mention(&self, value: &Value) -> Option<String> {
        match value {
            // A_Const: a literal, never an identifier.
            Value::Object(map) if map.contains_key("isnull") => None,
            Value::Object(map) => map.values().find_map(|v| self.mention(v)),
            Value::Array(items) => items.iter().find_map(|v| self.mention(v)),
            Value::String(s) => self
                .names
                .tables
                .iter()
                .any(|t| t.app.name == *s || t.columns.iter().any(|(a, _)| a == s))
                .then(|| s.clone()),
            _ => None,
        }
    }

    // ---- FROM items -------------------------------------------------------

    /// Renames a table reference and describes it for the scope. `from`:
    /// a FROM item, where a CTE of the same name shadows the table.
    fn table_ref(&mut self, rv: &mut RangeVar, from: bool) -> Entry {
        let schema = nonempty(&rv.schemaname).map(str::to_owned);
        let refname = alias_name(&rv.alias).unwrap_or_else(|| rv.relname.clone());
        if from && schema.is_none() {
            if let Some((_, cols)) = self.ctes.iter().rev().find(|(n, _)| *n == rv.relname) {
                return Entry {
                    refname,
                    schema,
                    table: None,
                    new_ref: None,
                    cols: cols.clone(),
                };
            }
        }
        let names = self.names;
        let table = names.lookup(schema.as_deref(), &rv.relname);
        let cols = names
            .columns_of(schema.as_deref(), &rv.relname)
            .map_or(Cols::Unknown, Cols::Known);
        let mut entry = Entry {
            refname,
            schema,
            table,
            new_ref: None,
            cols,
        };
        if let Some(alias) = &rv.alias {
            if !alias.colnames.is_empty() && self.has_column_renames(&entry) {
                self.refuse(format!(
                    "column aliases on {} hide which columns are renamed",
                    rv.relname
                ));
            }
        }
        if let Some(target) = table.and_then(|t| names.tables[t].target.as_ref()) {
            rv.relname = target.name.clone();
            if let Some(s) = &target.schema {
                rv.schemaname = s.clone();
            }
            self.changed = true;
            if rv.alias.is_none() {
                entry.new_ref = Some((
                    nonempty(&rv.schemaname).map(str::to_owned),
                    target.name.clone(),
                ));
            }
        }
        entry
    }

    fn range_item(&mut self, node: &mut Node) {
        let Some(n) = &mut node.node else { return };
        match n {
            NodeEnum::RangeVar(rv) => {
                let entry = self.table_ref(rv, true);
                self.push_entry(entry);
            }
            NodeEnum::JoinExpr(j) => {
                if let Some(l) = j.larg.as_deref_mut() {
                    self.range_item(l);
                }
                if let Some(r) = j.rarg.as_deref_mut() {
                    self.range_item(r);
                }
                let merged = j.is_natural || !j.using_clause.is_empty() || j.alias.is_some();
                if let Some(level) = self.levels.last_mut() {
                    level.merged_columns |= merged;
                }
                let level_renames: Vec<(bool, Option<usize>)> = self
                    .levels
                    .last()
                    .map(|l| {
                        l.entries
                            .iter()
                            .map(|e| (self.has_column_renames(e), e.table))
                            .collect()
                    })
                    .unwrap_or_default();
                if j.is_natural && level_renames.iter().any(|(r, _)| *r) {
                    self.refuse("NATURAL JOIN over a table with renamed columns".into());
                }
                for u in &j.using_clause {
                    if let Some(c) = string(u) {
                        if level_renames
                            .iter()
                            .any(|(_, t)| self.renamed_column(*t, c).is_some())
                        {
                            self.refuse(format!("JOIN ... USING ({c}) names a renamed column"));
                        }
                    }
                }
                self.expr_opt(&mut j.quals);
                if let Some(alias) = &j.alias {
                    self.push_entry(Entry {
                        refname: alias.aliasname.clone(),
                        schema: None,
                        table: None,
                        new_ref: None,
                        cols: Cols::Unknown,
                    });
                }
            }
            NodeEnum::RangeSubselect(rs) => {
                let Some(Node {
                    node: Some(NodeEnum::SelectStmt(sub)),
                }) = rs.subquery.as_deref_mut()
                else {
                    self.unknown(n, "a FROM item");
                    return;
                };
                // Only LATERAL subqueries see the FROM items before them.
                let hidden = if rs.lateral {
                    None
                } else {
                    self.levels
                        .last_mut()
                        .map(|l| std::mem::take(&mut l.entries))
                };
                self.select(sub, true);
                let cols = output_names(sub);
                if let (Some(entries), Some(level)) = (hidden, self.levels.last_mut()) {
                    level.entries = entries;
                }
                let cols = with_alias_columns(cols, &rs.alias);
                if let Some(refname) = alias_name(&rs.alias) {
                    self.push_entry(Entry {
                        refname,
                        schema: None,
                        table: None,
                        new_ref: None,
                        cols,
                    });
                }
            }
            NodeEnum::RangeFunction(rf) => {
                for f in &mut rf.functions {
                    self.expr(f);
                }
                let refname = alias_name(&rf.alias).or_else(|| {
                    let first = rf.functions.first()?;
                    let Some(NodeEnum::List(l)) = &first.node else {
                        return None;
                    };
                    let Some(NodeEnum::FuncCall(f)) = l.items.first()?.node.as_ref() else {
                        return None;
                    };
                    f.funcname.last().and_then(string).map(str::to_owned)
                });
                if let Some(refname) = refname {
                    self.push_entry(Entry {
                        refname,
                        schema: None,
                        table: None,
                        new_ref: None,
                        cols: Cols::Unknown,
                    });
                }
            }
            NodeEnum::RangeTableSample(ts) => {
                if let Some(rel) = ts.relation.as_deref_mut() {
                    self.range_item(rel);
                }
                self.exprs(&mut ts.args);
                self.expr_opt(&mut ts.repeatable);
            }
            other => self.unknown(other, "a FROM item"),
        }
    }

    fn push_entry(&mut self, entry: Entry) {
        if let Some(level) = self.levels.last_mut() {
            level.entries.push(entry);
        }
    }

    // ---- statements -------------------------------------------------------

    fn with(&mut self, with: &mut Option<WithClause>) {
        let Some(w) = with else { return };
        for node in &mut w.ctes {
            let Some(NodeEnum::CommonTableExpr(cte)) = &mut node.node else {
                continue;
            };
            if w.recursive {
                self.ctes.push((cte.ctename.clone(), cte_alias_cols(cte)));
            }
            let cols = match cte.ctequery.as_deref_mut().and_then(|q| q.node.as_mut()) {
                Some(NodeEnum::SelectStmt(s)) => {
                    self.select(s, true);
                    output_names(s)
                }
                Some(NodeEnum::InsertStmt(s)) => {
                    self.insert(s);
                    returning_names(&s.returning_clause)
                }
                Some(NodeEnum::UpdateStmt(s)) => {
                    self.update(s);
                    returning_names(&s.returning_clause)
                }
                Some(NodeEnum::DeleteStmt(s)) => {
                    self.delete(s);
                    returning_names(&s.returning_clause)
                }
                Some(other) => {
                    self.unknown(other, "a WITH query");
                    Cols::Unknown
                }
                None => Cols::Unknown,
            };
            let cols = match cte_alias_cols(cte) {
                Cols::Known(c) => Cols::Known(c),
                Cols::Unknown => cols,
            };
            if w.recursive {
                self.ctes.pop();
            }
            self.ctes.push((cte.ctename.clone(), cols));
        }
    }

    fn select(&mut self, s: &mut SelectStmt, names_matter: bool) {
        let ctes = self.ctes.len();
        self.with(&mut s.with_clause);
        if s.op > SetOperation::SetopNone as i32 {
            if let Some(l) = s.larg.as_deref_mut() {
                self.select(l, names_matter);
            }
            if let Some(r) = s.rarg.as_deref_mut() {
                self.select(r, names_matter);
            }
            // ORDER BY of a set operation names its output columns, which
            // keep their application-side names.
            self.levels.push(Level::default());
            self.expr_opt(&mut s.limit_offset);
            self.expr_opt(&mut s.limit_count);
            self.levels.pop();
            self.ctes.truncate(ctes);
            return;
        }
        self.levels.push(Level::default());
        for item in &mut s.from_clause {
            self.range_item(item);
        }
        for list in &mut s.values_lists {
            self.expr(list);
        }
        self.target_list(&mut s.target_list, names_matter);
        let outputs = match target_names(&s.target_list) {
            Cols::Known(c) => c,
            Cols::Unknown => Vec::new(),
        };
        self.exprs(&mut s.distinct_clause);
        self.expr_opt(&mut s.where_clause);
        self.exprs(&mut s.group_clause);
        self.expr_opt(&mut s.having_clause);
        for w in &mut s.window_clause {
            if let Some(NodeEnum::WindowDef(wd)) = &mut w.node {
                self.window(wd);
            }
        }
        for sort in &mut s.sort_clause {
            if let Some(NodeEnum::SortBy(sb)) = &mut sort.node {
                // A bare name in ORDER BY means an output column first.
                let output = matches!(
                    sb.node.as_deref().and_then(|n| n.node.as_ref()),
                    Some(NodeEnum::ColumnRef(c))
                        if c.fields.len() == 1
                            && string(&c.fields[0]).is_some_and(|n| outputs.iter().any(|o| o == n))
                );
                if !output {
                    self.sort_by(sb);
                }
            } else {
                self.expr(sort);
            }
        }
        self.expr_opt(&mut s.limit_offset);
        self.expr_opt(&mut s.limit_count);
        for lock in &mut s.locking_clause {
            if let Some(NodeEnum::LockingClause(lc)) = &mut lock.node {
                for rel in &mut lc.locked_rels {
                    if let Some(NodeEnum::RangeVar(rv)) = &mut rel.node {
                        self.locked_rel(rv);
                    }
                }
            }
        }
        self.levels.pop();
        self.ctes.truncate(ctes);
    }

    /// `FOR UPDATE OF t` names a FROM item by its reference name.
    fn locked_rel(&mut self, rv: &mut RangeVar) {
        let found = self
            .levels
            .last()
            .and_then(|l| l.entries.iter().find(|e| e.refname == rv.relname))
            .and_then(|e| e.new_ref.clone());
        if let Some((_, name)) = found {
            rv.relname = name;
            self.changed = true;
        }
    }

    fn insert(&mut self, s: &mut InsertStmt) {
        let ctes = self.ctes.len();
        self.with(&mut s.with_clause);
        let Some(rv) = &mut s.relation else { return };
        let entry = self.table_ref(rv, false);
        for col in &mut s.cols {
            if let Some(NodeEnum::ResTarget(rt)) = &mut col.node {
                self.rename_target(rt, entry.table);
                self.exprs(&mut rt.indirection);
            }
        }
        // VALUES and the SELECT do not see the target table.
        let outer = std::mem::take(&mut self.levels);
        if let Some(n) = s.select_stmt.as_deref_mut().and_then(|n| n.node.as_mut()) {
            match n {
                NodeEnum::SelectStmt(sel) => self.select(sel, false),
                other => self.unknown(other, "an INSERT source"),
            }
        }
        self.levels = outer;
        if let Some(oc) = s.on_conflict_clause.as_deref_mut() {
            self.on_conflict(oc, &entry);
        }
        self.returning(&mut s.returning_clause, vec![entry]);
        self.ctes.truncate(ctes);
    }

    fn on_conflict(&mut self, oc: &mut OnConflictClause, target: &Entry) {
        let excluded = Entry {
            refname: "excluded".into(),
            schema: None,
            new_ref: None,
            ..target.clone()
        };
        self.levels.push(Level {
            entries: vec![target.clone(), excluded],
            merged_columns: false,
        });
        if let Some(infer) = oc.infer.as_deref_mut() {
            for elem in &mut infer.index_elems {
                if let Some(NodeEnum::IndexElem(ie)) = &mut elem.node {
                    if let Some(new) = self.renamed_column(target.table, &ie.name) {
                        ie.name = new.to_owned();
                        self.changed = true;
                    }
                    self.expr_opt(&mut ie.expr);
                }
            }
            self.expr_opt(&mut infer.where_clause);
        }
        self.set_list(&mut oc.target_list, target.table);
        self.expr_opt(&mut oc.where_clause);
        self.levels.pop();
    }

    fn update(&mut self, s: &mut UpdateStmt) {
        let ctes = self.ctes.len();
        self.with(&mut s.with_clause);
        let Some(rv) = &mut s.relation else { return };
        let entry = self.table_ref(rv, false);
        let table = entry.table;
        self.levels.push(Level {
            entries: vec![entry.clone()],
            merged_columns: false,
        });
        for item in &mut s.from_clause {
            self.range_item(item);
        }
        self.set_list(&mut s.target_list, table);
        self.expr_opt(&mut s.where_clause);
        let level = self.levels.pop().unwrap_or_default();
        self.returning(&mut s.returning_clause, level.entries);
        self.ctes.truncate(ctes);
    }

    fn delete(&mut self, s: &mut DeleteStmt) {
        let ctes = self.ctes.len();
        self.with(&mut s.with_clause);
        let Some(rv) = &mut s.relation else { return };
        let entry = self.table_ref(rv, false);
        self.levels.push(Level {
            entries: vec![entry],
            merged_columns: false,
        });
        for item in &mut s.using_clause {
            self.range_item(item);
        }
        self.expr_opt(&mut s.where_clause);
        let level = self.levels.pop().unwrap_or_default();
        self.returning(&mut s.returning_clause, level.entries);
        self.ctes.truncate(ctes);
    }

    /// `SET col = expr, ...` of UPDATE and ON CONFLICT DO UPDATE.
    fn set_list(&mut self, list: &mut [Node], table: Option<usize>) {
        for node in list {
            if let Some(NodeEnum::ResTarget(rt)) = &mut node.node {
                self.rename_target(rt, table);
                self.exprs(&mut rt.indirection);
                self.expr_opt(&mut rt.val);
            }
        }
    }

    fn rename_target(&mut self, rt: &mut ResTarget, table: Option<usize>) {
        if let Some(new) = self.renamed_column(table, &rt.name) {
            rt.name = new.to_owned();
            self.changed = true;
        }
    }

    /// RETURNING sees the target (also as `old` and `new`) and the FROM or
    /// USING items.
    fn returning(&mut self, clause: &mut Option<ReturningClause>, entries: Vec<Entry>) {
        let Some(rc) = clause else { return };
        // `old` and `new` name the target but are not FROM items, so they
        // sit one level out, where `*` does not reach.
        let pseudo = entries
            .first()
            .map(|target| {
                ["old", "new"]
                    .into_iter()
                    .filter(|n| !entries.iter().any(|e| e.refname == *n))
                    .map(|n| Entry {
                        refname: n.into(),
                        schema: None,
                        new_ref: None,
                        ..target.clone()
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.levels.push(Level {
            entries: pseudo,
            merged_columns: false,
        });
        self.levels.push(Level {
            entries,
            merged_columns: false,
        });
        self.target_list(&mut rc.exprs, true);
        self.levels.pop();
        self.levels.pop();
    }

    // ---- target lists -----------------------------------------------------

    fn target_list(&mut self, list: &mut Vec<Node>, names_matter: bool) {
        let mut out = Vec::with_capacity(list.len());
        for mut node in list.drain(..) {
            if let Some(NodeEnum::ResTarget(rt)) = &mut node.node {
                if let Some(expanded) = self.star(rt, names_matter) {
                    out.extend(expanded);
                    continue;
                }
                let before = last_field(&rt.val);
                self.expr_opt(&mut rt.val);
                if rt.name.is_empty() {
                    if let Some(before) = before {
                        if last_field(&rt.val).as_ref() != Some(&before) {
                            // The application reads the column by its old name.
                            rt.name = before;
                        }
                    }
                }
            } else {
                self.expr(&mut node);
            }
            out.push(node);
        }
        *list = out;
    }

    /// `*` or `t.*` over a table with renamed columns, expanded to an
    /// explicit list in the application's column order with renamed columns
    /// aliased back. `None`: nothing to expand.
    fn star(&mut self, rt: &ResTarget, names_matter: bool) -> Option<Vec<Node>> {
        let Some(NodeEnum::ColumnRef(cr)) = rt.val.as_deref().and_then(|v| v.node.as_ref()) else {
            return None;
        };
        if !cr.fields.last().is_some_and(is_star) {
            return None;
        }
        let level = self.levels.last()?;
        let entries: Vec<Entry> = match cr.fields.len() {
            1 => {
                if level.entries.iter().any(|e| self.has_column_renames(e)) && level.merged_columns
                {
                    self.refuse(
                        "* over a join with USING, NATURAL or an alias, with renamed columns"
                            .into(),
                    );
                    return None;
                }
                level.entries.clone()
            }
            2 | 3 => {
                let q = string(&cr.fields[cr.fields.len() - 2])?;
                vec![self.find(q)?.clone()]
            }
            _ => return None,
        };
        if !entries.iter().any(|e| self.has_column_renames(e)) {
            return None;
        }
        let mut out = Vec::new();
        for e in &entries {
            let qual = e
                .new_ref
                .as_ref()
                .map_or_else(|| e.refname.clone(), |(_, n)| n.clone());
            if !self.has_column_renames(e) {
                out.push(res_target("", column_ref(&[Some(&qual), None])));
                continue;
            }
            let Cols::Known(cols) = &e.cols else {
                if names_matter {
                    self.refuse(format!(
                        "* over {} needs the catalog to keep the application's column names",
                        e.refname
                    ));
                }
                return None;
            };
            for c in cols {
                match self.renamed_column(e.table, c) {
                    Some(new) => out.push(res_target(c, column_ref(&[Some(&qual), Some(new)]))),
                    None => out.push(res_target("", column_ref(&[Some(&qual), Some(c)]))),
                }
            }
        }
        self.changed = true;
        Some(out)
    }

    // ---- expressions ------------------------------------------------------

    fn exprs(&mut self, nodes: &mut [Node]) {
        for n in nodes {
            self.expr(n);
        }
    }

    fn expr_opt(&mut self, node: &mut Option<Box<Node>>) {
        if let Some(n) = node {
            self.expr(n);
        }
    }

    fn expr(&mut self, node: &mut Node) {
        use NodeEnum as N;
        let Some(n) = &mut node.node else { return };
        match n {
            N::ColumnRef(c) => self.column_ref(c),
            N::AConst(_)
            | N::ParamRef(_)
            | N::SqlvalueFunction(_)
            | N::SetToDefault(_)
            | N::AStar(_)
            | N::String(_)
            | N::Integer(_)
            | N::Float(_)
            | N::Boolean(_)
            | N::BitString(_)
            | N::TypeName(_)
            | N::CurrentOfExpr(_) => {}
            N::AExpr(e) => {
                self.expr_opt(&mut e.lexpr);
                self.expr_opt(&mut e.rexpr);
            }
            N::BoolExpr(e) => self.exprs(&mut e.args),
            N::NullTest(e) => self.expr_opt(&mut e.arg),
            N::BooleanTest(e) => self.expr_opt(&mut e.arg),
            N::TypeCast(e) => self.expr_opt(&mut e.arg),
            N::CollateClause(e) => self.expr_opt(&mut e.arg),
            N::NamedArgExpr(e) => self.expr_opt(&mut e.arg),
            N::FuncCall(f) => {
                self.exprs(&mut f.args);
                self.exprs(&mut f.agg_order);
                self.expr_opt(&mut f.agg_filter);
                if let Some(w) = f.over.as_deref_mut() {
                    self.window(w);
                }
            }
            N::SubLink(s) => {
                self.expr_opt(&mut s.testexpr);
                let names_matter = s.sub_link_type != SubLinkType::ExistsSublink as i32
                    && s.sub_link_type != SubLinkType::ExprSublink as i32
                    && s.sub_link_type != SubLinkType::AnySublink as i32
                    && s.sub_link_type != SubLinkType::AllSublink as i32;
                match s.subselect.as_deref_mut().and_then(|n| n.node.as_mut()) {
                    Some(N::SelectStmt(sel)) => self.select(sel, names_matter),
                    Some(other) => self.unknown(other, "a subquery"),
                    None => {}
                }
            }
            N::SelectStmt(sel) => self.select(sel, false),
            N::CaseExpr(c) => {
                self.expr_opt(&mut c.arg);
                self.exprs(&mut c.args);
                self.expr_opt(&mut c.defresult);
            }
            N::CaseWhen(w) => {
                self.expr_opt(&mut w.expr);
                self.expr_opt(&mut w.result);
            }
            N::CoalesceExpr(c) => self.exprs(&mut c.args),
            N::MinMaxExpr(c) => self.exprs(&mut c.args),
            N::RowExpr(r) => self.exprs(&mut r.args),
            N::AArrayExpr(a) => self.exprs(&mut a.elements),
            N::List(l) => self.exprs(&mut l.items),
            N::GroupingSet(g) => self.exprs(&mut g.content),
            N::AIndirection(i) => {
                self.expr_opt(&mut i.arg);
                self.exprs(&mut i.indirection);
            }
            N::AIndices(i) => {
                self.expr_opt(&mut i.lidx);
                self.expr_opt(&mut i.uidx);
            }
            N::SortBy(s) => self.sort_by(s),
            N::ResTarget(r) => {
                self.exprs(&mut r.indirection);
                self.expr_opt(&mut r.val);
            }
            N::MultiAssignRef(m) => self.expr_opt(&mut m.source),
            other => self.unknown(other, "this expression"),
        }
    }

    fn sort_by(&mut self, s: &mut SortBy) {
        self.expr_opt(&mut s.node);
    }

    fn window(&mut self, w: &mut WindowDef) {
        self.exprs(&mut w.partition_clause);
        self.exprs(&mut w.order_clause);
        self.expr_opt(&mut w.start_offset);
        self.expr_opt(&mut w.end_offset);
    }

    /// The innermost FROM item with reference name `q`.
    fn find(&self, q: &str) -> Option<&Entry> {
        self.levels
            .iter()
            .rev()
            .find_map(|l| l.entries.iter().find(|e| e.refname == q))
    }

    fn column_ref(&mut self, cr: &mut ColumnRef) {
        match cr.fields.len() {
            1 => {
                if let Some(c) = string(&cr.fields[0]).map(str::to_owned) {
                    self.unqualified(cr, &c);
                }
            }
            2 | 3 => {
                let n = cr.fields.len();
                let Some(q) = string(&cr.fields[n - 2]).map(str::to_owned) else {
                    return;
                };
                let schema = (n == 3)
                    .then(|| string(&cr.fields[0]).map(str::to_owned))
                    .flatten();
                let entry = self
                    .levels
                    .iter()
                    .rev()
                    .find_map(|l| {
                        l.entries
                            .iter()
                            .find(|e| e.refname == q && (schema.is_none() || e.schema == schema))
                    })
                    .cloned();
                let Some(entry) = entry else { return };
                if let Some((new_schema, new_name)) = &entry.new_ref {
                    cr.fields[n - 2] = string_node(new_name);
                    if n == 3 {
                        if let Some(s) = new_schema {
                            cr.fields[0] = string_node(s);
                        }
                    }
                    self.changed = true;
                }
                let last = &mut cr.fields[n - 1];
                self.rename_column_name(last, entry.table);
            }
            _ => {}
        }
    }

    fn unqualified(&mut self, cr: &mut ColumnRef, c: &str) {
        let names = self.names;
        let renamed = |t: usize, col: &str| names.tables[t].renamed_column(col).is_some();
        // `users` alone, with a renamed `users` in scope and no item known to
        // have such a column, is that item's whole row (a table named like a
        // column of another is rare enough to prefer the row).
        if let Some((_, new)) = self.find(c).and_then(|e| e.new_ref.clone()) {
            let column = self
                .levels
                .iter()
                .flat_map(|l| &l.entries)
                .any(|e| has(e, c, renamed) == Has::Yes);
            if !column {
                cr.fields[0] = string_node(&new);
                self.changed = true;
                return;
            }
        }
        for depth in (0..self.levels.len()).rev() {
            let level = &self.levels[depth];
            let yes: Vec<&Entry> = level
                .entries
                .iter()
                .filter(|e| has(e, c, renamed) == Has::Yes)
                .collect();
            if let Some(first) = yes.first() {
                let table = first.table;
                if yes.len() > 1 && yes.iter().any(|e| e.table.is_some_and(|t| renamed(t, c))) {
                    self.refuse(format!(
                        "column {c} could belong to {} or {}; qualify it",
                        yes[0].refname, yes[1].refname
                    ));
                    return;
                }
                self.rename_column_name(&mut cr.fields[0], table);
                return;
            }
            let maybe = level
                .entries
                .iter()
                .find(|e| has(e, c, renamed) == Has::Maybe);
            if let Some(maybe) = maybe {
                let outer = self.levels[..depth]
                    .iter()
                    .flat_map(|l| &l.entries)
                    .find(|e| e.table.is_some_and(|t| renamed(t, c)));
                if let Some(outer) = outer {
                    self.refuse(format!(
                        "column {c} could belong to {} or to {}, where it is renamed; qualify it",
                        maybe.refname, outer.refname
                    ));
                }
                return;
            }
        }
    }
}

fn with_alias_columns(cols: Cols, alias: &Option<Alias>) -> Cols {
    let Some(alias) = alias else { return cols };
    if alias.colnames.is_empty() {
        return cols;
    }
    let renamed: Vec<String> = alias
        .colnames
        .iter()
        .filter_map(string)
        .map(str::to_owned)
        .collect();
    match cols {
        Cols::Known(mut c) => {
            for (i, n) in renamed.into_iter().enumerate() {
                if let Some(slot) = c.get_mut(i) {
                    *slot = n;
                }
            }
            Cols::Known(c)
        }
        Cols::Unknown => Cols::Unknown,
    }
}

fn cte_alias_cols(cte: &CommonTableExpr) -> Cols {
    if cte.aliascolnames.is_empty() {
        return Cols::Unknown;
    }
    Cols::Known(
        cte.aliascolnames
            .iter()
            .filter_map(string)
            .map(str::to_owned)
            .collect(),
    )
}

fn returning_names(r: &Option<ReturningClause>) -> Cols {
    r.as_ref()
        .map_or(Cols::Known(Vec::new()), |r| target_names(&r.exprs))
}

fn column_ref(fields: &[Option<&str>]) -> Node {
    Node {
        node: Some(NodeEnum::ColumnRef(ColumnRef {
            fields: fields
                .iter()
                .map(|f| match f {
                    Some(s) => string_node(s),
                    None => Node {
                        node: Some(NodeEnum::AStar(AStar {})),
                    },
                })
                .collect(),
            location: -1,
        })),
    }
}

fn res_target(name: &str, val: Node) -> Node {
    Node {
        node: Some(NodeEnum::ResTarget(Box::new(ResTarget {
            name: name.to_owned(),
            indirection: Vec::new(),
            val: Some(Box::new(val)),
            location: -1,
        }))),
    }
}
