//! The search index as the third sink, through the whole pipeline (in-memory stores with
//! fault switches): each event once in its newest version, written after the database and
//! before the object, faults retried within the budget or redelivered, refusals dead-lettered.

mod common;

use common::*;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;
use streamload_core::ports::SearchIndex;
use streamload_core::record::Batch;
use streamload_core::route::{ConfigFile, Routes};
use streamload_core::{FailureCause, PoisonKind, RecordOutcome};

/// Orders, newest revision wins, indexed under the order id; `note` only if `with_note`.
fn routes(with_note: bool) -> Routes {
    routes_with(with_note, true)
}

/// [`routes`], writing the table `orders` only if `table`.
fn routes_with(with_note: bool, table: bool) -> Routes {
    routes_to(with_note, table, true)
}

/// [`routes`], writing the table `orders` only if `table` and Parquet objects only if `lake`.
fn routes_to(with_note: bool, table: bool, lake: bool) -> Routes {
    let mut columns = vec![
        json!({"name": "order_id", "from": "/order_id", "type": "text", "required": true}),
        json!({"name": "revision", "from": "/revision", "type": "bigint", "required": true}),
        json!({"name": "qty", "from": "/qty", "type": "integer"}),
        json!({"name": "placed_at", "from": "/placed_at", "type": "timestamptz", "required": true}),
    ];
    if with_note {
        columns.push(json!({"name": "note", "from": "/note", "type": "text"}));
    }
    let mut route = json!({
        "name": "orders", "source": "kinesis:orders", "table": "orders",
        "event_time": "/placed_at", "key": ["order_id"], "merge": {"newest_by": "revision"},
        "index": {"name": "orders"}, "column": columns
    });
    if !table {
        route.as_object_mut().unwrap().remove("table");
    }
    if !lake {
        route["lake"] = json!(false);
    }
    let file: ConfigFile = serde_json::from_value(json!({ "route": [route] })).unwrap();
    Routes::compile(&file).unwrap()
}

/// A batch of orders `(id, revision, qty, note)` from sequence number `first_seq`.
fn orders(items: &[(&str, i64, i64, Option<&str>)], first_seq: u64) -> Batch {
    Batch {
        records: items
            .iter()
            .enumerate()
            .map(|(n, (id, revision, qty, note))| {
                let mut o = json!({"order_id": id, "revision": revision, "qty": qty,
                                   "placed_at": "2026-12-04T10:00:00Z"});
                if let Some(note) = note {
                    o["note"] = json!(note);
                }
                record(first_seq + n as u64, Some(o.to_string().into_bytes()))
            })
            .collect(),
    }
}

/// Runs `batch` in a fresh sandbox over `stack` with the orders route.
async fn run(stack: &Stack, batch: &Batch, id: &str) -> streamload_core::BatchReport {
    run_with(stack, batch, id, |_| {}).await
}

async fn run_with(
    stack: &Stack,
    batch: &Batch,
    id: &str,
    faults: impl FnOnce(&Switches),
) -> streamload_core::BatchReport {
    let (mut p, s) = stack.pipeline();
    p.settings.routes = routes(true);
    faults(&s);
    p.process(batch, &invocation(id, Duration::from_secs(30)))
        .await
}

/// The stored document of an order: (version, revision, qty).
async fn document(stack: &Stack, id: &str) -> Option<(u64, i64, i64)> {
    let d = stack.search.document("orders", id).await.unwrap()?;
    Some((
        d.version,
        d.source["revision"].as_i64().unwrap(),
        d.source["qty"].as_i64().unwrap(),
    ))
}

fn parquet_orders(stack: &Stack) -> Vec<String> {
    stack.parquet_column("order_id")
}

#[tokio::test(start_paused = true)]
async fn each_order_is_in_the_index_once_in_its_newest_revision_whatever_the_order_of_arrival() {
    let stack = Stack::new();
    // Given two orders loaded, then a newer revision of the first
    let first = orders(&[("o-1", 1, 10, None), ("o-2", 1, 20, None)], 1);
    assert!(run(&stack, &first, "a")
        .await
        .outcomes
        .iter()
        .all(|o| *o == RecordOutcome::Loaded));
    run(&stack, &orders(&[("o-1", 3, 30, None)], 3), "b").await;
    // When an older revision arrives late, and the first batch is delivered again
    let late = run(&stack, &orders(&[("o-1", 2, 99, None)], 4), "c").await;
    assert_eq!(late.outcomes, vec![RecordOutcome::Loaded]);
    let again = run(&stack, &first, "d").await;
    assert_eq!(again.outcomes, vec![RecordOutcome::Duplicate; 2]);
    // Then the index holds each order once, in its newest revision (version = revision + 1)
    assert_eq!(document(&stack, "o-1").await, Some((4, 3, 30)));
    assert_eq!(document(&stack, "o-2").await, Some((2, 1, 20)));
    assert_eq!(stack.search.documents.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_index_refusing_for_now_is_retried_within_the_budget_and_a_lost_answer_is_harmless() {
    let stack = Stack::new();
    // Given an index that refuses the first two requests, then loses the next answer
    let batch = orders(&[("o-1", 1, 10, None), ("o-2", 1, 20, None)], 1);
    let report = run_with(&stack, &batch, "a", |s| {
        s.search.fail_next.store(2, Ordering::SeqCst);
        s.search.lose_next.store(1, Ordering::SeqCst);
    })
    .await;
    // Then the batch loads in this invocation, each order once in every sink
    assert_eq!(report.outcomes, vec![RecordOutcome::Loaded; 2]);
    assert_eq!(document(&stack, "o-1").await, Some((2, 1, 10)));
    assert_eq!(parquet_orders(&stack), vec!["o-1", "o-2"]);
    assert_eq!(stack.row_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn documents_rejected_under_load_are_sent_again_alone_and_the_batch_loads() {
    let stack = Stack::new();
    // Given an index that rejects three documents of the first request (429 per item) and
    // applies the others
    stack.search.reject_next_items.store(3, Ordering::SeqCst);
    let batch = orders(
        &[
            ("o-1", 1, 10, None),
            ("o-2", 1, 20, None),
            ("o-3", 1, 30, None),
            ("o-4", 1, 40, None),
        ],
        1,
    );
    // When the batch is loaded
    let report = run(&stack, &batch, "a").await;
    // Then the rejected documents were sent again within the invocation, and every order is
    // in every sink once
    assert_eq!(report.outcomes, vec![RecordOutcome::Loaded; 4]);
    for (id, qty) in [("o-1", 10), ("o-2", 20), ("o-3", 30), ("o-4", 40)] {
        assert_eq!(document(&stack, id).await, Some((2, 1, qty)), "{id}");
    }
    assert_eq!(parquet_orders(&stack), vec!["o-1", "o-2", "o-3", "o-4"]);
}

#[tokio::test(start_paused = true)]
async fn an_index_down_fails_the_records_before_their_object_and_the_redelivery_loads_them_once() {
    let stack = Stack::new();
    // Given an index that refuses every request
    let batch = orders(&[("o-1", 1, 10, None), ("o-2", 1, 20, None)], 1);
    let report = run_with(&stack, &batch, "a", |s| {
        s.search.fail.store(true, Ordering::SeqCst)
    })
    .await;
    // Then the records fail, and no object vouches for them (the rows are in the database,
    // idempotently)
    assert_eq!(
        report.outcomes,
        vec![RecordOutcome::Failed(FailureCause::SearchIndex); 2]
    );
    assert!(parquet_orders(&stack).is_empty());
    assert_eq!(document(&stack, "o-1").await, None);
    // When the index is back and the batch is delivered again
    let again = run(&stack, &batch, "b").await;
    // Then each order is loaded once in every sink
    assert_eq!(again.outcomes, vec![RecordOutcome::Loaded; 2]);
    assert_eq!(parquet_orders(&stack), vec!["o-1", "o-2"]);
    assert_eq!(document(&stack, "o-2").await, Some((2, 1, 20)));
    assert_eq!(stack.row_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_document_the_index_refuses_is_dead_lettered_naming_the_index_while_the_rest_loads() {
    let stack = Stack::new();
    // Given an index whose strict mapping was made for the route without `note`
    let narrow = routes(false);
    stack
        .search
        .prepare("orders", narrow.get(0).search.as_ref().unwrap(), true)
        .await
        .unwrap();
    // When a batch holds one order with a note
    let batch = orders(
        &[
            ("o-1", 1, 10, None),
            ("o-2", 1, 20, Some("gift")),
            ("o-3", 1, 30, None),
        ],
        1,
    );
    let report = run(&stack, &batch, "a").await;
    // Then that order is dead-lettered with the index's reason, naming the field, not the
    // value; the others are loaded into every sink
    assert_eq!(
        report.outcomes,
        vec![
            RecordOutcome::Loaded,
            RecordOutcome::DeadLettered(PoisonKind::Refused),
            RecordOutcome::Loaded
        ]
    );
    let letters: Vec<serde_json::Value> = stack.archives().into_values().flatten().collect();
    assert_eq!(letters.len(), 1);
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("search index")
            && reason.contains("field note")
            && !reason.contains("gift"),
        "{reason}"
    );
    assert_eq!(parquet_orders(&stack), vec!["o-1", "o-3"]);
    assert_eq!(document(&stack, "o-2").await, None);
    // And a redelivery finds every record done
    let again = run(&stack, &batch, "b").await;
    assert_eq!(again.outcomes, vec![RecordOutcome::Duplicate; 3]);
    assert_eq!(stack.archives().into_values().flatten().count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_route_without_a_table_loads_its_index_and_lake_and_never_the_database() {
    let stack = Stack::new();
    // Given a route that names an index and no table, and the database failing every call
    let (mut p, s) = stack.pipeline();
    p.settings.routes = routes_with(false, false);
    s.rows.fail.store(true, Ordering::SeqCst);
    // When orders arrive, then an older revision late
    let batch = orders(&[("o-1", 2, 20, None), ("o-2", 1, 10, None)], 1);
    let report = p
        .process(&batch, &invocation("a", Duration::from_secs(30)))
        .await;
    let late = orders(&[("o-1", 1, 99, None)], 3);
    let late_report = p
        .process(&late, &invocation("b", Duration::from_secs(30)))
        .await;
    // Then everything loads without the database: the index holds the newest revisions and
    // the lake every event once
    assert_eq!(report.outcomes, vec![RecordOutcome::Loaded; 2]);
    assert_eq!(late_report.outcomes, vec![RecordOutcome::Loaded]);
    assert_eq!(stack.row_count(), 0);
    assert_eq!(document(&stack, "o-1").await, Some((3, 2, 20)));
    assert_eq!(parquet_orders(&stack), vec!["o-1", "o-1", "o-2"]);
}

#[tokio::test(start_paused = true)]
async fn a_route_without_a_lake_commits_by_markers_and_loads_each_event_once() {
    let stack = Stack::new();
    // Given a route with a table and an index but no lake, whose index's mapping lacks `note`
    let route = || routes_to(true, true, false);
    stack
        .search
        .prepare(
            "orders",
            routes(false).get(0).search.as_ref().unwrap(),
            true,
        )
        .await
        .unwrap();
    let batch = orders(
        &[
            ("o-1", 1, 10, None),
            ("o-2", 1, 20, Some("gift")),
            ("o-3", 1, 30, None),
        ],
        1,
    );
    // When the batch loads, one order's document refused by the index
    let (mut p, _) = stack.pipeline();
    p.settings.routes = route();
    let report = p
        .process(&batch, &invocation("a", Duration::from_secs(30)))
        .await;
    // Then the others are in the table and the index, no Parquet is written, and one commit
    // marker names each loaded event once (not the refused one, which is dead-lettered)
    assert_eq!(
        report.outcomes,
        vec![
            RecordOutcome::Loaded,
            RecordOutcome::DeadLettered(PoisonKind::Refused),
            RecordOutcome::Loaded
        ]
    );
    assert!(parquet_orders(&stack).is_empty());
    let markers = stack.markers();
    assert_eq!(markers.len(), 1, "{markers:?}");
    let (key, claims) = markers.into_iter().next().unwrap();
    assert!(
        key.starts_with("orders/_markers/") && key.ends_with("-a.jsonl"),
        "{key}"
    );
    // (the identity of a newest_by route holds its ordering column)
    assert_eq!(
        claims,
        vec![r#"rt:orders:["o-1","1"]"#, r#"rt:orders:["o-3","1"]"#]
    );
    assert_eq!(document(&stack, "o-3").await, Some((2, 1, 30)));
    // And a redelivery to a new sandbox finds every record done, by the marker
    let (mut p, _) = stack.pipeline();
    p.settings.routes = route();
    let again = p
        .process(&batch, &invocation("b", Duration::from_secs(30)))
        .await;
    assert_eq!(again.outcomes, vec![RecordOutcome::Duplicate; 3]);
    assert_eq!(stack.markers().len(), 1);
    // (the refused document's row stays in the table: docs/exactly-once.md, "The search index")
    assert_eq!(stack.row_count(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_lost_marker_write_answer_is_harmless_and_a_failed_marker_leaves_the_events_to_retry() {
    let stack = Stack::new();
    let batch = orders(&[("o-1", 1, 10, None), ("o-2", 1, 20, None)], 1);
    // Given a lake-less route whose object store fails every call
    let (mut p, s) = stack.pipeline();
    p.settings.routes = routes_to(false, true, false);
    s.objects.fail.store(true, Ordering::SeqCst);
    // When the batch is processed
    let failed = p
        .process(&batch, &invocation("a", Duration::from_secs(30)))
        .await;
    // Then nothing is reported loaded without its marker
    assert_eq!(
        failed.outcomes,
        vec![RecordOutcome::Failed(FailureCause::ObjectStore); 2]
    );
    assert!(stack.markers().is_empty());
    // When it is redelivered to a sandbox whose marker write is applied but its answer lost
    let (mut p, s) = stack.pipeline();
    p.settings.routes = routes_to(false, true, false);
    s.objects.lose_next.store(1, Ordering::SeqCst);
    let report = p
        .process(&batch, &invocation("b", Duration::from_secs(30)))
        .await;
    // Then the events load once: one marker naming both
    assert!(report.failures.is_empty(), "{:?}", report.outcomes);
    let markers: Vec<Vec<String>> = stack.markers().into_values().collect();
    assert_eq!(
        markers,
        vec![vec![r#"rt:orders:["o-1","1"]"#, r#"rt:orders:["o-2","1"]"#]]
    );
    assert_eq!(stack.row_count(), 2);
}

/// Orders kept first per order id, each revision an event of its own (identity order + revision).
fn keep_first_routes() -> Routes {
    let file: ConfigFile = serde_json::from_value(json!({ "route": [{
        "name": "orders", "source": "kinesis:orders", "table": "orders",
        "event_time": "/placed_at", "key": ["order_id"], "merge": "keep-first",
        "identity": ["/order_id", "/revision"],
        "index": {"name": "orders"},
        "column": [
            {"name": "order_id", "from": "/order_id", "type": "text", "required": true},
            {"name": "revision", "from": "/revision", "type": "bigint", "required": true},
            {"name": "qty", "from": "/qty", "type": "integer"},
            {"name": "placed_at", "from": "/placed_at", "type": "timestamptz", "required": true}
        ]
    }]}))
    .unwrap();
    Routes::compile(&file).unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_index_keeps_the_event_the_table_kept_whatever_order_parallel_invocations_reach_it() {
    let stack = Stack::new();
    let first = orders(&[("o-1", 1, 10, None)], 1);
    let second = orders(&[("o-1", 2, 20, None)], 7);
    // Given a sandbox whose first event of o-1 is committed in the table and that dies just
    // before its `_bulk` (as a slow invocation on another shard would be)
    let (mut p1, s1) = stack.pipeline();
    p1.settings.routes = keep_first_routes();
    s1.search.crash_before.store(true, Ordering::SeqCst);
    let crashed = tokio::time::timeout(
        Duration::from_millis(300),
        p1.process(&first, &invocation("a", Duration::from_millis(1000))),
    )
    .await;
    assert!(crashed.is_err(), "the first invocation must have crashed");
    drop(p1);
    assert_eq!(stack.row_count(), 1);
    // When another event of o-1 loads meanwhile, from another shard
    let (mut p2, _) = stack.pipeline();
    p2.settings.routes = keep_first_routes();
    let report = p2
        .process(&second, &invocation("b", Duration::from_secs(30)))
        .await;
    // Then it is loaded (the lake keeps every event) but writes no document: the table kept
    // the first event, so the index must too
    assert_eq!(report.outcomes, vec![RecordOutcome::Loaded]);
    assert_eq!(stack.search.documents.lock().unwrap().len(), 0);
    // And when the first batch is delivered again, its event's document is written
    let (mut p3, _) = stack.pipeline();
    p3.settings.routes = keep_first_routes();
    let again = p3
        .process(&first, &invocation("c", Duration::from_secs(30)))
        .await;
    assert_eq!(again.outcomes, vec![RecordOutcome::Loaded]);
    assert_eq!(document(&stack, "o-1").await, Some((1, 1, 10)));
    assert_eq!(parquet_orders(&stack), vec!["o-1", "o-1"]);
}

/// A sandbox over the orders route dies at the armed point; a new one gets the batch again.
async fn crash_then_redeliver(arm: impl Fn(&Switches)) {
    let stack = Stack::new();
    let batch = orders(&[("o-1", 1, 10, None), ("o-2", 1, 20, None)], 1);
    // Given a sandbox that dies at the armed point (Lambda stops it after 300 ms)
    let (mut p1, s1) = stack.pipeline();
    p1.settings.routes = routes(true);
    arm(&s1);
    let crashed = tokio::time::timeout(
        Duration::from_millis(300),
        p1.process(&batch, &invocation("crashed", Duration::from_millis(1000))),
    )
    .await;
    assert!(crashed.is_err(), "the first invocation must have crashed");
    drop(p1);
    // When the batch is delivered to a new sandbox
    let report = run(&stack, &batch, "retry").await;
    // Then each order is in every sink once
    assert!(report.failures.is_empty(), "{:?}", report.outcomes);
    assert_eq!(parquet_orders(&stack), vec!["o-1", "o-2"]);
    assert_eq!(stack.row_count(), 2);
    assert_eq!(document(&stack, "o-1").await, Some((2, 1, 10)));
    assert_eq!(stack.search.documents.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_crash_after_the_database_before_the_bulk_loads_once_on_redelivery() {
    crash_then_redeliver(|s| s.search.crash_before.store(true, Ordering::SeqCst)).await;
}

#[tokio::test(start_paused = true)]
async fn a_crash_after_the_bulk_was_applied_before_the_object_loads_once_on_redelivery() {
    crash_then_redeliver(|s| s.search.crash_after.store(true, Ordering::SeqCst)).await;
}
