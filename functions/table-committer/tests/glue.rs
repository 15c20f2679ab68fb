//! The committer against the AWS Glue Data Catalog, as moto emulates it: the database and the
//! table created by the committer, appends swapping the table's `metadata_location` with
//! `UpdateTable`; read back by pyiceberg from the metadata file Glue names.
//!
//! What moto does not emulate (docs/operations.md): `UpdateTable`'s `VersionId` check (two
//! commits based on one version would both be accepted; real Glue refuses the second with
//! `ConcurrentModificationException`), Lake Formation permissions, and Athena.

mod common;

use common::*;
use streamload_iceberg::{CallDeadlines, CatalogSettings};
use streamload_tests::fault_proxy::{Fault, Rule};
use table_committer::{Committer, SystemClock};

/// The Glue client reads its endpoint from the process environment: one test at a time.
static GLUE_ENDPOINT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A stack whose route's table lives in a Glue database of its own (moto's Glue catalog is one
/// per account and region, shared by every test).
async fn glue_stack(tag: &str) -> (streamload_tests::TestStack, String) {
    let mut stack = lake_stack(tag).await;
    let database = stack.name.replace('-', "_").to_lowercase();
    stack.use_routes(&ROUTE.replace(
        "[route.iceberg]\n",
        &format!("[route.iceberg]\nnamespace = \"{database}\"\n"),
    ));
    (stack, database)
}

/// Two orders of two days, staged by the real loader in one batch.
async fn stage_two_orders(stack: &streamload_tests::TestStack) {
    stage(
        stack,
        "l-1",
        &[
            ("o-1", 1, "2024-03-01T10:15:00Z"),
            ("o-2", 1, "2024-03-02T11:20:00Z"),
        ],
        1,
    )
    .await;
}

fn glue_settings(stack: &streamload_tests::TestStack) -> CatalogSettings {
    CatalogSettings::Glue {
        warehouse: format!("s3://{}/warehouse", stack.name),
        catalog_id: None,
    }
}

/// The Glue table's `metadata_location` and its storage descriptor's columns (name, type).
async fn glue_table(
    glue: &aws_sdk_glue::Client,
    database: &str,
) -> (String, Vec<(String, String)>) {
    let table = glue
        .get_table()
        .database_name(database)
        .name("orders")
        .send()
        .await
        .expect("the Glue table")
        .table
        .expect("a table");
    let location = table
        .parameters()
        .and_then(|p| p.get("metadata_location"))
        .expect("metadata_location")
        .clone();
    let columns = table
        .storage_descriptor()
        .map(|d| {
            d.columns()
                .iter()
                .map(|c| (c.name().to_string(), c.r#type().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    (location, columns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_objects_land_once_in_a_glue_table_with_its_timestamptz_columns() {
    // Given staged orders (every staged object has `timestamptz` columns) and no Glue database
    let (stack, database) = glue_stack("iceglue").await;
    stage_two_orders(&stack).await;
    let first = staged_keys(&stack).await;
    let mut config = committer_config(&stack);
    config.catalog = glue_settings(&stack);
    let _one_at_a_time = GLUE_ENDPOINT.lock().await;
    std::env::remove_var("AWS_ENDPOINT_URL_GLUE");
    let glue = aws_sdk_glue::Client::new(&stack.sdk);

    // When the committer is sent their notifications twice, over two sandboxes
    for request in ["req-1", "req-2"] {
        let committer = Committer::start(&config, &stack.sdk).await.expect("starts");
        let answer = committer
            .handle(&notifications(&stack.name, &first), request, &SystemClock)
            .await;
        assert!(answer.batch_item_failures.is_empty(), "{answer:?}");
    }
    // Then Glue's table holds each event once, in one snapshot, and its columns are Glue types
    let (location, columns) = glue_table(&glue, &database).await;
    let view = read_metadata(&location);
    assert_eq!(identities(&view), ["o-1#1", "o-2#1"]);
    assert_eq!(view["snapshots"], 1);
    assert_eq!(view["summaries"][0]["streamload.commit-id"], "req-1-0");
    assert!(
        columns.contains(&("placed_at".to_string(), "timestamp".to_string())),
        "{columns:?}"
    );

    // When a second batch is staged and committed (an `UpdateTable` on the existing table)
    stage(&stack, "l-2", &[("o-3", 1, "2024-03-02T12:00:00Z")], 3).await;
    let second: Vec<String> = staged_keys(&stack)
        .await
        .into_iter()
        .filter(|k| !first.contains(k))
        .collect();
    assert!(!second.is_empty());
    let committer = Committer::start(&config, &stack.sdk).await.expect("starts");
    let answer = committer
        .handle(&notifications(&stack.name, &second), "req-3", &SystemClock)
        .await;
    assert!(answer.batch_item_failures.is_empty(), "{answer:?}");

    // Then Glue points at a newer metadata file with both snapshots and every event once
    let (newer, _) = glue_table(&glue, &database).await;
    assert_ne!(newer, location);
    let view = read_metadata(&newer);
    assert_eq!(identities(&view), ["o-1#1", "o-2#1", "o-3#1"]);
    assert_eq!(view["snapshots"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_glue_update_that_never_answers_is_given_up_on_and_the_append_lands_once() {
    // Given staged orders, Glue behind the fault proxy, and the first `UpdateTable` (the
    // append) black-holed: never forwarded, never answered
    let (stack, database) = glue_stack("iceglhang").await;
    stage_two_orders(&stack).await;
    let keys = staged_keys(&stack).await;
    let _one_at_a_time = GLUE_ENDPOINT.lock().await;
    let proxy = stack.fault_proxy().await;
    std::env::set_var("AWS_ENDPOINT_URL_GLUE", proxy.endpoint());
    let mut config = committer_config(&stack);
    config.catalog = glue_settings(&stack);
    config.deadlines = CallDeadlines::all(std::time::Duration::from_secs(2));
    let committer = Committer::start(&config, &stack.sdk).await.expect("starts");
    proxy.add(Rule::once("AWSGlue.UpdateTable", Fault::Hang));

    // When the committer is sent their notifications
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        committer.handle(&notifications(&stack.name, &keys), "req-1", &SystemClock),
    )
    .await
    .expect("the committer answers instead of waiting on the silent call");
    proxy.release_hung();
    std::env::remove_var("AWS_ENDPOINT_URL_GLUE");

    // Then the append given up on was an unknown outcome; the next attempt found it absent
    // from the log and appended: each event once, one snapshot
    assert!(answer.batch_item_failures.is_empty(), "{answer:?}");
    assert_eq!(proxy.faulted("AWSGlue.UpdateTable"), 1);
    assert!(proxy.seen("AWSGlue.UpdateTable") >= 2);
    let glue = aws_sdk_glue::Client::new(&stack.sdk);
    let (location, _) = glue_table(&glue, &database).await;
    let view = read_metadata(&location);
    assert_eq!(identities(&view), ["o-1#1", "o-2#1"]);
    assert_eq!(view["snapshots"], 1);
}
