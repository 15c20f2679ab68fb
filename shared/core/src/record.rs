//! The source-neutral shape of a delivered batch.
//!
//! Kinesis and Kafka differ only in how a record is decoded from the event and in how a
//! failure is identified back to the event-source mapping; past this module the pipeline
//! sees one kind of record.

use bytes::Bytes;
use serde_json::json;
use std::cmp::Ordering;
use std::ops::Range;
use std::sync::Arc;

/// A record's position inside its ordering unit: a Kinesis sequence number or a Kafka offset,
/// and for a user record of a KPL aggregate its sub-sequence number inside that record.
///
/// Both are non-negative decimal integers; Kinesis sequence numbers exceed 64 bits, so the
/// value is kept as its decimal text and compared numerically.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    sequence: String,
    sub_sequence: Option<u32>,
}

impl Position {
    /// Accepts a non-empty string of ASCII digits without superfluous leading zeros.
    pub fn parse(text: &str) -> Option<Self> {
        let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        let canonical = text == "0" || !text.starts_with('0');
        (digits && canonical).then(|| Self {
            sequence: text.to_owned(),
            sub_sequence: None,
        })
    }

    pub fn from_offset(offset: u64) -> Self {
        Self {
            sequence: offset.to_string(),
            sub_sequence: None,
        }
    }

    /// The `n`th user record of the aggregated record at this position.
    pub fn with_sub_sequence(&self, n: u32) -> Self {
        Self {
            sequence: self.sequence.clone(),
            sub_sequence: Some(n),
        }
    }

    /// The sequence number or offset the source knows: what a failure names to the mapping
    /// (for a user record of an aggregate, the aggregated record's).
    pub fn as_str(&self) -> &str {
        &self.sequence
    }

    /// The user record's place inside its KPL aggregate; `None` for a record of its own.
    pub fn sub_sequence(&self) -> Option<u32> {
        self.sub_sequence
    }
}

impl Ord for Position {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sequence
            .len()
            .cmp(&other.sequence.len())
            .then_with(|| self.sequence.cmp(&other.sequence))
            .then_with(|| self.sub_sequence.cmp(&other.sub_sequence))
    }
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The sequence number, and for a user record of an aggregate `.` and its sub-sequence
/// number: distinct for every record, so object keys, poison claim keys and logs tell the
/// user records of one aggregate apart.
impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.sequence)?;
        match self.sub_sequence {
            Some(n) => write!(f, ".{n}"),
            None => Ok(()),
        }
    }
}

/// The ordering unit a record belongs to: a Kinesis shard or a Kafka topic-partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceUnit {
    /// Human-readable lineage label: `stream/shard` or `topic/partition`.
    pub label: String,
    /// Kafka only: the topic and partition, needed to name a failure.
    pub topic_partition: Option<(String, i32)>,
}

/// Source-specific facts about a record, kept for its dead-letter message. Rendered to JSON
/// only for poison records, so the hot path allocates nothing for them.
#[derive(Debug, Clone)]
pub enum Origin {
    Kinesis {
        stream_arn: Arc<str>,
        shard_id: Arc<str>,
        /// Seconds since the epoch, as the event gives it.
        approximate_arrival: Option<f64>,
    },
    Kafka {
        /// The MSK cluster ARN, or `bootstrap:<servers>` for a self-managed cluster.
        cluster: Arc<str>,
        /// Milliseconds since the epoch.
        timestamp: Option<i64>,
        /// The schema registry's id of the value's schema (`valueSchemaMetadata.schemaId`),
        /// when the mapping validates records against a registry.
        value_schema_id: Option<Arc<str>>,
    },
}

/// One delivered record, decoded from the event but not yet validated.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    /// Shared by all records of the unit.
    pub unit: Arc<SourceUnit>,
    pub position: Position,
    /// The raw record bytes, a view of the batch's one decoded buffer; `None` for a Kafka
    /// tombstone (null value).
    pub data: Option<Bytes>,
    /// Producer key: Kinesis partition key, or a Kafka key in base64.
    pub key: Option<String>,
    /// Kafka headers as JSON text (`[{"k":"base64"}]`), kept for lineage.
    pub headers_json: Option<String>,
    /// When the source accepted the record, in milliseconds since the epoch.
    pub arrival_ms: Option<i64>,
    pub origin: Origin,
    /// Why the record cannot be read at all, found while decoding the batch (a corrupt KPL
    /// aggregate): poison with this reason, whatever its route.
    pub undecodable: Option<Arc<str>>,
}

impl SourceRecord {
    /// The `source` object of this record's dead-letter message.
    pub fn dead_letter_source(&self) -> serde_json::Value {
        match &self.origin {
            Origin::Kinesis {
                stream_arn,
                shard_id,
                approximate_arrival,
            } => json!({
                "stream_arn": &**stream_arn,
                "shard_id": &**shard_id,
                "sequence_number": self.position.as_str(),
                "sub_sequence_number": self.position.sub_sequence(),
                "partition_key": self.key,
                "approximate_arrival": approximate_arrival,
            }),
            Origin::Kafka {
                cluster,
                timestamp,
                value_schema_id,
            } => {
                let (topic, partition) = match &self.unit.topic_partition {
                    Some((t, p)) => (t.as_str(), Some(*p)),
                    None => (self.unit.label.as_str(), None),
                };
                let headers: serde_json::Value = self
                    .headers_json
                    .as_deref()
                    .and_then(|h| serde_json::from_str(h).ok())
                    .unwrap_or_else(|| json!([]));
                let offset: serde_json::Value = self
                    .position
                    .as_str()
                    .parse::<i64>()
                    .map(Into::into)
                    .unwrap_or_else(|_| self.position.as_str().into());
                json!({
                    "cluster": &**cluster,
                    "topic": topic,
                    "partition": partition,
                    "offset": offset,
                    "key_base64": self.key,
                    "timestamp": timestamp,
                    "headers": headers,
                    "value_schema_id": value_schema_id.as_deref(),
                })
            }
        }
    }
}

/// Appends the bytes that base64 `text` encodes to `arena` and returns where they are. Text
/// that is not base64 is kept as it is, so a poison record reaches the dead-letter queue with
/// exactly the bytes it arrived with.
pub(crate) fn decode_base64_into(arena: &mut Vec<u8>, text: &str) -> Range<usize> {
    decode_base64_or_keep(arena, text).0
}

/// [`decode_base64_into`], also telling whether `text` was base64 (else it was kept as is).
pub(crate) fn decode_base64_or_keep(arena: &mut Vec<u8>, text: &str) -> (Range<usize>, bool) {
    let start = arena.len();
    let decoded = base64_simd::STANDARD
        .decode_append(text.as_bytes(), arena)
        .is_ok();
    if !decoded {
        arena.truncate(start);
        arena.extend_from_slice(text.as_bytes());
    }
    (start..arena.len(), decoded)
}

/// A decoded batch: records in delivery order, which is position order within each unit.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub records: Vec<SourceRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_compare_numerically_beyond_64_bits() {
        // Given two Kinesis-sized sequence numbers of different lengths
        let short = Position::parse("99999999999999999999").unwrap();
        let long = Position::parse("100000000000000000000").unwrap();
        // Then the longer one is larger even though it sorts lower as text
        assert!(short < long);
        assert!(Position::parse("10").unwrap() > Position::parse("9").unwrap());
    }

    #[test]
    fn user_records_of_an_aggregate_sort_after_it_and_before_the_next_record() {
        // Given an aggregated record's position and the next record's
        let agg = Position::parse("99").unwrap();
        let next = Position::parse("100").unwrap();
        // Then its user records sort in sub-sequence order between the two, print apart,
        // and name the aggregate's sequence number to the mapping
        let (a0, a1) = (agg.with_sub_sequence(0), agg.with_sub_sequence(1));
        assert!(a0 < a1 && a1 < next && Position::parse("98").unwrap() < a0);
        assert_eq!((a1.to_string(), a1.as_str()), ("99.1".to_owned(), "99"));
        assert_eq!(agg.to_string(), "99");
    }

    #[test]
    fn positions_reject_non_numbers() {
        assert!(Position::parse("").is_none());
        assert!(Position::parse("12a").is_none());
        assert!(Position::parse("-1").is_none());
        assert!(Position::parse("007").is_none());
        assert!(Position::parse("0").is_some());
    }
}
