//! The rename map and catalogs the rewrite tests share.

#![allow(dead_code)]

use std::sync::Arc;

use pgshift_rules::{parse_config, BackendId, Catalog, RewriteMap, Rewriter};

pub const CONFIG: &str = r#"
backends:
  old: { url: "postgres://app@old-db/app" }
  new: { url: "postgres://app@new-db/app" }
auth: { method: trust }
rewrite:
  new:
    tables:
      users: accounts
      public.orders: sales.orders
      '"LegacyItems"': items
      auth_user: accounts_user
    columns:
      users.email: email_address
      users.name: full_name
      orders.total: amount
      '"LegacyItems"."SKU"': sku
      auth_user.date_joined: joined_at
"#;

pub fn map() -> RewriteMap {
    let config = parse_config(CONFIG, &|_| None).expect("test config parses");
    config.rewrite.get(BackendId::New).clone()
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// The application's (old) database.
pub fn source() -> Catalog {
    let mut c = Catalog::new(strings(&["public"]));
    c.add_table(
        "public",
        "users",
        strings(&["id", "email", "name", "created_at"]),
    );
    c.add_table(
        "public",
        "orders",
        strings(&["id", "user_id", "total", "status", "created_at"]),
    );
    c.add_table("public", "LegacyItems", strings(&["id", "SKU", "order_id"]));
    c.add_table(
        "public",
        "auth_user",
        strings(&["id", "username", "email", "date_joined"]),
    );
    c.add_table("public", "products", strings(&["id", "name", "price"]));
    c
}

/// The new database.
pub fn target() -> Catalog {
    let mut c = Catalog::new(strings(&["public"]));
    c.add_table(
        "public",
        "accounts",
        strings(&[
            "id",
            "email_address",
            "full_name",
            "created_at",
            "tenant_id",
        ]),
    );
    c.add_table(
        "sales",
        "orders",
        strings(&["id", "user_id", "amount", "status", "created_at"]),
    );
    c.add_table("public", "items", strings(&["id", "sku", "order_id"]));
    c.add_table(
        "public",
        "accounts_user",
        strings(&["id", "username", "email", "joined_at"]),
    );
    c.add_table("public", "products", strings(&["id", "name", "price"]));
    c
}

pub fn rewriter(with_catalog: bool) -> Rewriter {
    let (t, s) = if with_catalog {
        (Some(Arc::new(target())), Some(Arc::new(source())))
    } else {
        (None, None)
    };
    Rewriter::new(&map(), t, s, 1000)
}
