//! Routes: where records come from, how their fields become columns, what identifies one
//! event and how a table row is merged — as data, not code.
//!
//! A configuration file ([`ConfigFile`], TOML in the runtime) lists routes; [`Routes::compile`]
//! checks it and compiles each route into a plan once at start-up: a JSON Pointer trie for
//! one-pass extraction, typed converters, the Parquet schema and writer properties. Per record
//! nothing is looked up by name. Without a file the loader runs [`Routes::builtin`], the
//! events contract of the first release (same table, same Parquet columns, same claim keys).
//!
//! The claim protocol does not depend on routes: a route only says how a record's claim key
//! is formed (`<claim_prefix><identity>`) and which lake prefix its objects go under.
//!
//! ```
//! use streamload_core::route::{ConfigFile, Routes};
//! let file: ConfigFile = serde_json::from_value(serde_json::json!({"route": [{
//!     "name": "orders", "source": "kinesis:orders", "table": "sales.orders",
//!     "event_time": "/placed_at", "key": ["order_id"],
//!     "column": [
//!         {"name": "order_id", "from": "/order_id", "type": "text", "required": true},
//!         {"name": "placed_at", "from": "/placed_at", "type": "timestamptz", "required": true}
//!     ]
//! }]})).unwrap();
//! let routes = Routes::compile(&file).unwrap();
//! assert_eq!(routes.get(0).claim_prefix, "rt:orders:");
//! ```

pub mod cdc;
mod extract;
pub mod iceberg;
pub mod value;

pub use value::{ColumnType, EpochUnit, Value};

use crate::event::{Poison, PoisonKind, MAX_EVENT_ID_BYTES};
use crate::record::{Origin, SourceRecord, SourceUnit};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use extract::{ExtractError, Node};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::Arc;

/// The start of every poison record's claim key (`dl:<unit>:<position>:<digest>`).
pub const POISON_CLAIM_PREFIX: &str = "dl:";

/// The parsed configuration file: `[[route]]` tables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub route: Vec<RouteSpec>,
}

/// One `[[route]]` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub name: String,
    pub source: String,
    /// The PostgreSQL table; a route without one writes its search index and the lake only.
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub lake_prefix: Option<String>,
    /// `lake = false`: no Parquet objects; the route's commit markers are small JSON-lines
    /// objects under `<lake_prefix>_markers/` instead. Default true.
    #[serde(default)]
    pub lake: Option<bool>,
    #[serde(default)]
    pub event_time: Option<String>,
    #[serde(default)]
    pub identity: Option<Vec<String>>,
    pub key: Vec<String>,
    #[serde(default)]
    pub merge: Option<MergeSpec>,
    #[serde(default)]
    pub auto_migrate: Option<String>,
    /// Claim keys are `<claim_prefix><identity>`; default `rt:<name>:`. The built-in events
    /// route uses `ev:`, which a route taking its place sets to keep the dedup memory.
    #[serde(default)]
    pub claim_prefix: Option<String>,
    /// A table column set to `now()` whenever a row is replaced.
    #[serde(default)]
    pub updated_at_column: Option<String>,
    /// `[route.index]`: the search index the route's events also go to.
    #[serde(default)]
    pub index: Option<crate::search::IndexSpec>,
    /// `[route.iceberg]`: the Iceberg table the table committer builds from the staged objects.
    #[serde(default)]
    pub iceberg: Option<iceberg::IcebergSpec>,
    /// `[route.cdc]`: the records are Debezium change events of one source table.
    #[serde(default)]
    pub cdc: Option<cdc::CdcSpec>,
    #[serde(rename = "column", default)]
    pub columns: Vec<ColumnSpec>,
}

/// `merge = "keep-first"` or `merge = { newest_by = "<column>" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MergeSpec {
    Named(String),
    NewestBy { newest_by: String },
}

/// One `[[route.column]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    pub name: String,
    pub from: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub precision: Option<u8>,
    #[serde(default)]
    pub scale: Option<u8>,
    #[serde(default)]
    pub unit: Option<String>,
    /// Written to the lake only, not to the table.
    #[serde(default)]
    pub lake_only: bool,
}

/// Which records a route takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceMatch {
    Kinesis(String),
    Kafka(String),
    Any,
}

impl SourceMatch {
    fn parse(text: &str) -> Option<Self> {
        if text == "*" {
            return Some(SourceMatch::Any);
        }
        let (kind, name) = text.split_once(':')?;
        if name.is_empty() {
            return None;
        }
        match kind {
            "kinesis" => Some(SourceMatch::Kinesis(name.to_owned())),
            "kafka" => Some(SourceMatch::Kafka(name.to_owned())),
            _ => None,
        }
    }

    fn matches(&self, record: &SourceRecord) -> bool {
        match (self, &record.origin) {
            (SourceMatch::Any, _) => true,
            (SourceMatch::Kinesis(name), Origin::Kinesis { stream_arn, .. }) => {
                stream_name(stream_arn) == name
            }
            (SourceMatch::Kafka(topic), Origin::Kafka { .. }) => record
                .unit
                .topic_partition
                .as_ref()
                .is_some_and(|(t, _)| t == topic),
            _ => false,
        }
    }
}

/// The stream name of a Kinesis stream ARN (`arn:aws:kinesis:…:stream/<name>`).
fn stream_name(arn: &str) -> &str {
    arn.rsplit_once(":stream/").map_or(arn, |(_, name)| name)
}

/// A record's metadata that a column can take (`from = "@…"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meta {
    Key,
    Topic,
    Partition,
    Offset,
    Timestamp,
    Stream,
    Shard,
    Sequence,
    /// A KPL user record's place in its aggregate (null for a record of its own).
    SubSequence,
    PartitionKey,
    Arrival,
    SchemaId,
    /// A change event's op, position or delete flag (`[route.cdc]` routes only).
    Change(cdc::ChangeMeta),
}

impl Meta {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "@key" => Meta::Key,
            "@topic" => Meta::Topic,
            "@partition" => Meta::Partition,
            "@offset" => Meta::Offset,
            "@timestamp" => Meta::Timestamp,
            "@stream" => Meta::Stream,
            "@shard" => Meta::Shard,
            "@sequence" => Meta::Sequence,
            "@sub_sequence" => Meta::SubSequence,
            "@partition_key" => Meta::PartitionKey,
            "@arrival" => Meta::Arrival,
            "@schema_id" => Meta::SchemaId,
            other => Meta::Change(cdc::ChangeMeta::parse(other)?),
        })
    }

    /// Whether a column of `ty` can hold this metadata.
    fn fits(self, ty: ColumnType) -> bool {
        use ColumnType as T;
        match self {
            Meta::Partition => matches!(ty, T::Integer | T::Bigint | T::Text),
            Meta::Offset => matches!(ty, T::Bigint | T::Numeric { .. } | T::Text),
            Meta::Sequence => matches!(ty, T::Numeric { .. } | T::Text),
            Meta::SubSequence => matches!(ty, T::Integer | T::Bigint | T::Text),
            Meta::Timestamp | Meta::Arrival => matches!(ty, T::Timestamptz { .. } | T::Bigint),
            Meta::Change(m) => m.fits(ty),
            _ => matches!(ty, T::Text),
        }
    }
}

/// Where a column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnSource {
    /// A JSON Pointer into the record (as written); `""` is the whole record.
    Pointer(String),
    Meta(Meta),
}

/// A compiled column.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub source: ColumnSource,
    pub ty: ColumnType,
    /// Absent or null makes the record poison.
    pub required: bool,
    /// Written to the lake only.
    pub lake_only: bool,
    /// Capture slot of a pointer column.
    slot: Option<usize>,
}

/// How a row already in the table meets a new event with the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// The first event with the key stays; only the same event loaded again (after a crash)
    /// rewrites its row, so the row and its Parquet copy agree.
    KeepFirst,
    /// Replaced only by an event whose column (index) is higher, or by the same event again.
    NewestBy(usize),
}

/// A compiled route: everything the pipeline and the sinks need, resolved once.
#[derive(Debug, Clone)]
pub struct Route {
    pub index: usize,
    pub name: String,
    pub source: SourceMatch,
    /// Schema (optional) and table name, unquoted; `None`: the route writes no table (its
    /// search index and the lake only).
    pub table: Option<(Option<String>, String)>,
    /// Ends in `/` (or is empty). A route without a lake keeps its commit markers under it.
    pub lake_prefix: String,
    /// Whether the route writes Parquet objects to the lake (`lake = false`: markers only).
    pub lake: bool,
    pub claim_prefix: String,
    pub columns: Vec<Column>,
    /// Column indices of the conflict target.
    pub key: Vec<usize>,
    /// Column indices of the event identity.
    pub identity: Vec<usize>,
    pub merge: Merge,
    /// The timestamptz column that partitions the lake; else the record's arrival time.
    pub event_time: Option<usize>,
    pub updated_at_column: Option<String>,
    pub auto_migrate: bool,
    /// The search index the route's events also go to (`[route.index]`).
    pub search: Option<crate::search::IndexPlan>,
    /// The Iceberg table the committer appends the staged objects to (`[route.iceberg]`).
    pub iceberg: Option<iceberg::IcebergPlan>,
    /// `[route.cdc]`: the records are change events of this dialect ([`crate::cdc`]).
    pub cdc: Option<crate::cdc::CdcDialect>,
    root: Node,
    slots: usize,
    lake_schema: SchemaRef,
    lake_properties: LakeProperties,
}

/// The writer properties of a route's objects: zstd, and the same uncompressed for objects
/// too small for compression to pay ([`SMALL_OBJECT_BYTES`]).
#[derive(Debug, Clone)]
struct LakeProperties {
    zstd: WriterProperties,
    plain: WriterProperties,
}

/// An object whose values add up to fewer bytes than this is written uncompressed. zstd
/// makes a compression and a decompression context per column of every object, and each
/// creation asks the CPU for its features (`cpuid`, which a virtual machine traps): about
/// 150 µs for a 12-column object on the bench host, against a few KB saved on a few KB
/// (late data spread over many hours writes one small object per hour). Larger objects, the
/// stream's own hour, stay zstd.
pub const SMALL_OBJECT_BYTES: usize = 32 * 1024;

/// A record mapped by its route: ready for both sinks.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub route: usize,
    /// The dedup key: `<claim_prefix><identity>`.
    pub claim_key: String,
    /// Partitions the lake (microseconds since the epoch, UTC).
    pub event_time_us: i64,
    /// One value per route column, in column order.
    pub values: Vec<Value>,
    /// Columns whose value the event does not carry (a change event's unchanged TOASTed
    /// column): null here, and the table keeps its stored value. Empty for other events.
    pub unavailable: Vec<usize>,
}

/// The names of the lineage columns every Parquet object ends with.
pub const LINEAGE_COLUMNS: [&str; 5] = [
    "source_unit",
    "source_position",
    "source_key",
    "source_headers",
    "ingested_at",
];

/// zstd level 1: most of the size win of higher levels at several times the speed, which is
/// what a per-batch Lambda cares about.
const ZSTD_LEVEL: i32 = 1;

/// Longest route name: it names the session's stage table (`streamload_stage_<name>`), which
/// must stay within PostgreSQL's 63-byte identifiers.
pub const MAX_ROUTE_NAME_BYTES: usize = 40;

/// Longest SQL identifier PostgreSQL keeps (longer ones are truncated); refused instead.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// `[A-Za-z_][A-Za-z0-9_]*`, at most 63 bytes.
pub fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IDENTIFIER_BYTES
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

/// Checks an object-key prefix (OUTPUT_PREFIX, DEAD_LETTER_PREFIX, a route's lake_prefix)
/// and returns it ending in `/` (empty stays empty).
pub fn check_prefix(value: &str) -> Result<String, &'static str> {
    if value.starts_with('/') {
        return Err("must not start with /");
    }
    if value.split('/').any(|part| part == "." || part == "..") {
        return Err("must not contain . or .. segments");
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/_-.=".contains(c))
    {
        return Err("use letters, digits and / _ - . = only");
    }
    Ok(if value.is_empty() || value.ends_with('/') {
        value.to_owned()
    } else {
        format!("{value}/")
    })
}

/// Every problem found in a configuration, one line each naming route and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct RouteErrors(pub Vec<String>);

impl crate::Classify for RouteErrors {
    fn class(&self) -> crate::ErrorClass {
        crate::ErrorClass::Permanent
    }
}

/// The compiled routes of one deployment, in match order.
#[derive(Debug, Clone)]
pub struct Routes {
    routes: Vec<Arc<Route>>,
}

impl Routes {
    /// Checks and compiles `file`. Every problem is reported, not only the first.
    pub fn compile(file: &ConfigFile) -> Result<Self, RouteErrors> {
        let mut problems = Vec::new();
        if file.route.is_empty() {
            problems.push("the configuration defines no [[route]]".to_owned());
        }
        let mut routes = Vec::new();
        for (index, spec) in file.route.iter().enumerate() {
            match compile_route(index, spec) {
                Ok(r) => routes.push(r),
                Err(mut p) => problems.append(&mut p),
            }
        }
        let mut names = HashSet::new();
        let mut prefixes: Vec<(&str, &str)> = Vec::new();
        let mut lakes: Vec<(&str, &str)> = Vec::new();
        for r in &routes {
            if !names.insert(r.name.as_str()) {
                problems.push(format!("route {:?}: the name is used twice", r.name));
            }
            for (other, p) in &prefixes {
                if p.starts_with(&r.claim_prefix) || r.claim_prefix.starts_with(p) {
                    problems.push(format!(
                        "route {:?}: claim_prefix {:?} overlaps route {other:?}'s {p:?}",
                        r.name, r.claim_prefix
                    ));
                }
            }
            prefixes.push((&r.name, &r.claim_prefix));
            for (other, p) in &lakes {
                if *p == r.lake_prefix {
                    problems.push(format!(
                        "route {:?}: lake_prefix {p:?} is route {other:?}'s too (object names would collide)",
                        r.name
                    ));
                }
            }
            lakes.push((&r.name, &r.lake_prefix));
        }
        if problems.is_empty() {
            Ok(Self {
                routes: routes.into_iter().map(Arc::new).collect(),
            })
        } else {
            Err(RouteErrors(problems))
        }
    }

    /// The events contract of the first release: every record, table `table` (default
    /// `events`), objects under `lake_prefix` (OUTPUT_PREFIX, default `events/`), claims
    /// `ev:<event_id>`.
    pub fn builtin(table: &str, lake_prefix: &str) -> Result<Self, RouteErrors> {
        Self::compile(&ConfigFile {
            route: vec![builtin_spec(table, lake_prefix)],
        })
    }

    pub fn get(&self, index: usize) -> &Route {
        &self.routes[index]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter().map(|r| &**r)
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The first route whose source matches the record.
    pub fn route_for(&self, record: &SourceRecord) -> Option<&Route> {
        self.iter().find(|r| r.source.matches(record))
    }

    /// Maps every record, resolving each unit's route once.
    pub fn map_batch(
        &self,
        records: &[SourceRecord],
        max_record_bytes: usize,
    ) -> Vec<Result<Option<Mapped>, Poison>> {
        let mut last: Option<(&Arc<SourceUnit>, Option<&Route>)> = None;
        records
            .iter()
            .map(|record| {
                if let Some(reason) = &record.undecodable {
                    return Err(Poison {
                        kind: PoisonKind::Decode,
                        reason: reason.to_string(),
                    });
                }
                let route = match last {
                    Some((unit, route)) if Arc::ptr_eq(unit, &record.unit) => route,
                    _ => {
                        let route = self.route_for(record);
                        last = Some((&record.unit, route));
                        route
                    }
                };
                match route {
                    None => Err(Poison {
                        kind: PoisonKind::Validation,
                        reason: format!(
                            "no route takes records from {} {:?}",
                            match record.origin {
                                Origin::Kinesis { .. } => "Kinesis stream",
                                Origin::Kafka { .. } => "Kafka topic",
                            },
                            source_name(record)
                        ),
                    }),
                    Some(route) => route.map_record(record, max_record_bytes),
                }
            })
            .collect()
    }
}

fn source_name(record: &SourceRecord) -> &str {
    match &record.origin {
        Origin::Kinesis { stream_arn, .. } => stream_name(stream_arn),
        Origin::Kafka { .. } => record
            .unit
            .topic_partition
            .as_ref()
            .map_or(record.unit.label.as_str(), |(t, _)| t.as_str()),
    }
}

/// The built-in route as a spec, so it goes through the same checks as a file's routes.
pub fn builtin_spec(table: &str, lake_prefix: &str) -> RouteSpec {
    let col = |name: &str, ty: &str, required: bool, lake_only: bool| ColumnSpec {
        name: name.into(),
        from: format!("/{name}"),
        ty: ty.into(),
        required,
        precision: None,
        scale: None,
        unit: None,
        lake_only,
    };
    RouteSpec {
        name: "events".into(),
        source: "*".into(),
        table: Some(table.into()),
        lake_prefix: Some(lake_prefix.into()),
        lake: None,
        event_time: Some("/created_at".into()),
        identity: Some(vec!["/event_id".into()]),
        key: vec!["event_id".into()],
        merge: None,
        auto_migrate: None,
        claim_prefix: Some("ev:".into()),
        updated_at_column: Some("updated_at".into()),
        index: None,
        iceberg: None,
        cdc: None,
        columns: vec![
            col("event_id", "text", true, false),
            col("user_id", "text", true, false),
            col("event_type", "text", true, false),
            col("payload", "jsonb", false, false),
            col("created_at", "timestamptz", true, false),
            col("source", "text", false, true),
            col("version", "text", false, true),
        ],
    }
}

fn compile_route(index: usize, spec: &RouteSpec) -> Result<Route, Vec<String>> {
    let with_changes = cdc::with_change_columns(spec)?;
    let (spec, cdc) = match &with_changes {
        Some((compiled, dialect)) => (compiled, Some(*dialect)),
        None => (spec, None),
    };
    let mut problems = Vec::new();
    let route = &spec.name;
    let mut bad = |what: String| problems.push(format!("route {route:?}: {what}"));
    let name_ok = !route.is_empty()
        && route.len() <= MAX_ROUTE_NAME_BYTES
        && route
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !name_ok {
        bad(format!(
            "the name must be [a-z0-9_]+, at most {MAX_ROUTE_NAME_BYTES} bytes"
        ));
    }
    let source = SourceMatch::parse(&spec.source);
    if source.is_none() {
        bad(format!(
            "source {:?} is not \"kinesis:<stream>\", \"kafka:<topic>\" or \"*\"",
            spec.source
        ));
    }
    let table = match spec
        .table
        .as_deref()
        .map(|t| t.split('.').collect::<Vec<_>>())
    {
        None => None,
        Some(parts) => match parts[..] {
            [t] if is_identifier(t) => Some((None, t.to_owned())),
            [s, t] if is_identifier(s) && is_identifier(t) => {
                Some((Some(s.to_owned()), t.to_owned()))
            }
            _ => {
                bad(format!(
                    "table {:?} is not an identifier (letters, digits, _; optionally schema.table)",
                    spec.table.as_deref().unwrap_or("")
                ));
                None
            }
        },
    };
    let table_given = spec.table.is_some();
    let lake_prefix =
        match check_prefix(spec.lake_prefix.as_deref().unwrap_or(&format!("{route}/"))) {
            Ok(p) => p,
            Err(why) => {
                bad(format!("lake_prefix {why}"));
                String::new()
            }
        };
    let claim_prefix = spec
        .claim_prefix
        .clone()
        .unwrap_or_else(|| format!("rt:{route}:"));
    // Poison claims are `dl:<unit>:…`: a prefix that is a start of "dl:" ("d", "dl") or
    // starts with it lets an identity make a poison record's key.
    if claim_prefix.starts_with(POISON_CLAIM_PREFIX)
        || POISON_CLAIM_PREFIX.starts_with(claim_prefix.as_str())
        || claim_prefix.len() > 100
    {
        bad(format!(
            "claim_prefix {claim_prefix:?} must be 1 to 100 bytes and must neither start with \"dl:\" nor be a start of it (poison records' claims are \"dl:…\")"
        ));
    }

    let mut columns = Vec::new();
    let mut root = Node::default();
    let mut slots = 0;
    let mut seen = HashSet::new();
    if spec.columns.is_empty() {
        bad("has no [[route.column]]".into());
    }
    for c in &spec.columns {
        let mut col_bad = |what: String| {
            problems.push(format!("route {route:?}: column {:?}: {what}", c.name));
        };
        if !is_identifier(&c.name) {
            col_bad("the name is not an identifier (letters, digits, _)".into());
        }
        if c.name.starts_with("streamload_") {
            // The stage's ordinal and the isolation statement's variables are `streamload_…`.
            col_bad("names starting with streamload_ are reserved for the loader".into());
        }
        if LINEAGE_COLUMNS.contains(&c.name.as_str()) {
            col_bad("the name is taken by a lineage column of the lake".into());
        }
        if !seen.insert(c.name.clone()) {
            col_bad("is defined twice".into());
        }
        let mut ty = match ColumnType::parse(&c.ty) {
            Some(t) => t,
            None => {
                col_bad(format!(
                    "type {:?} is not one of text, integer, bigint, double, numeric, boolean, timestamptz, date, uuid, jsonb",
                    c.ty
                ));
                ColumnType::Text
            }
        };
        match (&mut ty, c.precision, c.scale) {
            (ColumnType::Numeric { precision, scale }, p, s) => {
                if let Some(p) = p {
                    if !(1..=38).contains(&p) {
                        col_bad("precision must be 1 to 38 (the lake's DECIMAL)".into());
                    }
                }
                if let (Some(s), Some(p)) = (s, p) {
                    if s > p {
                        col_bad("scale must not exceed precision".into());
                    }
                }
                if s.is_some() && p.is_none() {
                    col_bad("scale needs a precision".into());
                }
                *precision = p;
                *scale = s;
            }
            (_, None, None) => {}
            _ => col_bad("precision and scale apply to numeric only".into()),
        }
        match (&mut ty, c.unit.as_deref()) {
            (ColumnType::Timestamptz { unit }, Some(u)) => {
                *unit = match u {
                    "s" => Some(EpochUnit::Seconds),
                    "ms" => Some(EpochUnit::Millis),
                    "us" => Some(EpochUnit::Micros),
                    _ => {
                        col_bad(format!("unit {u:?} is not \"s\", \"ms\" or \"us\""));
                        None
                    }
                }
            }
            (_, None) => {}
            _ => col_bad("unit applies to timestamptz only".into()),
        }
        let (source, slot) = if c.from.starts_with('@') {
            match Meta::parse(&c.from) {
                Some(m) if m.fits(ty) => (ColumnSource::Meta(m), None),
                Some(_) => {
                    col_bad(format!("{} cannot be stored as {}", c.from, ty.name()));
                    (ColumnSource::Meta(Meta::Key), None)
                }
                None => {
                    col_bad(format!("{:?} is not a known metadata field", c.from));
                    (ColumnSource::Meta(Meta::Key), None)
                }
            }
        } else {
            match extract::parse_pointer(&c.from) {
                Some(segments) => {
                    root.insert(&segments, slots);
                    slots += 1;
                    (ColumnSource::Pointer(c.from.clone()), Some(slots - 1))
                }
                None => {
                    col_bad(format!(
                        "from {:?} is not a JSON Pointer (\"/a/b\", \"\" for the whole record) or @metadata",
                        c.from
                    ));
                    (ColumnSource::Pointer(String::new()), None)
                }
            }
        };
        columns.push(Column {
            name: c.name.clone(),
            source,
            ty,
            required: c.required,
            lake_only: c.lake_only,
            slot,
        });
    }

    let by_name = |name: &str| columns.iter().position(|c| c.name == name);
    let mut key = Vec::new();
    if spec.key.is_empty() {
        problems.push(format!(
            "route {route:?}: key must name at least one column"
        ));
    }
    for k in &spec.key {
        match by_name(k) {
            Some(i) if columns[i].lake_only => problems.push(format!(
                "route {route:?}: key column {k:?} is lake_only; a key must be in the table"
            )),
            Some(i) if columns[i].ty == ColumnType::Jsonb => problems.push(format!(
                "route {route:?}: key column {k:?} is jsonb, which cannot be a key"
            )),
            Some(i) => key.push(i),
            None => problems.push(format!(
                "route {route:?}: key column {k:?} is not a [[route.column]]"
            )),
        }
    }
    // The identity, by default the key's sources, is named by pointer or metadata; each part
    // must be a table column, so a re-load of the same event can be recognised in its row.
    // With `newest_by`, the default identity also holds the ordering column: each revision of
    // a key is its own event (claimed, loaded, kept in the lake), and the merge rule decides
    // which one the row holds. Keyed by the key alone, every later revision would be taken for
    // a duplicate of the first and never reach either sink.
    let newest_by_column = match &spec.merge {
        Some(MergeSpec::NewestBy { newest_by }) => by_name(newest_by),
        _ => None,
    };
    let source_of = |i: usize| spec.columns[i].from.clone();
    let identity_sources: Vec<String> = match &spec.identity {
        Some(list) => list.clone(),
        None => key
            .iter()
            .copied()
            .chain(newest_by_column.filter(|i| !key.contains(i)))
            .map(source_of)
            .collect(),
    };
    let mut identity = Vec::new();
    if identity_sources.is_empty() {
        problems.push(format!(
            "route {route:?}: identity must name at least one field"
        ));
    }
    for from in &identity_sources {
        match spec
            .columns
            .iter()
            .position(|c| &c.from == from && !c.lake_only)
        {
            Some(i) if columns[i].ty == ColumnType::Jsonb => problems.push(format!(
                "route {route:?}: identity {from:?} maps to jsonb column {:?}, which cannot identify an event",
                columns[i].name
            )),
            Some(i) => identity.push(i),
            None => problems.push(format!(
                "route {route:?}: identity {from:?} is not the `from` of a table column (map it to one)"
            )),
        }
    }
    if let (None, Some(n)) = (&spec.identity, newest_by_column) {
        if !columns[n].required && !key.contains(&n) {
            problems.push(format!(
                "route {route:?}: newest_by column {:?} must be required: with no identity it is part of every event's identity, and an event without it could not be identified; set required = true or name the identity",
                columns[n].name
            ));
        }
    }
    if let (Some(_), Some(n)) = (&spec.identity, newest_by_column) {
        if !identity.is_empty() && identity.iter().all(|i| key.contains(i)) && !key.contains(&n) {
            problems.push(format!(
                "route {route:?}: identity names only key columns, so with newest_by {:?} every later revision of a key would be taken for a duplicate of the first and dropped; add {:?} to identity (or leave identity out: it then defaults to the key and the newest_by column)",
                columns[n].name, spec.columns[n].from
            ));
        }
    }
    let merge = match &spec.merge {
        None => Merge::KeepFirst,
        Some(MergeSpec::Named(n)) if n == "keep-first" => Merge::KeepFirst,
        Some(MergeSpec::Named(n)) => {
            problems.push(format!(
                "route {route:?}: merge {n:?} is not \"keep-first\" or {{ newest_by = \"<column>\" }}"
            ));
            Merge::KeepFirst
        }
        Some(MergeSpec::NewestBy { newest_by }) => match by_name(newest_by) {
            Some(i)
                if !columns[i].lake_only
                    && !matches!(columns[i].ty, ColumnType::Jsonb | ColumnType::Boolean) =>
            {
                Merge::NewestBy(i)
            }
            Some(_) => {
                problems.push(format!(
                    "route {route:?}: newest_by column {newest_by:?} must be an orderable table column (not jsonb, boolean or lake_only)"
                ));
                Merge::KeepFirst
            }
            None => {
                problems.push(format!(
                    "route {route:?}: newest_by column {newest_by:?} is not a [[route.column]]"
                ));
                Merge::KeepFirst
            }
        },
    };
    let event_time = match &spec.event_time {
        None => None,
        Some(from) => match spec.columns.iter().position(|c| &c.from == from) {
            Some(i) if matches!(columns[i].ty, ColumnType::Timestamptz { .. }) => Some(i),
            _ => {
                problems.push(format!(
                    "route {route:?}: event_time {from:?} must be the `from` of a timestamptz column"
                ));
                None
            }
        },
    };
    if let Some(u) = &spec.updated_at_column {
        if !is_identifier(u) {
            problems.push(format!(
                "route {route:?}: updated_at_column {u:?} is not an identifier"
            ));
        } else if by_name(u).is_some() {
            problems.push(format!(
                "route {route:?}: updated_at_column {u:?} is also a mapped column"
            ));
        }
    }
    let auto_migrate = match spec.auto_migrate.as_deref() {
        None | Some("off") => false,
        Some("add-columns") => true,
        Some(other) => {
            problems.push(format!(
                "route {route:?}: auto_migrate {other:?} is not \"add-columns\" or \"off\""
            ));
            false
        }
    };
    let search = spec.index.as_ref().and_then(|index| {
        let facts = crate::search::RouteFacts {
            columns: &columns,
            key: &key,
            identity: &identity,
            merge,
            event_time,
            cdc,
        };
        crate::search::IndexPlan::compile(index, &facts)
            .map_err(|p| {
                problems.extend(p.into_iter().map(|what| format!("route {route:?}: {what}")))
            })
            .ok()
    });
    let lake = spec.lake.unwrap_or(true);
    if spec.table.is_none() && spec.index.is_none() && !lake {
        problems.push(format!(
            "route {route:?}: writes nowhere (no table, no [route.index] and lake = false): give it at least one sink"
        ));
    }
    if !lake {
        for c in spec.columns.iter().filter(|c| c.lake_only) {
            problems.push(format!(
                "route {route:?}: column {:?} is lake_only but the route writes no lake (lake = false)",
                c.name
            ));
        }
    }
    let iceberg = spec.iceberg.as_ref().and_then(|spec| {
        if !lake {
            problems.push(format!(
                "route {route:?}: [route.iceberg] needs the lake's staged objects (lake = false)"
            ));
        }
        let event_time_column = event_time.map(|i| columns[i].name.as_str());
        iceberg::IcebergPlan::compile(route, spec, event_time_column)
            .map_err(|p| {
                problems.extend(p.into_iter().map(|what| format!("route {route:?}: {what}")))
            })
            .ok()
    });
    if spec.table.is_none() && spec.updated_at_column.is_some() {
        problems.push(format!("route {route:?}: updated_at_column needs a table"));
    }
    // A delete carries its key only: on a change route the other columns may be null in
    // every sink, whatever `required` says of an upsert.
    let nullable: Vec<bool> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let not_null = c.required
                && (cdc.is_none()
                    || key.contains(&i)
                    || matches!(c.source, ColumnSource::Meta(Meta::Change(_))));
            !(identity.contains(&i) || not_null)
        })
        .collect();
    let lake_plan = lake_schema(&columns, &identity, &nullable);
    if !problems.is_empty() {
        return Err(problems);
    }
    let Some(source) = source else {
        return Err(vec![format!("route {route:?}: invalid")]);
    };
    if table_given && table.is_none() {
        return Err(vec![format!("route {route:?}: invalid")]);
    }
    let (lake_schema, lake_properties) =
        lake_plan.map_err(|e| vec![format!("route {route:?}: the lake schema: {e}")])?;
    Ok(Route {
        index,
        name: spec.name.clone(),
        source,
        table,
        lake_prefix,
        lake,
        claim_prefix,
        columns,
        key,
        identity,
        merge,
        event_time,
        updated_at_column: spec.updated_at_column.clone(),
        auto_migrate,
        search,
        iceberg,
        cdc,
        root,
        slots,
        lake_schema,
        lake_properties,
    })
}

/// The Arrow schema of the route's objects and the writer properties, built once.
///
/// Dictionary encoding only where values repeat (text that is no part of the identity, the
/// unit); min/max statistics skipped on jsonb and on the lineage text nobody filters on.
fn lake_schema(
    columns: &[Column],
    identity: &[usize],
    nullable: &[bool],
) -> Result<(SchemaRef, LakeProperties), parquet::errors::ParquetError> {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let mut fields: Vec<Field> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ty = match c.ty {
                ColumnType::Text | ColumnType::Jsonb | ColumnType::Uuid => DataType::Utf8,
                ColumnType::Numeric {
                    precision: Some(p),
                    scale,
                } => DataType::Decimal128(p, scale.unwrap_or(0) as i8),
                ColumnType::Numeric { .. } => DataType::Utf8,
                ColumnType::Integer => DataType::Int32,
                ColumnType::Bigint => DataType::Int64,
                ColumnType::Double => DataType::Float64,
                ColumnType::Boolean => DataType::Boolean,
                ColumnType::Timestamptz { .. } => ts.clone(),
                ColumnType::Date => DataType::Date32,
            };
            Field::new(&c.name, ty, nullable[i])
        })
        .collect();
    fields.push(Field::new("source_unit", DataType::Utf8, false));
    fields.push(Field::new("source_position", DataType::Utf8, false));
    fields.push(Field::new("source_key", DataType::Utf8, true));
    fields.push(Field::new("source_headers", DataType::Utf8, true));
    fields.push(Field::new("ingested_at", ts, false));

    let mut b = WriterProperties::builder().set_dictionary_enabled(false);
    for (i, c) in columns.iter().enumerate() {
        if c.ty == ColumnType::Text && !identity.contains(&i) {
            b = b.set_column_dictionary_enabled(ColumnPath::from(c.name.as_str()), true);
        }
        if c.ty == ColumnType::Jsonb {
            b = b.set_column_statistics_enabled(
                ColumnPath::from(c.name.as_str()),
                EnabledStatistics::None,
            );
        }
    }
    b = b.set_column_dictionary_enabled(ColumnPath::from("source_unit"), true);
    for unfiltered in ["source_headers", "source_key", "source_position"] {
        b = b.set_column_statistics_enabled(ColumnPath::from(unfiltered), EnabledStatistics::None);
    }
    let properties = LakeProperties {
        zstd: b
            .clone()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
            .build(),
        plain: b.set_compression(Compression::UNCOMPRESSED).build(),
    };
    Ok((Arc::new(Schema::new(fields)), properties))
}

impl Route {
    /// Whether the route writes a PostgreSQL table.
    pub fn has_table(&self) -> bool {
        self.table.is_some()
    }

    /// The schema-qualified table name, each part quoted (empty for a route without a
    /// table: callers keep to routes with one).
    pub fn quoted_table(&self) -> String {
        match &self.table {
            Some((Some(s), t)) => format!("{}.{}", quote(s), quote(t)),
            Some((None, t)) => quote(t),
            None => String::new(),
        }
    }

    /// The table name as written (`schema.table` or `table`; `-` without a table).
    pub fn table_name(&self) -> String {
        match &self.table {
            Some((Some(s), t)) => format!("{s}.{t}"),
            Some((None, t)) => t.clone(),
            None => "-".to_owned(),
        }
    }

    /// The Arrow schema of this route's Parquet objects.
    pub fn lake_schema(&self) -> &SchemaRef {
        &self.lake_schema
    }

    /// The writer properties for an object whose values add up to `raw_bytes`: uncompressed
    /// under [`SMALL_OBJECT_BYTES`], zstd otherwise.
    pub fn lake_properties(&self, raw_bytes: usize) -> &WriterProperties {
        if raw_bytes < SMALL_OBJECT_BYTES {
            &self.lake_properties.plain
        } else {
            &self.lake_properties.zstd
        }
    }

    /// Columns written to the table, with their indices.
    /// Whether column `i` is `NOT NULL` in the route's table: a required column, except, on a
    /// `[route.cdc]` route, one outside the key and the change columns (a delete's image may
    /// hold its key only).
    pub fn not_null(&self, i: usize) -> bool {
        let c = &self.columns[i];
        c.required
            && (self.cdc.is_none()
                || self.key.contains(&i)
                || matches!(c.source, ColumnSource::Meta(Meta::Change(_))))
    }

    pub fn table_columns(&self) -> impl Iterator<Item = (usize, &Column)> {
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.lake_only)
    }

    /// Decodes `record` and maps it to this route's columns, or says why it can never load.
    /// A change route's tombstone is poison here; [`Route::map_record`] skips it.
    pub fn map(&self, record: &SourceRecord, max_record_bytes: usize) -> Result<Mapped, Poison> {
        self.map_record(record, max_record_bytes)?.ok_or_else(|| {
            poison(
                PoisonKind::Tombstone,
                "a change event tombstone, which carries no change".into(),
            )
        })
    }

    /// As [`Route::map`], with `Ok(None)` for a record with nothing to load: a `[route.cdc]`
    /// route's tombstone (the null value Debezium sends after a delete).
    pub fn map_record(
        &self,
        record: &SourceRecord,
        max_record_bytes: usize,
    ) -> Result<Option<Mapped>, Poison> {
        let Some(data) = &record.data else {
            if self.cdc.is_some() {
                return Ok(None);
            }
            return Err(poison(
                PoisonKind::Tombstone,
                "record has a null value (tombstone), which is not an event".into(),
            ));
        };
        if data.len() > max_record_bytes {
            return Err(poison(
                PoisonKind::TooLarge,
                format!(
                    "record is {} bytes, over the {max_record_bytes}-byte limit",
                    data.len()
                ),
            ));
        }
        let text = std::str::from_utf8(data).map_err(|e| {
            poison(
                PoisonKind::Decode,
                format!("not UTF-8 (invalid byte at offset {})", e.valid_up_to()),
            )
        })?;
        // A change event's columns come from its row image, re-encoded as one JSON object.
        let change = match self.cdc {
            None => None,
            Some(dialect) => match crate::cdc::decode(data, dialect) {
                Ok(None) => return Ok(None),
                Ok(Some(change)) => Some(change),
                Err(e) => {
                    return Err(poison(
                        PoisonKind::Validation,
                        format!("route {:?}: {e}", self.name),
                    ))
                }
            },
        };
        let row: Option<Bytes> = change
            .as_ref()
            .map(|c| Bytes::from(serde_json::to_vec(&c.row).unwrap_or_default()));
        let (data, text) = match &row {
            Some(bytes) => (bytes, std::str::from_utf8(bytes).unwrap_or("{}")),
            None => (data, text),
        };
        let deleting = change
            .as_ref()
            .is_some_and(|c| c.op == crate::cdc::ChangeOp::Delete);
        let mut unavailable = Vec::new();
        let mut captures: Vec<Option<&str>> = vec![None; self.slots];
        extract::extract(&self.root, text, &mut captures).map_err(|e| match e {
            ExtractError::NotJson(line, column) => poison(
                PoisonKind::Decode,
                format!("not JSON (line {line}, column {column})"),
            ),
            ExtractError::NotAnObject => poison(PoisonKind::Validation, "not a JSON object".into()),
            ExtractError::Duplicate => poison(
                PoisonKind::Validation,
                format!("route {:?}: a mapped member appears twice", self.name),
            ),
        })?;
        let mut values = Vec::with_capacity(self.columns.len());
        for (i, c) in self.columns.iter().enumerate() {
            if let (Some(change), ColumnSource::Pointer(p)) = (&change, &c.source) {
                if change
                    .unavailable
                    .iter()
                    .any(|name| cdc::is_pointer_to(p, name))
                {
                    // Unchanged and not sent: the table keeps what it holds.
                    unavailable.push(i);
                    values.push(Value::Null);
                    continue;
                }
            }
            let converted = match (&c.source, c.slot) {
                (ColumnSource::Pointer(_), Some(slot)) => match captures[slot] {
                    None => Ok(Value::Null),
                    Some(raw) => value::convert(c.ty, raw, data),
                },
                (ColumnSource::Meta(Meta::Change(m)), _) => match &change {
                    Some(change) => m.value(c.ty, change),
                    None => Ok(Value::Null),
                },
                (ColumnSource::Meta(m), _) => meta_value(*m, c.ty, record),
                _ => Ok(Value::Null),
            };
            let v = converted.map_err(|why| {
                poison(
                    PoisonKind::Validation,
                    format!("route {:?}: column {:?} {why}", self.name, c.name),
                )
            })?;
            // A delete's image may hold its key only.
            let required = c.required
                && !(deleting
                    && !self.key.contains(&i)
                    && !matches!(c.source, ColumnSource::Meta(Meta::Change(_))));
            if required && v.is_null() {
                return Err(poison(
                    PoisonKind::Validation,
                    format!(
                        "route {:?}: column {:?} is required (absent or null)",
                        self.name, c.name
                    ),
                ));
            }
            if required && matches!(&v, Value::Text(t) if t.trim().is_empty()) {
                return Err(poison(
                    PoisonKind::Validation,
                    format!(
                        "route {:?}: column {:?} is required (empty)",
                        self.name, c.name
                    ),
                ));
            }
            values.push(v);
        }
        let claim_key = self.claim_key(&values)?;
        let event_time_us = match self.event_time.map(|i| &values[i]) {
            Some(Value::Timestamp(us)) => *us,
            // A delete whose image lacks the event time: partitioned by arrival.
            Some(Value::Null) if deleting => record.arrival_ms.unwrap_or(0) * 1000,
            Some(_) => {
                return Err(poison(
                    PoisonKind::Validation,
                    format!(
                        "route {:?}: column {:?} (event_time) is absent",
                        self.name,
                        self.columns[self.event_time.unwrap_or(0)].name
                    ),
                ))
            }
            None => record.arrival_ms.unwrap_or(0) * 1000,
        };
        Ok(Some(Mapped {
            route: self.index,
            claim_key,
            event_time_us,
            values,
            unavailable,
        }))
    }

    fn claim_key(&self, values: &[Value]) -> Result<String, Poison> {
        let mut parts = Vec::with_capacity(self.identity.len());
        for &i in &self.identity {
            let v = &values[i];
            let text = v.identity_text();
            if v.is_null() || text.trim().is_empty() {
                return Err(poison(
                    PoisonKind::Validation,
                    format!(
                        "route {:?}: identity column {:?} is absent or empty",
                        self.name, self.columns[i].name
                    ),
                ));
            }
            parts.push(text);
        }
        let identity = match &parts[..] {
            [one] => one.to_string(),
            many => serde_json::to_string(many).unwrap_or_default(),
        };
        if identity.len() > MAX_EVENT_ID_BYTES {
            return Err(poison(
                PoisonKind::Validation,
                format!(
                    "route {:?}: the identity is {} bytes, over {MAX_EVENT_ID_BYTES}",
                    self.name,
                    identity.len()
                ),
            ));
        }
        Ok(format!("{}{identity}", self.claim_prefix))
    }
}

fn poison(kind: PoisonKind, reason: String) -> Poison {
    Poison { kind, reason }
}

/// Double-quotes an identifier (already checked by [`is_identifier`]).
pub fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

fn meta_value(meta: Meta, ty: ColumnType, r: &SourceRecord) -> Result<Value, value::Misfit> {
    let text = |s: Option<&str>| match s {
        None => Ok(Value::Null),
        Some(s) => value::convert_scalar(ty, s, true),
    };
    let number = |n: Option<String>| match n {
        None => Ok(Value::Null),
        Some(s) => value::convert_scalar(ty, &s, false),
    };
    let millis = |ms: Option<i64>| match (ms, ty) {
        (None, _) => Ok(Value::Null),
        (Some(ms), ColumnType::Timestamptz { .. }) => Ok(Value::Timestamp(ms * 1000)),
        (Some(ms), _) => Ok(Value::Int(ms)),
    };
    let kafka = matches!(r.origin, Origin::Kafka { .. });
    match meta {
        Meta::Key if kafka => match &r.key {
            None => Ok(Value::Null),
            Some(b64) => {
                let bytes = base64_simd::STANDARD
                    .decode_to_vec(b64.as_bytes())
                    .map_err(|_| "is not base64")?;
                let s = String::from_utf8(bytes).map_err(|_| "is not UTF-8 text")?;
                text(Some(&s))
            }
        },
        Meta::Key | Meta::PartitionKey if !kafka => text(r.key.as_deref()),
        Meta::Topic => text(r.unit.topic_partition.as_ref().map(|(t, _)| t.as_str())),
        Meta::Partition => number(r.unit.topic_partition.as_ref().map(|(_, p)| p.to_string())),
        Meta::Offset if kafka => number(Some(r.position.as_str().to_owned())),
        Meta::Sequence if !kafka => number(Some(r.position.as_str().to_owned())),
        Meta::SubSequence if !kafka => number(r.position.sub_sequence().map(|n| n.to_string())),
        Meta::Timestamp => match &r.origin {
            Origin::Kafka { timestamp, .. } => millis(*timestamp),
            Origin::Kinesis { .. } => Ok(Value::Null),
        },
        Meta::Arrival if !kafka => millis(r.arrival_ms),
        Meta::Stream => match &r.origin {
            Origin::Kinesis { stream_arn, .. } => text(Some(stream_name(stream_arn))),
            Origin::Kafka { .. } => Ok(Value::Null),
        },
        Meta::Shard => match &r.origin {
            Origin::Kinesis { shard_id, .. } => text(Some(shard_id)),
            Origin::Kafka { .. } => Ok(Value::Null),
        },
        Meta::SchemaId => match &r.origin {
            Origin::Kafka {
                value_schema_id, ..
            } => text(value_schema_id.as_deref()),
            Origin::Kinesis { .. } => Ok(Value::Null),
        },
        _ => Ok(Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DEFAULT_MAX_RECORD_BYTES;
    use crate::record::Position;
    use bytes::Bytes;

    fn kinesis_record(stream: &str, data: &[u8]) -> SourceRecord {
        SourceRecord {
            unit: Arc::new(SourceUnit {
                label: format!("{stream}/shardId-000000000000"),
                topic_partition: None,
            }),
            position: Position::from_offset(7),
            data: Some(Bytes::copy_from_slice(data)),
            key: Some("pk-1".into()),
            headers_json: None,
            arrival_ms: Some(1_700_000_000_000),
            undecodable: None,
            origin: Origin::Kinesis {
                stream_arn: format!("arn:aws:kinesis:us-east-1:1:stream/{stream}").into(),
                shard_id: "shardId-000000000000".into(),
                approximate_arrival: Some(1_700_000_000.0),
            },
        }
    }

    fn builtin() -> Routes {
        Routes::builtin("events", "events/").unwrap()
    }

    fn ok(json: &str) -> Mapped {
        builtin()
            .get(0)
            .map(
                &kinesis_record("s", json.as_bytes()),
                DEFAULT_MAX_RECORD_BYTES,
            )
            .expect("valid event")
    }

    fn poison(bytes: &[u8]) -> Poison {
        builtin()
            .get(0)
            .map(&kinesis_record("s", bytes), DEFAULT_MAX_RECORD_BYTES)
            .expect_err("poison")
    }

    #[test]
    fn the_builtin_route_keeps_every_field_and_the_first_release_claim_key() {
        // Given a complete event of the first release's contract
        let e = ok(
            r#"{"event_id":"e1","user_id":"u1","event_type":"click","payload":{"a":[1,2]},"created_at":"2024-03-01T12:34:56.789+02:00","source":"web","version":3}"#,
        );
        // Then its claim key is the one the first release wrote, and every field is kept
        assert_eq!(e.claim_key, "ev:e1");
        assert_eq!(e.event_time_us, 1_709_289_296_789_000);
        assert_eq!(
            e.values,
            vec![
                Value::Text("e1".into()),
                Value::Text("u1".into()),
                Value::Text("click".into()),
                Value::Json(r#"{"a":[1,2]}"#.into()),
                Value::Timestamp(1_709_289_296_789_000),
                Value::Text("web".into()),
                Value::Text("3".into()),
            ]
        );
    }

    #[test]
    fn each_poison_kind_is_named_and_no_reason_quotes_a_value() {
        assert_eq!(poison(&[0xff, 0xfe]).kind, PoisonKind::Decode);
        assert_eq!(poison(b"{not json").kind, PoisonKind::Decode);
        assert_eq!(poison(b"[1,2]").kind, PoisonKind::Validation);
        assert_eq!(poison(b"42").reason, "not a JSON object");
        let missing =
            poison(br#"{"user_id":"u","event_type":"t","created_at":"2024-01-01T00:00:00"}"#);
        assert_eq!(
            missing.reason,
            r#"route "events": column "event_id" is required (absent or null)"#
        );
        let empty = poison(
            br#"{"event_id":"e","user_id":" ","event_type":"t","created_at":"2024-01-01T00:00:00"}"#,
        );
        assert_eq!(
            empty.reason,
            r#"route "events": column "user_id" is required (empty)"#
        );
        let secret =
            poison(br#"{"event_id":"e","user_id":"u","event_type":"t","created_at":"secret-123"}"#);
        assert_eq!(
            secret.reason,
            r#"route "events": column "created_at" is not an RFC 3339 timestamp"#
        );
        let nul = poison(br#"{"event_id":"e","user_id":"u\u0000","event_type":"t","created_at":"2024-01-01T00:00:00"}"#);
        assert!(nul.reason.contains("NUL"), "{}", nul.reason);
        let jsonb_nul = poison(br#"{"event_id":"e","user_id":"u","event_type":"t","payload":{"x":"a\u0000"},"created_at":"2024-01-01T00:00:00"}"#);
        assert!(jsonb_nul.reason.contains("payload"), "{}", jsonb_nul.reason);
        let dup = poison(br#"{"event_id":"e","event_id":"f","user_id":"u","event_type":"t","created_at":"2024-01-01T00:00:00"}"#);
        assert!(dup.reason.contains("appears twice"), "{}", dup.reason);
        let long = format!(
            r#"{{"event_id":"{}","user_id":"u","event_type":"t","created_at":"2024-01-01T00:00:00"}}"#,
            "x".repeat(MAX_EVENT_ID_BYTES + 1)
        );
        assert!(poison(long.as_bytes()).reason.contains("over 1024"));
        let big = builtin()
            .get(0)
            .map(&kinesis_record("s", &[b' '; 11]), 10)
            .unwrap_err();
        assert_eq!(big.kind, PoisonKind::TooLarge);
    }

    #[test]
    fn fields_without_escapes_share_the_record_bytes() {
        // Given a record whose user_id holds an escape
        let record = kinesis_record(
            "s",
            br#"{"event_id":"e1","user_id":"u\"1","event_type":"t","payload":{"a":1},"created_at":"2024-01-01T00:00:00"}"#,
        );
        let data = record.data.clone().unwrap();
        // When it is mapped
        let e = builtin()
            .get(0)
            .map(&record, DEFAULT_MAX_RECORD_BYTES)
            .unwrap();
        // Then plain fields are views of the record and the escaped one is unescaped text
        let inside = |v: &Value| match v {
            Value::Text(t) | Value::Json(t) => {
                let (p, s) = (t.bytes().as_ptr() as usize, data.as_ptr() as usize);
                p >= s && p < s + data.len()
            }
            _ => false,
        };
        assert!(inside(&e.values[0]) && inside(&e.values[2]) && inside(&e.values[3]));
        assert!(!inside(&e.values[1]));
        assert_eq!(e.values[1], Value::Text("u\"1".into()));
    }

    const ORDERS: &str = r#"{"route": [
        {"name": "orders", "source": "kinesis:orders", "table": "sales.orders",
         "event_time": "/placed_at", "identity": ["/order_id", "/revision"], "key": ["order_id"],
         "merge": {"newest_by": "revision"},
         "column": [
            {"name": "order_id", "from": "/order_id", "type": "text", "required": true},
            {"name": "revision", "from": "/revision", "type": "integer", "required": true},
            {"name": "total", "from": "/amount/total", "type": "numeric", "precision": 12, "scale": 2},
            {"name": "paid", "from": "/paid", "type": "boolean"},
            {"name": "placed_at", "from": "/placed_at", "type": "timestamptz", "unit": "ms", "required": true},
            {"name": "sku", "from": "/items/0/sku", "type": "text"},
            {"name": "shard", "from": "@shard", "type": "text"}
         ]},
        {"name": "rest", "source": "*", "table": "other", "key": ["id"],
         "column": [{"name": "id", "from": "/id", "type": "uuid", "required": true}]}
    ]}"#;

    fn orders() -> Routes {
        Routes::compile(&serde_json::from_str(ORDERS).unwrap()).unwrap()
    }

    #[test]
    fn a_route_maps_nested_pointers_types_and_metadata() {
        // Given the orders route and an order with nesting, epoch-ms time and a numeric string
        let routes = orders();
        let record = kinesis_record(
            "orders",
            br#"{"order_id":"o-1","revision":"2","amount":{"total":"19.9"},"paid":true,"placed_at":1709289296789,"items":[{"sku":"A"},{"sku":"B"}]}"#,
        );
        // When the batch is mapped
        let mapped = routes.map_batch(std::slice::from_ref(&record), DEFAULT_MAX_RECORD_BYTES);
        let m = mapped[0].as_ref().unwrap().as_ref().unwrap();
        // Then it took the first matching route, and each column has its typed value
        assert_eq!(m.route, 0);
        assert_eq!(m.claim_key, r#"rt:orders:["o-1","2"]"#);
        assert_eq!(m.event_time_us, 1_709_289_296_789_000);
        assert_eq!(m.values[1], Value::Int(2));
        assert_eq!(
            m.values[2],
            Value::Numeric {
                text: "19.9".into(),
                unscaled: Some(1990)
            }
        );
        assert_eq!(m.values[3], Value::Bool(true));
        assert_eq!(m.values[5], Value::Text("A".into()));
        assert_eq!(m.values[6], Value::Text("shardId-000000000000".into()));
        assert_eq!(routes.get(0).quoted_table(), r#""sales"."orders""#);
    }

    #[test]
    fn records_go_to_the_first_matching_route_or_are_poison() {
        // Given routes for one stream and a catch-all, and a config with no catch-all
        let routes = orders();
        let other = kinesis_record(
            "clicks",
            br#"{"id":"6f9619ff-8b86-d011-b42d-00c04fc964ff"}"#,
        );
        let m = routes.map_batch(std::slice::from_ref(&other), DEFAULT_MAX_RECORD_BYTES);
        assert_eq!(m[0].as_ref().unwrap().as_ref().unwrap().route, 1);
        let mut file: ConfigFile = serde_json::from_str(ORDERS).unwrap();
        file.route.pop();
        let only_orders = Routes::compile(&file).unwrap();
        // When a record from another stream arrives
        let m = only_orders.map_batch(&[other], DEFAULT_MAX_RECORD_BYTES);
        // Then it is poison, naming the stream
        let p = m[0].as_ref().unwrap_err();
        assert_eq!(
            p.reason,
            r#"no route takes records from Kinesis stream "clicks""#
        );
    }

    #[test]
    fn a_value_that_does_not_fit_names_route_and_column_never_the_value() {
        let routes = orders();
        let bad = kinesis_record(
            "orders",
            br#"{"order_id":"o-1","revision":1,"amount":{"total":"19.999"},"placed_at":1}"#,
        );
        let p = routes
            .get(0)
            .map(&bad, DEFAULT_MAX_RECORD_BYTES)
            .unwrap_err();
        assert_eq!(
            p.reason,
            r#"route "orders": column "total" has more decimal places than the column's scale"#
        );
    }

    #[test]
    fn every_config_mistake_is_one_line_naming_route_and_column() {
        // Given a route with one mistake of each kind
        let bad = r#"{"route": [{"name": "Bad-Name", "source": "sqs:x", "table": "a.b.c",
            "lake_prefix": "../up", "event_time": "/nope", "identity": ["/missing"],
            "key": ["absent"], "merge": {"newest_by": "doc"}, "auto_migrate": "drop-columns",
            "claim_prefix": "dl:x",
            "column": [
                {"name": "id", "from": "id", "type": "text"},
                {"name": "id", "from": "/id", "type": "texts"},
                {"name": "doc", "from": "/doc", "type": "jsonb", "unit": "ms"},
                {"name": "amount", "from": "/a", "type": "numeric", "precision": 40},
                {"name": "source_unit", "from": "@offset", "type": "boolean"},
                {"name": "streamload_ord", "from": "/o", "type": "integer"}
            ]}]}"#;
        // When it is compiled
        let errors = Routes::compile(&serde_json::from_str(bad).unwrap()).unwrap_err();
        // Then each mistake is its own line, naming the route and, where one is involved, the column
        let text = errors.to_string();
        for needle in [
            "the name must be [a-z0-9_]+",
            "source \"sqs:x\"",
            "table \"a.b.c\"",
            "lake_prefix must not contain",
            "claim_prefix \"dl:x\"",
            "column \"id\": from \"id\" is not a JSON Pointer",
            "column \"id\": is defined twice",
            "column \"id\": type \"texts\"",
            "column \"doc\": unit applies to timestamptz only",
            "column \"amount\": precision must be 1 to 38",
            "column \"source_unit\": the name is taken by a lineage column",
            "column \"streamload_ord\": names starting with streamload_ are reserved",
            "column \"source_unit\": @offset cannot be stored as boolean",
            "key column \"absent\" is not a [[route.column]]",
            "identity \"/missing\" is not the `from` of a table column",
            "newest_by column \"doc\" must be an orderable table column",
            "event_time \"/nope\" must be the `from` of a timestamptz column",
            "auto_migrate \"drop-columns\"",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert!(errors
            .0
            .iter()
            .all(|line| line.starts_with("route \"Bad-Name\"")));
        // And two routes may not share a name or a lake prefix
        let twice = r#"{"route": [
            {"name": "a", "source": "*", "table": "t", "key": ["id"], "lake_prefix": "x/",
             "column": [{"name": "id", "from": "/id", "type": "text"}]},
            {"name": "a", "source": "*", "table": "t", "key": ["id"], "lake_prefix": "x/",
             "column": [{"name": "id", "from": "/id", "type": "text"}]}]}"#;
        let e = Routes::compile(&serde_json::from_str(twice).unwrap()).unwrap_err();
        assert!(e.to_string().contains("the name is used twice"), "{e}");
        assert!(
            e.to_string()
                .contains("lake_prefix \"x/\" is route \"a\"'s too"),
            "{e}"
        );
        assert!(
            e.to_string().contains("claim_prefix \"rt:a:\" overlaps"),
            "{e}"
        );
    }

    #[test]
    fn with_newest_by_the_default_identity_holds_the_ordering_column() {
        // Given a newest_by route with no identity
        let file = r#"{"route": [{"name": "readings", "source": "*", "table": "iot.readings",
            "key": ["device"], "merge": {"newest_by": "seq"},
            "column": [
                {"name": "device", "from": "/device", "type": "text", "required": true},
                {"name": "seq", "from": "/seq", "type": "bigint", "required": true}]}]}"#;
        // When it is compiled
        let routes = Routes::compile(&serde_json::from_str(file).unwrap()).unwrap();
        // Then two revisions of one device are two events, and a revision sent twice is one
        let claim = |body: &[u8]| {
            routes
                .get(0)
                .map(&kinesis_record("s", body), DEFAULT_MAX_RECORD_BYTES)
                .unwrap()
                .claim_key
        };
        let first = claim(br#"{"device":"d1","seq":1}"#);
        let second = claim(br#"{"device":"d1","seq":2}"#);
        assert_ne!(first, second);
        assert_eq!(first, claim(br#"{"seq":1,"device":"d1"}"#));
    }

    #[test]
    fn with_newest_by_an_identity_of_key_columns_only_is_refused_naming_the_route() {
        // Given a newest_by route whose identity is its key alone
        let file = r#"{"route": [{"name": "readings", "source": "*", "table": "iot.readings",
            "identity": ["/device"], "key": ["device"], "merge": {"newest_by": "seq"},
            "column": [
                {"name": "device", "from": "/device", "type": "text", "required": true},
                {"name": "seq", "from": "/seq", "type": "bigint", "required": true}]}]}"#;
        // When it is compiled, then it is refused with one line naming route and column
        let text = Routes::compile(&serde_json::from_str(file).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("route \"readings\": identity names only key columns"),
            "{text}"
        );
        assert!(text.contains("add \"/seq\" to identity"), "{text}");
    }

    #[test]
    fn a_claim_prefix_that_starts_a_poison_key_is_refused() {
        for prefix in ["d", "dl", "dl:", "dl:x"] {
            // Given a route whose claim_prefix could make a poison record's key
            let file = format!(
                r#"{{"route": [{{"name": "r", "source": "*", "table": "t", "key": ["id"],
                "claim_prefix": "{prefix}",
                "column": [{{"name": "id", "from": "/id", "type": "text", "required": true}}]}}]}}"#
            );
            // When it is compiled, then it is refused
            let text = Routes::compile(&serde_json::from_str(&file).unwrap())
                .unwrap_err()
                .to_string();
            assert!(
                text.contains("must neither start with \"dl:\" nor be a start of it"),
                "{prefix}: {text}"
            );
        }
    }

    #[test]
    fn with_newest_by_and_no_identity_an_optional_ordering_column_is_refused() {
        // Given a newest_by route with no identity whose ordering column may be absent
        let file = r#"{"route": [{"name": "readings", "source": "*", "table": "iot.readings",
            "key": ["device"], "merge": {"newest_by": "seq"},
            "column": [
                {"name": "device", "from": "/device", "type": "text", "required": true},
                {"name": "seq", "from": "/seq", "type": "bigint"}]}]}"#;
        // When it is compiled, then it is refused naming route and column (an event without
        // seq would have no identity and go to the dead-letter queue on every delivery)
        let text = Routes::compile(&serde_json::from_str(file).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("route \"readings\": newest_by column \"seq\" must be required"),
            "{text}"
        );
    }
}
