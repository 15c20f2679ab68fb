//! The shipped binary against a stand-in Lambda Runtime API: a bad configuration must be
//! reported as an init error naming the variable, and the process must exit.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

#[test]
fn a_missing_variable_is_reported_to_the_runtime_api_as_an_init_error() {
    // Given a Runtime API that records what it receives
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // Read until the JSON body has arrived.
        while !String::from_utf8_lossy(&buf).contains('}') {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = conn.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n");
        String::from_utf8_lossy(&buf).into_owned()
    });
    // When the function starts without DEDUP_TABLE
    let status = Command::new(env!("CARGO_BIN_EXE_kinesis-loader"))
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "kinesis-loader")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("DATABASE_URL", "postgres://u@127.0.0.1/db")
        .env("OUTPUT_BUCKET", "b")
        .env("DLQ_URL", "http://q")
        .env("AWS_REGION", "us-east-1")
        .status()
        .expect("run the binary");
    let request = server.join().unwrap();
    // Then it posted one init error naming the variable, and exited with failure
    assert!(
        request.starts_with("POST /2018-06-01/runtime/init/error"),
        "{request}"
    );
    assert!(request.contains("DEDUP_TABLE is required"), "{request}");
    assert!(!status.success());
}
