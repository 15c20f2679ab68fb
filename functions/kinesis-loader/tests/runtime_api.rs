//! The shipped binary against a stand-in Lambda Runtime API: an invocation's body must reach
//! the Kinesis decoder as Lambda sent it, and the partial-batch response must go back to the
//! API under the invocation's request id.

use std::time::Duration;
use streamload_tests::runtime_api::{loader_command, serve_one_invocation, REQUEST_ID};

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
    let (api, posted) = serve_one_invocation(event, Duration::from_millis(1000));
    // When the function serves it
    let mut child = loader_command(env!("CARGO_BIN_EXE_kinesis-loader"), api)
        .spawn()
        .expect("run the binary");
    let (line, body) = posted.join().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    // Then the answer names the record from the body, under the invocation's request id
    assert_eq!(
        line,
        format!("POST /2018-06-01/runtime/invocation/{REQUEST_ID}/response HTTP/1.1")
    );
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": SEQ}]})
    );
}
