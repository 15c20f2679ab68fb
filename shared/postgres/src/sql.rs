//! The statements of one route, built once from its plan: a session temp table shaped like
//! the route's table columns, the binary COPY into it, and the merge into the real table.
//!
//! Every identifier comes from the checked configuration and is quoted; no value is ever
//! spliced into SQL (values travel in the COPY stream).

use bytes::BufMut;
use std::collections::HashMap;
use streamload_core::route::{quote, ColumnSource, ColumnType, Merge, Route, Value};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

/// The session temp table where the refused rows found by [`RouteSql::isolate`] are noted.
pub const REFUSALS_TABLE: &str = "streamload_refusals";

/// Its definition (one per session): the route, the row's stage ordinal, and what the server
/// named — SQLSTATE, table, column and constraint, never its message (which quotes values).
pub const REFUSALS_DDL: &str = "CREATE TEMP TABLE IF NOT EXISTS streamload_refusals \
     (route integer, ord integer, sqlstate text, tbl text, col text, cons text) ON COMMIT DELETE ROWS";

/// Rows the isolation statement merges in one subtransaction before it falls back to one
/// row at a time: a chunk without a refused row costs one statement, a chunk with one costs
/// a statement per row.
pub const ISOLATION_CHUNK_ROWS: usize = 64;

/// The stage table, COPY and upsert of one route.
#[derive(Debug, Clone)]
pub struct RouteSql {
    /// Quoted name of the session temp table.
    pub stage: String,
    pub stage_ddl: String,
    pub copy: String,
    pub upsert: String,
    /// One server-side statement (a PL/pgSQL `DO` block) that merges the staged rows in
    /// merge order, chunk by chunk under subtransactions, and row by row in a chunk the
    /// database refused; each refused row is noted in [`REFUSALS_TABLE`] and every other row
    /// is merged. With the transaction's constraints IMMEDIATE, deferred constraints refuse
    /// their row here too; a row refused by an integrity constraint (class 23: a foreign key
    /// to a row later in the batch, say) is tried again until a pass merges none of them.
    pub isolate: String,
    /// One more pass over this route's rows refused by an integrity constraint (class 23),
    /// after the other routes' rows are in: a foreign key to a row of another route.
    pub retry_refused: String,
    /// Builds the stage's ordinal index the isolation statements pick rows by (the happy
    /// path's COPY maintains no index), and [`RouteSql::drop_index`] drops it.
    pub create_index: String,
    pub drop_index: String,
    /// For a route with a search index: the stage ordinals of the rows whose event the table
    /// does not hold after the merge (another event of the key won), run in the merge's
    /// transaction before it commits. `None` for a route without an index (nothing to ask).
    pub superseded: Option<String>,
    /// Binary COPY types, one per staged column, then the delivery ordinal.
    pub types: Vec<Type>,
    /// The route's table columns (index into the route's values) and their types.
    pub columns: Vec<(usize, ColumnType)>,
    /// A `[route.cdc]` route: the stage has a `streamload_unavailable` column after the
    /// values (`,name,name,` of the columns a change did not carry), before the ordinal.
    pub unavailable: bool,
}

/// The type a value is staged as. `numeric` is staged as its exact decimal text and cast in
/// the merge (PostgreSQL's binary numeric is base-10000 digits; text is as exact and simpler).
fn stage_type(ty: ColumnType) -> Type {
    match ty {
        // jsonb is staged as text and cast in the merge, so a JSON text the server will not
        // store (a number out of range, an unpaired escape) is refused by the merge, row by
        // row, rather than by the COPY.
        ColumnType::Text | ColumnType::Numeric { .. } | ColumnType::Jsonb => Type::TEXT,
        ColumnType::Integer => Type::INT4,
        ColumnType::Bigint => Type::INT8,
        ColumnType::Double => Type::FLOAT8,
        ColumnType::Boolean => Type::BOOL,
        ColumnType::Timestamptz { .. } => Type::TIMESTAMPTZ,
        ColumnType::Date => Type::DATE,
        ColumnType::Uuid => Type::UUID,
    }
}

impl RouteSql {
    /// ```
    /// use streamload_core::route::Routes;
    /// let routes = Routes::builtin("events", "events/").unwrap();
    /// let sql = streamload_postgres::RouteSql::new(routes.get(0));
    /// assert!(sql.upsert.starts_with("INSERT INTO \"events\" AS cur"));
    /// assert!(sql.upsert.contains("ON CONFLICT (\"event_id\") DO UPDATE"));
    /// ```
    pub fn new(route: &Route) -> Self {
        Self::with_key_types(route, &HashMap::new())
    }

    /// As [`RouteSql::new`], with some text key columns compared in the table's own type and
    /// collation when the merge picks one row per key (`key_types`: column index → SQL type,
    /// e.g. `"public"."citext"` or `"pg_catalog"."text" COLLATE "public"."und_ci"`), so the
    /// batch tells keys apart exactly as the table's unique index does: two keys the table
    /// holds equal ("A1" and "a1" in a citext column) are one key in the batch too, instead of
    /// failing the merge with SQLSTATE 21000. Keys are still staged as text and assigned to
    /// the column by the INSERT, so a key too long for a `varchar(n)` is refused by the merge
    /// (row by row in isolation), never cut short by a cast.
    pub fn with_key_types(route: &Route, key_types: &HashMap<usize, String>) -> Self {
        let stage = quote(&format!("streamload_stage_{}", route.name));
        let columns: Vec<(usize, ColumnType)> =
            route.table_columns().map(|(i, c)| (i, c.ty)).collect();
        let name = |i: usize| quote(&route.columns[i].name);
        let unavailable = route.cdc.is_some();
        let stage_cols: Vec<String> = columns
            .iter()
            .map(|&(i, ty)| format!("{} {}", name(i), stage_type(ty).name()))
            .chain(unavailable.then(|| "streamload_unavailable text".to_owned()))
            .chain(std::iter::once("streamload_ord integer".to_owned()))
            .collect();
        let mut stage_ddl = format!(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} ({}) ON COMMIT DELETE ROWS",
            stage_cols.join(", ")
        );
        let list: Vec<String> = columns.iter().map(|&(i, _)| name(i)).collect();
        let mut copied = list.clone();
        if unavailable {
            copied.push("streamload_unavailable".into());
            // The merge looks a change's unavailable columns up by key (below).
            let keys: Vec<String> = route.key.iter().map(|&i| name(i)).collect();
            stage_ddl.push_str(&format!(
                ";\nCREATE INDEX IF NOT EXISTS streamload_unavailable_ix_{} ON {stage} ({})",
                route.index,
                keys.join(", ")
            ));
        }
        let copy = format!(
            "COPY {stage} ({}, streamload_ord) FROM STDIN (FORMAT binary)",
            copied.join(", ")
        );
        let select: Vec<String> = columns
            .iter()
            .map(|&(i, ty)| match ty {
                ColumnType::Numeric { .. } => format!("CAST({} AS numeric)", name(i)),
                ColumnType::Jsonb => format!("CAST({} AS jsonb)", name(i)),
                _ => name(i),
            })
            .collect();
        let keys: Vec<String> = route.key.iter().map(|&i| name(i)).collect();
        let keys = keys.join(", ");
        // The keys as the table compares them, for picking one row per key.
        let compared: Vec<String> = route
            .key
            .iter()
            .map(|&i| match key_types.get(&i) {
                Some(ty) => format!("CAST({} AS {ty})", name(i)),
                None => name(i),
            })
            .collect();
        let compared = compared.join(", ");
        // One row per key from the batch: the newest by the merge column, else the first
        // delivered, so the batch never hits a key twice in one statement.
        let order = match route.merge {
            Merge::NewestBy(i) => {
                format!("{compared}, {} DESC NULLS LAST, streamload_ord", name(i))
            }
            Merge::KeepFirst => format!("{compared}, streamload_ord"),
        };
        // A change's unchanged TOASTed column arrives null and named in the stage's
        // `streamload_unavailable`: the row keeps its value (looked up only for a null).
        let keep_unavailable = |i: usize| -> Option<String> {
            let position = route
                .columns
                .iter()
                .position(|c| c.name == streamload_core::route::cdc::POSITION_COLUMN)?;
            let c = &route.columns[i];
            if !unavailable || matches!(c.source, ColumnSource::Meta(_)) || route.key.contains(&i) {
                return None;
            }
            let staged_keys: Vec<String> = route
                .key
                .iter()
                .map(|&k| match key_types.get(&k) {
                    Some(ty) => format!("CAST(u.{} AS {ty})", name(k)),
                    None => format!("u.{}", name(k)),
                })
                .collect();
            let excluded_keys: Vec<String> = route
                .key
                .iter()
                .map(|&k| format!("EXCLUDED.{}", name(k)))
                .collect();
            Some(format!(
                "{c} = CASE WHEN EXCLUDED.{c} IS NULL AND EXISTS (SELECT 1 FROM {stage} u \
                 WHERE ({}) = ({}) AND CAST(u.{p} AS numeric) = EXCLUDED.{p} \
                 AND position(',{raw},' in u.streamload_unavailable) > 0) \
                 THEN cur.{c} ELSE EXCLUDED.{c} END",
                staged_keys.join(", "),
                excluded_keys.join(", "),
                c = name(i),
                p = name(position),
                raw = c.name,
            ))
        };
        let mut set: Vec<String> = columns
            .iter()
            .filter(|(i, _)| !route.key.contains(i))
            .map(|&(i, _)| {
                keep_unavailable(i).unwrap_or_else(|| format!("{0} = EXCLUDED.{0}", name(i)))
            })
            .collect();
        if let Some(u) = &route.updated_at_column {
            set.push(format!("{} = now()", quote(u)));
        }
        // The same event loaded again (a crash between the sinks, a takeover) always
        // rewrites its own row, so the row and the event's Parquet copy agree.
        let same_event = if route.identity.iter().all(|i| route.key.contains(i)) {
            None
        } else {
            let ids: Vec<String> = route.identity.iter().map(|&i| name(i)).collect();
            Some(format!(
                "(cur.{}) IS NOT DISTINCT FROM (EXCLUDED.{})",
                ids.join(", cur."),
                ids.join(", EXCLUDED.")
            ))
        };
        let condition = match (route.merge, same_event) {
            (Merge::KeepFirst, None) => Some(None),
            (Merge::KeepFirst, Some(same)) => Some(Some(same)),
            (Merge::NewestBy(i), same) => {
                let c = name(i);
                let newer = format!(
                    "cur.{c} < EXCLUDED.{c} OR (cur.{c} IS NULL AND EXCLUDED.{c} IS NOT NULL)"
                );
                Some(Some(match same {
                    Some(same) => format!("{newer} OR {same}"),
                    None => newer,
                }))
            }
        };
        let action = match (set.is_empty(), condition) {
            (true, _) | (_, None) => "DO NOTHING".to_owned(),
            (false, Some(None)) => format!("DO UPDATE SET {}", set.join(", ")),
            (false, Some(Some(w))) => format!("DO UPDATE SET {} WHERE {w}", set.join(", ")),
        };
        let head = format!(
            "INSERT INTO {t} AS cur ({cols}) SELECT DISTINCT ON ({compared}) {select} FROM {stage}",
            t = route.quoted_table(),
            cols = list.join(", "),
            select = select.join(", "),
        );
        let tail = format!("ORDER BY {order} ON CONFLICT ({keys}) {action}");
        let upsert = format!("{head} {tail}");
        let isolate = isolation_block(route.index, &stage, &order, &head, &tail);
        let retry_refused = retry_block(route.index, &head, &tail);
        let index = format!("streamload_isolate_ix_{}", route.index);
        let create_index =
            format!("CREATE INDEX {index} ON {stage} (streamload_ord); ANALYZE {stage}");
        let drop_index = format!("DROP INDEX IF EXISTS {index}");
        // The stage's value of column `i` as the table compares it (`s.` qualified).
        let staged = |i: usize| {
            let column = format!("s.{}", name(i));
            match (key_types.get(&i), route.columns[i].ty) {
                (Some(ty), _) => format!("CAST({column} AS {ty})"),
                (None, ColumnType::Numeric { .. }) => format!("CAST({column} AS numeric)"),
                (None, ColumnType::Jsonb) => format!("CAST({column} AS jsonb)"),
                _ => column,
            }
        };
        let superseded = route.search.as_ref().map(|_| {
            let held_keys: Vec<String> = route
                .key
                .iter()
                .map(|&i| format!("cur.{}", name(i)))
                .collect();
            let staged_keys: Vec<String> = route.key.iter().map(|&i| staged(i)).collect();
            let held_ids: Vec<String> = route
                .identity
                .iter()
                .map(|&i| format!("cur.{}", name(i)))
                .collect();
            let staged_ids: Vec<String> = route.identity.iter().map(|&i| staged(i)).collect();
            format!(
                "SELECT s.streamload_ord FROM {stage} s WHERE NOT EXISTS (SELECT 1 FROM {t} cur \
                 WHERE ({}) = ({}) AND ({}) IS NOT DISTINCT FROM ({}))",
                held_keys.join(", "),
                staged_keys.join(", "),
                held_ids.join(", "),
                staged_ids.join(", "),
                t = route.quoted_table(),
            )
        });
        let types = columns
            .iter()
            .map(|&(_, ty)| stage_type(ty))
            .chain(unavailable.then_some(Type::TEXT))
            .chain(std::iter::once(Type::INT4))
            .collect();
        Self {
            stage,
            stage_ddl,
            copy,
            upsert,
            isolate,
            retry_refused,
            create_index,
            drop_index,
            superseded,
            types,
            columns,
            unavailable,
        }
    }
}

/// The PL/pgSQL block of [`RouteSql::isolate`]. Its variables are prefixed `streamload_v_`
/// so they never meet a column name; every identifier in it comes quoted from the checked
/// configuration, and no value is spliced in (the rows are in the stage).
fn isolation_block(route: usize, stage: &str, order: &str, head: &str, tail: &str) -> String {
    let chunk = ISOLATION_CHUNK_ROWS;
    format!(
        "DO $streamload$
DECLARE
  streamload_v_ords integer[];
  streamload_v_chunk integer[];
  streamload_v_one integer;
  streamload_v_at integer := 1;
  streamload_v_n integer;
  streamload_v_state text;
  streamload_v_table text;
  streamload_v_column text;
  streamload_v_constraint text;
  streamload_v_merged boolean;
BEGIN
  SELECT array_agg(streamload_ord ORDER BY {order}) INTO streamload_v_ords FROM {stage};
  streamload_v_n := coalesce(array_length(streamload_v_ords, 1), 0);
  WHILE streamload_v_at <= streamload_v_n LOOP
    streamload_v_chunk := streamload_v_ords[streamload_v_at : streamload_v_at + {last}];
    BEGIN
      {head} WHERE streamload_ord = ANY (streamload_v_chunk) {tail};
    EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN
      FOREACH streamload_v_one IN ARRAY streamload_v_chunk LOOP
        BEGIN
          {head} WHERE streamload_ord = streamload_v_one {tail};
        EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN
          GET STACKED DIAGNOSTICS streamload_v_state = RETURNED_SQLSTATE,
            streamload_v_table = TABLE_NAME, streamload_v_column = COLUMN_NAME,
            streamload_v_constraint = CONSTRAINT_NAME;
          INSERT INTO {REFUSALS_TABLE} VALUES ({route}, streamload_v_one, streamload_v_state,
            streamload_v_table, streamload_v_column, streamload_v_constraint);
        END;
      END LOOP;
    END;
    streamload_v_at := streamload_v_at + {chunk};
  END LOOP;
  -- A row refused by an integrity constraint may have met a row merged after it (a foreign
  -- key to a later row): try those again until a pass merges none.
  {retry_loop}
END
$streamload$",
        retry_loop = retry_loop(route, head, tail),
        last = chunk - 1,
    )
}

/// A PL/pgSQL loop that tries this route's rows refused with class 23 again, one at a time in
/// delivery order, until a pass merges none; a row merged now leaves the refusals table.
fn retry_loop(route: usize, head: &str, tail: &str) -> String {
    format!(
        "LOOP
    streamload_v_merged := false;
    FOR streamload_v_one IN SELECT ord FROM {REFUSALS_TABLE}
        WHERE route = {route} AND sqlstate LIKE '23%' ORDER BY ord LOOP
      BEGIN
        {head} WHERE streamload_ord = streamload_v_one {tail};
        DELETE FROM {REFUSALS_TABLE} WHERE route = {route} AND ord = streamload_v_one;
        streamload_v_merged := true;
      EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN
        NULL;
      END;
    END LOOP;
    EXIT WHEN NOT streamload_v_merged;
  END LOOP;"
    )
}

/// The block of [`RouteSql::retry_refused`].
fn retry_block(route: usize, head: &str, tail: &str) -> String {
    format!(
        "DO $streamload$
DECLARE
  streamload_v_one integer;
  streamload_v_merged boolean;
BEGIN
  {}
END
$streamload$",
        retry_loop(route, head, tail)
    )
}

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
/// Days between 1970-01-01 and 2000-01-01.
const PG_EPOCH_OFFSET_DAYS: i32 = 10_957;

/// One cell of the binary COPY stream, written in its stage type's binary format.
#[derive(Debug)]
pub(crate) enum Cell<'a> {
    Value(&'a Value, ColumnType),
    /// `,name,name,` of a change's unavailable columns; NULL when there are none.
    Unavailable(Option<String>),
    /// The record's place in the batch, which decides between two rows of one key.
    Ord(i32),
}

impl ToSql for Cell<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let v = match self {
            Cell::Ord(n) => {
                out.put_i32(*n);
                return Ok(IsNull::No);
            }
            Cell::Unavailable(None) => return Ok(IsNull::Yes),
            Cell::Unavailable(Some(names)) => {
                out.extend_from_slice(names.as_bytes());
                return Ok(IsNull::No);
            }
            Cell::Value(v, _) => v,
        };
        match v {
            Value::Null => return Ok(IsNull::Yes),
            Value::Text(t) => out.extend_from_slice(t.as_bytes()),
            Value::Numeric { text, .. } => out.extend_from_slice(text.as_bytes()),
            // jsonb is staged as text (see `stage_type`).
            Value::Json(t) => out.extend_from_slice(t.as_bytes()),
            Value::Int(i) => match self {
                Cell::Value(_, ColumnType::Integer) => out.put_i32(i32::try_from(*i)?),
                _ => out.put_i64(*i),
            },
            Value::Double(d) => out.put_f64(*d),
            Value::Bool(b) => out.put_u8(u8::from(*b)),
            Value::Timestamp(us) => out.put_i64(us - PG_EPOCH_OFFSET_US),
            Value::Date(days) => out.put_i32(days - PG_EPOCH_OFFSET_DAYS),
            Value::Uuid(u) => out.extend_from_slice(u),
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        // Every cell is written in the stage type chosen for its column (`stage_type`).
        true
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamload_core::route::{ConfigFile, Routes};

    #[test]
    fn newest_by_merges_only_a_higher_revision_or_the_same_event() {
        // Given a route keyed by order_id, identified by (order_id, revision), newest by revision
        let file: ConfigFile = serde_json::from_str(
            r#"{"route": [{"name": "orders", "source": "*", "table": "sales.orders",
                "identity": ["/id", "/rev"], "key": ["order_id"], "merge": {"newest_by": "rev"},
                "column": [
                  {"name": "order_id", "from": "/id", "type": "text", "required": true},
                  {"name": "rev", "from": "/rev", "type": "integer", "required": true},
                  {"name": "total", "from": "/total", "type": "numeric"},
                  {"name": "note", "from": "/note", "type": "text", "lake_only": true}]}]}"#,
        )
        .unwrap();
        let routes = Routes::compile(&file).unwrap();
        // When its statements are built
        let sql = RouteSql::new(routes.get(0));
        // Then the merge keeps the newest row per key, never stages lake-only columns, and
        // casts the staged numeric text
        assert_eq!(
            sql.upsert,
            "INSERT INTO \"sales\".\"orders\" AS cur (\"order_id\", \"rev\", \"total\") \
             SELECT DISTINCT ON (\"order_id\") \"order_id\", \"rev\", CAST(\"total\" AS numeric) \
             FROM \"streamload_stage_orders\" ORDER BY \"order_id\", \"rev\" DESC NULLS LAST, streamload_ord \
             ON CONFLICT (\"order_id\") DO UPDATE SET \"rev\" = EXCLUDED.\"rev\", \"total\" = EXCLUDED.\"total\" \
             WHERE cur.\"rev\" < EXCLUDED.\"rev\" OR (cur.\"rev\" IS NULL AND EXCLUDED.\"rev\" IS NOT NULL) \
             OR (cur.\"order_id\", cur.\"rev\") IS NOT DISTINCT FROM (EXCLUDED.\"order_id\", EXCLUDED.\"rev\")"
        );
        assert_eq!(
            sql.types,
            vec![Type::TEXT, Type::INT4, Type::TEXT, Type::INT4]
        );
    }
}
