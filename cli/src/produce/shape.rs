//! Records that fit one route ([`RouteShape`]): which generator each column gets, where its
//! value goes in the record, and the check that every record maps through the route as the
//! loader maps it. The values themselves are made in `values.rs`, `keys.rs` and `set.rs`.

use streamload_core::route::{ColumnSource, Merge, Meta, Route, Routes};

use super::keys::{key_value, partition_key_of, Slot};
use super::set::{parse_set, Override};
use super::values::{counter_fits, digits_of};
use super::{Counters, Outgoing, Rng, RouteEvent};
use crate::CliError;

/// Share of records in which an optional column is present.
pub const OPTIONAL_PRESENT: f64 = 0.9;

/// How one column's value is chosen.
#[derive(Debug, Clone)]
pub(super) enum Gen {
    /// Metadata (`@…`) or the whole record: the stream gives it, not the record.
    Skip,
    /// The n-th part of the key, from the key pool.
    Key(usize),
    /// The `newest_by` column: strictly increasing per key.
    Revision,
    /// An identity part that is neither key nor `newest_by`: unique per record.
    Unique,
    /// A value of the column's type.
    Typed,
    Set(Override),
}

/// What a route's records look like beyond the route itself.
#[derive(Debug, Clone)]
pub struct ShapeOptions {
    /// Distinct keys (`--keys`).
    pub keys: u64,
    /// Records to make at most: bounds the counters, so a numeric counter's step is fixed.
    pub events: u64,
    /// `--set COLUMN=GEN`, as written.
    pub sets: Vec<String>,
    /// The counters earlier runs into the same stream used (their [`Ledger`](super::Ledger)):
    /// this run's revisions and record counters are numbered above them.
    pub after: Counters,
}

impl Default for ShapeOptions {
    fn default() -> Self {
        Self {
            keys: 100,
            events: 1000,
            sets: Vec::new(),
            after: Counters::default(),
        }
    }
}

/// Records that fit a compiled route.
///
/// # How values are chosen
///
/// Each column read from a JSON Pointer gets a value at that pointer (nested objects and
/// arrays are made as the pointers need them); metadata columns (`@key`, `@sequence`, …) come
/// from the stream. Every value fits the column's type and options, so no generated record is
/// poison (each is mapped through the route before it is sent, as the loader maps it):
///
/// * **key** columns: a pool of `--keys N` (default 100) distinct keys; each record picks one
///   at random. (On a keep-first route whose identity is its key, every record of a key would
///   be the same event, so there each record gets a key of its own instead, made as an
///   identity part below, and `--keys` does not apply.) Pool slot *i* is `"k-0042"`-style text (zero-padded to at least 4 digits),
///   `i + 1` for `integer`/`bigint`/`numeric`/`double`, a fixed UUID per slot for `uuid`, a
///   fixed instant (2026-01-01T00:00:00Z + *i* s) for `timestamptz`, 2020-01-01 + *i* days for
///   `date`. The key's values (joined with `|` when there are several) are the record's
///   partition key (Kinesis) or key (Kafka), so one key's records stay in order in one
///   shard/partition. A key column from `@key`/`@partition_key` is that partition key.
/// * the **`newest_by`** column: each key gets strictly increasing revisions in the order
///   they are made — `integer`/`bigint`/`double` 1, 2, 3…; `numeric` 1, 2, 3… at the column's
///   scale (`"2.00"`), or steps of one unit of the last decimal when whole numbers would not
///   fit the precision; `timestamptz` the run's start − 1 h + *r* seconds; `date` 2024-01-01 +
///   *r* days; `text` zero-padded counters (`"r-0000000003"`); `uuid` UUIDs ending in the
///   counter.
///   No two revisions of a key are equal. `--out-of-order` sends the records of each window
///   of [`OUT_OF_ORDER_WINDOW`](super::OUT_OF_ORDER_WINDOW) in a shuffled order, so later
///   revisions of a key often arrive before earlier ones; the set of records is the same.
/// * other **identity** parts: unique per record — a random UUID for `text`/`uuid`, a
///   counter for numbers, counter steps of the column's unit for `timestamptz`, days for `date`.
/// * anything else, by type: `text` `"<column>-<0..19>"`; `integer` 0–9,999; `bigint`
///   0–999,999,999; `double` 0.00–99.99; `numeric(p, s)` up to min(10^(p−s), 10^6) − 1 with
///   exactly `s` random decimals, written as a JSON string (`"123.45"`, exact) or, with scale
///   0, a number (`numeric` without precision: up to 999,999.99); `boolean` either;
///   `timestamptz` a random instant in the hour before the run started, as RFC 3339 text
///   (microseconds, `Z`) or, with `unit`, an epoch number in that unit; `date` within 30 days
///   of today; `uuid` a random version-4 UUID; `jsonb` a small object (`{"n":…,"tag":…,"ok":…}`,
///   or an array of such when another column reads an index inside it).
/// * **presence**: required, key, identity, `newest_by`, `event_time` and `--set` columns are
///   always present; other columns in 90% of the records ([`OPTIONAL_PRESENT`]).
/// * **`--set COLUMN=GEN`** replaces a column's generator: `const:<json>` that JSON value;
///   `range:<lo>..<hi>` a uniform number in the inclusive range (integers for integer
///   columns, the column's scale for `numeric(p, s)`, else as many decimals as the bounds);
///   `choice:a|b|c` one of the options (each read as JSON when it parses, else as text);
///   `seq` 1, 2, 3… (as text for `text`); `uuid` a random UUID; `now` the moment the record is
///   made (`timestamptz`, `date`). Key and `newest_by` columns cannot be set.
/// * **runs after runs**: the revisions *r* and the per-record counters continue above those
///   of the earlier runs into the same stream and route, which the [`Ledger`](super::Ledger)
///   keeps (`.streamload/produce/` in the working directory; none yet: from 1). A second run
///   over the same keys thus makes new identities and newer revisions than any earlier run,
///   so its records are loaded rather than dropped as duplicates, and win in the table. A
///   column that cannot hold the next run's counters (an `integer` past 2³¹ − 1, a
///   `numeric(p, s)` past its whole numbers) is refused before anything is sent, saying how
///   to start again from 1 (an empty table, the ledger deleted).
/// * with `--seed`, the same seed makes the same keys, choices, order and retries (times
///   follow the run's start; revisions and counters continue above earlier runs').
#[derive(Debug, Clone)]
pub struct RouteShape {
    pub(super) route: Route,
    pub(super) gens: Vec<Gen>,
    /// Columns present in every record.
    pub(super) always: Vec<bool>,
    /// Pointer columns in the order they are written: parents before the pointers inside them.
    pub(super) order: Vec<usize>,
    pub(super) slots: Vec<Slot>,
    /// Records made.
    pub(super) counter: u64,
    /// `seq` counters, per column.
    pub(super) seqs: Vec<u64>,
    /// Upper bound of every counter (records to make, or keys).
    pub(super) max_count: u64,
    /// Each record gets a key of its own (the identity is the key: a keep-first route).
    pub(super) fresh_keys: bool,
    pub(super) start_us: i64,
    /// The counters of earlier runs: this run's are numbered above them.
    pub(super) after: Counters,
}

impl RouteShape {
    /// The route `name` of a route file's TOML text (checked as the loader checks it).
    pub fn from_toml(text: &str, name: &str, options: &ShapeOptions) -> Result<Self, CliError> {
        let file: streamload_core::route::ConfigFile = toml::from_str(text)
            .map_err(|e| CliError::Usage(format!("route file: {}", e.to_string().trim())))?;
        let routes = Routes::compile(&file).map_err(|e| CliError::Usage(e.to_string()))?;
        let route = routes
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| CliError::Usage(format!("the route file has no route {name:?}")))?;
        Self::new(route.clone(), options)
    }

    /// Records of `route`.
    pub fn new(route: Route, options: &ShapeOptions) -> Result<Self, CliError> {
        let name = route.name.clone();
        let usage = |what: String| CliError::Usage(format!("route {name:?}: {what}"));
        if options.keys == 0 {
            return Err(CliError::Usage("--keys must be at least 1".into()));
        }
        let newest = match route.merge {
            Merge::NewestBy(i) => Some(i),
            Merge::KeepFirst => None,
        };
        let max_count = options.events.max(options.keys).max(1);
        let fresh_keys = route.identity.iter().all(|i| route.key.contains(i));
        let mut gens = Vec::with_capacity(route.columns.len());
        let mut always = Vec::with_capacity(route.columns.len());
        for (i, c) in route.columns.iter().enumerate() {
            let key_part = route.key.iter().position(|k| *k == i);
            let gen = match (&c.source, key_part) {
                (ColumnSource::Meta(Meta::Key | Meta::PartitionKey), _) => Gen::Skip,
                (ColumnSource::Meta(m), Some(_)) => {
                    return Err(usage(format!(
                        "key column {:?} comes from stream metadata ({m:?}); produce cannot choose it",
                        c.name
                    )))
                }
                (ColumnSource::Meta(m), None) if route.identity.contains(&i) => {
                    return Err(usage(format!(
                        "identity column {:?} comes from stream metadata ({m:?}); produce cannot know it ahead",
                        c.name
                    )))
                }
                (ColumnSource::Meta(_), None) => Gen::Skip,
                (ColumnSource::Pointer(p), _) if p.is_empty() => Gen::Skip,
                (ColumnSource::Pointer(_), Some(k)) => Gen::Key(k),
                _ if newest == Some(i) => Gen::Revision,
                _ if route.identity.contains(&i) => Gen::Unique,
                _ => Gen::Typed,
            };
            if matches!(gen, Gen::Revision | Gen::Unique) || fresh_keys && key_part.is_some() {
                let after = match gen {
                    Gen::Revision => options.after.revision,
                    _ => options.after.record,
                };
                counter_fits(c.ty, after, max_count, matches!(gen, Gen::Revision))
                    .map_err(|why| usage(format!("column {:?} {why}", c.name)))?;
            }
            always.push(
                c.required
                    || !matches!(gen, Gen::Typed)
                    || route.event_time == Some(i)
                    || route.identity.contains(&i),
            );
            gens.push(gen);
        }
        for spec in &options.sets {
            let (i, o) = parse_set(&route, &gens, spec)?;
            gens[i] = Gen::Set(o);
            always[i] = true;
        }
        // Parents before the pointers inside them, so a parent never overwrites its children.
        let mut order: Vec<usize> = (0..route.columns.len())
            .filter(|i| !matches!(gens[*i], Gen::Skip))
            .collect();
        let depth = |i: &usize| match &route.columns[*i].source {
            ColumnSource::Pointer(p) => p.matches('/').count(),
            ColumnSource::Meta(_) => 0,
        };
        order.sort_by_key(depth);
        let width = digits_of(options.keys - 1).max(4);
        let mut slots = Vec::with_capacity(options.keys as usize);
        for s in 0..options.keys {
            let key: Vec<serde_json::Value> = route
                .key
                .iter()
                .map(|&i| key_value(route.columns[i].ty, s, width, options.keys))
                .collect();
            let partition_key = partition_key_of(&key);
            slots.push(Slot {
                key,
                partition_key,
                revisions: 0,
            });
        }
        let start_us = chrono::Utc::now().timestamp_micros();
        let shape = Self {
            fresh_keys,
            seqs: vec![0; route.columns.len()],
            route,
            gens,
            always,
            order,
            slots,
            counter: 0,
            max_count,
            start_us,
            after: options.after,
        };
        // Made before anything is sent: a shape that cannot make loadable records says so now.
        let mut trial = shape.clone();
        let mut rng = Rng::from_seed(7);
        for _ in 0..50 {
            trial.record(&mut rng)?;
        }
        Ok(shape)
    }

    /// The compiled route.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// The counters earlier runs used, which this run's start above.
    pub fn after(&self) -> Counters {
        self.after
    }

    /// The counters used so far, earlier runs' included: what the next run starts above.
    pub fn used(&self) -> Counters {
        let revisions = self.slots.iter().map(|s| s.revisions).max().unwrap_or(0);
        Counters {
            revision: self.after.revision + revisions,
            record: self.after.record + self.counter,
        }
    }

    fn set(doc: &mut serde_json::Value, pointer: &str, value: serde_json::Value) {
        let parts: Vec<String> = pointer
            .split('/')
            .skip(1)
            .map(|p| p.replace("~1", "/").replace("~0", "~"))
            .collect();
        let mut cur = doc;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let index = part
                .parse::<usize>()
                .ok()
                .filter(|_| !part.starts_with('+'));
            if let (Some(n), true) = (index, cur.is_array()) {
                let serde_json::Value::Array(list) = cur else {
                    return;
                };
                while list.len() <= n {
                    list.push(serde_json::json!({}));
                }
                if last {
                    list[n] = value;
                    return;
                }
                cur = &mut list[n];
                continue;
            }
            if !cur.is_object() {
                *cur = serde_json::json!({});
            }
            let Some(map) = cur.as_object_mut() else {
                return;
            };
            if last {
                map.insert(part.clone(), value);
                return;
            }
            let next_is_index = parts[i + 1].bytes().all(|b| b.is_ascii_digit());
            cur = map.entry(part.clone()).or_insert_with(|| {
                if next_is_index {
                    serde_json::json!([])
                } else {
                    serde_json::json!({})
                }
            });
        }
    }

    /// One record: its id (the loader's identity), what the manifest keeps of it, the record.
    pub fn record(&mut self, rng: &mut Rng) -> Result<(String, RouteEvent, Outgoing), CliError> {
        self.counter += 1;
        let slot = rng.below(self.slots.len() as u64) as usize;
        self.slots[slot].revisions += 1;
        let revision = self.slots[slot].revisions;
        // Where every record of a key is the same event (a keep-first route whose identity is
        // its key), each record gets a key of its own, as the seed events do.
        let fresh = self.fresh_keys.then(|| {
            let key: Vec<serde_json::Value> = self
                .route
                .key
                .iter()
                .map(|&i| match self.route.columns[i].source {
                    ColumnSource::Meta(_) => rng.uuid().into(),
                    ColumnSource::Pointer(_) => {
                        self.unique(self.route.columns[i].ty, self.counter, rng)
                    }
                })
                .collect();
            let partition_key = partition_key_of(&key);
            Slot {
                key,
                partition_key,
                revisions: 1,
            }
        });
        let slot = match &fresh {
            Some(own) => own,
            None => &self.slots[slot],
        }
        .clone();
        let mut doc = serde_json::json!({});
        for at in 0..self.order.len() {
            let i = self.order[at];
            if !self.always[i] && !rng.chance(OPTIONAL_PRESENT) {
                continue;
            }
            let ColumnSource::Pointer(pointer) = &self.route.columns[i].source else {
                continue;
            };
            let pointer = pointer.clone();
            let ty = self.route.columns[i].ty;
            let value = match self.gens[i].clone() {
                Gen::Skip => continue,
                Gen::Key(k) => slot.key[k].clone(),
                Gen::Revision => self.revision(ty, revision),
                Gen::Unique => self.unique(ty, self.counter, rng),
                Gen::Typed => self.typed(i, rng),
                Gen::Set(o) => self.set_value(&o, i, rng),
            };
            Self::set(&mut doc, &pointer, value);
        }
        let bytes = doc.to_string().into_bytes();
        let key = slot.partition_key;
        let (id, event) = self.judge(&bytes, &key)?;
        Ok((id, event, Outgoing { key, bytes }))
    }

    /// Maps a record as the loader will: its identity, or why it would be poison.
    fn judge(&self, bytes: &[u8], key: &str) -> Result<(String, RouteEvent), CliError> {
        use streamload_core::record::{Origin, SourceUnit};
        let record = streamload_core::SourceRecord {
            unit: std::sync::Arc::new(SourceUnit {
                label: "produce/0".into(),
                topic_partition: None,
            }),
            position: streamload_core::Position::from_offset(self.counter),
            data: Some(bytes::Bytes::copy_from_slice(bytes)),
            key: Some(key.to_owned()),
            headers_json: None,
            arrival_ms: Some(chrono::Utc::now().timestamp_millis()),
            undecodable: None,
            origin: Origin::Kinesis {
                stream_arn: "arn:aws:kinesis:us-east-1:000000000000:stream/produce".into(),
                shard_id: "shardId-000000000000".into(),
                approximate_arrival: None,
            },
        };
        let mapped = self.route.map(&record, usize::MAX).map_err(|p| {
            CliError::Usage(format!(
                "route {:?}: a generated record would be poison ({}); check --set",
                self.route.name, p.reason
            ))
        })?;
        let text = |i: usize| mapped.values[i].identity_text().into_owned();
        let id = mapped
            .claim_key
            .strip_prefix(self.route.claim_prefix.as_str())
            .unwrap_or(&mapped.claim_key)
            .to_owned();
        let newest_by = match self.route.merge {
            Merge::NewestBy(i) => Some(text(i)),
            Merge::KeepFirst => None,
        };
        Ok((
            id,
            RouteEvent {
                identity: self.route.identity.iter().map(|&i| text(i)).collect(),
                key: self.route.key.iter().map(|&i| text(i)).collect(),
                newest_by,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::produce::test_routes::{doc, shape};
    use crate::produce::ShapeOptions;

    #[test]
    fn the_orders_example_gets_its_nested_shape() {
        // Given the orders route of the example
        let text = include_str!("../../../examples/orders/streamload.toml");
        let mut shape = shape(text, "orders", 100, &[]).unwrap();
        let mut rng = Rng::from_seed(8);
        // When a record is made
        let (id, event, rec) = shape.record(&mut rng).unwrap();
        let d = doc(&rec);
        // Then the identity is (order_id, revision) and nested pointers hold their types
        assert_eq!(
            id,
            serde_json::to_string(&[d["order_id"].as_str().unwrap(), &d["revision"].to_string()])
                .unwrap()
        );
        assert_eq!(event.newest_by.as_deref(), Some("1"));
        assert!(d["revision"].is_u64());
        assert!(d["placed_at"].is_i64(), "unit = ms: epoch milliseconds");
        assert!(d["items"].is_array() || d["items"].is_null(), "{d}");
        assert!(RouteShape::from_toml(text, "absent", &ShapeOptions::default()).is_err());
    }
}
