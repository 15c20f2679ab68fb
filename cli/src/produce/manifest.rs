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

impl Manifest {
    /// Several runs' manifests judged as one (`verify --manifest A --manifest B`): their
    /// events and poison together, so a key whose newest revision came from a later run and an
    /// index document only a later run made are judged against every run. The runs must have
    /// been made for the same route (or all for the seed events).
    pub fn merge(mut self, other: Manifest) -> Result<Manifest, String> {
        if self.route != other.route {
            return Err(format!(
                "the manifests were produced for different routes ({:?} and {:?})",
                self.route.as_deref().unwrap_or("the seed events"),
                other.route.as_deref().unwrap_or("the seed events")
            ));
        }
        if self.target != other.target {
            self.target = format!("{}, {}", self.target, other.target);
        }
        self.records_sent += other.records_sent;
        self.duplicates_sent += other.duplicates_sent;
        self.event_ids.extend(other.event_ids);
        self.poison_tokens.extend(other.poison_tokens);
        self.produced_at_ms.extend(other.produced_at_ms);
        self.route_events.extend(other.route_events);
        self.seed = None;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(route: Option<&str>, ids: &[&str]) -> Manifest {
        Manifest {
            target: "kinesis:orders".into(),
            records_sent: ids.len() as u64,
            event_ids: ids.iter().map(|s| s.to_string()).collect(),
            produced_at_ms: vec![1; ids.len()],
            route: route.map(str::to_owned),
            route_events: ids
                .iter()
                .map(|id| RouteEvent {
                    identity: vec![id.to_string()],
                    key: vec![id.to_string()],
                    newest_by: None,
                })
                .collect(),
            ..Manifest::default()
        }
    }

    #[test]
    fn two_runs_of_a_route_merge_and_runs_of_different_routes_do_not() {
        // Given two runs of one route
        let merged = run(Some("orders"), &["a", "b"])
            .merge(run(Some("orders"), &["c"]))
            .unwrap();
        // Then their events are judged together, each event's data by its position
        assert_eq!(merged.event_ids, vec!["a", "b", "c"]);
        assert_eq!(merged.route_events.len(), 3);
        assert_eq!(merged.produced_at_ms.len(), 3);
        assert_eq!(merged.records_sent, 3);
        // But runs of two routes are refused, naming both
        let e = run(Some("orders"), &["a"])
            .merge(run(None, &["b"]))
            .unwrap_err();
        assert!(e.contains("\"orders\"") && e.contains("seed events"), "{e}");
    }
}
