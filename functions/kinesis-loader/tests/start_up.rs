//! The shipped binary against a stand-in Lambda Runtime API: a bad configuration must be
//! reported as an init error naming the variable, and the process must exit.

use std::time::Duration;
use streamload_tests::runtime_api::{loader_command, serve_one_invocation};

#[test]
fn a_missing_variable_is_reported_to_the_runtime_api_as_an_init_error() {
    // Given a Runtime API that records what it receives
    let (api, posted) = serve_one_invocation(String::new(), Duration::from_secs(10));
    // When the function starts without DEDUP_TABLE
    let status = loader_command(env!("CARGO_BIN_EXE_kinesis-loader"), api)
        .env_remove("DEDUP_TABLE")
        .status()
        .expect("run the binary");
    let (line, body) = posted.join().unwrap();
    // Then it posted one init error naming the variable, and exited with failure
    assert!(
        line.starts_with("POST /2018-06-01/runtime/init/error"),
        "{line}"
    );
    assert!(body.contains("DEDUP_TABLE is required"), "{body}");
    assert!(!status.success());
}
