//! The shipped binary against a stand-in Lambda Runtime API: an invocation's body must reach
//! the Kinesis decoder as Lambda sent it, and the partial-batch response must go back to the
//! API under the invocation's request id.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SEQ: &str = "49590338271490256608559692538361571095921575989136588898";

/// One HTTP request: its request line and body.
fn read_request(conn: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        if header == "\r\n" || header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((line.trim().to_owned(), body))
}

#[test]
fn an_invocation_body_reaches_the_decoder_and_the_answer_reaches_the_api() {
    // Given a Runtime API with one Kinesis invocation whose deadline leaves no time for I/O
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let event = format!(
        r#"{{"Records":[{{"kinesis":{{"partitionKey":"pk","sequenceNumber":"{SEQ}",
        "data":"eyJldmVudF9pZCI6ImUxIn0=","approximateArrivalTimestamp":1714557600.5}},
        "eventSource":"aws:kinesis","eventID":"shardId-000000000000:{SEQ}",
        "eventSourceARN":"arn:aws:kinesis:us-east-1:123456789012:stream/orders"}}]}}"#
    );
    let server = std::thread::spawn(move || {
        let mut served = false;
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            while let Some((line, body)) = read_request(&mut conn) {
                if line.starts_with("GET /2018-06-01/runtime/invocation/next") && !served {
                    served = true;
                    let now_ms = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap()
                        .as_millis();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         lambda-runtime-aws-request-id: req-1\r\n\
                         lambda-runtime-deadline-ms: {}\r\n\
                         lambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:123456789012:function:kinesis-loader\r\n\
                         content-length: {}\r\n\r\n",
                        now_ms + 1000,
                        event.len()
                    );
                    conn.write_all(head.as_bytes()).unwrap();
                    conn.write_all(event.as_bytes()).unwrap();
                } else if line.starts_with("POST") {
                    let _ = conn.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n");
                    return (line, String::from_utf8_lossy(&body).into_owned());
                } else {
                    // A second /next: nothing more to give; the test ends the process.
                    std::thread::sleep(Duration::from_secs(30));
                }
            }
        }
        unreachable!("the listener never ends")
    });
    // When the function serves it, with no AWS endpoint or database that answers
    let mut child = Command::new(env!("CARGO_BIN_EXE_kinesis-loader"))
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "kinesis-loader")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("DATABASE_URL", "postgres://u@127.0.0.1:1/db")
        .env("DEDUP_TABLE", "claims")
        .env("OUTPUT_BUCKET", "b")
        .env("DLQ_URL", "http://127.0.0.1:1/q")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("FINISH_MARGIN_MS", "3000")
        .stdout(Stdio::null())
        .spawn()
        .expect("run the binary");
    let (line, response) = server.join().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    // Then the answer names the record from the body, under the invocation's request id
    assert_eq!(
        line,
        "POST /2018-06-01/runtime/invocation/req-1/response HTTP/1.1"
    );
    let answer: serde_json::Value = serde_json::from_str(&response).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": SEQ}]})
    );
}
