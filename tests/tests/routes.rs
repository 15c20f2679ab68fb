//! Declarative routes against the real stack: the example deployment (the built-in events
//! contract spelled out beside an orders route), each type's forms, newest-by merging, a
//! column added mid-stream, start-up checks and the crash points for a non-default route.

use arrow_array::cast::AsArray;
use arrow_array::types::Decimal128Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::time::Duration;
use streamload_core::RecordOutcome;
use streamload_tests::*;

const EXAMPLE: &str = include_str!("../../examples/orders/streamload.toml");
const ORDERS_DDL: &str = include_str!("../../examples/orders/ddl.sql");
const EXAMPLE_EVENT: &str = include_str!("../../examples/orders/event.json");

/// A Kinesis batch from stream `stream` over (sequence, JSON) pairs.
fn stream_batch(stream: &str, records: &[(u64, serde_json::Value)]) -> streamload_core::Batch {
    let raw: Vec<(u64, Vec<u8>)> = records
        .iter()
        .map(|(s, v)| (*s, serde_json::to_vec(v).unwrap()))
        .collect();
    let event = kinesis_event(&raw).replace("stream/orders", &format!("stream/{stream}"));
    streamload_core::kinesis::decode(&event).unwrap()
}

async fn example_stack(tag: &str) -> TestStack {
    let mut stack = TestStack::new(tag, false).await;
    stack.pg.batch_execute(ORDERS_DDL).await.unwrap();
    stack.use_routes(EXAMPLE);
    stack
}

fn order(id: &str, revision: i64) -> serde_json::Value {
    serde_json::json!({
        "order_id": id, "revision": revision,
        "customer": {"id": "6F9619FF-8B86-D011-B42D-00C04FC964FF"},
        "amount": {"total": format!("{}.50", 10 + revision), "currency": "EUR"},
        "paid": revision > 1, "placed_at": 1_714_557_600_000i64 + revision,
        "shipping": {"ship_by": "2024-05-03", "weight_kg": 1.25},
        "items": [{"sku": format!("SKU-{revision}"), "qty": 1}]
    })
}

/// (order_id, revision) pairs across the lake's order objects, sorted, repeats kept.
async fn lake_revisions(stack: &TestStack) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for key in stack.object_keys().await {
        if !(key.starts_with("orders/") && key.ends_with(".parquet")) {
            continue;
        }
        let reader = ParquetRecordBatchReaderBuilder::try_new(stack.object_bytes(&key).await)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let ids = batch.column_by_name("order_id").unwrap().as_string::<i32>();
            let revs = batch
                .column_by_name("revision")
                .unwrap()
                .as_primitive::<arrow_array::types::Int32Type>();
            for i in 0..batch.num_rows() {
                out.push((ids.value(i).to_owned(), revs.value(i)));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_deployment_loads_events_and_orders_side_by_side() {
    // Given the example deployment: the events contract and an orders route
    let stack = example_stack("routes").await;
    let p = stack.pipeline().await;
    // When the example's orders event and a clickstream batch are delivered
    let orders = streamload_core::kinesis::decode(EXAMPLE_EVENT).unwrap();
    let r = p
        .process(&orders, &invocation("inv-orders", Duration::from_secs(30)))
        .await;
    assert!(r.failures.is_empty(), "{:?}", r.outcomes);
    let clicks = streamload_core::kinesis::decode(
        &kinesis_event(&[plain_event(1, "e1"), plain_event(2, "e2")])
            .replace("stream/orders", "stream/clickstream"),
    )
    .unwrap();
    let r = p
        .process(&clicks, &invocation("inv-clicks", Duration::from_secs(30)))
        .await;
    assert!(r.failures.is_empty(), "{:?}", r.outcomes);

    // Then the events table and its objects hold the clicks as the first release did
    stack
        .assert_each_once_in_both_sinks(&sorted_ids(&["e1", "e2"]))
        .await;
    // And the orders table holds the newest revision of each order, every value typed
    let row = stack
        .pg
        .query_one(
            "SELECT revision, customer_id::text, total::text, currency, paid, \
                    placed_at = '2024-05-01T10:00:00.123Z'::timestamptz, ship_by::text, \
                    weight_kg, items::text, first_sku, partition_key, stream_sequence::text \
             FROM sales.orders WHERE order_id = 'o-1001'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    assert_eq!(
        row.get::<_, String>(1),
        "6f9619ff-8b86-d011-b42d-00c04fc964ff"
    );
    assert_eq!(row.get::<_, String>(2), "59.90");
    assert_eq!(row.get::<_, String>(3), "EUR");
    assert!(row.get::<_, bool>(4));
    assert!(row.get::<_, bool>(5), "RFC 3339 text and epoch ms agree");
    assert_eq!(row.get::<_, String>(6), "2024-05-03");
    assert_eq!(row.get::<_, f64>(7), 1.25);
    assert_eq!(row.get::<_, String>(8), r#"[{"qty": 2, "sku": "SKU-7"}]"#);
    assert_eq!(row.get::<_, String>(9), "SKU-7");
    assert_eq!(row.get::<_, String>(10), "o-1001");
    assert!(row.get::<_, String>(11).ends_with("000001"));
    let revision_of_1002: i32 = stack
        .pg
        .query_one(
            "SELECT revision FROM sales.orders WHERE order_id = 'o-1002'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(revision_of_1002, 1, "a numeric string revision");
    // And the lake holds every revision once, under the route's prefix, with a DECIMAL total
    assert_eq!(
        lake_revisions(&stack).await,
        [
            ("o-1001".into(), 1),
            ("o-1001".into(), 2),
            ("o-1002".into(), 1)
        ]
    );
    let key = stack
        .object_keys()
        .await
        .into_iter()
        .find(|k| k.starts_with("orders/dt=2024-05-01/hour=10/"))
        .expect("an orders object in the event time's hour");
    let reader = ParquetRecordBatchReaderBuilder::try_new(stack.object_bytes(&key).await)
        .unwrap()
        .build()
        .unwrap();
    let batch = reader.into_iter().next().unwrap().unwrap();
    let totals = batch
        .column_by_name("total")
        .unwrap()
        .as_primitive::<Decimal128Type>();
    assert!(totals.iter().any(|t| t == Some(5990)));
    assert!(
        batch.column_by_name("source_unit").is_some(),
        "lineage kept"
    );
    // And the order whose total is not a number is a dead letter naming route and column
    let dl = stack.dead_letters().await;
    assert_eq!(dl.len(), 1, "{dl:?}");
    assert_eq!(
        dl[0]["reason"],
        r#"route "orders": column "total" is not a decimal number"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_type_refuses_what_does_not_fit_and_names_only_route_and_column() {
    // Given the orders route and one record per poison form
    let stack = example_stack("rtypes").await;
    let p = stack.pipeline().await;
    let with = |field: &str, value: serde_json::Value| {
        let mut o = order("o-bad", 1);
        let mut at = &mut o;
        let parts: Vec<&str> = field.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            at = &mut at[*part];
        }
        at[parts[parts.len() - 1]] = value;
        o
    };
    let cases = [
        (
            "revision",
            serde_json::json!(1.5),
            "revision",
            "is not a whole number",
        ),
        (
            "revision",
            serde_json::json!(3_000_000_000i64),
            "revision",
            "is out of range for integer",
        ),
        (
            "customer/id",
            serde_json::json!("secret-not-a-uuid"),
            "customer_id",
            "is not a UUID",
        ),
        (
            "amount/total",
            serde_json::json!("1.999"),
            "total",
            "has more decimal places than the column's scale",
        ),
        (
            "paid",
            serde_json::json!("yes"),
            "paid",
            "is not true or false",
        ),
        (
            "placed_at",
            serde_json::json!("secret-yesterday"),
            "placed_at",
            "is not an RFC 3339 timestamp",
        ),
        (
            "shipping/ship_by",
            serde_json::json!("2023-02-29"),
            "ship_by",
            "is not a date (YYYY-MM-DD)",
        ),
        (
            "shipping/weight_kg",
            serde_json::json!("heavy"),
            "weight_kg",
            "is not a number",
        ),
        (
            "amount/currency",
            serde_json::json!({"nested": 1}),
            "currency",
            "is an object or array, not text",
        ),
        (
            "order_id",
            serde_json::Value::Null,
            "order_id",
            "is required (absent or null)",
        ),
    ];
    let records: Vec<(u64, serde_json::Value)> = cases
        .iter()
        .enumerate()
        .map(|(i, (field, value, _, _))| (i as u64 + 1, with(field, value.clone())))
        .collect();
    // When they are delivered
    let r = p
        .process(
            &stream_batch("orders", &records),
            &invocation("inv-1", Duration::from_secs(30)),
        )
        .await;
    // Then every one is dead-lettered with a reason naming route and column, never the value
    assert!(
        r.outcomes
            .iter()
            .all(|o| matches!(o, RecordOutcome::DeadLettered(_))),
        "{:?}",
        r.outcomes
    );
    let dl = stack.dead_letters().await;
    let mut reasons: Vec<String> = dl
        .iter()
        .map(|m| m["reason"].as_str().unwrap().to_owned())
        .collect();
    reasons.sort();
    let mut expected: Vec<String> = cases
        .iter()
        .map(|(_, _, column, why)| format!("route \"orders\": column \"{column}\" {why}"))
        .collect();
    expected.sort();
    assert_eq!(reasons, expected);
    assert!(reasons.iter().all(|r| !r.contains("secret")));
    assert!(stack
        .table_column("sales.orders", "order_id")
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_by_keeps_the_highest_revision_whatever_the_delivery_order() {
    // Given revisions 2, 1 and 3 of one order, delivered in that order across batches, and a
    // redelivery of 1 and 3 together
    let stack = example_stack("rnewest").await;
    let p = stack.pipeline().await;
    for (n, revisions) in [vec![2], vec![1], vec![3, 1], vec![1, 3]]
        .into_iter()
        .enumerate()
    {
        let records: Vec<(u64, serde_json::Value)> = revisions
            .iter()
            .enumerate()
            .map(|(i, &rev)| (i as u64 + 1, order("o-7", rev)))
            .collect();
        let r = p
            .process(
                &stream_batch("orders", &records),
                &invocation(&format!("inv-{n}"), Duration::from_secs(30)),
            )
            .await;
        assert!(r.failures.is_empty(), "{:?}", r.outcomes);
    }
    // Then the table holds revision 3, with revision 3's values
    let row = stack
        .pg
        .query_one("SELECT revision, total::text, paid FROM sales.orders", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
    assert_eq!(row.get::<_, String>(1), "13.50");
    // And the lake holds each revision exactly once
    assert_eq!(
        lake_revisions(&stack).await,
        [("o-7".into(), 1), ("o-7".into(), 2), ("o-7".into(), 3)]
    );
    // And two revisions of one order in one batch merge to the newer one
    let both = [(1, order("o-8", 5)), (2, order("o-8", 4))];
    let r = p
        .process(
            &stream_batch("orders", &both),
            &invocation("inv-both", Duration::from_secs(30)),
        )
        .await;
    assert!(r.failures.is_empty(), "{:?}", r.outcomes);
    let rev: i32 = stack
        .pg
        .query_one(
            "SELECT revision FROM sales.orders WHERE order_id = 'o-8'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rev, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_mid_stream_reaches_later_objects_and_the_table() {
    // Given the example deployment, loading one order
    let mut stack = example_stack("raddcol").await;
    let p = stack.pipeline().await;
    let r = p
        .process(
            &stream_batch("orders", &[(1, order("o-1", 1))]),
            &invocation("inv-1", Duration::from_secs(30)),
        )
        .await;
    assert!(r.failures.is_empty());
    let first_objects = stack.object_keys().await;
    // When the route gains a column (a config change) and the function restarts
    let added = EXAMPLE.replace(
        "[[route.column]]\nname = \"order_id\"",
        "[[route.column]]\nname = \"channel\"\nfrom = \"/channel\"\ntype = \"text\"\n\n[[route.column]]\nname = \"order_id\"",
    );
    assert_ne!(added, EXAMPLE);
    stack.use_routes(&added);
    let p = stack.pipeline().await;
    let mut o = order("o-2", 1);
    o["channel"] = "app".into();
    let r = p
        .process(
            &stream_batch("orders", &[(2, o)]),
            &invocation("inv-2", Duration::from_secs(30)),
        )
        .await;
    assert!(r.failures.is_empty(), "{:?}", r.outcomes);
    // Then auto_migrate added the column, nullable, and the new row has its value
    assert_eq!(
        stack.table_column("sales.orders", "channel").await,
        ["", "app"]
    );
    // And objects written after the change carry it; the earlier one does not
    for key in stack.object_keys().await {
        if !key.starts_with("orders/") {
            continue;
        }
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(stack.object_bytes(&key).await).unwrap();
        let has = reader.schema().column_with_name("channel").is_some();
        assert_eq!(has, !first_objects.contains(&key), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_config_mistake_fails_start_up_with_one_line_naming_it() {
    // Given the example's tables
    let mut stack = example_stack("rcheck").await;
    stack
        .pg
        .batch_execute(
            "CREATE TABLE no_key (id text, n integer);
             CREATE TABLE strict (id text PRIMARY KEY, must text NOT NULL, n bigint, amount numeric(10,3));",
        )
        .await
        .unwrap();
    let route = |table: &str, columns: &str, extra: &str| {
        format!(
            "[[route]]\nname = \"r\"\nsource = \"*\"\ntable = \"{table}\"\nkey = [\"id\"]\n{extra}\n\
             [[route.column]]\nname = \"id\"\nfrom = \"/id\"\ntype = \"text\"\n{columns}"
        )
    };
    let col = |name: &str, ty: &str| {
        format!("[[route.column]]\nname = \"{name}\"\nfrom = \"/{name}\"\ntype = \"{ty}\"\n")
    };
    let cases = [
        (
            route("missing_table", "", ""),
            r#"route "r": table "missing_table" does not exist"#,
        ),
        (
            route("no_key", "", ""),
            r#"route "r": table "no_key" has no unique index on exactly the key (id)"#,
        ),
        (
            route("no_key", &col("extra", "text"), ""),
            r#"route "r": column "extra" is missing from table "no_key""#,
        ),
        (
            route("strict", &col("must", "text"), "")
                .replace(
                    "[[route.column]]\nname = \"must\"",
                    "[[route.column]]\nname = \"n\"",
                )
                .replace(
                    "from = \"/must\"\ntype = \"text\"",
                    "from = \"/n\"\ntype = \"uuid\"",
                ),
            r#"route "r": column "n" is bigint in table "strict", which a uuid column cannot be written to"#,
        ),
        (
            route("strict", "", ""),
            r#"route "r": table "strict" column "must" is NOT NULL without a default"#,
        ),
        (
            route(
                "strict",
                &format!("{}{}", col("must", "text"), col("amount", "numeric")),
                "",
            ),
            r#"route "r": column "amount" is numeric(10,3) in table "strict": set precision = 10 and scale = 3"#,
        ),
        (
            route(
                "strict",
                &col("must", "text"),
                "updated_at_column = \"touched\"",
            ),
            r#"route "r": updated_at_column "touched" is missing from table "strict""#,
        ),
        (
            "[[route]]\nname = \"r\"\nsource = \n".to_owned(),
            "STREAMLOAD_CONFIG",
        ),
        (
            route("strict", "", "merge = \"last-wins\""),
            r#"route "r": merge "last-wins" is not"#,
        ),
    ];
    for (toml, expected) in cases {
        // When a function starts with it
        stack.use_routes(&toml);
        let err = match streamload_runtime::build_pipeline(&stack.config).await {
            Ok(_) => panic!("start-up must fail for:\n{toml}"),
            Err(e) => e.to_string(),
        };
        // Then start-up fails with a line naming the route and the column or table
        assert!(
            err.lines().any(|l| l.contains(expected)),
            "expected {expected:?} in:\n{err}\nfor:\n{toml}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_route_is_exactly_once_at_every_crash_point() {
    for (point, arm) in crash_points() {
        // Given a fresh deployment and a batch of orders with a duplicate and a poison record
        let stack = example_stack("rcrash").await;
        let mut bad = order("o-bad", 1);
        bad["amount"]["total"] = "x".into();
        let batch = stream_batch(
            "orders",
            &[
                (1, order("o-1", 1)),
                (2, order("o-2", 1)),
                (3, order("o-1", 1)),
                (4, bad),
                (5, order("o-3", 2)),
            ],
        );
        // When a sandbox dies at the crash point and the batch is redelivered
        // Then every order is once in the table and once across the lake
        eprintln!("crash point: {point}");
        crash_then_redeliver_into(
            &stack,
            &batch,
            &sorted_ids(&["o-1", "o-2", "o-3"]),
            arm,
            ("sales.orders", "order_id", "order_id"),
        )
        .await;
        // (A crash between the queue's send and its archive sends the poison record once
        // more: the queue is at-least-once, see docs/exactly-once.md.)
        assert!(!stack.dead_letters().await.is_empty(), "{point}");
    }
}

#[test]
fn the_example_event_file_is_a_kinesis_event_of_the_orders_stream() {
    let batch = streamload_core::kinesis::decode(EXAMPLE_EVENT).unwrap();
    assert_eq!(batch.records.len(), 4);
    let routes = streamload_runtime::parse_routes(EXAMPLE, "example").unwrap();
    let mapped = routes.map_batch(&batch.records, 1 << 20);
    assert!(mapped[..3].iter().all(|m| m
        .as_ref()
        .is_ok_and(|m| m.as_ref().is_some_and(|m| m.route == 1))));
    assert!(mapped[3].is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_orders_table_refuses_leaves_the_other_routes_rows_loading() {
    // Given a real CHECK on the orders table, and one batch holding records of two routes
    // (as one function behind several mappings, or one Kafka mapping over two topics, sees)
    let stack = example_stack("rrefuse").await;
    stack
        .pg
        .batch_execute(
            "ALTER TABLE sales.orders ADD CONSTRAINT total_not_negative CHECK (total >= 0)",
        )
        .await
        .unwrap();
    let mut negative = order("o-neg", 1);
    negative["amount"]["total"] = "-1.00".into();
    let mut batch = stream_batch(
        "orders",
        &[(1, order("o-1", 1)), (2, negative), (3, order("o-2", 1))],
    );
    let clicks = streamload_core::kinesis::decode(
        &kinesis_event(&[plain_event(1, "e1"), plain_event(2, "e2")])
            .replace("stream/orders", "stream/clickstream")
            .replace("shardId-000000000000", "shardId-000000000001"),
    )
    .unwrap();
    batch.records.extend(clicks.records);
    let p = stack.pipeline().await;
    // When it is processed
    let r = p
        .process(&batch, &invocation("inv-1", Duration::from_secs(30)))
        .await;
    // Then nothing is redelivered; the refused order is a dead letter naming the constraint
    assert!(r.failures.is_empty(), "{:?}", r.outcomes);
    assert_eq!(
        r.outcomes[1],
        RecordOutcome::DeadLettered(streamload_core::PoisonKind::Refused)
    );
    let dl = stack.dead_letters().await;
    assert_eq!(dl.len(), 1, "{dl:?}");
    let reason = dl[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("23514") && reason.contains("total_not_negative"),
        "{reason}"
    );
    // And both routes' other rows are in their tables and their objects, once
    assert_eq!(
        stack.table_column("sales.orders", "order_id").await,
        ["o-1", "o-2"]
    );
    assert_eq!(
        lake_revisions(&stack).await,
        [("o-1".into(), 1), ("o-2".into(), 1)]
    );
    stack
        .assert_each_once_in_both_sinks(&sorted_ids(&["e1", "e2"]))
        .await;
    // And a redelivery loads and queues nothing more
    let again = p
        .process(&batch, &invocation("inv-2", Duration::from_secs(30)))
        .await;
    assert!(again.failures.is_empty(), "{:?}", again.outcomes);
    assert!(
        stack.dead_letters().await.is_empty(),
        "already taken, nothing new"
    );
    assert_eq!(
        lake_revisions(&stack).await,
        [("o-1".into(), 1), ("o-2".into(), 1)]
    );
}

/// A route of readings keyed by device, newest by `seq`, with no `identity` (the default).
const READINGS: &str = r#"
[[route]]
name = "readings"
source = "*"
table = "iot.readings"
key = ["device"]
merge = { newest_by = "seq" }

[[route.column]]
name = "device"
from = "/device"
type = "text"
required = true

[[route.column]]
name = "seq"
from = "/seq"
type = "bigint"
required = true

[[route.column]]
name = "reading"
from = "/reading"
type = "text"
"#;

async fn readings_stack(tag: &str, ddl: &str) -> TestStack {
    let mut stack = TestStack::new(tag, false).await;
    stack.pg.batch_execute(ddl).await.unwrap();
    stack.use_routes(READINGS);
    stack
}

fn reading(device: &str, seq: i64) -> serde_json::Value {
    serde_json::json!({"device": device, "seq": seq, "reading": format!("{device}@{seq}")})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_by_without_an_identity_loads_every_revision_in_any_batching_and_order() {
    // Given a newest_by route with no identity, and revisions 1 and 2 of four devices, each
    // delivered in its own way: separate batches (1 then 2, 2 then 1) and one batch (1 and 2,
    // 2 and 1) — P5: with the key as identity, revision 2 was a "duplicate" and dropped
    let stack = readings_stack(
        "rnoident",
        "CREATE SCHEMA iot; CREATE TABLE iot.readings (device text PRIMARY KEY, seq bigint NOT NULL, reading text)",
    )
    .await;
    let p = stack.pipeline().await;
    let deliveries: Vec<Vec<(u64, serde_json::Value)>> = vec![
        vec![(1, reading("d1", 1))],
        vec![(2, reading("d1", 2))],
        vec![(3, reading("d2", 2))],
        vec![(4, reading("d2", 1))],
        vec![(5, reading("d3", 1)), (6, reading("d3", 2))],
        vec![(7, reading("d4", 2)), (8, reading("d4", 1))],
    ];
    for (n, records) in deliveries.iter().enumerate() {
        // When each delivery is processed
        let r = p
            .process(
                &stream_batch("readings", records),
                &invocation(&format!("inv-{n}"), Duration::from_secs(30)),
            )
            .await;
        assert!(r.failures.is_empty(), "{:?}", r.outcomes);
        assert!(
            r.outcomes.iter().all(|o| *o == RecordOutcome::Loaded),
            "delivery {n}: every revision is an event of its own: {:?}",
            r.outcomes
        );
    }
    // Then every device's row holds revision 2, with revision 2's values
    assert_eq!(
        stack.table_column("iot.readings", "reading").await,
        ["d1@2", "d2@2", "d3@2", "d4@2"]
    );
    // And the lake holds every revision once
    let mut lake = stack.parquet_column("reading").await;
    lake.sort();
    assert_eq!(
        lake,
        ["d1@1", "d1@2", "d2@1", "d2@2", "d3@1", "d3@2", "d4@1", "d4@2"]
    );
    // And a redelivery of everything is recognised as done
    let all: Vec<(u64, serde_json::Value)> = deliveries.into_iter().flatten().collect();
    let again = p
        .process(
            &stream_batch("readings", &all),
            &invocation("inv-again", Duration::from_secs(30)),
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
    assert_eq!(stack.parquet_column("reading").await.len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_foreign_key_refuses_only_its_own_row() {
    // Given an ORM-style schema whose foreign key is checked at COMMIT (P3), and ten readings
    // of which one names a device the parent table lacks
    let stack = readings_stack(
        "rdeferred",
        "CREATE SCHEMA iot; CREATE TABLE iot.devices (device text PRIMARY KEY);
         INSERT INTO iot.devices SELECT 'd' || g FROM generate_series(0, 8) g;
         CREATE TABLE iot.readings (device text PRIMARY KEY
             CONSTRAINT readings_device_fk REFERENCES iot.devices DEFERRABLE INITIALLY DEFERRED,
           seq bigint NOT NULL, reading text)",
    )
    .await;
    let p = stack.pipeline().await;
    let records: Vec<(u64, serde_json::Value)> = (0..10)
        .map(|i| (i as u64 + 1, reading(&format!("d{i}"), 1)))
        .collect();
    // When they are processed
    let r = p
        .process(
            &stream_batch("readings", &records),
            &invocation("inv-1", Duration::from_secs(30)),
        )
        .await;
    // Then nine load and the orphan is dead-lettered naming the constraint (before: every
    // delivery failed at COMMIT with 23503 and nothing loaded)
    assert!(r.failures.is_empty(), "{:?}", r.outcomes);
    assert_eq!(
        r.outcomes[9],
        RecordOutcome::DeadLettered(streamload_core::PoisonKind::Refused)
    );
    assert_eq!(stack.table_column("iot.readings", "device").await.len(), 9);
    let dl = stack.dead_letters().await;
    assert_eq!(dl.len(), 1, "{dl:?}");
    let reason = dl[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("23503") && reason.contains("readings_device_fk"),
        "{reason}"
    );
    assert_eq!(stack.parquet_column("reading").await.len(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_the_table_holds_equal_are_one_key_in_the_stage_too() {
    // Given a citext key and a char(4) key (P4: "A1" and "a1" are one row to the table, two
    // to a text stage, and the merge failed with SQLSTATE 21000 on every delivery)
    for (tag, ty, keys) in [
        ("rcitext", "citext", ["A1", "a1"]),
        ("rbpchar", "char(4)", ["b1", "b1  "]),
    ] {
        let stack = readings_stack(
            tag,
            &format!(
                "CREATE EXTENSION IF NOT EXISTS citext; CREATE SCHEMA iot;
                 CREATE TABLE iot.readings (device {ty} PRIMARY KEY, seq bigint NOT NULL, reading text)"
            ),
        )
        .await;
        let p = stack.pipeline().await;
        // When both spellings arrive in one batch, the second newer
        let records = [(1, reading(keys[0], 1)), (2, reading(keys[1], 2))];
        let r = p
            .process(
                &stream_batch("readings", &records),
                &invocation("inv-1", Duration::from_secs(30)),
            )
            .await;
        // Then both load: one row, holding the newer revision, and both in the lake
        assert!(r.failures.is_empty(), "{ty}: {:?}", r.outcomes);
        assert_eq!(
            stack.table_column("iot.readings", "seq").await,
            ["2"],
            "{ty}"
        );
        assert_eq!(stack.parquet_column("reading").await.len(), 2, "{ty}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_too_long_for_its_column_is_refused_alone_and_never_cut_short() {
    // Given a varchar(4) key: staged as text, assigned by the merge (a cast would cut it)
    let stack = readings_stack(
        "rvarchar",
        "CREATE SCHEMA iot; CREATE TABLE iot.readings (device varchar(4) PRIMARY KEY, seq bigint NOT NULL, reading text)",
    )
    .await;
    let p = stack.pipeline().await;
    let records = [
        (1, reading("d1", 1)),
        (2, reading("far-too-long", 1)),
        (3, reading("d2", 1)),
    ];
    // When they are processed
    let r = p
        .process(
            &stream_batch("readings", &records),
            &invocation("inv-1", Duration::from_secs(30)),
        )
        .await;
    // Then the long key is dead-lettered (22001) and the others load
    assert!(r.failures.is_empty(), "{:?}", r.outcomes);
    assert_eq!(
        r.outcomes[1],
        RecordOutcome::DeadLettered(streamload_core::PoisonKind::Refused)
    );
    assert_eq!(
        stack.table_column("iot.readings", "device").await,
        ["d1", "d2"]
    );
    let dl = stack.dead_letters().await;
    assert!(
        dl[0]["reason"].as_str().unwrap().contains("22001"),
        "{dl:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_whose_parent_comes_later_in_the_batch_still_loads_when_another_is_refused() {
    // Given readings that name a parent reading (a deferred self-reference), a child before
    // its parent in the batch, and one row a CHECK refuses, which sends the batch to isolation
    let stack = readings_stack(
        "rparent",
        "CREATE SCHEMA iot; CREATE TABLE iot.readings (device text PRIMARY KEY, seq bigint NOT NULL,
           reading text CONSTRAINT reading_parent REFERENCES iot.readings (device) DEFERRABLE INITIALLY DEFERRED
           CONSTRAINT reading_not_bad CHECK (reading IS DISTINCT FROM 'bad'))",
    )
    .await;
    let p = stack.pipeline().await;
    let row = |device: &str, reading: Option<&str>| serde_json::json!({"device": device, "seq": 1, "reading": reading});
    let records = [
        (1, row("child", Some("parent"))),
        (2, row("bad", Some("bad"))),
        (3, row("parent", None)),
    ];
    // When they are processed
    let r = p
        .process(
            &stream_batch("readings", &records),
            &invocation("inv-1", Duration::from_secs(30)),
        )
        .await;
    // Then only the bad row is refused: the child, tried again after its parent, loads
    assert!(r.failures.is_empty(), "{:?}", r.outcomes);
    assert_eq!(r.outcomes[0], RecordOutcome::Loaded, "{:?}", r.outcomes);
    assert_eq!(
        r.outcomes[1],
        RecordOutcome::DeadLettered(streamload_core::PoisonKind::Refused)
    );
    assert_eq!(
        stack.table_column("iot.readings", "device").await,
        ["child", "parent"]
    );
}
