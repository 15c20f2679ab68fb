//! `_bulk` requests and answers, without I/O.
//!
//! [`encode`] writes documents as NDJSON action/source pairs, cut into requests within the
//! cluster's request limit; [`read_answer`] turns an answer into one [`ItemOutcome`] per
//! document, classified by the error's `type` rather than its status: a 400 is not always the
//! document's fault (`index_closed_exception`), and a 409 on a versioned or create-only write
//! means the index already holds this event or a newer one.

use super::{push_json_string, IndexPlan, WriteMode};
use crate::route::Value;
use serde::Deserialize;

/// Bytes of one request at most by default: the `http.max_content_length` of Amazon
/// OpenSearch Service's smallest instance types is 10 MiB (100 MiB on larger ones and
/// self-managed clusters).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;
/// Documents of one request at most: a bulk of a few thousand documents is what the engines'
/// guides recommend, and it keeps an answer (≈ 250 bytes per item) a few MB at most.
pub const MAX_REQUEST_DOCUMENTS: usize = 5_000;

/// One document to write: the route's plan and the event's values.
#[derive(Debug, Clone, Copy)]
pub struct Doc<'a> {
    pub plan: &'a IndexPlan,
    pub values: &'a [Value],
}

/// One `_bulk` request: its body and which documents (indices into the caller's list) it
/// carries, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkRequest {
    pub body: Vec<u8>,
    pub members: Vec<usize>,
}

/// Encodes `docs` into requests of at most `max_bytes` (a single document larger than that
/// goes alone: the index answers it with 413, a refusal of that document) and
/// [`MAX_REQUEST_DOCUMENTS`] documents. Documents the plan's [`IndexPlan::check`] refuses are
/// left out (the pipeline refuses them before any sink sees them).
pub fn encode(docs: &[Doc<'_>], max_bytes: usize) -> Vec<BulkRequest> {
    let mut requests = Vec::new();
    let mut current = BulkRequest {
        body: Vec::new(),
        members: Vec::new(),
    };
    let mut pair = Vec::with_capacity(512);
    for (n, doc) in docs.iter().enumerate() {
        pair.clear();
        if !write_pair(doc, &mut pair) {
            continue;
        }
        let full = current.members.len() >= MAX_REQUEST_DOCUMENTS
            || current.body.len() + pair.len() > max_bytes;
        if full && !current.members.is_empty() {
            requests.push(std::mem::replace(
                &mut current,
                BulkRequest {
                    body: Vec::new(),
                    members: Vec::new(),
                },
            ));
        }
        current.body.extend_from_slice(&pair);
        current.members.push(n);
    }
    if !current.members.is_empty() {
        requests.push(current);
    }
    requests
}

/// Appends a document's action line and source line; `false` when the plan refuses it.
fn write_pair(doc: &Doc<'_>, out: &mut Vec<u8>) -> bool {
    let Ok((id, version)) = doc.plan.action(doc.values) else {
        return false;
    };
    let op: &[u8] = match doc.plan.write {
        WriteMode::External(_) => b"{\"index\":{\"_index\":",
        WriteMode::Create => b"{\"create\":{\"_index\":",
    };
    out.extend_from_slice(op);
    push_json_string(out, &doc.plan.index_name(doc.values));
    out.extend_from_slice(b",\"_id\":");
    push_json_string(out, &id);
    if let Some(v) = version {
        out.extend_from_slice(b",\"version\":");
        out.extend_from_slice(v.to_string().as_bytes());
        out.extend_from_slice(b",\"version_type\":\"external\"");
    }
    out.extend_from_slice(b"}}\n");
    doc.plan.write_document(doc.values, out);
    out.push(b'\n');
    true
}

/// What the index did with one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Created or updated.
    Written,
    /// A version conflict: the index holds this event or a newer one (or, create-only, the
    /// first event of the key). Done.
    AlreadyThere,
    /// Refused for a reason of the document's own (a mapping conflict, a field the strict
    /// mapping lacks, a value the field cannot hold): the same document is refused every
    /// time. The reason names the error type and field, never a value.
    Refused(String),
    /// Refused for now (429, 5xx, a blocked or closed index, anything unknown): retried.
    Retry(String),
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    items: Vec<std::collections::HashMap<String, Item>>,
}

#[derive(Deserialize)]
struct Item {
    status: u16,
    #[serde(default)]
    error: Option<ItemError>,
}

#[derive(Deserialize)]
struct ItemError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    reason: String,
}

/// Error types that are the document's own fault: the same document is refused every time.
const DOCUMENT_FAULTS: &[&str] = &[
    "mapper_parsing_exception",
    "strict_dynamic_mapping_exception",
    "document_parsing_exception",
    "illegal_argument_exception",
    "json_parse_exception",
    "x_content_parse_exception",
];

/// The first `[name]` of an error reason: the field it is about. Reasons quote values too
/// ("Preview of field's value: '…'"), which never leave this function.
fn field_of(reason: &str) -> Option<&str> {
    let open = reason.find('[')?;
    let len = reason[open + 1..].find(']')?;
    Some(&reason[open + 1..open + 1 + len]).filter(|f| f.len() <= 128 && !f.contains('\''))
}

/// Reads a `_bulk` answer for `sent` documents; `Err` when it is not one (unreadable, or a
/// different number of items: then nothing is known of any document).
pub fn read_answer(body: &[u8], sent: usize) -> Result<Vec<ItemOutcome>, String> {
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| format!("an unreadable _bulk answer ({})", e.classify_name()))?;
    if answer.items.len() != sent {
        return Err(format!(
            "a _bulk answer with {} items for {sent} documents",
            answer.items.len()
        ));
    }
    Ok(answer
        .items
        .into_iter()
        .map(|item| match item.into_values().next() {
            None => ItemOutcome::Retry("an empty _bulk item".to_owned()),
            Some(item) => outcome(item),
        })
        .collect())
}

/// A refusal of the document's own, naming the error type and the field (never a value).
pub fn refused(kind: &str, field: Option<&str>) -> ItemOutcome {
    ItemOutcome::Refused(match field {
        Some(field) => format!("the search index refused the document: {kind} (field {field})"),
        None => format!("the search index refused the document: {kind}"),
    })
}

fn outcome(item: Item) -> ItemOutcome {
    let (kind, reason) = item.error.map(|e| (e.kind, e.reason)).unwrap_or_default();
    match item.status {
        200..=299 => ItemOutcome::Written,
        409 if kind == "version_conflict_engine_exception" => ItemOutcome::AlreadyThere,
        400 if DOCUMENT_FAULTS.contains(&kind.as_str()) => {
            ItemOutcome::Refused(match field_of(&reason) {
                Some(field) => {
                    format!("the search index refused the document: {kind} (field {field})")
                }
                None => format!("the search index refused the document: {kind}"),
            })
        }
        // A request too large for the cluster: this one document alone (the encoder sends an
        // oversized document in a request of its own).
        413 => ItemOutcome::Refused(
            "the search index refused the document: larger than the cluster's request limit"
                .to_owned(),
        ),
        status => ItemOutcome::Retry(if kind.is_empty() {
            format!("the search index answered {status}")
        } else {
            format!("the search index answered {status} {kind}")
        }),
    }
}

/// The name of a serde_json error's category, for a message that quotes no answer text.
trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "cut short",
        }
    }
}
