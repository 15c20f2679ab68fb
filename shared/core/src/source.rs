//! The two ways a batch can arrive. A source decodes its event into the source-neutral
//! [`Batch`] and names a failed record the way its event-source mapping expects; everything
//! else is the one shared pipeline.

use crate::record::{Batch, Position, SourceUnit};
use serde::de::DeserializeOwned;

pub trait EventSource {
    /// The event-source-mapping payload.
    type Event: DeserializeOwned + Send;
    type Error: std::error::Error + Send + Sync + 'static;
    /// Function name used in metrics when the runtime does not give one.
    const FUNCTION: &'static str;

    fn decode(event: &Self::Event) -> Result<Batch, Self::Error>;

    /// The `itemIdentifier` of the lowest failed record of `unit`.
    fn failure_identifier(unit: &SourceUnit, position: &Position) -> serde_json::Value;
}

/// Kinesis Data Streams.
pub struct Kinesis;

impl EventSource for Kinesis {
    type Event = crate::kinesis::KinesisEvent;
    type Error = crate::kinesis::KinesisDecodeError;
    const FUNCTION: &'static str = "kinesis-loader";

    fn decode(event: &Self::Event) -> Result<Batch, Self::Error> {
        crate::kinesis::decode(event)
    }

    fn failure_identifier(unit: &SourceUnit, position: &Position) -> serde_json::Value {
        crate::kinesis::failure_identifier(unit, position)
    }
}

/// Amazon MSK and self-managed Apache Kafka.
pub struct Kafka;

impl EventSource for Kafka {
    type Event = crate::kafka::KafkaEvent;
    type Error = crate::kafka::KafkaDecodeError;
    const FUNCTION: &'static str = "kafka-loader";

    fn decode(event: &Self::Event) -> Result<Batch, Self::Error> {
        crate::kafka::decode(event)
    }

    fn failure_identifier(unit: &SourceUnit, position: &Position) -> serde_json::Value {
        crate::kafka::failure_identifier(unit, position)
    }
}
