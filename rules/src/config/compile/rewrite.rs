//! rewrite: per-backend renames and regex replacements (validated here,
//! applied by the rewriter).

use crate::config::backend::BackendId;
use crate::config::ident::{parse_identifier, parse_qualified, TableName};
use crate::config::model::{RewriteMap, Rewrites};
use crate::config::reader::{Ctx, Fields};

pub(super) fn rewrites(ctx: &mut Ctx<'_>, top: &Fields<'_>) -> Rewrites {
    let f = top.child(ctx, "rewrite", &["old", "new"]);
    Rewrites {
        old: rewrite_map(ctx, &f, BackendId::Old),
        new: rewrite_map(ctx, &f, BackendId::New),
    }
}

fn rewrite_map(ctx: &mut Ctx<'_>, section: &Fields<'_>, id: BackendId) -> RewriteMap {
    let f = section.child(ctx, id.as_str(), &["tables", "columns", "replace"]);
    let mut map = RewriteMap::default();

    if let Some(field) = f.get("tables") {
        for (key, value) in ctx.entries(&field) {
            let from = TableName::parse(&key)
                .map_err(|e| ctx.error_at(&value, format!("invalid table name in key: {e}")))
                .ok();
            let to = ctx.text(&value).and_then(|t| {
                TableName::parse(&t)
                    .map_err(|e| ctx.error_at(&value, format!("invalid table name: {e}")))
                    .ok()
            });
            if let (Some(from), Some(to)) = (from, to) {
                if map.tables.iter().any(|(f, _)| *f == from) {
                    ctx.error_at(&value, format!("table {from} is renamed twice"));
                } else {
                    map.tables.push((from, to));
                }
            }
        }
    }

    if let Some(field) = f.get("columns") {
        for (key, value) in ctx.entries(&field) {
            let from = column_key(&key)
                .map_err(|e| ctx.error_at(&value, format!("invalid key: {e}")))
                .ok();
            let to = ctx.text(&value).and_then(|t| {
                parse_identifier(&t)
                    .map_err(|e| ctx.error_at(&value, format!("invalid column name: {e}")))
                    .ok()
            });
            if let (Some((table, column)), Some(to)) = (from, to) {
                if map
                    .columns
                    .iter()
                    .any(|(t, c, _)| *t == table && *c == column)
                {
                    ctx.error_at(&value, format!("column {table}.{column} is renamed twice"));
                } else {
                    map.columns.push((table, column, to));
                }
            }
        }
    }

    if let Some(field) = f.get("replace") {
        for item in ctx.list(&field) {
            let r = Fields::open(
                ctx,
                Some(item.node),
                item.path.clone(),
                &["pattern", "with"],
            );
            let pattern = r
                .require(ctx, "pattern")
                .and_then(|x| super::regex(ctx, &x));
            let with = r.require(ctx, "with").and_then(|x| ctx.text(&x));
            if let (Some(pattern), Some(with)) = (pattern, with) {
                map.replace.push((pattern, with));
            }
        }
    }
    map
}

/// `table.column` or `schema.table.column`: the last part is the column.
fn column_key(key: &str) -> Result<(TableName, String), String> {
    let mut parts = parse_qualified(key).map_err(|e| e.to_string())?;
    let column = match parts.len() {
        2 | 3 => parts.pop().unwrap_or_default(),
        _ => return Err("expected table.column or schema.table.column".into()),
    };
    let name = parts.pop().unwrap_or_default();
    Ok((
        TableName {
            schema: parts.pop(),
            name,
        },
        column,
    ))
}

#[cfg(test)]
mod tests {
    use super::column_key;
    use crate::config::ident::TableName;

    #[test]
    fn column_keys() {
        assert_eq!(
            column_key("users.Email").unwrap(),
            (TableName::new(None, "users"), "email".to_owned())
        );
        assert_eq!(
            column_key("s.\"T\".\"a.b\"").unwrap(),
            (TableName::new(Some("s"), "T"), "a.b".to_owned())
        );
        assert!(column_key("email").is_err());
        assert!(column_key("a.b.c.d").is_err());
    }
}
