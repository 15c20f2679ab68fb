//! Decoding a Kafka event-source-mapping batch (Amazon MSK `aws:kafka` or
//! `SelfManagedKafka`) and naming its failures.
//!
//! `records` maps `"<topic>-<partition>"` to records; topics may contain `-`, so topic and
//! partition are taken from each record's own fields, never by splitting the key. The
//! ordering unit is the topic-partition.

use crate::json_cursor::{base64_into, integer, optional_string, set_once, Bail, Cursor};
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
use std::ops::Range;
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
    /// Present when the mapping validates records against a schema registry.
    #[serde(borrow, default)]
    pub value_schema_metadata: Option<SchemaMetadata<'a>>,
}

/// `keySchemaMetadata` / `valueSchemaMetadata`: `{dataFormat, schemaId}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaMetadata<'a> {
    #[serde(borrow, default)]
    pub data_format: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    pub schema_id: Option<JsonStr<'a>>,
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

/// Parses the event text and turns it into source-neutral records, partitions in key order,
/// offsets ascending. Every value is decoded into one buffer shared by the batch.
///
/// The event is read with the strict plain-JSON cursor ([`crate::json_cursor`]), each value
/// decoded as soon as it is read; text outside its subset (an escape sequence, a repeated
/// partition key, say) is read again by serde_json, which then decides.
pub fn decode(event_json: &str) -> Result<Batch, KafkaDecodeError> {
    // Decoded values are at most 3/4 of the text they came from, so the buffer never grows:
    // reserved but untouched pages cost no memory.
    let mut arena = Vec::with_capacity(event_json.len() / 4 * 3 + 3);
    match decode_plain(event_json, &mut arena) {
        Ok((rows, cluster)) => assemble(rows, arena, cluster),
        Err(Bail) => {
            arena.clear();
            let event: KafkaEvent<'_> = serde_json::from_str(event_json)?;
            decode_parsed(event, arena)
        }
    }
}

/// One record on its way into the batch, whichever reading produced it.
struct Row<'a> {
    topic: Cow<'a, str>,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<Cow<'a, str>>,
    headers_json: Option<String>,
    value_schema_id: Option<Cow<'a, str>>,
    /// The value's bytes in the batch buffer; `None` for a tombstone.
    value: Option<Range<usize>>,
}

/// serde_json's reading: the authority on anything outside the plain subset.
fn decode_parsed(event: KafkaEvent<'_>, mut arena: Vec<u8>) -> Result<Batch, KafkaDecodeError> {
    let cluster = cluster_of(
        event.event_source_arn.as_ref().map(|s| &*s.0),
        event.bootstrap_servers.as_ref().map(|s| &*s.0),
    );
    let mut rows = Vec::new();
    for mut list in event.records.into_values() {
        list.sort_by_key(|r| r.offset);
        rows.extend(list.into_iter().map(|r| {
            Row {
                value: r
                    .value
                    .as_deref()
                    .map(|v| crate::record::decode_base64_into(&mut arena, v)),
                topic: r.topic.0,
                partition: r.partition,
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key.map(|k| k.0),
                headers_json: r.headers.0,
                value_schema_id: r
                    .value_schema_metadata
                    .and_then(|m| m.schema_id)
                    .map(|id| id.0),
            }
        }));
    }
    assemble(rows, arena, cluster)
}

/// Which cluster the batch came from: the MSK cluster ARN, or `bootstrap:<servers>` for a
/// self-managed cluster (its event carries no ARN). Part of a poison record's identity, so
/// the same topic on two clusters never shares a dead-letter claim.
fn cluster_of(event_source_arn: Option<&str>, bootstrap_servers: Option<&str>) -> Arc<str> {
    match (event_source_arn, bootstrap_servers) {
        (Some(arn), _) if !arn.is_empty() => Arc::from(arn),
        (_, Some(servers)) => Arc::from(format!("bootstrap:{servers}")),
        _ => Arc::from(""),
    }
}

/// The plain-JSON reading, in the order serde_json's map gives: partitions by key, then
/// offsets ascending (a stable sort, as on that path).
fn decode_plain<'a>(
    event_json: &'a str,
    arena: &mut Vec<u8>,
) -> Result<(Vec<Row<'a>>, Arc<str>), Bail> {
    let mut c = Cursor::new(event_json);
    let (mut source, mut source_arn, mut servers, mut records) = (None, None, None, None);
    c.object(|c, key| match key {
        "eventSource" => set_once(&mut source, optional_string(c)?),
        "eventSourceArn" => set_once(&mut source_arn, optional_string(c)?),
        "bootstrapServers" => set_once(&mut servers, optional_string(c)?),
        "records" => {
            let mut partitions: Vec<(&str, Vec<Row<'_>>)> = Vec::new();
            c.object(|c, partition_key| {
                let mut rows = Vec::new();
                c.array(|c| {
                    rows.push(plain_record(c, arena)?);
                    Ok(())
                })?;
                partitions.push((partition_key, rows));
                Ok(())
            })?;
            set_once(&mut records, partitions)
        }
        _ => c.skip_value(),
    })?;
    c.end()?;
    let mut partitions = records.unwrap_or_default();
    partitions.sort_by(|a, b| a.0.cmp(b.0));
    // A repeated partition key: serde_json's map keeps the last list; let it decide.
    if partitions.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(Bail);
    }
    let mut rows = Vec::with_capacity(partitions.iter().map(|p| p.1.len()).sum());
    for (_, mut list) in partitions {
        list.sort_by_key(|r| r.offset);
        rows.extend(list);
    }
    Ok((rows, cluster_of(source_arn.flatten(), servers.flatten())))
}

fn plain_record<'a>(c: &mut Cursor<'a>, arena: &mut Vec<u8>) -> Result<Row<'a>, Bail> {
    let (mut topic, mut partition, mut offset, mut timestamp) = (None, None, None, None);
    let (mut timestamp_type, mut key, mut value, mut headers) = (None, None, None, None);
    let mut schema = None;
    c.object(|c, field| match field {
        "topic" => set_once(&mut topic, c.string()?),
        "partition" => set_once(&mut partition, integer::<i32>(c)?),
        "offset" => set_once(&mut offset, integer::<i64>(c)?),
        "timestamp" => {
            let ms = if c.null() {
                None
            } else {
                Some(integer::<i64>(c)?)
            };
            set_once(&mut timestamp, ms)
        }
        "timestampType" => set_once(&mut timestamp_type, optional_string(c)?),
        "key" => set_once(&mut key, optional_string(c)?),
        "value" => {
            let span = if c.null() {
                None
            } else {
                Some(base64_into(c, arena)?)
            };
            set_once(&mut value, span)
        }
        "headers" => set_once(&mut headers, plain_headers(c)?),
        "valueSchemaMetadata" => set_once(&mut schema, plain_schema_id(c)?),
        _ => c.skip_value(),
    })?;
    Ok(Row {
        topic: Cow::Borrowed(topic.ok_or(Bail)?),
        partition: partition.ok_or(Bail)?,
        offset: offset.ok_or(Bail)?,
        timestamp: timestamp.flatten(),
        key: key.flatten().map(Cow::Borrowed),
        headers_json: headers.flatten(),
        value_schema_id: schema.flatten().map(Cow::Borrowed),
        value: value.flatten(),
    })
}

/// `valueSchemaMetadata` on the plain path: `null` or `{"dataFormat": "…", "schemaId": "…"}`.
fn plain_schema_id<'a>(c: &mut Cursor<'a>) -> Result<Option<&'a str>, Bail> {
    if c.null() {
        return Ok(None);
    }
    let (mut format, mut id) = (None, None);
    c.object(|c, field| match field {
        "dataFormat" => set_once(&mut format, optional_string(c)?),
        "schemaId" => set_once(&mut id, optional_string(c)?),
        _ => c.skip_value(),
    })?;
    Ok(id.flatten())
}

/// `headers` as [`HeadersJson`] writes them: `[{"name":"base64"}]`, `None` when empty or null.
fn plain_headers(c: &mut Cursor<'_>) -> Result<Option<String>, Bail> {
    if c.null() {
        return Ok(None);
    }
    let mut out = String::from("[");
    let mut bytes = Vec::new();
    c.array(|c| {
        c.object(|c, name| {
            bytes.clear();
            c.array(|c| {
                bytes.push(integer::<i8>(c)? as u8);
                Ok(())
            })?;
            if out.len() > 1 {
                out.push(',');
            }
            // A plain string holds no quote, backslash or control character: it is its JSON.
            out.push_str("{\"");
            out.push_str(name);
            out.push_str("\":\"");
            base64::engine::general_purpose::STANDARD.encode_string(&bytes, &mut out);
            out.push_str("\"}");
            Ok(())
        })
    })?;
    if out.len() == 1 {
        return Ok(None);
    }
    out.push(']');
    Ok(Some(out))
}

/// The batch from records in order: units shared per topic-partition, offsets checked.
fn assemble(
    rows: Vec<Row<'_>>,
    arena: Vec<u8>,
    cluster: Arc<str>,
) -> Result<Batch, KafkaDecodeError> {
    let arena = Bytes::from(arena);
    let mut records = Vec::with_capacity(rows.len());
    let mut units: BTreeMap<(Cow<'_, str>, i32), Arc<SourceUnit>> = BTreeMap::new();
    for r in rows {
        let offset = u64::try_from(r.offset).map_err(|_| KafkaDecodeError::NegativeOffset {
            topic: r.topic.to_string(),
            partition: r.partition,
        })?;
        let unit = units
            .entry((r.topic.clone(), r.partition))
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
            data: r.value.map(|s| arena.slice(s)),
            key: r.key.map(Cow::into_owned),
            headers_json: r.headers_json,
            arrival_ms: r.timestamp,
            undecodable: None,
            origin: Origin::Kafka {
                cluster: cluster.clone(),
                timestamp: r.timestamp,
                value_schema_id: r.value_schema_id.map(|id| Arc::from(&*id)),
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

    use crate::json_cursor::testing::{damaged, differential_run, shuffle, Rng};

    /// The plain cursor's reading, `None` where it gives up.
    fn plain_reading(text: &str) -> Option<Result<String, String>> {
        let mut arena = Vec::with_capacity(text.len());
        let (rows, cluster) = decode_plain(text, &mut arena).ok()?;
        Some(
            assemble(rows, arena, cluster)
                .map(|b| format!("{b:?}"))
                .map_err(|e| e.to_string()),
        )
    }

    /// serde_json's reading: the batch, or why it failed.
    fn serde_reading(text: &str) -> Result<String, String> {
        let event: KafkaEvent<'_> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        decode_parsed(event, Vec::new())
            .map(|b| format!("{b:?}"))
            .map_err(|e| e.to_string())
    }

    /// Whatever the cursor accepts, serde_json accepts and reads the same. Returns whether
    /// the cursor accepted `text`.
    fn agrees_with_serde_json(text: &str) -> bool {
        match plain_reading(text) {
            None => false,
            Some(plain) => {
                assert_eq!(plain, serde_reading(text), "event: {text}");
                true
            }
        }
    }

    /// A Kafka event with random layout, field order, extra fields, nulls, escapes,
    /// duplicates, numbers of every kind, odd headers and bad base64.
    fn random_event(rng: &mut Rng) -> String {
        let mut partitions = Vec::new();
        let mut keys = shuffle(
            rng,
            ["my-topic-0", "my-topic-1", "t-0"].map(String::from).into(),
        );
        keys.truncate(rng.below(4));
        if rng.below(10) == 0 && !keys.is_empty() {
            keys.push(keys[0].clone());
        }
        for key in keys {
            let mut list = Vec::new();
            for _ in 0..rng.below(4) {
                let mut fields = vec![
                    format!(
                        r#""topic":{}"#,
                        rng.mostly(&[r#""my-topic""#, r#""my-topic""#, r#""t\"q""#, "null"])
                    ),
                    format!(
                        r#""partition":{}"#,
                        rng.mostly(&["0", "0", "1", "-0", "1.0", "2147483648", r#""0""#, "-1"])
                    ),
                    format!(
                        r#""offset":{}"#,
                        rng.mostly(&[
                            "15",
                            "16",
                            "3",
                            "15",
                            "-1",
                            "9223372036854775808",
                            "1e2",
                            "-0",
                            "18446744073709551616",
                        ])
                    ),
                    format!(
                        r#""timestamp":{}"#,
                        rng.mostly(&["1545084650987", "null", "-0", "1.5", "-3"])
                    ),
                    format!(
                        r#""timestampType":{}"#,
                        rng.mostly(&[r#""CREATE_TIME""#, "null", "0"])
                    ),
                    format!(
                        r#""key":{}"#,
                        rng.mostly(&[r#""a2V5""#, "null", r#""k\u0041""#, r#""ké""#])
                    ),
                    format!(
                        r#""value":{}"#,
                        rng.mostly(&[
                            r#""eyJhIjoxfQ==""#,
                            r#""eyJhIjoxfQ==""#,
                            "null",
                            r#""not base64!""#,
                            "\"bad\tb64\"",
                            r#""""#,
                            "7",
                        ])
                    ),
                    format!(
                        r#""headers":{}"#,
                        rng.mostly(&[
                            "[]",
                            "null",
                            r#"[{"h":[104,-1]},{"h":[1]}]"#,
                            r#"[{"h":[128]}]"#,
                            r#"[{"h":[-0]}]"#,
                            "[{}]",
                            r#"[{"a":[1],"a":[2]}]"#,
                            r#"{"h":[1]}"#,
                            r#"[{"q\"x":[0]}]"#,
                            r#"[{"h":[]}]"#,
                            r#"[{"h":[1.0]}]"#,
                            r#"[{"h":"x"}]"#,
                        ])
                    ),
                    format!(
                        r#""extra":{}"#,
                        rng.mostly(&["[1,{\"a\":null}]", "\"x\"", "[1,]"])
                    ),
                ];
                for _ in 0..rng.below(3) {
                    if rng.below(3) == 0 {
                        let at = rng.below(fields.len());
                        fields.remove(at);
                    }
                }
                if rng.below(8) == 0 && !fields.is_empty() {
                    let again = fields[rng.below(fields.len())].clone();
                    fields.push(again);
                }
                let sep = format!(",{}", rng.whitespace());
                list.push(format!("{{{}}}", shuffle(rng, fields).join(&sep)));
            }
            partitions.push(format!(r#""{key}":[{}]"#, list.join(",")));
        }
        let mut top = vec![
            format!(r#""records":{{{}}}"#, partitions.join(",")),
            format!(
                r#""eventSource":{}"#,
                rng.mostly(&[r#""aws:kafka""#, r#""SelfManagedKafka""#, "null", "1"])
            ),
            r#""bootstrapServers":"b-1:9098,b-2:9098""#.to_owned(),
        ];
        if rng.below(3) == 0 {
            top.push(r#""eventSourceArn":"arn:aws:kafka:us-east-1:1:cluster/c/1""#.to_owned());
        }
        if rng.below(8) == 0 {
            top.push(r#""records":{}"#.to_owned());
        }
        let body = format!(
            "{}{{{}}}{}",
            rng.whitespace(),
            shuffle(rng, top).join(","),
            rng.whitespace()
        );
        match rng.below(12) {
            0 => format!("{body},"),
            1 => body.replacen(']', "", 1),
            _ => body,
        }
    }

    #[test]
    fn the_plain_reading_agrees_with_serde_json_on_varied_events() {
        // Given thousands of events, many plain, many with something unusual, when both
        // readings are taken, then they agree wherever the cursor accepts
        let (accepted_with_records, bailed) = differential_run(
            0x00dd_ba11_5eed_0002,
            10_000,
            "value",
            random_event,
            agrees_with_serde_json,
        );
        // and both outcomes were exercised, with records
        assert!(
            accepted_with_records > 300 && bailed > 300,
            "accepted {accepted_with_records} with records, bailed {bailed}"
        );
    }

    #[test]
    fn the_plain_reading_agrees_with_serde_json_on_damaged_events() {
        // Given a plain two-partition event, damaged one byte at a time
        let event = r#"{"eventSource":"aws:kafka","bootstrapServers":"b-1:9098","records":{
            "t-1":[{"topic":"t","partition":1,"offset":3,"timestamp":1,"key":"a2V5","value":"e30=",
                    "headers":[]}],
            "t-0":[{"topic":"t","partition":0,"offset":16,"timestamp":1545084650988,
                    "timestampType":"CREATE_TIME","key":null,"value":"eyJhIjoxfQ==",
                    "headers":[{"h":[104,-1]},{"h":[1]}]},
                   {"topic":"t","partition":0,"offset":15,"value":null,"headers":null}]}}"#;
        assert!(agrees_with_serde_json(event));
        // When both readings are taken, then they agree wherever the cursor accepts
        let accepted = damaged(event)
            .iter()
            .filter(|d| agrees_with_serde_json(d))
            .count();
        assert!(accepted > 0);
    }

    #[test]
    fn a_repeated_partition_key_is_read_by_serde_json() {
        // Given a partition key twice (serde_json's map keeps the last list)
        let event = r#"{"records":{"t-0":[{"topic":"t","partition":0,"offset":1,"value":"e30="}],
            "t-0":[{"topic":"t","partition":0,"offset":2,"value":"e30="}]}}"#;
        assert!(plain_reading(event).is_none());
        // When decoded, then serde_json's reading stands
        let batch = decode(event).unwrap();
        assert_eq!(batch.records.len(), 1);
        assert_eq!(batch.records[0].position.as_str(), "2");
    }

    #[test]
    fn a_schema_registry_id_is_kept_on_both_readings() {
        // Given a record a schema-registry mapping decoded to JSON, plain and with an escape
        let record = |topic: &str| {
            format!(
                r#"{{"records":{{"t-0":[{{"topic":"{topic}","partition":0,"offset":1,"value":"e30=",
                "valueSchemaMetadata":{{"dataFormat":"AVRO","schemaId":"a1b2c3d4-0001"}}}}]}}}}"#
            )
        };
        for event in [record("t"), record(r"t\u0041")] {
            // When it is decoded
            let batch = decode(&event).unwrap();
            // Then the schema id is in the record's origin, for lineage and @schema_id
            match &batch.records[0].origin {
                Origin::Kafka {
                    value_schema_id, ..
                } => assert_eq!(value_schema_id.as_deref(), Some("a1b2c3d4-0001"), "{event}"),
                other => panic!("{other:?}"),
            }
        }
        assert!(
            plain_reading(&record("t")).is_some(),
            "the plain path reads it"
        );
    }
}
