//! The pure core of streamload.
//!
//! Everything that decides *what* happens to a micro-batch lives here: decoding the
//! event-source payloads, mapping records by their route, the exactly-once claim protocol, the
//! partial-batch failure response and the pure encoders (Parquet bytes, dead-letter bodies).
//! It knows no AWS SDK and no Postgres driver: the outside world is reached only through the
//! narrow traits in [`ports`], so the protocol can be tested with in-memory fakes and run
//! unchanged against the real adapters.

pub mod cdc;
pub mod clock;
pub mod dead_letter;
pub mod encode;
pub mod error;
pub mod event;
pub mod heap;
mod json_cursor;
pub mod kafka;
pub mod kinesis;
pub mod kpl;
pub mod memory;
pub mod metrics;
pub mod object_key;
pub mod pacing;
pub mod pipeline;
pub mod ports;
pub mod record;
pub mod response;
pub mod retry;
pub mod route;
pub mod search;
pub mod source;
pub mod text;

pub use error::{Classify, ErrorClass};
pub use event::{Poison, PoisonKind};
pub use pipeline::{
    BatchReport, FailureCause, Invocation, Pipeline, PipelineSettings, RecordOutcome,
    CLAIM_CONCURRENCY, OBJECT_WRITE_CONCURRENCY,
};
pub use route::{Mapped, Route, Routes};

pub use record::{Batch, Position, SourceRecord};
pub use text::Text;
