//! The manifest: what a `produce` run sent, written as JSON for `verify` to judge the load
//! by. Kept apart so its format (documented in docs/local.md) is read in one place.

use serde::{Deserialize, Serialize};

use super::Counters;

/// What a run produced: every valid event once (its retries are extra copies of the same
/// bytes) and each poison record's token (the text `verify` finds in its dead letter).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub target: String,
    pub records_sent: u64,
    pub duplicates_sent: u64,
    pub event_ids: Vec<String>,
    pub poison_tokens: Vec<String>,
    /// Production time of each valid event (ms), by position in `event_ids`.
    pub produced_at_ms: Vec<i64>,
    /// The route the records were made for (`--route`); absent for the seed events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The seed of the run's choices (`--seed`, or the one drawn): the same seed makes the
    /// same records in the same order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// With a route: each valid event's identity, key and newest_by value, by position in
    /// `event_ids` (whose entries are then the loader's identity text: one part as its text,
    /// several as a JSON array).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route_events: Vec<RouteEvent>,
    /// With a route: the counters earlier runs into the stream had used (from the ledger);
    /// this run's revisions and record counters are numbered above them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Counters>,
}

/// What `verify` needs to know of one produced record of a route: the text of each identity
/// part, of each key part and of the `newest_by` value, each as the loader forms it (the
/// column's value in a stable text form: integers and decimals canonical, `timestamptz` as
/// microseconds since the epoch, `date` as days since 1970-01-01, UUIDs lowercase).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RouteEvent {
    pub identity: Vec<String>,
    pub key: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_by: Option<String>,
}
