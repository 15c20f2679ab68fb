//! The dead-letter message: what a person needs to understand and replay a poison record.
//!
//! Body: `{"reason","kind","source":{…},"data_base64"}`; a record too large for the queue
//! carries `data_s3_key` instead of its bytes. `dedup_id` (unit and position) lets a consumer,
//! or a FIFO queue, drop the copy a redelivered batch may send again.

use crate::event::Poison;
use crate::record::SourceRecord;
use base64::Engine;
use serde_json::json;

/// Where the raw bytes of a dead letter travel.
#[derive(Debug, Clone, Copy)]
pub enum DeadLetterData<'a> {
    Inline,
    InObject(&'a str),
}

pub fn body(record: &SourceRecord, poison: &Poison, data: DeadLetterData<'_>) -> String {
    let mut msg = json!({
        "reason": poison.reason,
        "kind": poison.kind.as_str(),
        "source": record.dead_letter_source(),
        "dedup_id": format!("{}/{}", record.unit.label, record.position),
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
    msg.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::PoisonKind;
    use crate::record::{Origin, Position, SourceUnit};

    #[test]
    fn carries_reason_kind_source_and_raw_bytes() {
        let record = SourceRecord {
            unit: std::sync::Arc::new(SourceUnit {
                label: "s/shard-1".into(),
                topic_partition: None,
            }),
            position: Position::parse("7").unwrap(),
            data: Some(bytes::Bytes::from(vec![0xff, 0x00, b'x'])),
            key: None,
            headers_json: None,
            arrival_ms: None,
            origin: Origin::Kinesis {
                stream_arn: "arn:aws:kinesis:us-east-1:1:stream/s".into(),
                shard_id: "shard-1".into(),
                approximate_arrival: None,
            },
        };
        let poison = Poison {
            kind: PoisonKind::Decode,
            reason: "not UTF-8".into(),
        };
        let v: serde_json::Value =
            serde_json::from_str(&body(&record, &poison, DeadLetterData::Inline)).unwrap();
        assert_eq!(v["kind"], "decode");
        assert_eq!(v["reason"], "not UTF-8");
        assert_eq!(v["source"]["sequence_number"], "7");
        assert_eq!(v["data_base64"], "/wB4");
        assert_eq!(v["dedup_id"], "s/shard-1/7");
        let w: serde_json::Value = serde_json::from_str(&body(
            &record,
            &poison,
            DeadLetterData::InObject("dl/k.bin"),
        ))
        .unwrap();
        assert_eq!(w["data_s3_key"], "dl/k.bin");
        assert!(w.get("data_base64").is_none());
    }
}
