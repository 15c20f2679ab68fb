//! Decoding a Kinesis event-source-mapping batch and naming its failures.
//!
//! The event is `{"Records":[{"kinesis":{...},"eventID":"shardId-…:seq","eventSourceARN":…}]}`;
//! one batch is one shard, in sequence order.

use crate::record::{Batch, Origin, Position, SourceRecord, SourceUnit};
use base64::Engine;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
pub struct KinesisEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<KinesisEventRecord>,
}

#[derive(Debug, Deserialize)]
pub struct KinesisEventRecord {
    pub kinesis: KinesisData,
    #[serde(rename = "eventID", default)]
    pub event_id: Option<String>,
    #[serde(rename = "eventSourceARN", default)]
    pub event_source_arn: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KinesisData {
    pub sequence_number: String,
    #[serde(default)]
    pub partition_key: Option<String>,
    #[serde(default)]
    pub data: Option<String>,
    /// Seconds since the epoch, with fractions.
    #[serde(default)]
    pub approximate_arrival_timestamp: Option<f64>,
}

/// The event itself is malformed: Lambda never sends this, so the invocation fails loudly.
#[derive(Debug, thiserror::Error)]
pub enum KinesisDecodeError {
    #[error("record {index} has an invalid sequence number")]
    BadSequenceNumber { index: usize },
}

impl crate::Classify for KinesisDecodeError {
    fn class(&self) -> crate::ErrorClass {
        crate::ErrorClass::Permanent
    }
}

/// Turns the event into source-neutral records. Undecodable base64 keeps `data` as the
/// base64 text's bytes so the poison record still reaches the dead-letter queue unchanged.
pub fn decode(event: &KinesisEvent) -> Result<Batch, KinesisDecodeError> {
    let mut records = Vec::with_capacity(event.records.len());
    // A batch is one shard: the unit and the lineage strings are built once and shared.
    let mut current: Option<(Arc<SourceUnit>, Arc<str>, Arc<str>)> = None;
    for (index, r) in event.records.iter().enumerate() {
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
        let data = r.kinesis.data.as_deref().unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap_or_else(|_| data.as_bytes().to_vec());
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
            data: Some(bytes),
            key: r.kinesis.partition_key.clone(),
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
        // Given an event as Lambda delivers it
        let event: KinesisEvent = serde_json::from_str(
            r#"{"Records":[{"kinesis":{"kinesisSchemaVersion":"1.0","partitionKey":"pk-1",
            "sequenceNumber":"49590338271490256608559692538361571095921575989136588898",
            "data":"eyJhIjoxfQ==","approximateArrivalTimestamp":1545084650.987},
            "eventSource":"aws:kinesis","eventVersion":"1.0",
            "eventID":"shardId-000000000006:49590338271490256608559692538361571095921575989136588898",
            "eventName":"aws:kinesis:record","awsRegion":"us-east-2",
            "eventSourceARN":"arn:aws:kinesis:us-east-2:123456789012:stream/orders"}]}"#,
        )
        .unwrap();
        // When it is decoded
        let batch = decode(&event).unwrap();
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
        let event: KinesisEvent =
            serde_json::from_str(r#"{"Records":[{"kinesis":{"sequenceNumber":"x1","data":""}}]}"#)
                .unwrap();
        assert!(matches!(
            decode(&event),
            Err(KinesisDecodeError::BadSequenceNumber { index: 0 })
        ));
    }
}
