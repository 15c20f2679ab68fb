//! `streamload verify` for a route's search index: each produced key's document must be
//! there once (its id is the key, so "once" is given: what is audited is "present"), holding
//! the newest revision produced (`newest_by`: compared by the document's external version,
//! the same order-preserving value the loader wrote) or a later run's newer one; under
//! `keep-first` any produced event of the key. A key whose document the index refused is
//! counted as refused when a dead letter says so and carries that key — refused by that sink,
//! not lost.

use std::collections::{HashMap, HashSet};

use streamload_core::ports::SearchIndex;
use streamload_core::route::{
    value::convert_scalar, ColumnSource, ColumnType, Merge, Route, Value,
};

use crate::produce::Manifest;
use crate::verify::compare;
use crate::CliError;

/// The index's counts, per produced key.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IndexAudit {
    pub index: String,
    pub expected_keys: usize,
    /// Holding the newest produced revision, a later run's newer one, or (keep-first) a
    /// produced event.
    pub documents_ok: usize,
    /// …of which a later run's newer revision.
    pub documents_newer: usize,
    pub documents_missing: usize,
    /// Missing, and a dead letter says the index refused the key's document.
    pub documents_refused: usize,
    pub documents_with_older_revision: usize,
    /// Why the index was not audited (a name pattern or a custom id), if it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_audited: Option<String>,
}

impl IndexAudit {
    pub fn exactly_once(&self) -> bool {
        self.documents_missing == 0 && self.documents_with_older_revision == 0
    }

    /// The verdict table's row.
    pub fn row(&self) -> Vec<String> {
        if let Some(why) = &self.not_audited {
            return vec![
                format!("documents in search index {}", self.index),
                self.expected_keys.to_string(),
                "-".into(),
                format!("not audited: {why}"),
            ];
        }
        vec![
            match self.documents_newer {
                0 => format!("documents in search index {} (newest per key)", self.index),
                n => format!(
                    "documents in search index {} (newest per key; {n} a later run's)",
                    self.index
                ),
            },
            self.expected_keys.to_string(),
            self.documents_ok.to_string(),
            format!(
                "{} missing, {} holding an older revision, {} refused by the index (dead-lettered)",
                self.documents_missing, self.documents_with_older_revision, self.documents_refused
            ),
        ]
    }
}

/// The external version the loader wrote for a `newest_by` value given in the manifest's
/// identity text (a timestamp's microseconds, a date's days).
fn version_of(route: &Route, column: usize, text: &str) -> Option<u64> {
    let plan = route.search.as_ref()?;
    let ty = route.columns[column].ty;
    let value = match ty {
        ColumnType::Integer | ColumnType::Bigint => Value::Int(text.parse().ok()?),
        ColumnType::Timestamptz { .. } => Value::Timestamp(text.parse().ok()?),
        ColumnType::Date => Value::Date(text.parse().ok()?),
        _ => convert_scalar(ty, text, false).ok()?,
    };
    let mut values = vec![Value::Null; route.columns.len()];
    values[column] = value;
    plan.version(&values).ok().flatten()
}

/// The keys (texts of the key columns) of the records the index refused, read from their
/// dead letters through the key columns' JSON Pointers.
fn refused_keys(route: &Route, records: &[serde_json::Value]) -> HashSet<Vec<String>> {
    records
        .iter()
        .filter_map(|record| {
            route
                .key
                .iter()
                .map(|&k| match &route.columns[k].source {
                    ColumnSource::Pointer(p) => record.pointer(p).map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }),
                    ColumnSource::Meta(_) => None,
                })
                .collect::<Option<Vec<String>>>()
        })
        .collect()
}

/// Audits the route's index against `manifest`.
pub async fn audit_index<I: SearchIndex>(
    manifest: &Manifest,
    route: &Route,
    index: &I,
    refused_records: &[serde_json::Value],
) -> Result<IndexAudit, CliError> {
    let Some(plan) = &route.search else {
        return Err(CliError::Usage(format!(
            "route {:?} names no search index",
            route.name
        )));
    };
    let mut audit = IndexAudit {
        index: plan.template_pattern(),
        ..IndexAudit::default()
    };
    let mut produced: HashMap<&[String], (Option<&str>, HashSet<&str>)> = HashMap::new();
    let newest = match route.merge {
        Merge::NewestBy(i) => Some(i),
        Merge::KeepFirst => None,
    };
    for e in &manifest.route_events {
        let p = produced.entry(&e.key).or_default();
        if let (Some(i), Some(r)) = (newest, e.newest_by.as_deref()) {
            p.1.insert(r);
            if p.0
                .is_none_or(|n| compare(route.columns[i].ty, r, n).is_gt())
            {
                p.0 = Some(r);
            }
        }
    }
    audit.expected_keys = produced.len();
    if plan.is_pattern() {
        audit.not_audited = Some("the index name is a time pattern".into());
        return Ok(audit);
    }
    if plan.id != route.key {
        audit.not_audited = Some("the document id is not the route's key".into());
        return Ok(audit);
    }
    let refused = refused_keys(route, refused_records);
    for (key, (newest_text, revisions)) in &produced {
        let id = match key {
            [one] => one.clone(),
            many => serde_json::to_string(many).unwrap_or_default(),
        };
        let document = index
            .document(&audit.index, &id)
            .await
            .map_err(|e| CliError::Usage(format!("search index {}: {}", audit.index, e.message)))?;
        let Some(document) = document else {
            if refused.contains(*key) {
                audit.documents_refused += 1;
            } else {
                audit.documents_missing += 1;
            }
            continue;
        };
        let (Some(column), Some(newest_text)) = (newest, newest_text) else {
            audit.documents_ok += 1;
            continue;
        };
        let produced_versions: HashSet<u64> = revisions
            .iter()
            .filter_map(|r| version_of(route, column, r))
            .collect();
        match version_of(route, column, newest_text) {
            Some(v) if document.version == v => audit.documents_ok += 1,
            Some(v) if document.version > v && !produced_versions.contains(&document.version) => {
                audit.documents_ok += 1;
                audit.documents_newer += 1;
            }
            _ => audit.documents_with_older_revision += 1,
        }
    }
    Ok(audit)
}
