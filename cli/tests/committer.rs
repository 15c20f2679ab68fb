//! The table committer's real binary under the local SQS mapping (`streamload run sqs://…`),
//! fed by moto's own S3 event notifications, with its sandbox SIGKILLed while the catalog's
//! COMMIT is in flight: the append lands, the bookkeeping after it never runs, and the next
//! sandboxes must find the dead commit in the snapshot log rather than append again.

mod common;

use common::*;
use std::time::Duration;

use streamload_cli::esm::MappingSettings;
use streamload_cli::queue::run_queue;
use streamload_cli::sandbox::{FunctionSpec, Outcome, Sandbox};
use streamload_tests::TestStack;

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
name = "placed_at"
from = "/placed_at"
type = "timestamptz"
required = true
"#;

/// Every catalog COMMIT takes 3 s: a deferred trigger on the SQL catalog's table sleeps at
/// commit time, so a kill in that window lands after PostgreSQL has the append and before the
/// committer hears of it. PostgreSQL completes the COMMIT though its client is gone.
async fn slow_catalog_commits(stack: &TestStack) {
    stack
        .pg
        .batch_execute(
            "CREATE FUNCTION slow_catalog_commit() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_sleep(3); RETURN NULL; END $$;
             CREATE CONSTRAINT TRIGGER slow_catalog_commit AFTER UPDATE ON iceberg_tables
               DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_catalog_commit();",
        )
        .await
        .expect("the slow-commit trigger");
}

/// The committer's environment for `stack`: its route file, claims, bucket, and the SQL
/// catalog in its database with the warehouse in its bucket.
fn committer_env(stack: &TestStack) -> Vec<(String, String)> {
    let route_file = match &stack.config.routes {
        streamload_runtime::RoutesSource::File(p) => p.clone(),
        other => panic!("{other:?}"),
    };
    [
        ("STREAMLOAD_CONFIG", route_file),
        ("DEDUP_TABLE", stack.config.dedup_table.clone()),
        ("OUTPUT_BUCKET", stack.config.output_bucket.clone()),
        ("STREAMLOAD_CATALOG", "sql".into()),
        ("STREAMLOAD_CATALOG_URI", stack.database_url.clone()),
        (
            "STREAMLOAD_WAREHOUSE",
            format!("s3://{}/warehouse", stack.name),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn read_back(stack: &TestStack) -> serde_json::Value {
    let root = workspace();
    let out = std::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("scripts/iceberg-read.py"))
        .args([stack.database_url.as_str(), "streamload", "orders"])
        .arg("order_id,revision,placed_at")
        .output()
        .expect("pyiceberg runs");
    assert!(
        out.status.success(),
        "pyiceberg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committer_killed_during_its_catalog_commit_is_found_in_the_log_and_not_appended_twice() {
    // Given a lake-only route with a table, its bucket notifying a queue of new objects (moto
    // sends S3's own notifications), the table created, and every catalog COMMIT taking 3 s
    let mut stack = TestStack::new("clikillc", false).await;
    stack.use_routes(ROUTE);
    stack.config.database = streamload_runtime::DatabaseSource::Unset;
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let queue = format!("{}-commits", stack.name);
    let url = sqs
        .create_queue()
        .queue_name(&queue)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "4",
        )
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    let notify = aws_sdk_s3::types::NotificationConfiguration::builder()
        .queue_configurations(
            aws_sdk_s3::types::QueueConfiguration::builder()
                .queue_arn(arn)
                .events(aws_sdk_s3::types::Event::S3ObjectCreated)
                .filter(
                    aws_sdk_s3::types::NotificationConfigurationFilter::builder()
                        .key(
                            aws_sdk_s3::types::S3KeyFilter::builder()
                                .filter_rules(
                                    aws_sdk_s3::types::FilterRule::builder()
                                        .name(aws_sdk_s3::types::FilterRuleName::Prefix)
                                        .value("orders/dt=")
                                        .build(),
                                )
                                .filter_rules(
                                    aws_sdk_s3::types::FilterRule::builder()
                                        .name(aws_sdk_s3::types::FilterRuleName::Suffix)
                                        .value(".parquet")
                                        .build(),
                                )
                                .build(),
                        )
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .build();
    streamload_aws::s3_client(&stack.sdk)
        .put_bucket_notification_configuration()
        .bucket(&stack.name)
        .notification_configuration(notify)
        .send()
        .await
        .expect("notifications");
    let routes = streamload_runtime::parse_routes(ROUTE, "test").expect("routes");
    let catalog = streamload_iceberg::connect(
        &streamload_iceberg::CatalogSettings::Sql {
            uri: stack.database_url.clone(),
            warehouse: format!("s3://{}/warehouse", stack.name),
        },
        streamload_iceberg::storage_props(|k| std::env::var(k).ok()),
    )
    .await
    .expect("catalog");
    streamload_iceberg::IcebergTable::open(catalog, routes.get(0), &stack.name)
        .await
        .expect("the table");
    slow_catalog_commits(&stack).await;

    // And six orders staged by the real loader in three batches (an object each)
    let pipeline = stack.pipeline().await;
    let mut expected = Vec::new();
    for b in 0..3u64 {
        let records: Vec<(u64, Vec<u8>)> = (0..2u64)
            .map(|i| {
                let id = format!("o-{}", b * 2 + i);
                expected.push(format!("{id}#1"));
                let order = serde_json::json!({"order_id": id, "revision": 1, "placed_at": "2024-03-01T10:15:00Z"});
                (b * 2 + i + 1, serde_json::to_vec(&order).unwrap())
            })
            .collect();
        let r = pipeline
            .process(
                &streamload_tests::kinesis_batch(&records),
                &streamload_tests::invocation(&format!("l-{b}"), Duration::from_secs(30)),
            )
            .await;
        assert!(
            r.outcomes
                .iter()
                .all(|o| *o == streamload_core::RecordOutcome::Loaded),
            "{:?}",
            r.outcomes
        );
    }

    // When the mapping runs the real committer binary, one notification per invocation (the
    // first is S3's test event), and SIGKILLs its sandbox 2 s into the second invocation, the
    // first staged object's: inside its 3 s COMMIT
    let mut env = committer_env(&stack);
    env.push(("COMMIT_LEASE_SECONDS".into(), "10".into()));
    env.push(("CATALOG_CALL_TIMEOUT_SECONDS".into(), "8".into()));
    let mut o = options(
        FunctionSpec {
            binary: loader("table-committer"),
            name: "table-committer".into(),
            env,
            log: std::env::temp_dir().join(format!("{}.log", stack.name)),
        },
        MappingSettings {
            batch_size: 1,
            batching_window: Duration::ZERO,
            function_timeout: Duration::from_secs(30),
            ..MappingSettings::default()
        },
        None,
    );
    o.max_duration = Duration::from_secs(150);
    o.idle_before_stop = Duration::from_secs(6);
    o.kill_mid_batch = Some((2, Duration::from_millis(2_000)));
    let stats = run_queue(&queue, &o, &*quiet())
        .await
        .expect("the mapping runs");

    // Then the queue was drained within the run, the killed sandbox replaced,
    assert!(!stats.stopped_by_max_duration, "{stats:?}");
    assert!(stats.sandboxes_started >= 2, "{stats:?}");
    assert!(stats.failed_invocations >= 1, "{stats:?}");
    // the killed invocation's append landed (its commit id is in the log: the kill came after
    // PostgreSQL had it), and each order is in the table once
    let view = read_back(&stack);
    let commits: Vec<String> = view["summaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["streamload.commit-id"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        commits.iter().any(|c| c.ends_with("-2-0")),
        "the second invocation's commit landed: {commits:?}"
    );
    let mut ids: Vec<String> = view["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}#{}", r[0].as_str().unwrap(), r[1].as_str().unwrap()))
        .collect();
    ids.sort();
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committer_binary_runs_the_schedules_sweep_input() {
    // Given two orders staged in the last hour that no notification named
    let mut stack = TestStack::new("clisweep", false).await;
    stack.use_routes(ROUTE);
    stack.config.database = streamload_runtime::DatabaseSource::Unset;
    let now = chrono::Utc::now().to_rfc3339();
    let records: Vec<(u64, Vec<u8>)> = (0..2u64)
        .map(|i| {
            let order =
                serde_json::json!({"order_id": format!("s-{i}"), "revision": 1, "placed_at": now});
            (i + 1, serde_json::to_vec(&order).unwrap())
        })
        .collect();
    let r = stack
        .pipeline()
        .await
        .process(
            &streamload_tests::kinesis_batch(&records),
            &streamload_tests::invocation("l-0", Duration::from_secs(30)),
        )
        .await;
    assert!(r.failures.is_empty(), "{r:?}");
    let env = committer_env(&stack);
    let mut sandbox = Sandbox::new(FunctionSpec {
        binary: loader("table-committer"),
        name: "table-committer".into(),
        env,
        log: std::env::temp_dir().join(format!("{}.log", stack.name)),
    })
    .await
    .expect("a sandbox");
    // When the binary is invoked with the template's Sweep input
    let outcome = sandbox
        .invoke(
            r#"{"streamload_sweep": {"hours": 2}}"#.into(),
            Duration::from_secs(60),
            None,
        )
        .await;
    sandbox.kill().await;
    // Then it answers the sweep's report, and the table holds both orders
    let Outcome::Response(body) = outcome else {
        panic!("{outcome:?}");
    };
    let report: serde_json::Value = serde_json::from_str(&body).expect("a JSON report");
    assert_eq!(report["appended"], 1, "{body}");
    let view = read_back(&stack);
    assert_eq!(view["rows"].as_array().map(Vec::len), Some(2));
}
