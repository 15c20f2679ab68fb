//! The shipped binary against a stand-in Lambda Runtime API: an invocation's body must reach
//! the Kinesis decoder as Lambda sent it, and the partial-batch response must go back to the
//! API under the invocation's request id.

use streamload_tests::runtime_api::{response_line, run_one_invocation};

const SEQ: &str = "49590338271490256608559692538361571095921575989136588898";

#[test]
fn an_invocation_body_reaches_the_decoder_and_the_answer_reaches_the_api() {
    // Given one Kinesis invocation whose deadline is inside the finish margin, so the
    // function must answer without starting any I/O
    let event = format!(
        r#"{{"Records":[{{"kinesis":{{"partitionKey":"pk","sequenceNumber":"{SEQ}",
        "data":"eyJldmVudF9pZCI6ImUxIn0=","approximateArrivalTimestamp":1714557600.5}},
        "eventSource":"aws:kinesis","eventID":"shardId-000000000000:{SEQ}",
        "eventSourceARN":"arn:aws:kinesis:us-east-1:123456789012:stream/orders"}}]}}"#
    );
    // When the function serves it
    let (line, body) = run_one_invocation(env!("CARGO_BIN_EXE_kinesis-loader"), event);
    // Then it answers under the invocation's request id
    assert_eq!(line, response_line());
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": SEQ}]})
    );
}
