//! `streamload produce`: the seed's producer events — page_view, click, purchase, signup,
//! logout; `user_id` from a pool and used as the partition key; a fresh UUID `event_id`;
//! `created_at` now (UTC); a payload with page, session_id and user_agent — or, with a route
//! file, records that fit one route ([`RouteShape`]: how values are chosen is told there) —
//! with producer retries (the same bytes again) and poison mixed in, and a manifest of what
//! was produced for `verify`.

use std::time::{Duration, Instant};

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use streamload_core::route::{ColumnSource, ColumnType, EpochUnit, Merge, Meta, Route, Routes};

use crate::{CliError, Target};

const EVENT_TYPES: [&str; 5] = ["page_view", "click", "purchase", "signup", "logout"];
const PAGES: [&str; 6] = [
    "/",
    "/search",
    "/product/42",
    "/cart",
    "/checkout",
    "/account",
];
const AGENTS: [&str; 3] = [
    "Mozilla/5.0 (X11; Linux x86_64)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5)",
    "streamload-produce/1",
];

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
}

/// A small, fast generator (xorshift64*): test data needs variety, not secrecy.
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Self(t ^ (u64::from(std::process::id()) << 32) | 1)
    }

    /// A generator that repeats its sequence: benches feed every variant the same records.
    pub fn from_seed(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// A version-4 UUID.
    pub fn uuid(&mut self) -> String {
        let (a, b) = (self.next_u64(), self.next_u64());
        let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
        let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }
}

/// One record to send: partition key and bytes.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub key: String,
    pub bytes: Vec<u8>,
}

/// A seed producer event.
pub fn event(rng: &mut Rng, users: u64) -> (String, Outgoing) {
    let event_id = rng.uuid();
    let user = format!("user-{}", rng.below(users));
    let doc = serde_json::json!({
        "event_id": event_id,
        "user_id": user,
        "event_type": EVENT_TYPES[rng.below(5) as usize],
        "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "payload": {
            "page": PAGES[rng.below(PAGES.len() as u64) as usize],
            "session_id": rng.uuid(),
            "user_agent": AGENTS[rng.below(AGENTS.len() as u64) as usize],
        },
    });
    (
        event_id,
        Outgoing {
            key: user,
            bytes: doc.to_string().into_bytes(),
        },
    )
}

/// A poison record carrying `token`: alternately not JSON and JSON without `event_id`.
pub fn poison(rng: &mut Rng, n: u64) -> (String, Outgoing) {
    let token = format!("poison-{}", rng.uuid());
    let bytes = if n % 2 == 0 {
        format!("{{not json {token}").into_bytes()
    } else {
        serde_json::json!({"user_id": "user-0", "event_type": "click", "note": token})
            .to_string()
            .into_bytes()
    };
    (
        token,
        Outgoing {
            key: "poison".into(),
            bytes,
        },
    )
}

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
        self.shape = Some(shape);
        self
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

/// Paces sending to `rate` records a second.
pub struct Pace {
    start: Instant,
    rate: Option<f64>,
}

impl Pace {
    pub fn new(rate: Option<f64>) -> Self {
        Self {
            start: Instant::now(),
            rate,
        }
    }

    pub async fn wait_for(&self, sent: u64) {
        if let Some(rate) = self.rate.filter(|r| *r > 0.0) {
            let due = Duration::from_secs_f64(sent as f64 / rate);
            let elapsed = self.start.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
    }
}

/// Kinesis PutRecords: at most 500 records per call.
pub const KINESIS_PUT_RECORDS_MAX: usize = 500;

/// Sends up to [`KINESIS_PUT_RECORDS_MAX`] records to Kinesis, retrying the records a
/// PutRecords answer reports as failed.
pub async fn send_kinesis(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    records: &[Outgoing],
) -> Result<(), CliError> {
    let mut todo: Vec<&Outgoing> = records.iter().collect();
    for _ in 0..10 {
        if todo.is_empty() {
            return Ok(());
        }
        let entries: Vec<_> = todo
            .iter()
            .filter_map(|r| {
                aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                    .partition_key(&r.key)
                    .data(aws_sdk_kinesis::primitives::Blob::new(r.bytes.clone()))
                    .build()
                    .ok()
            })
            .collect();
        let out = client
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries))
            .send()
            .await
            .map_err(|e| CliError::aws("kinesis PutRecords", &e))?;
        if out.failed_record_count.unwrap_or(0) == 0 {
            return Ok(());
        }
        todo = todo
            .into_iter()
            .zip(out.records)
            .filter(|(_, r)| r.error_code.is_some())
            .map(|(o, _)| o)
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(CliError::Usage(format!(
        "kinesis PutRecords: {} records still refused after 10 attempts",
        todo.len()
    )))
}

/// Creates the stream (one shard per `partitions`) and waits until it is active.
pub async fn create_kinesis(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    shards: u32,
) -> Result<(), CliError> {
    let exists = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .is_ok();
    if !exists {
        let created = client
            .create_stream()
            .stream_name(stream)
            .shard_count(shards as i32)
            .send()
            .await;
        match created {
            Ok(_) => {}
            // Made meanwhile — by another producer, or by an attempt of ours whose answer was
            // lost and which the SDK retried: either way the stream is there; wait for it below.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) => {}
            Err(e) => return Err(CliError::aws("kinesis CreateStream", &e)),
        }
    }
    for _ in 0..100 {
        let s = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .map_err(|e| CliError::aws("kinesis DescribeStreamSummary", &e))?;
        if s.stream_description_summary.map(|d| d.stream_status)
            == Some(aws_sdk_kinesis::types::StreamStatus::Active)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(CliError::Usage(format!(
        "stream {stream} did not become ACTIVE"
    )))
}

/// Creates the topic through the broker's CreateTopics API, or its own tool (tansu) when
/// STREAMLOAD_TANSU names it and the API is refused.
pub async fn create_kafka(
    client: &rskafka::client::Client,
    broker: &str,
    topic: &str,
    partitions: u32,
) -> Result<(), CliError> {
    if crate::kafka_partitions(client, topic).await.is_ok() {
        return Ok(());
    }
    let controller = client
        .controller_client()
        .map_err(|e| CliError::Kafka(format!("controller: {e}")));
    let created = match controller {
        Ok(c) => c
            .create_topic(topic, partitions as i32, 1, 5_000)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(why) = created {
        let Ok(tansu) = std::env::var("STREAMLOAD_TANSU") else {
            return Err(CliError::Kafka(format!("create topic {topic}: {why}")));
        };
        let out = tokio::process::Command::new(tansu)
            .args([
                "topic",
                "create",
                topic,
                "--broker",
                &format!("tcp://{broker}"),
                "--partitions",
                &partitions.to_string(),
            ])
            .output()
            .await?;
        if !out.status.success() {
            return Err(CliError::Kafka(format!(
                "create topic {topic}: {why}; tansu: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(())
}

/// A connected writer to a stream or topic, made once and used for every send: the Kinesis
/// client, or one client per Kafka partition (a key picks its partition with
/// [`partition_of`], so one user's events stay in order).
pub enum StreamWriter {
    Kinesis {
        client: aws_sdk_kinesis::Client,
        stream: String,
    },
    Kafka {
        partitions: Vec<rskafka::client::partition::PartitionClient>,
    },
}

impl StreamWriter {
    pub async fn connect(target: &Target, broker: &str) -> Result<Self, CliError> {
        Ok(match target {
            Target::Kinesis(stream) => StreamWriter::Kinesis {
                client: crate::kinesis_client().await.0,
                stream: stream.clone(),
            },
            Target::Kafka(topic) => {
                let client = crate::kafka_client(broker).await?;
                let mut partitions = Vec::new();
                for p in crate::kafka_partitions(&client, topic).await? {
                    partitions.push(crate::kafka_partition_client(&client, topic, p).await?);
                }
                StreamWriter::Kafka { partitions }
            }
        })
    }

    /// Sends `records`, in order per key.
    pub async fn send(&self, records: &[Outgoing]) -> Result<(), CliError> {
        match self {
            StreamWriter::Kinesis { client, stream } => {
                for part in records.chunks(KINESIS_PUT_RECORDS_MAX) {
                    send_kinesis(client, stream, part).await?;
                }
            }
            StreamWriter::Kafka { partitions } => {
                let mut by_partition: Vec<Vec<rskafka::record::Record>> =
                    vec![Vec::new(); partitions.len()];
                for r in records {
                    by_partition[partition_of(&r.key, partitions.len())].push(
                        rskafka::record::Record {
                            key: Some(r.key.clone().into_bytes()),
                            value: Some(r.bytes.clone()),
                            headers: Default::default(),
                            timestamp: chrono::Utc::now(),
                        },
                    );
                }
                for (pc, recs) in partitions.iter().zip(by_partition) {
                    if !recs.is_empty() {
                        pc.produce(recs, rskafka::client::partition::Compression::NoCompression)
                            .await
                            .map_err(|e| CliError::Kafka(format!("produce: {e}")))?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The partition of `key` among `n` (a stable hash, so one user stays in order).
pub fn partition_of(key: &str, n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % n.max(1) as u64) as usize
}

/// How many records `--out-of-order` shuffles at a time: within such a window the records (and
/// so the revisions of each key) are sent in a random order; windows follow each other.
pub const OUT_OF_ORDER_WINDOW: usize = 1000;

/// Share of records in which an optional column is present.
pub const OPTIONAL_PRESENT: f64 = 0.9;

/// The generators `--set COLUMN=GEN` takes, for its error messages.
pub const SET_VOCABULARY: &str = "const:<json>, range:<lo>..<hi>, choice:a|b|c, seq, uuid, now";

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

/// A generator named with `--set COLUMN=GEN`.
#[derive(Debug, Clone)]
enum Override {
    Const(serde_json::Value),
    /// Inclusive bounds, unscaled at `scale` decimals.
    Range {
        lo: i128,
        hi: i128,
        scale: u32,
    },
    Choice(Vec<serde_json::Value>),
    Seq,
    Uuid,
    Now,
}

/// How one column's value is chosen.
#[derive(Debug, Clone)]
enum Gen {
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

/// One key of the pool.
#[derive(Debug, Clone)]
struct Slot {
    /// The key's values, one per key column.
    key: Vec<serde_json::Value>,
    partition_key: String,
    /// Revisions made so far.
    revisions: u64,
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
}

impl Default for ShapeOptions {
    fn default() -> Self {
        Self {
            keys: 100,
            events: 1000,
            sets: Vec::new(),
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
///   *r* days; `text` zero-padded counters (`"r-000003"`); `uuid` UUIDs ending in the counter.
///   No two revisions of a key are equal. `--out-of-order` sends the records of each window
///   of [`OUT_OF_ORDER_WINDOW`] in a shuffled order, so later revisions of a key often arrive
///   before earlier ones; the set of records is the same.
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
/// * with `--seed`, the same seed makes the same keys, choices, order and retries (times
///   follow the run's start).
#[derive(Debug, Clone)]
pub struct RouteShape {
    route: Route,
    gens: Vec<Gen>,
    /// Columns present in every record.
    always: Vec<bool>,
    /// Pointer columns in the order they are written: parents before the pointers inside them.
    order: Vec<usize>,
    slots: Vec<Slot>,
    /// Records made.
    counter: u64,
    /// `seq` counters, per column.
    seqs: Vec<u64>,
    /// Upper bound of every counter (records to make, or keys).
    max_count: u64,
    /// Each record gets a key of its own (the identity is the key: a keep-first route).
    fresh_keys: bool,
    start_us: i64,
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A version-4 UUID made of `a` and `b`.
fn uuid_of(a: u64, b: u64) -> String {
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// `unscaled` / 10^`scale` as decimal text with exactly `scale` decimals.
fn decimal_text(unscaled: i128, scale: u32) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let sign = if unscaled < 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale as usize + 1);
    let (int, frac) = padded.split_at(padded.len() - scale as usize);
    format!("{sign}{int}.{frac}")
}

/// A numeric value as JSON: a string keeps it exact; a whole number that fits is a number.
fn decimal_json(unscaled: i128, scale: u32) -> serde_json::Value {
    if scale == 0 {
        if let Ok(i) = i64::try_from(unscaled) {
            if i.unsigned_abs() < (1 << 53) {
                return i.into();
            }
        }
    }
    decimal_text(unscaled, scale).into()
}

/// Parses decimal text to an unscaled integer at `scale` decimals (no more decimals allowed).
fn unscaled_at(text: &str, scale: u32) -> Option<i128> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        || frac.len() > scale as usize
    {
        return None;
    }
    let mut digits = format!("{int}{frac}");
    digits.extend(std::iter::repeat_n('0', scale as usize - frac.len()));
    let magnitude: i128 = digits.trim_start_matches('0').parse().unwrap_or(0);
    Some(if negative { -magnitude } else { magnitude })
}

fn decimals_of(text: &str) -> u32 {
    text.split_once('.').map_or(0, |(_, f)| f.len() as u32)
}

fn pow10(n: u32) -> u128 {
    10u128.saturating_pow(n)
}

/// A timestamptz value: RFC 3339 text, or an epoch number in the column's unit.
fn time_json(unit: Option<EpochUnit>, us: i64) -> serde_json::Value {
    match unit {
        Some(EpochUnit::Seconds) => us.div_euclid(1_000_000).into(),
        Some(EpochUnit::Millis) => us.div_euclid(1_000).into(),
        Some(EpochUnit::Micros) => us.into(),
        None => chrono::DateTime::from_timestamp_micros(us)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .into(),
    }
}

/// One step of a timestamptz counter: the smallest the column's unit tells apart.
fn time_step(unit: Option<EpochUnit>) -> i64 {
    match unit {
        Some(EpochUnit::Seconds) => 1_000_000,
        Some(EpochUnit::Millis) => 1_000,
        _ => 1,
    }
}

/// A date `days` after 1970-01-01, as `YYYY-MM-DD`.
fn date_json(days: i64) -> serde_json::Value {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|e| e.checked_add_signed(chrono::Duration::days(days)))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .into()
}

const DAYS_2020_01_01: i64 = 18_262;
const DAYS_2024_01_01: i64 = 19_723;
const US_2026_01_01: i64 = 1_767_225_600_000_000;

fn digits_of(n: u64) -> usize {
    n.max(1).to_string().len()
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
                if let ColumnType::Numeric {
                    precision: Some(p), ..
                } = c.ty
                {
                    if u128::from(max_count) >= pow10(u32::from(p)) {
                        return Err(usage(format!(
                            "column {:?} (numeric({p})) cannot hold {max_count} distinct values; produce fewer --events",
                            c.name
                        )));
                    }
                }
                if c.ty == ColumnType::Integer && max_count > i32::MAX as u64 {
                    return Err(usage(format!(
                        "column {:?} (integer) cannot count to {max_count}",
                        c.name
                    )));
                }
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

    /// A numeric counter's value: whole numbers at the column's scale while they fit its
    /// precision, else steps of one unit of the last decimal.
    fn numeric_count(&self, ty: ColumnType, n: u64) -> serde_json::Value {
        let ColumnType::Numeric { precision, scale } = ty else {
            return n.into();
        };
        let Some(p) = precision else {
            return n.into();
        };
        let s = u32::from(scale.unwrap_or(0));
        let whole = u128::from(self.max_count) < pow10(u32::from(p) - s);
        let unscaled = if whole {
            i128::from(n) * pow10(s) as i128
        } else {
            i128::from(n)
        };
        decimal_json(unscaled, s)
    }

    fn revision(&self, ty: ColumnType, r: u64) -> serde_json::Value {
        match ty {
            ColumnType::Integer | ColumnType::Bigint => r.into(),
            ColumnType::Double => (r as f64).into(),
            ColumnType::Numeric { .. } => self.numeric_count(ty, r),
            ColumnType::Timestamptz { unit } => {
                time_json(unit, self.start_us - 3_600_000_000 + r as i64 * 1_000_000)
            }
            ColumnType::Date => date_json(DAYS_2024_01_01 + r as i64),
            ColumnType::Uuid => format!("00000000-0000-4000-8000-{r:012x}").into(),
            _ => format!("r-{r:0width$}", width = digits_of(self.max_count).max(6)).into(),
        }
    }

    fn unique(&self, ty: ColumnType, n: u64, rng: &mut Rng) -> serde_json::Value {
        match ty {
            ColumnType::Integer | ColumnType::Bigint => n.into(),
            ColumnType::Double => (n as f64).into(),
            ColumnType::Numeric { .. } => self.numeric_count(ty, n),
            ColumnType::Timestamptz { unit } => time_json(
                unit,
                self.start_us - 3_600_000_000 + n as i64 * time_step(unit),
            ),
            ColumnType::Date => date_json(DAYS_2020_01_01 + n as i64),
            ColumnType::Boolean => rng.chance(0.5).into(),
            _ => rng.uuid().into(),
        }
    }

    fn typed(&self, index: usize, rng: &mut Rng) -> serde_json::Value {
        let c = &self.route.columns[index];
        match c.ty {
            ColumnType::Text => format!("{}-{}", c.name, rng.below(20)).into(),
            ColumnType::Integer => rng.below(10_000).into(),
            ColumnType::Bigint => rng.below(1_000_000_000).into(),
            ColumnType::Double => (rng.below(10_000) as f64 / 100.0).into(),
            ColumnType::Numeric { precision, scale } => {
                let (int_digits, s) = match precision {
                    Some(p) => {
                        let s = u32::from(scale.unwrap_or(0));
                        (u32::from(p) - s, s)
                    }
                    None => (6, 2),
                };
                let int = rng.below(pow10(int_digits).min(1_000_000) as u64);
                let mut text = int.to_string();
                if s > 0 {
                    text.push('.');
                    for _ in 0..s {
                        text.push(char::from(b'0' + rng.below(10) as u8));
                    }
                    text.into()
                } else {
                    int.into()
                }
            }
            ColumnType::Boolean => rng.chance(0.5).into(),
            ColumnType::Timestamptz { unit } => {
                time_json(unit, self.start_us - rng.below(3_600_000_000) as i64)
            }
            ColumnType::Date => date_json(
                chrono::Utc::now().timestamp().div_euclid(86_400) + rng.below(61) as i64 - 30,
            ),
            ColumnType::Uuid => rng.uuid().into(),
            ColumnType::Jsonb => {
                let mut one = || {
                    serde_json::json!({
                        "n": rng.below(100),
                        "tag": format!("t{}", rng.below(10)),
                        "ok": rng.chance(0.5),
                    })
                };
                // An array when another column reads an index inside this one.
                match self.child_index(index) {
                    Some(n) => (0..=n).map(|_| one()).collect::<Vec<_>>().into(),
                    None => one(),
                }
            }
        }
    }

    /// The largest array index another pointer column reads directly inside column `index`.
    fn child_index(&self, index: usize) -> Option<usize> {
        let ColumnSource::Pointer(parent) = &self.route.columns[index].source else {
            return None;
        };
        let prefix = format!("{parent}/");
        self.route
            .columns
            .iter()
            .filter_map(|c| match &c.source {
                ColumnSource::Pointer(p) => p.strip_prefix(&prefix),
                ColumnSource::Meta(_) => None,
            })
            .filter_map(|rest| rest.split('/').next()?.parse::<usize>().ok())
            .max()
    }

    fn set_value(&mut self, o: &Override, i: usize, rng: &mut Rng) -> serde_json::Value {
        let ty = self.route.columns[i].ty;
        match o {
            Override::Const(v) => v.clone(),
            Override::Range { lo, hi, scale } => {
                let width = (hi - lo) as u128 + 1;
                let r = ((u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64())) % width;
                let v = lo + r as i128;
                match ty {
                    ColumnType::Double => decimal_text(v, *scale)
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map_or(serde_json::Value::Null, serde_json::Value::Number),
                    _ => decimal_json(v, *scale),
                }
            }
            Override::Choice(options) => options[rng.below(options.len() as u64) as usize].clone(),
            Override::Seq => {
                self.seqs[i] += 1;
                match ty {
                    ColumnType::Text => self.seqs[i].to_string().into(),
                    _ => self.numeric_count(ty, self.seqs[i]),
                }
            }
            Override::Uuid => rng.uuid().into(),
            Override::Now => match ty {
                ColumnType::Date => chrono::Utc::now().format("%Y-%m-%d").to_string().into(),
                ColumnType::Timestamptz { unit } => {
                    time_json(unit, chrono::Utc::now().timestamp_micros())
                }
                _ => serde_json::Value::Null,
            },
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

/// The partition key (Kinesis) or key (Kafka) of a record with these key values: their texts,
/// joined with `|` when there are several.
fn partition_key_of(key: &[serde_json::Value]) -> String {
    key.iter()
        .map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// Pool slot `slot`'s value of a key column of type `ty`.
fn key_value(ty: ColumnType, slot: u64, width: usize, keys: u64) -> serde_json::Value {
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

/// Parses one `--set COLUMN=GEN` of `route`.
fn parse_set(route: &Route, gens: &[Gen], spec: &str) -> Result<(usize, Override), CliError> {
    let bad = |what: String| CliError::Usage(format!("--set {spec}: {what}"));
    let (column, gen) = spec
        .split_once('=')
        .ok_or_else(|| bad("expected COLUMN=GEN".into()))?;
    let i = route
        .columns
        .iter()
        .position(|c| c.name == column)
        .ok_or_else(|| bad(format!("route {:?} has no column {column:?}", route.name)))?;
    let c = &route.columns[i];
    match (&c.source, &gens[i]) {
        (ColumnSource::Meta(_), _) | (_, Gen::Skip) => {
            return Err(bad(format!(
                "column {column:?} comes from the stream's metadata, not from the record"
            )))
        }
        (_, Gen::Key(_)) => {
            return Err(bad(format!(
                "column {column:?} is part of the key; its values come from the --keys pool"
            )))
        }
        (_, Gen::Revision) => {
            return Err(bad(format!(
                "column {column:?} is the newest_by column; its values are increasing revisions per key"
            )))
        }
        _ => {}
    }
    let ty = c.ty;
    let type_name = ty.sql_type();
    // A value the column takes, or why not.
    let fits = |v: &serde_json::Value| -> Result<(), CliError> {
        let raw = v.to_string();
        streamload_core::route::value::convert(ty, &raw, &bytes::Bytes::from(raw.clone()))
            .map(|_| ())
            .map_err(|why| bad(format!("{raw} {why} (column {column:?} is {type_name})")))
    };
    let (name, arg) = gen.split_once(':').unwrap_or((gen, ""));
    let kind = |allowed: bool| {
        if allowed {
            Ok(())
        } else {
            Err(bad(format!(
                "{name} does not apply to column {column:?} ({type_name})"
            )))
        }
    };
    let o = match name {
        "const" => {
            let v: serde_json::Value = serde_json::from_str(arg)
                .map_err(|e| bad(format!("const:{arg} is not JSON ({e})")))?;
            fits(&v)?;
            Override::Const(v)
        }
        "range" => {
            use ColumnType as T;
            kind(matches!(
                ty,
                T::Integer | T::Bigint | T::Double | T::Numeric { .. }
            ))?;
            let (lo, hi) = arg
                .split_once("..")
                .ok_or_else(|| bad("expected range:<lo>..<hi>".into()))?;
            let scale = match ty {
                T::Integer | T::Bigint => 0,
                T::Numeric {
                    precision: Some(_),
                    scale,
                } => u32::from(scale.unwrap_or(0)),
                _ => decimals_of(lo).max(decimals_of(hi)),
            };
            let parse = |t: &str| {
                unscaled_at(t.trim(), scale).ok_or_else(|| {
                    bad(format!(
                        "{t:?} is not a number with at most {scale} decimals (column {column:?} is {type_name})"
                    ))
                })
            };
            let (lo, hi) = (parse(lo)?, parse(hi)?);
            if lo > hi {
                return Err(bad("the range's low end is above its high end".into()));
            }
            for v in [lo, hi] {
                fits(&decimal_text(v, scale).into())?;
            }
            Override::Range { lo, hi, scale }
        }
        "choice" => {
            let options: Vec<serde_json::Value> = arg
                .split('|')
                .map(|o| serde_json::from_str(o).unwrap_or_else(|_| o.into()))
                .collect();
            if arg.is_empty() {
                return Err(bad("expected choice:a|b|c".into()));
            }
            for o in &options {
                fits(o)?;
            }
            Override::Choice(options)
        }
        "seq" if arg.is_empty() => {
            use ColumnType as T;
            kind(matches!(
                ty,
                T::Text | T::Integer | T::Bigint | T::Double | T::Numeric { .. }
            ))?;
            Override::Seq
        }
        "uuid" if arg.is_empty() => {
            kind(matches!(ty, ColumnType::Text | ColumnType::Uuid))?;
            Override::Uuid
        }
        "now" if arg.is_empty() => {
            kind(matches!(
                ty,
                ColumnType::Timestamptz { .. } | ColumnType::Date
            ))?;
            Override::Now
        }
        _ => {
            return Err(bad(format!(
                "unknown generator {gen:?} (use {SET_VOCABULARY})"
            )))
        }
    };
    Ok((i, o))
}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// A route of one column of each type (and options), keyed by `key_type`.
    fn sensor_route(key_type: &str, newest: Option<(&str, &str)>) -> String {
        let mut t = format!(
            r#"
[[route]]
name = "sensors"
source = "kinesis:sensors"
table = "sensors"
event_time = "/ts"
key = ["device"]
{merge}
[[route.column]]
name = "device"
from = "/device"
type = "{key_type}"
required = true
[[route.column]]
name = "humidity"
from = "/reading/humidity"
type = "numeric"
precision = 5
scale = 2
[[route.column]]
name = "count"
from = "/count"
type = "integer"
[[route.column]]
name = "total"
from = "/total"
type = "bigint"
[[route.column]]
name = "temp"
from = "/temp"
type = "double"
[[route.column]]
name = "ts"
from = "/ts"
type = "timestamptz"
unit = "ms"
required = true
[[route.column]]
name = "seen"
from = "/seen"
type = "timestamptz"
[[route.column]]
name = "day"
from = "/day"
type = "date"
[[route.column]]
name = "batch"
from = "/batch"
type = "uuid"
[[route.column]]
name = "ok"
from = "/ok"
type = "boolean"
[[route.column]]
name = "extra"
from = "/extra"
type = "jsonb"
[[route.column]]
name = "note"
from = "/note"
type = "text"
[[route.column]]
name = "pk"
from = "@partition_key"
type = "text"
"#,
            merge = newest.map_or(String::new(), |(c, _)| format!(
                "merge = {{ newest_by = \"{c}\" }}"
            )),
        );
        if let Some((c, ty)) = newest {
            t.push_str(&format!(
                "[[route.column]]\nname = \"{c}\"\nfrom = \"/{c}\"\ntype = \"{ty}\"\nrequired = true\n"
            ));
            if ty == "numeric" {
                t.push_str("precision = 5\nscale = 2\n");
            }
        }
        t
    }

    fn shape(text: &str, name: &str, keys: u64, sets: &[&str]) -> Result<RouteShape, CliError> {
        RouteShape::from_toml(
            text,
            name,
            &ShapeOptions {
                keys,
                events: 10_000,
                sets: sets.iter().map(|s| s.to_string()).collect(),
            },
        )
    }

    fn doc(rec: &Outgoing) -> serde_json::Value {
        serde_json::from_slice(&rec.bytes).unwrap()
    }

    #[test]
    fn a_numeric_5_2_column_never_exceeds_its_precision_or_scale() {
        // Given a route with a numeric(5, 2) column
        let mut shape = shape(&sensor_route("text", None), "sensors", 100, &[]).unwrap();
        let mut rng = Rng::from_seed(1);
        // When 10,000 records are made
        let mut seen = 0;
        for _ in 0..10_000 {
            let (_, _, rec) = shape.record(&mut rng).unwrap();
            let Some(h) = doc(&rec).pointer("/reading/humidity").cloned() else {
                continue;
            };
            // Then each value is exact text within 0..=999.99 with exactly 2 decimals
            let text = h.as_str().unwrap_or_else(|| panic!("not a string: {h}"));
            let (int, frac) = text.split_once('.').unwrap();
            assert_eq!(frac.len(), 2, "{text}");
            assert!(int.len() <= 3 && !int.starts_with('-'), "{text}");
            let v: f64 = text.parse().unwrap();
            assert!((0.0..=999.99).contains(&v), "{text}");
            seen += 1;
        }
        // and the optional column is present most of the time
        assert!((8_500..9_500).contains(&seen), "{seen}");
    }

    #[test]
    fn every_type_gets_values_that_fit_and_integers_fit_i32() {
        // Given a route with a column of each type, and integer, uuid and text keys
        for key_type in ["text", "integer", "uuid"] {
            let text = sensor_route(key_type, None);
            let mut shape = shape(&text, "sensors", 50, &[]).unwrap();
            let mut rng = Rng::from_seed(2);
            for _ in 0..3_000 {
                // When records are made, each maps through the route as the loader maps it
                let (id, event, rec) = shape.record(&mut rng).unwrap();
                let d = doc(&rec);
                // Then integers fit i32 and are realistic, times are recent epoch ms or RFC 3339
                if let Some(c) = d.get("count") {
                    let c = c.as_i64().unwrap();
                    assert!(i32::try_from(c).is_ok() && (0..10_000).contains(&c), "{c}");
                }
                let now = chrono::Utc::now().timestamp_millis();
                let ts = d["ts"].as_i64().unwrap();
                assert!((now - 3_700_000..=now).contains(&ts), "{ts}");
                if let Some(seen) = d.get("seen") {
                    assert!(chrono::DateTime::parse_from_rfc3339(seen.as_str().unwrap()).is_ok());
                }
                if let Some(day) = d.get("day") {
                    assert!(
                        chrono::NaiveDate::parse_from_str(day.as_str().unwrap(), "%Y-%m-%d")
                            .is_ok()
                    );
                }
                if let Some(b) = d.get("batch") {
                    assert_eq!(b.as_str().map(str::len), Some(36));
                }
                // and the identity is the key
                assert_eq!(event.identity, event.key);
                assert_eq!(id, event.key[0]);
            }
        }
    }

    #[test]
    fn keys_come_from_a_pool_and_are_the_partition_key() {
        let text = include_str!("../../examples/orders/streamload.toml");
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

    /// Orders the text of two newest_by values of type `ty` as PostgreSQL would.
    fn newer(ty: &str, a: &str, b: &str) -> bool {
        match ty {
            "text" => a > b,
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

    #[test]
    fn set_replaces_a_columns_generator_and_a_bad_one_is_named() {
        let text = sensor_route("text", None);
        // Given overrides of four columns
        let mut s = shape(
            &text,
            "sensors",
            10,
            &[
                "note=choice:low|high",
                "humidity=range:10..20",
                "ok=const:true",
                "count=seq",
                "batch=uuid",
                "seen=now",
            ],
        )
        .unwrap();
        let mut rng = Rng::from_seed(6);
        for n in 1..=500 {
            let (_, _, rec) = s.record(&mut rng).unwrap();
            let d = doc(&rec);
            // Then each is always present and made by its generator
            assert!(matches!(d["note"].as_str(), Some("low" | "high")), "{d}");
            let h: f64 = d["reading"]["humidity"].as_str().unwrap().parse().unwrap();
            assert!((10.0..=20.0).contains(&h), "{h}");
            assert_eq!(d["ok"], true);
            assert_eq!(d["count"], n);
            assert_eq!(d["batch"].as_str().map(str::len), Some(36));
            assert!(d["seen"].is_string());
        }
        // And a bad column or generator is one line naming it
        let err = |set: &str| {
            shape(&text, "sensors", 10, &[set])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(
            err("nope=seq").contains("no column \"nope\""),
            "{}",
            err("nope=seq")
        );
        assert!(err("note=bogus").contains("unknown generator \"bogus\""));
        assert!(
            err("humidity=range:1..1000").contains("humidity"),
            "{}",
            err("humidity=range:1..1000")
        );
        assert!(err("humidity=range:1..2.345").contains("humidity"));
        assert!(err("count=const:\"x\"").contains("count"));
        assert!(err("device=seq").contains("key"));
        assert!(err("pk=const:\"x\"").contains("metadata"));
        assert!(err("ok=now").contains("\"ok\""));
        for set in ["nope=seq", "note=bogus", "count=const:\"x\""] {
            assert_eq!(err(set).lines().count(), 1, "{}", err(set));
        }
    }

    #[test]
    fn the_orders_example_gets_its_nested_shape() {
        // Given the orders route of the example
        let text = include_str!("../../examples/orders/streamload.toml");
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

    #[test]
    fn uuids_are_version_4() {
        let mut rng = Rng::seeded();
        let u = rng.uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
    }
}
