//! `make bench-committer` (BENCHMARKS.md §6): the table committer against the local stack
//! (staged objects in moto's S3, claims in moto's DynamoDB, the SQL catalog in PostgreSQL).
//!
//! * **A live stream**: one minute's staging of a 2-shard stream at one batch per second per
//!   shard (120 objects of 42 rows, the size `make demo` left), committed once per minute
//!   as the 60 s batching window delivers it, for five minutes: staged objects against data
//!   files, and each commit's time (the freshness a window adds to).
//! * **A 1 GB hour**: 1,000 staged objects of about 1 MB in one event-time hour, one commit:
//!   MB/s merged and committed, CPU seconds, peak memory of the process during the commit.
//!
//! The staged objects are encoded by the loaders' own encoder and PUT directly (the loaders
//! are not what is measured). moto is one Python process on the same 2 cores: its S3 is the
//! bottleneck of the reads and writes, so MB/s here is a floor, not AWS's.

use futures::StreamExt;
use std::time::{Duration, Instant};
use streamload_core::encode::{encode_parquet, ParquetRow};
use streamload_core::route::{Route, Value};
use streamload_iceberg::IcebergTable;
use streamload_table::commit::{commit_staged, Settings};
use streamload_table::ports::{PortError, StagedObject, TableLog};
use streamload_tests::TestStack;
use table_committer::claims::DynamoCommitClaims;
use table_committer::SystemClock;

const ROUTE: &str = r#"
[[route]]
name = "orders"
source = "kinesis:orders"
key = ["order_id"]
identity = ["/order_id", "/revision"]
event_time = "/placed_at"
lake_prefix = "orders/"
[route.iceberg]
table = "orders"
partition = "hour"
[[route.column]]
name = "order_id"
from = "/order_id"
type = "text"
required = true
[[route.column]]
name = "revision"
from = "/revision"
type = "bigint"
required = true
[[route.column]]
name = "customer"
from = "/customer"
type = "text"
[[route.column]]
name = "amount"
from = "/amount"
type = "numeric"
precision = 12
scale = 2
[[route.column]]
name = "note"
from = "/note"
type = "text"
[[route.column]]
name = "placed_at"
from = "/placed_at"
type = "timestamptz"
required = true
"#;

/// 2024-03-01T10:00:00Z
const HOUR_US: i64 = 1_709_287_200_000_000;

/// A small xorshift: the same bytes on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn text(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| (b'a' + (self.next() % 26) as u8) as char)
            .collect()
    }
}

fn staged_object(route: &Route, rng: &mut Rng, object: usize, rows: usize) -> Vec<u8> {
    let values: Vec<Vec<Value>> = (0..rows)
        .map(|r| {
            let cents = (rng.next() % 1_000_000) as i128;
            vec![
                Value::Text(format!("o-{object}-{r}").as_str().into()),
                Value::Int(1),
                Value::Text(rng.text(12).as_str().into()),
                Value::Numeric {
                    text: format!("{}.{:02}", cents / 100, cents % 100).into(),
                    unscaled: Some(cents),
                },
                Value::Text(rng.text(40).as_str().into()),
                Value::Timestamp(HOUR_US + (rng.next() % 3_600_000_000) as i64),
            ]
        })
        .collect();
    let position = format!("{object}");
    let parquet_rows: Vec<ParquetRow<'_>> = values
        .iter()
        .map(|v| ParquetRow {
            values: v,
            source_unit: "orders/shardId-000000000000",
            source_position: &position,
            source_key: None,
            source_headers: None,
        })
        .collect();
    encode_parquet(route, &parquet_rows, HOUR_US).expect("encodes")
}

/// Encodes and PUTs `count` objects of `rows` rows each into the hour's folder.
async fn stage(
    stack: &TestStack,
    route: &Route,
    tag: &str,
    count: usize,
    rows: usize,
    seed: u64,
) -> Vec<StagedObject> {
    let s3 = streamload_aws::s3_client(&stack.sdk);
    let mut rng = Rng(seed);
    let bodies: Vec<(String, Vec<u8>)> = (0..count)
        .map(|n| {
            let key = format!("orders/dt=2024-03-01/hour=10/{tag}-{n:05}.parquet");
            (key, staged_object(route, &mut rng, n, rows))
        })
        .collect();
    let objects: Vec<StagedObject> = bodies
        .iter()
        .map(|(k, b)| StagedObject {
            key: k.clone(),
            bytes: b.len() as u64,
        })
        .collect();
    futures::stream::iter(bodies)
        .map(|(key, body)| {
            let s3 = s3.clone();
            let bucket = stack.name.clone();
            async move {
                s3.put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(body.into())
                    .send()
                    .await
                    .expect("PUT")
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    objects
}

/// The table port with the time of each write and append recorded.
struct Timed<T> {
    inner: T,
    write: std::sync::Mutex<Duration>,
    append: std::sync::Mutex<Duration>,
}

impl<T: TableLog + Sync> TableLog for Timed<T>
where
    T::Base: Sync,
    T::Written: Sync,
{
    type Base = T::Base;
    type Written = T::Written;
    async fn load(&self) -> Result<T::Base, PortError> {
        self.inner.load().await
    }
    fn commits(&self, base: &T::Base) -> std::collections::BTreeSet<String> {
        self.inner.commits(base)
    }
    async fn write(
        &self,
        base: &T::Base,
        id: &str,
        objects: &[StagedObject],
    ) -> Result<T::Written, PortError> {
        let t = Instant::now();
        let w = self.inner.write(base, id, objects).await;
        *self.write.lock().unwrap() += t.elapsed();
        w
    }
    async fn append(
        &self,
        base: &T::Base,
        commit: &str,
        written: &T::Written,
    ) -> Result<(), PortError> {
        let t = Instant::now();
        let a = self.inner.append(base, commit, written).await;
        *self.append.lock().unwrap() += t.elapsed();
        a
    }
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line; here counted after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

async fn run() {
    let mut stack = TestStack::new("bench", false).await;
    stack.use_routes(ROUTE);
    let routes = streamload_runtime::parse_routes(ROUTE, "bench").expect("routes");
    let route = routes.get(0);
    let catalog = streamload_iceberg::connect(
        &streamload_iceberg::CatalogSettings::Sql {
            uri: stack.database_url.clone(),
            warehouse: format!("s3://{}/warehouse", stack.name),
        },
        streamload_iceberg::storage_props(|k| std::env::var(k).ok()),
    )
    .await
    .expect("catalog");
    let table = Timed {
        inner: IcebergTable::open(catalog, route, &stack.name)
            .await
            .expect("table"),
        write: Default::default(),
        append: Default::default(),
    };
    let claims = DynamoCommitClaims::new(
        streamload_aws::dynamodb_client(&stack.sdk),
        &stack.name,
        "orders",
        604_800,
    );

    println!("A. a live stream: 2 shards x 1 batch/s, 42 rows per staged object, one commit per 60 s window");
    let mut data_files = 0usize;
    let mut staged = 0usize;
    for minute in 0..5 {
        let objects = stage(&stack, route, &format!("live{minute}"), 120, 42, 7 + minute).await;
        staged += objects.len();
        *table.write.lock().unwrap() = Duration::ZERO;
        *table.append.lock().unwrap() = Duration::ZERO;
        let t = Instant::now();
        let report = commit_staged(
            &claims,
            &table,
            &SystemClock,
            Settings::default(),
            &format!("live-{minute}"),
            &objects,
        )
        .await
        .expect("commits");
        let total = t.elapsed();
        let base = table.inner.load().await.expect("load");
        let files = base
            .metadata()
            .current_snapshot()
            .and_then(|s| {
                s.summary()
                    .additional_properties
                    .get("added-data-files")
                    .cloned()
            })
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        data_files += files;
        println!(
            "  window {minute}: {} staged objects -> {files} data file(s); commit {:.0} ms (read+write {:.0} ms, append {:.0} ms, claims the rest)",
            report.appended(),
            total.as_secs_f64() * 1e3,
            table.write.lock().unwrap().as_secs_f64() * 1e3,
            table.append.lock().unwrap().as_secs_f64() * 1e3
        );
    }
    println!("  five minutes: {staged} staged objects -> {data_files} data files ({}x fewer); per hour at this rate: {} -> {}", staged / data_files.max(1), staged * 12, data_files * 12);

    let mb: usize = std::env::var("BENCH_HOUR_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    // About 1 MB per object: 20,000 rows (~50 bytes each once zstd has had its way).
    let count = mb;
    println!("B. a {mb} MB hour: {count} staged objects of 20,000 rows, one commit (target data file 128 MiB)");
    let objects = stage(&stack, route, "hour", count, 20_000, 99).await;
    let bytes: u64 = objects.iter().map(|o| o.bytes).sum();
    *table.write.lock().unwrap() = Duration::ZERO;
    *table.append.lock().unwrap() = Duration::ZERO;
    reset_peak_rss();
    let rss_before = peak_rss_mb();
    let cpu = cpu_seconds();
    let t = Instant::now();
    let report = commit_staged(
        &claims,
        &table,
        &SystemClock,
        Settings::default(),
        "hour",
        &objects,
    )
    .await
    .expect("commits");
    let total = t.elapsed();
    let cpu = cpu_seconds() - cpu;
    let base = table.inner.load().await.expect("load");
    let files = base
        .metadata()
        .current_snapshot()
        .and_then(|s| {
            s.summary()
                .additional_properties
                .get("added-data-files")
                .cloned()
        })
        .unwrap_or_default();
    println!(
        "  {} objects, {:.0} MB staged -> {files} data files in {:.1} s: {:.1} MB/s; read+write {:.1} s, append {:.0} ms; CPU {:.1} s; peak RSS {:.0} MB (before: {:.0} MB)",
        report.appended(),
        bytes as f64 / 1e6,
        total.as_secs_f64(),
        bytes as f64 / 1e6 / total.as_secs_f64(),
        table.write.lock().unwrap().as_secs_f64(),
        table.append.lock().unwrap().as_secs_f64() * 1e3,
        cpu,
        peak_rss_mb(),
        rss_before
    );
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run());
}
