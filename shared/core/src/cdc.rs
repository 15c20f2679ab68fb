//! Debezium change events (PostgreSQL and MySQL connectors) as upserts and deletes, each with a
//! totally ordered source position.
//!
//! A CDC route keeps the newest image of each key, and Kafka order cannot say which image is
//! newest: batches are redelivered, and a restarted connector emits events again. So "newest"
//! means "largest position in the database's own log", and this module is the one place that
//! knows how Debezium spells that position, which envelope shapes arrive, and what a tombstone
//! or an unchanged TOAST column looks like. It is pure: bytes in, [`Change`] out.
//!
//! # Shapes
//!
//! * The envelope `{"before", "after", "op", "source", "ts_ms", …}`: `c`, `r` and `u` keep
//!   `after`, `d` keeps `before`. A primary-key change arrives as a delete of the old key and a
//!   create of the new one, so it needs nothing special here.
//! * The same envelope in the JSON converter's `{"schema": …, "payload": …}` wrapper.
//! * The record flattened by `ExtractNewRecordState`: the row itself plus the fields that its
//!   `add.fields` names, each prefixed with `__` (`op` → `__op`, `source.sequence` →
//!   `__source_sequence`, unqualified `lsn` → `__lsn`). All `__` fields are taken out of the row.
//!   Deletes reach this decoder only with `delete.tombstone.handling.mode=rewrite` (or
//!   `rewrite-with-tombstone`): the `before` fields plus `__deleted` (`"true"` or `true`). The
//!   SMT's default turns a delete into a bare tombstone, which carries no row and is skipped.
//! * A tombstone (empty or whitespace-only bytes, `null`, or a wrapper whose payload is
//!   `null`): `Ok(None)`.
//!
//! # Positions
//!
//! PostgreSQL: `source.sequence` is the JSON text `["<last commit LSN>","<LSN>"]`, decimal
//! strings or `null`. Debezium streams transactions in commit order, but interleaved
//! transactions overlap in LSN: one that commits later can hold changes at smaller LSNs. The pair
//! follows the stream, so the position is `last_commit << 64 | lsn` (a `null` last commit, as on
//! snapshot reads, counts as 0). Without `sequence` the position is `(0, source.lsn)`. That is
//! not a stream-wide order, but it orders the changes of one key: a row's next change waits for
//! the lock of the transaction that changed it before, so it is written after that commit.
//! Events without `sequence` also sort before events with one, which suits a connector upgrade.
//!
//! MySQL: the binlog is written in commit order, so `(file, pos, row)` orders changes within one
//! server's binlog series: position = `file index << 64 | pos << 16 | row`, where the index is
//! the number after the file name's last `.`. A `pos` of 2^48 or more, or a `row` of 2^16 or
//! more, is refused. Positions from different servers (a failover without the same binlog
//! files) cannot be compared. From Debezium's source, the events inside one compressed
//! transaction (`binlog_transaction_compression`) may share a `pos`.

use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

/// Debezium's default `unavailable.value.placeholder`: the value of an unchanged TOASTed column
/// (PostgreSQL, `REPLICA IDENTITY DEFAULT`). A custom placeholder is not recognised.
pub const UNAVAILABLE_VALUE: &str = "__debezium_unavailable_value";
/// The placeholder's bytes in a `bytea` column: base64 (the JSON converter's encoding of bytes,
/// equal to the URL-safe form here) and hex (`binary.handling.mode=hex`).
const UNAVAILABLE_BASE64: &str = "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==";
const UNAVAILABLE_HEX: &str = "5f5f646562657a69756d5f756e617661696c61626c655f76616c7565";
/// A toasted `uuid[]`: the name-based UUID of the placeholder's bytes, in a one-element list.
const UNAVAILABLE_UUID: &str = "b68a35a7-17ad-35b3-af2a-ae46edb4545a";

/// Which connector a route reads, and so which position rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CdcDialect {
    Postgres,
    Mysql,
}

impl CdcDialect {
    /// The `source.connector` value Debezium writes, also the dialect's configuration name.
    pub fn connector(self) -> &'static str {
        match self {
            Self::Postgres => "postgresql",
            Self::Mysql => "mysql",
        }
    }
}

impl FromStr for CdcDialect {
    type Err = CdcError;

    fn from_str(name: &str) -> Result<Self, CdcError> {
        match name {
            "postgresql" => Ok(Self::Postgres),
            "mysql" => Ok(Self::Mysql),
            other => Err(CdcError::UnknownDialect(printable(other))),
        }
    }
}

/// What a change does to its key's stored row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeOp {
    /// `c` (create), `r` (snapshot read) or `u` (update).
    Upsert,
    /// `d`.
    Delete,
}

/// One decoded change event.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub op: ChangeOp,
    /// The row image: `after` for an upsert, `before` for a delete (of which only the key
    /// columns are sure to be filled), or the flattened record without its `__` fields.
    pub row: Map<String, Value>,
    /// Where the change sits in the database's log; larger = newer.
    pub position: ChangePosition,
    /// Debezium's own op letter, for the lake: `c`, `r`, `u` or `d`.
    pub op_letter: char,
    /// Columns of `row` holding the TOAST placeholder: their stored values must be kept.
    pub unavailable: Vec<String>,
}

impl Change {
    fn new((op, op_letter): (ChangeOp, char), row: Map<String, Value>, at: ChangePosition) -> Self {
        let unavailable = row
            .iter()
            .filter(|(_, value)| is_unavailable(value))
            .map(|(name, _)| name.clone())
            .collect();
        let position = at;
        Self {
            op,
            row,
            position,
            op_letter,
            unavailable,
        }
    }
}

/// A totally ordered source position (see the module docs for the encoding per dialect).
///
/// Named apart from [`crate::Position`], the Kinesis/Kafka position of the record carrying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChangePosition(u128);

impl ChangePosition {
    /// `last_commit_lsn << 64 | lsn`.
    pub fn postgres(last_commit_lsn: u64, lsn: u64) -> Self {
        Self((u128::from(last_commit_lsn) << 64) | u128::from(lsn))
    }

    /// `file_index << 64 | pos << 16 | row`; refuses a `pos` of 2^48 or more or a `row` of 2^16
    /// or more.
    pub fn mysql(file_index: u64, pos: u64, row: u64) -> Result<Self, CdcError> {
        if pos >= 1 << 48 {
            return Err(bad("source.pos", "is 2^48 or more (too large to order)"));
        }
        if row >= 1 << 16 {
            return Err(bad("source.row", "is 2^16 or more (too large to order)"));
        }
        let pos_row = u128::from((pos << 16) | row);
        Ok(Self((u128::from(file_index) << 64) | pos_row))
    }

    pub const fn from_u128(value: u128) -> Self {
        Self(value)
    }

    pub const fn as_u128(self) -> u128 {
        self.0
    }

    pub fn to_decimal_string(self) -> String {
        self.0.to_string()
    }

    /// The position as an `i64` when it fits: PostgreSQL positions without a last commit, MySQL
    /// positions in binlog file 0 only.
    pub fn as_i64(self) -> Option<i64> {
        i64::try_from(self.0).ok()
    }
}

impl fmt::Display for ChangePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a change event cannot be applied. Messages name fields, never their values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CdcError {
    #[error("the change event is not JSON (syntax error at line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    #[error("the change event is not a JSON object")]
    NotObject,
    #[error("the change event has no op")]
    MissingOp,
    #[error(
        "the flattened change event has no __op: add op to the ExtractNewRecordState add.fields"
    )]
    MissingFlattenedOp,
    #[error("the change event's op is not one of c, r, u, d, t, m")]
    UnknownOp,
    #[error("{kind} events (op {letter}) are not supported")]
    UnsupportedOp { kind: &'static str, letter: char },
    #[error("the change event (op {0}) has no after image")]
    MissingAfter(char),
    #[error(
        "the delete (op d) has no before image, so its key is unknown here \
         (PostgreSQL REPLICA IDENTITY NOTHING?)"
    )]
    MissingBefore,
    #[error("the change event has no source position: {0}")]
    MissingPosition(&'static str),
    #[error("the change event's {field} {reason}")]
    BadPosition {
        field: &'static str,
        reason: &'static str,
    },
    #[error(
        "the change event comes from the {found} connector, but the route's dialect is {expected}"
    )]
    DialectMismatch {
        found: &'static str,
        expected: &'static str,
    },
    #[error("only PostgreSQL and MySQL change events are supported (connector {0})")]
    UnsupportedConnector(String),
    #[error("unknown CDC dialect {0:?}: expected \"postgresql\" or \"mysql\"")]
    UnknownDialect(String),
}

impl crate::Classify for CdcError {
    fn class(&self) -> crate::ErrorClass {
        crate::ErrorClass::Permanent
    }
}

/// Decodes one Kafka record value; `Ok(None)` for a tombstone.
///
/// ```
/// use streamload_core::cdc::{decode, CdcDialect, ChangeOp};
///
/// let event = br#"{"before":null,"after":{"id":1,"email":"annek@noanswer.org"},
///     "source":{"connector":"postgresql","sequence":"[\"24023119\",\"24023128\"]","lsn":24023128},
///     "op":"c","ts_ms":1559033904863}"#;
/// let change = decode(event, CdcDialect::Postgres)?.ok_or("a tombstone")?;
/// assert_eq!(change.op, ChangeOp::Upsert);
/// assert_eq!(change.row["id"], 1);
/// assert_eq!(change.position.as_u128(), (24023119 << 64) | 24023128);
/// // The tombstone that follows a delete is skipped.
/// assert!(decode(b"", CdcDialect::Postgres)?.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn decode(value: &[u8], dialect: CdcDialect) -> Result<Option<Change>, CdcError> {
    if value.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let event: Value = serde_json::from_slice(value).map_err(|e| CdcError::NotJson {
        line: e.line(),
        column: e.column(),
    })?;
    let mut event = match event {
        Value::Null => return Ok(None),
        Value::Object(event) => event,
        _ => return Err(CdcError::NotObject),
    };
    if event.len() == 2 && event.contains_key("schema") && event.contains_key("payload") {
        event = match event.remove("payload") {
            Some(Value::Object(payload)) => payload,
            Some(Value::Null) | None => return Ok(None),
            Some(_) => return Err(CdcError::NotObject),
        };
    }
    let is_envelope = event.contains_key("op")
        && ["source", "before", "after"]
            .iter()
            .any(|k| event.contains_key(*k));
    let change = if is_envelope {
        from_envelope(event, dialect)?
    } else {
        from_flattened(event, dialect)?
    };
    Ok(Some(change))
}

fn from_envelope(mut event: Map<String, Value>, dialect: CdcDialect) -> Result<Change, CdcError> {
    let Some(Value::Object(source)) = event.get("source") else {
        return Err(CdcError::MissingPosition("there is no source block"));
    };
    let fields = Fields::new(source, false);
    check_connector(fields.get("connector"), dialect)?;
    let op = parse_op(event.get("op"), CdcError::MissingOp)?;
    let position = position(&fields, dialect)?;
    let image = if op.0 == ChangeOp::Delete {
        "before"
    } else {
        "after"
    };
    match event.remove(image) {
        Some(Value::Object(row)) => Ok(Change::new(op, row, position)),
        _ if op.0 == ChangeOp::Delete => Err(CdcError::MissingBefore),
        _ => Err(CdcError::MissingAfter(op.1)),
    }
}

fn from_flattened(mut row: Map<String, Value>, dialect: CdcDialect) -> Result<Change, CdcError> {
    let fields = Fields::new(&row, true);
    check_connector(fields.get("connector"), dialect)?;
    let deleted = match row.get("__deleted") {
        Some(Value::Bool(deleted)) => *deleted,
        Some(Value::String(deleted)) => deleted == "true",
        _ => false,
    };
    let op = match row.get("__op") {
        _ if deleted => (ChangeOp::Delete, 'd'),
        op => parse_op(op, CdcError::MissingFlattenedOp)?,
    };
    let position = position(&fields, dialect)?;
    row.retain(|name, _| !name.starts_with("__"));
    Ok(Change::new(op, row, position))
}

fn parse_op(op: Option<&Value>, missing: CdcError) -> Result<(ChangeOp, char), CdcError> {
    match op.filter(|op| !op.is_null()).map(Value::as_str) {
        None => Err(missing),
        Some(Some("c")) => Ok((ChangeOp::Upsert, 'c')),
        Some(Some("r")) => Ok((ChangeOp::Upsert, 'r')),
        Some(Some("u")) => Ok((ChangeOp::Upsert, 'u')),
        Some(Some("d")) => Ok((ChangeOp::Delete, 'd')),
        Some(Some("t")) => Err(unsupported("truncate", 't')),
        Some(Some("m")) => Err(unsupported("message", 'm')),
        Some(_) => Err(CdcError::UnknownOp),
    }
}

fn unsupported(kind: &'static str, letter: char) -> CdcError {
    CdcError::UnsupportedOp { kind, letter }
}

/// A change event of another connector is refused; one that names none is let through.
fn check_connector(connector: Option<&Value>, dialect: CdcDialect) -> Result<(), CdcError> {
    let Some(name) = connector.and_then(Value::as_str) else {
        return Ok(());
    };
    let found = match name {
        "postgresql" => CdcDialect::Postgres,
        "mysql" => CdcDialect::Mysql,
        other => return Err(CdcError::UnsupportedConnector(printable(other))),
    };
    if found == dialect {
        Ok(())
    } else {
        Err(CdcError::DialectMismatch {
            found: found.connector(),
            expected: dialect.connector(),
        })
    }
}

/// The `source` fields of an event: in the envelope's source block, or in a flattened record as
/// `__source_<name>` (`add.fields=source.<name>`) or `__<name>` (`add.fields=<name>`).
/// A `null` counts as absent.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    flattened: bool,
}

impl<'a> Fields<'a> {
    fn new(map: &'a Map<String, Value>, flattened: bool) -> Self {
        Self { map, flattened }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        let value = if self.flattened {
            let qualified = self.map.get(&format!("__source_{name}"));
            qualified.or_else(|| self.map.get(&format!("__{name}")))
        } else {
            self.map.get(name)
        };
        value.filter(|value| !value.is_null())
    }
}

/// What a flattened record without position fields needs.
const PG_FLATTENED: &str = "a flattened record needs __source_sequence: \
    add source.sequence to the ExtractNewRecordState add.fields";
const MYSQL_FLATTENED: &str = "a flattened record needs __source_file, __source_pos and \
    __source_row: add source.file,source.pos,source.row to the ExtractNewRecordState add.fields";

fn position(fields: &Fields<'_>, dialect: CdcDialect) -> Result<ChangePosition, CdcError> {
    match dialect {
        CdcDialect::Postgres => postgres_position(fields),
        CdcDialect::Mysql => mysql_position(fields),
    }
}

fn postgres_position(fields: &Fields<'_>) -> Result<ChangePosition, CdcError> {
    let (last_commit, sequence_lsn) = match fields.get("sequence") {
        Some(sequence) => parse_sequence(sequence)?,
        None => (None, None),
    };
    let lsn = match (sequence_lsn, fields.get("lsn")) {
        (Some(lsn), _) => lsn,
        (None, Some(lsn)) => unsigned(lsn, "source.lsn")?,
        (None, None) if fields.flattened => return Err(CdcError::MissingPosition(PG_FLATTENED)),
        (None, None) => return Err(CdcError::MissingPosition("source has no sequence or lsn")),
    };
    Ok(ChangePosition::postgres(last_commit.unwrap_or(0), lsn))
}

/// `source.sequence`: JSON text (or, leniently, an array) of two decimal strings or nulls.
fn parse_sequence(sequence: &Value) -> Result<(Option<u64>, Option<u64>), CdcError> {
    const FIELD: &str = "source.sequence";
    let not_a_pair = || bad(FIELD, "is not a JSON array of two LSNs");
    let parsed;
    let pair = match sequence {
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text).map_err(|_| not_a_pair())?;
            &parsed
        }
        other => other,
    };
    let Some([last_commit, lsn]) = pair.as_array().map(Vec::as_slice) else {
        return Err(not_a_pair());
    };
    let element = |value: &Value| match value {
        Value::Null => Ok(None),
        value => unsigned(value, FIELD).map(Some),
    };
    Ok((element(last_commit)?, element(lsn)?))
}

fn mysql_position(fields: &Fields<'_>) -> Result<ChangePosition, CdcError> {
    let (Some(file), Some(pos), Some(row)) =
        (fields.get("file"), fields.get("pos"), fields.get("row"))
    else {
        let missing = if fields.flattened {
            MYSQL_FLATTENED
        } else {
            "source lacks file, pos or row"
        };
        return Err(CdcError::MissingPosition(missing));
    };
    let index = file
        .as_str()
        .and_then(|name| name.rsplit_once('.'))
        .and_then(|(_, suffix)| decimal(suffix))
        .ok_or_else(|| bad("source.file", "has no numeric suffix"))?;
    let (pos, row) = (unsigned(pos, "source.pos")?, unsigned(row, "source.row")?);
    ChangePosition::mysql(index, pos, row)
}

/// A non-negative 64-bit integer, as a JSON number or a decimal string.
fn unsigned(value: &Value, field: &'static str) -> Result<u64, CdcError> {
    let number = match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => decimal(text),
        _ => None,
    };
    number.ok_or_else(|| bad(field, "is not a non-negative 64-bit integer"))
}

/// ASCII digits only: `str::parse` would also take a leading `+`.
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn bad(field: &'static str, reason: &'static str) -> CdcError {
    CdcError::BadPosition { field, reason }
}

/// Configuration and connector names are echoed only when short and plain.
fn printable(name: &str) -> String {
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let shown = name.len() <= 40 && name.bytes().all(plain);
    (if shown { name } else { "(not shown)" }).to_owned()
}

/// The shapes Debezium gives the placeholder: text, `bytea` (base64 or hex), `text[]`,
/// `bytea[]` and `uuid[]` (one-element lists), `int[]`/`bigint[]` (the placeholder's bytes) and
/// `hstore` as a map.
fn is_unavailable(value: &Value) -> bool {
    let text = |s: &str| {
        s == UNAVAILABLE_VALUE || s == UNAVAILABLE_BASE64 || s.eq_ignore_ascii_case(UNAVAILABLE_HEX)
    };
    match value {
        Value::String(s) => text(s),
        Value::Array(items) => match items.as_slice() {
            [Value::String(s)] => text(s) || s == UNAVAILABLE_UUID,
            bytes => {
                bytes.len() == UNAVAILABLE_VALUE.len()
                    && bytes
                        .iter()
                        .zip(UNAVAILABLE_VALUE.bytes())
                        .all(|(n, b)| n.as_u64() == Some(u64::from(b)))
            }
        },
        Value::Object(map) => {
            map.len() == 1
                && map.get(UNAVAILABLE_VALUE).and_then(Value::as_str) == Some(UNAVAILABLE_VALUE)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PG: CdcDialect = CdcDialect::Postgres;
    const MY: CdcDialect = CdcDialect::Mysql;

    /// The PostgreSQL connector's documented create event.
    const PG_CREATE: &str = r#"{"before":null,
        "after":{"id":1,"first_name":"Anne","last_name":"Kretchmar","email":"annek@noanswer.org"},
        "source":{"version":"2.5.3.Final","connector":"postgresql","name":"PostgreSQL_server",
            "ts_ms":1559033904863,"snapshot":"false","db":"postgres",
            "sequence":"[\"24023119\",\"24023128\"]","schema":"public","table":"customers",
            "txId":555,"lsn":24023128,"xmin":null},
        "op":"c","ts_ms":1559033904863}"#;

    /// The MySQL connector's documented update event.
    const MYSQL_UPDATE: &str = r#"{
        "before":{"id":1004,"first_name":"Anne","last_name":"Kretchmar","email":"annek@noanswer.org"},
        "after":{"id":1004,"first_name":"Anne Marie","last_name":"Kretchmar","email":"annek@noanswer.org"},
        "source":{"version":"2.5.3.Final","connector":"mysql","name":"mysql-server-1",
            "ts_ms":1465581029100,"snapshot":"false","db":"inventory","table":"customers",
            "server_id":223344,"gtid":null,"file":"mysql-bin.000003","pos":484,"row":0,"thread":7,
            "query":"UPDATE customers SET first_name='Anne Marie' WHERE id=1004"},
        "op":"u","ts_ms":1465581029523}"#;

    fn change(event: &str, dialect: CdcDialect) -> Change {
        decode(event.as_bytes(), dialect).unwrap().unwrap()
    }

    fn error(event: &serde_json::Value, dialect: CdcDialect) -> CdcError {
        decode(event.to_string().as_bytes(), dialect).unwrap_err()
    }

    fn object(value: serde_json::Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    /// The position of a PostgreSQL update carrying the given `source` fields.
    fn pg(mut source: serde_json::Value) -> Result<ChangePosition, CdcError> {
        source["connector"] = json!("postgresql");
        let event = json!({"after": {"id": 1}, "op": "u", "source": source});
        Ok(decode(event.to_string().as_bytes(), PG)?.unwrap().position)
    }

    fn sequence(last_commit: &str, lsn: &str) -> ChangePosition {
        pg(json!({"sequence": json!([last_commit, lsn]).to_string()})).unwrap()
    }

    fn mysql(file: &str, pos: u64, row: u64) -> Result<ChangePosition, CdcError> {
        let source = json!({"connector": "mysql", "file": file, "pos": pos, "row": row});
        let event = json!({"after": {"id": 1}, "op": "c", "source": source});
        Ok(decode(event.to_string().as_bytes(), MY)?.unwrap().position)
    }

    fn bad_field(position: Result<ChangePosition, CdcError>) -> &'static str {
        match position {
            Err(CdcError::BadPosition { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_documented_example_decodes() {
        // Given the event of the doc example on `decode`
        let event = br#"{"before":null,"after":{"id":1,"email":"annek@noanswer.org"},
            "source":{"connector":"postgresql","sequence":"[\"24023119\",\"24023128\"]","lsn":24023128},
            "op":"c","ts_ms":1559033904863}"#;
        // When it is decoded
        let change = decode(event, PG).unwrap().unwrap();
        // Then it is what the example promises
        assert_eq!(change.op, ChangeOp::Upsert);
        assert_eq!(change.row["id"], 1);
        assert_eq!(change.position.as_u128(), (24023119 << 64) | 24023128);
        assert!(decode(b"", PG).unwrap().is_none());
    }

    #[test]
    fn a_postgres_create_is_an_upsert_of_after_at_its_sequence() {
        // Given the documented create event, When it is decoded
        let c = change(PG_CREATE, PG);
        // Then it upserts the after image at (last commit, lsn)
        assert_eq!((c.op, c.op_letter), (ChangeOp::Upsert, 'c'));
        assert_eq!(c.row["first_name"], "Anne");
        assert_eq!(c.position, ChangePosition::postgres(24023119, 24023128));
        assert!(c.unavailable.is_empty());
    }

    #[test]
    fn a_snapshot_read_counts_a_null_last_commit_as_zero() {
        // Given a snapshot read whose sequence has no last commit
        let event = (PG_CREATE.replace(r#""op":"c""#, r#""op":"r""#))
            .replace(r#"[\"24023119\","#, "[null,");
        // When it is decoded
        let c = change(&event, PG);
        // Then it is an upsert at (0, lsn)
        assert_eq!((c.op, c.op_letter), (ChangeOp::Upsert, 'r'));
        assert_eq!(c.position.as_i64(), Some(24023128));
    }

    #[test]
    fn an_update_upserts_after_with_or_without_before() {
        // Given MySQL's documented update (with before) and the same without before
        let mut without_before: serde_json::Value = serde_json::from_str(MYSQL_UPDATE).unwrap();
        without_before["before"] = json!(null);
        for event in [MYSQL_UPDATE.to_owned(), without_before.to_string()] {
            // When it is decoded
            let c = change(&event, MY);
            // Then the after image is upserted at (file 3, pos 484, row 0)
            assert_eq!((c.op, c.op_letter), (ChangeOp::Upsert, 'u'));
            assert_eq!(c.row["first_name"], "Anne Marie");
            assert_eq!(c.position, ChangePosition::mysql(3, 484, 0).unwrap());
        }
    }

    #[test]
    fn a_delete_keeps_before_and_one_without_before_is_refused() {
        // Given a PostgreSQL delete whose before holds only the key (REPLICA IDENTITY DEFAULT)
        let source = json!({"connector": "postgresql", "sequence": "[\"24023128\",\"24023200\"]"});
        let mut delete = json!({"before": {"id": 1}, "after": null, "op": "d", "source": source});
        // When it is decoded
        let c = change(&delete.to_string(), PG);
        // Then it deletes that key; without a before image it is refused
        assert_eq!(
            (c.op, c.op_letter, c.row),
            (ChangeOp::Delete, 'd', object(json!({"id": 1})))
        );
        delete["before"] = json!(null);
        assert_eq!(error(&delete, PG), CdcError::MissingBefore);
    }

    #[test]
    fn a_primary_key_change_is_a_delete_then_a_create() {
        // Given the pair Debezium emits for UPDATE customers SET id = 2 WHERE id = 1
        let source =
            json!({"connector": "mysql", "file": "mysql-bin.000003", "pos": 900, "row": 0});
        let delete = json!({"before": {"id": 1}, "after": null, "op": "d", "source": source});
        let create = json!({"before": null, "after": {"id": 2}, "op": "c", "source": source});
        // When both are decoded
        let (d, c) = (
            change(&delete.to_string(), MY),
            change(&create.to_string(), MY),
        );
        // Then the old key is deleted and the new one created
        assert_eq!((d.op, d.row["id"].clone()), (ChangeOp::Delete, json!(1)));
        assert_eq!((c.op, c.row["id"].clone()), (ChangeOp::Upsert, json!(2)));
    }

    #[test]
    fn tombstones_are_skipped() {
        // Given the values a tombstone can arrive as
        for value in ["", "  \n", "null", r#"{"schema":null,"payload":null}"#] {
            // When decoded, Then there is no change
            assert_eq!(decode(value.as_bytes(), PG), Ok(None), "{value:?}");
        }
    }

    #[test]
    fn the_schema_payload_wrapper_is_unwrapped() {
        // Given MySQL's update inside the JSON converter's schema/payload wrapper
        let wrapped = format!(
            r#"{{"schema":{{"type":"struct","optional":false,
                "name":"mysql-server-1.inventory.customers.Envelope","fields":[]}},
              "payload":{MYSQL_UPDATE}}}"#
        );
        // When it is decoded, Then it is the payload's change
        assert_eq!(change(&wrapped, MY), change(MYSQL_UPDATE, MY));
    }

    #[test]
    fn a_flattened_record_drops_its_metadata_fields_and_reads_their_position() {
        // Given ExtractNewRecordState output, add.fields=op,table,lsn,source.ts_ms,source.sequence
        let pg = r#"{"id":1,"first_name":"Anne","__op":"u","__table":"customers","__lsn":24023128,
            "__source_ts_ms":1559033904863,"__source_sequence":"[\"24023119\",\"24023128\"]",
            "__deleted":"false"}"#;
        // and MySQL's with add.fields=op,file,pos,row (unqualified names)
        let my = r#"{"id":1004,"__op":"c","__file":"mysql-bin.000003","__pos":154,"__row":1}"#;
        // When they are decoded
        let (p, m) = (change(pg, PG), change(my, MY));
        // Then the rows lose the __ fields and the positions come from them
        assert_eq!(p.row, object(json!({"id": 1, "first_name": "Anne"})));
        assert_eq!((p.op, p.op_letter), (ChangeOp::Upsert, 'u'));
        assert_eq!(p.position, ChangePosition::postgres(24023119, 24023128));
        assert_eq!(m.op_letter, 'c');
        assert_eq!(m.position, ChangePosition::mysql(3, 154, 1).unwrap());
    }

    #[test]
    fn a_rewritten_flattened_delete_is_a_delete() {
        // Given rewritten deletes: __deleted as a string or a boolean, with or without __op
        let with_op =
            r#"{"id":1,"first_name":null,"__op":"d","__deleted":"true","__lsn":24023200}"#;
        let string = r#"{"id":2,"first_name":null,"__deleted":"true","__lsn":24023200}"#;
        let boolean = r#"{"id":3,"__deleted":true,"__source_lsn":24023300}"#;
        for (event, id) in [(with_op, 1), (string, 2), (boolean, 3)] {
            // When decoded
            let c = change(event, PG);
            // Then each deletes its key
            assert_eq!((c.op, c.op_letter), (ChangeOp::Delete, 'd'));
            assert_eq!(c.row["id"], id);
        }
    }

    #[test]
    fn a_flattened_record_without_op_or_position_names_the_add_fields_to_set() {
        // Given flattened records missing __op, or every position field
        let no_op = json!({"id": 1, "__source_sequence": "[\"1\",\"2\"]"});
        let no_position = json!({"id": 1, "__op": "c", "__source_ts_ms": 1});
        // When decoded, Then each error says what to add to add.fields
        assert_eq!(error(&no_op, PG), CdcError::MissingFlattenedOp);
        let (pg, my) = (error(&no_position, PG), error(&no_position, MY));
        assert!(pg
            .to_string()
            .contains("add source.sequence to the ExtractNewRecordState"));
        assert!(my
            .to_string()
            .contains("add source.file,source.pos,source.row to the"));
    }

    #[test]
    fn unchanged_toast_columns_are_listed_as_unavailable() {
        // Given an update whose TOASTed text, bytea, text[] and int[] columns did not change
        let bytes: Vec<u8> = UNAVAILABLE_VALUE.bytes().collect();
        let after = json!({"id": 1, "note": UNAVAILABLE_VALUE, "blob": UNAVAILABLE_BASE64,
            "tags": [UNAVAILABLE_VALUE], "ints": bytes, "name": "Anne", "nums": [1, 2]});
        let event = json!({"op": "u", "after": after, "source": {"lsn": 7}});
        // When it is decoded
        let c = change(&event.to_string(), PG);
        // Then exactly those columns are unavailable, and they stay in the row
        let mut unavailable = c.unavailable.clone();
        unavailable.sort();
        assert_eq!(unavailable, ["blob", "ints", "note", "tags"]);
        assert_eq!(c.row["note"], UNAVAILABLE_VALUE);
    }

    #[test]
    fn truncate_message_unknown_and_missing_ops_are_refused() {
        // Given events with op t, m, x and none
        let event = |op| json!({"before": null, "after": null, "op": op, "source": {"lsn": 1}});
        // When decoded, Then each is refused with its reason
        let truncate = error(&event(json!("t")), PG).to_string();
        assert_eq!(truncate, "truncate events (op t) are not supported");
        let message = error(&event(json!("m")), PG).to_string();
        assert_eq!(message, "message events (op m) are not supported");
        assert_eq!(error(&event(json!("x")), PG), CdcError::UnknownOp);
        assert_eq!(error(&event(json!(null)), PG), CdcError::MissingOp);
    }

    #[test]
    fn an_event_of_another_connector_is_refused() {
        // Given MySQL's update, and a MongoDB event
        let mysql: serde_json::Value = serde_json::from_str(MYSQL_UPDATE).unwrap();
        let mut mongo = mysql.clone();
        mongo["source"]["connector"] = json!("mongodb");
        // When decoded on a PostgreSQL route
        let (mysql, mongo) = (error(&mysql, PG).to_string(), error(&mongo, PG).to_string());
        // Then the error names both dialects, or says which connectors are supported
        let expected = "the change event comes from the mysql connector, but the route's dialect";
        assert_eq!(mysql, format!("{expected} is postgresql"));
        let expected = "only PostgreSQL and MySQL change events are supported (connector mongodb)";
        assert_eq!(mongo, expected);
    }

    #[test]
    fn errors_never_echo_row_values() {
        // Given broken events that hold a secret in their row or position fields
        let secret = "hunter2-secret";
        let not_json = format!(r#"{{"after":{{"pw":"{secret}"}},"op":"c","source":{{"lsn":1"#);
        let broken = [
            (
                PG,
                json!({"after": {"pw": secret}, "op": secret, "source": {"lsn": 1}}).to_string(),
            ),
            (
                PG,
                json!({"after": {"pw": secret}, "op": "c", "source": {"sequence": secret}})
                    .to_string(),
            ),
            (
                PG,
                json!({"after": {"pw": secret}, "op": "c", "source": {"lsn": secret}}).to_string(),
            ),
            (
                PG,
                json!({"before": {"pw": secret}, "op": "c", "source": {"lsn": 1}}).to_string(),
            ),
            (
                MY,
                json!({"pw": secret, "__op": "c", "__file": secret, "__pos": 1, "__row": 0})
                    .to_string(),
            ),
            (
                MY,
                json!({"pw": secret, "__op": "c", "__file": "b.1", "__pos": secret, "__row": 0})
                    .to_string(),
            ),
            (PG, format!(r#"["{secret}"]"#)),
            (PG, not_json),
        ];
        for (dialect, event) in broken {
            // When decoded
            let message = decode(event.as_bytes(), dialect).unwrap_err().to_string();
            // Then the message does not contain it
            assert!(!message.contains(secret), "{message}");
        }
    }

    #[test]
    fn postgres_positions_compare_lsns_as_numbers() {
        // Given LSNs of different digit counts, in the sequence and in source.lsn alone
        // When compared, Then 9999 is before 10000
        assert!(sequence("1", "9999") < sequence("1", "10000"));
        assert!(sequence("9999", "5") < sequence("10000", "5"));
        assert!(pg(json!({"lsn": 9999})).unwrap() < pg(json!({"lsn": 10000})).unwrap());
    }

    #[test]
    fn postgres_positions_follow_commit_order_not_lsn() {
        // Given transaction B (changes at 104, 106) committed at 108, before A (changes at 103,
        // 105) commits; the commit before both was at 100
        let (b_last, a_first) = (sequence("100", "106"), sequence("108", "103"));
        // When compared, Then A's changes come after B's although their LSNs are smaller
        assert!(b_last < a_first);
        // and the same LSN with a later last commit is newer
        assert!(sequence("100", "500") < sequence("200", "500"));
    }

    #[test]
    fn a_postgres_position_falls_back_to_lsn_and_refuses_a_malformed_sequence() {
        // Given a source without sequence, or with a sequence whose lsn is null
        // When decoded, Then the position is (0, lsn), or (last commit, source.lsn)
        assert_eq!(pg(json!({"lsn": 42})).unwrap().as_i64(), Some(42));
        let null_lsn = pg(json!({"sequence": "[\"7\",null]", "lsn": 42}));
        assert_eq!(null_lsn.unwrap(), ChangePosition::postgres(7, 42));
        // Given malformed sequences or none at all, Then they are refused
        for text in [
            r#"["-1","5"]"#,
            r#"["+1","5"]"#,
            r#"["1"]"#,
            "[1,2,3]",
            "not json",
        ] {
            let position = pg(json!({"sequence": text, "lsn": 1}));
            assert_eq!(bad_field(position), "source.sequence", "{text}");
        }
        assert!(matches!(pg(json!({})), Err(CdcError::MissingPosition(_))));
    }

    #[test]
    fn mysql_positions_order_by_file_then_pos_then_row() {
        // Given binlog rollovers, and rows of one event
        let at = |file: &str, pos, row| mysql(&format!("mysql-bin.{file}"), pos, row).unwrap();
        // When compared, Then the next file is newer whatever its pos, and row 1 follows row 0
        assert!(at("000009", 9999, 0) < at("000010", 4, 0));
        assert!(at("999999", 4, 0) < at("1000000", 4, 0));
        assert!(at("000003", 484, 0) < at("000003", 484, 1));
        assert!(at("000003", 484, 65535) < at("000003", 485, 0));
    }

    #[test]
    fn mysql_positions_beyond_their_bits_or_without_a_file_index_are_refused() {
        // Given a pos of 2^48, a row of 2^16 and a file name without a numeric suffix
        // When decoded, Then each is refused by field name
        assert_eq!(
            bad_field(mysql("mysql-bin.000001", 1 << 48, 0)),
            "source.pos"
        );
        assert!(mysql("mysql-bin.000001", (1 << 48) - 1, 0).is_ok());
        assert_eq!(
            bad_field(mysql("mysql-bin.000001", 4, 1 << 16)),
            "source.row"
        );
        assert_eq!(bad_field(mysql("mysql-bin", 4, 0)), "source.file");
    }

    #[test]
    fn positions_print_as_decimal_and_fit_i64_only_when_small() {
        // Given a position without and with a last commit
        let (small, large) = (
            ChangePosition::postgres(0, 42),
            ChangePosition::postgres(1, 0),
        );
        // When printed, Then they read as the u128 in decimal
        assert_eq!(
            (small.to_decimal_string().as_str(), small.as_i64()),
            ("42", Some(42))
        );
        assert_eq!(
            (large.to_string().as_str(), large.as_i64()),
            ("18446744073709551616", None)
        );
        assert_eq!(ChangePosition::from_u128(large.as_u128()), large);
    }

    #[test]
    fn dialects_parse_from_their_connector_names() {
        assert_eq!("postgresql".parse::<CdcDialect>(), Ok(PG));
        assert_eq!("mysql".parse::<CdcDialect>(), Ok(MY));
        let oracle = "oracle".parse::<CdcDialect>();
        assert_eq!(oracle, Err(CdcError::UnknownDialect("oracle".into())));
    }
}
