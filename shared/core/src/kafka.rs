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
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::json;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
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
    /// Single-key maps whose values are Java (signed) bytes; keys may repeat. Read straight
    /// into the lineage JSON text.
    #[serde(default)]
    pub headers: HeadersJson,
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

/// Kafka headers as lineage JSON: `[{"name":"<base64 of the unsigned bytes>"}]`, in order,
/// repeats kept; `None` when there are none. Written while the event is parsed, with no map or
/// JSON tree per record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeadersJson(pub Option<String>);

impl<'de> Deserialize<'de> for HeadersJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = HeadersJson;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of header maps")
            }
            fn visit_unit<E: de::Error>(self) -> Result<HeadersJson, E> {
                Ok(HeadersJson(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<HeadersJson, A::Error> {
                let mut out = String::from("[");
                while seq.next_element_seed(HeaderMap(&mut out))?.is_some() {}
                if out.len() == 1 {
                    return Ok(HeadersJson(None));
                }
                out.push(']');
                Ok(HeadersJson(Some(out)))
            }
        }
        deserializer.deserialize_any(List)
    }
}

/// One `{"name":[signed bytes], …}` map, appended to the JSON text as `{"name":"base64"}`
/// entries.
struct HeaderMap<'o>(&'o mut String);

impl<'de> DeserializeSeed<'de> for HeaderMap<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HeaderMap<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a header map")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        let out = self.0;
        while let Some(name) = map.next_key::<JsonStr<'de>>()? {
            let bytes: Vec<i8> = map.next_value()?;
            let unsigned: Vec<u8> = bytes.iter().map(|&b| b as u8).collect();
            if out.len() > 1 {
                out.push(',');
            }
            out.push('{');
            if name.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
                out.push('"');
                out.push_str(&name);
                out.push('"');
            } else {
                out.push_str(&serde_json::to_string(&*name).map_err(de::Error::custom)?);
            }
            out.push_str(":\"");
            base64::engine::general_purpose::STANDARD.encode_string(unsigned, out);
            out.push_str("\"}");
        }
        Ok(())
    }
}

/// Parses the event text and turns it into source-neutral records.
pub fn decode(event_json: &str) -> Result<Batch, KafkaDecodeError> {
    let event: KafkaEvent<'_> = serde_json::from_str(event_json)?;
    decode_event(event)
}

/// Turns a parsed event into source-neutral records, partitions in key order, offsets
/// ascending. Every value is decoded into one shared buffer; the parsed event is consumed, so
/// header text and keys move into the records rather than being copied.
pub fn decode_event(event: KafkaEvent<'_>) -> Result<Batch, KafkaDecodeError> {
    let mut ordered: Vec<KafkaRecord<'_>> = Vec::new();
    for list in event.records.into_values() {
        let start = ordered.len();
        ordered.extend(list);
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
    let mut units: BTreeMap<(Cow<'_, str>, i32), Arc<SourceUnit>> = BTreeMap::new();
    for (r, span) in ordered.into_iter().zip(spans) {
        let offset = u64::try_from(r.offset).map_err(|_| KafkaDecodeError::NegativeOffset {
            topic: r.topic.to_string(),
            partition: r.partition,
        })?;
        let unit = units
            .entry((r.topic.0.clone(), r.partition))
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
            key: r.key.map(|k| k.0.into_owned()),
            headers_json: r.headers.0,
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
    fn no_headers_empty_headers_and_null_headers_keep_no_lineage() {
        let event = r#"{"records":{"t-0":[
            {"topic":"t","partition":0,"offset":1,"value":"e30="},
            {"topic":"t","partition":0,"offset":2,"value":"e30=","headers":[]},
            {"topic":"t","partition":0,"offset":3,"value":"e30=","headers":null}]}}"#;
        let batch = decode(event).unwrap();
        assert!(batch.records.iter().all(|r| r.headers_json.is_none()));
        assert!(decode(
            r#"{"records":{"t-0":[{"topic":"t","partition":0,"offset":1,
            "headers":[{"h":"not bytes"}]}]}}"#
        )
        .is_err());
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
