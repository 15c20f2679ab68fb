//! kinesis-loader against the real local stack: PostgreSQL, the AWS endpoint (S3, DynamoDB,
//! SQS). Each test reads Given / When / Then and checks both sinks.

use std::time::Duration;
use streamload_core::kinesis::failure_identifier;
use streamload_core::RecordOutcome;
use streamload_runtime::run_batch;
use streamload_tests::*;

use streamload_tests::{kinesis_batch as batch, plain_event as plain, sorted_ids as ids};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_batch_then_redelivery_then_producer_retry_load_each_event_once() {
    // Given a fresh stack and a batch with a duplicate inside it
    let stack = TestStack::new("dup", false).await;
    let p = stack.pipeline().await;
    let b = batch(&[plain(1, "a"), plain(2, "b"), plain(3, "a"), plain(4, "c")]);
    // When it is processed, delivered again, and a producer retry arrives with new sequence numbers
    let first = run_batch(
        &p,
        &b,
        &invocation("inv-1", Duration::from_secs(30)),
        "test",
        failure_identifier,
    )
    .await;
    let again = p
        .process(&b, &invocation("inv-2", Duration::from_secs(30)))
        .await;
    let retry = p
        .process(
            &batch(&[plain(10, "c"), plain(11, "b"), plain(12, "d")]),
            &invocation("inv-3", Duration::from_secs(30)),
        )
        .await;
    // Then every response is a full success and each event is once in Postgres and once in Parquet
    assert!(first.is_full_success(), "{first:?}");
    assert!(
        again.failures.is_empty()
            && again
                .outcomes
                .iter()
                .all(|o| *o == RecordOutcome::Duplicate || *o == RecordOutcome::DuplicateInBatch),
        "{:?}",
        again.outcomes
    );
    assert_eq!(
        retry.outcomes,
        vec![
            RecordOutcome::Duplicate,
            RecordOutcome::Duplicate,
            RecordOutcome::Loaded
        ]
    );
    stack
        .assert_each_once_in_both_sinks(&ids(&["a", "b", "c", "d"]))
        .await;
    // And the Parquet lineage names the shard and positions
    let units = stack.parquet_column("source_unit").await;
    assert!(
        units.iter().all(|u| u == "orders/shardId-000000000000"),
        "{units:?}"
    );
    let keys = stack.object_keys().await;
    assert!(
        keys.iter()
            .all(|k| k.starts_with("events/dt=2024-05-01/hour=10/orders_shardId-000000000000-")),
        "{keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_mix_goes_to_the_queue_and_hostile_valid_records_load_verbatim() {
    // Given every poison kind next to valid records with SQL, unicode, ../ and a 200 KB payload
    let stack = TestStack::new("poison", false).await;
    let p = stack.pipeline().await;
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(200 * 1024));
    let records = vec![
        (1, event_json("sql", "'); DROP TABLE events; --", r#"{"q":"' OR 1=1 --"}"#)),
        (2, vec![0xff, 0xfe, 0x00]),
        (3, b"{not json".to_vec()),
        (4, b"[1,2,3]".to_vec()),
        (5, br#"{"user_id":"u","event_type":"t","created_at":"2024-01-01T00:00:00"}"#.to_vec()),
        (6, br#"{"event_id":"e6","user_id":"","event_type":"t","created_at":"2024-01-01T00:00:00"}"#.to_vec()),
        (7, br#"{"event_id":"e7","user_id":"u","event_type":"","created_at":"2024-01-01T00:00:00"}"#.to_vec()),
        (8, br#"{"event_id":"e8","user_id":"u","event_type":"t","created_at":"not a time"}"#.to_vec()),
        (9, event_json("unicode-ü-😀", "用户-ü", r#"{"emoji":"😀","rtl":"مرحبا"}"#)),
        (10, event_json("traversal", "../../etc/passwd", "null")),
        (11, event_json("big", "u-big", &big)),
        (12, vec![b' '; 1024 * 1024 + 1]),
    ];
    // When the batch is processed
    let resp = run_batch(
        &p,
        &batch(&records),
        &invocation("inv-1", Duration::from_secs(60)),
        "test",
        failure_identifier,
    )
    .await;
    // Then nothing is reported failed: poison never blocks the shard
    assert!(resp.is_full_success(), "{resp:?}");
    // And the valid records are stored exactly as sent
    let rows = stack.rows().await;
    let by_id = |id: &str| {
        rows.iter()
            .find(|r| r.0 == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} missing"))
    };
    assert_eq!(by_id("sql").1, "'); DROP TABLE events; --");
    assert_eq!(by_id("unicode-ü-😀").1, "用户-ü");
    assert_eq!(by_id("traversal").1, "../../etc/passwd");
    assert_eq!(by_id("traversal").3, None);
    assert!(by_id("big").3.unwrap().len() > 200 * 1024);
    assert_eq!(rows.len(), 4);
    assert_eq!(
        stack.parquet_ids().await,
        ids(&["big", "sql", "traversal", "unicode-ü-😀"])
    );
    // And each poison record is in the queue once with its reason, kind and raw bytes
    let dl = stack.dead_letters().await;
    assert_eq!(dl.len(), 8, "{dl:?}");
    let by_seq = |n: u64| {
        dl.iter()
            .find(|m| m["source"]["sequence_number"] == seq(n))
            .unwrap_or_else(|| panic!("seq {n} missing"))
    };
    assert_eq!(by_seq(2)["kind"], "decode");
    assert_eq!(by_seq(2)["data_base64"], "//4A");
    assert_eq!(by_seq(3)["kind"], "decode");
    assert_eq!(by_seq(4)["kind"], "validation");
    assert_eq!(
        by_seq(5)["reason"],
        r#"route "events": column "event_id" is required (absent or null)"#
    );
    assert_eq!(
        by_seq(6)["reason"],
        r#"route "events": column "user_id" is required (empty)"#
    );
    assert_eq!(
        by_seq(7)["reason"],
        r#"route "events": column "event_type" is required (empty)"#
    );
    assert_eq!(
        by_seq(8)["reason"],
        r#"route "events": column "created_at" is not an RFC 3339 timestamp"#
    );
    assert_eq!(by_seq(12)["kind"], "too_large");
    // The oversized record's bytes did not fit in a message: they are in S3
    let key = by_seq(12)["data_s3_key"].as_str().unwrap().to_owned();
    assert!(
        key.starts_with("dead-letter/orders_shardId-000000000000/"),
        "{key}"
    );
    assert!(stack.object_keys().await.contains(&key));
    assert_eq!(by_seq(2)["source"]["shard_id"], "shardId-000000000000");
    // When the batch is delivered again, Then nothing more is queued or loaded
    let again = p
        .process(
            &batch(&records),
            &invocation("inv-2", Duration::from_secs(60)),
        )
        .await;
    assert!(
        again
            .outcomes
            .iter()
            .all(|o| *o == RecordOutcome::Duplicate),
        "{:?}",
        again.outcomes
    );
    assert!(
        stack.dead_letters().await.is_empty(),
        "every dead letter was already received above"
    );
    // Each dead letter is archived once: one object for the shard's eight, a message a line
    let archives: Vec<String> = stack
        .object_keys()
        .await
        .into_iter()
        .filter(|k| k.ends_with(".jsonl"))
        .collect();
    assert_eq!(archives.len(), 1, "{archives:?}");
    let archive = stack.object_bytes(&archives[0]).await;
    let archived: Vec<serde_json::Value> = std::str::from_utf8(&archive)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut archived_seqs: Vec<&str> = archived
        .iter()
        .map(|m| m["source"]["sequence_number"].as_str().unwrap())
        .collect();
    let mut queued_seqs: Vec<&str> = dl
        .iter()
        .map(|m| m["source"]["sequence_number"].as_str().unwrap())
        .collect();
    archived_seqs.sort_unstable();
    queued_seqs.sort_unstable();
    assert_eq!(archived_seqs, queued_seqs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_mid_run_loses_nothing_and_names_the_right_record() {
    // Given a loader that reaches Postgres through a proxy, and a first batch loaded
    let stack = TestStack::new("pgdown", true).await;
    let p = stack.pipeline().await;
    let first = p
        .process(
            &batch(&[plain(1, "a"), plain(2, "b")]),
            &invocation("inv-1", Duration::from_secs(30)),
        )
        .await;
    assert!(first.failures.is_empty());
    // When Postgres goes away mid-run
    stack.proxy.as_ref().unwrap().go_down();
    let b2 = batch(&[plain(3, "b"), plain(4, "c"), plain(5, "d")]);
    let resp = run_batch(
        &p,
        &b2,
        &invocation("inv-2", Duration::from_secs(30)),
        "test",
        failure_identifier,
    )
    .await;
    // Then the first record not done is reported: "b" is a duplicate, so "c" at seq 4
    assert_eq!(resp.batch_item_failures.len(), 1);
    assert_eq!(
        resp.batch_item_failures[0].item_identifier,
        serde_json::json!(seq(4))
    );
    // When it comes back and Lambda redelivers from the reported record
    stack.proxy.as_ref().unwrap().come_back();
    let b3 = batch(&[plain(4, "c"), plain(5, "d")]);
    let again = p
        .process(&b3, &invocation("inv-3", Duration::from_secs(30)))
        .await;
    // Then everything is in both sinks once
    assert!(again.failures.is_empty(), "{:?}", again.outcomes);
    stack
        .assert_each_once_in_both_sinks(&ids(&["a", "b", "c", "d"]))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_and_dynamodb_errors_are_reported_then_recovered() {
    let stack = TestStack::new("awserr", false).await;
    let b = batch(&[plain(1, "a"), plain(2, "b"), plain(3, "a")]);
    aws_errors_then_recover(&stack, &b, &ids(&["a", "b"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_then_redelivery_is_exactly_once() {
    for (point, arm) in crash_points() {
        // Given a batch with a duplicate and a poison record, and a sandbox that dies at `point`
        let stack = TestStack::new("crash", false).await;
        let b = batch(&[
            plain(1, "a"),
            plain(2, "b"),
            (3, b"poison".to_vec()),
            plain(4, "a"),
            plain(5, "c"),
        ]);
        eprintln!("crash point: {point}");
        // When it is redelivered, Then each event is once in both sinks
        crash_then_redeliver(&stack, &b, &ids(&["a", "b", "c"]), arm).await;
        assert!(
            !stack.dead_letters().await.is_empty(),
            "{point}: the poison record is dead-lettered"
        );
    }
}
