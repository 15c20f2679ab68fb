//! The claim protocol against in-memory adapters: every crash point, redelivery and
//! duplicate case, in tokio's paused time (leases, deadlines and back-off cross without a
//! sleep: 0.1 s for the suite, 5.8 s with real time). The same matrix runs against the real
//! stack in `tests/`.

mod common;

use common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;
use streamload_core::pacing::{PacingConfig, WakePacer};
use streamload_core::record::{Batch, Position};
use streamload_core::{FailureCause, PoisonKind, RecordOutcome};

#[tokio::test(start_paused = true)]
async fn all_new_batch_loads_every_record_with_one_claim_write_each() {
    // Given an empty stack and a batch of five new events
    let stack = Stack::new();
    let (p, _) = stack.pipeline();
    let ids = ["a", "b", "c", "d", "e"];
    // When the batch is processed
    let report = p
        .process(
            &batch_of(&ids, 100),
            &invocation("inv-1", Duration::from_secs(30)),
        )
        .await;
    // Then all are loaded, in both sinks once, with one dedup write each and no failures
    assert!(
        report.outcomes.iter().all(|o| *o == RecordOutcome::Loaded),
        "{:?}",
        report.outcomes
    );
    assert!(report.failures.is_empty());
    assert_eq!(stack.row_count(), 5);
    assert_eq!(stack.parquet_event_ids(), expected_ids(&ids));
    assert_eq!(stack.dedup.writes.load(Ordering::SeqCst), 5);
    assert_eq!(report.summary.loaded, 5);
}

#[tokio::test(start_paused = true)]
async fn duplicates_inside_a_batch_collapse_to_the_first_copy() {
    let stack = Stack::new();
    let (p, _) = stack.pipeline();
    let report = p
        .process(
            &batch_of(&["a", "b", "a", "a"], 1),
            &invocation("inv-1", Duration::from_secs(30)),
        )
        .await;
    assert_eq!(
        report.outcomes,
        vec![
            RecordOutcome::Loaded,
            RecordOutcome::Loaded,
            RecordOutcome::DuplicateInBatch,
            RecordOutcome::DuplicateInBatch
        ]
    );
    assert_eq!(stack.parquet_event_ids(), expected_ids(&["a", "b"]));
    assert_eq!(stack.row_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_redelivered_batch_is_recognised_as_duplicates() {
    // Given a batch already loaded by one invocation
    let stack = Stack::new();
    let ids = ["a", "b", "c"];
    let (p1, _) = stack.pipeline();
    p1.process(
        &batch_of(&ids, 1),
        &invocation("inv-1", Duration::from_secs(30)),
    )
    .await;
    // When the same batch arrives again, and a producer retry with new sequence numbers too
    let (p2, _) = stack.pipeline();
    let again = p2
        .process(
            &batch_of(&ids, 1),
            &invocation("inv-2", Duration::from_secs(30)),
        )
        .await;
    let retry = p2
        .process(
            &batch_of(&ids, 50),
            &invocation("inv-3", Duration::from_secs(30)),
        )
        .await;
    // Then nothing is written twice
    assert!(again
        .outcomes
        .iter()
        .all(|o| *o == RecordOutcome::Duplicate));
    assert!(retry
        .outcomes
        .iter()
        .all(|o| *o == RecordOutcome::Duplicate));
    assert_eq!(stack.parquet_event_ids(), expected_ids(&ids));
    assert_eq!(
        stack
            .rows
            .rows
            .lock()
            .unwrap()
            .values()
            .map(|r| r.writes)
            .sum::<u32>(),
        3
    );
}

#[tokio::test(start_paused = true)]
async fn poison_goes_to_the_dead_letter_queue_without_blocking_the_shard() {
    let stack = Stack::new();
    let (p, _) = stack.pipeline();
    let mut batch = batch_of(&["a"], 1);
    batch.records.push(record(2, Some(vec![0xff, 0xfe])));
    batch.records.push(record(3, Some(b"[1]".to_vec())));
    batch.records.push(record(4, None));
    batch.records.push(record(5, Some(event_json("b"))));
    let report = p
        .process(&batch, &invocation("inv-1", Duration::from_secs(30)))
        .await;
    assert!(report.failures.is_empty(), "poison is not a failure");
    assert_eq!(report.summary.poison, 3);
    let sent = stack.dead_letters.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 3);
    let first: serde_json::Value =
        serde_json::from_str(sent.iter().find(|b| b.contains("\"decode\"")).unwrap()).unwrap();
    assert_eq!(first["data_base64"], "//4=");
    assert_eq!(stack.parquet_event_ids(), expected_ids(&["a", "b"]));
    // When the same batch is delivered again, Then no dead letter is queued twice: the
    // archived message proves each one sent
    redeliver_expecting_only_duplicates(&stack, &batch, "inv-2").await;
    assert_eq!(stack.dead_letters.sent.lock().unwrap().len(), 3);
}

/// A batch of `n` poison records (undecodable bytes), positions from 1.
fn poison_batch(n: u64) -> Batch {
    Batch {
        records: (1..=n)
            .map(|seq| record(seq, Some(vec![0xff, seq as u8])))
            .collect(),
    }
}

#[tokio::test(start_paused = true)]
async fn poison_records_go_to_the_queue_ten_to_a_request_each_once() {
    // Given a batch of 25 poison records
    let stack = Stack::new();
    let (p, _) = stack.pipeline();
    let batch = poison_batch(25);
    // When it is processed
    let report = p
        .process(&batch, &invocation("inv-1", Duration::from_secs(30)))
        .await;
    // Then all 25 are dead-lettered in three requests (10 + 10 + 5), each letter once
    assert!(report.failures.is_empty());
    assert_eq!(report.summary.poison, 25);
    assert_eq!(stack.dead_letters.requests.load(Ordering::SeqCst), 3);
    let mut sent = stack.dead_letters.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 25);
    sent.sort();
    sent.dedup();
    assert_eq!(sent.len(), 25, "no letter twice");
    // ...and archived together: one object, a line per letter sent, in position order
    let archives = stack.archives();
    assert_eq!(archives.len(), 1, "{:?}", archives.keys());
    let (key, lines) = archives.iter().next().unwrap();
    assert_eq!(
        key,
        "dead-letter/orders_shardId-000000000000/1-25-inv-1.jsonl"
    );
    let positions: Vec<String> = lines
        .iter()
        .map(|l| l["source"]["sequence_number"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (1..=25).map(|n| n.to_string()).collect();
    assert_eq!(positions, expected);
}

#[tokio::test(start_paused = true)]
async fn a_letter_the_queue_refuses_for_now_is_sent_again_alone() {
    // Given a queue that refuses the first letter of the next batch as its own fault
    let stack = Stack::new();
    let (p, _) = stack.pipeline();
    stack
        .dead_letters
        .refuse_retryably
        .store(1, Ordering::SeqCst);
    // When three poison records are processed
    let report = p
        .process(
            &poison_batch(3),
            &invocation("inv-1", Duration::from_secs(30)),
        )
        .await;
    // Then all three are dead-lettered, the refused one by a second request of its own, and
    // none is queued twice
    assert!(report.failures.is_empty(), "{:?}", report.outcomes);
    assert_eq!(report.summary.poison, 3);
    assert_eq!(stack.dead_letters.requests.load(Ordering::SeqCst), 2);
    assert_eq!(stack.dead_letters.sent.lock().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_letter_the_queue_rejects_fails_alone_and_gives_its_claim_back() {
    // Given a queue that rejects the first letter of the next batch for good
    let stack = Stack::new();
    let (p, _) = stack.pipeline();
    stack
        .dead_letters
        .refuse_for_good
        .store(1, Ordering::SeqCst);
    // When three poison records are processed
    let batch = poison_batch(3);
    let report = p
        .process(&batch, &invocation("inv-1", Duration::from_secs(30)))
        .await;
    // Then the rejected one fails (to be redelivered), the other two are dead-lettered...
    assert_eq!(
        report.outcomes,
        vec![
            RecordOutcome::Failed(FailureCause::DeadLetterQueue),
            RecordOutcome::DeadLettered(PoisonKind::Decode),
            RecordOutcome::DeadLettered(PoisonKind::Decode),
        ]
    );
    assert_eq!(stack.dead_letters.sent.lock().unwrap().len(), 2);
    // ...and its claim is released, so the redelivery sends it at once, and only it
    assert_eq!(stack.dedup.claims.lock().unwrap().len(), 2);
    let (p2, _) = stack.pipeline();
    let again = p2
        .process(&batch, &invocation("inv-2", Duration::from_secs(30)))
        .await;
    assert!(again.failures.is_empty(), "{:?}", again.outcomes);
    assert_eq!(
        again.outcomes[0],
        RecordOutcome::DeadLettered(PoisonKind::Decode)
    );
    assert_eq!(stack.dead_letters.sent.lock().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_rejected_letter_whose_claim_stays_holds_the_archive_back_and_nothing_is_lost() {
    // Given a queue that rejects the first letter of the next batch for good, and claim
    // releases that fail
    let stack = Stack::new();
    let (p, s) = stack.pipeline();
    stack
        .dead_letters
        .refuse_for_good
        .store(1, Ordering::SeqCst);
    s.dedup.fail_releases.store(true, Ordering::SeqCst);
    // When three poison records are processed in a short invocation
    let batch = poison_batch(3);
    let report = p
        .process(&batch, &invocation("inv-1", Duration::from_millis(500)))
        .await;
    // Then two are sent, but the archive naming the rejected one's kept claim is not written
    assert_eq!(
        report.outcomes,
        vec![
            RecordOutcome::Failed(FailureCause::DeadLetterQueue),
            RecordOutcome::DeadLettered(PoisonKind::Decode),
            RecordOutcome::DeadLettered(PoisonKind::Decode),
        ]
    );
    assert_eq!(stack.dead_letters.sent.lock().unwrap().len(), 2);
    assert!(stack.archives().is_empty());
    assert_eq!(stack.dedup.claims.lock().unwrap().len(), 3);
    // When the batch is redelivered after the lease, and again
    tokio::time::sleep(Duration::from_millis(600)).await;
    for attempt in ["inv-2", "inv-3"] {
        let (p, _) = stack.pipeline();
        let r = p
            .process(&batch, &invocation(attempt, Duration::from_secs(30)))
            .await;
        assert!(r.failures.is_empty(), "{attempt}: {:?}", r.outcomes);
    }
    // Then the rejected record is dead-lettered too: the two sent ones once more (the
    // documented window, same dedup_id), then never again
    let sent = stack.dead_letters.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 5);
    let archives = stack.archives();
    assert_eq!(archives.len(), 1);
    assert_eq!(archives.values().next().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_too_large_for_the_queue_keeps_its_bytes_in_the_object_store() {
    let stack = Stack::new();
    let (mut p, _) = stack.pipeline();
    p.dead_letters.inner.max_body_bytes = 600;
    let batch = Batch {
        records: vec![record(9, Some(vec![b'x'; 1000]))],
    };
    let report = p
        .process(&batch, &invocation("inv-1", Duration::from_secs(30)))
        .await;
    assert!(report.failures.is_empty());
    let sent = stack.dead_letters.sent.lock().unwrap().clone();
    let msg: serde_json::Value = serde_json::from_str(&sent[0]).unwrap();
    let key = msg["data_s3_key"].as_str().unwrap();
    assert_eq!(stack.objects.objects.lock().unwrap()[key], vec![b'x'; 1000]);
}

#[tokio::test(start_paused = true)]
async fn a_database_outage_reports_the_lowest_failed_record_and_loses_nothing() {
    // Given the database is down
    let stack = Stack::new();
    let (p, s) = stack.pipeline();
    s.rows.fail.store(true, Ordering::SeqCst);
    let ids = ["a", "b", "c"];
    // When a batch is processed
    let report = p
        .process(
            &batch_of(&ids, 10),
            &invocation("inv-1", Duration::from_secs(30)),
        )
        .await;
    // Then the first record is reported, and the claims are released for the redelivery
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.failures[0].1.as_str(), "10");
    assert!(report
        .outcomes
        .iter()
        .all(|o| *o == RecordOutcome::Failed(FailureCause::Database)));
    assert!(stack.dedup.claims.lock().unwrap().is_empty());
    // When the database is back and the batch is redelivered
    s.rows.fail.store(false, Ordering::SeqCst);
    let (p2, _) = stack.pipeline();
    let again = p2
        .process(
            &batch_of(&ids, 10),
            &invocation("inv-2", Duration::from_secs(30)),
        )
        .await;
    assert!(again.failures.is_empty());
    assert_eq!(stack.parquet_event_ids(), expected_ids(&ids));
    assert_eq!(stack.row_count(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_claim_held_by_a_live_invocation_is_a_transient_failure() {
    // Given another invocation holds "b" and is still running and renewing its lease (stuck
    // in the database, long deadline)
    let stack = Stack::new();
    // When a different batch with "a", "b", "c" arrives 200 ms later
    let report = beside_a_live_holder_of(&stack, "b", &batch_of(&["a", "b", "c"], 20)).await;
    // Then "b" is reported (position 21), "a" and "c" load
    assert_eq!(
        report.outcomes[1],
        RecordOutcome::Failed(FailureCause::HeldByLiveInvocation)
    );
    assert_eq!(report.failures[0].1.as_str(), "21");
    assert_eq!(stack.parquet_event_ids(), expected_ids(&["a", "c"]));
    // And the holder was never revoked: it renewed all along
    assert!(!stack.dedup.leases.lock().unwrap()["inv-1"].revoked);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_stops_new_work_and_reports_the_first_record() {
    let stack = Stack::new();
    let (p, _) = stack.pipeline();
    // A budget smaller than the finish margin: nothing may start.
    let report = p
        .process(
            &batch_of(&["a", "b"], 5),
            &invocation("inv-1", Duration::from_millis(100)),
        )
        .await;
    assert!(report
        .outcomes
        .iter()
        .all(|o| *o == RecordOutcome::Failed(FailureCause::Deadline)));
    assert_eq!(report.failures[0].1.as_str(), "5");
    assert_eq!(stack.row_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_lost_object_store_answer_still_counts_the_object_once() {
    // Given the store writes the object but the answer is lost
    let stack = Stack::new();
    let (p, s) = stack.pipeline();
    s.objects.lose_answers.store(true, Ordering::SeqCst);
    let report = p
        .process(
            &batch_of(&["a", "b"], 1),
            &invocation("inv-1", Duration::from_secs(30)),
        )
        .await;
    // Then the existence check proves it written
    assert!(report.failures.is_empty(), "{:?}", report.outcomes);
    assert_eq!(stack.parquet_event_ids(), expected_ids(&["a", "b"]));
}

#[tokio::test(start_paused = true)]
async fn the_wake_pacer_counts_every_claim_write_and_none_stays_in_flight() {
    // Given a pipeline counting its claim writes for the runtime's park hook, and a claims
    // store whose answers are lost after the write is applied (each write is sent again)
    let stack = Stack::new();
    let (mut p, s) = stack.pipeline();
    let pacer: &'static WakePacer = Box::leak(Box::new(WakePacer::new(PacingConfig::DEFAULT)));
    p.settings.wake_pacer = Some(pacer);
    s.dedup.lose_answers.store(true, Ordering::SeqCst);
    // When a batch of three new events is processed
    let report = p
        .process(
            &batch_of(&["a", "b", "c"], 1),
            &invocation("inv-1", Duration::from_secs(30)),
        )
        .await;
    // Then every write sent counted as in flight until it ended, answered or not
    assert!(report.failures.is_empty(), "{:?}", report.outcomes);
    let writes = stack.dedup.writes.load(Ordering::SeqCst) as u64;
    assert!(writes >= 3, "{writes} writes");
    assert_eq!(pacer.answered(), writes);
    assert_eq!(pacer.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_lost_claim_answer_is_resolved_by_reading_the_claim() {
    let stack = Stack::new();
    let (p, s) = stack.pipeline();
    s.dedup.lose_answers.store(true, Ordering::SeqCst);
    let report = p
        .process(
            &batch_of(&["a", "b"], 1),
            &invocation("inv-1", Duration::from_secs(30)),
        )
        .await;
    assert!(report.failures.is_empty(), "{:?}", report.outcomes);
    assert_eq!(stack.parquet_event_ids(), expected_ids(&["a", "b"]));
}

#[tokio::test(start_paused = true)]
async fn an_unknown_claim_keeps_its_object_unwritten() {
    // Given claims that land but whose answers are lost, and claims that cannot be read back
    let stack = Stack::new();
    let (p, s) = stack.pipeline();
    s.dedup.lose_answers.store(true, Ordering::SeqCst);
    s.dedup.fail_reads.store(true, Ordering::SeqCst);
    // When a batch is processed
    let report = p
        .process(
            &batch_of(&["a", "b"], 1),
            &invocation("inv-1", Duration::from_secs(30)),
        )
        .await;
    // Then nothing is written, since the object would prove events it might lack
    assert!(
        report
            .outcomes
            .iter()
            .all(|o| *o == RecordOutcome::Failed(FailureCause::Dedup)),
        "{:?}",
        report.outcomes
    );
    assert!(stack.objects.objects.lock().unwrap().is_empty());
    assert_eq!(stack.row_count(), 0);
    // And a redelivery loads both once
    let (p2, _) = stack.pipeline();
    let again = p2
        .process(
            &batch_of(&["a", "b"], 1),
            &invocation("inv-2", Duration::from_secs(30)),
        )
        .await;
    assert!(again.failures.is_empty(), "{:?}", again.outcomes);
    assert_eq!(stack.parquet_event_ids(), expected_ids(&["a", "b"]));
}

/// Runs a batch in a sandbox that crashes at the switch's point, then redelivers it to a
/// fresh sandbox after the crashed invocation's deadline: both sinks must hold each event once.
async fn crash_then_redeliver(arm: impl Fn(&Switches)) {
    let stack = Stack::new();
    let ids = ["a", "b", "c", "a", "d"];
    let mut batch = batch_of(&ids, 1);
    batch.records.push(record(99, Some(b"not json".to_vec())));
    // Given a sandbox that dies at the armed point (its deadline is 1 s away; Lambda stops
    // it after 300 ms, long before its own bounded calls would give up)
    let (p1, s1) = stack.pipeline();
    arm(&s1);
    let crashed = tokio::time::timeout(
        Duration::from_millis(300),
        p1.process(
            &batch,
            &invocation("inv-crashed", Duration::from_millis(1000)),
        ),
    )
    .await;
    assert!(crashed.is_err(), "the first invocation must have crashed");
    drop(p1);
    // When Lambda redelivers the batch to a new sandbox, possibly before the lease is over
    let (p2, _) = stack.pipeline();
    let report = p2
        .process(&batch, &invocation("inv-retry", Duration::from_secs(30)))
        .await;
    // Then every event is in both sinks exactly once, and nothing is reported failed
    assert!(report.failures.is_empty(), "{:?}", report.outcomes);
    assert_eq!(stack.parquet_event_ids(), expected_ids(&ids));
    assert_eq!(stack.row_count(), 4);
    assert!(!stack.dead_letters.sent.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn every_crash_point_then_redelivery_is_exactly_once() {
    type CrashPoint = (&'static str, fn(&Switches));
    let points: [CrashPoint; 5] = [
        ("while claiming", |s| {
            s.dedup.crash_after.store(true, Ordering::SeqCst)
        }),
        ("after claims, before the database", |s| {
            s.rows.crash_before.store(true, Ordering::SeqCst)
        }),
        ("after the database commit, before the object", |s| {
            s.rows.crash_after.store(true, Ordering::SeqCst)
        }),
        ("after the object, before answering", |s| {
            s.objects.crash_after.store(true, Ordering::SeqCst)
        }),
        ("after dead-lettering", |s| {
            s.dead_letters.crash_after.store(true, Ordering::SeqCst);
            s.rows.crash_before.store(true, Ordering::SeqCst);
        }),
    ];
    for (point, arm) in points {
        eprintln!("crash point: {point}");
        crash_then_redeliver(arm).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_repeats_only_when_the_sandbox_dies_between_send_and_archive() {
    // Given a batch with one poison record, and a sandbox that dies right after the send
    let stack = Stack::new();
    let batch = Batch {
        records: vec![
            record(1, Some(b"not json".to_vec())),
            record(2, Some(event_json("a"))),
        ],
    };
    let (p1, s1) = stack.pipeline();
    s1.dead_letters.crash_after.store(true, Ordering::SeqCst);
    let crashed = tokio::time::timeout(
        Duration::from_millis(300),
        p1.process(
            &batch,
            &invocation("inv-crashed", Duration::from_millis(1000)),
        ),
    )
    .await;
    assert!(crashed.is_err());
    // When the batch is redelivered twice more
    for attempt in ["inv-2", "inv-3"] {
        let (p, _) = stack.pipeline();
        let r = p
            .process(&batch, &invocation(attempt, Duration::from_secs(30)))
            .await;
        assert!(r.failures.is_empty(), "{:?}", r.outcomes);
    }
    // Then the message was sent once more after the crash (the documented window), never again
    assert_eq!(stack.dead_letters.sent.lock().unwrap().len(), 2);
    let archives = stack
        .objects
        .objects
        .lock()
        .unwrap()
        .keys()
        .filter(|k| k.ends_with(".jsonl"))
        .count();
    assert_eq!(archives, 1);
}

#[tokio::test(start_paused = true)]
async fn a_row_the_database_refuses_is_dead_lettered_and_the_rest_of_the_batch_loads() {
    // Given a table that refuses one user's rows (as a CHECK constraint would)
    let stack = Stack::new();
    stack
        .rows
        .refused_users
        .lock()
        .unwrap()
        .insert("u-b".into());
    let (p, _) = stack.pipeline();
    // When a batch with that user's event between two others is processed
    let report = p
        .process(
            &batch_of(&["a", "b", "c"], 1),
            &invocation("inv-1", Duration::from_secs(30)),
        )
        .await;
    // Then the others load in this invocation and the refused one is dead-lettered, not failed
    assert_eq!(
        report.outcomes,
        vec![
            RecordOutcome::Loaded,
            RecordOutcome::DeadLettered(PoisonKind::Refused),
            RecordOutcome::Loaded
        ]
    );
    assert!(report.failures.is_empty());
    assert_eq!(stack.parquet_event_ids(), expected_ids(&["a", "c"]));
    assert_eq!(stack.row_count(), 2);
    let sent = stack.dead_letters.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    let msg: serde_json::Value = serde_json::from_str(&sent[0]).unwrap();
    assert_eq!(msg["kind"], "refused");
    assert!(msg["reason"].as_str().unwrap().contains("23514"), "{msg}");
    // When the batch is delivered again, Then nothing more is loaded or queued
    let (p2, _) = stack.pipeline();
    let again = p2
        .process(
            &batch_of(&["a", "b", "c"], 1),
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
    assert_eq!(stack.dead_letters.sent.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_call_that_never_answers_is_cut_off_before_the_deadline() {
    // Given an object store that never answers (a black-holed connection)
    let stack = Stack::new();
    let (p, s) = stack.pipeline();
    s.objects.crash_before.store(true, Ordering::SeqCst);
    let budget = Duration::from_millis(1500);
    // When a batch is processed with 1.5 s left
    let started = std::time::Instant::now();
    let report = p
        .process(&batch_of(&["a", "b"], 1), &invocation("inv-1", budget))
        .await;
    // Then the answer comes before the deadline, reporting the first record
    assert!(started.elapsed() < budget, "{:?}", started.elapsed());
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.failures[0].1, Position::from_offset(1));
    // And a redelivery after the lease loads each event once in both sinks
    let (p2, _) = stack.pipeline();
    let again = p2
        .process(
            &batch_of(&["a", "b"], 1),
            &invocation("inv-2", Duration::from_secs(30)),
        )
        .await;
    assert!(again.failures.is_empty(), "{:?}", again.outcomes);
    assert_eq!(stack.parquet_event_ids(), expected_ids(&["a", "b"]));
}

#[tokio::test(start_paused = true)]
async fn definite_failures_are_retried_inside_the_invocation() {
    // Given a dedup store and an object store that each fail their next three calls
    let stack = Stack::new();
    let (p, s) = stack.pipeline();
    s.dedup.fail_next.store(3, Ordering::SeqCst);
    s.objects.fail_next.store(3, Ordering::SeqCst);
    // When a batch is processed
    let report = p
        .process(
            &batch_of(&["a", "b", "c"], 1),
            &invocation("inv-1", Duration::from_secs(30)),
        )
        .await;
    // Then it completes in this invocation
    assert!(report.failures.is_empty(), "{:?}", report.outcomes);
    assert_eq!(stack.parquet_event_ids(), expected_ids(&["a", "b", "c"]));
}

#[tokio::test(start_paused = true)]
async fn a_claim_whose_answer_was_lost_is_recognised_by_its_retry() {
    // Given claims whose first answer is lost after they landed
    let stack = Stack::new();
    let (p, s) = stack.pipeline();
    s.dedup.lose_next.store(2, Ordering::SeqCst);
    // When a batch is processed
    let report = p
        .process(
            &batch_of(&["a", "b"], 1),
            &invocation("inv-1", Duration::from_secs(30)),
        )
        .await;
    // Then the retried conditional write meets its own claim and the batch loads
    assert!(report.failures.is_empty(), "{:?}", report.outcomes);
    assert_eq!(stack.parquet_event_ids(), expected_ids(&["a", "b"]));
}

#[tokio::test(start_paused = true)]
async fn two_poison_records_at_the_same_coordinates_are_both_dead_lettered() {
    // Given a poison record at position 5, then (a re-created stream) other poison bytes at 5
    let stack = Stack::new();
    for (attempt, bytes) in [
        ("inv-1", &b"not json"[..]),
        ("inv-2", &b"also not json"[..]),
    ] {
        let (p, _) = stack.pipeline();
        let batch = Batch {
            records: vec![record(5, Some(bytes.to_vec()))],
        };
        // When each is delivered
        let r = p
            .process(&batch, &invocation(attempt, Duration::from_secs(30)))
            .await;
        assert!(r.failures.is_empty(), "{:?}", r.outcomes);
    }
    // Then both reach the queue, each archived under its own key
    assert_eq!(stack.dead_letters.sent.lock().unwrap().len(), 2);
    let archives = stack
        .objects
        .objects
        .lock()
        .unwrap()
        .keys()
        .filter(|k| k.ends_with(".jsonl"))
        .count();
    assert_eq!(archives, 2);
}

#[test]
fn bisection_finds_each_row_the_encoder_refuses() {
    use streamload_core::pipeline::isolate_refusals;
    // Given an encoder that refuses members 3 and 11 of 16
    let encode = |members: &[usize]| {
        if members.iter().any(|m| *m == 3 || *m == 11) {
            Err("value out of range")
        } else {
            Ok(vec![])
        }
    };
    let members: Vec<usize> = (0..16).collect();
    // When the refused members are isolated
    let mut refused = Vec::new();
    isolate_refusals(&members, &encode, &mut refused);
    // Then exactly those two are named, with the encoder's reason
    let named: Vec<usize> = refused.iter().map(|(i, _)| *i).collect();
    assert_eq!(named, vec![3, 11]);
    assert!(refused[0].1.contains("value out of range"));
}
