//! The committer against Amazon S3 Tables' native API, as moto emulates it: a table bucket,
//! the table created by the committer, the append's metadata location swapped with the
//! table's version token; read back by pyiceberg from the metadata file S3 Tables names.
//!
//! What moto does not emulate (docs/operations.md): table maintenance (compaction, snapshot
//! expiry, unreferenced-file removal), encryption settings, and the Iceberg REST endpoint.

mod common;

use common::*;
use streamload_iceberg::CatalogSettings;
use table_committer::{Committer, SystemClock};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_objects_land_once_in_an_s3_tables_table_through_its_native_api() {
    // Given staged orders and a table bucket
    let stack = lake_stack("ices3t").await;
    stage(
        &stack,
        "l-1",
        &[
            ("o-1", 1, "2024-03-01T10:15:00Z"),
            ("o-2", 1, "2024-03-02T11:20:00Z"),
        ],
        1,
    )
    .await;
    let keys = staged_keys(&stack).await;
    // moto 5.2 answers GetTable's `managedByService` as a boolean where AWS's model has a
    // string, which the SDK refuses: the committer reaches moto through the fault proxy, which
    // rewrites that one field to the documented shape (nothing else is touched)
    let proxy = stack.fault_proxy().await;
    proxy.rewrite_answers("\"managedByService\": false", "\"managedByService\": null");
    std::env::set_var("AWS_ENDPOINT_URL_S3TABLES", proxy.endpoint());
    let s3tables = aws_sdk_s3tables::Client::new(&stack.sdk);
    let bucket = s3tables
        .create_table_bucket()
        .name(format!("t{}", &stack.name[..stack.name.len().min(40)]))
        .send()
        .await
        .expect("table bucket");
    let mut config = committer_config(&stack);
    config.catalog = CatalogSettings::S3Tables {
        table_bucket_arn: bucket.arn().to_string(),
    };
    // When the committer is sent their notifications, twice over two sandboxes
    for request in ["req-1", "req-2"] {
        let committer = Committer::start(&config, &stack.sdk).await.expect("starts");
        let answer = committer
            .handle(&notifications(&stack.name, &keys), request, &SystemClock)
            .await;
        assert!(answer.batch_item_failures.is_empty(), "{answer:?}");
    }
    // Then the table S3 Tables points to holds each event once, in one snapshot
    let location = s3tables
        .get_table_metadata_location()
        .table_bucket_arn(bucket.arn())
        .namespace("streamload")
        .name("orders")
        .send()
        .await
        .expect("metadata location");
    let metadata = location.metadata_location().expect("a metadata location");
    let view = read_metadata(metadata);
    assert_eq!(identities(&view), ["o-1#1", "o-2#1"]);
    assert_eq!(view["snapshots"], 1);
    assert_eq!(view["summaries"][0]["streamload.commit-id"], "req-1-0");
    let through_proxy: usize = proxy.counts().values().map(|(seen, _)| seen).sum();
    assert!(
        through_proxy > 0,
        "the S3 Tables calls went through the proxy"
    );
}
