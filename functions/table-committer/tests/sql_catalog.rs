//! The table committer against real parts: the loaders' staged objects written by the real
//! pipeline into moto's S3, claims in moto's DynamoDB, the table in a SQL catalog in the
//! stack's PostgreSQL — and read back by pyiceberg, an independent reader.

mod common;

use common::*;
use std::time::Duration;
use streamload_core::RecordOutcome;
use streamload_tests::{invocation, kinesis_batch, TestStack};
use table_committer::{Committer, SystemClock};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_objects_become_one_snapshot_of_day_partitions_each_event_once_read_by_pyiceberg() {
    // Given the real loader staged orders over three hours on two days, in two batches
    let stack = lake_stack("ice").await;
    let p = stack.pipeline().await;
    let first = kinesis_batch(&[
        (1, order("o-1", 1, "2024-03-01T10:15:00Z")),
        (2, order("o-2", 1, "2024-03-01T11:20:00Z")),
        (3, order("o-3", 1, "2024-03-02T09:00:00Z")),
    ]);
    let second = kinesis_batch(&[
        (4, order("o-1", 2, "2024-03-01T10:45:00Z")),
        (5, order("o-4", 1, "2024-03-02T09:30:00Z")),
    ]);
    for (n, batch) in [first, second].iter().enumerate() {
        let r = p
            .process(
                batch,
                &invocation(&format!("l-{n}"), Duration::from_secs(30)),
            )
            .await;
        assert!(
            r.outcomes.iter().all(|o| *o == RecordOutcome::Loaded),
            "{:?}",
            r.outcomes
        );
    }
    let keys = staged_keys(&stack).await;
    assert_eq!(keys.len(), 5, "one object per batch and hour: {keys:?}");
    // When the committer is sent their notifications, one of them twice
    let mut sent = keys.clone();
    sent.push(keys[0].clone());
    let config = committer_config(&stack);
    let committer = Committer::start(&config, &stack.sdk).await.expect("starts");
    let answer = committer
        .handle(&notifications(&stack.name, &sent), "req-1", &SystemClock)
        .await;
    // Then nothing is retried, and pyiceberg reads every event once, in one snapshot, in two
    // day partitions, with the commit id in the snapshot summary and the ids of the route
    assert!(answer.batch_item_failures.is_empty(), "{answer:?}");
    let view = read_back(&stack);
    assert_eq!(
        identities(&view),
        ["o-1#1", "o-1#2", "o-2#1", "o-3#1", "o-4#1"]
    );
    assert_eq!(view["snapshots"], 1);
    assert_eq!(view["summaries"][0]["streamload.commit-id"], "req-1-0");
    assert_eq!(view["partitions"].as_array().unwrap().len(), 2, "{view}");
    assert_eq!(
        view["data_files"], 2,
        "five staged objects merged per day: {view}"
    );
    assert_eq!(view["field_ids"]["order_id"], 1);
    assert_eq!(view["field_ids"]["placed_at"], 4);
    let amounts: Vec<&str> = view["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[2].as_str().unwrap())
        .collect();
    assert!(amounts.iter().all(|a| *a == "12.50"), "{amounts:?}");

    // When the same notifications come again (S3 at-least-once, the sweep), to a new sandbox
    let again = Committer::start(&config, &stack.sdk).await.expect("starts");
    let answer = again
        .handle(&notifications(&stack.name, &keys), "req-2", &SystemClock)
        .await;
    // Then nothing is appended twice
    assert!(answer.batch_item_failures.is_empty(), "{answer:?}");
    let view = read_back(&stack);
    assert_eq!(identities(&view).len(), 5);
    assert_eq!(view["snapshots"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifecycle_rule_that_expires_staging_before_its_claims_stops_start_up_naming_it() {
    use aws_sdk_s3::types::{
        BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
        LifecycleRuleFilter,
    };
    // Given the loaders' bucket expires the lake's objects after 7 days, the claims' TTL
    let stack = lake_stack("icelife").await;
    let s3 = streamload_aws::s3_client(&stack.sdk);
    let put_rule = |days: i32| {
        let rule = LifecycleRule::builder()
            .id("tidy-orders")
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("orders/").build())
            .expiration(LifecycleExpiration::builder().days(days).build())
            .build()
            .unwrap();
        s3.put_bucket_lifecycle_configuration()
            .bucket(&stack.name)
            .lifecycle_configuration(
                BucketLifecycleConfiguration::builder()
                    .rules(rule)
                    .build()
                    .unwrap(),
            )
            .send()
    };
    put_rule(7).await.expect("lifecycle");
    // When the committer starts: refused, in one line naming the rule and what it needs
    let config = committer_config(&stack);
    let e = Committer::start(&config, &stack.sdk)
        .await
        .expect_err("refused")
        .to_string();
    assert!(e.contains("lifecycle rule \"tidy-orders\""), "{e}");
    assert!(e.contains("9 days"), "{e}");
    assert!(!e.contains('\n'));
    // Then with the rule at TTL + 2 days it starts
    put_rule(9).await.expect("lifecycle");
    Committer::start(&config, &stack.sdk).await.expect("starts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_commits_recent_staging_no_notification_named_and_skips_what_is_in_the_table() {
    // Given orders of the last two hours staged, one of them already committed through its
    // notification; the other's notification never came
    let stack = lake_stack("icesweep").await;
    let now = chrono::Utc::now();
    let hour_ago = (now - chrono::Duration::hours(1)).to_rfc3339();
    let just_now = now.to_rfc3339();
    stage(&stack, "l-1", &[("o-1", 1, hour_ago.as_str())], 1).await;
    let before_l2 = streamload_tests::now_ms();
    stage(&stack, "l-2", &[("o-2", 1, just_now.as_str())], 2).await;
    let keys = staged_keys(&stack).await;
    assert_eq!(keys.len(), 2);
    let config = committer_config(&stack);
    let committer = Committer::start(&config, &stack.sdk).await.expect("starts");
    let notified = keys.iter().find(|k| k.contains("l-1")).cloned().unwrap();
    let answer = committer
        .handle(
            &notifications(&stack.name, &[notified]),
            "req-1",
            &SystemClock,
        )
        .await;
    assert!(answer.batch_item_failures.is_empty());
    // When the scheduled sweep runs over the last 24 hours
    let report = committer.sweep(24, "sweep-1", &SystemClock).await;
    let after_sweep = streamload_tests::now_ms();
    // Then it lists both, appends only the one the table lacked; each event once
    assert_eq!(
        (report.listed, report.appended, report.left),
        (2, 1, 0),
        "{report:?}"
    );
    // and says how far behind its staged object the table was: no longer than the object has
    // existed (S3's last-modified time has whole seconds)
    let behind = report.behind_ms.expect("measured") as i64;
    assert!(behind <= after_sweep - before_l2 + 1000, "{behind} ms");
    let view = read_back(&stack);
    assert_eq!(identities(&view), ["o-1#1", "o-2#1"]);
    assert_eq!(view["snapshots"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_finds_each_identity_once_reports_lag_and_catches_a_duplicate_append() {
    use streamload_table::ports::TableLog;
    use table_committer::audit::audit_table;
    // Given two staged objects committed through the committer, and a third not yet
    let stack = lake_stack("iceaudit").await;
    stage(
        &stack,
        "l-1",
        &[
            ("o-1", 1, "2024-03-01T10:15:00Z"),
            ("o-2", 1, "2024-03-01T10:20:00Z"),
        ],
        1,
    )
    .await;
    stage(&stack, "l-2", &[("o-1", 2, "2024-03-02T10:15:00Z")], 3).await;
    let committed = staged_keys(&stack).await;
    let config = committer_config(&stack);
    let committer = Committer::start(&config, &stack.sdk).await.expect("starts");
    let answer = committer
        .handle(
            &notifications(&stack.name, &committed),
            "req-1",
            &SystemClock,
        )
        .await;
    assert!(answer.batch_item_failures.is_empty());
    stage(&stack, "l-3", &[("o-3", 1, "2024-03-02T11:00:00Z")], 4).await;
    let routes = streamload_runtime::parse_routes(ROUTE, "test").unwrap();
    let catalog = streamload_iceberg::connect(
        &config.catalog,
        streamload_iceberg::storage_props(|k| std::env::var(k).ok()),
    )
    .await
    .unwrap();
    // When the table is audited
    let audit = audit_table(
        &stack.sdk,
        catalog.clone(),
        routes.get(0),
        &stack.name,
        &stack.name,
        true,
    )
    .await
    .expect("audits");
    // Then each identity is there once, nothing missing or extra, one object waiting
    assert!(audit.exactly_once(), "{}", audit.line());
    assert_eq!(
        (audit.rows, audit.staged_objects, audit.committed_objects),
        (3, 3, 2)
    );
    assert_eq!(audit.pending_objects, 1);
    assert!(audit.oldest_pending_seconds.is_some());
    assert!(audit.line().contains("exactly once"), "{}", audit.line());
    // When an object is appended a second time behind the protocol's back
    let table =
        streamload_iceberg::IcebergTable::existing(catalog.clone(), routes.get(0), &stack.name)
            .await
            .unwrap();
    let base = table.load().await.unwrap();
    let again = objects(&committed[..1]);
    let written = table.write(&base, "rogue", &again).await.unwrap();
    table.append(&base, "rogue", &written).await.unwrap();
    // Then the audit names the duplicated identities and says so
    let audit = audit_table(
        &stack.sdk,
        catalog,
        routes.get(0),
        &stack.name,
        &stack.name,
        true,
    )
    .await
    .expect("audits");
    assert!(!audit.exactly_once());
    assert!(!audit.duplicated.is_empty());
    assert!(audit.duplicated.iter().all(|(_, n)| *n == 2));
    assert!(audit.line().contains("NOT exactly once"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_staging_per_batch_writes_one_object_per_batch_and_the_table_is_still_partitioned_by_event_time(
) {
    // Given a route whose table is its readers' interface: staging = "per-batch"
    let mut stack = TestStack::new("iceperbatch", false).await;
    stack.use_routes(&ROUTE.replace(
        "partition = \"day\"\n",
        "partition = \"day\"\nstaging = \"per-batch\"\n",
    ));
    stack.config.database = streamload_runtime::DatabaseSource::Unset;
    // When the real loader loads one batch whose events span three hours of two days
    stage(
        &stack,
        "l-1",
        &[
            ("o-1", 1, "2024-03-01T10:15:00Z"),
            ("o-2", 1, "2024-03-01T11:20:00Z"),
            ("o-3", 1, "2024-03-02T09:00:00Z"),
        ],
        1,
    )
    .await;
    // Then it staged one object (per-hour staging writes three), in the folder of the load's hour
    let keys = staged_keys(&stack).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let loaded = chrono::Utc::now().format("dt=%Y-%m-%d/").to_string();
    assert!(keys[0].contains(&loaded), "{keys:?}");
    // And the committer still partitions the table by each event's time
    let committer = Committer::start(&committer_config(&stack), &stack.sdk)
        .await
        .expect("starts");
    let answer = committer
        .handle(&notifications(&stack.name, &keys), "req-1", &SystemClock)
        .await;
    assert!(answer.batch_item_failures.is_empty());
    let view = read_back(&stack);
    assert_eq!(identities(&view), ["o-1#1", "o-2#1", "o-3#1"]);
    assert_eq!(view["partitions"].as_array().unwrap().len(), 2, "{view}");
    // And the hourly sweep finds per-batch objects by the hour they were loaded
    let report = committer.sweep(1, "sweep-1", &SystemClock).await;
    assert_eq!((report.listed, report.appended), (1, 0), "{report:?}");
}
