//! Reading a backend's catalog: its search_path and the tables and columns
//! of every user schema. The rewriter needs it to check a rewrite map
//! against what really exists and to expand `SELECT *` over tables with
//! renamed columns into the application's column names and order.
//!
//! The catalog is read with one simple Query over a connection of
//! pgshift's own (see [`crate::backend::oneshot`]).

use std::time::Duration;

use bytes::BytesMut;
use pgshift_protocol::backend::{tag, DataRow};
use pgshift_protocol::encode;
use pgshift_rules::config::{Backend, BackendId, Config};
use pgshift_rules::rewrite::Catalog;

use crate::backend::oneshot::{ask, AskError, Asking};

/// More columns than any real schema has; a catalog beyond it is refused
/// rather than read into memory without bound.
const MAX_COLUMNS: usize = 2_000_000;

/// Reading the catalog is part of a reload; a backend that does not answer
/// within this is reported and the reload goes on without its catalog.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

const SEARCH_PATH_SQL: &str = "SELECT s FROM unnest(pg_catalog.current_schemas(false)) AS s";
const COLUMNS_SQL: &str = "SELECT n.nspname, c.relname, a.attname \
     FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
       AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_' \
     ORDER BY n.nspname, c.relname, a.attnum";

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{0}")]
    Connect(#[from] crate::backend::ConnectError),
    #[error("reading the catalog of {backend}: {reason}")]
    Read { backend: BackendId, reason: String },
    #[error("reading the catalog of {0} timed out")]
    Timeout(BackendId),
    #[error("cannot start an IO runtime: {0}")]
    Runtime(String),
}

/// Reads `id`'s catalog, giving up after `timeout` in all.
pub async fn fetch(
    id: BackendId,
    target: &Backend,
    tls: Option<&tokio_rustls::TlsConnector>,
    max_message_size: usize,
    timeout: Duration,
) -> Result<Catalog, CatalogError> {
    let mut request = BytesMut::new();
    encode::query(&mut request, &format!("{SEARCH_PATH_SQL}; {COLUMNS_SQL}"));
    let mut reader = CatalogReader::default();
    let how = Asking {
        id,
        target,
        tls,
        max_message_size,
        timeout,
        application_name: "pgshift catalog",
    };
    let asked = ask(&how, request, |frame| match frame.tag() {
        tag::ROW_DESCRIPTION => {
            reader.next_result();
            Ok(())
        }
        tag::DATA_ROW => reader.row(frame.body()),
        _ => Ok(()),
    })
    .await;
    match asked {
        Ok(()) => Ok(reader.finish()),
        Err(AskError::Connect(e)) => Err(CatalogError::Connect(e)),
        Err(AskError::Answer(reason)) => Err(CatalogError::Read {
            backend: id,
            reason,
        }),
        Err(AskError::Timeout(_)) => Err(CatalogError::Timeout(id)),
    }
}

/// Reads both backends' catalogs at once. A backend that cannot be read
/// gives its error in its place.
pub async fn fetch_both(
    config: &Config,
    tls: Option<&tokio_rustls::TlsConnector>,
    timeout: Duration,
) -> [Result<Catalog, CatalogError>; 2] {
    let max = config.limits.max_message_size;
    let (old, new) = tokio::join!(
        fetch(
            BackendId::Old,
            config.backends.get(BackendId::Old),
            tls,
            max,
            timeout
        ),
        fetch(
            BackendId::New,
            config.backends.get(BackendId::New),
            tls,
            max,
            timeout
        ),
    );
    [old, new]
}

/// Rows of the two result sets, the search path then the columns, turned
/// into a [`Catalog`].
#[derive(Default)]
struct CatalogReader {
    result: usize,
    search_path: Vec<String>,
    /// (schema, table, columns) with columns in attnum order.
    tables: Vec<(String, String, Vec<String>)>,
    columns: usize,
}

impl CatalogReader {
    fn next_result(&mut self) {
        self.result += 1;
    }

    fn row(&mut self, body: &[u8]) -> Result<(), String> {
        let row = DataRow::parse(body).map_err(|e| e.to_string())?;
        let mut values = Vec::with_capacity(3);
        for v in row.columns() {
            let v = v.map_err(|e| e.to_string())?.unwrap_or_default();
            values.push(String::from_utf8_lossy(v).into_owned());
        }
        match (self.result, values.as_mut_slice()) {
            (1, [schema]) => self.search_path.push(std::mem::take(schema)),
            (2, [schema, table, column]) => {
                self.columns += 1;
                if self.columns > MAX_COLUMNS {
                    return Err(format!("more than {MAX_COLUMNS} columns"));
                }
                match self.tables.last_mut() {
                    Some((s, t, cols)) if s == schema && t == table => {
                        cols.push(std::mem::take(column))
                    }
                    _ => self.tables.push((
                        std::mem::take(schema),
                        std::mem::take(table),
                        vec![std::mem::take(column)],
                    )),
                }
            }
            _ => return Err("unexpected row shape".into()),
        }
        Ok(())
    }

    fn finish(self) -> Catalog {
        let mut catalog = Catalog::new(self.search_path);
        for (schema, table, columns) in self.tables {
            catalog.add_table(&schema, &table, columns);
        }
        catalog
    }
}

#[cfg(test)]
mod tests {
    use super::CatalogReader;

    fn data_row(values: &[&str]) -> Vec<u8> {
        let mut b = (values.len() as i16).to_be_bytes().to_vec();
        for v in values {
            b.extend_from_slice(&(v.len() as i32).to_be_bytes());
            b.extend_from_slice(v.as_bytes());
        }
        b
    }

    #[test]
    fn rows_group_into_tables_in_order() {
        let mut r = CatalogReader::default();
        r.next_result();
        r.row(&data_row(&["public"])).unwrap();
        r.next_result();
        for (s, t, c) in [
            ("public", "accounts", "id"),
            ("public", "accounts", "email_address"),
            ("sales", "orders", "id"),
        ] {
            r.row(&data_row(&[s, t, c])).unwrap();
        }
        assert_eq!(r.search_path, ["public"]);
        assert_eq!(r.tables.len(), 2);
        assert_eq!(r.tables[0].2, ["id", "email_address"]);
        assert!(
            r.row(&data_row(&["x"])).is_err(),
            "a search-path row after the columns"
        );
    }
}
