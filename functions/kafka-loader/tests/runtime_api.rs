//! The shipped binary against a stand-in Lambda Runtime API: an MSK invocation's body must
//! reach the Kafka decoder as Lambda sent it, and the partial-batch response must name the
//! lowest record of each partition the way Kafka mappings expect.

use streamload_tests::runtime_api::{response_line, run_one_invocation};

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
    // When the function serves it
    let (line, body) = run_one_invocation(env!("CARGO_BIN_EXE_kafka-loader"), event);
    // Then it answers under the invocation's request id
    assert_eq!(line, response_line());
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
