//! The sample payloads in events/ decode and load as documented in the README.

use std::time::Duration;
use streamload_core::RecordOutcome;
use streamload_tests::*;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR")))
        .expect("fixture")
}

fn count(outcomes: &[RecordOutcome], f: impl Fn(&RecordOutcome) -> bool) -> usize {
    outcomes.iter().filter(|o| f(o)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_events_load_through_the_real_pipeline() {
    // Given the three sample payloads and a fresh stack
    let stack = TestStack::new("fixtures", false).await;
    let p = stack.pipeline().await;
    let kinesis = streamload_core::kinesis::decode(&fixture("kinesis.json")).unwrap();
    let msk = streamload_core::kafka::decode(&fixture("msk.json")).unwrap();
    let smk = streamload_core::kafka::decode(&fixture("self-managed-kafka.json")).unwrap();
    // When each is processed
    let k = p
        .process(&kinesis, &invocation("k", Duration::from_secs(30)))
        .await;
    let m = p
        .process(&msk, &invocation("m", Duration::from_secs(30)))
        .await;
    let s = p
        .process(&smk, &invocation("s", Duration::from_secs(30)))
        .await;
    // Then the counts match what the fixtures hold
    assert_eq!(count(&k.outcomes, |o| *o == RecordOutcome::Loaded), 2);
    assert_eq!(
        count(&k.outcomes, |o| *o == RecordOutcome::DuplicateInBatch),
        1
    );
    assert_eq!(
        count(&k.outcomes, |o| matches!(o, RecordOutcome::DeadLettered(_))),
        1
    );
    assert_eq!(count(&m.outcomes, |o| *o == RecordOutcome::Loaded), 2);
    assert_eq!(
        count(&m.outcomes, |o| matches!(
            o,
            RecordOutcome::DeadLettered(streamload_core::PoisonKind::Tombstone)
        )),
        1
    );
    assert_eq!(
        count(&m.outcomes, |o| *o == RecordOutcome::DuplicateInBatch),
        1
    );
    assert_eq!(count(&s.outcomes, |o| *o == RecordOutcome::Loaded), 2);
    assert_eq!(
        count(&s.outcomes, |o| matches!(o, RecordOutcome::DeadLettered(_))),
        1
    );
    assert_eq!(stack.row_ids().await.len(), 6);
    assert_eq!(stack.parquet_ids().await.len(), 6);
}
