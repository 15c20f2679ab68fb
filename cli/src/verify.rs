//! `streamload verify`: the exactly-once audit of a produced manifest across both sinks and
//! the dead letters. Each valid event must be in the table exactly once (the key makes that
//! a given: what is audited is "present") and in exactly one row of exactly one Parquet
//! object; each poison record must have a dead letter (a line of an archive under the
//! dead-letter prefix, the same body as the SQS message) with a reason.

use std::collections::{HashMap, HashSet};

use arrow_array::cast::AsArray;
use arrow_array::Array;
use base64::Engine;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

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
}

impl Audit {
    /// True when nothing is lost or duplicated.
    pub fn exactly_once(&self) -> bool {
        self.missing_in_table == 0
            && self.missing_in_lake == 0
            && self.duplicated_in_lake == 0
            && self.missing_dead_letters == 0
            && self.dead_letters_without_reason == 0
    }

    pub fn table(&self) -> comfy_table::Table {
        let mut t = comfy_table::Table::new();
        t.set_header(vec!["check", "expected", "found", "problems"]);
        t.add_row(vec![
            "events in PostgreSQL".to_string(),
            self.expected_events.to_string(),
            self.in_table.to_string(),
            format!("{} missing", self.missing_in_table),
        ]);
        t.add_row(vec![
            format!(
                "events in Parquet ({} objects, {} rows)",
                self.parquet_objects, self.parquet_rows
            ),
            self.expected_events.to_string(),
            self.in_lake_once.to_string(),
            format!(
                "{} missing, {} duplicated",
                self.missing_in_lake, self.duplicated_in_lake
            ),
        ]);
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
    let options = streamload_postgres::ConnectOptions::parse(&sinks.database_url)
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

    // Dead letters: the archived messages, each with a reason and the raw bytes holding a token.
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
    Ok(audit)
}
