//! Recovery in seconds and progress under slow dependencies, against in-memory adapters in
//! tokio's paused time. The renewable holder lease: a dead holder is taken over within
//! seconds whatever its function timeout, a live one keeps its claims by renewing, and a
//! holder that cannot renew stops writing at its fence before a taker could take over. The
//! claim phase sized to the budget: every invocation loads what it claimed. Time is moved, never slept (docs/exactly-once.md, "Renewable
//! leases"). The same steps against the real binary and endpoint (SIGKILL, SIGSTOP, lost
//! answers) are in `functions/kinesis-loader/tests/leases.rs` and `cli/tests/mapping.rs`.

mod common;

use common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;
use streamload_core::clock::Clock;
use streamload_core::pipeline::{HOLDER_LEASE_MS, RENEW_EVERY_MS};
use streamload_core::record::Batch;
use streamload_core::{BatchReport, FailureCause, RecordOutcome};

/// Production's lease grace: the tests measure recovery as a deployment would see it.
const GRACE: Duration = Duration::from_secs(5);

fn with_production_grace((mut p, s): (TestPipeline, Switches)) -> (TestPipeline, Switches) {
    p.settings.lease_grace = GRACE;
    (p, s)
}

fn now() -> i64 {
    clock().now_ms()
}

#[tokio::test(start_paused = true)]
async fn a_dead_holders_claims_are_taken_over_within_ten_seconds_whatever_its_timeout() {
    // Given an invocation with a 900 s timeout that claimed "a" and "b", renewed its lease
    // for 3 s while stuck in the database, and then died (its sandbox killed)
    let stack = Stack::new();
    let (p1, s1) = with_production_grace(stack.pipeline());
    s1.rows.crash_before.store(true, Ordering::SeqCst);
    let b = batch_of(&["a", "b"], 1);
    let inv1 = invocation("inv-1", Duration::from_secs(900));
    let holder = p1.process(&b, &inv1);
    let died_at = tokio::select! {
        _ = holder => panic!("the holder is stuck in the database"),
        _ = tokio::time::sleep(Duration::from_secs(3)) => now(),
    };
    assert!(stack.dedup.leases.lock().unwrap().contains_key("inv-1"));
    // When the mapping redelivers the batch at once to an invocation with a 900 s timeout
    let (p2, _) = with_production_grace(stack.pipeline());
    let report = p2
        .process(&b, &invocation("inv-2", Duration::from_secs(900)))
        .await;
    // Then both load, less than 10 s after the holder's death, not after its timeout
    let took = now() - died_at;
    assert_eq!(report.outcomes, vec![RecordOutcome::Loaded; 2]);
    assert!(took <= 10_000, "took over after {took} ms");
    // And the dead holder's lease is revoked; each event is in the lake once
    assert!(stack.dedup.leases.lock().unwrap()["inv-1"].revoked);
    assert_eq!(stack.parquet_event_ids(), expected_ids(&["a", "b"]));
}

/// Holder "inv-1" (60 s timeout, switches set by `faults`) processes `b`; from 1 s later
/// the mapping hands the same records to other invocations, again after each failure, until
/// one loads them. Returns the holder's report and the loading taker's.
async fn holder_then_taker(
    stack: &Stack,
    b: &Batch,
    faults: impl FnOnce(&Switches),
) -> (BatchReport, BatchReport) {
    let (p1, s1) = with_production_grace(stack.pipeline());
    faults(&s1);
    let inv1 = invocation("inv-1", Duration::from_secs(60));
    let (p2, _) = with_production_grace(stack.pipeline());
    let taker = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for attempt in 0..4 {
            let id = format!("inv-2-{attempt}");
            let report = p2
                .process(b, &invocation(&id, Duration::from_secs(60)))
                .await;
            if report.failures.is_empty() {
                return report;
            }
        }
        panic!("never loaded");
    };
    tokio::join!(p1.process(b, &inv1), taker)
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_cannot_renew_stops_writing_at_its_fence_before_a_takeover() {
    // Given a holder whose database answers only after 12 s and whose renewals all fail
    let stack = Stack::new();
    let b = batch_of(&["a"], 1);
    // When the same record is redelivered to other invocations from 1 s later
    let (held, taken) = holder_then_taker(&stack, &b, |s| {
        s.rows.delay_ms.store(12_000, Ordering::SeqCst);
        s.dedup.fail_renewals.store(true, Ordering::SeqCst);
    })
    .await;
    // Then the holder's database call was cut at its fence and it wrote nothing after
    assert!(
        matches!(held.outcomes[0], RecordOutcome::Failed(_)),
        "{:?}",
        held.outcomes
    );
    // And a taker loaded the record, which is in the lake exactly once
    assert_eq!(taken.outcomes, vec![RecordOutcome::Loaded]);
    assert_eq!(stack.parquet_event_ids(), expected_ids(&["a"]));
}

#[tokio::test(start_paused = true)]
async fn renewals_applied_with_their_answers_lost_never_extend_the_holders_writes() {
    // Given a holder whose renewals are applied but never answered, and whose database
    // answers only after 12 s
    let stack = Stack::new();
    let b = batch_of(&["a"], 1);
    let started = now();
    // When the record is redelivered to other invocations from 1 s later
    let (held, taken) = holder_then_taker(&stack, &b, |s| {
        s.rows.delay_ms.store(12_000, Ordering::SeqCst);
        s.dedup.lose_renewal_answers.store(true, Ordering::SeqCst);
    })
    .await;
    // Then the stored lease moved, but the holder's fence did not: its database call was cut
    // at its first fence, and it stopped renewing there
    let lease = stack.dedup.leases.lock().unwrap()["inv-1"].clone();
    assert!(lease.alive_until_ms > started + HOLDER_LEASE_MS);
    assert!(lease.alive_until_ms <= started + 2 * HOLDER_LEASE_MS);
    assert!(matches!(held.outcomes[0], RecordOutcome::Failed(_)));
    // And the record is loaded once, by a taker
    assert_eq!(taken.outcomes, vec![RecordOutcome::Loaded]);
    assert_eq!(stack.parquet_event_ids(), expected_ids(&["a"]));
}

#[tokio::test(start_paused = true)]
async fn a_live_holder_keeps_its_claims_by_renewing_about_once_per_second() {
    // Given a holder whose database takes 20 s to answer (60 s timeout)
    let stack = Stack::new();
    let (p1, s1) = with_production_grace(stack.pipeline());
    s1.rows.delay_ms.store(20_000, Ordering::SeqCst);
    let b = batch_of(&["a", "b"], 1);
    let started = now();
    let inv1 = invocation("inv-1", Duration::from_secs(60));
    let holder = p1.process(&b, &inv1);
    // When the same records are redelivered to another invocation 1 s later
    let (p2, _) = with_production_grace(stack.pipeline());
    let taker = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        p2.process(&b, &invocation("inv-2", Duration::from_secs(30)))
            .await
    };
    let (held, taken) = tokio::join!(holder, taker);
    let elapsed_s = (now() - started) as f64 / 1000.0;
    // Then the holder loaded both: renewals moved its fence past the 20 s call
    assert_eq!(held.outcomes, vec![RecordOutcome::Loaded; 2]);
    // And the taker found it alive and took nothing over
    assert_eq!(
        taken.outcomes,
        vec![RecordOutcome::Failed(FailureCause::HeldByLiveInvocation); 2]
    );
    assert!(!stack.dedup.leases.lock().unwrap()["inv-1"].revoked);
    // And the lease cost at most one write per invocation-second
    let renewals = stack.dedup.lease_writes.lock().unwrap()["inv-1"];
    assert!(
        renewals as f64 <= elapsed_s,
        "{renewals} renewals in {elapsed_s} s"
    );
    assert!(renewals as f64 >= elapsed_s * 1000.0 / RENEW_EVERY_MS as f64 - 2.0);
    assert_eq!(stack.parquet_event_ids(), expected_ids(&["a", "b"]));
}

#[tokio::test(start_paused = true)]
async fn an_invocation_shorter_than_one_renewal_writes_no_lease() {
    // Given a batch that loads at once
    let stack = Stack::new();
    let (p, _) = with_production_grace(stack.pipeline());
    // When it is processed
    let report = p
        .process(
            &batch_of(&["a", "b", "c"], 1),
            &invocation("inv-1", Duration::from_secs(900)),
        )
        .await;
    // Then it loads with one claim write per record and no lease item at all
    assert_eq!(report.outcomes, vec![RecordOutcome::Loaded; 3]);
    assert_eq!(stack.dedup.writes.load(Ordering::SeqCst), 3);
    assert!(stack.dedup.leases.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn every_invocation_loads_what_it_claimed_when_every_claim_is_answered_late() {
    // Given a claim table that answers every write 0.8 s late (sustained throttling), and a
    // 1,000-record batch with a 10 s timeout
    let stack = Stack::new();
    let (p, s) = with_production_grace(stack.pipeline());
    s.dedup.delay_ms.store(800, Ordering::SeqCst);
    let ids: Vec<String> = (0..1_000).map(|n| format!("e{n:04}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut batch = batch_of(&refs, 1);
    // When the mapping delivers it, then redelivers from the lowest failed record until done
    let mut loaded_per_invocation = Vec::new();
    for n in 0..10 {
        let report = p
            .process(
                &batch,
                &invocation(&format!("inv-{n}"), Duration::from_secs(10)),
            )
            .await;
        let loaded = report
            .outcomes
            .iter()
            .filter(|o| **o == RecordOutcome::Loaded)
            .count();
        loaded_per_invocation.push(loaded);
        let Some((_, lowest)) = report.failures.first() else {
            break;
        };
        batch.records.retain(|r| r.position >= *lowest);
    }
    // Then every invocation loaded part of the batch (none loaded nothing), and every event
    // is in the lake once
    assert!(
        loaded_per_invocation.iter().all(|&n| n > 0),
        "{loaded_per_invocation:?}"
    );
    assert_eq!(loaded_per_invocation.iter().sum::<usize>(), 1_000);
    assert_eq!(stack.parquet_event_ids(), ids);
}
