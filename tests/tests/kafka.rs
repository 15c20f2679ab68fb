//! kafka-loader against the real stack: records are produced to the local Kafka-protocol
//! broker, read back as the event-source mapping's poller would, turned into the ESM event,
//! and loaded.

use base64::Engine;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use rskafka::record::Record;
use std::collections::BTreeMap;
use std::time::Duration;
use streamload_core::kafka::{decode, failure_identifier};
use streamload_core::RecordOutcome;
use streamload_runtime::run_batch;
use streamload_tests::*;

fn broker() -> String {
    std::env::var("STREAMLOAD_KAFKA_BROKER").expect("STREAMLOAD_KAFKA_BROKER: run with `make test`")
}

/// Creates a topic with the broker's own tool (the broker does not auto-create).
fn create_topic(name: &str, partitions: u32) {
    let tansu = std::env::var("STREAMLOAD_TANSU").expect("STREAMLOAD_TANSU");
    let out = std::process::Command::new(tansu)
        .args([
            "topic",
            "create",
            name,
            "--broker",
            &format!("tcp://{}", broker()),
            "--partitions",
            &partitions.to_string(),
        ])
        .output()
        .expect("run tansu topic create");
    assert!(
        out.status.success(),
        "topic create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rec(key: Option<&str>, value: Option<Vec<u8>>, headers: &[(&str, &[u8])]) -> Record {
    Record {
        key: key.map(|k| k.as_bytes().to_vec()),
        value,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect::<BTreeMap<_, _>>(),
        timestamp: chrono::Utc::now(),
    }
}

/// Produces `records` per partition, then fetches each partition from `from_offset` and builds
/// the ESM event exactly as Lambda shapes it.
async fn produce_and_poll(
    topic: &str,
    by_partition: Vec<(i32, Vec<Record>)>,
    from_offset: i64,
    esm_source: &str,
) -> serde_json::Value {
    let client = ClientBuilder::new(vec![broker()])
        .build()
        .await
        .expect("kafka client");
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut records = serde_json::Map::new();
    for (partition, recs) in by_partition {
        let pc = client
            .partition_client(topic, partition, UnknownTopicHandling::Retry)
            .await
            .expect("partition client");
        if !recs.is_empty() {
            pc.produce(recs, Compression::NoCompression)
                .await
                .expect("produce");
        }
        let (fetched, _) = pc
            .fetch_records(from_offset, 1..10_000_000, 1_000)
            .await
            .expect("fetch");
        let list: Vec<serde_json::Value> = fetched
            .into_iter()
            .map(|r| {
                let headers: Vec<serde_json::Value> = r
                    .record
                    .headers
                    .iter()
                    .map(|(k, v)| serde_json::json!({ k: v.iter().map(|&b| b as i8).collect::<Vec<i8>>() }))
                    .collect();
                serde_json::json!({
                    "topic": topic, "partition": partition, "offset": r.offset,
                    "timestamp": r.record.timestamp.timestamp_millis(), "timestampType": "CREATE_TIME",
                    "key": r.record.key.as_ref().map(|k| b64.encode(k)),
                    "value": r.record.value.as_ref().map(|v| b64.encode(v)),
                    "headers": headers,
                })
            })
            .collect();
        records.insert(
            format!("{topic}-{partition}"),
            serde_json::Value::Array(list),
        );
    }
    let mut event = serde_json::json!({ "eventSource": esm_source, "records": records });
    if esm_source == "aws:kafka" {
        event["eventSourceArn"] = "arn:aws:kafka:us-east-1:123456789012:cluster/local/abc".into();
    } else {
        event["bootstrapServers"] = broker().into();
    }
    event
}

fn ev(id: &str) -> Option<Vec<u8>> {
    Some(event_json(id, &format!("user-{id}"), r#"{"k":"v"}"#))
}

fn ids(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_the_broker_load_once_across_partitions_with_tombstones_and_headers() {
    // Given a topic whose name contains '-', with records on three partitions: the same event
    // on two partitions, a tombstone, a poison record, repeated and binary headers
    let stack = TestStack::new("kafka", false).await;
    let topic = format!("orders-v1-{}", stack.name);
    create_topic(&topic, 3);
    let event = produce_and_poll(
        &topic,
        vec![
            (
                0,
                vec![
                    rec(
                        Some("k1"),
                        ev("a"),
                        &[("trace", b"t-1"), ("bin", &[0xff, 0x80])],
                    ),
                    rec(Some("k1"), None, &[]),
                ],
            ),
            (1, vec![rec(None, ev("b"), &[]), rec(None, ev("a"), &[])]),
            (
                2,
                vec![
                    rec(Some("k3"), Some(b"\xff not utf8".to_vec()), &[]),
                    rec(None, ev("c"), &[]),
                ],
            ),
        ],
        0,
        "SelfManagedKafka",
    )
    .await;
    let batch = decode(&event.to_string()).unwrap();
    assert_eq!(batch.records.len(), 6);
    // When the loader runs it, twice (a redelivery)
    let p = stack.pipeline().await;
    let resp = run_batch(
        &p,
        &batch,
        &invocation("inv-1", Duration::from_secs(30)),
        "test",
        failure_identifier,
    )
    .await;
    let again = p
        .process(&batch, &invocation("inv-2", Duration::from_secs(30)))
        .await;
    // Then every event is once in each sink, and the redelivery is all duplicates or poison
    assert!(resp.is_full_success(), "{resp:?}");
    assert!(
        again.outcomes.iter().all(|o| matches!(
            o,
            RecordOutcome::Duplicate
                | RecordOutcome::DuplicateInBatch
                | RecordOutcome::DeadLettered(_)
        )),
        "{:?}",
        again.outcomes
    );
    stack
        .assert_each_once_in_both_sinks(&ids(&["a", "b", "c"]))
        .await;
    // And lineage keeps topic/partition, offsets, keys and headers
    let units = stack.parquet_column("source_unit").await;
    assert!(units.contains(&format!("{topic}/0")));
    let headers = stack.parquet_column("source_headers").await;
    assert!(
        headers.iter().any(|h| h.contains("\"bin\":\"/4A=\"")),
        "{headers:?}"
    );
    // And the tombstone and the poison record are dead letters with Kafka coordinates
    let dl = stack.dead_letters().await;
    let tombstone = dl
        .iter()
        .find(|m| m["kind"] == "tombstone")
        .expect("tombstone dead letter");
    assert_eq!(tombstone["source"]["topic"], topic.as_str());
    assert_eq!(tombstone["source"]["offset"], 1);
    assert_eq!(tombstone["source"]["key_base64"], "azE=");
    let poison = dl
        .iter()
        .find(|m| m["kind"] == "decode")
        .expect("decode dead letter");
    assert_eq!(poison["source"]["partition"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_reports_the_lowest_offset_of_each_failing_partition() {
    // Given an MSK-shaped batch over two partitions and a database that is down
    let stack = TestStack::new("kafkapg", true).await;
    let topic = format!("clicks-{}", stack.name);
    create_topic(&topic, 2);
    let event = produce_and_poll(
        &topic,
        vec![
            (0, vec![rec(None, ev("a"), &[]), rec(None, ev("b"), &[])]),
            (1, vec![rec(None, ev("c"), &[])]),
        ],
        0,
        "aws:kafka",
    )
    .await;
    let batch = decode(&event.to_string()).unwrap();
    let p = stack.pipeline().await;
    stack.proxy.as_ref().unwrap().go_down();
    // When the batch runs
    let resp = run_batch(
        &p,
        &batch,
        &invocation("inv-1", Duration::from_secs(30)),
        "test",
        failure_identifier,
    )
    .await;
    // Then each partition reports its lowest offset, in AWS's Kafka identifier shape
    let mut got: Vec<serde_json::Value> = resp
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    got.sort_by_key(|v| v.to_string());
    assert_eq!(
        got,
        vec![
            serde_json::json!({"partition": format!("{topic}-0"), "offset": 0}),
            serde_json::json!({"partition": format!("{topic}-1"), "offset": 0}),
        ]
    );
    // When the database is back and the batch is redelivered
    stack.proxy.as_ref().unwrap().come_back();
    let again = p
        .process(&batch, &invocation("inv-2", Duration::from_secs(30)))
        .await;
    assert!(again.failures.is_empty(), "{:?}", again.outcomes);
    stack
        .assert_each_once_in_both_sinks(&ids(&["a", "b", "c"]))
        .await;
}

/// Two partitions, the same event on both, a tombstone: read back from the broker.
async fn two_partition_batch(stack: &TestStack) -> streamload_core::Batch {
    let topic = format!("events-{}", stack.name);
    create_topic(&topic, 2);
    let event = produce_and_poll(
        &topic,
        vec![
            (0, vec![rec(None, ev("a"), &[]), rec(Some("k"), None, &[])]),
            (1, vec![rec(None, ev("b"), &[]), rec(None, ev("a"), &[])]),
        ],
        0,
        "aws:kafka",
    )
    .await;
    decode(&event.to_string()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_then_redelivery_is_exactly_once() {
    for (point, arm) in crash_points() {
        let stack = TestStack::new("kcrash", false).await;
        let batch = two_partition_batch(&stack).await;
        eprintln!("crash point: {point}");
        crash_then_redeliver(&stack, &batch, &ids(&["a", "b"]), arm).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_and_dynamodb_errors_are_reported_then_recovered() {
    let stack = TestStack::new("kawserr", false).await;
    let batch = two_partition_batch(&stack).await;
    aws_errors_then_recover(&stack, &batch, &ids(&["a", "b"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_partition_with_a_failure_is_reported() {
    // Given another live invocation holds the claim on "b" (it is stuck before its commit)
    let stack = TestStack::new("kheld", false).await;
    let batch = two_partition_batch(&stack).await;
    let (holder, s) = stack.faulty_pipeline().await;
    s.rows
        .crash_before
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let only_b = streamload_core::Batch {
        records: batch
            .records
            .iter()
            .filter(|r| r.unit.label.ends_with("/1") && r.position.as_str() == "0")
            .cloned()
            .collect(),
    };
    let inv_holder = invocation("holder", Duration::from_secs(120));
    // When the two-partition batch runs 500 ms later, while the holder is still stuck
    let p = stack.pipeline().await;
    let resp = while_holder_runs(holder.process(&only_b, &inv_holder), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        run_batch(
            &p,
            &batch,
            &invocation("inv", Duration::from_secs(30)),
            "test",
            failure_identifier,
        )
        .await
    })
    .await;
    // Then partition 0 succeeds and partition 1 reports the held record's offset
    let topic = batch.records[0].unit.topic_partition.clone().unwrap().0;
    assert_eq!(resp.batch_item_failures.len(), 1, "{resp:?}");
    assert_eq!(
        resp.batch_item_failures[0].item_identifier,
        serde_json::json!({"partition": format!("{topic}-1"), "offset": 0})
    );
    assert_eq!(stack.parquet_ids().await, ids(&["a"]));
}
