//! A run's records, chunk by chunk: which record is poison, which is sent again (a producer
//! retry), the `--out-of-order` shuffle, and the manifest kept as they are handed out.

use std::collections::VecDeque;

use super::rng::splitmix64;
use super::{event, poison, Counters, Manifest, Outgoing, Rng, RouteEvent, RouteShape};
use crate::{CliError, Target};

/// How many records `--out-of-order` shuffles at a time: within such a window the records (and
/// so the revisions of each key) are sent in a random order; windows follow each other.
pub const OUT_OF_ORDER_WINDOW: usize = 1000;

/// What to produce.
#[derive(Debug, Clone, Default)]
pub struct ProduceOptions {
    pub events: u64,
    /// Records per second, or as fast as possible.
    pub rate: Option<f64>,
    /// Probability that an event is sent again (a producer retry).
    pub duplicates: f64,
    /// Probability that a record is poison instead of an event.
    pub poison: f64,
    pub users: u64,
    pub create: bool,
    pub partitions: u32,
    /// The seed of every choice (drawn when absent, and kept in the manifest).
    pub seed: Option<u64>,
    /// Shuffle the sending order within windows of [`OUT_OF_ORDER_WINDOW`] records.
    pub out_of_order: bool,
    /// Kinesis: send the records packed into KPL aggregates.
    pub kpl: bool,
}

/// A record made but not sent yet.
enum Unit {
    Poison(String, Outgoing),
    Event(String, Option<RouteEvent>, Outgoing),
}

/// Makes a run's records chunk by chunk, so each event's `created_at` is the moment it is
/// sent (the demo's end-to-end latency starts there); a producer retry follows its original.
/// With `out_of_order`, records are made a window at a time and sent shuffled.
pub struct Generator {
    rng: Rng,
    options: ProduceOptions,
    poisons: u64,
    /// Records not sent yet (not counting retries).
    left: u64,
    /// Records not made yet.
    to_make: u64,
    pending: VecDeque<Unit>,
    shape: Option<RouteShape>,
    pub manifest: Manifest,
}

impl Generator {
    pub fn new(options: &ProduceOptions, target: &Target) -> Self {
        let seed = options
            .seed
            .unwrap_or_else(|| Rng::seeded().next_u64() % 1_000_000_000);
        Self {
            rng: Rng::from_seed(splitmix64(seed)),
            options: options.clone(),
            poisons: 0,
            left: options.events,
            to_make: options.events,
            pending: VecDeque::new(),
            shape: None,
            manifest: Manifest {
                target: target.to_string(),
                seed: Some(seed),
                ..Manifest::default()
            },
        }
    }

    /// Makes records of `shape` instead of the seed events.
    pub fn with_shape(mut self, shape: RouteShape) -> Self {
        self.manifest.route = Some(shape.route.name.clone());
        self.manifest.after = Some(shape.after());
        self.shape = Some(shape);
        self
    }

    /// With a route, the counters used so far, earlier runs' included: what the ledger keeps.
    pub fn used(&self) -> Option<Counters> {
        self.shape.as_ref().map(RouteShape::used)
    }

    /// Records left to make (not counting retries).
    pub fn left(&self) -> u64 {
        self.left
    }

    /// Makes the next window of records (one record unless out of order).
    fn refill(&mut self) -> Result<(), CliError> {
        let window = if self.options.out_of_order {
            self.to_make.min(OUT_OF_ORDER_WINDOW as u64)
        } else {
            self.to_make.min(1)
        };
        self.to_make -= window;
        let mut made = Vec::with_capacity(window as usize);
        for _ in 0..window {
            if self.rng.chance(self.options.poison) {
                let (token, rec) = poison(&mut self.rng, self.poisons);
                self.poisons += 1;
                made.push(Unit::Poison(token, rec));
                continue;
            }
            made.push(match self.shape.as_mut() {
                Some(shape) => {
                    let (id, event, rec) = shape.record(&mut self.rng)?;
                    Unit::Event(id, Some(event), rec)
                }
                None => {
                    let (id, rec) = event(&mut self.rng, self.options.users);
                    Unit::Event(id, None, rec)
                }
            });
        }
        if self.options.out_of_order {
            for i in (1..made.len()).rev() {
                made.swap(i, self.rng.below(i as u64 + 1) as usize);
            }
        }
        self.pending.extend(made);
        Ok(())
    }

    /// The next `n` records (plus their retries).
    pub fn chunk(&mut self, n: u64) -> Result<Vec<Outgoing>, CliError> {
        let n = n.min(self.left);
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            if self.pending.is_empty() {
                self.refill()?;
            }
            let Some(unit) = self.pending.pop_front() else {
                break;
            };
            self.left -= 1;
            match unit {
                Unit::Poison(token, rec) => {
                    self.manifest.poison_tokens.push(token);
                    out.push(rec);
                }
                Unit::Event(id, event, rec) => {
                    self.manifest.event_ids.push(id);
                    self.manifest.route_events.extend(event);
                    self.manifest
                        .produced_at_ms
                        .push(chrono::Utc::now().timestamp_millis());
                    if self.rng.chance(self.options.duplicates) {
                        out.push(rec.clone());
                        self.manifest.duplicates_sent += 1;
                    }
                    out.push(rec);
                }
            }
        }
        self.manifest.records_sent += out.len() as u64;
        Ok(out)
    }
}

/// The records of a whole run at once, in sending order, and the manifest.
pub fn plan(options: &ProduceOptions, target: &Target) -> (Vec<Outgoing>, Manifest) {
    let mut g = Generator::new(options, target);
    // The seed events cannot fail to be made.
    let records = g.chunk(options.events).unwrap_or_default();
    (records, g.manifest)
}

/// [`plan`] for records of a route's shape.
pub fn plan_route(
    options: &ProduceOptions,
    target: &Target,
    shape: RouteShape,
) -> Result<(Vec<Outgoing>, Manifest), CliError> {
    let mut g = Generator::new(options, target).with_shape(shape);
    let records = g.chunk(options.events)?;
    Ok((records, g.manifest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::produce::test_routes::{sensor_route, shape};
    use std::collections::HashMap;

    #[test]
    fn a_plan_holds_each_event_once_plus_its_retries_and_the_poison() {
        // Given 2,000 records with 10% duplicates and 5% poison
        let options = ProduceOptions {
            events: 2_000,
            rate: None,
            duplicates: 0.10,
            poison: 0.05,
            users: 50,
            create: false,
            partitions: 1,
            ..ProduceOptions::default()
        };
        let (records, manifest) = plan(&options, &Target::Kinesis("s".into()));
        // Then the counts add up and the shares are near the asked ones
        let ids: std::collections::HashSet<_> = manifest.event_ids.iter().collect();
        assert_eq!(ids.len(), manifest.event_ids.len(), "event ids are unique");
        assert_eq!(
            manifest.event_ids.len() + manifest.poison_tokens.len(),
            2_000
        );
        assert_eq!(records.len() as u64, 2_000 + manifest.duplicates_sent);
        assert!(
            (100..300).contains(&manifest.duplicates_sent),
            "{}",
            manifest.duplicates_sent
        );
        assert!((40..170).contains(&manifest.poison_tokens.len()));
        // and each poison record carries its token
        let poison_count = records
            .iter()
            .filter(|r| {
                manifest
                    .poison_tokens
                    .iter()
                    .any(|t| String::from_utf8_lossy(&r.bytes).contains(t.as_str()))
            })
            .count();
        assert_eq!(poison_count, manifest.poison_tokens.len());
    }

    fn route_options(events: u64, seed: u64, out_of_order: bool) -> ProduceOptions {
        ProduceOptions {
            events,
            duplicates: 0.2,
            seed: Some(seed),
            out_of_order,
            ..ProduceOptions::default()
        }
    }

    #[test]
    fn out_of_order_shuffles_revisions_but_sends_the_same_set() {
        let route = sensor_route("text", Some(("rev", "integer")));
        let target = Target::Kinesis("s".into());
        let revisions = |out_of_order: bool| {
            let shape = shape(&route, "sensors", 20, &[]).unwrap();
            let (records, m) =
                plan_route(&route_options(2_000, 9, out_of_order), &target, shape).unwrap();
            // Producer retries are the same bytes again, right after the original
            assert_eq!(records.len() as u64, 2_000 + m.duplicates_sent);
            let repeats = records
                .windows(2)
                .filter(|w| w[0].bytes == w[1].bytes)
                .count();
            assert_eq!(repeats as u64, m.duplicates_sent);
            let mut by_key: HashMap<String, Vec<i64>> = HashMap::new();
            for e in &m.route_events {
                by_key
                    .entry(e.key[0].clone())
                    .or_default()
                    .push(e.newest_by.as_ref().unwrap().parse().unwrap());
            }
            (by_key, m)
        };
        // Given the same route sent in order and out of order
        let (in_order, _) = revisions(false);
        let (shuffled, m) = revisions(true);
        // Then in order, each key's revisions are sent as 1, 2, 3, …
        for revs in in_order.values() {
            assert_eq!(*revs, (1..=revs.len() as i64).collect::<Vec<_>>());
        }
        // and out of order, each key still gets 1..=n exactly once, but most keys not in order
        let mut unordered = 0;
        for revs in shuffled.values() {
            let mut sorted = revs.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (1..=revs.len() as i64).collect::<Vec<_>>());
            unordered += usize::from(sorted != *revs);
        }
        assert!(unordered >= 15, "{unordered} of 20 keys out of order");
        assert_eq!(m.route.as_deref(), Some("sensors"));
        assert_eq!(m.route_events.len(), m.event_ids.len());
        // And the same seed makes the same run
        let again = plan_route(
            &route_options(2_000, 9, true),
            &target,
            shape(&route, "sensors", 20, &[]).unwrap(),
        )
        .unwrap()
        .1;
        assert_eq!(again.route_events, m.route_events);
    }
}
