//! The generic half of the tree walk: for node types [`super::tables`] does
//! not handle by name (most DDL, JSON and XML constructs, and anything a
//! future parser version adds), search the subtree through its serde form.
//!
//! pg_query's protobuf types all derive `Serialize`, so turning a subtree into
//! a `serde_json::Value` reaches every field of every node without listing
//! them, which is what makes the walk complete. It costs allocations, so it
//! is the fallback for rare nodes, not the main path.
//!
//! Nodes are recognised by their fields, not by a type tag: a message held
//! in a `Node` serialises as `{"RangeVar": {...}}`, but one held directly in
//! a typed field (`IndexStmt.relation`, `CallStmt.funccall`) is just its
//! fields. Within such a subtree CTE scoping is coarse: an unqualified name
//! matching a CTE visible outside or defined anywhere inside the subtree is
//! taken for the CTE.

use pg_query::NodeEnum;
use serde_json::{Map, Value};

use super::tables::Walk;

const DML: [&str; 4] = ["InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"];

pub(super) fn walk(w: &mut Walk<'_>, node: &NodeEnum) {
    // Serialising plain data structs cannot fail; if it ever did, the
    // statement would merely lose tables from this subtree.
    let Ok(value) = serde_json::to_value(node) else {
        return;
    };
    let mut ctes: Vec<String> = w.visible_ctes().iter().map(|s| (*s).to_owned()).collect();
    cte_names(&value, &mut ctes);
    search(w, &value, &ctes);
}

fn has(map: &Map<String, Value>, keys: &[&str]) -> bool {
    keys.iter().all(|k| map.contains_key(*k))
}

fn is_range_var(map: &Map<String, Value>) -> bool {
    has(map, &["schemaname", "relname", "inh", "relpersistence"])
}

fn is_func_call(map: &Map<String, Value>) -> bool {
    has(map, &["funcname", "args", "agg_star"])
}

fn is_locking_clause(map: &Map<String, Value>) -> bool {
    has(map, &["locked_rels", "strength"])
}

fn cte_names(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if has(map, &["ctename", "ctequery"]) {
                if let Some(name) = map.get("ctename").and_then(Value::as_str) {
                    out.push(name.to_owned());
                }
            }
            map.values().for_each(|v| cte_names(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| cte_names(v, out)),
        _ => {}
    }
}

fn search(w: &mut Walk<'_>, value: &Value, ctes: &[String]) {
    match value {
        Value::Object(map) if is_range_var(map) => range_var(w, map, ctes),
        // Its rels are FROM-item aliases, not tables.
        Value::Object(map) if is_locking_clause(map) => w.effects.locks_rows = true,
        Value::Object(map) => {
            if is_func_call(map) {
                if let Some(name) = last_name_part(map.get("funcname")) {
                    w.function_called(name);
                }
            }
            for (key, v) in map {
                if DML.contains(&key.as_str()) {
                    w.effects.modifies_rows = true;
                }
                search(w, v, ctes);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| search(w, v, ctes)),
        _ => {}
    }
}

fn range_var(w: &mut Walk<'_>, map: &Map<String, Value>, ctes: &[String]) {
    let field = |name| map.get(name).and_then(Value::as_str).unwrap_or("");
    let (schema, name) = (field("schemaname"), field("relname"));
    if schema.is_empty() && ctes.iter().any(|c| c == name) {
        return;
    }
    w.add_table(schema, name);
}

/// `funcname` is a list of `{"node": {"String": {"sval": ...}}}`.
fn last_name_part(funcname: Option<&Value>) -> Option<&str> {
    let last = funcname?.as_array()?.last()?.get("node")?;
    last.get("String")?.get("sval")?.as_str()
}
