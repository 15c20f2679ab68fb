//! Decoding a Kinesis event-source-mapping batch and naming its failures.
//!
//! The event is `{"Records":[{"kinesis":{...},"eventID":"shardId-…:seq","eventSourceARN":…}]}`;
//! one batch is one shard, in sequence order.

use crate::record::{Batch, Origin, Position, SourceRecord, SourceUnit};
use crate::text::JsonStr;
use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// One record of the event as Lambda sends it (`{"Records":[…]}`), borrowed from the event
/// text. Records are handled one by one as the parser reaches them (see [`decode`]).
#[derive(Debug, Deserialize)]
pub struct KinesisEventRecord<'a> {
    #[serde(borrow)]
    pub kinesis: KinesisData<'a>,
    #[serde(rename = "eventID", borrow, default)]
    pub event_id: Option<JsonStr<'a>>,
    #[serde(rename = "eventSourceARN", borrow, default)]
    pub event_source_arn: Option<JsonStr<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KinesisData<'a> {
    #[serde(borrow)]
    pub sequence_number: JsonStr<'a>,
    #[serde(borrow, default)]
    pub partition_key: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    pub data: Option<JsonStr<'a>>,
    /// Seconds since the epoch, with fractions.
    #[serde(default)]
    pub approximate_arrival_timestamp: Option<f64>,
}

/// The event itself is malformed: Lambda never sends this, so the invocation fails loudly.
#[derive(Debug, thiserror::Error)]
pub enum KinesisDecodeError {
    #[error("the event is not a Kinesis event-source batch: {0}")]
    Shape(#[from] serde_json::Error),
    #[error("record {index} has an invalid sequence number")]
    BadSequenceNumber { index: usize },
}

impl crate::Classify for KinesisDecodeError {
    fn class(&self) -> crate::ErrorClass {
        crate::ErrorClass::Permanent
    }
}

/// Parses the event text and turns it into source-neutral records, in one pass: each record
/// is handled as soon as the parser has read it, while its text is still in cache, and its
/// base64 `data` is decoded straight into one buffer shared by the batch. Undecodable base64
/// keeps `data` as the base64 text's bytes so the poison record still reaches the dead-letter
/// queue unchanged.
pub fn decode(event_json: &str) -> Result<Batch, KinesisDecodeError> {
    // Decoded data is at most 3/4 of the text it came from, so the buffer never grows:
    // reserved but untouched pages cost no memory.
    let mut builder = BatchBuilder {
        arena: Vec::with_capacity(event_json.len() / 4 * 3 + 3),
        records: Vec::new(),
        current: None,
        failure: None,
    };
    let mut de = serde_json::Deserializer::from_str(event_json);
    let parsed = EventSeed(&mut builder)
        .deserialize(&mut de)
        .and_then(|()| de.end());
    if let Some(failure) = builder.failure {
        return Err(failure);
    }
    parsed?;
    let arena = Bytes::from(builder.arena);
    let records = builder
        .records
        .into_iter()
        .map(|(mut record, span)| {
            record.data = Some(arena.slice(span));
            record
        })
        .collect();
    Ok(Batch { records })
}

/// Records decoded so far: their data in one buffer, each with the span of its bytes.
struct BatchBuilder {
    arena: Vec<u8>,
    records: Vec<(SourceRecord, Range<usize>)>,
    /// A batch is one shard: the unit and the lineage strings are built once and shared.
    current: Option<(Arc<SourceUnit>, Arc<str>, Arc<str>)>,
    /// Why decoding stopped, when the event parsed but a record did not make sense.
    failure: Option<KinesisDecodeError>,
}

impl BatchBuilder {
    fn push(&mut self, r: KinesisEventRecord<'_>) -> Result<(), KinesisDecodeError> {
        let index = self.records.len();
        let position = Position::parse(&r.kinesis.sequence_number)
            .ok_or(KinesisDecodeError::BadSequenceNumber { index })?;
        let stream_arn = r.event_source_arn.as_deref().unwrap_or_default();
        let shard_id = r
            .event_id
            .as_deref()
            .and_then(|id| id.split_once(':').map(|(s, _)| s))
            .unwrap_or("shard");
        let (unit, arn, shard) = match &self.current {
            Some((u, a, s)) if &**a == stream_arn && &**s == shard_id => {
                (u.clone(), a.clone(), s.clone())
            }
            _ => {
                let stream = stream_arn
                    .rsplit_once("stream/")
                    .map(|(_, s)| s)
                    .unwrap_or("stream");
                let made = (
                    Arc::new(SourceUnit {
                        label: format!("{stream}/{shard_id}"),
                        topic_partition: None,
                    }),
                    Arc::<str>::from(stream_arn),
                    Arc::<str>::from(shard_id),
                );
                self.current = Some(made.clone());
                made
            }
        };
        let span = crate::record::decode_base64_into(
            &mut self.arena,
            r.kinesis.data.as_deref().unwrap_or_default(),
        );
        let arrival = r.kinesis.approximate_arrival_timestamp;
        let record = SourceRecord {
            unit,
            origin: Origin::Kinesis {
                stream_arn: arn,
                shard_id: shard,
                approximate_arrival: arrival,
            },
            position,
            data: None,
            key: r.kinesis.partition_key.as_deref().map(str::to_owned),
            headers_json: None,
            arrival_ms: arrival.map(|s| (s * 1000.0) as i64),
        };
        self.records.push((record, span));
        Ok(())
    }
}

/// The top-level object: `Records` is read record by record, other keys are skipped.
struct EventSeed<'b>(&'b mut BatchBuilder);

impl<'de> DeserializeSeed<'de> for EventSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EventSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Kinesis event object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<JsonStr<'de>>()? {
            if &*key == "Records" {
                map.next_value_seed(RecordsSeed(&mut *self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct RecordsSeed<'b>(&'b mut BatchBuilder);

impl<'de> DeserializeSeed<'de> for RecordsSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RecordsSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of Kinesis records")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(n) = seq.size_hint() {
            self.0.records.reserve(n);
        }
        while let Some(record) = seq.next_element::<KinesisEventRecord<'de>>()? {
            if let Err(failure) = self.0.push(record) {
                self.0.failure = Some(failure);
                return Err(de::Error::custom("stopped at an invalid record"));
            }
        }
        Ok(())
    }
}

/// The Kinesis `itemIdentifier`: the record's sequence number, as a string.
pub fn failure_identifier(_unit: &SourceUnit, position: &Position) -> serde_json::Value {
    serde_json::Value::String(position.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_sample_shape() {
        // Given an event as Lambda delivers it, when it is decoded
        let batch = decode(
            r#"{"Records":[{"kinesis":{"kinesisSchemaVersion":"1.0","partitionKey":"pk-1",
            "sequenceNumber":"49590338271490256608559692538361571095921575989136588898",
            "data":"eyJhIjoxfQ==","approximateArrivalTimestamp":1545084650.987},
            "eventSource":"aws:kinesis","eventVersion":"1.0",
            "eventID":"shardId-000000000006:49590338271490256608559692538361571095921575989136588898",
            "eventName":"aws:kinesis:record","awsRegion":"us-east-2",
            "eventSourceARN":"arn:aws:kinesis:us-east-2:123456789012:stream/orders"}]}"#,
        )
        .unwrap();
        // Then shard, position, bytes and lineage are kept
        let r = &batch.records[0];
        assert_eq!(r.unit.label, "orders/shardId-000000000006");
        assert_eq!(
            r.position.as_str(),
            "49590338271490256608559692538361571095921575989136588898"
        );
        assert_eq!(r.data.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(r.arrival_ms, Some(1_545_084_650_987));
        assert_eq!(r.dead_letter_source()["shard_id"], "shardId-000000000006");
        assert_eq!(r.dead_letter_source()["partition_key"], "pk-1");
    }

    #[test]
    fn rejects_a_sequence_number_that_is_not_a_number() {
        let event = r#"{"Records":[{"kinesis":{"sequenceNumber":"x1","data":""}}]}"#;
        assert!(matches!(
            decode(event),
            Err(KinesisDecodeError::BadSequenceNumber { index: 0 })
        ));
    }

    #[test]
    fn an_event_of_another_shape_is_a_permanent_error() {
        let err = decode(r#"{"Records":[{"kinesis":{"data":"e30="}}]}"#).unwrap_err();
        assert!(matches!(err, KinesisDecodeError::Shape(_)), "{err}");
        assert_eq!(crate::Classify::class(&err), crate::ErrorClass::Permanent);
    }

    #[test]
    fn records_share_one_buffer_and_bad_base64_keeps_its_text() {
        // Given two records, the second not base64
        let event = r#"{"Records":[
            {"kinesis":{"sequenceNumber":"1","data":"eyJhIjoxfQ=="},"eventID":"shardId-1:1"},
            {"kinesis":{"sequenceNumber":"2","data":"not base64!"},"eventID":"shardId-1:2"}]}"#;
        // When decoded
        let batch = decode(event).unwrap();
        // Then the first holds its decoded bytes, the second its text, unchanged
        let first = batch.records[0].data.as_ref().unwrap();
        let second = batch.records[1].data.as_ref().unwrap();
        assert_eq!(&first[..], b"{\"a\":1}");
        assert_eq!(&second[..], b"not base64!");
        // and both live in one allocation, back to back
        assert_eq!(first.as_ptr().wrapping_add(first.len()), second.as_ptr());
    }
}
