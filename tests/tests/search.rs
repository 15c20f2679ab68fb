//! The search index's contract, held by the real adapter against the local stack's
//! OpenSearch-compatible server (osmem-server) and by the in-memory index alike: versioned
//! writes keep the newest, create-only keeps the first, a document the strict mapping refuses
//! is refused alone with its field named, and the start-up check creates the index (or a
//! pattern's template) or names the field that differs.

use serde_json::json;
use streamload_aws::{SearchAuth, SearchClient};
use streamload_core::ports::SearchIndex;
use streamload_core::route::{ConfigFile, Routes, Value};
use streamload_core::search::bulk::{encode, Doc, ItemOutcome, DEFAULT_MAX_REQUEST_BYTES};
use streamload_core::search::memory::MemoryIndex;
use streamload_core::Classify;

fn search_url() -> String {
    std::env::var("STREAMLOAD_SEARCH_URL")
        .expect("STREAMLOAD_SEARCH_URL is not set: source .stack/env (make stack) first")
}

/// A name no other test or run uses.
fn unique(tag: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    format!("{tag}-{}-{t}", std::process::id())
}

/// A route `name` writing to `index`, with `merge`, and an extra column if `extra`; `revision`
/// of type `revision_type`.
fn route(
    name: &str,
    index: &str,
    merge: serde_json::Value,
    extra: bool,
    revision_type: &str,
) -> Routes {
    let mut columns = vec![
        json!({"name": "order_id", "from": "/order_id", "type": "text", "required": true}),
        json!({"name": "revision", "from": "/revision", "type": revision_type, "required": true}),
        json!({"name": "placed_at", "from": "/placed_at", "type": "timestamptz", "required": true}),
        json!({"name": "qty", "from": "/qty", "type": "integer"}),
    ];
    if extra {
        columns.push(json!({"name": "extra_field", "from": "/x", "type": "text"}));
    }
    let mut route = json!({
        "name": name, "source": "kinesis:orders", "table": "orders",
        "event_time": "/placed_at", "key": ["order_id"],
        "index": {"name": index}, "column": columns
    });
    if !merge.is_null() {
        route["merge"] = merge;
    }
    let file: ConfigFile = serde_json::from_value(json!({ "route": [route] })).unwrap();
    Routes::compile(&file).unwrap()
}

fn order(id: &str, revision: i64, qty: i64) -> Vec<Value> {
    vec![
        Value::Text(id.into()),
        Value::Int(revision),
        Value::Timestamp(1_796_378_400_000_000),
        Value::Int(qty),
        Value::Text("x".into()),
    ]
}

/// Sends `events` through `routes`' plan as one request; the outcome of each.
async fn send<I: SearchIndex>(
    index: &I,
    routes: &Routes,
    events: &[Vec<Value>],
) -> Vec<ItemOutcome> {
    let plan = routes.get(0).search.as_ref().unwrap();
    let docs: Vec<Doc<'_>> = events.iter().map(|v| Doc { plan, values: v }).collect();
    let requests = encode(&docs, DEFAULT_MAX_REQUEST_BYTES);
    assert_eq!(requests.len(), 1);
    index
        .bulk(requests[0].body.clone().into(), requests[0].members.len())
        .await
        .unwrap()
}

async fn contract<I: SearchIndex>(index: &I, suffix: &str) {
    use ItemOutcome::*;
    let name = format!("orders-{suffix}");
    let newest = route(
        "orders",
        &name,
        json!({"newest_by": "revision"}),
        false,
        "bigint",
    );
    let plan = newest.get(0).search.as_ref().unwrap();

    // Given no index: the start-up check without leave to create names the route and index
    let e = index.prepare("orders", plan, false).await.unwrap_err();
    assert!(
        !e.is_retryable() && e.message.contains("\"orders\"") && e.message.contains(&name),
        "{e}"
    );
    // When it may create it, Then it does, and a second check finds it compatible
    index.prepare("orders", plan, true).await.unwrap();
    index.prepare("orders", plan, false).await.unwrap();

    // When two orders are written, then an older and the same revision of the first again
    assert_eq!(
        send(index, &newest, &[order("o-1", 3, 1), order("o-2", 1, 1)]).await,
        vec![Written, Written]
    );
    assert_eq!(
        send(index, &newest, &[order("o-1", 2, 9), order("o-1", 3, 9)]).await,
        vec![AlreadyThere, AlreadyThere]
    );
    // Then the index holds revision 3 as first written (version = revision + 1)
    let doc = index.document(&name, "o-1").await.unwrap().expect("o-1");
    assert_eq!(
        (
            doc.version,
            doc.source["revision"].clone(),
            doc.source["qty"].clone()
        ),
        (4, json!(3), json!(1))
    );
    // And a newer revision replaces it
    assert_eq!(
        send(index, &newest, &[order("o-1", 5, 2)]).await,
        vec![Written]
    );
    let doc = index.document(&name, "o-1").await.unwrap().expect("o-1");
    assert_eq!((doc.version, doc.source["qty"].clone()), (6, json!(2)));
    assert_eq!(index.document(&name, "o-9").await.unwrap(), None);
    // And an audit's listing holds every document once with its version, across pages
    // (the real adapter scrolls 1,000 at a time), and nothing for an index not there
    assert_eq!(
        index.list_documents(&name).await.unwrap(),
        vec![("o-1".to_owned(), 6), ("o-2".to_owned(), 2)]
    );
    let bulk: Vec<Vec<Value>> = (0..2_500)
        .map(|n| order(&format!("p-{n:04}"), 1, n))
        .collect();
    assert!(send(index, &newest, &bulk)
        .await
        .iter()
        .all(|o| *o == Written));
    let listed = index.list_documents(&name).await.unwrap();
    assert_eq!(listed.len(), 2_502);
    assert_eq!(
        listed.iter().filter(|(id, _)| id.starts_with("p-")).count(),
        2_500
    );
    assert!(index
        .list_documents(&format!("absent-{suffix}"))
        .await
        .unwrap()
        .is_empty());

    // Given a route that writes a field the index's strict mapping lacks
    let wider = route(
        "orders",
        &name,
        json!({"newest_by": "revision"}),
        true,
        "bigint",
    );
    // Then the start-up check names the field
    let e = index
        .prepare("orders", wider.get(0).search.as_ref().unwrap(), false)
        .await
        .unwrap_err();
    assert!(e.message.contains("extra_field"), "{e}");
    // And a request carrying such a document refuses it alone, naming the field and not
    // its value, while the other document loads
    let mut bad = order("o-3", 1, 1);
    bad[4] = Value::Text("secret-value".into());
    let mut good = order("o-4", 1, 1);
    good.pop();
    let outcomes = {
        let wide_plan = wider.get(0).search.as_ref().unwrap();
        let narrow_plan = newest.get(0).search.as_ref().unwrap();
        let docs = [
            Doc {
                plan: wide_plan,
                values: &bad,
            },
            Doc {
                plan: narrow_plan,
                values: &good,
            },
        ];
        let requests = encode(&docs, DEFAULT_MAX_REQUEST_BYTES);
        index
            .bulk(requests[0].body.clone().into(), 2)
            .await
            .unwrap()
    };
    assert_eq!(
        outcomes,
        vec![
            Refused("the search index refused the document: strict_dynamic_mapping_exception (field extra_field)".into()),
            Written
        ]
    );
    // And a route whose field has another type is refused at start-up, naming it
    let text_revision = route(
        "orders",
        &name,
        json!({"newest_by": "placed_at"}),
        false,
        "text",
    );
    let e = index
        .prepare(
            "orders",
            text_revision.get(0).search.as_ref().unwrap(),
            false,
        )
        .await
        .unwrap_err();
    assert!(
        e.message.contains("\"revision\"") && e.message.contains("long"),
        "{e}"
    );

    // Given a keep-first route on an index of its own: the first event of a key stays
    let first = route(
        "firsts",
        &format!("firsts-{suffix}"),
        serde_json::Value::Null,
        false,
        "bigint",
    );
    index
        .prepare("firsts", first.get(0).search.as_ref().unwrap(), true)
        .await
        .unwrap();
    assert_eq!(
        send(index, &first, &[order("k-1", 1, 1)]).await,
        vec![Written]
    );
    assert_eq!(
        send(index, &first, &[order("k-1", 2, 2)]).await,
        vec![AlreadyThere]
    );
    let doc = index
        .document(&format!("firsts-{suffix}"), "k-1")
        .await
        .unwrap()
        .expect("k-1");
    assert_eq!(doc.source["qty"], json!(1));

    // Given a monthly pattern (keep-first: the identity is the key), the check makes its
    // template and a document lands in its month's index
    let monthly = route(
        "monthly",
        &format!("monthly-{suffix}-{{yyyy.MM}}"),
        serde_json::Value::Null,
        false,
        "bigint",
    );
    index
        .prepare(
            &format!("monthly-{suffix}"),
            monthly.get(0).search.as_ref().unwrap(),
            true,
        )
        .await
        .unwrap();
    assert_eq!(
        send(index, &monthly, &[order("m-1", 1, 7)]).await,
        vec![Written]
    );
    let doc = index
        .document(&format!("monthly-{suffix}-2026.12"), "m-1")
        .await
        .unwrap()
        .expect("m-1");
    assert_eq!(doc.source["qty"], json!(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_index_contract_holds_for_the_real_adapter_and_the_memory_index() {
    let real = SearchClient::new(&search_url(), SearchAuth::None, None).unwrap();
    contract(&real, &unique("real")).await;
    contract(&MemoryIndex::default(), "memory").await;
}

const EXAMPLE: &str = include_str!("../../examples/orders/streamload.toml");
const ORDERS_DDL: &str = include_str!("../../examples/orders/ddl.sql");

/// The example deployment with its orders route also indexed into `index`.
fn example_with_index(index: &str) -> String {
    let orders = EXAMPLE.match_indices("[[route]]").nth(1).unwrap().0;
    let columns = orders + EXAMPLE[orders..].find("[[route.column]]").unwrap();
    format!(
        "{}[route.index]\nname = \"{index}\"\n\n{}",
        &EXAMPLE[..columns],
        &EXAMPLE[columns..]
    )
}

fn example_order(id: &str, revision: i64, total: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "order_id": id, "revision": revision,
        "customer": {"id": "6F9619FF-8B86-D011-B42D-00C04FC964FF"},
        "amount": {"total": total, "currency": "EUR"},
        "paid": true, "placed_at": 1_714_557_600_000i64,
        "shipping": {"ship_by": "2024-05-03", "weight_kg": 1.25},
        "items": []
    }))
    .unwrap()
}

/// A stack whose loader indexes orders into a fresh index (created at start-up from the
/// route), reaching the search server at `url`.
async fn indexed_stack(tag: &str, index: &str, url: &str) -> streamload_tests::TestStack {
    let mut stack = streamload_tests::TestStack::new(tag, false).await;
    stack.pg.batch_execute(ORDERS_DDL).await.unwrap();
    stack.use_routes(&example_with_index(index));
    stack.config.search = Some(streamload_runtime::SearchSettings {
        url: url.to_owned(),
        auth: streamload_runtime::SearchAuthSource::None,
    });
    stack
}

async fn revision_in_index(index: &str, id: &str) -> Option<(u64, serde_json::Value)> {
    let client = SearchClient::new(&search_url(), SearchAuth::None, None).unwrap();
    client
        .document(index, id)
        .await
        .unwrap()
        .map(|d| (d.version, d.source["revision"].clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loader_indexes_each_order_once_in_its_newest_revision_on_a_real_search_server() {
    use std::time::Duration;
    use streamload_core::RecordOutcome;
    use streamload_tests::{invocation, kinesis_batch};
    // Given the loader started with an orders route that names a fresh index
    let index = unique("orders");
    let stack = indexed_stack("srch", &index, &search_url()).await;
    let p = stack.pipeline().await;
    // When two revisions of one order and another order arrive, then an older revision late
    let first = kinesis_batch(&[
        (1, example_order("o-1", 1, "10.50")),
        (2, example_order("o-1", 3, "30.50")),
        (3, example_order("o-2", 1, "20.00")),
    ]);
    let r = p
        .process(&first, &invocation("s-1", Duration::from_secs(30)))
        .await;
    assert!(
        r.outcomes.iter().all(|o| *o == RecordOutcome::Loaded),
        "{:?}",
        r.outcomes
    );
    let late = kinesis_batch(&[(4, example_order("o-1", 2, "99.00"))]);
    let r = p
        .process(&late, &invocation("s-2", Duration::from_secs(30)))
        .await;
    assert_eq!(r.outcomes, vec![RecordOutcome::Loaded]);
    // And the first batch is delivered again
    let r = p
        .process(&first, &invocation("s-3", Duration::from_secs(30)))
        .await;
    assert!(
        r.outcomes.iter().all(|o| *o == RecordOutcome::Duplicate),
        "{:?}",
        r.outcomes
    );
    // Then the index holds each order once, in its newest revision, as PostgreSQL does
    assert_eq!(revision_in_index(&index, "o-1").await, Some((4, json!(3))));
    assert_eq!(revision_in_index(&index, "o-2").await, Some((2, json!(1))));
    assert_eq!(
        stack.table_column("sales.orders", "revision").await,
        vec!["1".to_owned(), "3".to_owned()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_answer_lost_after_it_was_applied_and_a_call_that_hangs_still_load_each_order_once()
{
    use std::time::Duration;
    use streamload_core::RecordOutcome;
    use streamload_tests::fault_proxy::{Fault, FaultProxy, Rule};
    use streamload_tests::{invocation, kinesis_batch};
    // Given the search server behind a fault proxy that applies the first _bulk and answers
    // it with a 500, then holds the second without answering
    let proxy = FaultProxy::start(&search_url()).await;
    let index = unique("faults");
    let stack = indexed_stack("srchf", &index, &proxy.endpoint()).await;
    let p = stack.pipeline().await;
    proxy.add(Rule::once("*", Fault::LoseAnswer500));
    // When a batch is loaded
    let batch = kinesis_batch(&[
        (1, example_order("o-1", 1, "10.50")),
        (2, example_order("o-2", 1, "20.00")),
    ]);
    let r = p
        .process(&batch, &invocation("f-1", Duration::from_secs(30)))
        .await;
    // Then the re-sent request found both documents there and the batch loaded
    assert_eq!(r.outcomes, vec![RecordOutcome::Loaded; 2]);
    let faulted: usize = proxy.counts().values().map(|(_, f)| f).sum();
    assert_eq!(faulted, 1, "{:?}", proxy.counts());
    assert_eq!(revision_in_index(&index, "o-1").await, Some((2, json!(1))));
    // Given a request that never answers, within an invocation of 6 s
    proxy.clear();
    proxy.add(Rule::always("*", Fault::Hang));
    let more = kinesis_batch(&[(3, example_order("o-3", 1, "1.00"))]);
    let started = std::time::Instant::now();
    let r = p
        .process(&more, &invocation("f-2", Duration::from_secs(6)))
        .await;
    // Then it is cut off before the deadline and the record is redelivered, not lost
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        r.outcomes,
        vec![RecordOutcome::Failed(
            streamload_core::FailureCause::SearchIndex
        )]
    );
    proxy.clear();
    let r = p
        .process(&more, &invocation("f-3", Duration::from_secs(30)))
        .await;
    assert_eq!(r.outcomes, vec![RecordOutcome::Loaded]);
    assert_eq!(revision_in_index(&index, "o-3").await, Some((2, json!(1))));
}

/// A stack whose loader runs `routes` (none with a table) against the search server, with no
/// database configured at all.
async fn tableless_stack(tag: &str, routes: &str) -> streamload_tests::TestStack {
    let mut stack = streamload_tests::TestStack::new(tag, false).await;
    stack.use_routes(routes);
    stack.config.search = Some(streamload_runtime::SearchSettings {
        url: search_url(),
        auth: streamload_runtime::SearchAuthSource::None,
    });
    stack.config.database = streamload_runtime::DatabaseSource::Unset;
    stack
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_a_table_loads_the_index_and_the_lake_from_the_real_loader() {
    use std::time::Duration;
    use streamload_core::RecordOutcome;
    use streamload_tests::{invocation, kinesis_batch};
    // Given a route that names an index and no table (no table exists for it either)
    let index = unique("clicks");
    let stack = tableless_stack(
        "notable",
        &format!(
            r#"
[[route]]
name = "clicks"
source = "kinesis:orders"
key = ["click_id"]
auto_migrate = "add-columns"

[route.index]
name = "{index}"

[[route.column]]
name = "click_id"
from = "/click_id"
type = "text"
required = true

[[route.column]]
name = "page"
from = "/page"
type = "text"
"#
        ),
    )
    .await;
    let p = stack.pipeline().await;
    // When clicks arrive, one of them twice
    let click = |id: &str| serde_json::to_vec(&json!({"click_id": id, "page": "/home"})).unwrap();
    let batch = kinesis_batch(&[(1, click("c-1")), (2, click("c-2")), (3, click("c-1"))]);
    let r = p
        .process(&batch, &invocation("n-1", Duration::from_secs(30)))
        .await;
    // Then each is in the index once and in the lake once
    assert_eq!(
        r.outcomes,
        vec![
            RecordOutcome::Loaded,
            RecordOutcome::Loaded,
            RecordOutcome::DuplicateInBatch
        ]
    );
    let client = SearchClient::new(&search_url(), SearchAuth::None, None).unwrap();
    for id in ["c-1", "c-2"] {
        let doc = client.document(&index, id).await.unwrap().expect(id);
        assert_eq!(doc.source["page"], "/home");
    }
    let objects: Vec<String> = stack
        .object_keys()
        .await
        .into_iter()
        .filter(|k| k.starts_with("clicks/") && k.ends_with(".parquet"))
        .collect();
    assert_eq!(objects.len(), 1, "{objects:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_only_route_commits_by_markers_in_real_s3_and_a_redelivery_loads_nothing_twice() {
    use std::time::Duration;
    use streamload_core::RecordOutcome;
    use streamload_tests::{invocation, kinesis_batch};
    // Given a route with an index, no table and no lake, and no database configured
    let index = unique("views");
    let stack = tableless_stack(
        "nolake",
        &format!(
            r#"
[[route]]
name = "views"
source = "kinesis:orders"
key = ["view_id"]
lake = false
auto_migrate = "add-columns"

[route.index]
name = "{index}"

[[route.column]]
name = "view_id"
from = "/view_id"
type = "text"
required = true
"#
        ),
    )
    .await;
    let view = |id: &str| serde_json::to_vec(&json!({"view_id": id})).unwrap();
    let batch = kinesis_batch(&[(1, view("v-1")), (2, view("v-2"))]);
    // When the batch loads, and is then delivered again to a new sandbox
    let first = stack
        .pipeline()
        .await
        .process(&batch, &invocation("m-1", Duration::from_secs(30)))
        .await;
    let again = stack
        .pipeline()
        .await
        .process(&batch, &invocation("m-2", Duration::from_secs(30)))
        .await;
    // Then both are indexed, the second delivery finds them done, and the bucket holds one
    // commit marker naming each once and no Parquet
    assert_eq!(first.outcomes, vec![RecordOutcome::Loaded; 2]);
    assert_eq!(again.outcomes, vec![RecordOutcome::Duplicate; 2]);
    let client = SearchClient::new(&search_url(), SearchAuth::None, None).unwrap();
    assert_eq!(
        client.list_documents(&index).await.unwrap(),
        vec![("v-1".to_owned(), 1), ("v-2".to_owned(), 1)]
    );
    let keys: Vec<String> = stack
        .object_keys()
        .await
        .into_iter()
        .filter(|k| k.starts_with("views/"))
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with("views/_markers/") && keys[0].ends_with("-m-1.jsonl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_keeps_the_event_postgresql_kept_when_another_shard_loads_the_key_in_between() {
    use std::time::Duration;
    use streamload_core::{FailureCause, RecordOutcome};
    use streamload_tests::fault_proxy::{Fault, FaultProxy, Rule};
    use streamload_tests::{invocation, kinesis_batch};
    // Given a keep-first route (each revision an event of its own) with a table and an index,
    // the index behind a fault proxy
    let proxy = FaultProxy::start(&search_url()).await;
    let index = unique("kf");
    let table = format!("kf_{}", std::process::id());
    let mut stack = streamload_tests::TestStack::new("kfrace", false).await;
    stack
        .pg
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (order_id text PRIMARY KEY, revision bigint NOT NULL, qty integer)"
        ))
        .await
        .unwrap();
    stack.use_routes(&format!(
        r#"
[[route]]
name = "kf"
source = "kinesis:orders"
table = "{table}"
key = ["order_id"]
identity = ["/order_id", "/revision"]
merge = "keep-first"
auto_migrate = "add-columns"

[route.index]
name = "{index}"

[[route.column]]
name = "order_id"
from = "/order_id"
type = "text"
required = true

[[route.column]]
name = "revision"
from = "/revision"
type = "bigint"
required = true

[[route.column]]
name = "qty"
from = "/qty"
type = "integer"
"#
    ));
    stack.config.search = Some(streamload_runtime::SearchSettings {
        url: proxy.endpoint(),
        auth: streamload_runtime::SearchAuthSource::None,
    });
    let order = |revision: i64, qty: i64| {
        serde_json::to_vec(&json!({"order_id": "o-1", "revision": revision, "qty": qty})).unwrap()
    };
    let first = kinesis_batch(&[(1, order(1, 10))]);
    let second = kinesis_batch(&[(9, order(2, 20))]);
    let p = stack.pipeline().await;
    // When the first event's invocation commits its row and its _bulk never answers
    proxy.add(Rule::always("*", Fault::Hang));
    let r = p
        .process(&first, &invocation("kf-1", Duration::from_secs(6)))
        .await;
    assert_eq!(
        r.outcomes,
        vec![RecordOutcome::Failed(FailureCause::SearchIndex)]
    );
    // and another event of the key loads from another shard meanwhile
    proxy.clear();
    let r = p
        .process(&second, &invocation("kf-2", Duration::from_secs(30)))
        .await;
    // Then it loads without writing a document: PostgreSQL kept the first event
    assert_eq!(r.outcomes, vec![RecordOutcome::Loaded]);
    assert_eq!(stack.table_column(&table, "revision").await, vec!["1"]);
    assert_eq!(revision_in_index(&index, "o-1").await, None);
    // And the first event, delivered again, writes the document PostgreSQL holds
    let r = p
        .process(&first, &invocation("kf-3", Duration::from_secs(30)))
        .await;
    assert_eq!(r.outcomes, vec![RecordOutcome::Loaded]);
    assert_eq!(revision_in_index(&index, "o-1").await, Some((1, json!(1))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_demanding_credentials_gets_them_from_the_secret_and_a_wrong_one_stops_start_up()
{
    use std::time::Duration;
    use streamload_core::RecordOutcome;
    use streamload_tests::fault_proxy::FaultProxy;
    use streamload_tests::{invocation, kinesis_batch};
    // Given a cluster that refuses every request without `loader`'s basic credentials, and
    // the loader told to sign in with a Secrets Manager secret holding them
    let proxy = FaultProxy::start(&search_url()).await;
    proxy.require_authorization("Basic bG9hZGVyOnMzY3IzdA==");
    let index = unique("basic");
    let mut stack = indexed_stack("srchauth", &index, &proxy.endpoint()).await;
    let secret = |password: &str| json!({"username": "loader", "password": password}).to_string();
    let right =
        streamload_tests::create_secret(&stack.sdk, &unique("search"), &secret("s3cr3t")).await;
    stack.config.search = Some(streamload_runtime::SearchSettings {
        url: proxy.endpoint(),
        auth: streamload_runtime::SearchAuthSource::Secret(right),
    });
    // When the loader starts (creating the index) and loads an order
    let p = stack.pipeline().await;
    let r = p
        .process(
            &kinesis_batch(&[(1, example_order("o-1", 1, "10.50"))]),
            &invocation("auth-1", Duration::from_secs(30)),
        )
        .await;
    // Then every request carried the credentials and the document is there
    assert_eq!(r.outcomes, vec![RecordOutcome::Loaded]);
    assert_eq!(proxy.unauthorized(), 0);
    assert_eq!(revision_in_index(&index, "o-1").await, Some((2, json!(1))));
    // Given a secret with a wrong password
    let wrong =
        streamload_tests::create_secret(&stack.sdk, &unique("search"), &secret("wrong")).await;
    stack.config.search = Some(streamload_runtime::SearchSettings {
        url: proxy.endpoint(),
        auth: streamload_runtime::SearchAuthSource::Secret(wrong),
    });
    // When the loader starts, Then start-up fails with one line naming the refusal, and never
    // the password
    let e = match streamload_runtime::build_pipeline_with(&stack.config, &stack.sdk).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started with credentials the cluster refuses"),
    };
    assert!(
        e.starts_with("route \"orders\": ")
            && e.contains("401 security_exception")
            && e.contains("STREAMLOAD_SEARCH_SECRET_ARN")
            && !e.contains("wrong")
            && !e.contains('\n'),
        "{e}"
    );
    assert!(proxy.unauthorized() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_with_a_table_and_no_database_configured_fails_at_start_up_naming_it() {
    // Given the example orders route (a table) and no database variables
    let mut stack = indexed_stack("nodb", &unique("nodb"), &search_url()).await;
    stack.config.database = streamload_runtime::DatabaseSource::Unset;
    // When the loader starts, Then one line names what is missing and the route
    let e = match streamload_runtime::build_pipeline_with(&stack.config, &stack.sdk).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started without a database"),
    };
    assert!(
        e.contains("DATABASE_URL") && e.contains("route \"events\"") && !e.contains('\n'),
        "{e}"
    );
}
