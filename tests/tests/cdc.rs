//! Change data capture against the real stack: Debezium change events of the PostgreSQL and
//! MySQL connectors, in the shapes their documentation shows, through the Kafka loader's
//! pipeline into a real PostgreSQL table and the lake — out of order across partitions,
//! replayed, with a delete, its tombstone, a late older update, an unchanged TOASTed column and
//! a primary-key change.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use streamload_core::ports::SearchIndex;
use streamload_core::RecordOutcome;
use streamload_tests::{invocation, TestStack};

const CUSTOMERS_DDL: &str = "CREATE TABLE customers (
    id bigint PRIMARY KEY, email text, bio text,
    cdc_op text NOT NULL, cdc_position numeric(38,0) NOT NULL, cdc_deleted boolean NOT NULL)";

fn route(database: &str) -> String {
    format!(
        r#"
[[route]]
name = "customers"
source = "kafka:dbserver1.inventory.customers"
table = "customers"
key = ["id"]

[route.cdc]
database = "{database}"

[[route.column]]
name = "id"
from = "/id"
type = "bigint"
required = true

[[route.column]]
name = "email"
from = "/email"
type = "text"
required = true

[[route.column]]
name = "bio"
from = "/bio"
type = "text"
"#
    )
}

/// A Debezium PostgreSQL connector change event, as its documentation shows one.
fn pg(op: &str, before: &str, after: &str, last_commit: Option<u64>, lsn: u64) -> Option<String> {
    let commit = last_commit.map_or("null".to_string(), |c| format!(r#"\"{c}\""#));
    Some(format!(
        r#"{{"before":{before},"after":{after},
        "source":{{"version":"2.7.0.Final","connector":"postgresql","name":"dbserver1",
          "ts_ms":1559033904863,"snapshot":"{snap}","db":"postgres","sequence":"[{commit},\"{lsn}\"]",
          "schema":"inventory","table":"customers","txId":555,"lsn":{lsn},"xmin":null}},
        "op":"{op}","ts_ms":1559033904961,"transaction":null}}"#,
        snap = if op == "r" { "true" } else { "false" },
    ))
}

/// The same event in the JSON converter's `{"schema", "payload"}` wrapper.
fn wrapped(event: Option<String>) -> Option<String> {
    event.map(|e| format!(r#"{{"schema":{{"type":"struct","optional":false}},"payload":{e}}}"#))
}

/// A Kafka batch of `(partition, offset, value)` on the customers topic (`None`: a tombstone).
fn batch(records: &[(i32, i64, Option<String>)]) -> streamload_core::Batch {
    let mut by_partition: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    let topic = "dbserver1.inventory.customers";
    for (partition, offset, value) in records {
        let value = value
            .as_ref()
            .map(|v| base64::engine::general_purpose::STANDARD.encode(v));
        by_partition
            .entry(format!("{topic}-{partition}"))
            .or_default()
            .push(serde_json::json!({
                "topic": topic, "partition": partition, "offset": offset,
                "timestamp": 1_714_557_600_000i64, "timestampType": "CREATE_TIME",
                "key": base64::engine::general_purpose::STANDARD.encode(b"{\"id\":1}"),
                "value": value, "headers": []
            }));
    }
    let event = serde_json::json!({
        "eventSource": "aws:kafka",
        "eventSourceArn": "arn:aws:kafka:us-east-1:123456789012:cluster/cdc/1",
        "bootstrapServers": "b-1:9098",
        "records": by_partition,
    });
    streamload_core::kafka::decode(&event.to_string()).expect("a Kafka event")
}

/// `id | email | bio | cdc_op | cdc_deleted` of every row, by id.
async fn rows(stack: &TestStack) -> Vec<String> {
    stack
        .pg
        .query(
            "SELECT concat_ws('|', id, coalesce(email, '∅'), coalesce(left(bio, 12), '∅'), cdc_op, cdc_deleted) \
             FROM customers ORDER BY id",
            &[],
        )
        .await
        .expect("select")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_changes_apply_newest_by_source_position_whatever_the_delivery_order() {
    // Given a customers table replicated from a PostgreSQL connector's topic
    let mut stack = TestStack::new("cdcpg", false).await;
    stack.use_routes(&route("postgresql"));
    stack.pg.batch_execute(CUSTOMERS_DDL).await.unwrap();
    let p = stack.pipeline().await;
    let long_bio = format!("long-bio-{}", "x".repeat(3000));
    let first = batch(&[
        // a snapshot read, a create, an update (with its before image), then a delete of 2
        // and its tombstone
        (
            0,
            1,
            pg(
                "r",
                "null",
                &format!(r#"{{"id":1,"email":"a@x","bio":"{long_bio}"}}"#),
                None,
                100,
            ),
        ),
        (
            0,
            2,
            pg(
                "c",
                "null",
                r#"{"id":2,"email":"two@x","bio":null}"#,
                Some(150),
                160,
            ),
        ),
        (
            0,
            3,
            pg(
                "u",
                &format!(r#"{{"id":1,"email":"a@x","bio":"{long_bio}"}}"#),
                &format!(r#"{{"id":1,"email":"b@x","bio":"{long_bio}"}}"#),
                Some(170),
                180,
            ),
        ),
        (0, 4, pg("d", r#"{"id":2}"#, "null", Some(190), 200)),
        (0, 5, None),
    ]);
    // When it is delivered
    let r = p
        .process(&first, &invocation("b1", Duration::from_secs(30)))
        .await;
    // Then four changes load and the tombstone is skipped
    assert_eq!(
        r.outcomes,
        [
            RecordOutcome::Loaded,
            RecordOutcome::Loaded,
            RecordOutcome::Loaded,
            RecordOutcome::Loaded,
            RecordOutcome::Skipped
        ]
    );
    assert_eq!(
        rows(&stack).await,
        ["1|b@x|long-bio-xxx|u|f", "2|∅|∅|d|t"],
        "the update won over the snapshot read; the delete left its key's memory"
    );

    // When another partition delivers, late, an update of 2 older than its delete, and an
    // update of 1 whose unchanged TOASTed bio Debezium did not send (wrapped in the JSON
    // converter's schema/payload)
    let second = batch(&[
        (
            1,
            1,
            pg(
                "u",
                "null",
                r#"{"id":2,"email":"late@x","bio":null}"#,
                Some(160),
                165,
            ),
        ),
        (
            1,
            2,
            wrapped(pg(
                "u",
                "null",
                r#"{"id":1,"email":"c@x","bio":"__debezium_unavailable_value"}"#,
                Some(210),
                220,
            )),
        ),
    ]);
    let r = p
        .process(&second, &invocation("b2", Duration::from_secs(30)))
        .await;
    assert!(
        r.outcomes.iter().all(|o| *o == RecordOutcome::Loaded),
        "{r:?}"
    );
    // Then the deleted row stays deleted, and 1 has its new email with its stored bio
    assert_eq!(rows(&stack).await, ["1|c@x|long-bio-xxx|u|f", "2|∅|∅|d|t"]);
    let bio: String = stack
        .pg
        .query_one("SELECT bio FROM customers WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(bio, long_bio);

    // When the connector restarts and sends the first batch again
    let r = p
        .process(&first, &invocation("b3", Duration::from_secs(30)))
        .await;
    // Then nothing loads twice and nothing moves back
    assert_eq!(
        r.outcomes
            .iter()
            .filter(|o| **o == RecordOutcome::Duplicate)
            .count(),
        4,
        "{r:?}"
    );
    assert_eq!(rows(&stack).await, ["1|c@x|long-bio-xxx|u|f", "2|∅|∅|d|t"]);

    // When 1's primary key changes to 10 (Debezium: a delete of 1, a create of 10)
    let third = batch(&[
        (0, 6, pg("d", r#"{"id":1}"#, "null", Some(230), 240)),
        (0, 7, None),
        (
            0,
            8,
            pg(
                "c",
                "null",
                r#"{"id":10,"email":"c@x","bio":"moved"}"#,
                Some(230),
                241,
            ),
        ),
    ]);
    let r = p
        .process(&third, &invocation("b4", Duration::from_secs(30)))
        .await;
    assert_eq!(r.outcomes[1], RecordOutcome::Skipped);
    assert_eq!(
        rows(&stack).await,
        ["1|∅|∅|d|t", "2|∅|∅|d|t", "10|c@x|moved|c|f"]
    );
    // And the lake holds every change once, with its op and position: eight, none twice
    let mut ops = stack.parquet_column("cdc_op").await;
    ops.sort();
    assert_eq!(ops, ["c", "c", "d", "d", "r", "u", "u", "u"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_flattened_changes_order_by_binlog_file_then_position() {
    // Given a table replicated from a MySQL connector through ExtractNewRecordState
    // (add.fields=op,source.file,source.pos,source.row; delete.tombstone.handling.mode=rewrite)
    let mut stack = TestStack::new("cdcmy", false).await;
    stack.use_routes(&route("mysql"));
    stack.pg.batch_execute(CUSTOMERS_DDL).await.unwrap();
    let p = stack.pipeline().await;
    let flat = |id: u64, email: &str, op: &str, file: &str, pos: u64, row: u64| {
        Some(format!(
            r#"{{"id":{id},"email":"{email}","bio":null,"__op":"{op}","__source_file":"{file}",
            "__source_pos":{pos},"__source_row":{row},"__deleted":"{}"}}"#,
            op == "d"
        ))
    };
    // When the newer change (after a binlog rollover, at a smaller pos) arrives first, then
    // the older one; and a rewritten delete, then a create of the same key in the same
    // binlog event before it (row 0 < row 1) arrives late
    let r = p
        .process(
            &batch(&[
                (0, 1, flat(5, "new@x", "u", "mysql-bin.000010", 4, 0)),
                (1, 1, flat(5, "old@x", "c", "mysql-bin.000009", 9_999, 0)),
                (0, 2, flat(6, "gone@x", "d", "mysql-bin.000010", 800, 1)),
                (1, 2, flat(6, "back@x", "c", "mysql-bin.000010", 800, 0)),
            ]),
            &invocation("m1", Duration::from_secs(30)),
        )
        .await;
    assert!(
        r.outcomes.iter().all(|o| *o == RecordOutcome::Loaded),
        "{r:?}"
    );
    // Then each key holds its newest change by (file, pos, row)
    assert_eq!(rows(&stack).await, ["5|new@x|∅|u|f", "6|gone@x|∅|d|t"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cdc_example_loads_as_its_readme_says() {
    // Given examples/cdc's route and its connector output, one batch per partition of two
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/cdc");
    let mut stack = TestStack::new("cdcex", false).await;
    stack.use_routes(&std::fs::read_to_string(format!("{root}/routes.toml")).unwrap());
    stack
        .pg
        .batch_execute(
            "CREATE TABLE customers (id bigint PRIMARY KEY, first_name text, last_name text, \
             email text, cdc_op text NOT NULL, cdc_position numeric(38,0) NOT NULL, \
             cdc_deleted boolean NOT NULL)",
        )
        .await
        .unwrap();
    let text = std::fs::read_to_string(format!("{root}/changes.jsonl")).unwrap();
    let mut offsets = [0i64; 2];
    let records: Vec<(i32, i64, Option<String>)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let doc: serde_json::Value = serde_json::from_str(line).unwrap();
            let partition = (doc["key"]["id"].as_i64().unwrap() % 2) as i32;
            offsets[partition as usize] += 1;
            let value = (!doc["value"].is_null()).then(|| doc["value"].to_string());
            (partition, offsets[partition as usize], value)
        })
        .collect();
    // When the loader takes them
    let r = stack
        .pipeline()
        .await
        .process(&batch(&records), &invocation("ex", Duration::from_secs(30)))
        .await;
    // Then the table is the README's, the tombstones skipped and the truncate dead-lettered
    let table: Vec<String> = stack
        .pg
        .query(
            "SELECT concat_ws('|', id, coalesce(first_name, ''), coalesce(email, ''), cdc_op, cdc_deleted) \
             FROM customers ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        table,
        [
            "1001|Sally|sally@acme.com|u|f",
            "1002|||d|t",
            "1003|||d|t",
            "1004|Anne|annek@noanswer.org|c|f",
            "1005|Edward|ed@walker.com|c|f"
        ]
    );
    let count = |o: &RecordOutcome| r.outcomes.iter().filter(|x| *x == o).count();
    assert_eq!(count(&RecordOutcome::Skipped), 3);
    assert_eq!(
        count(&RecordOutcome::DeadLettered(
            streamload_core::PoisonKind::Validation
        )),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_index_keeps_a_deletes_document_against_a_late_older_update() {
    use streamload_aws::{SearchAuth, SearchClient};
    // Given the customers route also writing a search index
    let url = std::env::var("STREAMLOAD_SEARCH_URL").expect("STREAMLOAD_SEARCH_URL (make stack)");
    let mut stack = TestStack::new("cdcix", false).await;
    let index = format!("{}-customers", stack.name.to_lowercase());
    stack.use_routes(&route("postgresql").replace(
        "[route.cdc]",
        &format!(
            "auto_migrate = \"add-columns\"\n\n[route.index]\nname = \"{index}\"\n\n[route.cdc]"
        ),
    ));
    stack.config.search = Some(streamload_runtime::SearchSettings {
        url: url.clone(),
        auth: streamload_runtime::SearchAuthSource::None,
    });
    stack.pg.batch_execute(CUSTOMERS_DDL).await.unwrap();
    let p = stack.pipeline().await;
    // When 2 is created and deleted, and an update older than the delete arrives late from
    // another partition
    for (n, records) in [
        vec![
            (
                0,
                1,
                pg(
                    "c",
                    "null",
                    r#"{"id":2,"email":"two@x","bio":null}"#,
                    Some(150),
                    160,
                ),
            ),
            (0, 2, pg("d", r#"{"id":2}"#, "null", Some(190), 200)),
            (0, 3, None),
        ],
        vec![(
            1,
            1,
            pg(
                "u",
                "null",
                r#"{"id":2,"email":"late@x","bio":null}"#,
                Some(160),
                165,
            ),
        )],
    ]
    .into_iter()
    .enumerate()
    {
        let r = p
            .process(
                &batch(&records),
                &invocation(&format!("ix{n}"), Duration::from_secs(30)),
            )
            .await;
        assert!(r.failures.is_empty(), "{r:?}");
    }
    // Then the index, like the table, holds the delete: its document at the delete's LSN
    let client = SearchClient::new(&url, SearchAuth::None, None).unwrap();
    let doc = client
        .document(&index, "2")
        .await
        .unwrap()
        .expect("2's document");
    assert_eq!(doc.version, 201);
    assert_eq!(doc.source["cdc_deleted"], true, "{:?}", doc.source);
    assert_eq!(doc.source["cdc_op"], "d");
    assert_eq!(rows(&stack).await, ["2|∅|∅|d|t"]);
}
