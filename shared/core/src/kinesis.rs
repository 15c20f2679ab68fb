//! Decoding a Kinesis event-source-mapping batch and naming its failures.
//!
//! The event is `{"Records":[{"kinesis":{...},"eventID":"shardId-…:seq","eventSourceARN":…}]}`;
//! one batch is one shard, in sequence order.

use crate::json_scan::{once, Declined, Scanner};
use crate::record::{Batch, Origin, Position, SourceRecord, SourceUnit};
use crate::text::JsonStr;
use bytes::Bytes;
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::Arc;

/// The event as Lambda sends it, borrowed from the event text: the base64 `data` of every
/// record is decoded straight from the text, never copied into a string first.
#[derive(Debug, Deserialize, PartialEq)]
pub struct KinesisEvent<'a> {
    #[serde(rename = "Records", borrow, default)]
    pub records: Vec<KinesisEventRecord<'a>>,
}

#[derive(Debug, Deserialize, PartialEq)]
pub struct KinesisEventRecord<'a> {
    #[serde(borrow)]
    pub kinesis: KinesisData<'a>,
    #[serde(rename = "eventID", borrow, default)]
    pub event_id: Option<JsonStr<'a>>,
    #[serde(rename = "eventSourceARN", borrow, default)]
    pub event_source_arn: Option<JsonStr<'a>>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KinesisData<'a> {
    #[serde(borrow)]
    pub sequence_number: Cow<'a, str>,
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

/// Parses the event text and turns it into source-neutral records.
pub fn decode(event_json: &str) -> Result<Batch, KinesisDecodeError> {
    let event = match scan_event(event_json) {
        Ok(event) => event,
        // serde_json is the authority: it gives the same event, or the precise error.
        Err(Declined) => serde_json::from_str(event_json)?,
    };
    decode_event(&event)
}

/// The fast envelope reader ([`crate::json_scan`]): the same [`KinesisEvent`] serde_json would
/// give, or `Declined` for anything it does not fully understand.
fn scan_event(text: &str) -> Result<KinesisEvent<'_>, Declined> {
    let mut s = Scanner::new(text);
    let mut records = None;
    s.object(|s, key| match &*key {
        "Records" => {
            let mut list = Vec::new();
            s.array(|s| {
                list.push(scan_record(s)?);
                Ok(())
            })?;
            once(&mut records, list)
        }
        _ => s.skip(),
    })?;
    s.end()?;
    Ok(KinesisEvent {
        records: records.unwrap_or_default(),
    })
}

fn scan_record<'a>(s: &mut Scanner<'a>) -> Result<KinesisEventRecord<'a>, Declined> {
    let (mut kinesis, mut event_id, mut arn) = (None, None, None);
    s.object(|s, key| match &*key {
        "kinesis" => {
            let data = scan_data(s)?;
            once(&mut kinesis, data)
        }
        "eventID" => {
            let v = s.optional_string()?;
            once(&mut event_id, v)
        }
        "eventSourceARN" => {
            let v = s.optional_string()?;
            once(&mut arn, v)
        }
        _ => s.skip(),
    })?;
    Ok(KinesisEventRecord {
        kinesis: kinesis.ok_or(Declined)?,
        event_id: event_id.flatten(),
        event_source_arn: arn.flatten(),
    })
}

fn scan_data<'a>(s: &mut Scanner<'a>) -> Result<KinesisData<'a>, Declined> {
    let (mut seq, mut key, mut data, mut arrival) = (None, None, None, None);
    s.object(|s, field| match &*field {
        "sequenceNumber" => {
            let v = s.string()?;
            once(&mut seq, v.0)
        }
        "partitionKey" => {
            let v = s.optional_string()?;
            once(&mut key, v)
        }
        "data" => {
            let v = s.optional_string()?;
            once(&mut data, v)
        }
        "approximateArrivalTimestamp" => {
            let v = s.optional_f64()?;
            once(&mut arrival, v)
        }
        _ => s.skip(),
    })?;
    Ok(KinesisData {
        sequence_number: seq.ok_or(Declined)?,
        partition_key: key.flatten(),
        data: data.flatten(),
        approximate_arrival_timestamp: arrival.flatten(),
    })
}

/// Turns a parsed event into source-neutral records. Every record's bytes are decoded into
/// one shared buffer; undecodable base64 keeps `data` as the base64 text's bytes so the
/// poison record still reaches the dead-letter queue unchanged.
pub fn decode_event(event: &KinesisEvent<'_>) -> Result<Batch, KinesisDecodeError> {
    let n = event.records.len();
    let encoded: usize = event
        .records
        .iter()
        .map(|r| r.kinesis.data.as_deref().map_or(0, str::len))
        .sum();
    let mut arena: Vec<u8> = Vec::with_capacity(encoded / 4 * 3 + 3);
    let mut spans = Vec::with_capacity(n);
    for r in &event.records {
        let data = r.kinesis.data.as_deref().unwrap_or_default();
        spans.push(crate::record::decode_base64_into(&mut arena, data));
    }
    let arena = Bytes::from(arena);

    let mut records = Vec::with_capacity(n);
    // A batch is one shard: the unit and the lineage strings are built once and shared.
    let mut current: Option<(Arc<SourceUnit>, Arc<str>, Arc<str>)> = None;
    for (index, (r, span)) in event.records.iter().zip(spans).enumerate() {
        let position = Position::parse(&r.kinesis.sequence_number)
            .ok_or(KinesisDecodeError::BadSequenceNumber { index })?;
        let stream_arn = r.event_source_arn.as_deref().unwrap_or_default();
        let shard_id = r
            .event_id
            .as_deref()
            .and_then(|id| id.split_once(':').map(|(s, _)| s))
            .unwrap_or("shard");
        let (unit, arn, shard) = match &current {
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
                current = Some(made.clone());
                made
            }
        };
        let arrival_ms = r
            .kinesis
            .approximate_arrival_timestamp
            .map(|s| (s * 1000.0) as i64);
        records.push(SourceRecord {
            unit,
            origin: Origin::Kinesis {
                stream_arn: arn,
                shard_id: shard,
                approximate_arrival: r.kinesis.approximate_arrival_timestamp,
            },
            position,
            data: Some(arena.slice(span)),
            key: r.kinesis.partition_key.as_deref().map(str::to_owned),
            headers_json: None,
            arrival_ms,
        });
    }
    Ok(Batch { records })
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

    /// The fast reader must give serde_json's event or decline, never something else.
    fn agrees_with_serde(text: &str) -> bool {
        let fast = scan_event(text);
        match serde_json::from_str::<KinesisEvent<'_>>(text) {
            Ok(reference) => match fast {
                Ok(event) => {
                    assert_eq!(event, reference, "{text}");
                    true
                }
                Err(Declined) => false,
            },
            Err(_) => {
                assert!(fast.is_err(), "accepted what serde_json rejects: {text}");
                false
            }
        }
    }

    const FULL: &str = r#"{"Records":[{"kinesis":{"kinesisSchemaVersion":"1.0","partitionKey":"pk-1",
        "sequenceNumber":"49590338271490256608559692538361571095921575989136588898",
        "data":"eyJhIjoxfQ==","approximateArrivalTimestamp":1545084650.987},
        "eventSource":"aws:kinesis","eventVersion":"1.0",
        "eventID":"shardId-000000000006:49590338271490256608559692538361571095921575989136588898",
        "eventName":"aws:kinesis:record","invokeIdentityArn":"arn:aws:iam::123456789012:role/x",
        "awsRegion":"us-east-2","eventSourceARN":"arn:aws:kinesis:us-east-2:123456789012:stream/orders"},
        {"eventID":"shardId-000000000006:2","kinesis":{"data":null,"sequenceNumber":"2",
        "partitionKey":"p\"k\u00e9","extra":{"n":[1,2.5e-3,true,false,null,{}]}}}]}"#;

    #[test]
    fn the_fast_reader_gives_what_serde_gives() {
        // Given events in the shapes Lambda sends and some it never would
        for text in [
            FULL,
            r#"{"Records":[]}"#,
            r#"{}"#,
            r#" { "Records" : [ { "kinesis" : { "sequenceNumber" : "1" } } ] } "#,
            r#"{"Records":[{"kinesis":{"sequenceNumber":"1","data":"a\/b"}}]}"#,
            r#"{"Records":[{"kinesis":{"sequenceNumber":"1","approximateArrivalTimestamp":7}}]}"#,
        ] {
            // Then the fast reader accepts them and agrees
            assert!(agrees_with_serde(text), "declined {text}");
        }
        for text in [
            r#"{"Records":null}"#,
            r#"{"Records":[{"kinesis":{}}]}"#,
            r#"{"Records":[{"kinesis":{"sequenceNumber":1}}]}"#,
            r#"{"Records":[{"kinesis":{"sequenceNumber":"1","sequenceNumber":"2"}}]}"#,
            r#"{"Records":[],"Records":[]}"#,
            r#"{"Records":[{"kinesis":{"sequenceNumber":"1","data":7}}]}"#,
            r#"{"Records":[{"kinesis":{"sequenceNumber":"1"}}]} x"#,
            r#"[]"#,
        ] {
            assert!(!agrees_with_serde(text), "accepted {text}");
        }
    }

    #[test]
    fn the_fast_reader_never_accepts_a_mutation_serde_rejects() {
        // Given many small corruptions of a full event (xorshift, fixed seed)
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let inserts = [
            "\"", "\\", ",", ":", "{", "}", "[", "]", " ", "0", "-", "e", ".", "n", "\u{1}", "x",
        ];
        let (mut accepted, mut tried) = (0, 0);
        for _ in 0..4000 {
            let mut text = FULL.to_owned();
            for _ in 0..1 + next() % 3 {
                let at = (next() as usize) % text.len();
                if !text.is_char_boundary(at) {
                    continue;
                }
                if next() % 2 == 0 {
                    let end = (at + 1 + (next() as usize) % 4).min(text.len());
                    if text.is_char_boundary(end) {
                        text.replace_range(at..end, "");
                    }
                } else {
                    text.insert_str(at, inserts[(next() as usize) % inserts.len()]);
                }
            }
            // When both read it, then they agree or the fast reader declines
            tried += 1;
            accepted += usize::from(agrees_with_serde(&text));
        }
        // and the fast path still takes the corruptions that left valid events
        assert!(
            accepted > tried / 20,
            "fast path took {accepted} of {tried}"
        );
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
