//! What the committer is sent: SQS messages whose bodies are S3 event notifications of new
//! staged objects (`s3:ObjectCreated:*`), and which route each object belongs to.
//!
//! S3 sends object keys URL-encoded (a space as `+`); S3's first message on a new
//! configuration is an `s3:TestEvent` with no records. Anything that is not a staged Parquet
//! object of a route with a table (a commit marker, a dead letter, another bucket) is done as
//! soon as it is read.

use serde::Deserialize;
use streamload_core::object_key::MARKER_FOLDER;

/// The Lambda event of an SQS event-source mapping (the fields the committer reads).
#[derive(Debug, Deserialize)]
pub struct SqsEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<SqsMessage>,
}

#[derive(Debug, Deserialize)]
pub struct SqsMessage {
    #[serde(rename = "messageId")]
    pub message_id: String,
    #[serde(default)]
    pub body: String,
}

/// One created object a notification names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    /// When S3 created it (the record's `eventTime`), in ms since the epoch: the table's
    /// freshness is measured from it.
    pub created_ms: Option<i64>,
}

#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "Records", default)]
    records: Vec<NotificationRecord>,
}

#[derive(Deserialize)]
struct NotificationRecord {
    #[serde(rename = "eventName", default)]
    event_name: String,
    #[serde(rename = "eventTime", default)]
    event_time: Option<String>,
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: Bucket,
    object: Object,
}

#[derive(Deserialize)]
struct Bucket {
    name: String,
}

#[derive(Deserialize)]
struct Object {
    key: String,
    #[serde(default)]
    size: u64,
}

/// The created objects a message names; `Err` for a body that is not a notification (the
/// message is poison: it goes to the queue's dead-letter queue after its retries).
///
/// ```
/// use table_committer::notification::created_objects;
/// let body = r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"lake"},
///   "object":{"key":"orders/dt%3D2024-03-01/hour%3D10/a+b.parquet","size":812}}}]}"#;
/// let objects = created_objects(body).unwrap();
/// assert_eq!(objects[0].key, "orders/dt=2024-03-01/hour=10/a b.parquet");
/// assert!(created_objects(r#"{"Service":"Amazon S3","Event":"s3:TestEvent"}"#).unwrap().is_empty());
/// ```
pub fn created_objects(body: &str) -> Result<Vec<Created>, String> {
    let n: Notification =
        serde_json::from_str(body).map_err(|e| format!("not an S3 event notification: {e}"))?;
    let mut out = Vec::new();
    for r in n.records {
        if !r.event_name.starts_with("ObjectCreated:") {
            continue;
        }
        let key = url_decode(&r.s3.object.key)
            .ok_or_else(|| "an object key that is not URL-encoded UTF-8".to_string())?;
        out.push(Created {
            bucket: r.s3.bucket.name,
            key,
            size: r.s3.object.size,
            created_ms: r
                .event_time
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_millis()),
        });
    }
    Ok(out)
}

/// Decodes S3's form encoding of keys: `+` is a space, `%XX` a byte.
fn url_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Which of `prefixes` (the lake prefixes of the routes with a table) a staged object of the
/// loaders' bucket belongs to: the longest that starts its key; `None` for a commit marker, a
/// non-Parquet object or a key under no route.
pub fn route_of(key: &str, prefixes: &[(usize, String)]) -> Option<usize> {
    if !key.ends_with(".parquet") || key.contains(MARKER_FOLDER) {
        return None;
    }
    prefixes
        .iter()
        .filter(|(_, p)| key.starts_with(p.as_str()))
        .max_by_key(|(_, p)| p.len())
        .map(|(i, _)| *i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_decoded_and_only_created_objects_count() {
        let body = r#"{"Records":[
          {"eventName":"ObjectCreated:CompleteMultipartUpload","eventTime":"2024-03-01T10:15:00.250Z","s3":{"bucket":{"name":"b"},"object":{"key":"o/%C3%A9t%C3%A9.parquet","size":1}}},
          {"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"b"},"object":{"key":"o/x.parquet"}}}]}"#;
        let objects = created_objects(body).unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].key, "o/été.parquet");
        assert_eq!(objects[0].created_ms, Some(1_709_288_100_250));
        assert!(created_objects("not json")
            .unwrap_err()
            .contains("not an S3 event"));
        let bad = r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"o/%zz"}}}]}"#;
        assert!(created_objects(bad).is_err());
    }

    #[test]
    fn the_longest_route_prefix_wins_and_markers_belong_to_none() {
        let prefixes = vec![(0, "orders/".to_string()), (1, "orders/eu/".to_string())];
        assert_eq!(route_of("orders/eu/dt=x/a.parquet", &prefixes), Some(1));
        assert_eq!(route_of("orders/dt=x/a.parquet", &prefixes), Some(0));
        assert_eq!(route_of("orders/_markers/a.jsonl", &prefixes), None);
        assert_eq!(route_of("orders/_markers/a.parquet", &prefixes), None);
        assert_eq!(route_of("clicks/a.parquet", &prefixes), None);
    }
}
