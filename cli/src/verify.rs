//! `streamload verify`: the exactly-once audit of a produced manifest across both sinks and
//! the dead letters. Each valid event must be in the table exactly once (the key makes that
//! a given: what is audited is "present") and in exactly one row of exactly one Parquet
//! object; each poison record must have a dead letter (a line of an archive under the
//! dead-letter prefix, the same body as the SQS message) with a reason.
//!
//! With a route ([`audit_route`], `verify --routes FILE --route NAME`) the table is judged by
//! the route's merge rule, key by key: under `keep-first` each produced key's row must exist
//! and hold one of the events produced for that key; under `newest_by` it must hold the
//! newest revision produced for the key (compared as the column's type compares, not as
//! text), or a newer one: a later run's, which the merge rule rightly lets win. The lake must hold every produced event — every revision — exactly once, counted by
//! the identity columns of the objects under the route's lake prefix.

use std::collections::{HashMap, HashSet};

use arrow_array::cast::AsArray;
use arrow_array::Array;
use base64::Engine;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use arrow_array::types::{
    Date32Type, Decimal128Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use streamload_core::object_key::MARKER_FOLDER;
use streamload_core::route::{ColumnType, Merge, Route};

use crate::produce::Manifest;
use crate::CliError;

/// Where to look.
#[derive(Debug, Clone)]
pub struct Sinks {
    pub database_url: String,
    pub table: String,
    pub bucket: String,
    pub lake_prefix: String,
    pub dead_letter_prefix: String,
    /// The column holding the manifest's ids (`event_id` for the built-in route).
    pub id_column: String,
}

/// The verdict's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Audit {
    pub expected_events: usize,
    pub in_table: usize,
    pub missing_in_table: usize,
    pub in_lake_once: usize,
    pub missing_in_lake: usize,
    pub duplicated_in_lake: usize,
    pub expected_poison: usize,
    pub dead_lettered: usize,
    pub missing_dead_letters: usize,
    pub dead_letters_without_reason: usize,
    pub parquet_objects: usize,
    pub parquet_rows: usize,
    /// End-to-end latency, `created_at` → committed in both sinks (the later of the row's
    /// `updated_at` and its object's LastModified), p50 and p99 in ms.
    pub latency_p50_ms: Option<i64>,
    pub latency_p99_ms: Option<i64>,
    /// The route judged (`--routes`/`--route`); absent for the seed events' audit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The route's merge rule: `keep-first` or `newest_by:<column>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge: Option<String>,
    /// With a route, the table is judged per key: the distinct keys produced…
    pub expected_keys: usize,
    /// …those whose row holds what the merge rule says (newest revision, or a produced event)…
    pub keys_in_table: usize,
    /// …those without a row…
    pub keys_missing: usize,
    /// …those whose row holds an older revision than the newest produced (`newest_by`)…
    pub keys_with_older_revision: usize,
    /// …and those whose row holds a revision or event this run did not produce.
    pub keys_with_unknown_row: usize,
    /// Under `newest_by`, keys whose row holds a revision newer than any this run produced:
    /// a later run's (the merge rule at work, not a fault); counted in `keys_in_table` too.
    pub keys_with_newer_revision: usize,
    /// The search index of a route with `[route.index]`, judged per key like the table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<crate::verify_index::IndexAudit>,
    /// The route writes no table (its index and the lake only): the table is not judged.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_table: bool,
    /// The route writes no lake (`lake = false`): its commit markers are counted instead, each
    /// event once (`parquet_objects`/`parquet_rows` then count markers and their lines).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_lake: bool,
    /// The records of dead letters whose reason says the search index refused their document
    /// (parsed JSON), to tell a refused document from a lost one.
    #[serde(skip)]
    pub index_refused: Vec<serde_json::Value>,
}

impl Audit {
    /// True when nothing is lost or duplicated.
    pub fn exactly_once(&self) -> bool {
        self.missing_in_table == 0
            && self.missing_in_lake == 0
            && self.duplicated_in_lake == 0
            && self.missing_dead_letters == 0
            && self.dead_letters_without_reason == 0
            && self.keys_missing == 0
            && self.keys_with_older_revision == 0
            && self.keys_with_unknown_row == 0
            && self.index.as_ref().is_none_or(|i| i.exactly_once())
    }

    /// The verdict in words.
    pub fn verdict(&self) -> String {
        if self.exactly_once() {
            return "exactly once".into();
        }
        let mut problems = Vec::new();
        if self.missing_in_table > 0
            || self.keys_missing > 0
            || self.missing_in_lake > 0
            || self.duplicated_in_lake > 0
            || self.missing_dead_letters > 0
            || self.dead_letters_without_reason > 0
        {
            problems.push("LOSS OR DUPLICATES");
        }
        if self.keys_with_older_revision > 0 || self.keys_with_unknown_row > 0 {
            problems.push("WRONG ROWS IN THE TABLE");
        }
        if self.index.as_ref().is_some_and(|i| !i.exactly_once()) {
            problems.push("WRONG OR MISSING DOCUMENTS IN THE SEARCH INDEX");
        }
        problems.join(", ")
    }

    pub fn table(&self) -> comfy_table::Table {
        let mut t = comfy_table::Table::new();
        t.set_header(vec!["check", "expected", "found", "problems"]);
        match self.merge.as_deref() {
            None => {
                t.add_row(vec![
                    "events in PostgreSQL".to_string(),
                    self.expected_events.to_string(),
                    self.in_table.to_string(),
                    format!("{} missing", self.missing_in_table),
                ]);
            }
            Some(_) if self.no_table => {
                t.add_row(vec![
                    "PostgreSQL".to_string(),
                    "-".into(),
                    "-".into(),
                    "the route writes no table".into(),
                ]);
            }
            Some(merge) => {
                let (what, wrong) = match merge.strip_prefix("newest_by:") {
                    Some(column) => (
                        match self.keys_with_newer_revision {
                            0 => format!("keys in PostgreSQL holding their newest {column}"),
                            n => format!(
                                "keys in PostgreSQL holding their newest {column} ({n} a later run's)"
                            ),
                        },
                        format!(
                            "{} holding an older revision, {} holding a revision not produced",
                            self.keys_with_older_revision, self.keys_with_unknown_row
                        ),
                    ),
                    None => (
                        "keys in PostgreSQL holding a produced event (keep-first)".to_string(),
                        format!(
                            "{} holding an event not produced",
                            self.keys_with_unknown_row
                        ),
                    ),
                };
                t.add_row(vec![
                    what,
                    self.expected_keys.to_string(),
                    self.keys_in_table.to_string(),
                    format!("{} missing, {wrong}", self.keys_missing),
                ]);
            }
        }
        t.add_row(vec![
            if self.no_lake {
                format!(
                    "events in commit markers, no lake ({} markers, {} lines)",
                    self.parquet_objects, self.parquet_rows
                )
            } else {
                format!(
                    "events in Parquet ({} objects, {} rows)",
                    self.parquet_objects, self.parquet_rows
                )
            },
            self.expected_events.to_string(),
            self.in_lake_once.to_string(),
            format!(
                "{} missing, {} duplicated",
                self.missing_in_lake, self.duplicated_in_lake
            ),
        ]);
        // Latency needs the event's own time: known for the seed events (created_at) only.
        if self.merge.is_none() {
            t.add_row(vec![
                "latency created_at → both sinks".to_string(),
                "-".into(),
                format!(
                    "p50 {} ms, p99 {} ms",
                    self.latency_p50_ms.map_or("-".into(), |v| v.to_string()),
                    self.latency_p99_ms.map_or("-".into(), |v| v.to_string())
                ),
                "".into(),
            ]);
        }
        if let Some(index) = &self.index {
            t.add_row(index.row());
        }
        t.add_row(vec![
            "poison records dead-lettered".to_string(),
            self.expected_poison.to_string(),
            self.dead_lettered.to_string(),
            format!(
                "{} missing, {} without reason",
                self.missing_dead_letters, self.dead_letters_without_reason
            ),
        ]);
        t
    }
}

async fn keys_under(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>, CliError> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let out = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| CliError::aws("s3 ListObjectsV2", &e))?;
        keys.extend(
            out.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
        match out.next_continuation_token() {
            Some(t) => token = Some(t.to_owned()),
            None => return Ok(keys),
        }
    }
}

/// An object's bytes and its LastModified (ms).
async fn object(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<(bytes::Bytes, i64), CliError> {
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| CliError::aws("s3 GetObject", &e))?;
    let written = out
        .last_modified
        .and_then(|t| t.to_millis().ok())
        .unwrap_or(0);
    out.body
        .collect()
        .await
        .map(|b| (b.into_bytes(), written))
        .map_err(|e| CliError::Usage(format!("s3 GetObject {key}: {e}")))
}

/// The id column's values of one Parquet object (a text column).
fn parquet_ids(bytes: bytes::Bytes, id_column: &str) -> Result<Vec<String>, CliError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .map_err(|e| CliError::Usage(format!("not a Parquet object: {e}")))?;
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| CliError::Usage(format!("Parquet read: {e}")))?;
        if let Some(col) = batch.column_by_name(id_column) {
            let Some(col) = col.as_string_opt::<i32>() else {
                return Err(CliError::Usage(format!(
                    "the lake's {id_column} column is not text; verify needs a text id column"
                )));
            };
            for i in 0..col.len() {
                if col.is_valid(i) {
                    ids.push(col.value(i).to_owned());
                }
            }
        }
    }
    Ok(ids)
}

/// Audits `manifest` against the sinks.
pub async fn audit(
    manifest: &Manifest,
    sinks: &Sinks,
    s3: &aws_sdk_s3::Client,
) -> Result<Audit, CliError> {
    let mut audit = Audit {
        expected_events: manifest.event_ids.len(),
        expected_poison: manifest.poison_tokens.len(),
        ..Audit::default()
    };
    let expected: HashSet<&str> = manifest.event_ids.iter().map(String::as_str).collect();

    // PostgreSQL: which of the expected ids are present.
    let client = connect(&sinks.database_url).await?;
    let ids: Vec<String> = manifest.event_ids.clone();
    let table_sql = sinks
        .table
        .split('.')
        .map(streamload_core::route::quote)
        .collect::<Vec<_>>()
        .join(".");
    let rows = client
        .query(
            &format!(
                "SELECT {id}::text, (extract(epoch FROM {created}) * 1000)::int8, \
                 (extract(epoch FROM updated_at) * 1000)::int8 FROM {table_sql} WHERE {id}::text = ANY($1)",
                id = streamload_core::route::quote(&sinks.id_column),
                // The seed's created_at; another table's rows have no event time we know of.
                created = if sinks.id_column == "event_id" { "created_at" } else { "updated_at" },
            ),
            &[&ids],
        )
        .await
        .map_err(|e| CliError::Postgres(format!("read rows of {}: {e}", sinks.table)))?;
    let mut times: HashMap<String, (i64, i64)> = HashMap::new();
    for r in &rows {
        let created: Option<i64> = r.get(1);
        let updated: Option<i64> = r.get(2);
        times.insert(r.get(0), (created.unwrap_or(0), updated.unwrap_or(0)));
    }
    audit.in_table = rows.len();
    audit.missing_in_table = audit.expected_events - audit.in_table;

    // Parquet: every object under the prefix, each expected id's number of rows.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut latencies = Vec::new();
    for key in keys_under(s3, &sinks.bucket, &sinks.lake_prefix).await? {
        if !key.ends_with(".parquet") {
            continue;
        }
        audit.parquet_objects += 1;
        let (bytes, written_ms) = object(s3, &sinks.bucket, &key).await?;
        for id in parquet_ids(bytes, &sinks.id_column)? {
            audit.parquet_rows += 1;
            if expected.contains(id.as_str()) {
                if let Some((created, updated)) = times.get(&id) {
                    latencies.push(updated.max(&written_ms) - created);
                }
                *seen.entry(id).or_default() += 1;
            }
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| -> Option<i64> {
        (!latencies.is_empty())
            .then(|| latencies[((latencies.len() - 1) as f64 * p).round() as usize])
    };
    // Latency needs the event's own time: known for the seed events (created_at) only.
    if sinks.id_column == "event_id" {
        audit.latency_p50_ms = pct(0.50);
        audit.latency_p99_ms = pct(0.99);
    }
    audit.in_lake_once = seen.values().filter(|n| **n == 1).count();
    audit.duplicated_in_lake = seen.values().filter(|n| **n > 1).count();
    audit.missing_in_lake = audit.expected_events - seen.len();

    dead_letters(manifest, sinks, s3, &mut audit).await?;
    Ok(audit)
}

async fn connect(database_url: &str) -> Result<tokio_postgres::Client, CliError> {
    let options = streamload_postgres::ConnectOptions::parse(database_url)
        .map_err(|e| CliError::Postgres(format!("DATABASE_URL: {e}")))?;
    let tls = options
        .tls_settings()
        .connector()
        .map_err(|e| CliError::Postgres(e.to_string()))?;
    let (client, conn) = options
        .config()
        .connect(tls)
        .await
        .map_err(|e| CliError::Postgres(format!("connect: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Dead letters: the archived messages, each with a reason and the raw bytes holding a token.
async fn dead_letters(
    manifest: &Manifest,
    sinks: &Sinks,
    s3: &aws_sdk_s3::Client,
    audit: &mut Audit,
) -> Result<(), CliError> {
    let tokens: HashSet<&str> = manifest.poison_tokens.iter().map(String::as_str).collect();
    let mut found: HashSet<String> = HashSet::new();
    let b64 = base64::engine::general_purpose::STANDARD;
    for key in keys_under(s3, &sinks.bucket, &sinks.dead_letter_prefix).await? {
        // An archive holds the messages one invocation sent, one a line (`.jsonl`); earlier
        // versions archived each message alone (`.json`).
        if !key.ends_with(".jsonl") && !key.ends_with(".json") {
            continue;
        }
        let (body, _) = object(s3, &sinks.bucket, &key).await?;
        for line in body.split(|&b| b == b'\n') {
            let Ok(doc) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            let raw = doc
                .get("data_base64")
                .and_then(|d| d.as_str())
                .and_then(|d| b64.decode(d).ok())
                .unwrap_or_default();
            let refused_by_index = doc
                .get("reason")
                .and_then(|r| r.as_str())
                .is_some_and(|r| r.starts_with("the search index refused"));
            if refused_by_index {
                if let Ok(record) = serde_json::from_slice(&raw) {
                    audit.index_refused.push(record);
                }
            }
            let text = String::from_utf8_lossy(&raw);
            let Some(token) = tokens.iter().find(|t| text.contains(**t)) else {
                continue;
            };
            if doc
                .get("reason")
                .and_then(|r| r.as_str())
                .is_none_or(str::is_empty)
            {
                audit.dead_letters_without_reason += 1;
            }
            found.insert((*token).to_owned());
        }
    }
    audit.dead_lettered = found.len();
    audit.missing_dead_letters = audit.expected_poison - found.len();
    Ok(())
}

/// What a route's table row holds, in the manifest's text forms (see
/// [`RouteEvent`](crate::produce::RouteEvent)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRow {
    pub key: Vec<String>,
    pub identity: Vec<String>,
    pub newest_by: Option<String>,
}

/// An identity as the loader forms it from its parts' texts: one part as its text, several as
/// a JSON array.
pub fn identity_of(parts: &[String]) -> String {
    match parts {
        [one] => one.clone(),
        many => serde_json::to_string(many).unwrap_or_default(),
    }
}

/// A value's text in the loader's identity form, from the text PostgreSQL or Parquet gives
/// for a column of `ty` (`timestamptz` and `date` arrive already as microseconds and days).
pub fn canonical(ty: ColumnType, text: &str) -> String {
    match ty {
        ColumnType::Numeric { .. } => streamload_core::route::value::convert_scalar(
            ColumnType::Numeric {
                precision: None,
                scale: None,
            },
            text,
            false,
        )
        .map_or_else(|_| text.to_owned(), |v| v.identity_text().into_owned()),
        ColumnType::Double => text
            .parse::<f64>()
            .map_or_else(|_| text.to_owned(), |d| d.to_string()),
        _ => text.to_owned(),
    }
}

/// Orders two values of a column of `ty`, both in the identity text form: numbers and times
/// as numbers (exactly, decimals too), text and UUIDs as text.
pub fn compare(ty: ColumnType, a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match ty {
        ColumnType::Integer
        | ColumnType::Bigint
        | ColumnType::Timestamptz { .. }
        | ColumnType::Date => match (a.parse::<i128>(), b.parse::<i128>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => a.cmp(b),
        },
        ColumnType::Double => match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
            _ => a.cmp(b),
        },
        ColumnType::Numeric { .. } => compare_decimal(a, b),
        _ => a.cmp(b),
    }
}

/// Orders two decimal texts (`-12.5`, `3`) exactly, however many digits.
fn compare_decimal(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> (bool, String, String) {
        let (negative, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        let int = int.trim_start_matches('0').to_owned();
        let frac = frac.trim_end_matches('0').to_owned();
        let zero = int.is_empty() && frac.is_empty();
        (negative && !zero, int, frac)
    }
    let (an, ai, af) = parts(a);
    let (bn, bi, bf) = parts(b);
    let magnitude = ai
        .len()
        .cmp(&bi.len())
        .then_with(|| ai.cmp(&bi))
        .then_with(|| af.cmp(&bf));
    match (an, bn) {
        (false, false) => magnitude,
        (true, true) => magnitude.reverse(),
        (false, true) => std::cmp::Ordering::Greater,
        (true, false) => std::cmp::Ordering::Less,
    }
}

/// What the manifest says of one key.
struct Produced<'a> {
    identities: HashSet<&'a [String]>,
    revisions: HashSet<&'a str>,
    newest: Option<&'a str>,
}

/// Judges a route's table rows and lake identities against `manifest` by the route's merge
/// rule: the table per key, the lake per event (every revision once). Dead letters are not
/// judged here.
pub fn judge_route(
    route: &Route,
    manifest: &Manifest,
    rows: &[RouteRow],
    lake_ids: &[String],
) -> Result<Audit, CliError> {
    if manifest.route_events.len() != manifest.event_ids.len() {
        return Err(CliError::Usage(
            "the manifest has no route events (it was made without --route, or by an older streamload); verify it without --routes".into(),
        ));
    }
    if let Some(name) = manifest.route.as_deref().filter(|n| *n != route.name) {
        return Err(CliError::Usage(format!(
            "the manifest was made for route {name:?}, not {:?}",
            route.name
        )));
    }
    let newest_ty = match route.merge {
        Merge::NewestBy(i) => Some(route.columns[i].ty),
        Merge::KeepFirst => None,
    };
    let mut audit = Audit {
        expected_events: manifest.event_ids.len(),
        expected_poison: manifest.poison_tokens.len(),
        route: Some(route.name.clone()),
        merge: Some(match route.merge {
            Merge::NewestBy(i) => format!("newest_by:{}", route.columns[i].name),
            Merge::KeepFirst => "keep-first".into(),
        }),
        ..Audit::default()
    };

    // The table, key by key.
    let mut produced: HashMap<&[String], Produced<'_>> = HashMap::new();
    for e in &manifest.route_events {
        let p = produced.entry(&e.key).or_insert_with(|| Produced {
            identities: HashSet::new(),
            revisions: HashSet::new(),
            newest: None,
        });
        p.identities.insert(&e.identity);
        if let (Some(ty), Some(r)) = (newest_ty, e.newest_by.as_deref()) {
            p.revisions.insert(r);
            if p.newest.is_none_or(|n| compare(ty, r, n).is_gt()) {
                p.newest = Some(r);
            }
        }
    }
    let by_key: HashMap<&[String], &RouteRow> =
        rows.iter().map(|r| (r.key.as_slice(), r)).collect();
    audit.expected_keys = produced.len();
    for (key, p) in &produced {
        let Some(row) = by_key.get(key) else {
            audit.keys_missing += 1;
            continue;
        };
        match (newest_ty, row.newest_by.as_deref()) {
            (Some(_), Some(held)) if Some(held) == p.newest => audit.keys_in_table += 1,
            // A later run's revision won, as the merge rule says it should.
            (Some(ty), Some(held))
                if !p.revisions.contains(held)
                    && p.newest.is_some_and(|n| compare(ty, held, n).is_gt()) =>
            {
                audit.keys_in_table += 1;
                audit.keys_with_newer_revision += 1;
            }
            (Some(_), Some(held)) if p.revisions.contains(held) => {
                audit.keys_with_older_revision += 1
            }
            (Some(_), _) => audit.keys_with_unknown_row += 1,
            (None, _) if p.identities.contains(row.identity.as_slice()) => audit.keys_in_table += 1,
            (None, _) => audit.keys_with_unknown_row += 1,
        }
    }
    audit.in_table = audit.keys_in_table;
    audit.missing_in_table = audit.keys_missing;

    // The lake, event by event: every revision exactly once.
    let expected: HashSet<&str> = manifest.event_ids.iter().map(String::as_str).collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for id in lake_ids {
        if let Some(e) = expected.get(id.as_str()) {
            *seen.entry(e).or_default() += 1;
        }
    }
    audit.parquet_rows = lake_ids.len();
    audit.in_lake_once = seen.values().filter(|n| **n == 1).count();
    audit.duplicated_in_lake = seen.values().filter(|n| **n > 1).count();
    audit.missing_in_lake = expected.len() - seen.len();
    Ok(audit)
}

/// A column's value in the identity text form, computed by PostgreSQL.
fn sql_text(column: &str, ty: ColumnType) -> String {
    let c = streamload_core::route::quote(column);
    match ty {
        ColumnType::Timestamptz { .. } => {
            format!("round(extract(epoch FROM {c}) * 1000000)::int8::text")
        }
        ColumnType::Date => format!("({c} - DATE '1970-01-01')::text"),
        _ => format!("{c}::text"),
    }
}

/// The text `x` (identity form) as a value of `ty`, in SQL.
fn sql_value(ty: ColumnType) -> String {
    match ty {
        ColumnType::Timestamptz { .. } => {
            "TIMESTAMPTZ 'epoch' + x::int8 * INTERVAL '1 microsecond'".into()
        }
        ColumnType::Date => "DATE '1970-01-01' + x::int4".into(),
        ColumnType::Text => "x".into(),
        other => format!("x::{}", other.sql_type()),
    }
}

/// The rows of the route's table for the manifest's keys.
async fn route_rows(
    client: &tokio_postgres::Client,
    route: &Route,
    manifest: &Manifest,
) -> Result<Vec<RouteRow>, CliError> {
    let col = |i: usize| &route.columns[i];
    let mut select: Vec<String> = Vec::new();
    for &i in route.key.iter().chain(&route.identity) {
        select.push(sql_text(&col(i).name, col(i).ty));
    }
    let newest = match route.merge {
        Merge::NewestBy(i) => Some(i),
        Merge::KeepFirst => None,
    };
    if let Some(i) = newest {
        select.push(sql_text(&col(i).name, col(i).ty));
    }
    let first = route.key[0];
    let firsts: Vec<String> = manifest
        .route_events
        .iter()
        .map(|e| e.key[0].clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {} IN (SELECT {} FROM unnest($1::text[]) AS u(x))",
        select.join(", "),
        route.quoted_table(),
        streamload_core::route::quote(&col(first).name),
        sql_value(col(first).ty),
    );
    let rows = client
        .query(&sql, &[&firsts])
        .await
        .map_err(|e| CliError::Postgres(format!("read rows of {}: {e}", route.table_name())))?;
    let text = |r: &tokio_postgres::Row, at: usize, i: usize| -> String {
        let t: Option<String> = r.get(at);
        t.map_or_else(String::new, |t| canonical(col(i).ty, &t))
    };
    let (k, n) = (route.key.len(), route.identity.len());
    Ok(rows
        .iter()
        .map(|r| RouteRow {
            key: (0..k).map(|j| text(r, j, route.key[j])).collect(),
            identity: (0..n).map(|j| text(r, k + j, route.identity[j])).collect(),
            newest_by: newest.map(|i| text(r, k + n, i)),
        })
        .collect())
}

/// One cell of a lake column in the identity text form (`None` when null), or the kind of
/// column verify cannot read.
fn cell_text(column: &dyn Array, i: usize, ty: ColumnType) -> Result<Option<String>, String> {
    if column.is_null(i) {
        return Ok(None);
    }
    let text = if let Some(c) = column.as_string_opt::<i32>() {
        canonical(ty, c.value(i))
    } else if let Some(c) = column.as_string_opt::<i64>() {
        canonical(ty, c.value(i))
    } else if let Some(c) = column.as_primitive_opt::<Int32Type>() {
        c.value(i).to_string()
    } else if let Some(c) = column.as_primitive_opt::<Int64Type>() {
        c.value(i).to_string()
    } else if let Some(c) = column.as_primitive_opt::<Float64Type>() {
        c.value(i).to_string()
    } else if let Some(c) = column.as_boolean_opt() {
        c.value(i).to_string()
    } else if let Some(c) = column.as_primitive_opt::<Date32Type>() {
        c.value(i).to_string()
    } else if let Some(c) = column.as_primitive_opt::<TimestampMicrosecondType>() {
        c.value(i).to_string()
    } else if let Some(c) = column.as_primitive_opt::<Decimal128Type>() {
        let v = c.value(i);
        let scale = c.scale().max(0) as usize;
        let digits = format!("{:0>w$}", v.unsigned_abs(), w = scale + 1);
        let (int, frac) = digits.split_at(digits.len() - scale);
        let sign = if v < 0 { "-" } else { "" };
        canonical(ty, format!("{sign}{int}.{frac}").trim_end_matches('.'))
    } else {
        return Err(format!("a {} column", column.data_type()));
    };
    Ok(Some(text))
}

/// The identity of every row of one of the route's Parquet objects.
fn parquet_identities(bytes: bytes::Bytes, route: &Route) -> Result<Vec<String>, CliError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .map_err(|e| CliError::Usage(format!("not a Parquet object: {e}")))?;
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| CliError::Usage(format!("Parquet read: {e}")))?;
        let mut columns = Vec::with_capacity(route.identity.len());
        for &i in &route.identity {
            let c = &route.columns[i];
            let Some(col) = batch.column_by_name(&c.name) else {
                return Err(CliError::Usage(format!(
                    "a Parquet object of route {:?} has no identity column {:?}",
                    route.name, c.name
                )));
            };
            columns.push((col.clone(), c.ty));
        }
        for row in 0..batch.num_rows() {
            let mut parts = Vec::with_capacity(columns.len());
            for (col, ty) in &columns {
                let text = cell_text(col.as_ref(), row, *ty).map_err(|what| {
                    CliError::Usage(format!("verify cannot read {what} of the lake"))
                })?;
                parts.push(text.unwrap_or_default());
            }
            ids.push(identity_of(&parts));
        }
    }
    Ok(ids)
}

/// The identities a commit marker names (its lines' claim keys without the route's prefix).
fn marker_identities(bytes: &[u8], route: &Route, key: &str) -> Result<Vec<String>, CliError> {
    let unreadable = || CliError::Usage(format!("verify cannot read the commit marker {key}"));
    let text = std::str::from_utf8(bytes).map_err(|_| unreadable())?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).map_err(|_| unreadable())?;
            line["claim_key"]
                .as_str()
                .and_then(|k| k.strip_prefix(&route.claim_prefix))
                .map(str::to_owned)
                .ok_or_else(unreadable)
        })
        .collect()
}

/// Audits `manifest` against the sinks of `route`, by its merge rule (see the module).
pub async fn audit_route(
    manifest: &Manifest,
    route: &Route,
    sinks: &Sinks,
    s3: &aws_sdk_s3::Client,
) -> Result<Audit, CliError> {
    if manifest.route_events.len() != manifest.event_ids.len() {
        // Said by judge_route; before anything is read.
        judge_route(route, manifest, &[], &[])?;
    }
    let rows = if route.has_table() {
        let client = connect(&sinks.database_url).await?;
        route_rows(&client, route, manifest).await?
    } else {
        Vec::new()
    };
    let mut lake_ids = Vec::new();
    let mut objects = 0;
    if route.lake {
        for key in keys_under(s3, &sinks.bucket, &route.lake_prefix).await? {
            if !key.ends_with(".parquet") {
                continue;
            }
            objects += 1;
            let (bytes, _) = object(s3, &sinks.bucket, &key).await?;
            lake_ids.extend(parquet_identities(bytes, route)?);
        }
    } else {
        // A route without a lake: its commit markers name each loaded event once.
        let markers = format!("{}{MARKER_FOLDER}", route.lake_prefix);
        for key in keys_under(s3, &sinks.bucket, &markers).await? {
            if !key.ends_with(".jsonl") {
                continue;
            }
            objects += 1;
            let (bytes, _) = object(s3, &sinks.bucket, &key).await?;
            lake_ids.extend(marker_identities(&bytes, route, &key)?);
        }
    }
    let mut audit = judge_route(route, manifest, &rows, &lake_ids)?;
    if !route.has_table() {
        audit.no_table = true;
        audit.keys_in_table = 0;
        audit.keys_missing = 0;
        audit.in_table = 0;
        audit.missing_in_table = 0;
    }
    audit.parquet_objects = objects;
    audit.no_lake = !route.lake;
    dead_letters(manifest, sinks, s3, &mut audit).await?;
    Ok(audit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::produce::RouteEvent;

    fn route(name: &str) -> Route {
        let text = include_str!("../../examples/orders/streamload.toml");
        let file: streamload_core::route::ConfigFile = toml::from_str(text).unwrap();
        let routes = streamload_core::Routes::compile(&file).unwrap();
        let route = routes.iter().find(|r| r.name == name).unwrap().clone();
        route
    }

    /// A manifest of orders: each (order, revisions), in the order given.
    fn orders(revisions: &[(&str, &[i64])]) -> Manifest {
        let mut m = Manifest {
            route: Some("orders".into()),
            ..Manifest::default()
        };
        for (order, revs) in revisions {
            for r in *revs {
                let identity = vec![order.to_string(), r.to_string()];
                m.event_ids.push(identity_of(&identity));
                m.route_events.push(RouteEvent {
                    identity,
                    key: vec![order.to_string()],
                    newest_by: Some(r.to_string()),
                });
            }
        }
        m
    }

    fn row(order: &str, revision: i64) -> RouteRow {
        RouteRow {
            key: vec![order.into()],
            identity: vec![order.into(), revision.to_string()],
            newest_by: Some(revision.to_string()),
        }
    }

    #[test]
    fn a_key_holding_an_older_revision_is_reported() {
        // Given orders with revisions sent out of order (10 after 9: newest compared as numbers)
        let orders_route = route("orders");
        let m = orders(&[
            ("k-0", &[2, 1, 3]),
            ("k-1", &[1, 2]),
            ("k-2", &[1]),
            ("k-3", &[10, 9]),
        ]);
        let all: Vec<String> = m.event_ids.clone();
        // When the table holds the newest of k-0 and k-3, an older one of k-1, a revision
        // never produced for k-2 (below its newest: a newer one would be a later run's) … and
        // nothing of k-4's; and the lake holds every event once
        let rows = [row("k-0", 3), row("k-1", 1), row("k-2", 0), row("k-3", 10)];
        let a = judge_route(&orders_route, &m, &rows, &all).unwrap();
        // Then the older revision and the unknown one are reported, and nothing else
        assert_eq!(a.expected_keys, 4);
        assert_eq!(a.keys_in_table, 2, "{a:?}");
        assert_eq!(a.keys_with_older_revision, 1, "{a:?}");
        assert_eq!(a.keys_with_unknown_row, 1, "{a:?}");
        assert_eq!(
            (a.keys_missing, a.missing_in_lake, a.duplicated_in_lake),
            (0, 0, 0)
        );
        assert_eq!(a.in_lake_once, 8);
        assert!(!a.exactly_once());
        assert_eq!(a.verdict(), "WRONG ROWS IN THE TABLE");
        assert!(a
            .table()
            .to_string()
            .contains("1 holding an older revision"));
        assert_eq!(a.merge.as_deref(), Some("newest_by:revision"));

        // And when every key holds its newest, the verdict is exactly once
        let rows = [row("k-0", 3), row("k-1", 2), row("k-2", 1), row("k-3", 10)];
        let a = judge_route(&orders_route, &m, &rows, &all).unwrap();
        assert!(a.exactly_once(), "{a:?}");
        assert_eq!(a.verdict(), "exactly once");

        // But a missing key, a revision missing from the lake and one twice there are loss
        let mut lake = all[1..].to_vec();
        lake.push(all[2].clone());
        let a = judge_route(&orders_route, &m, &rows[1..], &lake).unwrap();
        assert_eq!((a.keys_missing, a.missing_in_table), (1, 1));
        assert_eq!((a.missing_in_lake, a.duplicated_in_lake), (1, 1));
        assert_eq!(a.verdict(), "LOSS OR DUPLICATES");
    }

    #[test]
    fn a_key_holding_a_later_runs_newer_revision_is_right() {
        // Given a first run's orders, and a second run that sent newer revisions of two keys
        let orders_route = route("orders");
        let m = orders(&[("k-0", &[1, 2]), ("k-1", &[1, 3]), ("k-2", &[2])]);
        let all = m.event_ids.clone();
        // When the table holds the second run's revisions of k-0 and k-1, and k-2's own
        let rows = [row("k-0", 5), row("k-1", 4), row("k-2", 2)];
        let a = judge_route(&orders_route, &m, &rows, &all).unwrap();
        // Then the first run's verdict is exactly once, saying two keys hold a later run's
        assert!(a.exactly_once(), "{a:?}");
        assert_eq!((a.keys_in_table, a.keys_with_newer_revision), (3, 2));
        assert!(a.table().to_string().contains("(2 a later run's)"));
        // But a revision below the newest that this run never produced is still unknown
        let rows = [row("k-0", 5), row("k-1", 2), row("k-2", 2)];
        let a = judge_route(&orders_route, &m, &rows, &all).unwrap();
        assert_eq!(
            (a.keys_with_unknown_row, a.keys_with_newer_revision),
            (1, 1),
            "{a:?}"
        );
    }

    #[test]
    fn a_keep_first_route_needs_each_keys_row_holding_a_produced_event() {
        // Given the events route (identity = key = event_id) and three events
        let events = route("events");
        let mut m = Manifest {
            route: Some("events".into()),
            ..Manifest::default()
        };
        for id in ["e-1", "e-2", "e-3"] {
            m.event_ids.push(id.into());
            m.route_events.push(RouteEvent {
                identity: vec![id.into()],
                key: vec![id.into()],
                newest_by: None,
            });
        }
        let row = |id: &str| RouteRow {
            key: vec![id.into()],
            identity: vec![id.into()],
            newest_by: None,
        };
        // When one row is missing
        let a = judge_route(&events, &m, &[row("e-1"), row("e-3")], &m.event_ids).unwrap();
        // Then it is missing, as the seed audit would say
        assert_eq!((a.in_table, a.missing_in_table, a.keys_missing), (2, 1, 1));
        assert_eq!(a.merge.as_deref(), Some("keep-first"));
        assert!(!a.exactly_once());
        let a = judge_route(
            &events,
            &m,
            &[row("e-1"), row("e-2"), row("e-3")],
            &m.event_ids,
        )
        .unwrap();
        assert!(a.exactly_once(), "{a:?}");

        // And on a keep-first route keyed by user, whose identity is the event: a user's row
        // may hold any event produced for the user (which came first is the stream's order),
        // but not one this run never produced
        let text = include_str!("../../examples/orders/streamload.toml").replacen(
            "key = [\"event_id\"]",
            "key = [\"user_id\"]",
            1,
        );
        let file: streamload_core::route::ConfigFile = toml::from_str(&text).unwrap();
        let routes = streamload_core::Routes::compile(&file).unwrap();
        let by_user = routes.iter().find(|r| r.name == "events").unwrap();
        let mut m = Manifest::default();
        for (id, user) in [("e-1", "u-1"), ("e-2", "u-1"), ("e-3", "u-2")] {
            m.event_ids.push(id.into());
            m.route_events.push(RouteEvent {
                identity: vec![id.into()],
                key: vec![user.into()],
                newest_by: None,
            });
        }
        let row = |user: &str, id: &str| RouteRow {
            key: vec![user.into()],
            identity: vec![id.into()],
            newest_by: None,
        };
        let rows = [row("u-1", "e-2"), row("u-2", "e-9")];
        let a = judge_route(by_user, &m, &rows, &m.event_ids).unwrap();
        assert_eq!((a.expected_keys, a.keys_in_table), (2, 1), "{a:?}");
        assert_eq!((a.keys_with_unknown_row, a.keys_missing), (1, 0), "{a:?}");
        assert!(a
            .table()
            .to_string()
            .contains("1 holding an event not produced"));
    }

    #[test]
    fn old_manifests_still_load_and_a_route_needs_route_events() {
        // Given a manifest of the first release (no route, seed or route_events)
        let old = r#"{"target":"kinesis://clicks","records_sent":3,"duplicates_sent":1,
            "event_ids":["a","b"],"poison_tokens":["poison-x"],"produced_at_ms":[1,2]}"#;
        let m: Manifest = serde_json::from_str(old).unwrap();
        assert_eq!((m.route.as_deref(), m.route_events.len()), (None, 0));
        // Then it cannot be judged by a route, and says so
        let err = judge_route(&route("orders"), &m, &[], &[]).unwrap_err();
        assert!(err.to_string().contains("without --routes"), "{err}");
    }

    #[test]
    fn values_compare_by_type_and_read_back_in_the_manifests_form() {
        use std::cmp::Ordering::*;
        let n = ColumnType::Numeric {
            precision: Some(12),
            scale: Some(2),
        };
        assert_eq!(compare(n, "10.5", "9.75"), Greater);
        assert_eq!(compare(n, "-1", "0.5"), Less);
        assert_eq!(compare(n, "-10", "-9.5"), Less);
        assert_eq!(compare(n, "1.10", "1.1"), Equal);
        assert_eq!(compare(ColumnType::Integer, "10", "9"), Greater);
        assert_eq!(compare(ColumnType::Text, "r-000010", "r-000009"), Greater);
        // PostgreSQL's numeric text and a Parquet DECIMAL become the manifest's canonical text
        assert_eq!(canonical(n, "12.50"), "12.5");
        assert_eq!(canonical(n, "3.00"), "3");
        let d = arrow_array::Decimal128Array::from(vec![Some(1250), Some(-5), None])
            .with_precision_and_scale(12, 2)
            .unwrap();
        assert_eq!(cell_text(&d, 0, n).unwrap().as_deref(), Some("12.5"));
        assert_eq!(cell_text(&d, 1, n).unwrap().as_deref(), Some("-0.05"));
        assert_eq!(cell_text(&d, 2, n).unwrap(), None);
        let ints = arrow_array::Int32Array::from(vec![7]);
        assert_eq!(
            cell_text(&ints, 0, ColumnType::Integer).unwrap().as_deref(),
            Some("7")
        );
        assert_eq!(identity_of(&["o-1".into(), "2".into()]), r#"["o-1","2"]"#);
    }

    #[test]
    fn a_commit_markers_lines_give_the_identities_it_proves_loaded() {
        // Given the orders route (claims rt:orders:<identity>) and a marker of two events
        let route = route("orders");
        let body = concat!(
            r#"{"source_unit":"orders/shardId-0","source_position":"1","claim_key":"rt:orders:[\"o-1\",\"2\"]"}"#,
            "\n",
            r#"{"source_unit":"orders/shardId-0","source_position":"2","claim_key":"rt:orders:[\"o-2\",\"1\"]"}"#,
            "\n"
        );
        // When it is read, Then each line is one identity in the loader's form
        let ids = marker_identities(body.as_bytes(), &route, "k").unwrap();
        assert_eq!(ids, vec![r#"["o-1","2"]"#, r#"["o-2","1"]"#]);
        // And a line of another route's claims is an unreadable marker, not a silent skip
        let other = r#"{"claim_key":"rt:clicks:c-1"}"#;
        let e = marker_identities(other.as_bytes(), &route, "k").unwrap_err();
        assert!(e.to_string().contains("commit marker k"), "{e}");
    }
}
