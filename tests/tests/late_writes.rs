//! Writes whose outcome stays unknown, or that land after the client gave up on them, made
//! real below the adapters: a fault proxy between the loader and the AWS endpoint (moto) that
//! applies a request and loses every answer, closes the connection and forwards the request
//! later, or holds it past the attempt's timeout; and a TCP relay that freezes a PostgreSQL
//! session mid-conversation. Each test names the protocol-review finding it reproduces
//! (docs/exactly-once.md).

use std::time::Duration;
use streamload_core::ports::{Claim, DedupStore, ObjectSink, Row, RowSink};
use streamload_core::RecordOutcome;
use streamload_tests::fault_proxy::{Fault, Rule};
use streamload_tests::*;

use streamload_tests::{kinesis_batch as batch, plain_event as plain, sorted_ids as ids};

fn raw(seq: u64, json: &str) -> (u64, Vec<u8>) {
    (seq, json.as_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_claim_in_an_unknown_state_holds_its_archive_back_and_its_letter_is_sent_later() {
    // Given two poison records in one unit and an event, and an endpoint that applies every
    // claim write of the second poison record but loses each answer, and fails the consistent
    // read and the release of that claim (P1)
    let stack = TestStack::new("p1archive", false).await;
    let proxy = stack.fault_proxy().await;
    let second = format!(":{}:", seq(3));
    proxy.add(Rule::always("DynamoDB.PutItem", Fault::LoseAnswer500).with_body(&second));
    proxy.add(Rule::always("DynamoDB.GetItem", Fault::ServerError).with_body(&second));
    proxy.add(Rule::always("DynamoDB.DeleteItem", Fault::ServerError).with_body(&second));
    let p = stack.pipeline_via(&proxy).await;
    let b = batch(&[raw(1, "{not json"), plain(2, "a"), raw(3, "[1]")]);
    // When the batch is processed
    let first = p
        .process(&b, &invocation("inv-1", Duration::from_secs(5)))
        .await;
    // Then the second poison record is reported, its claim in an unknown state, and the
    // unit's dead-letter archive is not written (written, it would vouch for a letter that
    // was never sent, and every redelivery would take the record for done: lost)
    assert!(proxy.faulted("DynamoDB.PutItem") >= 1);
    assert!(
        matches!(first.outcomes[2], RecordOutcome::Failed(_)),
        "{:?}",
        first.outcomes
    );
    assert!(
        !stack
            .object_keys()
            .await
            .iter()
            .any(|k| k.starts_with("dead-letter/")),
        "no archive while a claim naming it is unknown"
    );
    // When the endpoint recovers and the batch is redelivered after the lease
    proxy.clear();
    // Then both poison records are in the queue and the event is once in both sinks
    stack.redelivered_each_once(&b, &ids(&["a"])).await;
    assert_eq!(stack.dead_letter_ids().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_applied_after_the_record_was_failed_never_lets_its_object_vouch_for_it() {
    // Given "a" held by a live invocation whose lease runs well past our budget (S1)
    let stack = TestStack::new("s1late", false).await;
    let dedup = streamload_aws::DynamoDedup::new(
        streamload_aws::dynamodb_client(&stack.sdk),
        &stack.config.dedup_table,
    );
    let live = Claim {
        key: "ev:a".into(),
        owner: "inv-live".into(),
        lease_until_ms: now_ms() + 120_000,
        object_key: "events/dt=2024-05-01/hour=10/live-holder.parquet".into(),
        expires_at_s: now_ms() / 1000 + 3600,
        renewable: false,
    };
    dedup.try_claim(&live, now_ms() / 1000).await.unwrap();
    // And an endpoint that takes our first claim write of "a", closes the connection at once
    // and applies the write 4 s later
    let proxy = stack.fault_proxy().await;
    proxy.add(Rule::once("DynamoDB.PutItem", Fault::CloseThenForward(4_000)).with_body("\"ev:a\""));
    let p = stack.pipeline_via(&proxy).await;
    let b = batch(&[plain(1, "a"), plain(2, "b")]);
    // When "a" and "b" (one object) are processed: the retry of "a" is refused by the live
    // holder, so "a" is reported
    let first = p
        .process(&b, &invocation("inv-1", Duration::from_secs(10)))
        .await;
    assert!(
        matches!(first.outcomes[0], RecordOutcome::Failed(_)),
        "{:?}",
        first.outcomes
    );
    // And the holder then releases "a", and our first write lands late
    dedup.release("ev:a", "inv-live").await.unwrap();
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let landed = dedup.read("ev:a").await.unwrap().expect("the late claim");
    assert_eq!(
        landed.owner, "inv-1",
        "the write was applied after the record was failed"
    );
    // Then the object that claim names was not written in the first invocation (it would
    // lack "a" and vouch for it), and a redelivery loads each event exactly once
    proxy.clear();
    stack.redelivered_each_once(&b, &ids(&["a", "b"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_write_that_timed_out_then_was_throttled_stays_maybe_written() {
    // Given an S3 endpoint that holds the first PutObject 1.5 s (past a 0.5 s attempt) and
    // then applies it, and throttles every later attempt (S2); through the SDK and through
    // the direct client
    let stack = TestStack::new("s2put", false).await;
    let proxy = stack.fault_proxy().await;
    let sdk = streamload_aws::sdk_config_with_endpoint(Some(&proxy.endpoint())).await;
    let through_sdk = streamload_aws::S3Objects::new(streamload_aws::s3_client(&sdk), &stack.name);
    let direct = through_sdk.clone().with_direct_puts(
        streamload_aws::PutObjectClient::from_sdk(&sdk, &stack.name).expect("a plain endpoint"),
    );
    for (client, s3) in [("sdk", through_sdk), ("direct", direct)] {
        proxy.clear();
        proxy.add(Rule::once("S3.PutObject", Fault::SlowForward(1_500)));
        proxy.add(Rule::always("S3.PutObject", Fault::Throttle));
        let s3 = s3.with_attempt_timeout(Duration::from_millis(500));
        let key = format!("events/{client}/late.parquet");
        // When one object is written
        let put = s3
            .put_new(
                &key,
                bytes::Bytes::from_static(b"body"),
                "application/octet-stream",
            )
            .await;
        // Then the write fails as "maybe applied", not as a plain throttle (which would
        // release the claims and let a redelivery write the events into a second object)
        let e = put.expect_err("every later attempt was throttled");
        assert!(e.ambiguous, "{client}: {e}");
        // And the first attempt did land
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        proxy.clear();
        assert!(s3.exists(&key).await.unwrap(), "{client}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_abandoned_mid_transaction_is_never_handed_to_the_next_invocation() {
    // Given the loader's database session, opened through a relay by a first upsert (P2)
    let stack = TestStack::new("p2frozen", true).await;
    let p = stack.pipeline().await;
    let routes = streamload_core::route::Routes::builtin("events", "events/").unwrap();
    let route = routes.get(0);
    let mapped = |id: &str| {
        route
            .map(
                &batch(&[plain(1, id)]).records[0],
                streamload_core::event::DEFAULT_MAX_RECORD_BYTES,
            )
            .unwrap()
    };
    let (a, b, c) = (mapped("a"), mapped("b"), mapped("c"));
    fn rows<'a>(route: &'a streamload_core::Route, m: &'a streamload_core::Mapped) -> Vec<Row<'a>> {
        vec![Row {
            route,
            values: &m.values,
            unavailable: &m.unavailable,
        }]
    }
    p.rows
        .upsert(&rows(route, &a), now_ms() + 5_000)
        .await
        .expect("first upsert");
    // When the relay freezes that session (no reset, no answer) and the caller gives up on an
    // upsert 50 ms after its deadline, before the sink's own timer
    stack.proxy.as_ref().unwrap().freeze();
    let until = now_ms() + 1_000;
    let cut = tokio::time::timeout(
        Duration::from_millis(1_050),
        p.rows.upsert(&rows(route, &b), until),
    )
    .await;
    assert!(cut.is_err(), "the frozen session answered: {cut:?}");
    // Then the next upsert opens a fresh session and loads at once, instead of writing into
    // the dead one until its own deadline
    let started = std::time::Instant::now();
    p.rows
        .upsert(&rows(route, &c), now_ms() + 5_000)
        .await
        .expect("a fresh session");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stack.row_ids().await, ids(&["a", "c"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_queue_gets_each_dead_letter_at_most_twice_an_invocation() {
    // Given a queue endpoint that applies every SendMessageBatch 3.5 s late, past the 3 s
    // attempt (issue 26: a slow local SQS left up to 24 copies of one dead letter)
    let stack = TestStack::new("slowdlq", false).await;
    let proxy = stack.fault_proxy().await;
    proxy.add(Rule::always(
        "SQS.SendMessageBatch",
        Fault::SlowForward(3_500),
    ));
    let p = stack.pipeline_via(&proxy).await;
    let b = batch(&[raw(1, "{not json"), plain(2, "a"), raw(3, "[1]")]);
    // When the batch is processed with 12 s left
    let first = p
        .process(&b, &invocation("inv-1", Duration::from_secs(12)))
        .await;
    // Then the letters' batch was sent at most twice (before: four SDK attempts a round,
    // rounds until the cutoff), and the poison records are reported, maybe queued
    assert!(
        proxy.seen("SQS.SendMessageBatch") <= 2,
        "{} sends",
        proxy.seen("SQS.SendMessageBatch")
    );
    assert!(
        matches!(first.outcomes[0], RecordOutcome::Failed(_)),
        "{:?}",
        first.outcomes
    );
    // When the queue recovers, the late sends land, and the batch is redelivered
    proxy.clear();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Then both poison records are in the queue, at most three copies each, and the event once
    stack.redelivered_each_once(&b, &ids(&["a"])).await;
    let letters = stack.dead_letters().await;
    assert!(letters.len() <= 6, "{} letters", letters.len());
    let distinct: std::collections::BTreeSet<&str> = letters
        .iter()
        .filter_map(|m| m["dedup_id"].as_str())
        .collect();
    assert_eq!(distinct.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_poison_claim_whose_lost_first_write_lands_later_never_hides_its_letter() {
    // Given eleven poison records (two letter batches), an endpoint that takes the first claim
    // write of the eleventh, closes the connection at once and applies it 8 s later — so the
    // retry writes the claim — and throttles every send of the eleventh's letter
    let stack = TestStack::new("inlatepoison", false).await;
    let proxy = stack.fault_proxy().await;
    let last = format!(":{}:", seq(11));
    proxy.add(Rule::once("DynamoDB.PutItem", Fault::CloseThenForward(8_000)).with_body(&last));
    // "[11]" in base64, inside that letter's body only
    proxy.add(Rule::always("SQS.SendMessageBatch", Fault::Throttle).with_body("WzExXQ=="));
    let p = stack.pipeline_via(&proxy).await;
    let records: Vec<(u64, Vec<u8>)> = (1..=11).map(|n| raw(n, &format!("[{n}]"))).collect();
    let b = batch(&records);
    // When the batch is processed: ten letters go out, the eleventh is refused to the end and
    // its claim is released
    let first = p
        .process(&b, &invocation("inv-1", Duration::from_secs(6)))
        .await;
    assert!(
        matches!(first.outcomes[10], RecordOutcome::Failed(_)),
        "{:?}",
        first.outcomes
    );
    // And the lost first write lands after that release, recreating the claim
    tokio::time::sleep(Duration::from_secs(9)).await;
    // Then the archive was held back (it would make the eleventh look dead-lettered through
    // the late claim), and a redelivery sends the eleventh letter
    proxy.clear();
    stack.redelivered_each_once(&b, &[]).await;
    assert_eq!(stack.dead_letter_ids().await.len(), 11);
}
