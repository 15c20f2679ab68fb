//! KPL aggregates through the whole pipeline (in-memory adapters, paused time), with a batch
//! packed by AWS's own aggregation library (`events/kinesis-kpl.json`, written by
//! `scripts/kpl-fixture.py` with `aws-kinesis-agg`): each user record is an event of its own,
//! a poison user record goes to the dead-letter queue alone, a failure names the aggregate,
//! and the aggregate's redelivery loads nothing twice.

mod common;

use base64::Engine;
use common::*;
use std::time::Duration;
use streamload_core::record::Batch;
use streamload_core::{FailureCause, PoisonKind, RecordOutcome};

/// The first aggregate's sequence number in the fixture.
const FIRST_AGGREGATE: &str = "49590338271490256608559692538361571095921575989136588801";

fn fixture() -> Batch {
    let path = format!(
        "{}/../../events/kinesis-kpl.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).unwrap();
    streamload_core::kinesis::decode(&text).unwrap()
}

fn kpl_ids(ns: &[u32]) -> Vec<String> {
    let ids: Vec<String> = ns.iter().map(|n| format!("kpl-{n:04}")).collect();
    expected_ids(&ids.iter().map(String::as_str).collect::<Vec<_>>())
}

#[tokio::test(start_paused = true)]
async fn each_user_record_loads_once_and_a_poison_one_is_dead_lettered_alone() {
    // Given a batch of two good aggregates (one holding a poison user record), a plain record
    // and an aggregate whose digest is damaged
    let stack = Stack::new();
    let (p, _) = stack.pipeline();
    let batch = fixture();
    // When it is processed
    let report = p
        .process(&batch, &invocation("inv-1", Duration::from_secs(30)))
        .await;
    // Then every user record is an event of its own and the batch succeeds
    use RecordOutcome::{DeadLettered, Loaded};
    let poison = DeadLettered(PoisonKind::Decode);
    assert_eq!(
        report.outcomes,
        [Loaded, Loaded, poison, Loaded, Loaded, Loaded, Loaded, Loaded, Loaded, poison]
    );
    assert!(report.failures.is_empty());
    assert_eq!(
        stack.parquet_event_ids(),
        kpl_ids(&[1, 2, 3, 4, 5, 6, 7, 8])
    );
    assert_eq!(stack.row_count(), 8);
    // And the lake's lineage names each user record's place in its aggregate
    let positions = stack.parquet_column("source_position");
    assert!(
        positions.contains(&format!("{FIRST_AGGREGATE}.3")),
        "{positions:?}"
    );
    // And the poison user record's letter holds its own bytes and coordinates; the damaged
    // aggregate's holds the whole aggregate and says why
    let sent = stack.dead_letters.sent.lock().unwrap().clone();
    let letters: Vec<serde_json::Value> = sent
        .iter()
        .map(|m| serde_json::from_str(m).unwrap())
        .collect();
    assert_eq!(letters.len(), 2, "{letters:?}");
    let sibling = letters
        .iter()
        .find(|l| l["source"]["sub_sequence_number"] == 2)
        .expect("the poison user record's letter");
    assert_eq!(sibling["source"]["sequence_number"], FIRST_AGGREGATE);
    assert_eq!(sibling["source"]["partition_key"], "user-1");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sibling["data_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes, b"{not json");
    let damaged = letters
        .iter()
        .find(|l| l["source"]["sub_sequence_number"].is_null())
        .expect("the damaged aggregate's letter");
    assert!(
        damaged["reason"].as_str().unwrap().contains("MD5"),
        "{damaged}"
    );
    // When the same batch is delivered again, Then nothing is loaded or queued twice
    redeliver_expecting_only_duplicates(&stack, &batch, "inv-2").await;
    assert_eq!(
        stack.parquet_event_ids(),
        kpl_ids(&[1, 2, 3, 4, 5, 6, 7, 8])
    );
    assert_eq!(stack.dead_letters.sent.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failure_inside_an_aggregate_names_it_and_its_redelivery_loads_only_what_is_missing() {
    // Given another invocation holding the claim of the second user record's event (kpl-0002),
    // alive and renewing, stuck in the database
    let stack = Stack::new();
    // When the fixture batch arrives 200 ms later
    let batch = fixture();
    let report = beside_a_live_holder_of(&stack, "kpl-0002", &batch).await;
    // Then that user record fails, and the failure names its aggregate: the only record the
    // mapping knows
    assert_eq!(
        report.outcomes[1],
        RecordOutcome::Failed(FailureCause::HeldByLiveInvocation)
    );
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.failures[0].1.as_str(), FIRST_AGGREGATE);
    assert_eq!(report.failures[0].1.sub_sequence(), Some(1));
    assert_eq!(
        streamload_core::kinesis::failure_identifier(&report.failures[0].0, &report.failures[0].1),
        FIRST_AGGREGATE
    );
    assert_eq!(stack.parquet_event_ids(), kpl_ids(&[1, 3, 4, 5, 6, 7, 8]));
    // When the holder is gone (its future dropped: the sandbox died) and the mapping
    // redelivers from the aggregate on
    let (p3, _) = stack.pipeline();
    let again = p3
        .process(&batch, &invocation("inv-3", Duration::from_secs(30)))
        .await;
    // Then only the missing event loads; its siblings and the rest are duplicates
    assert!(again.failures.is_empty(), "{:?}", again.outcomes);
    assert_eq!(again.outcomes[1], RecordOutcome::Loaded);
    let loaded = again
        .outcomes
        .iter()
        .filter(|o| **o == RecordOutcome::Loaded)
        .count();
    assert_eq!(loaded, 1, "{:?}", again.outcomes);
    assert_eq!(
        stack.parquet_event_ids(),
        kpl_ids(&[1, 2, 3, 4, 5, 6, 7, 8])
    );
    assert_eq!(stack.dead_letters.sent.lock().unwrap().len(), 2);
}
