//! The table committer against real parts: the loaders' staged objects written by the real
//! pipeline into moto's S3, claims in moto's DynamoDB, the table in a SQL catalog in the
//! stack's PostgreSQL — and read back by pyiceberg, an independent reader.

use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;
use streamload_core::RecordOutcome;
use streamload_tests::{invocation, kinesis_batch, TestStack};
use table_committer::notification::SqsEvent;
use table_committer::{Committer, CommitterConfig, SystemClock};

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
partition = "day"

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
name = "amount"
from = "/amount"
type = "numeric"
precision = 12
scale = 2

[[route.column]]
name = "placed_at"
from = "/placed_at"
type = "timestamptz"
required = true
"#;

fn order(id: &str, revision: i64, placed_at: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "order_id": id, "revision": revision, "amount": "12.50", "placed_at": placed_at
    }))
    .unwrap()
}

/// A stack whose only route stages orders for a table (no database table, no index).
async fn lake_stack(tag: &str) -> TestStack {
    let mut stack = TestStack::new(tag, false).await;
    stack.use_routes(ROUTE);
    stack.config.database = streamload_runtime::DatabaseSource::Unset;
    stack
}

fn committer_config(stack: &TestStack) -> CommitterConfig {
    let routes = match &stack.config.routes {
        streamload_runtime::RoutesSource::File(p) => p.clone(),
        other => panic!("{other:?}"),
    };
    let vars = [
        ("STREAMLOAD_CONFIG", routes),
        ("DEDUP_TABLE", stack.name.clone()),
        ("OUTPUT_BUCKET", stack.name.clone()),
        ("STREAMLOAD_CATALOG", "sql".into()),
        ("STREAMLOAD_CATALOG_URI", stack.database_url.clone()),
        (
            "STREAMLOAD_WAREHOUSE",
            format!("s3://{}/warehouse", stack.name),
        ),
    ];
    CommitterConfig::from_lookup(|k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(k).ok())
    })
    .expect("committer config")
}

/// One SQS message per key, each an S3 notification as S3 sends it (keys URL-encoded).
fn notifications(bucket: &str, keys: &[String]) -> SqsEvent {
    let records: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let encoded = key.replace('=', "%3D");
            let body = json!({"Records": [{
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": bucket}, "object": {"key": encoded, "size": 1000}}
            }]});
            json!({"messageId": format!("m-{i}"), "body": body.to_string()})
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

async fn staged_keys(stack: &TestStack) -> Vec<String> {
    stack
        .object_keys()
        .await
        .into_iter()
        .filter(|k| k.starts_with("orders/") && k.ends_with(".parquet"))
        .collect()
}

/// pyiceberg's view of the table.
fn read_back(stack: &TestStack) -> Value {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new(format!("{root}/.venv/bin/python"))
        .arg(format!("{root}/scripts/iceberg-read.py"))
        .args([
            stack.database_url.as_str(),
            "streamload",
            "orders",
            "order_id,revision,amount,placed_at",
        ])
        .output()
        .expect("pyiceberg runs");
    assert!(
        out.status.success(),
        "pyiceberg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn identities(view: &Value) -> Vec<String> {
    let mut ids: Vec<String> = view["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}#{}", r[0].as_str().unwrap(), r[1].as_str().unwrap()))
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_objects_become_one_snapshot_of_day_partitions_each_event_once_read_by_pyiceberg() {
    // Given the real loader staged orders over three hours on two days, in two batches
    let stack = lake_stack("ice").await;
    let p = stack.pipeline().await;
    let first = kinesis_batch(&[
        (1, order("o-1", 1, "2024-03-01T10:15:00Z")),
        (2, order("o-2", 1, "2024-03-01T11:20:00Z")),
        (3, order("o-3", 1, "2024-03-02T09:00:00Z")),
    ]);
    let second = kinesis_batch(&[
        (4, order("o-1", 2, "2024-03-01T10:45:00Z")),
        (5, order("o-4", 1, "2024-03-02T09:30:00Z")),
    ]);
    for (n, batch) in [first, second].iter().enumerate() {
        let r = p
            .process(
                batch,
                &invocation(&format!("l-{n}"), Duration::from_secs(30)),
            )
            .await;
        assert!(
            r.outcomes.iter().all(|o| *o == RecordOutcome::Loaded),
            "{:?}",
            r.outcomes
        );
    }
    let keys = staged_keys(&stack).await;
    assert_eq!(keys.len(), 5, "one object per batch and hour: {keys:?}");
    // When the committer is sent their notifications, one of them twice
    let mut sent = keys.clone();
    sent.push(keys[0].clone());
    let config = committer_config(&stack);
    let committer = Committer::start(&config, &stack.sdk).await.expect("starts");
    let answer = committer
        .handle(&notifications(&stack.name, &sent), "req-1", &SystemClock)
        .await;
    // Then nothing is retried, and pyiceberg reads every event once, in one snapshot, in two
    // day partitions, with the commit id in the snapshot summary and the ids of the route
    assert!(answer.batch_item_failures.is_empty(), "{answer:?}");
    let view = read_back(&stack);
    assert_eq!(
        identities(&view),
        ["o-1#1", "o-1#2", "o-2#1", "o-3#1", "o-4#1"]
    );
    assert_eq!(view["snapshots"], 1);
    assert_eq!(view["summaries"][0]["streamload.commit-id"], "req-1-0");
    assert_eq!(view["partitions"].as_array().unwrap().len(), 2, "{view}");
    assert_eq!(
        view["data_files"], 2,
        "five staged objects merged per day: {view}"
    );
    assert_eq!(view["field_ids"]["order_id"], 1);
    assert_eq!(view["field_ids"]["placed_at"], 4);
    let amounts: Vec<&str> = view["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[2].as_str().unwrap())
        .collect();
    assert!(amounts.iter().all(|a| *a == "12.50"), "{amounts:?}");

    // When the same notifications come again (S3 at-least-once, the sweep), to a new sandbox
    let again = Committer::start(&config, &stack.sdk).await.expect("starts");
    let answer = again
        .handle(&notifications(&stack.name, &keys), "req-2", &SystemClock)
        .await;
    // Then nothing is appended twice
    assert!(answer.batch_item_failures.is_empty(), "{answer:?}");
    let view = read_back(&stack);
    assert_eq!(identities(&view).len(), 5);
    assert_eq!(view["snapshots"], 1);
}
