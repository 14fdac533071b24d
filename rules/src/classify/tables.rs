//! The walk over one statement's parse tree: which relations it touches and
//! whether anything inside it writes (a data-modifying CTE, a row lock, a
//! write-function call).
//!
//! CTE names are scoped the way Postgres resolves them: a CTE is visible in
//! the statement that defines it and everything nested inside, and a CTE body
//! sees only its earlier siblings unless the WITH is RECURSIVE. So in
//! `WITH users AS (SELECT * FROM users) SELECT * FROM users` the inner
//! `users` is the table and the outer one is the CTE. DML targets are never
//! CTEs. Node types the walk does not know are searched generically by
//! [`super::reflect`], so an exotic construct can cost precision in CTE
//! scoping but never hide a table.

use pg_query::protobuf::{
    CommonTableExpr, DeleteStmt, InsertStmt, IntoClause, MergeStmt, ObjectType, RangeVar,
    ReturningClause, SelectStmt, UpdateStmt, WithClause,
};
use pg_query::{Node, NodeEnum};

use super::functions::WriteFunctions;
use super::reflect;
use crate::config::TableName;

/// What the walk found besides tables.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Effects {
    /// An INSERT/UPDATE/DELETE/MERGE somewhere (e.g. in a CTE).
    pub modifies_rows: bool,
    /// FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE at any level.
    pub locks_rows: bool,
    /// A call to one of [`WriteFunctions`].
    pub calls_write_function: bool,
    /// `SELECT ... INTO new_table`.
    pub select_into: bool,
}

impl Effects {
    /// Whether a query that would otherwise be a read is a write.
    pub(super) fn writes(self) -> bool {
        self.modifies_rows || self.locks_rows || self.calls_write_function
    }
}

pub(super) struct Walk<'a> {
    write_functions: &'a WriteFunctions,
    /// CTE names visible at the current point of the walk.
    visible_ctes: Vec<&'a str>,
    pub(super) tables: Vec<TableName>,
    pub(super) effects: Effects,
}

impl<'a> Walk<'a> {
    /// Walks one top-level statement.
    pub(super) fn run(stmt: &'a NodeEnum, write_functions: &'a WriteFunctions) -> Walk<'a> {
        let mut walk = Walk {
            write_functions,
            visible_ctes: Vec::new(),
            tables: Vec::new(),
            effects: Effects::default(),
        };
        walk.node_enum(stmt);
        walk
    }

    pub(super) fn visible_ctes(&self) -> &[&'a str] {
        &self.visible_ctes
    }

    pub(super) fn add_table(&mut self, schema: &str, name: &str) {
        if name.is_empty() {
            return;
        }
        let schema = (!schema.is_empty()).then_some(schema);
        let known = self
            .tables
            .iter()
            .any(|t| t.name == name && t.schema.as_deref() == schema);
        if !known {
            self.tables.push(TableName::new(schema, name));
        }
    }

    pub(super) fn function_called(&mut self, name: &str) {
        if self.write_functions.contains(name) {
            self.effects.calls_write_function = true;
        }
    }

    fn node(&mut self, node: &'a Node) {
        if let Some(n) = &node.node {
            self.node_enum(n);
        }
    }

    fn nodes(&mut self, nodes: &'a [Node]) {
        for n in nodes {
            self.node(n);
        }
    }

    fn opt(&mut self, node: &'a Option<Box<Node>>) {
        if let Some(n) = node {
            self.node(n);
        }
    }

    fn node_enum(&mut self, node: &'a NodeEnum) {
        use NodeEnum as N;
        match node {
            N::SelectStmt(s) => self.select(s),
            N::InsertStmt(s) => self.insert(s),
            N::UpdateStmt(s) => self.update(s),
            N::DeleteStmt(s) => self.delete(s),
            N::MergeStmt(s) => self.merge(s),
            N::RangeVar(r) => self.relation(r),

            // FROM items and expressions that can hold subqueries.
            N::JoinExpr(j) => {
                self.opt(&j.larg);
                self.opt(&j.rarg);
                self.opt(&j.quals);
            }
            N::RangeSubselect(r) => self.opt(&r.subquery),
            N::RangeFunction(r) => self.nodes(&r.functions),
            N::FuncCall(f) => {
                if let Some(NodeEnum::String(name)) =
                    f.funcname.last().and_then(|n| n.node.as_ref())
                {
                    self.function_called(&name.sval);
                }
                self.nodes(&f.args);
                self.nodes(&f.agg_order);
                self.opt(&f.agg_filter);
                if let Some(w) = &f.over {
                    self.nodes(&w.partition_clause);
                    self.nodes(&w.order_clause);
                }
            }
            N::SubLink(s) => {
                self.opt(&s.testexpr);
                self.opt(&s.subselect);
            }
            N::AExpr(e) => {
                self.opt(&e.lexpr);
                self.opt(&e.rexpr);
            }
            N::BoolExpr(e) => self.nodes(&e.args),
            N::ResTarget(r) => {
                self.nodes(&r.indirection);
                self.opt(&r.val);
            }
            N::TypeCast(c) => self.opt(&c.arg),
            N::List(l) => self.nodes(&l.items),
            N::SortBy(s) => self.opt(&s.node),
            N::CaseExpr(c) => {
                self.opt(&c.arg);
                self.nodes(&c.args);
                self.opt(&c.defresult);
            }
            N::CaseWhen(w) => {
                self.opt(&w.expr);
                self.opt(&w.result);
            }
            N::CoalesceExpr(c) => self.nodes(&c.args),
            N::MinMaxExpr(m) => self.nodes(&m.args),
            N::NullTest(t) => self.opt(&t.arg),
            N::BooleanTest(t) => self.opt(&t.arg),
            N::RowExpr(r) => self.nodes(&r.args),
            N::AArrayExpr(a) => self.nodes(&a.elements),
            N::AIndirection(a) => {
                self.opt(&a.arg);
                self.nodes(&a.indirection);
            }
            N::AIndices(a) => {
                self.opt(&a.lidx);
                self.opt(&a.uidx);
            }
            N::NamedArgExpr(a) => self.opt(&a.arg),
            N::CollateClause(c) => self.opt(&c.arg),
            N::MultiAssignRef(m) => self.opt(&m.source),
            N::GroupingSet(g) => self.nodes(&g.content),
            N::WindowDef(w) => {
                self.nodes(&w.partition_clause);
                self.nodes(&w.order_clause);
            }
            N::MergeWhenClause(m) => {
                self.opt(&m.condition);
                self.nodes(&m.target_list);
                self.nodes(&m.values);
            }
            // FOR UPDATE OF a, b names FROM items by alias, not tables.
            N::LockingClause(_) => self.effects.locks_rows = true,
            N::CommonTableExpr(c) => self.opt(&c.ctequery),

            // Leaves: nothing below can name a relation.
            N::ColumnRef(_)
            | N::ParamRef(_)
            | N::AConst(_)
            | N::AStar(_)
            | N::String(_)
            | N::Integer(_)
            | N::Float(_)
            | N::Boolean(_)
            | N::BitString(_)
            | N::SqlvalueFunction(_)
            | N::SetToDefault(_)
            | N::TypeName(_)
            | N::Alias(_)
            | N::DefElem(_) => {}

            // Statements that wrap a query or name relations in lists.
            N::ExplainStmt(e) => self.opt(&e.query),
            N::PrepareStmt(p) => self.opt(&p.query),
            N::DeclareCursorStmt(d) => self.opt(&d.query),
            N::CopyStmt(c) => {
                if let Some(r) = &c.relation {
                    self.target(r);
                }
                self.opt(&c.query);
                self.opt(&c.where_clause);
            }
            N::CreateTableAsStmt(c) => {
                if let Some(rel) = c.into.as_ref().and_then(|i| i.rel.as_ref()) {
                    self.target(rel);
                }
                self.opt(&c.query);
            }
            N::ViewStmt(v) => {
                if let Some(r) = &v.view {
                    self.target(r);
                }
                self.opt(&v.query);
            }
            N::TruncateStmt(t) => self.nodes(&t.relations),
            N::LockStmt(l) => self.nodes(&l.relations),
            N::RefreshMatViewStmt(r) => {
                if let Some(r) = &r.relation {
                    self.target(r);
                }
            }
            N::DropStmt(d) => {
                if is_relation_object(d.remove_type) {
                    for object in &d.objects {
                        self.qualified_name(object, false);
                    }
                }
            }
            N::CommentStmt(c) => self.object_of(c.objtype, c.object.as_deref()),
            N::SecLabelStmt(s) => self.object_of(s.objtype, s.object.as_deref()),

            other => reflect::walk(self, other),
        }
    }

    /// Runs `body` with the CTEs of `with` in scope, after walking their
    /// bodies with the visibility Postgres gives them.
    fn scoped(&mut self, with: Option<&'a WithClause>, body: impl FnOnce(&mut Self)) {
        let mark = self.visible_ctes.len();
        if let Some(with) = with {
            let ctes = || {
                with.ctes.iter().filter_map(|n| match &n.node {
                    Some(NodeEnum::CommonTableExpr(c)) => Some(&**c),
                    _ => None,
                })
            };
            if with.recursive {
                self.visible_ctes.extend(ctes().map(|c| c.ctename.as_str()));
                ctes().for_each(|c: &'a CommonTableExpr| self.opt(&c.ctequery));
            } else {
                for c in ctes() {
                    self.opt(&c.ctequery);
                    self.visible_ctes.push(&c.ctename);
                }
            }
        }
        body(self);
        self.visible_ctes.truncate(mark);
    }

    fn select(&mut self, s: &'a SelectStmt) {
        self.scoped(s.with_clause.as_ref(), |w| {
            if let Some(into) = &s.into_clause {
                w.select_into(into);
            }
            w.nodes(&s.distinct_clause);
            w.nodes(&s.target_list);
            w.nodes(&s.from_clause);
            w.opt(&s.where_clause);
            w.nodes(&s.group_clause);
            w.opt(&s.having_clause);
            w.nodes(&s.window_clause);
            w.nodes(&s.values_lists);
            w.nodes(&s.sort_clause);
            w.opt(&s.limit_offset);
            w.opt(&s.limit_count);
            w.nodes(&s.locking_clause);
            if let Some(l) = &s.larg {
                w.select(l);
            }
            if let Some(r) = &s.rarg {
                w.select(r);
            }
        });
    }

    fn select_into(&mut self, into: &'a IntoClause) {
        self.effects.select_into = true;
        if let Some(rel) = &into.rel {
            self.target(rel);
        }
    }

    fn insert(&mut self, s: &'a InsertStmt) {
        self.effects.modifies_rows = true;
        self.scoped(s.with_clause.as_ref(), |w| {
            if let Some(r) = &s.relation {
                w.target(r);
            }
            w.opt(&s.select_stmt);
            if let Some(c) = &s.on_conflict_clause {
                if let Some(infer) = &c.infer {
                    w.nodes(&infer.index_elems);
                    w.opt(&infer.where_clause);
                }
                w.nodes(&c.target_list);
                w.opt(&c.where_clause);
            }
            w.returning(s.returning_clause.as_ref());
        });
    }

    fn update(&mut self, s: &'a UpdateStmt) {
        self.effects.modifies_rows = true;
        self.scoped(s.with_clause.as_ref(), |w| {
            if let Some(r) = &s.relation {
                w.target(r);
            }
            w.nodes(&s.target_list);
            w.nodes(&s.from_clause);
            w.opt(&s.where_clause);
            w.returning(s.returning_clause.as_ref());
        });
    }

    fn delete(&mut self, s: &'a DeleteStmt) {
        self.effects.modifies_rows = true;
        self.scoped(s.with_clause.as_ref(), |w| {
            if let Some(r) = &s.relation {
                w.target(r);
            }
            w.nodes(&s.using_clause);
            w.opt(&s.where_clause);
            w.returning(s.returning_clause.as_ref());
        });
    }

    fn merge(&mut self, s: &'a MergeStmt) {
        self.effects.modifies_rows = true;
        self.scoped(s.with_clause.as_ref(), |w| {
            if let Some(r) = &s.relation {
                w.target(r);
            }
            w.opt(&s.source_relation);
            w.opt(&s.join_condition);
            w.nodes(&s.merge_when_clauses);
            w.returning(s.returning_clause.as_ref());
        });
    }

    fn returning(&mut self, r: Option<&'a ReturningClause>) {
        if let Some(r) = r {
            self.nodes(&r.exprs);
        }
    }

    /// A relation named where a CTE could also be meant (FROM, JOIN, ...).
    fn relation(&mut self, r: &'a RangeVar) {
        if r.schemaname.is_empty() && self.visible_ctes.contains(&r.relname.as_str()) {
            return;
        }
        self.add_table(&r.schemaname, &r.relname);
    }

    /// A relation that can only be a table: DML and DDL targets.
    fn target(&mut self, r: &'a RangeVar) {
        self.add_table(&r.schemaname, &r.relname);
    }

    /// `objects` of DROP/COMMENT/SECURITY LABEL: a List of String parts,
    /// `[schema.]name`, or for a column `[schema.]table.column`.
    fn qualified_name(&mut self, object: &'a Node, drop_last: bool) {
        let Some(NodeEnum::List(list)) = &object.node else {
            return;
        };
        let mut parts: Vec<&str> = list
            .items
            .iter()
            .filter_map(|n| match &n.node {
                Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
                _ => None,
            })
            .collect();
        if drop_last {
            parts.pop();
        }
        match parts.as_slice() {
            [name] => self.add_table("", name),
            [.., schema, name] => self.add_table(schema, name),
            [] => {}
        }
    }

    fn object_of(&mut self, objtype: i32, object: Option<&'a Node>) {
        let Some(object) = object else { return };
        if is_relation_object(objtype) {
            self.qualified_name(object, false);
        } else if objtype == ObjectType::ObjectColumn as i32 {
            self.qualified_name(object, true);
        }
    }
}

/// Object types that are relations (things [`TableName`] can name).
fn is_relation_object(objtype: i32) -> bool {
    use ObjectType as O;
    [
        O::ObjectTable,
        O::ObjectView,
        O::ObjectMatview,
        O::ObjectIndex,
        O::ObjectSequence,
        O::ObjectForeignTable,
    ]
    .iter()
    .any(|o| *o as i32 == objtype)
}
