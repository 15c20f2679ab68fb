//! `streamload produce`: the seed's producer events — page_view, click, purchase, signup,
//! logout; `user_id` from a pool and used as the partition key; a fresh UUID `event_id`;
//! `created_at` now (UTC); a payload with page, session_id and user_agent — or, with a route
//! file, records that fit one route ([`RouteShape`]: how values are chosen is told there) —
//! with producer retries (the same bytes again) and poison mixed in, and a manifest of what
//! was produced for `verify`.
//!
//! Each file is one part, readable alone:
//! - `generator.rs`: what to produce ([`ProduceOptions`]) and the run's records chunk by chunk,
//!   with retries, poison and `--out-of-order` ([`Generator`], [`plan`], [`plan_route`]);
//! - `manifest.rs`: what a run produced, for `verify` ([`Manifest`], [`RouteEvent`]);
//! - `seed_events.rs`: the seed's own events and the poison records;
//! - `shape.rs`: records of a route's shape ([`RouteShape`]), mapped as the loader maps them;
//! - `keys.rs`: the key pool, partition keys and the `newest_by` revisions per key;
//! - `ledger.rs`: where a run's revisions and counters start, above earlier runs' ones;
//! - `values.rs`: a value of each column type (decimals, times, dates, JSON);
//! - `set.rs`: `--set COLUMN=GEN`, the generators that replace a column's own;
//! - `rng.rs`: the seeded generator every choice comes from;
//! - `kinesis.rs`, `kafka.rs`, `writer.rs`: creating the stream or topic and sending to it, paced.

mod file;
mod generator;
mod kafka;
mod keys;
mod kinesis;
mod ledger;
mod manifest;
mod rng;
mod seed_events;
mod set;
mod shape;
#[cfg(test)]
mod test_routes;
mod values;
mod writer;

pub use file::records_of_file;
pub use generator::{plan, plan_route, Generator, ProduceOptions, OUT_OF_ORDER_WINDOW};
pub use kafka::{create_kafka, partition_of};
pub use kinesis::{
    create_kinesis, pack_kpl, send_kinesis, shard_hash_ranges, KinesisEntry,
    KINESIS_PUT_RECORDS_MAX, KPL_AGGREGATION_MAX_BYTES,
};
pub use ledger::{Counters, Ledger};
pub use manifest::{Manifest, RouteEvent};
pub use rng::Rng;
pub use seed_events::{event, poison};
pub use set::SET_VOCABULARY;
pub use shape::{RouteShape, ShapeOptions, OPTIONAL_PRESENT};
pub use writer::{Pace, StreamWriter};

/// One record to send: partition key and bytes.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub key: String,
    pub bytes: Vec<u8>,
}
