//! The everyday faults of docs/exactly-once.md, made real: rows the user's own table refuses
//! (real constraints on the real PostgreSQL), answers lost after the request was applied and
//! calls that never answer (an HTTP fault proxy between the SDK and the AWS endpoint, so the
//! SDK's own retries meet the fault), a table locked elsewhere, and a FIFO dead-letter queue.

use std::time::{Duration, Instant};
use streamload_core::ports::{Claim, DedupStore};
use streamload_core::{FailureCause, PoisonKind, RecordOutcome};
use streamload_runtime::CallClient;
use streamload_tests::fault_proxy::{Fault, Rule};
use streamload_tests::*;

use streamload_tests::{kinesis_batch as batch, plain_event as plain, sorted_ids as ids};

/// Processes `b` with `budget` left against a black-holed call (`what`, named in a failure)
/// and asserts the function answered before its deadline with every record failed; returns
/// the report and the time it took.
async fn answered_in_time_all_failed(
    p: &streamload_runtime::AwsPipeline,
    b: &streamload_core::Batch,
    budget: Duration,
    what: &str,
) -> (streamload_core::BatchReport, Duration) {
    let started = Instant::now();
    let report = p.process(b, &invocation("inv-1", budget)).await;
    let took = started.elapsed();
    assert!(took < budget, "{what}: answered after {took:?}");
    assert!(
        report
            .outcomes
            .iter()
            .all(|o| matches!(o, RecordOutcome::Failed(_))),
        "{what}: {:?}",
        report.outcomes
    );
    (report, took)
}

fn raw(seq: u64, json: &str) -> (u64, Vec<u8>) {
    (seq, json.as_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_the_table_refuses_are_dead_lettered_and_the_rest_load_in_the_same_invocation() {
    // Given a table with the user's own CHECK, NOT NULL and length constraints
    let stack = TestStack::new("refuse", false).await;
    stack
        .pg
        .batch_execute(
            "ALTER TABLE events ADD CONSTRAINT no_banned_user CHECK (user_id <> 'banned');
             ALTER TABLE events ALTER COLUMN payload SET NOT NULL;
             ALTER TABLE events ALTER COLUMN event_type TYPE varchar(12);",
        )
        .await
        .unwrap();
    let p = stack.pipeline().await;
    // And a batch where four records are valid JSON events the table or jsonb will not store
    let records = vec![
        plain(1, "a"),
        (2, event_json("b", "banned", r#"{"n":1}"#)),
        plain(3, "c"),
        raw(
            4,
            r#"{"event_id":"d","user_id":"u","event_type":"click","created_at":"2024-05-01T10:00:00"}"#,
        ),
        raw(
            5,
            r#"{"event_id":"e","user_id":"u","event_type":"much_too_long_a_type","payload":{},"created_at":"2024-05-01T10:00:00"}"#,
        ),
        raw(
            6,
            r#"{"event_id":"f","user_id":"u","event_type":"click","payload":{"n":1e1000000},"created_at":"2024-05-01T10:00:00"}"#,
        ),
        raw(
            7,
            r#"{"event_id":"g","user_id":"u","event_type":"click","payload":{"s":"\ud800"},"created_at":"2024-05-01T10:00:00"}"#,
        ),
        plain(8, "h"),
    ];
    // When it is processed once
    let report = p
        .process(
            &batch(&records),
            &invocation("inv-1", Duration::from_secs(30)),
        )
        .await;
    // Then nothing is reported failed: the valid rows load now, the refused ones are poison
    assert!(report.failures.is_empty(), "{:?}", report.outcomes);
    let refused = RecordOutcome::DeadLettered(PoisonKind::Refused);
    assert_eq!(
        report.outcomes,
        vec![
            RecordOutcome::Loaded,
            refused,
            RecordOutcome::Loaded,
            refused,
            refused,
            refused,
            refused,
            RecordOutcome::Loaded
        ]
    );
    stack
        .assert_each_once_in_both_sinks(&ids(&["a", "c", "h"]))
        .await;
    // And each refused row is in the queue with the database's reason, never its values
    let dl = stack.dead_letters().await;
    assert_eq!(dl.len(), 5, "{dl:?}");
    let reason_of = |n: u64| {
        dl.iter()
            .find(|m| m["source"]["sequence_number"] == seq(n))
            .unwrap_or_else(|| panic!("seq {n} missing"))["reason"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(reason_of(2).contains("23514") && reason_of(2).contains("no_banned_user"));
    assert!(reason_of(4).contains("23502") && reason_of(4).contains("payload"));
    assert!(reason_of(5).contains("22001"), "{}", reason_of(5));
    assert!(reason_of(6).contains("22003"), "{}", reason_of(6));
    assert!(reason_of(7).starts_with("the database refused the row: SQLSTATE 22"));
    assert!(dl
        .iter()
        .all(|m| m["kind"] == "refused" && m["data_base64"].is_string()));
    assert!(dl
        .iter()
        .all(|m| !m["reason"].as_str().unwrap().contains("banned\"")));
    // When the batch is delivered again, Then nothing more is loaded or queued
    let again = p
        .process(
            &batch(&records),
            &invocation("inv-2", Duration::from_secs(30)),
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
    assert!(stack.dead_letters().await.is_empty());
    stack
        .assert_each_once_in_both_sinks(&ids(&["a", "c", "h"]))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_whose_answer_is_lost_still_loads_the_event() {
    // Given a claim on "a" left by a dead invocation (lease over, its object never written)
    let stack = TestStack::new("takeover", false).await;
    let dedup = streamload_aws::DynamoDedup::new(
        streamload_aws::dynamodb_client(&stack.sdk),
        &stack.config.dedup_table,
    );
    let dead = Claim {
        key: "ev:a".into(),
        owner: "inv-dead".into(),
        lease_until_ms: now_ms() - 60_000,
        object_key: "events/dt=2024-05-01/hour=10/never-written.parquet".into(),
        expires_at_s: now_ms() / 1000 + 3600,
        renewable: false,
    };
    dedup.try_claim(&dead, now_ms() / 1000).await.unwrap();
    // And an AWS endpoint that applies the takeover, then loses its answer (a 500)
    let proxy = stack.fault_proxy().await;
    proxy.add(Rule::once("DynamoDB.PutItem", Fault::LoseAnswer500).with_body("#owner = :owner"));
    let p = stack.pipeline_via(&proxy).await;
    // When a batch with "a" and "b" (one object) is processed
    let b = batch(&[plain(1, "a"), plain(2, "b")]);
    let report = p
        .process(&b, &invocation("inv-1", Duration::from_secs(30)))
        .await;
    // Then the SDK's retry met our own applied takeover, and both events loaded
    assert_eq!(proxy.faulted("DynamoDB.PutItem"), 1);
    assert!(report.failures.is_empty(), "{:?}", report.outcomes);
    stack
        .assert_each_once_in_both_sinks(&ids(&["a", "b"]))
        .await;
    // And a redelivery finds both done
    let again = stack
        .pipeline()
        .await
        .process(&b, &invocation("inv-2", Duration::from_secs(30)))
        .await;
    assert!(again.failures.is_empty(), "{:?}", again.outcomes);
    stack
        .assert_each_once_in_both_sinks(&ids(&["a", "b"]))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_whose_answers_are_lost_or_cut_are_recognised_by_the_sdk_retry() {
    for fault in [Fault::LoseAnswer500, Fault::LoseAnswerClose] {
        // Given an endpoint that applies the first two claim writes, then loses the answers
        let stack = TestStack::new("lostclaim", false).await;
        let proxy = stack.fault_proxy().await;
        proxy.add(Rule::always("DynamoDB.PutItem", fault).times(2));
        let p = stack.pipeline_via(&proxy).await;
        // When a batch is processed
        let b = batch(&[plain(1, "a"), plain(2, "b"), plain(3, "c")]);
        let report = p
            .process(&b, &invocation("inv-1", Duration::from_secs(30)))
            .await;
        // Then every record loaded once in this invocation
        assert_eq!(proxy.faulted("DynamoDB.PutItem"), 2, "{fault:?}");
        assert!(
            report.failures.is_empty(),
            "{fault:?}: {:?}",
            report.outcomes
        );
        stack
            .assert_each_once_in_both_sinks(&ids(&["a", "b", "c"]))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_never_answers_is_cut_off_and_the_function_answers_in_time() {
    for operation in ["S3.PutObject", "DynamoDB.PutItem"] {
        // Given an endpoint that black-holes every call of one operation
        let stack = TestStack::new("hang", false).await;
        let proxy = stack.fault_proxy().await;
        proxy.add(Rule::always(operation, Fault::Hang));
        let p = stack.pipeline_via(&proxy).await;
        let b = batch(&[plain(1, "a"), plain(2, "b")]);
        // When a batch is processed with 5 s left (the test stack's margin is 500 ms)
        let budget = Duration::from_secs(5);
        // Then the function answers before its deadline, reporting the first record
        let (report, took) = answered_in_time_all_failed(&p, &b, budget, operation).await;
        assert_eq!(report.failures.len(), 1);
        eprintln!("{operation} black-holed: answered in {took:?} of {budget:?}");
        // When the endpoint recovers and the batch is redelivered
        proxy.clear();
        proxy.release_hung();
        let again = stack
            .pipeline()
            .await
            .process(&b, &invocation("inv-2", Duration::from_secs(30)))
            .await;
        // Then each event is once in both sinks
        assert!(
            again.failures.is_empty(),
            "{operation}: {:?}",
            again.outcomes
        );
        stack
            .assert_each_once_in_both_sinks(&ids(&["a", "b"]))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_locked_elsewhere_is_cut_off_and_the_claims_are_released() {
    // Given another session holding an exclusive lock on the target table
    let stack = TestStack::new("locked", false).await;
    let locker = stack.pg_clone().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let p = stack.pipeline().await;
    let b = batch(&[plain(1, "a"), plain(2, "b")]);
    // When a batch is processed with 4 s left
    let budget = Duration::from_secs(4);
    let started = Instant::now();
    let report = p.process(&b, &invocation("inv-1", budget)).await;
    let took = started.elapsed();
    // Then the statement is cancelled in time and the records are reported, not timed out
    assert!(took < budget, "answered after {took:?}");
    assert!(
        report
            .outcomes
            .iter()
            .all(|o| *o == RecordOutcome::Failed(FailureCause::Database)),
        "{:?}",
        report.outcomes
    );
    eprintln!("locked table: answered in {took:?} of {budget:?}");
    // When the lock is released and Lambda redelivers at once
    locker.batch_execute("ROLLBACK").await.unwrap();
    let again = p
        .process(&b, &invocation("inv-2", Duration::from_secs(30)))
        .await;
    // Then the released claims let it load immediately, once
    assert!(again.failures.is_empty(), "{:?}", again.outcomes);
    stack
        .assert_each_once_in_both_sinks(&ids(&["a", "b"]))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_dead_letter_queue_takes_each_poison_record_once() {
    // Given a FIFO dead-letter queue
    let mut stack = TestStack::new("fifo", false).await;
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let fifo_url = sqs
        .create_queue()
        .queue_name(format!("{}.fifo", stack.name))
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    stack.config.dlq_url = fifo_url;
    let p = stack.pipeline().await;
    // When a batch with two poison records is processed
    let b = batch(&[raw(1, "{not json"), plain(2, "a"), raw(3, "[1]")]);
    let report = p
        .process(&b, &invocation("inv-1", Duration::from_secs(30)))
        .await;
    // Then both reach the queue (a FIFO queue refuses messages without a group id)
    assert!(report.failures.is_empty(), "{:?}", report.outcomes);
    let dl = stack.dead_letters().await;
    assert_eq!(dl.len(), 2, "{dl:?}");
    assert!(dl
        .iter()
        .all(|m| m["dedup_id"].as_str().unwrap().len() == 32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_at_the_same_coordinates_on_two_clusters_is_dead_lettered_twice() {
    // Given the same topic, partition, offset and bytes from MSK and from a self-managed cluster
    let stack = TestStack::new("clusters", false).await;
    let p = stack.pipeline().await;
    let event = |head: &str| {
        format!(
            r#"{{{head},"records":{{"orders-0":[{{"topic":"orders","partition":0,"offset":7,
            "timestamp":1714557600000,"timestampType":"CREATE_TIME","value":"bm90IGpzb24=","headers":[]}}]}}}}"#
        )
    };
    let msk = event(
        r#""eventSource":"aws:kafka","eventSourceArn":"arn:aws:kafka:us-east-1:1:cluster/a/1","bootstrapServers":"b-1:9098""#,
    );
    let own = event(r#""eventSource":"SelfManagedKafka","bootstrapServers":"kafka-1:9092""#);
    // When each is delivered
    for (n, text) in [msk, own].iter().enumerate() {
        let b = streamload_core::kafka::decode(text).unwrap();
        let r = p
            .process(
                &b,
                &invocation(&format!("inv-{n}"), Duration::from_secs(30)),
            )
            .await;
        assert!(r.failures.is_empty(), "{:?}", r.outcomes);
    }
    // Then both are in the queue, each naming its cluster
    let dl = stack.dead_letters().await;
    assert_eq!(dl.len(), 2, "{dl:?}");
    let clusters: Vec<&str> = dl
        .iter()
        .map(|m| m["source"]["cluster"].as_str().unwrap())
        .collect();
    assert!(clusters.contains(&"arn:aws:kafka:us-east-1:1:cluster/a/1"));
    assert!(clusters.contains(&"bootstrap:kafka-1:9092"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_throttling_keeps_exactly_once_and_most_of_the_batch_in_one_invocation() {
    // Given an endpoint that throttles 20% of claim writes, existence checks and object writes
    let stack = TestStack::new("throttle", false).await;
    let proxy = stack.fault_proxy().await;
    for op in ["DynamoDB.PutItem", "S3.HeadObject", "S3.PutObject"] {
        proxy.add(Rule::share(op, Fault::Throttle, 0.2));
    }
    let p = stack.pipeline_via(&proxy).await;
    // And a batch of 120 events with 12 producer retries of earlier ones
    let mut records: Vec<(u64, Vec<u8>)> = (0..120).map(|n| plain(n, &format!("e{n}"))).collect();
    records.extend((0..12).map(|n| plain(200 + n, &format!("e{}", n * 7))));
    let expected: Vec<String> = ids(&(0..120)
        .map(|n| format!("e{n}"))
        .collect::<Vec<_>>()
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    // When Lambda delivers it, resuming from the reported record each time
    let run = deliver_until_done(&p, &records, Duration::from_secs(30), 10).await;
    let (first_completed, invocations) = (run.first_completed, run.invocations);
    // Then every event is once in both sinks, and the first invocation did most of the work
    stack.assert_each_once_in_both_sinks(&expected).await;
    eprintln!(
        "20% throttling: {first_completed}/{} in the first invocation, {invocations} invocations, faults {:?}",
        records.len(),
        proxy.counts()
    );
    assert!(proxy.faulted("DynamoDB.PutItem") > 0);
    assert!(
        first_completed * 10 >= records.len() * 8,
        "{first_completed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_applied_then_lost_then_throttled_to_the_end_is_never_taken_for_unwritten() {
    for client in [CallClient::Direct, CallClient::Sdk] {
        // Given an endpoint that applies the first claim write of "a" and closes the
        // connection without an answer, then throttles every later write of "a"
        let mut stack = TestStack::new("lostthrottled", false).await;
        stack.config.dedup_client = client;
        let proxy = stack.fault_proxy().await;
        proxy.add(Rule::once("DynamoDB.PutItem", Fault::LoseAnswerClose).with_body("\"ev:a\""));
        proxy.add(Rule::always("DynamoDB.PutItem", Fault::Throttle).with_body("\"ev:a\""));
        let p = stack.pipeline_via(&proxy).await;
        // When "a", "b" and "c" (one object) are processed
        let b = batch(&[plain(1, "a"), plain(2, "b"), plain(3, "c")]);
        let report = p
            .process(&b, &invocation("inv-1", Duration::from_secs(20)))
            .await;
        // Then the write stays "maybe applied" through the throttled attempts, the
        // consistent read after the rounds finds the claim ours, and all three load now
        // (were it taken for never written, "a" would be reported while its claim, naming
        // the object written with "b" and "c", made every redelivery see it done: lost)
        assert!(proxy.faulted("DynamoDB.PutItem") > 1, "{client:?}");
        assert!(
            report.failures.is_empty(),
            "{client:?}: {:?}",
            report.outcomes
        );
        // And a redelivery finds every event done, each exactly once in both sinks
        proxy.clear();
        let again = stack
            .pipeline()
            .await
            .process(&b, &invocation("inv-2", Duration::from_secs(60)))
            .await;
        assert!(
            again.failures.is_empty(),
            "{client:?}: {:?}",
            again.outcomes
        );
        stack
            .assert_each_once_in_both_sinks(&ids(&["a", "b", "c"]))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_batch_whose_answer_is_lost_is_sent_again_and_nothing_is_lost() {
    for fault in [Fault::LoseAnswer500, Fault::LoseAnswerClose] {
        // Given an endpoint that queues the first SendMessageBatch, then loses its answer
        let stack = TestStack::new("lostdlq", false).await;
        let proxy = stack.fault_proxy().await;
        proxy.add(Rule::always("SQS.SendMessageBatch", fault).times(1));
        let p = stack.pipeline_via(&proxy).await;
        // When a batch with three poison records and an event is processed
        let b = batch(&[
            raw(1, "{not json"),
            plain(2, "a"),
            raw(3, "[1]"),
            raw(4, "7"),
        ]);
        let report = p
            .process(&b, &invocation("inv-1", Duration::from_secs(30)))
            .await;
        // Then the batch was sent again, and every poison record is dead-lettered in this
        // invocation: at least once in the queue (a standard queue may hold the resend too)
        assert_eq!(proxy.faulted("SQS.SendMessageBatch"), 1, "{fault:?}");
        assert!(proxy.seen("SQS.SendMessageBatch") >= 2, "{fault:?}");
        let (decode, invalid) = (
            RecordOutcome::DeadLettered(PoisonKind::Decode),
            RecordOutcome::DeadLettered(PoisonKind::Validation),
        );
        assert_eq!(
            report.outcomes,
            vec![decode, RecordOutcome::Loaded, invalid, invalid],
            "{fault:?}"
        );
        assert_eq!(stack.dead_letter_ids().await.len(), 3, "{fault:?}");
        stack.assert_each_once_in_both_sinks(&ids(&["a"])).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_batch_that_never_answers_is_cut_off_and_redelivered() {
    // Given an endpoint that black-holes every SendMessageBatch
    let stack = TestStack::new("hangdlq", false).await;
    let proxy = stack.fault_proxy().await;
    proxy.add(Rule::always("SQS.SendMessageBatch", Fault::Hang));
    let p = stack.pipeline_via(&proxy).await;
    let b = batch(&[raw(1, "{not json"), plain(2, "a"), raw(3, "[1]")]);
    // When a batch is processed with 5 s left
    let budget = Duration::from_secs(5);
    // Then the function answers in time with every record reported for redelivery (the
    // dead letters go out before the load, so the event waited behind them)
    let (report, _) = answered_in_time_all_failed(&p, &b, budget, "SQS.SendMessageBatch").await;
    assert_eq!(report.failures.len(), 1);
    // When the endpoint recovers and the batch is redelivered at once
    proxy.clear();
    proxy.release_hung();
    let again = stack
        .pipeline()
        .await
        .process(&b, &invocation("inv-2", Duration::from_secs(30)))
        .await;
    // Then both poison records reach the queue now (their claims, kept while the letters
    // were maybe queued, are taken over once the short lease is over), and the event loads,
    // once
    assert_eq!(
        again.outcomes,
        vec![
            RecordOutcome::DeadLettered(PoisonKind::Decode),
            RecordOutcome::Loaded,
            RecordOutcome::DeadLettered(PoisonKind::Validation),
        ],
        "{:?}",
        again.outcomes
    );
    assert_eq!(stack.dead_letter_ids().await.len(), 2);
    stack.assert_each_once_in_both_sinks(&ids(&["a"])).await;
}

/// Wake pacing is on in the function's runtime (`streamload_runtime::runtime_builder`), not in
/// `#[tokio::test]`'s: these faults run on the function's own.
#[test]
fn with_wake_pacing_lost_and_hung_claims_keep_exactly_once_and_the_deadline() {
    let runtime = streamload_runtime::runtime_builder(
        0,
        Some(streamload_core::pacing::PacingConfig::DEFAULT),
    )
    .enable_all()
    .build()
    .expect("runtime");
    runtime.block_on(async {
        // Given the function's paced runtime, 200 events (enough claim writes in flight for
        // pauses) and an endpoint that loses the answer of a tenth of the claim writes after
        // applying them
        let stack = TestStack::new("paced", false).await;
        let proxy = stack.fault_proxy().await;
        proxy.add(Rule::share("DynamoDB.PutItem", Fault::LoseAnswer500, 0.1));
        let p = stack.pipeline_via(&proxy).await;
        let records: Vec<(u64, Vec<u8>)> = (0..200).map(|n| plain(n, &format!("p{n}"))).collect();
        let names: Vec<String> = (0..200).map(|n| format!("p{n}")).collect();
        let expected = ids(&names.iter().map(String::as_str).collect::<Vec<_>>());
        let answered_before = streamload_runtime::WAKE_PACER.answered();
        // When Lambda delivers it
        deliver_until_done(&p, &records, Duration::from_secs(30), 5).await;
        // Then every event is once in both sinks, and the pacer counted the claim writes
        stack.assert_each_once_in_both_sinks(&expected).await;
        assert!(proxy.faulted("DynamoDB.PutItem") > 0);
        assert!(streamload_runtime::WAKE_PACER.answered() - answered_before >= 200);

        // Given claim writes that never answer, 100 of them in flight
        proxy.clear();
        proxy.add(Rule::always("DynamoDB.PutItem", Fault::Hang));
        let hung: Vec<(u64, Vec<u8>)> = (300..400).map(|n| plain(n, &format!("h{n}"))).collect();
        // When a batch is processed with 5 s left
        let budget = Duration::from_secs(5);
        // Then no pause holds the function past its deadline, and nothing is reported done
        let (_, took) =
            answered_in_time_all_failed(&p, &batch(&hung), budget, "paced DynamoDB.PutItem").await;
        eprintln!("paced, claims black-holed: answered in {took:?} of {budget:?}");
    });
}
