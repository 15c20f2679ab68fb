//! A search index in memory with the engines' write rules — external versions, create-only,
//! strict mappings — for the pipeline's unit tests; the contract suite
//! (`tests/tests/adapters.rs`) holds it and the real adapter against osmem-server to the same
//! behaviour. It reads the `_bulk` bodies the encoder writes, so it checks them too.

use super::bulk::{refused, ItemOutcome};
use super::{compare_fields, IndexPlan};
use crate::error::PortError;
use crate::ports::{SearchIndex, StoredDocument};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

/// A mapping's field types: field name → mapping type.
pub type FieldTypes = HashMap<String, String>;

/// Documents by (index, id), and each prepared name's or pattern's field types.
#[derive(Default, Clone)]
pub struct MemoryIndex {
    pub documents: Arc<Mutex<BTreeMap<(String, String), StoredDocument>>>,
    /// (index name or template pattern, its field types)
    mappings: Arc<Mutex<Vec<(String, FieldTypes)>>>,
    /// The next this-many documents are rejected for now, as a cluster under load rejects
    /// items (429 `es_rejected_execution_exception`) while the rest of the request is applied.
    pub reject_next_items: Arc<std::sync::atomic::AtomicUsize>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether `index` is matched by `pattern` (a name, or literal text with one `*`).
fn matches(pattern: &str, index: &str) -> bool {
    match pattern.split_once('*') {
        Some((head, tail)) => {
            index.len() >= head.len() + tail.len()
                && index.starts_with(head)
                && index.ends_with(tail)
        }
        None => pattern == index,
    }
}

/// Whether a JSON value can be a field of `ty` (the engines coerce numeric strings; this
/// keeps to what the encoder writes and what a mapping conflict looks like).
fn fits(ty: &str, value: &Json) -> bool {
    match (ty, value) {
        (_, Json::Null) => true,
        ("keyword" | "date", Json::String(_)) => true,
        ("integer" | "long", Json::Number(n)) => n.is_i64() || n.is_u64(),
        ("double" | "scaled_float", Json::Number(_)) => true,
        ("boolean", Json::Bool(_)) => true,
        ("object", _) => true,
        _ => false,
    }
}

impl MemoryIndex {
    fn write(&self, action: &Json, source: Option<&Json>) -> ItemOutcome {
        use std::sync::atomic::Ordering;
        if self
            .reject_next_items
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return ItemOutcome::Retry(
                "the search index answered 429 es_rejected_execution_exception".into(),
            );
        }
        let (op, meta) = match action.as_object().and_then(|o| o.iter().next()) {
            Some((op, meta)) => (op.as_str(), meta),
            None => return ItemOutcome::Retry("a malformed action".into()),
        };
        let index = meta["_index"].as_str().unwrap_or_default().to_owned();
        let id = meta["_id"].as_str().unwrap_or_default().to_owned();
        let Some(source) = source.filter(|s| s.is_object()) else {
            return refused("mapper_parsing_exception", None);
        };
        let mappings = lock(&self.mappings);
        if let Some((_, fields)) = mappings.iter().find(|(p, _)| matches(p, &index)) {
            for (name, value) in source.as_object().into_iter().flatten() {
                match fields.get(name) {
                    None => return refused("strict_dynamic_mapping_exception", Some(name)),
                    Some(ty) if !fits(ty, value) => {
                        return refused("mapper_parsing_exception", Some(name))
                    }
                    Some(_) => {}
                }
            }
        }
        drop(mappings);
        let mut documents = lock(&self.documents);
        let held = documents
            .get(&(index.clone(), id.clone()))
            .map(|d| d.version);
        let version = match (op, meta.get("version").and_then(Json::as_u64), held) {
            ("create", _, Some(_)) => return ItemOutcome::AlreadyThere,
            ("create", _, None) => 1,
            ("index", Some(v), Some(h)) if h >= v => return ItemOutcome::AlreadyThere,
            ("index", Some(v), _) => v,
            _ => return ItemOutcome::Retry(format!("an action this index does not take: {op}")),
        };
        documents.insert(
            (index, id),
            StoredDocument {
                version,
                source: source.clone(),
            },
        );
        ItemOutcome::Written
    }
}

impl SearchIndex for MemoryIndex {
    fn bulk(
        &self,
        body: bytes::Bytes,
        documents: usize,
    ) -> impl Future<Output = Result<Vec<ItemOutcome>, PortError>> + Send {
        let text = String::from_utf8_lossy(&body);
        let mut lines = text.lines();
        let mut outcomes = Vec::new();
        while let Some(action) = lines.next() {
            let action: Json = serde_json::from_str(action).unwrap_or(Json::Null);
            let source: Option<Json> = lines.next().and_then(|l| serde_json::from_str(l).ok());
            outcomes.push(self.write(&action, source.as_ref()));
        }
        let answer = if outcomes.len() == documents {
            Ok(outcomes)
        } else {
            Err(PortError::permanent(format!(
                "a _bulk body of {} actions for {documents} documents",
                outcomes.len()
            )))
        };
        std::future::ready(answer)
    }

    fn prepare(
        &self,
        route: &str,
        plan: &IndexPlan,
        create: bool,
    ) -> impl Future<Output = Result<(), PortError>> + Send {
        let name = plan.template_pattern();
        let wanted = plan.field_types();
        let mut mappings = lock(&self.mappings);
        let answer = match mappings.iter().find(|(p, _)| *p == name) {
            Some((_, held)) => compare_fields(route, &name, held, &wanted),
            None if create => {
                mappings.push((name, wanted));
                Ok(())
            }
            None => Err(PortError::permanent(format!(
                "route {route:?}: search index {name:?} does not exist (set auto_migrate = \"add-columns\" to create it)"
            ))),
        };
        std::future::ready(answer)
    }

    fn document(
        &self,
        index: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<StoredDocument>, PortError>> + Send {
        let doc = lock(&self.documents)
            .get(&(index.to_owned(), id.to_owned()))
            .cloned();
        std::future::ready(Ok(doc))
    }

    fn list_documents(
        &self,
        index: &str,
    ) -> impl Future<Output = Result<Vec<(String, u64)>, PortError>> + Send {
        let mut listed: Vec<(String, u64)> = lock(&self.documents)
            .iter()
            .filter(|((i, _), _)| i == index)
            .map(|((_, id), d)| (id.clone(), d.version))
            .collect();
        listed.sort();
        std::future::ready(Ok(listed))
    }
}
