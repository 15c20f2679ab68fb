//! The dead-letter message: what a person needs to understand and replay a poison record.
//!
//! Body: `{"reason","kind","source":{…},"data_base64"}`; a record too large for the queue
//! carries `data_s3_key` instead of its bytes. `dedup_id` (the record's [`poison_digest`])
//! lets a consumer, or a FIFO queue, drop the copy a redelivered batch may send again.

use crate::event::Poison;
use crate::record::{Origin, SourceRecord};
use base64::Engine;
use serde_json::json;
use sha2::{Digest, Sha256};

/// Hex characters of a poison digest: 128 bits, so two different records never share one.
pub const POISON_DIGEST_HEX_CHARS: usize = 32;

/// The identity of a poison record: where it came from (stream or cluster ARN, unit,
/// position, the source's timestamp) and what it is (its bytes), as a hex SHA-256 prefix.
///
/// Coordinates alone are not unique: MSK and a self-managed cluster can feed one function
/// with the same topic name, a re-created topic restarts its offsets, and long unit labels
/// are cut in object keys. A redelivery of the same record yields the same digest.
///
/// ```
/// use streamload_core::dead_letter::poison_digest;
/// # use streamload_core::record::{Origin, Position, SourceRecord, SourceUnit};
/// # let record = |data: &'static [u8]| SourceRecord {
/// #     unit: std::sync::Arc::new(SourceUnit { label: "orders/0".into(), topic_partition: Some(("orders".into(), 0)) }),
/// #     position: Position::from_offset(7),
/// #     data: Some(bytes::Bytes::from_static(data)),
/// #     key: None, headers_json: None, arrival_ms: None, undecodable: None,
/// #     origin: Origin::Kafka { cluster: "arn:aws:kafka:us-east-1:1:cluster/a/1".into(), timestamp: Some(1), value_schema_id: None },
/// # };
/// assert_eq!(poison_digest(&record(b"x")), poison_digest(&record(b"x")));
/// assert_ne!(poison_digest(&record(b"x")), poison_digest(&record(b"y")));
/// assert_eq!(poison_digest(&record(b"x")).len(), 32);
/// ```
pub fn poison_digest(record: &SourceRecord) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    match &record.origin {
        Origin::Kinesis {
            stream_arn,
            approximate_arrival,
            ..
        } => {
            field(b"kinesis");
            field(stream_arn.as_bytes());
            field(
                &approximate_arrival
                    .map_or(u64::MAX, f64::to_bits)
                    .to_be_bytes(),
            );
        }
        Origin::Kafka {
            cluster, timestamp, ..
        } => {
            field(b"kafka");
            field(cluster.as_bytes());
            field(&timestamp.map_or(i64::MIN, |t| t).to_be_bytes());
        }
    }
    field(record.unit.label.as_bytes());
    field(record.position.as_str().as_bytes());
    // A KPL user record's place in its aggregate (a record of its own adds nothing, so its
    // digest is what it was before aggregates were read).
    if let Some(n) = record.position.sub_sequence() {
        field(&n.to_be_bytes());
    }
    match &record.data {
        Some(bytes) => field(bytes),
        None => field(b"\xfftombstone"),
    }
    let digest = h.finalize();
    let mut hex = String::with_capacity(POISON_DIGEST_HEX_CHARS);
    for b in digest.iter().take(POISON_DIGEST_HEX_CHARS / 2) {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// Where the raw bytes of a dead letter travel.
#[derive(Debug, Clone, Copy)]
pub enum DeadLetterData<'a> {
    Inline,
    InObject(&'a str),
}

/// The message for `record`; `digest` is its [`poison_digest`].
pub fn body(
    record: &SourceRecord,
    poison: &Poison,
    digest: &str,
    data: DeadLetterData<'_>,
) -> String {
    let mut msg = json!({
        "reason": poison.reason,
        "kind": poison.kind.as_str(),
        "source": record.dead_letter_source(),
        "dedup_id": digest,
    });
    match data {
        DeadLetterData::Inline => {
            msg["data_base64"] = match &record.data {
                Some(bytes) => base64::engine::general_purpose::STANDARD
                    .encode(bytes)
                    .into(),
                None => serde_json::Value::Null,
            };
        }
        DeadLetterData::InObject(key) => msg["data_s3_key"] = key.into(),
    }
    queue_safe(msg.to_string())
}

/// `json` with the characters SQS refuses in a message body written as JSON escapes. SQS
/// accepts #x9, #xA, #xD, #x20–#xD7FF, #xE000–#xFFFD and #x10000–#x10FFFF; serde_json already
/// escapes every control character, and Rust strings hold no surrogates, so what is left is
/// U+FFFE and U+FFFF (a Kafka key or Kinesis partition key can carry them). Outside strings
/// JSON has no such characters, so the escapes are always inside one. Without this, SQS
/// refuses the letter as the sender's fault on every delivery and the shard stalls.
fn queue_safe(json: String) -> String {
    if !json.contains(['\u{FFFE}', '\u{FFFF}']) {
        return json;
    }
    json.replace('\u{FFFE}', "\\ufffe")
        .replace('\u{FFFF}', "\\uffff")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::PoisonKind;
    use crate::record::{Position, SourceUnit};

    /// A record of shard-1 of stream `s` at position 7.
    fn kinesis_record(data: &'static [u8], key: Option<&str>) -> SourceRecord {
        SourceRecord {
            unit: std::sync::Arc::new(SourceUnit {
                label: "s/shard-1".into(),
                topic_partition: None,
            }),
            position: Position::parse("7").unwrap(),
            data: Some(bytes::Bytes::from_static(data)),
            key: key.map(str::to_owned),
            headers_json: None,
            arrival_ms: None,
            undecodable: None,
            origin: Origin::Kinesis {
                stream_arn: "arn:aws:kinesis:us-east-1:1:stream/s".into(),
                shard_id: "shard-1".into(),
                approximate_arrival: None,
            },
        }
    }

    #[test]
    fn characters_the_queue_refuses_are_escaped_and_read_back_the_same() {
        // Given a record whose partition key holds U+FFFE and U+FFFF
        let record = kinesis_record(b"x", Some("k\u{FFFE}\u{FFFF}"));
        let poison = Poison {
            kind: PoisonKind::Decode,
            reason: "r".into(),
        };
        // When its letter is written
        let letter = body(&record, &poison, "d", DeadLetterData::Inline);
        // Then no character SQS refuses is left, and the JSON still reads as the same text
        assert!(!letter.contains(['\u{FFFE}', '\u{FFFF}']), "{letter}");
        let back: serde_json::Value = serde_json::from_str(&letter).unwrap();
        assert!(back.to_string().contains('\u{FFFE}'));
    }

    #[test]
    fn carries_reason_kind_source_and_raw_bytes() {
        let record = kinesis_record(&[0xff, 0x00, b'x'], None);
        let poison = Poison {
            kind: PoisonKind::Decode,
            reason: "not UTF-8".into(),
        };
        let digest = poison_digest(&record);
        let v: serde_json::Value =
            serde_json::from_str(&body(&record, &poison, &digest, DeadLetterData::Inline)).unwrap();
        assert_eq!(v["kind"], "decode");
        assert_eq!(v["reason"], "not UTF-8");
        assert_eq!(v["source"]["sequence_number"], "7");
        assert_eq!(v["data_base64"], "/wB4");
        assert_eq!(v["dedup_id"], digest.as_str());
        let w: serde_json::Value = serde_json::from_str(&body(
            &record,
            &poison,
            &digest,
            DeadLetterData::InObject("dl/k.bin"),
        ))
        .unwrap();
        assert_eq!(w["data_s3_key"], "dl/k.bin");
        assert!(w.get("data_base64").is_none());
    }
}

#[cfg(test)]
mod identity_tests {
    use super::*;
    use crate::record::{Position, SourceUnit};
    use std::sync::Arc;

    fn kafka(cluster: &str, offset: u64, data: &'static [u8]) -> SourceRecord {
        SourceRecord {
            unit: Arc::new(SourceUnit {
                label: "orders/0".into(),
                topic_partition: Some(("orders".into(), 0)),
            }),
            position: Position::from_offset(offset),
            data: Some(bytes::Bytes::from_static(data)),
            key: None,
            headers_json: None,
            arrival_ms: Some(1),
            undecodable: None,
            origin: Origin::Kafka {
                cluster: cluster.into(),
                timestamp: Some(1),
                value_schema_id: None,
            },
        }
    }

    #[test]
    fn same_coordinates_on_two_clusters_or_with_other_bytes_are_two_poison_records() {
        // Given the same topic, partition and offset on MSK and on a self-managed cluster
        let msk = kafka("arn:aws:kafka:us-east-1:1:cluster/a/1", 7, b"bad");
        let own = kafka("bootstrap:b1:9092", 7, b"bad");
        // And a re-created topic whose offset 7 now holds other bytes
        let recreated = kafka("arn:aws:kafka:us-east-1:1:cluster/a/1", 7, b"worse");
        // Then each has its own identity, and a redelivery keeps its identity
        let d = poison_digest(&msk);
        assert_ne!(d, poison_digest(&own));
        assert_ne!(d, poison_digest(&recreated));
        assert_eq!(d, poison_digest(&msk.clone()));
        assert!(d.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
