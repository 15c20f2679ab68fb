//! Decoding a Kafka event-source-mapping batch (Amazon MSK `aws:kafka` or
//! `SelfManagedKafka`) and naming its failures.
//!
//! `records` maps `"<topic>-<partition>"` to records; topics may contain `-`, so topic and
//! partition are taken from each record's own fields, never by splitting the key. The
//! ordering unit is the topic-partition.

use crate::record::{Batch, Origin, Position, SourceRecord, SourceUnit};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaEvent {
    #[serde(default)]
    pub event_source: Option<String>,
    #[serde(default)]
    pub event_source_arn: Option<String>,
    #[serde(default)]
    pub bootstrap_servers: Option<String>,
    #[serde(default)]
    pub records: BTreeMap<String, Vec<KafkaRecord>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    #[serde(default)]
    pub timestamp: Option<i64>,
    #[serde(default)]
    pub timestamp_type: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    /// Single-key maps whose values are Java (signed) bytes; keys may repeat.
    #[serde(default)]
    pub headers: Vec<BTreeMap<String, Vec<i8>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaDecodeError {
    #[error("record {topic}/{partition} has a negative offset")]
    NegativeOffset { topic: String, partition: i32 },
}

impl crate::Classify for KafkaDecodeError {
    fn class(&self) -> crate::ErrorClass {
        crate::ErrorClass::Permanent
    }
}

/// Header values as base64 of their unsigned bytes, in order, repeats kept.
fn headers_json(headers: &[BTreeMap<String, Vec<i8>>]) -> serde_json::Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    serde_json::Value::Array(
        headers
            .iter()
            .flat_map(|h| h.iter())
            .map(|(k, v)| {
                let bytes: Vec<u8> = v.iter().map(|&b| b as u8).collect();
                json!({ k: b64.encode(bytes) })
            })
            .collect(),
    )
}

/// Turns the event into source-neutral records, partitions in key order, offsets ascending.
pub fn decode(event: &KafkaEvent) -> Result<Batch, KafkaDecodeError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut records = Vec::new();
    let mut units: BTreeMap<(&str, i32), Arc<SourceUnit>> = BTreeMap::new();
    for list in event.records.values() {
        let mut list: Vec<&KafkaRecord> = list.iter().collect();
        list.sort_by_key(|r| r.offset);
        for r in list {
            let offset = u64::try_from(r.offset).map_err(|_| KafkaDecodeError::NegativeOffset {
                topic: r.topic.clone(),
                partition: r.partition,
            })?;
            let unit = units
                .entry((r.topic.as_str(), r.partition))
                .or_insert_with(|| {
                    Arc::new(SourceUnit {
                        label: format!("{}/{}", r.topic, r.partition),
                        topic_partition: Some((r.topic.clone(), r.partition)),
                    })
                })
                .clone();
            let data = r
                .value
                .as_deref()
                .map(|v| b64.decode(v).unwrap_or_else(|_| v.as_bytes().to_vec()));
            let headers_text =
                (!r.headers.is_empty()).then(|| headers_json(&r.headers).to_string());
            records.push(SourceRecord {
                unit,
                position: Position::from_offset(offset),
                data,
                key: r.key.clone(),
                headers_json: headers_text,
                arrival_ms: r.timestamp,
                origin: Origin::Kafka {
                    timestamp: r.timestamp,
                },
            });
        }
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
        // Given a self-managed batch over two partitions of a topic whose name holds '-'
        let event: KafkaEvent = serde_json::from_str(EVENT).unwrap();
        // When it is decoded
        let batch = decode(&event).unwrap();
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
        let event: KafkaEvent = serde_json::from_str(EVENT).unwrap();
        let batch = decode(&event).unwrap();
        let h: serde_json::Value =
            serde_json::from_str(batch.records[1].headers_json.as_deref().unwrap()).unwrap();
        // [104, -1] is "h\xff"
        assert_eq!(h, json!([{"h": "aP8="}, {"h": "AQ=="}]));
        assert_eq!(batch.records[1].dead_letter_source()["headers"], h);
        assert_eq!(batch.records[1].dead_letter_source()["offset"], 16);
        assert_eq!(batch.records[1].dead_letter_source()["topic"], "my-topic");
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
