//! The shipped binary against a stand-in Lambda Runtime API: an MSK invocation's body must
//! reach the Kafka decoder as Lambda sent it, and the partial-batch response must name the
//! lowest record of each partition the way Kafka mappings expect.

use std::time::Duration;
use streamload_tests::runtime_api::{loader_command, serve_one_invocation, REQUEST_ID};

#[test]
fn an_invocation_body_reaches_the_decoder_and_the_answer_reaches_the_api() {
    // Given one MSK invocation over two partitions (offsets out of order in one), whose
    // deadline is inside the finish margin, so the function must answer without any I/O
    let record = |partition: i32, offset: i64| {
        format!(
            r#"{{"topic":"orders","partition":{partition},"offset":{offset},"timestamp":1714557600500,
            "timestampType":"CREATE_TIME","value":"eyJldmVudF9pZCI6ImUxIn0=","headers":[{{"h":[1]}}]}}"#
        )
    };
    let event = format!(
        r#"{{"eventSource":"aws:kafka","eventSourceArn":"arn:aws:kafka:us-east-1:123456789012:cluster/c/1",
        "records":{{"orders-0":[{},{}],"orders-1":[{}]}}}}"#,
        record(0, 8),
        record(0, 7),
        record(1, 3)
    );
    let (api, posted) = serve_one_invocation(event, Duration::from_millis(1000));
    // When the function serves it
    let mut child = loader_command(env!("CARGO_BIN_EXE_kafka-loader"), api)
        .spawn()
        .expect("run the binary");
    let (line, body) = posted.join().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    // Then the answer names the lowest offset of each partition, under the request id
    assert_eq!(
        line,
        format!("POST /2018-06-01/runtime/invocation/{REQUEST_ID}/response HTTP/1.1")
    );
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut failures = answer["batchItemFailures"].as_array().unwrap().clone();
    failures.sort_by_key(|f| {
        f["itemIdentifier"]["partition"]
            .as_str()
            .unwrap()
            .to_owned()
    });
    assert_eq!(
        failures,
        [
            serde_json::json!({"itemIdentifier": {"partition": "orders-0", "offset": 7}}),
            serde_json::json!({"itemIdentifier": {"partition": "orders-1", "offset": 3}}),
        ]
    );
}
