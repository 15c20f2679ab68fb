//! The key pool of a route's records — each slot's key values and partition key — and the
//! strictly increasing `newest_by` revisions each key gets.

use streamload_core::route::ColumnType;

use super::rng::{splitmix64, uuid_of};
use super::values::{
    date_json, decimal_json, pow10, time_json, DAYS_2020_01_01, DAYS_2024_01_01,
    REVISION_TEXT_DIGITS, US_2026_01_01,
};
use super::RouteShape;

/// One key of the pool.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    /// The key's values, one per key column.
    pub(super) key: Vec<serde_json::Value>,
    pub(super) partition_key: String,
    /// Revisions made so far.
    pub(super) revisions: u64,
}

/// The partition key (Kinesis) or key (Kafka) of a record with these key values: their texts,
/// joined with `|` when there are several.
pub(super) fn partition_key_of(key: &[serde_json::Value]) -> String {
    key.iter()
        .map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// Pool slot `slot`'s value of a key column of type `ty`.
pub(super) fn key_value(ty: ColumnType, slot: u64, width: usize, keys: u64) -> serde_json::Value {
    let n = slot + 1;
    match ty {
        ColumnType::Integer | ColumnType::Bigint => n.into(),
        ColumnType::Double => (n as f64).into(),
        ColumnType::Numeric { precision, scale } => {
            let s = u32::from(scale.unwrap_or(0));
            let whole = precision.is_none_or(|p| u128::from(keys) < pow10(u32::from(p) - s));
            let unscaled = if whole {
                i128::from(n) * pow10(s) as i128
            } else {
                i128::from(n)
            };
            decimal_json(unscaled, if precision.is_some() { s } else { 0 })
        }
        ColumnType::Uuid => uuid_of(splitmix64(n), splitmix64(n ^ 0x5eed_5eed)).into(),
        ColumnType::Timestamptz { unit } => time_json(unit, US_2026_01_01 + n as i64 * 1_000_000),
        ColumnType::Date => date_json(DAYS_2020_01_01 + slot as i64),
        ColumnType::Boolean => (slot % 2 == 1).into(),
        _ => format!("k-{slot:0width$}").into(),
    }
}

impl RouteShape {
    /// A key's `r`-th revision of this run: numbered above the revisions of earlier runs.
    pub(super) fn revision(&self, ty: ColumnType, r: u64) -> serde_json::Value {
        let top = self.after.revision + self.max_count;
        let r = self.after.revision + r;
        match ty {
            ColumnType::Integer | ColumnType::Bigint => r.into(),
            ColumnType::Double => (r as f64).into(),
            ColumnType::Numeric { .. } => self.numeric_count(ty, r, top),
            ColumnType::Timestamptz { unit } => {
                time_json(unit, self.start_us - 3_600_000_000 + r as i64 * 1_000_000)
            }
            ColumnType::Date => date_json(DAYS_2024_01_01 + r as i64),
            ColumnType::Uuid => format!("00000000-0000-4000-8000-{r:012x}").into(),
            _ => format!("r-{r:0width$}", width = REVISION_TEXT_DIGITS as usize).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::produce::test_routes::{doc, sensor_route, shape};
    use crate::produce::{Counters, Ledger, Rng, RouteEvent, RouteShape, ShapeOptions};
    use crate::CliError;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn a_keep_first_route_whose_identity_is_its_key_gets_a_key_per_record() {
        // Given a keep-first route whose identity is its key (text or integer)
        for key_type in ["text", "integer"] {
            let mut shape = shape(&sensor_route(key_type, None), "sensors", 10, &[]).unwrap();
            let mut rng = Rng::from_seed(11);
            // When 1,000 records are made
            let mut ids = std::collections::HashSet::new();
            for _ in 0..1_000 {
                let (id, event, rec) = shape.record(&mut rng).unwrap();
                // Then each has a key of its own (not one of 10), its partition key
                assert_eq!(rec.key, event.key[0]);
                assert!(ids.insert(id), "{key_type}");
            }
        }
    }

    #[test]
    fn keys_come_from_a_pool_and_are_the_partition_key() {
        let text = include_str!("../../../examples/orders/streamload.toml");
        for (key_type, sample) in [("text", "k-0042"), ("integer", "43"), ("uuid", "")] {
            // Given a route keyed by a column of `key_type` and a pool of 100 keys
            let route = sensor_route(key_type, Some(("rev", "bigint")));
            let mut shape = shape(&route, "sensors", 100, &[]).unwrap();
            let mut rng = Rng::from_seed(3);
            let mut keys = std::collections::HashSet::new();
            for _ in 0..2_000 {
                let (_, event, rec) = shape.record(&mut rng).unwrap();
                let device = match &doc(&rec)["device"] {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                // Then the partition key is the record's key
                assert_eq!(rec.key, device);
                assert_eq!(event.key, vec![device.clone()]);
                keys.insert(device);
            }
            // and there are exactly 100 distinct keys, of the documented form
            assert_eq!(keys.len(), 100, "{key_type}");
            if !sample.is_empty() {
                assert!(keys.contains(sample), "{key_type}: {keys:?}");
            }
        }
        // And on a route whose identity is (key, revision), the partition key is the key only
        let mut orders = shape(text, "orders", 10, &[]).unwrap();
        let mut rng = Rng::from_seed(4);
        for _ in 0..100 {
            let (id, event, rec) = orders.record(&mut rng).unwrap();
            assert_eq!(rec.key, doc(&rec)["order_id"].as_str().unwrap());
            assert_ne!(rec.key, id);
            assert_eq!(event.identity.len(), 2);
        }
    }

    /// Orders the text of two newest_by values of type `ty` as PostgreSQL would.
    fn newer(ty: &str, a: &str, b: &str) -> bool {
        match ty {
            "text" | "uuid" => a > b,
            _ => a.parse::<f64>().unwrap() > b.parse::<f64>().unwrap(),
        }
    }

    #[test]
    fn revisions_strictly_increase_per_key_in_generation_order() {
        for ty in [
            "integer",
            "bigint",
            "timestamptz",
            "numeric",
            "date",
            "text",
        ] {
            // Given a newest_by route of each orderable type, few keys, many records
            let route = sensor_route("text", Some(("rev", ty)));
            let mut shape = shape(&route, "sensors", 7, &[]).unwrap();
            let mut rng = Rng::from_seed(5);
            let mut last: HashMap<Vec<String>, String> = HashMap::new();
            let mut ids = std::collections::HashSet::new();
            for _ in 0..3_000 {
                let (id, event, _) = shape.record(&mut rng).unwrap();
                let rev = event.newest_by.clone().unwrap();
                // Then each key's revisions strictly increase, in the order they are made
                if let Some(prev) = last.insert(event.key.clone(), rev.clone()) {
                    assert!(newer(ty, &rev, &prev), "{ty}: {prev} then {rev}");
                }
                // and the identity (key, revision) is unique
                assert!(ids.insert(id), "{ty}");
            }
        }
    }

    /// A run of `events` records over 7 keys, after `after`: its events and what it used.
    fn run(
        route: &str,
        events: u64,
        after: Counters,
    ) -> Result<(Vec<RouteEvent>, Counters), CliError> {
        let options = ShapeOptions {
            keys: 7,
            events,
            after,
            ..ShapeOptions::default()
        };
        let mut shape = RouteShape::from_toml(route, "sensors", &options)?;
        let mut rng = Rng::from_seed(5);
        let mut made = Vec::new();
        for _ in 0..events {
            made.push(shape.record(&mut rng)?.1);
        }
        Ok((made, shape.used()))
    }

    #[test]
    fn a_second_run_numbers_its_revisions_and_counters_above_the_first_runs() {
        for ty in [
            "integer",
            "bigint",
            "double",
            "timestamptz",
            "numeric",
            "date",
            "text",
            "uuid",
        ] {
            // Given a newest_by route of each orderable type, and a first run over 7 keys
            let route = sensor_route("text", Some(("rev", ty)));
            let (first, used) = run(&route, 300, Counters::default()).unwrap();
            // When a second run of the same seed starts after what the first used
            let (second, _) = run(&route, 300, used).unwrap();
            // Then every revision of the second run is newer than every one of the first, key
            // by key, so no identity (key, revision) repeats
            let mut newest: HashMap<&[String], &str> = HashMap::new();
            for e in &first {
                let r = e.newest_by.as_deref().unwrap();
                let n = newest.entry(&e.key).or_insert(r);
                if newer(ty, r, n) {
                    *n = r;
                }
            }
            for e in &second {
                let r = e.newest_by.as_deref().unwrap();
                assert!(newer(ty, r, newest[e.key.as_slice()]), "{ty}: {r}");
            }
        }
        // And a keep-first route's own integer keys are new in the second run too
        let route = sensor_route("integer", None);
        let (first, used) = run(&route, 300, Counters::default()).unwrap();
        let (second, _) = run(&route, 300, used).unwrap();
        let ids: HashSet<_> = first.iter().map(|e| &e.identity).collect();
        assert!(second.iter().all(|e| !ids.contains(&e.identity)));
        assert_eq!(used.record, 300);
    }

    #[test]
    fn a_run_that_would_count_past_its_column_says_so_and_names_the_ledger() {
        // Given earlier runs that counted close to an integer's or a numeric(5, 2)'s end
        let cases = [
            (
                "integer",
                i32::MAX as u64 - 100,
                "(integer) cannot count to",
            ),
            ("numeric", 900, "holds whole numbers below 1000"),
        ];
        for (ty, revision, says) in cases {
            let route = sensor_route("text", Some(("rev", ty)));
            let after = Counters {
                revision,
                record: 0,
            };
            // When a run of 300 records would go past it
            let err = match run(&route, 300, after) {
                Ok(_) => panic!("{ty}: a run past the column was made"),
                Err(e) => e.to_string(),
            };
            // Then it is refused, naming the column, the reason and how to start again
            assert!(err.contains("\"rev\"") && err.contains(says), "{err}");
            assert!(err.contains(Ledger::DIR), "{err}");
        }
    }
}
