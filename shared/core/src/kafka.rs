//! Decoding a Kafka event-source-mapping batch (Amazon MSK `aws:kafka` or
//! `SelfManagedKafka`) and naming its failures.
//!
//! `records` maps `"<topic>-<partition>"` to records; topics may contain `-`, so topic and
//! partition are taken from each record's own fields, never by splitting the key. The
//! ordering unit is the topic-partition.

use crate::record::{Batch, Origin, Position, SourceRecord, SourceUnit};
use crate::text::JsonStr;
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The event as Lambda sends it, borrowed from the event text.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaEvent<'a> {
    #[serde(borrow, default)]
    pub event_source: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    pub event_source_arn: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    pub bootstrap_servers: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    pub records: BTreeMap<Cow<'a, str>, Vec<KafkaRecord<'a>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaRecord<'a> {
    #[serde(borrow)]
    pub topic: JsonStr<'a>,
    pub partition: i32,
    pub offset: i64,
    #[serde(default)]
    pub timestamp: Option<i64>,
    #[serde(borrow, default)]
    pub timestamp_type: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    pub key: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    pub value: Option<JsonStr<'a>>,
    /// Single-key maps whose values are Java (signed) bytes; keys may repeat.
    #[serde(borrow, default)]
    pub headers: Vec<BTreeMap<Cow<'a, str>, Vec<i8>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaDecodeError {
    #[error("the event is not a Kafka event-source batch: {0}")]
    Shape(#[from] serde_json::Error),
    #[error("record {topic}/{partition} has a negative offset")]
    NegativeOffset { topic: String, partition: i32 },
}

impl crate::Classify for KafkaDecodeError {
    fn class(&self) -> crate::ErrorClass {
        crate::ErrorClass::Permanent
    }
}

/// Header values as base64 of their unsigned bytes, in order, repeats kept:
/// `[{"name":"base64"}]`, written directly rather than through a JSON tree.
fn headers_json(headers: &[BTreeMap<Cow<'_, str>, Vec<i8>>]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = String::from("[");
    for (k, v) in headers.iter().flat_map(|h| h.iter()) {
        if out.len() > 1 {
            out.push(',');
        }
        out.push('{');
        out.push_str(&serde_json::Value::from(&**k).to_string());
        out.push_str(":\"");
        let bytes: Vec<u8> = v.iter().map(|&b| b as u8).collect();
        b64.encode_string(bytes, &mut out);
        out.push_str("\"}");
    }
    out.push(']');
    out
}

/// Parses the event text and turns it into source-neutral records.
pub fn decode(event_json: &str) -> Result<Batch, KafkaDecodeError> {
    let event: KafkaEvent<'_> = serde_json::from_str(event_json)?;
    decode_event(&event)
}

/// Turns a parsed event into source-neutral records, partitions in key order, offsets
/// ascending. Every value is decoded into one shared buffer.
pub fn decode_event(event: &KafkaEvent<'_>) -> Result<Batch, KafkaDecodeError> {
    let mut ordered: Vec<&KafkaRecord<'_>> = Vec::new();
    for list in event.records.values() {
        let start = ordered.len();
        ordered.extend(list.iter());
        ordered[start..].sort_by_key(|r| r.offset);
    }
    let encoded: usize = ordered
        .iter()
        .map(|r| r.value.as_deref().map_or(0, str::len))
        .sum();
    let mut arena: Vec<u8> = Vec::with_capacity(encoded / 4 * 3 + 3);
    let spans: Vec<_> = ordered
        .iter()
        .map(|r| {
            r.value
                .as_deref()
                .map(|v| crate::record::decode_base64_into(&mut arena, v))
        })
        .collect();
    let arena = Bytes::from(arena);

    let mut records = Vec::with_capacity(ordered.len());
    let mut units: BTreeMap<(&str, i32), Arc<SourceUnit>> = BTreeMap::new();
    for (r, span) in ordered.into_iter().zip(spans) {
        let offset = u64::try_from(r.offset).map_err(|_| KafkaDecodeError::NegativeOffset {
            topic: r.topic.to_string(),
            partition: r.partition,
        })?;
        let unit = units
            .entry((&*r.topic, r.partition))
            .or_insert_with(|| {
                Arc::new(SourceUnit {
                    label: format!("{}/{}", r.topic, r.partition),
                    topic_partition: Some((r.topic.to_string(), r.partition)),
                })
            })
            .clone();
        records.push(SourceRecord {
            unit,
            position: Position::from_offset(offset),
            data: span.map(|s| arena.slice(s)),
            key: r.key.as_deref().map(str::to_owned),
            headers_json: (!r.headers.is_empty()).then(|| headers_json(&r.headers)),
            arrival_ms: r.timestamp,
            origin: Origin::Kafka {
                timestamp: r.timestamp,
            },
        });
    }
    Ok(Batch { records })
}

/// The Kafka `itemIdentifier`: `{"partition": "<topic>-<partition>", "offset": <n>}`.
///
/// The one place this shape lives (see docs/exactly-once.md, "Failure identifiers", for the
/// sources it follows).
pub fn failure_identifier(unit: &SourceUnit, position: &Position) -> serde_json::Value {
    let partition = match &unit.topic_partition {
        Some((topic, partition)) => format!("{topic}-{partition}"),
        None => unit.label.clone(),
    };
    let offset: serde_json::Value = position
        .as_str()
        .parse::<i64>()
        .map(Into::into)
        .unwrap_or_else(|_| position.as_str().into());
    json!({ "partition": partition, "offset": offset })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{
      "eventSource": "SelfManagedKafka",
      "bootstrapServers": "b1:9092,b2:9092",
      "records": {
        "my-topic-0": [
          {"topic": "my-topic", "partition": 0, "offset": 16, "timestamp": 1545084650988,
           "timestampType": "CREATE_TIME", "key": null, "value": "eyJhIjoxfQ==",
           "headers": [{"h": [104, -1]}, {"h": [1]}]},
          {"topic": "my-topic", "partition": 0, "offset": 15, "timestamp": 1545084650987,
           "timestampType": "CREATE_TIME", "value": null, "headers": []}
        ],
        "my-topic-1": [
          {"topic": "my-topic", "partition": 1, "offset": 3, "timestamp": 1, "key": "a2V5",
           "value": "e30=", "headers": []}
        ]
      }
    }"#;

    #[test]
    fn takes_topic_and_partition_from_the_record_and_orders_by_offset() {
        // Given a self-managed batch over two partitions of a topic whose name holds '-',
        // when it is decoded
        let batch = decode(EVENT).unwrap();
        // Then units come from the record fields and offsets ascend within a partition
        let labels: Vec<_> = batch
            .records
            .iter()
            .map(|r| (r.unit.label.as_str(), r.position.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("my-topic/0", "15"),
                ("my-topic/0", "16"),
                ("my-topic/1", "3")
            ]
        );
        assert!(batch.records[0].data.is_none(), "null value is a tombstone");
        assert_eq!(batch.records[1].data.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(batch.records[2].key.as_deref(), Some("a2V5"));
    }

    #[test]
    fn keeps_repeated_signed_headers_as_unsigned_bytes() {
        let batch = decode(EVENT).unwrap();
        let h: serde_json::Value =
            serde_json::from_str(batch.records[1].headers_json.as_deref().unwrap()).unwrap();
        // [104, -1] is "h\xff"
        assert_eq!(h, json!([{"h": "aP8="}, {"h": "AQ=="}]));
        assert_eq!(batch.records[1].dead_letter_source()["headers"], h);
        assert_eq!(batch.records[1].dead_letter_source()["offset"], 16);
        assert_eq!(batch.records[1].dead_letter_source()["topic"], "my-topic");
    }

    #[test]
    fn header_names_are_escaped_as_json() {
        let event = r#"{"records":{"t-0":[{"topic":"t","partition":0,"offset":1,"value":"e30=",
            "headers":[{"q\"x\\":[0]}]}]}}"#;
        let batch = decode(event).unwrap();
        let h: serde_json::Value =
            serde_json::from_str(batch.records[0].headers_json.as_deref().unwrap()).unwrap();
        assert_eq!(h, json!([{"q\"x\\": "AA=="}]));
    }

    #[test]
    fn failure_identifier_names_the_topic_partition_and_offset() {
        let unit = SourceUnit {
            label: "my-topic/1".into(),
            topic_partition: Some(("my-topic".into(), 1)),
        };
        assert_eq!(
            failure_identifier(&unit, &Position::from_offset(42)),
            json!({"partition": "my-topic-1", "offset": 42})
        );
    }
}
