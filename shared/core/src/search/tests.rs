use super::bulk::{encode, read_answer, Doc, ItemOutcome};
use super::*;
use crate::route::{ConfigFile, Routes};
use serde_json::json;

/// An orders route with `index` and `merge` as given.
fn orders(index: serde_json::Value, merge: serde_json::Value) -> Result<Routes, Vec<String>> {
    let mut route = json!({
        "name": "orders", "source": "kinesis:orders", "table": "orders",
        "event_time": "/placed_at", "key": ["order_id"], "index": index,
        "column": [
            {"name": "order_id", "from": "/order_id", "type": "text", "required": true},
            {"name": "revision", "from": "/revision", "type": "bigint", "required": true},
            {"name": "placed_at", "from": "/placed_at", "type": "timestamptz", "required": true},
            {"name": "total", "from": "/total", "type": "numeric", "precision": 12, "scale": 2},
            {"name": "seq", "from": "@sequence", "type": "numeric", "required": true},
            {"name": "note", "from": "/note", "type": "text", "required": true},
            {"name": "extra", "from": "/extra", "type": "jsonb"},
            {"name": "raw", "from": "/raw", "type": "text", "lake_only": true}
        ]
    });
    if !merge.is_null() {
        route["merge"] = merge;
    }
    let file: ConfigFile = serde_json::from_value(json!({ "route": [route] })).unwrap();
    Routes::compile(&file).map_err(|e| e.0)
}

fn plan(routes: &Routes) -> &IndexPlan {
    routes.get(0).search.as_ref().expect("an index plan")
}

fn values(order: &str, revision: i64, placed_at_us: i64) -> Vec<Value> {
    vec![
        Value::Text(order.into()),
        Value::Int(revision),
        Value::Timestamp(placed_at_us),
        Value::Numeric {
            text: "12.50".into(),
            unscaled: Some(1250),
        },
        Value::Null,
        Value::Text("say \"hi\"".into()),
        Value::Json(r#"{"a":[1,2]}"#.into()),
        Value::Text("lake only".into()),
    ]
}

/// 2026-12-04T10:00:00.123456Z
const PLACED: i64 = 1_796_378_400_123_456;

#[test]
fn a_newest_by_route_writes_versioned_documents_under_its_key() {
    // Given a route whose newest revision wins, with an index of its own
    let routes = orders(json!({"name": "orders"}), json!({"newest_by": "revision"})).unwrap();
    let plan = plan(&routes);
    // When an event's document is encoded
    let v = values("o-1", 7, PLACED);
    let requests = encode(&[Doc { plan, values: &v }], bulk::DEFAULT_MAX_REQUEST_BYTES);
    // Then it is an external-version index action under the key, with the table's columns
    assert_eq!(requests.len(), 1);
    let text = String::from_utf8(requests[0].body.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        r#"{"index":{"_index":"orders","_id":"o-1","version":8,"version_type":"external"}}"#
    );
    let doc: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(
        doc,
        json!({"order_id": "o-1", "revision": 7, "placed_at": "2026-12-04T10:00:00.123456Z",
               "total": 12.50, "note": "say \"hi\"", "extra": {"a": [1, 2]}})
    );
    assert!(text.ends_with('\n'), "a bulk body ends with a newline");
}

#[test]
fn a_keep_first_route_writes_create_only_documents_without_versions() {
    let routes = orders(json!({"name": "orders"}), serde_json::Value::Null).unwrap();
    let v = values("o-1", 7, PLACED);
    let requests = encode(
        &[Doc {
            plan: plan(&routes),
            values: &v,
        }],
        1 << 20,
    );
    let text = String::from_utf8(requests[0].body.clone()).unwrap();
    assert_eq!(
        text.lines().next().unwrap(),
        r#"{"create":{"_index":"orders","_id":"o-1"}}"#
    );
}

#[test]
fn a_pattern_names_the_index_by_the_event_time_and_its_template_by_a_wildcard() {
    // Given a daily index over placed_at, which is in the document id
    let routes = orders(
        json!({"name": "orders-{yyyy.MM.dd}", "id": ["order_id", "placed_at"]}),
        json!({"newest_by": "revision"}),
    )
    .unwrap();
    let plan = plan(&routes);
    let v = values("o-1", 1, PLACED);
    assert_eq!(plan.index_name(&v), "orders-2026.12.04");
    assert_eq!(plan.template_pattern(), "orders-*");
    assert!(plan.is_pattern());
    // And an id of several columns is a JSON array of their identity texts (a timestamp's
    // is its microseconds, as in the claim keys)
    assert_eq!(plan.document_id(&v), r#"["o-1","1796378400123456"]"#);
}

#[test]
fn each_mistake_is_one_line_naming_the_route_and_the_field() {
    let cases = [
        (
            json!({"name": "Orders"}),
            json!(null),
            "index name \"Orders\"",
        ),
        (
            json!({"name": "_orders"}),
            json!(null),
            "index name \"_orders\"",
        ),
        (json!({"name": "o-{yyyy.ww}"}), json!(null), "{yyyy.ww}"),
        (
            json!({"name": "o", "id": ["nope"]}),
            json!(null),
            "index id column \"nope\"",
        ),
        (
            json!({"name": "o", "id": ["note"]}),
            json!(null),
            "every key column",
        ),
        (
            json!({"name": "o", "columns": ["order_id", "gone"]}),
            json!(null),
            "index column \"gone\"",
        ),
        // A pattern whose revisions could fall in different indices
        (
            json!({"name": "o-{yyyy.MM}"}),
            json!({"newest_by": "revision"}),
            "time pattern",
        ),
        // Versions that do not fit 63 bits in order
        (
            json!({"name": "o"}),
            json!({"newest_by": "seq"}),
            "newest_by column \"seq\"",
        ),
        (
            json!({"name": "o"}),
            json!({"newest_by": "note"}),
            "newest_by column \"note\"",
        ),
    ];
    for (index, merge, expected) in cases {
        let problems = orders(index.clone(), merge).unwrap_err();
        assert_eq!(problems.len(), 1, "{index}: {problems:?}");
        assert!(
            problems[0].starts_with("route \"orders\": ") && problems[0].contains(expected),
            "{index}: {problems:?}"
        );
    }
    // A keep-first route's identity is its key, so a pattern needs nothing more
    assert!(orders(json!({"name": "o-{yyyy.MM}"}), json!(null)).is_ok());
}

#[test]
fn documents_that_would_fail_a_whole_request_are_caught_before_sending() {
    let routes = orders(json!({"name": "orders"}), json!({"newest_by": "revision"})).unwrap();
    let plan = plan(&routes);
    // An id over 512 bytes, an empty id, a negative version
    let long = values(&"é".repeat(257), 1, PLACED);
    let empty = values("", 1, PLACED);
    let negative = values("o-2", -1, PLACED);
    let fine = values("o-3", 1, PLACED);
    assert!(plan.check(&long).unwrap_err().contains("514 bytes"));
    assert!(plan.check(&empty).is_err());
    assert!(plan.check(&negative).unwrap_err().contains("negative"));
    assert!(plan.check(&values(&"é".repeat(256), 1, PLACED)).is_ok());
    // And the encoder leaves them out rather than failing the others' request
    let docs: Vec<Doc<'_>> = [&long, &empty, &negative, &fine]
        .into_iter()
        .map(|v| Doc { plan, values: v })
        .collect();
    let requests = encode(&docs, 1 << 20);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].members, vec![3]);
}

#[test]
fn requests_are_cut_by_size_and_by_count_keeping_every_document_once_in_order() {
    let routes = orders(json!({"name": "orders"}), json!({"newest_by": "revision"})).unwrap();
    let plan = plan(&routes);
    let all: Vec<Vec<Value>> = (0..12_000)
        .map(|n| values(&format!("o-{n}"), n, PLACED))
        .collect();
    let docs: Vec<Doc<'_>> = all.iter().map(|v| Doc { plan, values: v }).collect();
    // By count: 5,000 at most
    let requests = encode(&docs, usize::MAX);
    assert_eq!(
        requests.iter().map(|r| r.members.len()).collect::<Vec<_>>(),
        vec![5_000, 5_000, 2_000]
    );
    // By size: each request within the limit, and every document once, in order
    let requests = encode(&docs, 64 * 1024);
    assert!(requests.len() > 12);
    assert!(requests.iter().all(|r| r.body.len() <= 64 * 1024));
    let members: Vec<usize> = requests.iter().flat_map(|r| r.members.clone()).collect();
    assert_eq!(members, (0..12_000).collect::<Vec<_>>());
    // A document larger than the limit goes alone
    let requests = encode(&docs[..3], 10);
    assert_eq!(requests.len(), 3);
}

#[test]
fn answers_are_classified_by_error_type_and_never_quote_a_value() {
    // Given an answer as OpenSearch writes it (osmem-server's words, docs/design/search-index.md)
    let body = json!({"errors": true, "took": 3, "items": [
        {"index": {"_id": "a", "status": 201, "result": "created"}},
        {"index": {"_id": "b", "status": 200, "result": "updated"}},
        {"index": {"_id": "c", "status": 409, "error": {"type": "version_conflict_engine_exception",
            "reason": "[c]: version conflict, current version [7] is higher or equal to the one provided [6]"}}},
        {"create": {"_id": "d", "status": 409, "error": {"type": "version_conflict_engine_exception",
            "reason": "[d]: version conflict, document already exists (current version [1])"}}},
        {"index": {"_id": "e", "status": 400, "error": {"type": "mapper_parsing_exception",
            "reason": "failed to parse field [qty] of type [integer] in document with id 'e'. Preview of field's value: 'secret-value'"}}},
        {"index": {"_id": "f", "status": 400, "error": {"type": "index_closed_exception", "reason": "closed"}}},
        {"index": {"_id": "g", "status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "rejected execution"}}},
        {"index": {"_id": "h", "status": 503, "error": {"type": "unavailable_shards_exception", "reason": "x"}}},
        {"index": {"_id": "i", "status": 403, "error": {"type": "cluster_block_exception", "reason": "blocked"}}},
        {"index": {"_id": "j", "status": 400, "error": {"type": "strict_dynamic_mapping_exception",
            "reason": "mapping set to strict, dynamic introduction of [unknown_field] within [_doc] is not allowed"}}}
    ]});
    let outcomes = read_answer(body.to_string().as_bytes(), 10).unwrap();
    // Then
    assert_eq!(outcomes[0], ItemOutcome::Written);
    assert_eq!(outcomes[1], ItemOutcome::Written);
    assert_eq!(outcomes[2], ItemOutcome::AlreadyThere);
    assert_eq!(outcomes[3], ItemOutcome::AlreadyThere);
    assert_eq!(
        outcomes[4],
        ItemOutcome::Refused(
            "the search index refused the document: mapper_parsing_exception (field qty)".into()
        )
    );
    for (n, outcome) in outcomes.iter().enumerate().take(9).skip(5) {
        assert!(
            matches!(outcome, ItemOutcome::Retry(_)),
            "item {n}: {outcome:?}"
        );
    }
    assert_eq!(
        outcomes[9],
        ItemOutcome::Refused(
            "the search index refused the document: strict_dynamic_mapping_exception (field unknown_field)"
                .into()
        )
    );
    let all = format!("{outcomes:?}");
    assert!(!all.contains("secret-value"));
    // And an answer that is not one for these documents says so
    assert!(read_answer(body.to_string().as_bytes(), 9).is_err());
    assert!(read_answer(b"<html>", 1).is_err());
}

#[test]
fn the_mapping_is_strict_with_each_columns_index_type() {
    let routes = orders(json!({"name": "orders"}), json!({"newest_by": "revision"})).unwrap();
    let mapping = plan(&routes).mapping();
    assert_eq!(mapping["dynamic"], "strict");
    let p = &mapping["properties"];
    assert_eq!(p["order_id"]["type"], "keyword");
    assert_eq!(p["order_id"]["ignore_above"], KEYWORD_IGNORE_ABOVE);
    assert_eq!(p["revision"]["type"], "long");
    assert_eq!(p["placed_at"]["type"], "date");
    assert_eq!(
        p["total"],
        json!({"type": "scaled_float", "scaling_factor": 100})
    );
    assert_eq!(p["seq"]["type"], "keyword");
    assert_eq!(p["extra"], json!({"type": "object", "enabled": false}));
    assert!(
        p.get("raw").is_none(),
        "lake_only columns stay out of the index"
    );
}

#[test]
fn a_route_writes_any_non_empty_subset_of_table_index_and_lake() {
    let route = |table: bool, index: bool, lake: bool, updated_at: bool| {
        let mut r = json!({
            "name": "clicks", "source": "kafka:clicks", "key": ["id"],
            "column": [{"name": "id", "from": "/id", "type": "text", "required": true},
                       {"name": "raw", "from": "", "type": "jsonb", "lake_only": true}]
        });
        if table {
            r["table"] = json!("clicks");
        }
        if index {
            r["index"] = json!({"name": "clicks", "columns": ["id"]});
        }
        if !lake {
            r["lake"] = json!(false);
            r["column"].as_array_mut().unwrap().pop();
        }
        if updated_at {
            r["updated_at_column"] = json!("updated_at");
        }
        let file: ConfigFile = serde_json::from_value(json!({ "route": [r] })).unwrap();
        Routes::compile(&file).map_err(|e| e.0)
    };
    // Any non-empty subset of table, index and lake: an index and the lake only…
    let routes = route(false, true, true, false).unwrap();
    assert!(!routes.get(0).has_table() && routes.get(0).search.is_some());
    assert!(route(true, false, true, false).unwrap().get(0).has_table());
    // …the lake alone, a table alone, an index alone
    let lake_only = route(false, false, true, false).unwrap();
    assert!(!lake_only.get(0).has_table() && lake_only.get(0).search.is_none());
    assert!(lake_only.get(0).lake);
    assert!(!route(true, false, false, false).unwrap().get(0).lake);
    let index_only = route(false, true, false, false).unwrap();
    assert!(!index_only.get(0).lake && !index_only.get(0).has_table());
    // None: one line saying what to give
    let problems = route(false, false, false, false).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("writes nowhere") && problems[0].contains("\"clicks\""),
        "{problems:?}"
    );
    // A table's own setting without a table
    let problems = route(false, true, true, true).unwrap_err();
    assert!(
        problems[0].contains("updated_at_column needs a table"),
        "{problems:?}"
    );
}

#[test]
fn a_lake_only_column_on_a_route_without_a_lake_is_one_line_naming_it() {
    let file: ConfigFile = serde_json::from_value(json!({ "route": [{
        "name": "clicks", "source": "kafka:clicks", "key": ["id"], "table": "clicks",
        "lake": false,
        "column": [{"name": "id", "from": "/id", "type": "text", "required": true},
                   {"name": "raw", "from": "", "type": "jsonb", "lake_only": true}]
    }]}))
    .unwrap();
    let problems = Routes::compile(&file).unwrap_err().0;
    assert_eq!(
        problems,
        vec![
            r#"route "clicks": column "raw" is lake_only but the route writes no lake (lake = false)"#
        ]
    );
}
