//! A `[route.cdc]` route: Debezium change events replicated into a table, newest by source
//! position.
//!
//! The decoding is [`crate::cdc`]'s; this module fits a change into the route model without a
//! new protocol. The compiler appends three columns — the op, the source position and a
//! delete flag — makes the position the `newest_by` column and the identity the key plus the
//! position, so each change is an event of its own (claimed once, kept once in the lake) and
//! the table's merge rule applies a change only when it is newer than the row. A delete is an
//! upsert of its key with the flag set and every other column null: the row stays behind as
//! the delete's memory, so a late, older change of the key loses against its position.

use super::value::{self, ColumnType};
use super::{ColumnSpec, MergeSpec, RouteSpec, Value};
use crate::cdc::{CdcDialect, Change, ChangeOp};
use serde::Deserialize;

/// The column holding Debezium's op letter (`c`, `r`, `u`, `d`).
pub const OP_COLUMN: &str = "cdc_op";
/// The column holding the change's source position (see [`crate::cdc::ChangePosition`]).
pub const POSITION_COLUMN: &str = "cdc_position";
/// The column that is true on a deleted key's row.
pub const DELETED_COLUMN: &str = "cdc_deleted";
/// `numeric(38, 0)`: the lake's widest DECIMAL. A position of 10^38 or more (a last-commit LSN
/// or binlog file number past 2^62) is refused as poison.
pub const POSITION_PRECISION: u8 = 38;

/// `[route.cdc]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdcSpec {
    /// `"postgresql"` or `"mysql"`: whose source positions the changes carry.
    pub database: String,
}

/// The route's change metadata a column takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeMeta {
    Op,
    Position,
    Deleted,
}

impl ChangeMeta {
    pub(super) fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "@cdc_op" => Self::Op,
            "@cdc_position" => Self::Position,
            "@cdc_deleted" => Self::Deleted,
            _ => return None,
        })
    }

    pub(super) fn fits(self, ty: ColumnType) -> bool {
        match self {
            Self::Op => ty == ColumnType::Text,
            Self::Position => matches!(ty, ColumnType::Numeric { .. }),
            Self::Deleted => ty == ColumnType::Boolean,
        }
    }

    /// This change's value for the column.
    pub(super) fn value(self, ty: ColumnType, change: &Change) -> Result<Value, value::Misfit> {
        match self {
            Self::Op => value::convert_scalar(ty, change.op_letter.encode_utf8(&mut [0; 4]), true),
            Self::Position => {
                let text = change.position.to_decimal_string();
                if text.len() > usize::from(POSITION_PRECISION) {
                    return Err("is 10^38 or more, beyond numeric(38, 0)");
                }
                value::convert_scalar(ty, &text, false)
            }
            Self::Deleted => Ok(Value::Bool(change.op == ChangeOp::Delete)),
        }
    }
}

/// The spec the compiler sees for a `[route.cdc]` route: the user's columns, then the three
/// change columns, merged `newest_by` the position with the default identity (key +
/// position). `Ok(None)` for a route without `[route.cdc]`; every mistake is one line.
pub(super) fn with_change_columns(
    spec: &RouteSpec,
) -> Result<Option<(RouteSpec, CdcDialect)>, Vec<String>> {
    let route = &spec.name;
    let mut problems = Vec::new();
    for c in spec
        .columns
        .iter()
        .filter(|c| ChangeMeta::parse(&c.from).is_some())
    {
        if spec.cdc.is_none() {
            problems.push(format!(
                "route {route:?}: column {:?}: {} is a [route.cdc] column; this route has no [route.cdc]",
                c.name, c.from
            ));
        }
    }
    let Some(cdc) = &spec.cdc else {
        return if problems.is_empty() {
            Ok(None)
        } else {
            Err(problems)
        };
    };
    let dialect = cdc
        .database
        .parse::<CdcDialect>()
        .map_err(|e| problems.push(format!("route {route:?}: [route.cdc] database: {e}")))
        .ok();
    if spec.merge.is_some() {
        problems.push(format!(
            "route {route:?}: a [route.cdc] route is merged newest by {POSITION_COLUMN}; remove merge"
        ));
    }
    if spec.identity.is_some() {
        problems.push(format!(
            "route {route:?}: a [route.cdc] route's identity is its key and {POSITION_COLUMN}; remove identity"
        ));
    }
    for c in &spec.columns {
        if [OP_COLUMN, POSITION_COLUMN, DELETED_COLUMN].contains(&c.name.as_str())
            || ChangeMeta::parse(&c.from).is_some()
        {
            problems.push(format!(
                "route {route:?}: column {:?}: [route.cdc] adds {OP_COLUMN}, {POSITION_COLUMN} and {DELETED_COLUMN} itself",
                c.name
            ));
        }
    }
    let (Some(dialect), true) = (dialect, problems.is_empty()) else {
        return Err(problems);
    };
    let mut compiled = spec.clone();
    let column = |name: &str, from: &str, ty: &str, precision: Option<u8>| ColumnSpec {
        name: name.into(),
        from: from.into(),
        ty: ty.into(),
        required: true,
        precision,
        scale: precision.map(|_| 0),
        unit: None,
        lake_only: false,
    };
    compiled.columns.extend([
        column(OP_COLUMN, "@cdc_op", "text", None),
        column(
            POSITION_COLUMN,
            "@cdc_position",
            "numeric",
            Some(POSITION_PRECISION),
        ),
        column(DELETED_COLUMN, "@cdc_deleted", "boolean", None),
    ]);
    compiled.merge = Some(MergeSpec::NewestBy {
        newest_by: POSITION_COLUMN.into(),
    });
    Ok(Some((compiled, dialect)))
}

/// Whether the JSON Pointer `pointer` names the row's top-level field `name`.
pub(super) fn is_pointer_to(pointer: &str, name: &str) -> bool {
    pointer
        .strip_prefix('/')
        .is_some_and(|p| p == name.replace('~', "~0").replace('/', "~1"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Origin, Position, SourceRecord, SourceUnit};
    use crate::route::{ConfigFile, Merge, Routes};
    use bytes::Bytes;
    use std::sync::Arc;

    const CUSTOMERS: &str = r#"
[[route]]
name = "customers"
source = "kafka:dbserver1.inventory.customers"
table = "customers"
key = ["id"]

[route.cdc]
database = "postgresql"

[[route.column]]
name = "id"
from = "/id"
type = "bigint"
required = true

[[route.column]]
name = "email"
from = "/email"
type = "text"
required = true

[[route.column]]
name = "bio"
from = "/bio"
type = "text"
"#;

    fn compile(toml_text: &str) -> Result<Routes, Vec<String>> {
        let file: ConfigFile = toml::from_str(toml_text).expect("toml");
        Routes::compile(&file).map_err(|e| e.0)
    }

    fn record(value: Option<&[u8]>) -> SourceRecord {
        SourceRecord {
            unit: Arc::new(SourceUnit {
                label: "dbserver1.inventory.customers-0".into(),
                topic_partition: Some(("dbserver1.inventory.customers".into(), 0)),
            }),
            position: Position::from_offset(3),
            data: value.map(Bytes::copy_from_slice),
            key: None,
            headers_json: None,
            arrival_ms: Some(1_700_000_000_000),
            undecodable: None,
            origin: Origin::Kafka {
                cluster: "bootstrap:b-1:9092".into(),
                timestamp: Some(1_700_000_000_000),
                value_schema_id: None,
            },
        }
    }

    fn change(op: &str, before: &str, after: &str, lsn: u64) -> Vec<u8> {
        format!(
            r#"{{"before":{before},"after":{after},"op":"{op}","ts_ms":1,
               "source":{{"connector":"postgresql","lsn":{lsn},"sequence":"[\"{}\",\"{lsn}\"]"}}}}"#,
            lsn - 10
        )
        .into_bytes()
    }

    #[test]
    fn a_cdc_route_gets_the_change_columns_merged_newest_by_position() {
        // Given a [route.cdc] route of three columns
        let routes = compile(CUSTOMERS).expect("compiles");
        let r = routes.get(0);
        // Then it has the op, position and delete columns, merged newest by the position, and
        // its identity is the key plus the position
        let names: Vec<&str> = r.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "id",
                "email",
                "bio",
                OP_COLUMN,
                POSITION_COLUMN,
                DELETED_COLUMN
            ]
        );
        assert_eq!(r.merge, Merge::NewestBy(4));
        assert_eq!(r.identity, [0, 4]);
        assert_eq!(r.cdc, Some(CdcDialect::Postgres));
        // and only the key and the change columns are NOT NULL in the table
        let not_null: Vec<bool> = (0..6).map(|i| r.not_null(i)).collect();
        assert_eq!(not_null, [true, false, false, true, true, true]);
    }

    #[test]
    fn each_cdc_mistake_is_one_line_naming_the_route() {
        let cases = [
            (
                CUSTOMERS.replace("\"postgresql\"", "\"oracle\""),
                "[route.cdc] database: unknown CDC dialect \"oracle\"",
            ),
            (
                CUSTOMERS.replace("[route.cdc]", "merge = \"keep-first\"\n[route.cdc]"),
                "remove merge",
            ),
            (
                CUSTOMERS.replace("[route.cdc]", "identity = [\"/id\"]\n[route.cdc]"),
                "remove identity",
            ),
            (
                CUSTOMERS.replace("name = \"bio\"", "name = \"cdc_op\""),
                "column \"cdc_op\": [route.cdc] adds",
            ),
            (
                CUSTOMERS
                    .replace("[route.cdc]\ndatabase = \"postgresql\"\n", "")
                    .replace("from = \"/bio\"", "from = \"@cdc_op\""),
                "@cdc_op is a [route.cdc] column; this route has no [route.cdc]",
            ),
        ];
        for (text, expected) in cases {
            let problems = compile(&text).expect_err(expected);
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with("route \"customers\": ")
                        && p.contains(expected)
                        && !p.contains('\n')),
                "{expected}: {problems:?}"
            );
        }
    }

    #[test]
    fn changes_map_to_upserts_deletes_with_the_key_only_and_skipped_tombstones() {
        // Given the route
        let routes = compile(CUSTOMERS).expect("compiles");
        let r = routes.get(0);
        // When a create, then a delete whose image holds the key only, then its tombstone map
        let created = r
            .map_record(
                &record(Some(&change(
                    "c",
                    "null",
                    r#"{"id":7,"email":"a@x","bio":"hi"}"#,
                    100,
                ))),
                1 << 20,
            )
            .expect("maps")
            .expect("an event");
        let deleted = r
            .map_record(
                &record(Some(&change("d", r#"{"id":7}"#, "null", 200))),
                1 << 20,
            )
            .expect("maps")
            .expect("an event");
        // Then the create holds the after image, op c and its position; the delete its key,
        // op d, its position and the delete flag, its other columns null (not poison)
        assert_eq!(created.values[0], Value::Int(7));
        assert_eq!(created.values[3], Value::Text("c".into()));
        let position = |m: &crate::route::Mapped| m.values[4].identity_text().into_owned();
        assert_eq!(position(&created), ((90u128 << 64) | 100).to_string());
        assert_eq!(created.values[5], Value::Bool(false));
        assert_eq!(deleted.values[1], Value::Null);
        assert_eq!(deleted.values[3], Value::Text("d".into()));
        assert_eq!(deleted.values[5], Value::Bool(true));
        // and each change is an event of its own (key + position)
        assert_ne!(created.claim_key, deleted.claim_key);
        // and the tombstone after the delete is nothing to load, neither an event nor poison
        assert_eq!(r.map_record(&record(None), 1 << 20), Ok(None));
        assert_eq!(r.map_record(&record(Some(b"")), 1 << 20), Ok(None));
    }

    #[test]
    fn an_unchanged_toasted_column_is_null_and_marked_unavailable() {
        // Given an update whose bio was not sent (Debezium's placeholder)
        let routes = compile(CUSTOMERS).expect("compiles");
        let r = routes.get(0);
        let event = change(
            "u",
            "null",
            r#"{"id":7,"email":"b@x","bio":"__debezium_unavailable_value"}"#,
            300,
        );
        // When it is mapped
        let m = r
            .map_record(&record(Some(&event)), 1 << 20)
            .expect("maps")
            .expect("an event");
        // Then bio is null and named unavailable (the table keeps its value); email is new
        assert_eq!(m.values[2], Value::Null);
        assert_eq!(m.unavailable, [2]);
        assert_eq!(m.values[1], Value::Text("b@x".into()));
    }

    #[test]
    fn an_unsupported_change_is_poison_with_its_reason_and_no_values() {
        let routes = compile(CUSTOMERS).expect("compiles");
        let r = routes.get(0);
        // Given a truncate, an upsert missing its required email, and a MySQL event
        let truncate =
            br#"{"op":"t","before":null,"after":null,"source":{"connector":"postgresql","lsn":5}}"#;
        let no_email = change("c", "null", r#"{"id":8,"bio":"secret-bio"}"#, 100);
        let mysql = br#"{"op":"c","before":null,"after":{"id":1,"email":"e"},"source":{"connector":"mysql","file":"mysql-bin.000003","pos":154,"row":0}}"#;
        // Then each is poison, saying why, never echoing a value
        let why = |bytes: &[u8]| {
            r.map_record(&record(Some(bytes)), 1 << 20)
                .unwrap_err()
                .reason
        };
        assert!(why(truncate).contains("op t"), "{}", why(truncate));
        let missing = why(&no_email);
        assert!(
            missing.contains("column \"email\" is required"),
            "{missing}"
        );
        assert!(!missing.contains("secret-bio"));
        assert!(why(mysql).contains("mysql"), "{}", why(mysql));
    }
}
