//! `streamload produce`: the seed's producer events — page_view, click, purchase, signup,
//! logout; `user_id` from a pool and used as the partition key; a fresh UUID `event_id`;
//! `created_at` now (UTC); a payload with page, session_id and user_agent — with producer
//! retries (the same bytes again) and poison mixed in, and a manifest of what was produced for
//! `verify`.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone)]
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
}

/// Makes a run's records chunk by chunk, so each event's `created_at` is the moment it is
/// sent (the demo's end-to-end latency starts there); a producer retry follows its original.
pub struct Generator {
    rng: Rng,
    options: ProduceOptions,
    poisons: u64,
    left: u64,
    shape: Option<RouteShape>,
    pub manifest: Manifest,
}

impl Generator {
    pub fn new(options: &ProduceOptions, target: &Target) -> Self {
        Self {
            rng: Rng::seeded(),
            options: options.clone(),
            poisons: 0,
            left: options.events,
            shape: None,
            manifest: Manifest {
                target: target.to_string(),
                ..Manifest::default()
            },
        }
    }

    /// Makes records of `shape` instead of the seed events.
    pub fn with_shape(mut self, shape: RouteShape) -> Self {
        self.shape = Some(shape);
        self
    }

    /// Records left to make (not counting retries).
    pub fn left(&self) -> u64 {
        self.left
    }

    /// The next `n` records (plus their retries).
    pub fn chunk(&mut self, n: u64) -> Vec<Outgoing> {
        let n = n.min(self.left);
        self.left -= n;
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            if self.rng.chance(self.options.poison) {
                let (token, rec) = poison(&mut self.rng, self.poisons);
                self.poisons += 1;
                self.manifest.poison_tokens.push(token);
                out.push(rec);
                continue;
            }
            let (id, rec) = match self.shape.as_mut() {
                Some(shape) => shape.record(&mut self.rng),
                None => event(&mut self.rng, self.options.users),
            };
            self.manifest.event_ids.push(id);
            self.manifest
                .produced_at_ms
                .push(chrono::Utc::now().timestamp_millis());
            if self.rng.chance(self.options.duplicates) {
                out.push(rec.clone());
                self.manifest.duplicates_sent += 1;
            }
            out.push(rec);
        }
        self.manifest.records_sent += out.len() as u64;
        out
    }
}

/// The records of a whole run at once, in sending order, and the manifest.
pub fn plan(options: &ProduceOptions, target: &Target) -> (Vec<Outgoing>, Manifest) {
    let mut g = Generator::new(options, target);
    let records = g.chunk(options.events);
    (records, g.manifest)
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

/// Records of a route's own shape, from its column list: each column read from a JSON
/// Pointer gets a value of its type there (`text` a counter or, for the identity, a UUID;
/// `integer`/`bigint` a counter; `numeric` with the column's scale; `timestamptz` now, as
/// RFC 3339 or epoch in the column's unit; `date` today; `uuid`; `boolean`; `double`;
/// `jsonb` a small object). The manifest's ids are the first identity part's values.
pub struct RouteShape {
    columns: Vec<streamload_core::route::ColumnSpec>,
    identity: String,
    counter: u64,
}

impl RouteShape {
    /// The route `name` of a route file's TOML text (checked as the loader checks it).
    pub fn from_toml(text: &str, name: &str) -> Result<Self, CliError> {
        let file: streamload_core::route::ConfigFile = toml::from_str(text)
            .map_err(|e| CliError::Usage(format!("route file: {}", e.to_string().trim())))?;
        streamload_core::route::Routes::compile(&file)
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let spec = file
            .route
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| CliError::Usage(format!("the route file has no route {name:?}")))?;
        let identity = spec
            .identity
            .as_ref()
            .and_then(|i| i.first().cloned())
            .or_else(|| {
                let key = spec.key.first()?;
                spec.columns
                    .iter()
                    .find(|c| &c.name == key)
                    .map(|c| c.from.clone())
            })
            .ok_or_else(|| CliError::Usage(format!("route {name:?} has no identity to produce")))?;
        Ok(Self {
            columns: spec.columns,
            identity,
            counter: 0,
        })
    }

    fn set(doc: &mut serde_json::Value, pointer: &str, value: serde_json::Value) {
        let parts: Vec<String> = pointer
            .split('/')
            .skip(1)
            .map(|p| p.replace("~1", "/").replace("~0", "~"))
            .collect();
        let mut cur = doc;
        for (i, part) in parts.iter().enumerate() {
            if !cur.is_object() {
                *cur = serde_json::json!({});
            }
            let Some(map) = cur.as_object_mut() else {
                return;
            };
            if i + 1 == parts.len() {
                map.insert(part.clone(), value);
                return;
            }
            cur = map
                .entry(part.clone())
                .or_insert_with(|| serde_json::json!({}));
        }
    }

    /// One record and its id.
    pub fn record(&mut self, rng: &mut Rng) -> (String, Outgoing) {
        self.counter += 1;
        let n = self.counter;
        let mut doc = serde_json::json!({});
        let mut id = String::new();
        for c in &self.columns {
            if !c.from.starts_with('/') {
                continue; // metadata (@key, @offset…) comes from the stream, not the record
            }
            let is_identity = c.from == self.identity;
            let value = match c.ty.to_ascii_lowercase().as_str() {
                "text" if is_identity => serde_json::Value::from(rng.uuid()),
                "text" => format!("v-{}", rng.below(1000)).into(),
                "integer" | "bigint" if is_identity => n.into(),
                "integer" | "bigint" => (1 + rng.below(100)).into(),
                "double" => (rng.below(100_000) as f64 / 100.0).into(),
                "numeric" => {
                    let scale = c.scale.unwrap_or(2) as i32;
                    let v = rng.below(1_000_000) as f64 / 10f64.powi(scale);
                    serde_json::Number::from_f64(v).map_or(0.into(), serde_json::Value::Number)
                }
                "boolean" => (rng.below(2) == 1).into(),
                "timestamptz" => match c.unit.as_deref() {
                    Some("s") => chrono::Utc::now().timestamp().into(),
                    Some("ms") => chrono::Utc::now().timestamp_millis().into(),
                    Some("us") => chrono::Utc::now().timestamp_micros().into(),
                    _ => chrono::Utc::now()
                        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                        .into(),
                },
                "date" => chrono::Utc::now().format("%Y-%m-%d").to_string().into(),
                "uuid" => rng.uuid().into(),
                _ => serde_json::json!({ "n": n, "tag": format!("t{}", rng.below(10)) }),
            };
            if is_identity {
                id = match &value {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
            }
            Self::set(&mut doc, &c.from, value);
        }
        (
            id.clone(),
            Outgoing {
                key: id,
                bytes: doc.to_string().into_bytes(),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_route_shape_puts_a_typed_value_at_each_pointer() {
        // Given the orders route of the example
        let text = include_str!("../../examples/orders/streamload.toml");
        let mut shape = RouteShape::from_toml(text, "orders").unwrap();
        let mut rng = Rng::seeded();
        // When a record is made
        let (id, rec) = shape.record(&mut rng);
        let doc: serde_json::Value = serde_json::from_slice(&rec.bytes).unwrap();
        // Then the identity is its id, and nested pointers hold values of their types
        assert_eq!(doc["order_id"], id.as_str());
        assert!(doc["revision"].is_u64());
        assert!(doc["amount"]["total"].is_number());
        assert!(doc["placed_at"].is_i64(), "unit = ms: epoch milliseconds");
        assert_eq!(doc["customer"]["id"].as_str().map(str::len), Some(36));
        assert!(RouteShape::from_toml(text, "absent").is_err());
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
