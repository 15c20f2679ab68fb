//! The renewable lease with the real binary, the real endpoint and the real database: a
//! loader frozen (SIGSTOP) mid-transaction for longer than its lease is taken over within
//! seconds, not its function timeout, and when it wakes it writes nothing more
//! (docs/exactly-once.md, "Renewable leases"). The lease's logic is tested in paused time in
//! `shared/core/tests/recovery.rs`; this is what lies below the adapters: a frozen process, the
//! row locks of its open transaction, and the clock of a real host.

use std::process::{Child, Command};
use std::time::{Duration, Instant};
use streamload_core::ports::DedupStore;
use streamload_tests::runtime_api::{loader_command, serve_one_invocation_as, Posted};
use streamload_tests::*;

const BINARY: &str = env!("CARGO_BIN_EXE_kinesis-loader");

/// The loader in a sandbox of its own against `stack`, serving one invocation as
/// `request_id` with a 60 s timeout.
fn sandbox(
    stack: &TestStack,
    event: &str,
    request_id: &str,
) -> (Child, std::thread::JoinHandle<Posted>) {
    let (api, posted) =
        serve_one_invocation_as(event.to_owned(), Duration::from_secs(60), request_id);
    let mut command = loader_command(BINARY, api);
    for var in [
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        if let Ok(v) = std::env::var(var) {
            command.env(var, v);
        }
    }
    command
        .env("DATABASE_URL", &stack.database_url)
        .env("DEDUP_TABLE", &stack.config.dedup_table)
        .env("OUTPUT_BUCKET", &stack.config.output_bucket)
        .env("DLQ_URL", &stack.config.dlq_url)
        .stderr(std::process::Stdio::null());
    (command.spawn().expect("start the loader"), posted)
}

fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .expect("kill(1)")
        .success();
    assert!(ok, "kill {name}");
}

async fn posted(handle: std::thread::JoinHandle<Posted>) -> Posted {
    tokio::task::spawn_blocking(move || handle.join().expect("the stand-in API"))
        .await
        .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loader_frozen_past_its_lease_is_taken_over_and_writes_nothing_when_it_wakes() {
    // Given ten events, and the events table locked against writes by another session, so
    // that the first loader blocks in the database once it has claimed them
    let stack = TestStack::new("sigstop", false).await;
    let ids: Vec<String> = (0..10).map(|n| format!("frozen-{n}")).collect();
    let records: Vec<(u64, Vec<u8>)> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| (n as u64 + 1, event_json(id, "u-1", "{}")))
        .collect();
    let event = kinesis_event(&records);
    let locker = stack.pg_clone().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE events IN EXCLUSIVE MODE")
        .await
        .unwrap();
    // When loader A (60 s timeout) has claimed them and renewed its lease once
    let (a, a_posted) = sandbox(&stack, &event, "req-A");
    let dedup = streamload_aws::DynamoDedup::new(
        streamload_aws::dynamodb_client(&stack.sdk),
        &stack.config.dedup_table,
    );
    let waiting = Instant::now();
    loop {
        let claim = dedup.read(&format!("ev:{}", ids[9])).await.unwrap();
        if claim.is_some_and(|c| c.owner == "req-A") {
            break;
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(20),
            "A never claimed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // And A is frozen mid-transaction (SIGSTOP) and the table unlocked
    signal(&a, "-STOP");
    locker.batch_execute("COMMIT").await.unwrap();
    let frozen_at = Instant::now();
    // And the mapping hands the same batch to loader B, again after each failed attempt
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (mut b, b_posted) = sandbox(&stack, &event, &format!("req-B{attempts}"));
        let (line, body) = posted(b_posted).await;
        let _ = b.kill();
        let _ = b.wait();
        assert!(line.contains("/response"), "{line} {body}");
        if body.contains(r#""batchItemFailures":[]"#) {
            break;
        }
        assert!(attempts < 3, "B never loaded the batch: {body}");
    }
    let recovered_in = frozen_at.elapsed();
    // Then B took A's claims over well before A's timeout, by revoking A's lease
    assert!(
        recovered_in < Duration::from_secs(30),
        "recovered in {recovered_in:?}"
    );
    assert!(dedup.read_lease("req-A").await.unwrap().unwrap().revoked);
    // When A wakes
    signal(&a, "-CONT");
    let (line, body) = posted(a_posted).await;
    let mut a = a;
    let _ = a.kill();
    let _ = a.wait();
    // Then A reports its records failed, and wrote nothing after its fence: each event is
    // exactly once in the table and once in the lake
    assert!(line.contains("/response"), "{line} {body}");
    assert!(!body.contains(r#""batchItemFailures":[]"#), "{body}");
    stack.assert_each_once_in_both_sinks(&ids).await;
}
