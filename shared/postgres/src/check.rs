//! Start-up checks of each route's table, so a mistake fails the deployment at init with one
//! line naming route and column instead of refusing every row later.
//!
//! Checked: the table exists; every mapped column exists in a type the route's values fit
//! (`auto_migrate = "add-columns"` adds a missing one, nullable; nothing is dropped or
//! retyped); a numeric column with a fixed scale is declared with that scale (PostgreSQL
//! would round what the lake keeps exact); no unmapped NOT NULL column lacks a default; the
//! key has a unique index without predicate; `updated_at_column` exists.

use crate::{PgError, PgRows};
use std::collections::HashMap;
use streamload_core::route::{quote, ColumnType, Route, RouteErrors, Routes};
use tokio_postgres::Client;

/// What the catalogue says about one column.
struct TableColumn {
    attnum: i16,
    /// `pg_type.typname` of the column (of its base type for a domain).
    type_name: String,
    /// `format_type`, for messages and numeric typmods: `numeric(12,2)`.
    formatted: String,
    not_null_without_default: bool,
    not_null: bool,
}

/// Table types a column of route type `ty` can be written to without loss.
fn compatible(ty: ColumnType, type_name: &str) -> bool {
    let ok: &[&str] = match ty {
        ColumnType::Text => &["text", "varchar", "bpchar", "citext"],
        ColumnType::Integer => &["int4", "int8", "numeric", "float8"],
        ColumnType::Bigint => &["int8", "numeric"],
        ColumnType::Double => &["float8"],
        ColumnType::Numeric { .. } => &["numeric"],
        ColumnType::Boolean => &["bool"],
        ColumnType::Timestamptz { .. } => &["timestamptz"],
        ColumnType::Date => &["date"],
        ColumnType::Uuid => &["uuid"],
        ColumnType::Jsonb => &["jsonb"],
    };
    ok.contains(&type_name)
}

/// `(precision, scale)` of `numeric(p,s)`, `None` for a plain `numeric`.
fn numeric_typmod(formatted: &str) -> Option<(u8, u8)> {
    let inner = formatted.strip_prefix("numeric(")?.strip_suffix(')')?;
    let (p, s) = inner.split_once(',').unwrap_or((inner, "0"));
    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
}

impl PgRows {
    /// Checks every route's table (see the module docs), adding missing columns where the
    /// route allows it. Returns the `ALTER TABLE` statements it ran.
    ///
    /// A database that cannot be reached is not a configuration mistake: the error is
    /// retryable ([`PgError::Connect`]) and the sink runs the same checks on its first
    /// connection instead (see [`PgRows::check_on_first_connect`]). A database that answers
    /// and refuses us — its certificate, its name, TLS, the login — is ([`PgError::Refused`]).
    pub async fn check_routes(&self, routes: &Routes) -> Result<Vec<String>, PgError> {
        let client = tokio::time::timeout(crate::CONNECT_TIMEOUT * 2, self.connect_plain())
            .await
            .map_err(|_| PgError::Connect("connect did not finish in time".into()))?
            .map_err(|f| match self.explain(&f) {
                (why, true) => PgError::Connect(why),
                (why, false) => PgError::Refused(why),
            })?;
        check_all(&client, routes).await
    }
}

/// The checks of every route over `client`.
pub(crate) async fn check_all(client: &Client, routes: &Routes) -> Result<Vec<String>, PgError> {
    let mut problems = Vec::new();
    let mut migrated = Vec::new();
    for route in routes.iter().filter(|r| r.has_table()) {
        match check_route(client, route).await {
            Ok(mut done) => migrated.append(&mut done),
            Err(CheckError::Problems(mut p)) => problems.append(&mut p),
            Err(CheckError::Db(e)) => {
                return Err(PgError::Connect(format!(
                    "checking route {:?}: {}",
                    route.name,
                    crate::describe(&e)
                )))
            }
        }
    }
    if problems.is_empty() {
        Ok(migrated)
    } else {
        Err(PgError::Routes(RouteErrors(problems)))
    }
}

enum CheckError {
    Problems(Vec<String>),
    Db(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for CheckError {
    fn from(e: tokio_postgres::Error) -> Self {
        CheckError::Db(e)
    }
}

async fn table_columns(
    client: &Client,
    oid: u32,
) -> Result<HashMap<String, TableColumn>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT a.attname::text, a.attnum, \
                    CASE WHEN t.typtype = 'd' THEN bt.typname ELSE t.typname END::text, \
                    format_type(a.atttypid, a.atttypmod), \
                    a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = '', \
                    a.attnotnull \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_type bt ON bt.oid = t.typbasetype \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
            &[&oid],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                TableColumn {
                    attnum: r.get(1),
                    type_name: r.get(2),
                    formatted: r.get(3),
                    not_null_without_default: r.get(4),
                    not_null: r.get(5),
                },
            )
        })
        .collect())
}

async fn check_route(client: &Client, route: &Route) -> Result<Vec<String>, CheckError> {
    let at = |what: String| format!("route {:?}: {what}", route.name);
    let table = route.table_name();
    let oid: Option<u32> = client
        .query_one("SELECT to_regclass($1)::oid", &[&route.quoted_table()])
        .await?
        .get(0);
    let Some(oid) = oid else {
        return Err(CheckError::Problems(vec![at(format!(
            "table {table:?} does not exist"
        ))]));
    };
    let mut columns = table_columns(client, oid).await?;
    let mut problems = Vec::new();
    let mut migrated = Vec::new();
    let missing: Vec<&streamload_core::route::Column> = route
        .table_columns()
        .map(|(_, c)| c)
        .filter(|c| !columns.contains_key(&c.name))
        .collect();
    if !missing.is_empty() && route.auto_migrate {
        for c in &missing {
            let ddl = format!(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}",
                route.quoted_table(),
                quote(&c.name),
                c.ty.sql_type()
            );
            client.batch_execute(&ddl).await?;
            tracing::info!(route = %route.name, column = %c.name, "auto_migrate added a column");
            migrated.push(ddl);
        }
        columns = table_columns(client, oid).await?;
    }
    for (i, c) in route.table_columns() {
        let Some(found) = columns.get(&c.name) else {
            problems.push(at(format!(
                "column {:?} is missing from table {table:?} (add it, or set auto_migrate = \"add-columns\")",
                c.name
            )));
            continue;
        };
        if route.cdc.is_some() && found.not_null && !route.not_null(i) {
            problems.push(at(format!(
                "column {:?} is NOT NULL in table {table:?}, but a [route.cdc] route's delete keeps the row with its key only: drop NOT NULL (ALTER TABLE … ALTER COLUMN … DROP NOT NULL)",
                c.name
            )));
        }
        if !compatible(c.ty, &found.type_name) {
            problems.push(at(format!(
                "column {:?} is {} in table {table:?}, which a {} column cannot be written to \
                 (a type change needs a new route name)",
                c.name,
                found.formatted,
                c.ty.name()
            )));
            continue;
        }
        if let (ColumnType::Numeric { scale, .. }, Some((p, s))) =
            (c.ty, numeric_typmod(&found.formatted))
        {
            if scale.unwrap_or(0) != s
                || !matches!(
                    c.ty,
                    ColumnType::Numeric {
                        precision: Some(_),
                        ..
                    }
                )
            {
                problems.push(at(format!(
                    "column {:?} is numeric({p},{s}) in table {table:?}: set precision = {p} and scale = {s}, \
                     or PostgreSQL would round what the lake keeps exact",
                    c.name
                )));
            }
        }
    }
    let mapped: Vec<&str> = route
        .table_columns()
        .map(|(_, c)| c.name.as_str())
        .collect();
    let mut unmapped_required: Vec<&String> = columns
        .iter()
        .filter(|(name, col)| col.not_null_without_default && !mapped.contains(&name.as_str()))
        .map(|(name, _)| name)
        .collect();
    unmapped_required.sort();
    for name in unmapped_required {
        problems.push(at(format!(
            "table {table:?} column {name:?} is NOT NULL without a default and no route column maps it"
        )));
    }
    if let Some(u) = &route.updated_at_column {
        if !columns.contains_key(u) {
            problems.push(at(format!(
                "updated_at_column {u:?} is missing from table {table:?}"
            )));
        }
    }
    let mut key: Vec<i16> = route
        .key
        .iter()
        .filter_map(|&i| columns.get(&route.columns[i].name).map(|c| c.attnum))
        .collect();
    key.sort_unstable();
    if key.len() == route.key.len() {
        let indexes = client
            .query(
                "SELECT i.indkey::int2[] FROM pg_index i WHERE i.indrelid = $1 AND i.indisunique \
                 AND i.indpred IS NULL AND i.indexprs IS NULL",
                &[&oid],
            )
            .await?;
        let has_unique = indexes.iter().any(|r| {
            let mut cols: Vec<i16> = r.get(0);
            cols.sort_unstable();
            cols == key
        });
        if !has_unique {
            let names: Vec<&str> = route
                .key
                .iter()
                .map(|&i| route.columns[i].name.as_str())
                .collect();
            problems.push(at(format!(
                "table {table:?} has no unique index on exactly the key ({})",
                names.join(", ")
            )));
        }
    }
    if problems.is_empty() {
        Ok(migrated)
    } else {
        Err(CheckError::Problems(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_typmods_are_read_from_format_type() {
        assert_eq!(numeric_typmod("numeric(12,2)"), Some((12, 2)));
        assert_eq!(numeric_typmod("numeric(5)"), Some((5, 0)));
        assert_eq!(numeric_typmod("numeric"), None);
        assert!(compatible(ColumnType::Integer, "int8"));
        assert!(!compatible(ColumnType::Bigint, "int4"));
    }
}
