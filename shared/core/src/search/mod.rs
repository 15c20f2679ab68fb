//! The search-index sink's pure half: what a route's `[route.index]` says, compiled once at
//! start-up into an [`IndexPlan`] (index name, document id, fields and their index types,
//! how a newer event wins), and the `_bulk` requests and answers of [`bulk`].
//!
//! Exactly once by idempotence: a document's id is the route's key (by default), so a newer
//! revision replaces the older one; with `merge = { newest_by = … }` every write carries an
//! external version ([`version`]), so a write sent again after a crash or a lost answer, or an
//! older revision arriving late, is refused by the index as "already this version or newer"
//! (a 409, counted as done); with `keep-first` every write is create-only, and a 409 means the
//! first event is there. No I/O here: the adapter sends what [`bulk`] encodes.
//!
//! ```
//! use streamload_core::route::{ConfigFile, Routes};
//! let file: ConfigFile = serde_json::from_value(serde_json::json!({"route": [{
//!     "name": "orders", "source": "kinesis:orders", "table": "orders",
//!     "event_time": "/placed_at", "key": ["order_id"],
//!     "merge": {"newest_by": "revision"},
//!     "index": {"name": "orders-{yyyy.MM}"},
//!     "column": [
//!         {"name": "order_id", "from": "/order_id", "type": "text", "required": true},
//!         {"name": "revision", "from": "/revision", "type": "bigint", "required": true},
//!         {"name": "placed_at", "from": "/placed_at", "type": "timestamptz", "required": true}
//!     ]
//! }]}))
//! .unwrap();
//! // A monthly index needs its time in the document id or an identity equal to the key:
//! // here a revision of an order placed in one month could otherwise stay behind in it.
//! let problems = Routes::compile(&file).unwrap_err().0;
//! assert!(problems[0].contains("index name"), "{problems:?}");
//! ```

pub mod bulk;
pub mod memory;
pub mod version;

use crate::route::{value::uuid_text, Column, ColumnType, Merge, Value};
use serde::Deserialize;
use version::VersionOf;

/// Longest document id the engines accept, in UTF-8 bytes (OpenSearch ≥ 2.9, Elasticsearch):
/// a longer one fails the whole `_bulk` request, so it is caught before sending.
pub const MAX_ID_BYTES: usize = 512;
/// Longest index name, in bytes.
pub const MAX_INDEX_NAME_BYTES: usize = 255;
/// Keyword fields index values up to this many characters and keep longer ones in the source
/// only: Lucene refuses a term over 32,766 bytes, and 8,191 characters of up to 4 bytes each
/// stay under it.
pub const KEYWORD_IGNORE_ABOVE: usize = 8191;
/// The largest `numeric` precision stored as a `scaled_float` (a double's 15 exact digits);
/// a wider one is kept as exact keyword text.
const MAX_SCALED_FLOAT_PRECISION: u8 = 15;

/// One `[route.index]` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexSpec {
    /// The index, or a pattern over the event time: `events-{yyyy.MM.dd}`, `{yyyy.MM}`,
    /// `{yyyy}` (UTC).
    pub name: String,
    /// The columns of the document id; default: the route's key.
    #[serde(default)]
    pub id: Option<Vec<String>>,
    /// The columns in the document; default: every table column.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
}

/// One piece of an index name: text as written, or a part of the event time.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NamePart {
    Literal(String),
    /// A `chrono` format of the UTC event time (`%Y.%m.%d`).
    Time(String),
}

/// How a document meets the one already under its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// `index` with `version_type = external`: written only over an older version.
    External(VersionOf),
    /// `create`: written only where no document is (keep-first).
    Create,
}

/// The index type of a field, as put in a mapping.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldType {
    Keyword,
    Integer,
    Long,
    Double,
    ScaledFloat(u64),
    Boolean,
    Date,
    DateOnly,
    /// Kept in the source, not indexed (`object`, `enabled: false`): jsonb of any shape.
    Opaque,
}

impl FieldType {
    fn of(ty: ColumnType) -> Self {
        match ty {
            ColumnType::Text | ColumnType::Uuid => FieldType::Keyword,
            ColumnType::Integer => FieldType::Integer,
            ColumnType::Bigint => FieldType::Long,
            ColumnType::Double => FieldType::Double,
            ColumnType::Numeric {
                precision: Some(p),
                scale,
            } if p <= MAX_SCALED_FLOAT_PRECISION => {
                FieldType::ScaledFloat(10u64.pow(u32::from(scale.unwrap_or(0))))
            }
            ColumnType::Numeric { .. } => FieldType::Keyword,
            ColumnType::Boolean => FieldType::Boolean,
            ColumnType::Timestamptz { .. } => FieldType::Date,
            ColumnType::Date => FieldType::DateOnly,
            ColumnType::Jsonb => FieldType::Opaque,
        }
    }

    /// The mapping type's name, as a mapping reads back.
    pub fn type_name(&self) -> &'static str {
        match self {
            FieldType::Keyword => "keyword",
            FieldType::Integer => "integer",
            FieldType::Long => "long",
            FieldType::Double => "double",
            FieldType::ScaledFloat(_) => "scaled_float",
            FieldType::Boolean => "boolean",
            FieldType::Date | FieldType::DateOnly => "date",
            FieldType::Opaque => "object",
        }
    }

    /// The field's mapping, as JSON.
    pub fn mapping(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            FieldType::Keyword => json!({"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}),
            FieldType::Integer => json!({"type": "integer"}),
            FieldType::Long => json!({"type": "long"}),
            FieldType::Double => json!({"type": "double"}),
            FieldType::ScaledFloat(f) => json!({"type": "scaled_float", "scaling_factor": f}),
            FieldType::Boolean => json!({"type": "boolean"}),
            FieldType::Date => json!({"type": "date", "format": "strict_date_optional_time"}),
            FieldType::DateOnly => json!({"type": "date", "format": "strict_date"}),
            FieldType::Opaque => json!({"type": "object", "enabled": false}),
        }
    }
}

/// A route's index, compiled: everything the encoder needs, resolved once.
#[derive(Debug, Clone)]
pub struct IndexPlan {
    name: Vec<NamePart>,
    /// Column indices of the document id.
    pub id: Vec<usize>,
    /// (column index, field name, type) of each field of the document.
    pub fields: Vec<(usize, String, FieldType)>,
    pub write: WriteMode,
    /// The newest_by column, with [`WriteMode::External`].
    version_column: Option<usize>,
    /// The timestamptz column a name pattern reads.
    time_column: Option<usize>,
}

/// Whether `name` may be (part of) an index name: lower case, none of `\ / * ? " < > | , # :`
/// or spaces.
fn valid_name_text(name: &str) -> bool {
    !name.chars().any(|c| {
        c.is_ascii_uppercase()
            || matches!(
                c,
                '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ',' | '#' | ':' | ' '
            )
    })
}

/// Splits `events-{yyyy.MM.dd}` into its literal and time parts; `Err` names what is wrong.
fn parse_name(name: &str) -> Result<Vec<NamePart>, String> {
    let mut parts = Vec::new();
    let mut rest = name;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(NamePart::Literal(rest[..open].to_owned()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("index name {name:?}: a `{{` without its `}}`"))?;
        let pattern = &rest[open + 1..open + close];
        let format = match pattern {
            "yyyy.MM.dd" => "%Y.%m.%d",
            "yyyy-MM-dd" => "%Y-%m-%d",
            "yyyy.MM" => "%Y.%m",
            "yyyy-MM" => "%Y-%m",
            "yyyy" => "%Y",
            other => {
                return Err(format!(
                    "index name {name:?}: {{{other}}} is not one of {{yyyy.MM.dd}}, {{yyyy-MM-dd}}, {{yyyy.MM}}, {{yyyy-MM}}, {{yyyy}}"
                ))
            }
        };
        parts.push(NamePart::Time(format.to_owned()));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(NamePart::Literal(rest.to_owned()));
    }
    let literal: String = parts
        .iter()
        .filter_map(|p| match p {
            NamePart::Literal(l) => Some(l.as_str()),
            NamePart::Time(_) => None,
        })
        .collect();
    if name.is_empty()
        || !valid_name_text(&literal)
        || literal.contains('}')
        || name.starts_with(['_', '-', '+'])
        || name == "."
        || name == ".."
        || name.len() > MAX_INDEX_NAME_BYTES
    {
        return Err(format!(
            "index name {name:?} is not a valid index name (lower case; none of \\ / * ? \" < > | , # : or spaces; not starting with _ - +; at most {MAX_INDEX_NAME_BYTES} bytes)"
        ));
    }
    Ok(parts)
}

/// What the route compiler knows that an index plan needs.
pub struct RouteFacts<'a> {
    pub columns: &'a [Column],
    pub key: &'a [usize],
    pub identity: &'a [usize],
    pub merge: Merge,
    pub event_time: Option<usize>,
    /// A `[route.cdc]` route: its `newest_by` is the change position.
    pub cdc: Option<crate::cdc::CdcDialect>,
}

impl IndexPlan {
    /// Compiles `spec` for a route; each problem is one line naming the field (the caller
    /// prefixes the route).
    pub fn compile(spec: &IndexSpec, route: &RouteFacts<'_>) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let by_name = |n: &str| route.columns.iter().position(|c| c.name == n);
        let name = parse_name(&spec.name).unwrap_or_else(|e| {
            problems.push(e);
            Vec::new()
        });
        let id: Vec<usize> = match &spec.id {
            None => route.key.to_vec(),
            Some(names) if names.is_empty() => {
                problems.push("index id names no column".to_owned());
                Vec::new()
            }
            Some(names) => names
                .iter()
                .filter_map(|n| match by_name(n) {
                    Some(i) if route.columns[i].ty != ColumnType::Jsonb => Some(i),
                    Some(_) => {
                        problems.push(format!("index id column {n:?} is jsonb"));
                        None
                    }
                    None => {
                        problems.push(format!("index id column {n:?} is not a [[route.column]]"));
                        None
                    }
                })
                .collect(),
        };
        let id_resolved = spec
            .id
            .as_ref()
            .is_some_and(|names| names.len() == id.len());
        if id_resolved && !route.key.iter().all(|k| id.contains(k)) {
            // Two rows of the table (two keys) would share one document otherwise.
            problems.push(
                "index id must hold every key column: two rows of the table would share a document"
                    .to_owned(),
            );
        }
        let fields: Vec<(usize, String, FieldType)> = match &spec.columns {
            None => route
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.lake_only)
                .map(|(i, c)| (i, c.name.clone(), FieldType::of(c.ty)))
                .collect(),
            Some(names) => names
                .iter()
                .filter_map(|n| match by_name(n) {
                    Some(i) => Some((i, n.clone(), FieldType::of(route.columns[i].ty))),
                    None => {
                        problems.push(format!("index column {n:?} is not a [[route.column]]"));
                        None
                    }
                })
                .collect(),
        };
        if let Some((_, n, _)) = fields.iter().find(|(_, n, _)| n.starts_with('_')) {
            problems.push(format!(
                "index column {n:?} starts with `_`, which the index keeps for its own fields"
            ));
        }
        let (write, version_column) = match route.merge {
            Merge::KeepFirst => (WriteMode::Create, None),
            Merge::NewestBy(n) => match route
                .cdc
                .map(VersionOf::ChangePosition)
                .ok_or("")
                .or_else(|_| VersionOf::for_column(route.columns[n].ty))
            {
                Ok(v) => (WriteMode::External(v), Some(n)),
                Err(ty) => {
                    problems.push(format!(
                        "newest_by column {:?} ({ty}) cannot be an index version (64-bit, ordered); use an integer, bigint, timestamptz, date or numeric(p ≤ 18) column",
                        route.columns[n].name
                    ));
                    (WriteMode::Create, None)
                }
            },
        };
        let patterned = name.iter().any(|p| matches!(p, NamePart::Time(_)));
        let time_column = if patterned {
            match route.event_time {
                None => {
                    problems.push(format!(
                        "index name {:?} has a time pattern, and the route names no event_time",
                        spec.name
                    ));
                    None
                }
                Some(t) => {
                    // The id is unique per index, not across a pattern's indices: every
                    // revision of a document must fall in one index.
                    let same = |a: &[usize], b: &[usize]| {
                        a.len() == b.len() && a.iter().all(|x| b.contains(x))
                    };
                    let confined = id.contains(&t)
                        || (same(route.identity, route.key) && same(&id, route.key));
                    if !confined {
                        problems.push(format!(
                            "index name {:?}: a time pattern needs the event_time column {:?} in the index id, or an identity equal to the key; otherwise revisions of one document could land in different indices",
                            spec.name, route.columns[t].name
                        ));
                    }
                    Some(t)
                }
            }
        } else {
            None
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            name,
            id,
            fields,
            write,
            version_column,
            time_column,
        })
    }

    /// Whether the index name has a time pattern (the index is made per period from a
    /// template).
    pub fn is_pattern(&self) -> bool {
        self.time_column.is_some()
    }

    /// The pattern an index template matches: the literal text with `*` for each time part
    /// (`events-*`); the name itself without a pattern.
    pub fn template_pattern(&self) -> String {
        self.name
            .iter()
            .map(|p| match p {
                NamePart::Literal(l) => l.as_str(),
                NamePart::Time(_) => "*",
            })
            .collect()
    }

    /// The index of an event with `values`.
    pub fn index_name(&self, values: &[Value]) -> String {
        let time = self
            .time_column
            .and_then(|t| match values.get(t) {
                Some(Value::Timestamp(us)) => chrono::DateTime::from_timestamp_micros(*us),
                _ => None,
            })
            .unwrap_or_default();
        self.name
            .iter()
            .map(|p| match p {
                NamePart::Literal(l) => l.clone(),
                NamePart::Time(f) => time.format(f).to_string(),
            })
            .collect()
    }

    /// The document id of an event: one column's identity text, or several as a JSON array
    /// of their texts.
    pub fn document_id(&self, values: &[Value]) -> String {
        let text = |i: usize| values.get(i).map(|v| v.identity_text()).unwrap_or_default();
        match self.id.as_slice() {
            [one] => text(*one).into_owned(),
            many => {
                let parts: Vec<String> = many.iter().map(|&i| text(i).into_owned()).collect();
                serde_json::to_string(&parts).unwrap_or_default()
            }
        }
    }

    /// The external version of an event (with [`WriteMode::External`]).
    pub fn version(&self, values: &[Value]) -> Result<Option<u64>, &'static str> {
        match (self.write, self.version_column) {
            (WriteMode::External(of), Some(c)) => {
                of.version(values.get(c).unwrap_or(&Value::Null)).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Why an event cannot be written to the index whatever the index holds (an id too long,
    /// an empty id, a version out of range), checked before any sink sees the event: such an
    /// action would fail its whole `_bulk` request, not itself alone.
    pub fn check(&self, values: &[Value]) -> Result<(), String> {
        self.action(values).map(|_| ())
    }

    /// The document id and version of an event's action, or why it has none
    /// ([`IndexPlan::check`]).
    pub fn action(&self, values: &[Value]) -> Result<(String, Option<u64>), String> {
        let id = self.document_id(values);
        if id.is_empty() {
            return Err("the index document id is empty".to_owned());
        }
        if id.len() > MAX_ID_BYTES {
            return Err(format!(
                "the index document id is {} bytes, over the index's {MAX_ID_BYTES}",
                id.len()
            ));
        }
        let version = self.version(values).map_err(str::to_owned)?;
        Ok((id, version))
    }

    /// Each field's index type name (`keyword`, `long`, …), as a mapping reads back.
    pub fn field_types(&self) -> std::collections::HashMap<String, String> {
        self.fields
            .iter()
            .map(|(_, name, ty)| (name.clone(), ty.type_name().to_owned()))
            .collect()
    }

    /// The mapping of an index made for this route: its fields, `dynamic: strict` (a field
    /// the route does not name is a mistake, refused, not guessed).
    pub fn mapping(&self) -> serde_json::Value {
        let properties: serde_json::Map<String, serde_json::Value> = self
            .fields
            .iter()
            .map(|(_, name, ty)| (name.clone(), ty.mapping()))
            .collect();
        serde_json::json!({"dynamic": "strict", "properties": properties})
    }

    /// Appends the document of `values` (its fields, as JSON) to `out`. A null field is left
    /// out, as the engines index nothing for it: the document is smaller, and a field added
    /// to the route later does not fail the documents that lack it against an older mapping.
    pub fn write_document(&self, values: &[Value], out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        for (i, name, ty) in &self.fields {
            let value = values.get(*i).unwrap_or(&Value::Null);
            if value.is_null() {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            push_json_string(out, name);
            out.push(b':');
            write_value(value, ty, out);
        }
        out.push(b'}');
    }
}

/// The first field whose type in the index differs from the route's, as one line.
pub fn compare_fields(
    route: &str,
    index: &str,
    held: &std::collections::HashMap<String, String>,
    wanted: &std::collections::HashMap<String, String>,
) -> Result<(), crate::error::PortError> {
    let mut names: Vec<&String> = wanted.keys().collect();
    names.sort();
    for name in names {
        let want = &wanted[name];
        match held.get(name) {
            Some(have) if have == want => {}
            Some(have) => {
                return Err(crate::error::PortError::permanent(format!(
                    "route {route:?}: search index {index:?} field {name:?} is {have}, the route writes {want}"
                )))
            }
            None => {
                return Err(crate::error::PortError::permanent(format!(
                    "route {route:?}: search index {index:?} has no field {name:?} (the route writes {want}); add it to the index's mapping"
                )))
            }
        }
    }
    Ok(())
}

/// Appends `s` as a JSON string.
pub(crate) fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends one field's value as the index reads it.
fn write_value(value: &Value, ty: &FieldType, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Text(t) => push_json_string(out, t.as_ref()),
        Value::Int(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::Double(d) if d.is_finite() => out.extend_from_slice(d.to_string().as_bytes()),
        Value::Double(_) => out.extend_from_slice(b"null"),
        Value::Numeric { text, .. } => match ty {
            FieldType::Keyword => push_json_string(out, text),
            _ => out.extend_from_slice(text.as_bytes()),
        },
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Timestamp(us) => {
            let t = chrono::DateTime::from_timestamp_micros(*us).unwrap_or_default();
            push_json_string(out, &t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
        }
        Value::Date(days) => {
            let d =
                chrono::DateTime::from_timestamp(i64::from(*days) * 86_400, 0).unwrap_or_default();
            push_json_string(out, &d.format("%Y-%m-%d").to_string());
        }
        Value::Uuid(u) => push_json_string(out, &uuid_text(u)),
        // jsonb is JSON text as sent: the document holds it as is.
        Value::Json(j) => out.extend_from_slice(j.as_ref().as_bytes()),
    }
}

#[cfg(test)]
mod tests;
