//! The two ways a batch can arrive. A source decodes its event into the source-neutral
//! [`Batch`] and names a failed record the way its event-source mapping expects; everything
//! else is the one shared pipeline.

use crate::record::{Batch, Position, SourceUnit};

pub trait EventSource {
    type Error: std::error::Error + Send + Sync + 'static;
    /// Function name used in metrics when the runtime does not give one.
    const FUNCTION: &'static str;

    /// Parses the event-source-mapping payload (its JSON text) into records. The text is
    /// parsed once, borrowed: record data is decoded straight from it.
    fn decode(event_json: &str) -> Result<Batch, Self::Error>;

    /// The `itemIdentifier` of the lowest failed record of `unit`.
    fn failure_identifier(unit: &SourceUnit, position: &Position) -> serde_json::Value;
}

/// Kinesis Data Streams.
pub struct Kinesis;

impl EventSource for Kinesis {
    type Error = crate::kinesis::KinesisDecodeError;
    const FUNCTION: &'static str = "kinesis-loader";

    fn decode(event_json: &str) -> Result<Batch, Self::Error> {
        crate::kinesis::decode(event_json)
    }

    fn failure_identifier(unit: &SourceUnit, position: &Position) -> serde_json::Value {
        crate::kinesis::failure_identifier(unit, position)
    }
}

/// Amazon MSK and self-managed Apache Kafka.
pub struct Kafka;

impl EventSource for Kafka {
    type Error = crate::kafka::KafkaDecodeError;
    const FUNCTION: &'static str = "kafka-loader";

    fn decode(event_json: &str) -> Result<Batch, Self::Error> {
        crate::kafka::decode(event_json)
    }

    fn failure_identifier(unit: &SourceUnit, position: &Position) -> serde_json::Value {
        crate::kafka::failure_identifier(unit, position)
    }
}
