//! The on-call tools against the real stack: redrive's dry run and loop guard with dead
//! letters the real loader wrote, replay of an on-failure message the mapping sent, and the
//! error a command gives when the broker is not there.

mod common;

use common::*;
use std::time::Duration;

use streamload_cli::esm::MappingSettings;
use streamload_cli::ops::{self, Ledger, RedriveAction, RedriveOptions};
use streamload_cli::run::run_target;
use streamload_cli::sandbox::FunctionSpec;
use streamload_cli::Target;
use streamload_tests::TestStack;

async fn stream_records(name: &str) -> Vec<Vec<u8>> {
    let (client, _) = streamload_cli::kinesis_client().await;
    let mut all = Vec::new();
    for shard in client
        .list_shards()
        .stream_name(name)
        .send()
        .await
        .unwrap()
        .shards
        .unwrap_or_default()
    {
        let mut it = client
            .get_shard_iterator()
            .stream_name(name)
            .shard_id(shard.shard_id)
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator;
        while let Some(i) = it {
            let out = client.get_records().shard_iterator(i).send().await.unwrap();
            if out.records.is_empty() {
                break;
            }
            all.extend(out.records.into_iter().map(|r| r.data.into_inner()));
            it = out.next_shard_iterator;
        }
    }
    all
}

async fn load_with_real_loader(stack: &TestStack, stream: &str) {
    let o = options(
        FunctionSpec {
            binary: loader("kinesis-loader"),
            name: "kinesis-loader".into(),
            env: loader_env(stack),
            log: std::env::temp_dir().join(format!("{stream}.log")),
        },
        MappingSettings {
            batching_window: Duration::ZERO,
            function_timeout: Duration::from_secs(10),
            ..MappingSettings::default()
        },
        None,
    );
    run_target(&Target::Kinesis(stream.into()), &o, "", quiet())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_sends_dead_letters_back_once_and_its_loop_guard_stops_a_second_round() {
    // Given three poison records the real loader dead-lettered
    let stack = TestStack::new("redrive", false).await;
    kinesis_stream(&stack.name, 1, &numbered(3, &[0, 1, 2])).await;
    load_with_real_loader(&stack, &stack.name).await;
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let s3 = streamload_aws::s3_client(&stack.sdk);
    let ledger = Ledger {
        s3: &s3,
        bucket: stack.config.output_bucket.clone(),
        prefix: "dead-letter/".into(),
    };
    let fixed = format!("{}-fixed", stack.name);
    kinesis_stream(&fixed, 1, &[]).await;
    let to = Target::Kinesis(fixed.clone());
    let mut opts = RedriveOptions {
        dlq_url: &stack.config.dlq_url,
        to: &to,
        broker: "",
        max_redrives: 1,
        dry_run: true,
        limit: 100,
    };

    // When a dry run looks at them
    let dry = ops::redrive(&opts, &sqs, &ledger, &|_| {}).await.unwrap();
    // Then it would redrive all three, and changes nothing
    assert_eq!(dry.len(), 3, "{dry:?}");
    assert!(dry
        .iter()
        .all(|r| r.action == RedriveAction::Redriven { times: 1 }));
    assert!(stream_records(&fixed).await.is_empty());
    assert_eq!(
        streamload_cli::queue_depth(&sqs, &stack.config.dlq_url)
            .await
            .unwrap(),
        (3, 0)
    );

    // When they are redriven for real
    opts.dry_run = false;
    let first = ops::redrive(&opts, &sqs, &ledger, &|_| {}).await.unwrap();
    // Then their raw bytes are in the target stream, and the queue is empty
    assert_eq!(first.len(), 3);
    let mut sent: Vec<String> = stream_records(&fixed)
        .await
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    sent.sort();
    assert_eq!(sent, vec!["poison 0", "poison 1", "poison 2"]);
    assert_eq!(
        streamload_cli::queue_depth(&sqs, &stack.config.dlq_url)
            .await
            .unwrap(),
        (0, 0)
    );

    // When the fix did not help: the loader dead-letters them again, and a second redrive runs
    load_with_real_loader(&stack, &fixed).await;
    let second = ops::redrive(&opts, &sqs, &ledger, &|_| {}).await.unwrap();
    // Then the loop guard stops each (redriven once already), and they stay in the queue
    assert_eq!(second.len(), 3, "{second:?}");
    assert!(second
        .iter()
        .all(|r| r.action == RedriveAction::StoppedByLoopGuard { times: 1 }));
    assert_eq!(
        stream_records(&fixed).await.len(),
        3,
        "nothing more was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_re_delivers_the_records_an_on_failure_message_describes_and_names_what_it_cannot_find(
) {
    // Given a batch of 4 the mapping gave up on (the function fails it; no retries)
    let stack = TestStack::new("replay", false).await;
    kinesis_stream(&stack.name, 1, &numbered(4, &[2])).await;
    let on_failure = queue(&stack, "onfailure").await;
    let (spec, _) = scripted(&stack, "fail-on-poison");
    let settings = MappingSettings {
        batch_size: 10,
        batching_window: Duration::ZERO,
        max_retry_attempts: Some(0),
        function_timeout: Duration::from_secs(10),
        ..MappingSettings::default()
    };
    let stats = run_target(
        &Target::Kinesis(stack.name.clone()),
        &options(spec, settings, Some(on_failure.clone())),
        "",
        quiet(),
    )
    .await
    .unwrap();
    assert_eq!(stats[0].skipped_records, 4);
    // and one more message naming a range the stream never held
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let mut bogus: serde_json::Value = messages(&stack, &on_failure).await.remove(0);
    let real = bogus.clone();
    bogus["KinesisBatchInfo"]["startSequenceNumber"] =
        "49999999999999999999999999999999999999999999999999999999".into();
    for m in [&real, &bogus] {
        sqs.send_message()
            .queue_url(&on_failure)
            .message_body(m.to_string())
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // When the queue is replayed (the first receive above left its copy invisible)
    let report = ops::replay(&on_failure, "", false, &sqs).await.unwrap();
    // Then the real range was re-delivered whole, and the bogus one is reported, not hidden
    let found: Vec<_> = report.iter().filter(|r| r.missing.is_none()).collect();
    let missing: Vec<_> = report.iter().filter(|r| r.missing.is_some()).collect();
    assert_eq!((found.len(), missing.len()), (1, 1), "{report:?}");
    assert_eq!((found[0].expected, found[0].found), (4, 4));
    let all = stream_records(&stack.name).await;
    assert_eq!(all.len(), 8, "the four records are in the stream again");
    assert_eq!(all[4..], all[..4]);
}

#[test]
fn a_command_without_a_broker_names_the_address_it_tried_and_how_to_start_the_stack() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_streamload"))
        .args([
            "run",
            "kafka://x",
            "--function",
            "/bin/true",
            "--broker",
            "127.0.0.1:1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("127.0.0.1:1") && err.contains("make stack"),
        "{err}"
    );
}
