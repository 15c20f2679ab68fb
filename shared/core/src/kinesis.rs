//! Decoding a Kinesis event-source-mapping batch and naming its failures.
//!
//! The event is `{"Records":[{"kinesis":{...},"eventID":"shardId-…:seq","eventSourceARN":…}]}`;
//! one batch is one shard, in sequence order. A KPL aggregate becomes its user records, each
//! with its sub-sequence number ([`crate::kpl`]); a failure among them names the aggregate,
//! the only record the mapping knows, and its redelivery finds the siblings already claimed.

use crate::json_cursor::{base64_into, optional_string, set_once, Bail, Cursor};
use crate::kpl;
use crate::record::{Batch, Origin, Position, SourceRecord, SourceUnit};
use crate::text::JsonStr;
use bytes::Bytes;
use serde::Deserialize;
use std::ops::Range;
use std::sync::Arc;

/// One record of the event as Lambda sends it (`{"Records":[…]}`), borrowed from the event
/// text: serde_json's reading, used when the plain cursor gives up (see [`decode`]).
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
/// is handled as soon as the cursor has read it, while its text is still in cache, and its
/// base64 `data` is decoded straight into one buffer shared by the batch. Undecodable base64
/// keeps `data` as the base64 text's bytes so the poison record still reaches the dead-letter
/// queue unchanged.
///
/// The event is read with the strict plain-JSON cursor ([`crate::json_cursor`]); text outside
/// its subset (an escape sequence, say) is read again by serde_json, which then decides.
pub fn decode(event_json: &str) -> Result<Batch, KinesisDecodeError> {
    let mut builder = BatchBuilder::for_event(event_json);
    if decode_plain(event_json, &mut builder).is_err() {
        builder.clear();
        decode_with_serde(event_json, &mut builder)?;
    }
    Ok(builder.finish())
}

/// The plain-JSON reading of the event; [`Bail`] leaves `builder` half-filled.
fn decode_plain(event_json: &str, builder: &mut BatchBuilder) -> Result<(), Bail> {
    let mut c = Cursor::new(event_json);
    let mut records_seen = false;
    c.object(|c, key| {
        if key != "Records" {
            return c.skip_value();
        }
        if std::mem::replace(&mut records_seen, true) {
            return Err(Bail);
        }
        c.array(|c| plain_record(c, builder))
    })?;
    c.end()
}

fn plain_record(c: &mut Cursor<'_>, builder: &mut BatchBuilder) -> Result<(), Bail> {
    let mut kinesis = None;
    let (mut event_id, mut event_source_arn) = (None, None);
    c.object(|c, key| match key {
        "kinesis" => set_once(&mut kinesis, plain_kinesis(c, &mut builder.arena)?),
        "eventID" => set_once(&mut event_id, optional_string(c)?),
        "eventSourceARN" => set_once(&mut event_source_arn, optional_string(c)?),
        _ => c.skip_value(),
    })?;
    let (fields, span) = kinesis.ok_or(Bail)?;
    let lineage = Lineage {
        event_id: event_id.flatten(),
        event_source_arn: event_source_arn.flatten(),
    };
    // A bad sequence number is left to serde_json's reading, which names it.
    builder.push(&fields, lineage, span).map_err(|_| Bail)
}

/// The `kinesis` object; `data` is decoded as soon as it is read.
fn plain_kinesis<'a>(
    c: &mut Cursor<'a>,
    arena: &mut Vec<u8>,
) -> Result<(KinesisFields<'a>, Range<usize>), Bail> {
    let (mut sequence_number, mut partition_key, mut data, mut arrival) = (None, None, None, None);
    c.object(|c, key| match key {
        "sequenceNumber" => set_once(&mut sequence_number, c.string()?),
        "partitionKey" => set_once(&mut partition_key, optional_string(c)?),
        "data" => {
            let span = if c.null() {
                None
            } else {
                Some(base64_into(c, arena)?)
            };
            set_once(&mut data, span)
        }
        "approximateArrivalTimestamp" => {
            // serde_json reads the number, exactly as its own parse of the event would.
            let seconds = if c.null() {
                None
            } else {
                Some(serde_json::from_str::<f64>(c.number()?).map_err(|_| Bail)?)
            };
            set_once(&mut arrival, seconds)
        }
        _ => c.skip_value(),
    })?;
    let span = data.flatten().unwrap_or(arena.len()..arena.len());
    let fields = KinesisFields {
        sequence_number: sequence_number.ok_or(Bail)?,
        partition_key: partition_key.flatten(),
        approximate_arrival_timestamp: arrival.flatten(),
    };
    Ok((fields, span))
}

/// serde_json's reading of the event: the authority on anything outside the plain subset.
/// Speed does not matter here (the cursor reads what Lambda sends), so it is plain serde.
fn decode_with_serde(
    event_json: &str,
    builder: &mut BatchBuilder,
) -> Result<(), KinesisDecodeError> {
    let event: KinesisEvent<'_> = serde_json::from_str(event_json)?;
    event
        .records
        .iter()
        .try_for_each(|record| builder.push_parsed(record))
}

/// The event as serde reads it: `{"Records":[…]}`.
#[derive(Debug, Deserialize)]
struct KinesisEvent<'a> {
    #[serde(rename = "Records", borrow, default)]
    records: Vec<KinesisEventRecord<'a>>,
}

/// The fields of `kinesis` the loader keeps, apart from `data`.
struct KinesisFields<'a> {
    sequence_number: &'a str,
    partition_key: Option<&'a str>,
    approximate_arrival_timestamp: Option<f64>,
}

/// Where a record came from: `eventID` (`shardId-…:sequence`) and the stream's ARN.
struct Lineage<'a> {
    event_id: Option<&'a str>,
    event_source_arn: Option<&'a str>,
}

/// Records decoded so far: their data in one buffer, each with the span of its bytes.
struct BatchBuilder {
    arena: Vec<u8>,
    records: Vec<(SourceRecord, Range<usize>)>,
    /// A batch is one shard: the unit and the lineage strings are built once and shared.
    current: Option<(Arc<SourceUnit>, Arc<str>, Arc<str>)>,
}

impl BatchBuilder {
    fn for_event(event_json: &str) -> Self {
        Self {
            // Decoded data is at most 3/4 of the text it came from, so the buffer never
            // grows: reserved but untouched pages cost no memory.
            arena: Vec::with_capacity(event_json.len() / 4 * 3 + 3),
            records: Vec::new(),
            current: None,
        }
    }

    fn clear(&mut self) {
        self.arena.clear();
        self.records.clear();
        self.current = None;
    }

    fn push(
        &mut self,
        fields: &KinesisFields<'_>,
        lineage: Lineage<'_>,
        span: Range<usize>,
    ) -> Result<(), KinesisDecodeError> {
        let index = self.records.len();
        let position = Position::parse(fields.sequence_number)
            .ok_or(KinesisDecodeError::BadSequenceNumber { index })?;
        let stream_arn = lineage.event_source_arn.unwrap_or_default();
        let shard_id = lineage
            .event_id
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
        let arrival = fields.approximate_arrival_timestamp;
        let record = SourceRecord {
            unit,
            origin: Origin::Kinesis {
                stream_arn: arn,
                shard_id: shard,
                approximate_arrival: arrival,
            },
            position,
            data: None,
            key: fields.partition_key.map(str::to_owned),
            headers_json: None,
            arrival_ms: arrival.map(|s| (s * 1000.0) as i64),
            undecodable: None,
        };
        self.records.push((record, span));
        Ok(())
    }

    /// One parsed record (serde_json's reading), its data decoded now.
    fn push_parsed(&mut self, r: &KinesisEventRecord<'_>) -> Result<(), KinesisDecodeError> {
        let data = r.kinesis.data.as_deref().unwrap_or_default();
        let span = crate::record::decode_base64_into(&mut self.arena, data);
        let fields = KinesisFields {
            sequence_number: &r.kinesis.sequence_number,
            partition_key: r.kinesis.partition_key.as_deref(),
            approximate_arrival_timestamp: r.kinesis.approximate_arrival_timestamp,
        };
        let lineage = Lineage {
            event_id: r.event_id.as_deref(),
            event_source_arn: r.event_source_arn.as_deref(),
        };
        self.push(&fields, lineage, span)
    }

    fn finish(self) -> Batch {
        let arena = Bytes::from(self.arena);
        let mut records = Vec::with_capacity(self.records.len());
        for (mut record, span) in self.records {
            match kpl::deaggregate(&arena[span.clone()]) {
                kpl::Aggregate::Plain => {
                    record.data = Some(arena.slice(span));
                    records.push(record);
                }
                // Each user record is a record of its own: its bytes a view of the
                // aggregate's, its partition key from the aggregate's table, its position
                // the aggregate's sequence number and its sub-sequence number.
                kpl::Aggregate::Records(users) => {
                    records.reserve(users.len());
                    // The aggregate's own partition key gives way to each user record's.
                    record.key = None;
                    for (n, user) in users.into_iter().enumerate() {
                        let mut r = record.clone();
                        r.position = record.position.with_sub_sequence(n as u32);
                        r.key = Some(user.partition_key);
                        r.data = Some(
                            arena.slice(span.start + user.data.start..span.start + user.data.end),
                        );
                        records.push(r);
                    }
                }
                kpl::Aggregate::Corrupt(reason) => {
                    record.data = Some(arena.slice(span));
                    record.undecodable = Some(reason.into());
                    records.push(record);
                }
            }
        }
        Batch { records }
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

    use crate::json_cursor::testing::{damaged, differential_run, shuffle, Rng};

    /// The plain cursor's reading, `None` where it gives up.
    fn plain_reading(text: &str) -> Option<String> {
        let mut builder = BatchBuilder::for_event(text);
        decode_plain(text, &mut builder).ok()?;
        Some(format!("{:?}", builder.finish()))
    }

    /// serde_json's reading: the batch, or that it failed.
    fn serde_reading(text: &str) -> Result<String, String> {
        let mut builder = BatchBuilder::for_event(text);
        decode_with_serde(text, &mut builder).map_err(|e| e.to_string())?;
        Ok(format!("{:?}", builder.finish()))
    }

    /// Holds the cursor to its contract on `text`: whatever it accepts, serde_json accepts
    /// and reads the same. Returns whether the cursor accepted it.
    fn agrees_with_serde_json(text: &str) -> bool {
        match plain_reading(text) {
            None => false,
            Some(plain) => {
                assert_eq!(Ok(plain), serde_reading(text), "event: {text}");
                true
            }
        }
    }

    /// A Kinesis event with random layout, field order, extra fields, nulls, escapes,
    /// duplicates, odd numbers and bad base64: mostly what Lambda sends, sometimes not.
    fn random_event(rng: &mut Rng) -> String {
        let ws = |rng: &mut Rng| rng.whitespace().to_owned();
        let mut records = Vec::new();
        for i in 0..rng.below(4) {
            let seq = format!("4959033827149025660855969253836157109592157598913{i:07}");
            let mut kinesis = vec![
                format!(
                    r#""sequenceNumber":"{}""#,
                    rng.mostly(&[&seq, &seq, &seq, "007", "12a", ""])
                ),
                format!(
                    r#""partitionKey":{}"#,
                    rng.mostly(&[r#""pk""#, "null", r#""p\"k""#, r#""pk-é""#])
                ),
                format!(
                    r#""data":{}"#,
                    rng.mostly(&[
                        r#""eyJhIjoxfQ==""#,
                        r#""""#,
                        "null",
                        r#""not base64!""#,
                        r#""eyJh\u0049joxfQ==""#,
                        "\"eyJh\tIjoxfQ==\"",
                        r#""eyJhIjoxfQ""#,
                    ])
                ),
                format!(
                    r#""approximateArrivalTimestamp":{}"#,
                    rng.mostly(&[
                        "1545084650.987",
                        "1545084650",
                        "1.545084650987e9",
                        "null",
                        "-0",
                        "1e400",
                        "01",
                        "1.",
                        r#""1545084650""#,
                    ])
                ),
                r#""kinesisSchemaVersion":"1.0""#.to_owned(),
            ];
            if rng.below(8) == 0 {
                kinesis.push(r#""data":"e30=""#.to_owned());
            }
            let mut record = vec![
                format!("\"kinesis\":{{{}}}", shuffle(rng, kinesis).join(&format!(",{}", ws(rng)))),
                format!(r#""eventID":{}"#, rng.mostly(&[
                    &format!(r#""shardId-000000000006:{seq}""#), r#""shardId-7:1""#, "null", r#""noshard""#,
                ])),
                format!(r#""eventSourceARN":{}"#, rng.mostly(&[
                    r#""arn:aws:kinesis:us-east-2:123456789012:stream/orders""#,
                    r#""arn:aws:kinesis:us-east-2:123456789012:stream\/orders""#, "null",
                ])),
                format!(r#""extra":{}"#, rng.mostly(&[
                    "[1,-2.5e3,true,false,null,{\"a\":[]},\"s\"]", "{}", "[]", "\"aws:kinesis\"",
                    "[1,]", "{\"a\":1,}", "tru", "1e400", "-123456789012345678901234567890.5e-999",
                    "[\"caf\u{e9} \u{1f600}\"]", "\u{feff}1", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
                ])),
            ];
            if rng.below(10) == 0 {
                record.remove(0);
            }
            records.push(format!("{{{}}}", shuffle(rng, record).join(",")));
        }
        let mut top = vec![format!(
            "\"Records\":{}[{}]{}",
            ws(rng),
            records.join(&format!(",{}", ws(rng))),
            ws(rng)
        )];
        if rng.below(4) == 0 {
            top.push(r#""other":{"x":[null]}"#.to_owned());
        }
        if rng.below(12) == 0 {
            top.push(r#""Records":[]"#.to_owned());
        }
        let body = format!("{}{{{}}}{}", ws(rng), shuffle(rng, top).join(","), ws(rng));
        match rng.below(12) {
            0 => format!("{body}x"),
            1 => body.replacen('}', "", 1),
            _ => body,
        }
    }

    #[test]
    fn the_plain_reading_agrees_with_serde_json_on_varied_events() {
        // Given thousands of events, many plain, many with something unusual, when both
        // readings are taken, then they agree wherever the cursor accepts
        let (accepted_with_records, bailed) = differential_run(
            0x5eed_1234_abcd_0001,
            5_000,
            "data",
            random_event,
            agrees_with_serde_json,
        );
        // and both outcomes were exercised, with records
        assert!(
            accepted_with_records > 500 && bailed > 500,
            "accepted {accepted_with_records} with records, bailed {bailed}"
        );
    }

    #[test]
    fn the_plain_reading_agrees_with_serde_json_on_damaged_events() {
        // Given one plain event, damaged one byte at a time in every way JSON could notice
        let event = r#"{"Records":[{"kinesis":{"kinesisSchemaVersion":"1.0","partitionKey":"pk-1",
            "sequenceNumber":"49590338271490256608559692538361571095921575989136588898",
            "data":"eyJhIjoxfQ==","approximateArrivalTimestamp":1545084650.987},
            "eventSource":"aws:kinesis","eventVersion":"1.0","n":[-1.5e2,true,null],
            "eventID":"shardId-000000000006:49590338271490256608559692538361571095921575989136588898",
            "eventSourceARN":"arn:aws:kinesis:us-east-2:123456789012:stream/orders"}]}"#;
        assert!(agrees_with_serde_json(event));
        // When both readings are taken, then they agree wherever the cursor accepts
        let accepted = damaged(event)
            .iter()
            .filter(|d| agrees_with_serde_json(d))
            .count();
        assert!(accepted > 0);
    }

    #[test]
    fn unusual_text_is_read_by_serde_json() {
        // Given events the cursor leaves to serde_json: an escape, a duplicate Records
        let escaped = r#"{"Records":[{"kinesis":{"sequenceNumber":"1","data":"e30="},
            "eventSourceARN":"arn:aws:kinesis:us-east-1:1:stream\/orders"}]}"#;
        let twice = r#"{"Records":[],"Records":[]}"#;
        assert_eq!(plain_reading(escaped), None);
        assert_eq!(plain_reading(twice), None);
        // When decoded, then serde_json's reading stands
        let batch = decode(escaped).unwrap();
        assert_eq!(batch.records[0].unit.label, "orders/shard");
        assert!(matches!(decode(twice), Err(KinesisDecodeError::Shape(_))));
    }
}
