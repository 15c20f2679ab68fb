//! `streamload verify` for a route's search index: each produced key's document must be
//! there once (its id is the key, so "once" is given: what is audited is "present"), holding
//! the newest revision produced (`newest_by`: compared by the document's external version,
//! the same order-preserving value the loader wrote) or a later run's newer one; under
//! `keep-first` any produced event of the key. A key whose document the index refused is
//! counted as refused when a dead letter says so and carries that key — refused by that sink,
//! not lost. And nothing extra: every document in the index must be a produced key's (give
//! every run's manifest when the index holds several runs).

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
    /// Documents in the index whose id is no produced key: nothing the manifests made (an id
    /// formed wrongly, a stray writer, or a run whose manifest was not given).
    pub documents_not_produced: usize,
    /// Why the index was not audited (a name pattern or a custom id), if it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_audited: Option<String>,
}

impl IndexAudit {
    pub fn exactly_once(&self) -> bool {
        self.documents_missing == 0
            && self.documents_with_older_revision == 0
            && self.documents_not_produced == 0
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
                "{} missing, {} holding an older revision, {} refused by the index (dead-lettered), {} no run produced",
                self.documents_missing,
                self.documents_with_older_revision,
                self.documents_refused,
                self.documents_not_produced
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
    let id_of = |key: &[String]| match key {
        [one] => one.clone(),
        many => serde_json::to_string(many).unwrap_or_default(),
    };
    // Nothing extra: every document's id is a produced key.
    let ids: HashSet<String> = produced.keys().map(|k| id_of(k)).collect();
    audit.documents_not_produced = index
        .list_documents(&audit.index)
        .await
        .map_err(|e| CliError::Usage(format!("search index {}: {}", audit.index, e.message)))?
        .iter()
        .filter(|(id, _)| !ids.contains(id))
        .count();
    for (key, (newest_text, revisions)) in &produced {
        let id = id_of(key);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::produce::RouteEvent;
    use bytes::Bytes;
    use streamload_core::search::bulk::{encode, Doc};
    use streamload_core::search::memory::MemoryIndex;

    /// The example's orders route (newest_by revision) with an index "orders".
    fn route() -> Route {
        let text = include_str!("../../examples/orders/streamload.toml");
        let at = text.match_indices("[[route]]").nth(1).unwrap().0;
        let columns = at + text[at..].find("[[route.column]]").unwrap();
        let text = format!(
            "{}[route.index]\nname = \"orders\"\n\n{}",
            &text[..columns],
            &text[columns..]
        );
        let file: streamload_core::route::ConfigFile = toml::from_str(&text).unwrap();
        let routes = streamload_core::Routes::compile(&file).unwrap();
        let route = routes.iter().find(|r| r.name == "orders").unwrap().clone();
        route
    }

    fn manifest(orders: &[(&str, &[i64])]) -> Manifest {
        let mut m = Manifest {
            route: Some("orders".into()),
            ..Manifest::default()
        };
        for (order, revisions) in orders {
            for r in *revisions {
                m.route_events.push(RouteEvent {
                    identity: vec![order.to_string(), r.to_string()],
                    key: vec![order.to_string()],
                    newest_by: Some(r.to_string()),
                });
            }
        }
        m
    }

    /// Writes `order` at `revision` into `index` as the loader does.
    async fn index_order(index: &MemoryIndex, route: &Route, order: &str, revision: i64) {
        let mut values = vec![Value::Null; route.columns.len()];
        values[route.key[0]] = Value::Text(order.into());
        let Merge::NewestBy(r) = route.merge else {
            panic!("newest_by route")
        };
        values[r] = Value::Int(revision);
        let plan = route.search.as_ref().unwrap();
        let request = encode(
            &[Doc {
                plan,
                values: &values,
            }],
            1 << 20,
        )
        .remove(0);
        index.bulk(Bytes::from(request.body), 1).await.unwrap();
    }

    #[tokio::test]
    async fn each_key_is_judged_present_newest_older_missing_or_refused() {
        // Given four orders produced; the index holds o-1 newest, o-2 older, o-3 not at all
        // (the index refused it: a dead letter carries it), o-4 not at all
        let route = route();
        let index = MemoryIndex::default();
        index_order(&index, &route, "o-1", 3).await;
        index_order(&index, &route, "o-2", 1).await;
        let m = manifest(&[
            ("o-1", &[1, 3]),
            ("o-2", &[1, 2]),
            ("o-3", &[1]),
            ("o-4", &[1]),
        ]);
        let refused = vec![serde_json::json!({"order_id": "o-3", "revision": 1})];
        // When the index is audited
        let a = audit_index(&m, &route, &index, &refused).await.unwrap();
        // Then
        assert_eq!(a.expected_keys, 4);
        assert_eq!(a.documents_ok, 1);
        assert_eq!(a.documents_with_older_revision, 1);
        assert_eq!(a.documents_refused, 1);
        assert_eq!(a.documents_missing, 1);
        assert!(!a.exactly_once());
        // And a later run's newer revision counts as present
        index_order(&index, &route, "o-2", 9).await;
        index_order(&index, &route, "o-4", 1).await;
        let a = audit_index(&m, &route, &index, &refused).await.unwrap();
        assert_eq!((a.documents_ok, a.documents_newer), (3, 1));
        assert_eq!(a.documents_not_produced, 0);
        assert!(a.exactly_once());
        // But a document no run produced (here, o-7) is something extra: not exactly once
        index_order(&index, &route, "o-7", 1).await;
        let a = audit_index(&m, &route, &index, &refused).await.unwrap();
        assert_eq!((a.documents_ok, a.documents_not_produced), (3, 1));
        assert!(!a.exactly_once());
        // Until the run that made it is judged too
        let both = m.merge(manifest(&[("o-7", &[1])])).unwrap();
        let a = audit_index(&both, &route, &index, &refused).await.unwrap();
        assert_eq!((a.documents_ok, a.documents_not_produced), (4, 0));
        assert!(a.exactly_once());
    }
}
