//! Helpers for the integration tests: each test gets its own PostgreSQL database, DynamoDB
//! table, S3 bucket and SQS queue on the real local stack (`make test` starts it and exports
//! its addresses), so tests run in parallel without colliding.

pub mod fault_proxy;
pub mod proxy;
pub mod runtime_api;

use arrow_array::cast::AsArray;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use base64::Engine;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use streamload_core::memory::{FaultSwitch, Faulty};
use streamload_core::{Invocation, Pipeline};
use streamload_runtime::{AwsPipeline, Config, DatabaseSource};

pub use streamload_core;
pub use streamload_runtime;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique lowercase name for this test's resources.
fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
        % 1_000_000_000;
    format!(
        "sl{}{}x{}x{}",
        tag.replace(|c: char| !c.is_ascii_alphanumeric(), ""),
        std::process::id(),
        t,
        n
    )
    .to_lowercase()
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with `make test`, which starts the local stack")
    })
}

pub struct TestStack {
    pub name: String,
    pub config: Config,
    pub database_url: String,
    pub sdk: aws_config::SdkConfig,
    pub pg: tokio_postgres::Client,
    pub proxy: Option<proxy::TcpProxy>,
}

/// Where the admin connection points: the URL with its database replaced.
fn with_database(url: &str, db: &str) -> String {
    match url.rfind('/') {
        Some(i) if url[..i].contains("://") && url[..i].rfind('/').is_some() => {
            format!("{}/{db}", &url[..i])
        }
        _ => format!("{url}/{db}"),
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("postgres connects");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

impl TestStack {
    /// Fresh resources for one test. With `via_proxy`, the loader reaches PostgreSQL through
    /// a TCP proxy the test can cut, as a database outage.
    pub async fn new(tag: &str, via_proxy: bool) -> Self {
        let name = unique(tag);
        let admin_url = env("STREAMLOAD_PG_ADMIN_URL");
        let admin = connect(&admin_url).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        // The local server speaks plaintext: say so (the loader's default is verify-full).
        let database_url = format!("{}?sslmode=disable", with_database(&admin_url, &name));
        let pg = connect(&database_url).await;
        pg.batch_execute(include_str!("../../infra/sql/001_events.sql"))
            .await
            .expect("DDL");

        let (loader_url, proxy) = if via_proxy {
            let addr = database_url
                .split('@')
                .nth(1)
                .and_then(|r| r.split('/').next())
                .unwrap_or("127.0.0.1:5432")
                .to_owned();
            let p = proxy::TcpProxy::start(&addr).await;
            (
                database_url.replace(&addr, &format!("127.0.0.1:{}", p.port())),
                Some(p),
            )
        } else {
            (database_url.clone(), None)
        };

        let sdk = streamload_aws::sdk_config().await;
        let ddb = aws_sdk_dynamodb::Client::new(&sdk);
        create_dedup_table(&ddb, &name).await;
        create_bucket(&streamload_aws::s3_client(&sdk), &name).await;
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let queue_url = sqs
            .create_queue()
            .queue_name(&name)
            .send()
            .await
            .expect("create queue")
            .queue_url
            .unwrap();

        let config = Config::from_lookup(|k| match k {
            "DATABASE_URL" => Some(loader_url.clone()),
            "DEDUP_TABLE" => Some(name.clone()),
            "OUTPUT_BUCKET" => Some(name.clone()),
            "DLQ_URL" => Some(queue_url.clone()),
            "FINISH_MARGIN_MS" => Some("500".into()),
            _ => None,
        })
        .expect("config");
        assert!(matches!(config.database, DatabaseSource::Url(_)));
        Self {
            name,
            config,
            database_url,
            sdk,
            pg,
            proxy,
        }
    }

    /// Routes this stack's pipelines by `toml` (written to a file, as STREAMLOAD_CONFIG
    /// names one in a deployment package).
    pub fn use_routes(&mut self, toml: &str) {
        let path = std::env::temp_dir().join(format!("{}-{}.toml", self.name, unique("cfg")));
        std::fs::write(&path, toml).expect("write the route file");
        self.config.routes = streamload_runtime::RoutesSource::File(path.display().to_string());
    }

    /// Rows of one text column of a table, sorted.
    pub async fn table_column(&self, table: &str, column: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .pg
            .query(&format!("SELECT {column}::text FROM {table}"), &[])
            .await
            .expect("select")
            .iter()
            .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
            .collect();
        out.sort();
        out
    }

    pub async fn pipeline(&self) -> AwsPipeline {
        let mut p = streamload_runtime::build_pipeline(&self.config)
            .await
            .expect("pipeline");
        p.settings.lease_grace = Duration::from_millis(200);
        p
    }

    /// The real pipeline reaching the AWS endpoint through `proxy`: faults on the wire, below
    /// the SDK, so its own retries meet them.
    pub async fn pipeline_via(&self, proxy: &fault_proxy::FaultProxy) -> AwsPipeline {
        let sdk = streamload_aws::sdk_config_with_endpoint(Some(&proxy.endpoint())).await;
        let mut p = streamload_runtime::build_pipeline_with(&self.config, &sdk)
            .await
            .expect("pipeline");
        p.settings.lease_grace = Duration::from_millis(200);
        p
    }

    /// A fault proxy in front of this stack's AWS endpoint.
    pub async fn fault_proxy(&self) -> fault_proxy::FaultProxy {
        fault_proxy::FaultProxy::start(&env("AWS_ENDPOINT_URL")).await
    }

    /// The real pipeline with a fault switch in front of each adapter.
    pub async fn faulty_pipeline(&self) -> (FaultyPipeline, Switches) {
        let p = self.pipeline().await;
        let s = Switches::default();
        let faulty = Pipeline {
            dedup: Faulty::new(p.dedup, s.dedup.clone()),
            rows: Faulty::new(p.rows, s.rows.clone()),
            objects: Faulty::new(p.objects, s.objects.clone()),
            dead_letters: Faulty::new(p.dead_letters, s.dead_letters.clone()),
            search: p.search,
            settings: p.settings,
        };
        (faulty, s)
    }

    /// Rows in Postgres: (event_id, user_id, event_type, payload as text).
    pub async fn rows(&self) -> Vec<(String, String, String, Option<String>)> {
        self.pg
            .query(
                "SELECT event_id, user_id, event_type, payload::text FROM events ORDER BY event_id",
                &[],
            )
            .await
            .expect("select")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    pub async fn row_ids(&self) -> Vec<String> {
        self.rows().await.into_iter().map(|r| r.0).collect()
    }

    /// Every event of `expected` is exactly once in PostgreSQL and across the Parquet objects,
    /// and nothing else is.
    pub async fn assert_each_once_in_both_sinks(&self, expected: &[String]) {
        assert_eq!(self.row_ids().await, expected, "PostgreSQL rows");
        assert_eq!(self.parquet_ids().await, expected, "Parquet rows");
    }

    /// Redelivers `batch` to a fresh pipeline straight to the stack (no faults) with 30 s, and
    /// asserts that nothing is reported and that `expected` is each exactly once in both sinks.
    pub async fn redelivered_each_once(&self, batch: &streamload_core::Batch, expected: &[String]) {
        let again = self
            .pipeline()
            .await
            .process(
                batch,
                &invocation("inv-redelivery", Duration::from_secs(30)),
            )
            .await;
        assert!(again.failures.is_empty(), "{:?}", again.outcomes);
        self.assert_each_once_in_both_sinks(expected).await;
    }

    /// The `dedup_id`s of the dead letters in the queue, each once (the messages are taken
    /// off the queue's view: call it once per check).
    pub async fn dead_letter_ids(&self) -> std::collections::BTreeSet<String> {
        self.dead_letters()
            .await
            .iter()
            .map(|m| m["dedup_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Every event_id across all Parquet objects, sorted, duplicates kept.
    pub async fn parquet_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.parquet_column("event_id").await;
        ids.sort();
        ids
    }

    /// Every value of text column `column` across the Parquet objects that have it.
    pub async fn parquet_column(&self, column: &str) -> Vec<String> {
        let mut out = Vec::new();
        for key in self.object_keys().await {
            if !key.ends_with(".parquet") {
                continue;
            }
            let body = self.object_bytes(&key).await;
            let reader = ParquetRecordBatchReaderBuilder::try_new(body)
                .unwrap()
                .build()
                .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                // Objects of other routes do not have the column.
                let Some(col) = batch.column_by_name(column) else {
                    continue;
                };
                let col = col.as_string::<i32>();
                out.extend(col.iter().map(|v| v.unwrap_or("").to_owned()));
            }
        }
        out
    }

    /// The whole body of one object in this test's bucket.
    pub async fn object_bytes(&self, key: &str) -> bytes::Bytes {
        streamload_aws::s3_client(&self.sdk)
            .get_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes()
    }

    pub async fn object_keys(&self) -> Vec<String> {
        let s3 = streamload_aws::s3_client(&self.sdk);
        let listed = s3
            .list_objects_v2()
            .bucket(&self.name)
            .send()
            .await
            .unwrap();
        listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    /// All dead-letter messages currently in the queue, parsed.
    pub async fn dead_letters(&self) -> Vec<serde_json::Value> {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        let mut out = Vec::new();
        loop {
            let r = sqs
                .receive_message()
                .queue_url(&self.config.dlq_url)
                .max_number_of_messages(10)
                .visibility_timeout(600)
                .send()
                .await
                .unwrap();
            let msgs = r.messages();
            if msgs.is_empty() {
                break;
            }
            out.extend(
                msgs.iter()
                    .map(|m| serde_json::from_str(m.body().unwrap()).unwrap()),
            );
        }
        out
    }
}

#[derive(Default)]
pub struct Switches {
    pub dedup: std::sync::Arc<FaultSwitch>,
    pub rows: std::sync::Arc<FaultSwitch>,
    pub objects: std::sync::Arc<FaultSwitch>,
    pub dead_letters: std::sync::Arc<FaultSwitch>,
}

pub type FaultyPipeline = Pipeline<
    Faulty<streamload_aws::DynamoDedup>,
    Faulty<streamload_runtime::Rows>,
    Faulty<streamload_aws::S3Objects>,
    Faulty<streamload_aws::SqsDeadLetters>,
>;

/// Runs `then` while `holder` keeps running: a live invocation stuck mid-batch, still
/// renewing its lease. (Dropping a holder's future is its death: its claims are then taken
/// over once its lease is over.) Panics if the holder finishes first.
pub async fn while_holder_runs<T>(
    holder: impl std::future::Future,
    then: impl std::future::Future<Output = T>,
) -> T {
    tokio::select! {
        _ = holder => panic!("the holder was to stay stuck mid-batch"),
        t = then => t,
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn invocation(id: &str, budget: Duration) -> Invocation {
    Invocation {
        attempt_id: id.into(),
        deadline_ms: now_ms() + budget.as_millis() as i64,
    }
}

/// A producer event as JSON bytes.
pub fn event_json(id: &str, user: &str, payload: &str) -> Vec<u8> {
    format!(r#"{{"event_id":{},"user_id":{},"event_type":"click","payload":{payload},"created_at":"2024-05-01T10:00:00.123456"}}"#,
        serde_json::to_string(id).unwrap(), serde_json::to_string(user).unwrap()).into_bytes()
}

/// The JSON text of a Kinesis ESM event over `records` of (sequence number, data bytes).
pub fn kinesis_event(records: &[(u64, Vec<u8>)]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let recs: Vec<serde_json::Value> = records
        .iter()
        .map(|(seq, data)| {
            let seq = format!("4959033827149025660855969253836157109592157598913{seq:07}");
            serde_json::json!({
                "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "pk-1", "sequenceNumber": seq,
                            "data": b64.encode(data), "approximateArrivalTimestamp": 1714557600.5},
                "eventSource": "aws:kinesis", "eventVersion": "1.0",
                "eventID": format!("shardId-000000000000:{seq}"), "eventName": "aws:kinesis:record",
                "awsRegion": "us-east-1", "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/orders"
            })
        })
        .collect();
    serde_json::json!({ "Records": recs }).to_string()
}

/// A decoded Kinesis batch over `records` of (sequence number, data bytes).
pub fn kinesis_batch(records: &[(u64, Vec<u8>)]) -> streamload_core::Batch {
    streamload_core::kinesis::decode(&kinesis_event(records)).expect("a Kinesis event")
}

/// A valid producer event `id` at sequence `seq`, user `user-<id>`.
pub fn plain_event(seq: u64, id: &str) -> (u64, Vec<u8>) {
    (seq, event_json(id, &format!("user-{id}"), r#"{"n":1}"#))
}

/// `v` sorted and deduplicated, as the sinks are compared.
pub fn sorted_ids(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v.dedup();
    v
}

/// How one shard's range went when Lambda delivered it, then redelivered from the lowest
/// reported record, until nothing was reported.
#[derive(Debug, Clone, Copy)]
pub struct Redeliveries {
    pub invocations: usize,
    /// Records before the first reported one in the first invocation.
    pub first_completed: usize,
    pub first_wall: Duration,
}

/// Creates a dedup table (`pk`, on demand) named `name`, a name of the caller's own. "Already
/// exists" counts as created: with unique names it means an attempt of ours was applied and
/// its answer lost — the SDK retries after its attempt timeout when the shared emulator is
/// slow — so the table is there, as asked.
pub async fn create_dedup_table(ddb: &aws_sdk_dynamodb::Client, name: &str) {
    let created = ddb
        .create_table()
        .table_name(name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) => {}
        Err(e) => panic!("create dedup table: {e:?}"),
    }
}

/// Creates the secret `name` (the caller's own) holding `value`; returns its ARN. "Already
/// exists" reads the ARN of the one there, for the reason [`create_dedup_table`] gives.
pub async fn create_secret(sdk: &aws_config::SdkConfig, name: &str, value: &str) -> String {
    let sm = aws_sdk_secretsmanager::Client::new(sdk);
    match sm
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
    {
        Ok(created) => created.arn.expect("a created secret's ARN"),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_exists_exception()) =>
        {
            sm.describe_secret()
                .secret_id(name)
                .send()
                .await
                .expect("describe the secret")
                .arn
                .expect("the secret's ARN")
        }
        Err(e) => panic!("create secret: {e:?}"),
    }
}

/// Creates the bucket `name` (the caller's own); "already owned by you" counts as created,
/// for the reason [`create_dedup_table`] gives.
pub async fn create_bucket(s3: &aws_sdk_s3::Client, name: &str) {
    match s3.create_bucket().bucket(name).send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_bucket_already_owned_by_you()) => {}
        Err(e) => panic!("create bucket: {e:?}"),
    }
}

/// Delivers the Kinesis `records` (one shard) as the event-source mapping does with a
/// partial-batch response: the whole range, then from the lowest reported record on. Panics
/// after `max_invocations` without finishing.
pub async fn deliver_until_done<D, R, O, Q>(
    pipeline: &Pipeline<D, R, O, Q>,
    records: &[(u64, Vec<u8>)],
    budget: Duration,
    max_invocations: usize,
) -> Redeliveries
where
    D: streamload_core::ports::DedupStore,
    R: streamload_core::ports::RowSink,
    O: streamload_core::ports::ObjectSink,
    Q: streamload_core::ports::DeadLetters,
{
    let mut from = 0;
    let mut out = Redeliveries {
        invocations: 0,
        first_completed: 0,
        first_wall: Duration::ZERO,
    };
    while from < records.len() {
        out.invocations += 1;
        assert!(
            out.invocations <= max_invocations,
            "no progress after {max_invocations} invocations"
        );
        let started = std::time::Instant::now();
        let report = pipeline
            .process(
                &kinesis_batch(&records[from..]),
                &invocation(&format!("inv-{}", out.invocations), budget),
            )
            .await;
        let done = report
            .outcomes
            .iter()
            .take_while(|o| !matches!(o, streamload_core::RecordOutcome::Failed(_)))
            .count();
        if out.invocations == 1 {
            out.first_completed = done;
            out.first_wall = started.elapsed();
        }
        from += done;
    }
    out
}

/// The Kinesis sequence number `kinesis_event` gives offset `n`.
pub fn seq(n: u64) -> String {
    format!("4959033827149025660855969253836157109592157598913{n:07}")
}

impl TestStack {
    /// A second connection to this test's database.
    pub async fn pg_clone(&self) -> tokio_postgres::Client {
        connect(&self.database_url).await
    }
}

/// The crash matrix shared by both sources: a sandbox dies at the armed point, 1 s before
/// its deadline; Lambda redelivers the same batch to a new sandbox, which must leave every
/// event of `expected` exactly once in Postgres and across the Parquet objects.
pub async fn crash_then_redeliver(
    stack: &TestStack,
    batch: &streamload_core::Batch,
    expected: &[String],
    arm: impl Fn(&Switches),
) {
    crash_then_redeliver_into(
        stack,
        batch,
        expected,
        arm,
        ("events", "event_id", "event_id"),
    )
    .await
}

/// [`crash_then_redeliver`] for any route: `sink` is (table, identity column in the table,
/// identity column in the Parquet objects).
pub async fn crash_then_redeliver_into(
    stack: &TestStack,
    batch: &streamload_core::Batch,
    expected: &[String],
    arm: impl Fn(&Switches),
    sink: (&str, &str, &str),
) {
    let (p1, s1) = stack.faulty_pipeline().await;
    arm(&s1);
    let crashed = tokio::time::timeout(
        Duration::from_millis(3000),
        p1.process(
            batch,
            &invocation("inv-crashed", Duration::from_millis(4000)),
        ),
    )
    .await;
    assert!(crashed.is_err(), "the first sandbox must crash");
    drop(p1);
    let p2 = stack.pipeline().await;
    let r = p2
        .process(batch, &invocation("inv-retry", Duration::from_secs(30)))
        .await;
    assert!(r.failures.is_empty(), "{:?}", r.outcomes);
    let (table, column, parquet) = sink;
    assert_eq!(
        stack.table_column(table, column).await,
        expected,
        "PostgreSQL rows"
    );
    let mut lake = stack.parquet_column(parquet).await;
    lake.sort();
    assert_eq!(lake, expected, "Parquet rows");
}

/// The crash points of docs/exactly-once.md, each as a way to arm the switches.
/// A named way to arm the fault switches.
pub type CrashPoint = (&'static str, fn(&Switches));

pub fn crash_points() -> Vec<CrashPoint> {
    use std::sync::atomic::Ordering::SeqCst;
    vec![
        ("while claiming", |s| {
            s.dedup.crash_after.store(true, SeqCst)
        }),
        ("after claims, before Postgres", |s| {
            s.rows.crash_before.store(true, SeqCst)
        }),
        ("after the Postgres commit, before S3", |s| {
            s.rows.crash_after.store(true, SeqCst)
        }),
        ("after the S3 write, before answering", |s| {
            s.objects.crash_after.store(true, SeqCst)
        }),
        ("after dead-lettering", |s| {
            s.dead_letters.crash_after.store(true, SeqCst);
            s.rows.crash_before.store(true, SeqCst);
        }),
    ]
}

/// S3 refuses writes, then DynamoDB errors, then both recover: reported, then loaded once.
pub async fn aws_errors_then_recover(
    stack: &TestStack,
    batch: &streamload_core::Batch,
    expected: &[String],
) {
    use std::sync::atomic::Ordering::SeqCst;
    use streamload_core::{FailureCause, RecordOutcome};
    let (p, s) = stack.faulty_pipeline().await;
    s.objects.fail.store(true, SeqCst);
    let r1 = p
        .process(batch, &invocation("inv-1", Duration::from_secs(3)))
        .await;
    assert!(!r1.failures.is_empty());
    assert!(
        r1.outcomes.iter().all(|o| matches!(
            o,
            RecordOutcome::Failed(FailureCause::ObjectStore)
                | RecordOutcome::DuplicateInBatch
                | RecordOutcome::DeadLettered(_)
                | RecordOutcome::Failed(_)
        )),
        "{:?}",
        r1.outcomes
    );
    assert!(stack.parquet_ids().await.is_empty());
    s.objects.fail.store(false, SeqCst);
    s.dedup.fail.store(true, SeqCst);
    let r2 = p
        .process(batch, &invocation("inv-2", Duration::from_secs(30)))
        .await;
    assert!(
        r2.outcomes
            .contains(&RecordOutcome::Failed(FailureCause::Dedup)),
        "{:?}",
        r2.outcomes
    );
    s.dedup.fail.store(false, SeqCst);
    let r3 = p
        .process(batch, &invocation("inv-3", Duration::from_secs(30)))
        .await;
    assert!(r3.failures.is_empty(), "{:?}", r3.outcomes);
    stack.assert_each_once_in_both_sinks(expected).await;
}
