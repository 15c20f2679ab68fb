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
