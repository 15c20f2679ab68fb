//! The local event-source mapping against the real stack (moto's Kinesis, the tansu broker):
//! the real loaders end to end with a sandbox killed mid-batch, then the mapping's own
//! semantics with a scripted function that speaks the Runtime API — bisect and retry
//! exhaustion into the on-failure queue, resume from the lowest reported failure, record age.

mod common;

use common::*;
use std::time::Duration;

use streamload_cli::esm::MappingSettings;
use streamload_cli::produce;
use streamload_cli::run::run_target;
use streamload_cli::sandbox::FunctionSpec;
use streamload_cli::Target;
use streamload_tests::TestStack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kinesis_loader_loads_a_stream_once_with_a_sandbox_killed_mid_batch() {
    kinesis_with_a_sandbox_killed_per_shard("esmkin", Duration::from_secs(5), 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sandboxs_records_load_in_seconds_with_a_fifteen_minute_timeout() {
    // The killed holder's claims are taken over once its renewable lease is over (seconds),
    // not after its 900 s timeout: the whole run ends within `max_duration` (120 s). Killed
    // 1.5 s into the batch, after its claims and its first renewal.
    kinesis_with_a_sandbox_killed_per_shard("esmkin900", Duration::from_secs(900), 1_500).await;
}

/// A two-shard stream with 400 events (10% producer retries, 3% poison) loaded by the real
/// loader with `timeout`, each shard's sandbox killed `kill_after_ms` into its second
/// invocation: every record checkpointed, each event once in both sinks.
async fn kinesis_with_a_sandbox_killed_per_shard(tag: &str, timeout: Duration, kill_after_ms: u64) {
    // Given a two-shard stream with 400 events, 10% producer retries and 3% poison
    let stack = TestStack::new(tag, false).await;
    let target = Target::Kinesis(stack.name.clone());
    let (records, manifest) = plan(400, 0.10, 0.03, &target);
    kinesis_stream(&stack.name, 2, &records).await;
    // And, for a late kill, a database that takes 3 s to commit each batch
    if kill_after_ms > 100 {
        slow_commits(&stack).await;
    }
    // When the mapping runs the real loader until caught up, killing each shard's sandbox
    // during its second invocation
    let mut o = options(
        FunctionSpec {
            binary: loader("kinesis-loader"),
            name: "kinesis-loader".into(),
            env: loader_env(&stack),
            log: std::env::temp_dir().join(format!("{}.log", stack.name)),
        },
        MappingSettings {
            batch_size: 100,
            batching_window: Duration::from_millis(100),
            function_timeout: timeout,
            ..MappingSettings::default()
        },
        None,
    );
    o.max_duration = Duration::from_secs(120);
    o.kill_mid_batch = Some((2, Duration::from_millis(kill_after_ms)));
    let stats = run_target(&target, &o, "", quiet()).await.unwrap();
    // Then every record was checkpointed, each sandbox was restarted once,
    assert_eq!(stats.len(), 2);
    assert_eq!(
        stats.iter().map(|s| s.records_done).sum::<u64>(),
        manifest.records_sent
    );
    for s in &stats {
        assert!(s.sandboxes_started >= 2, "{s:?}");
        assert!(s.failed_invocations >= 1, "{s:?}");
    }
    // and each event is once in the table and once in the lake, each poison record dead-lettered
    assert_exactly_once(&stack, &manifest).await;
}

/// Makes every commit into the events table take 3 s: a trigger deferred to the commit that
/// sleeps once per transaction, so a kill lands after the claims and before the objects.
async fn slow_commits(stack: &TestStack) {
    stack
        .pg
        .batch_execute(
            "CREATE OR REPLACE FUNCTION streamload_test_slow() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN
                    IF coalesce(current_setting('streamload_test.slept', true), '') = '' THEN
                      PERFORM set_config('streamload_test.slept', '1', true);
                      PERFORM pg_sleep(3);
                    END IF;
                    RETURN NULL;
                  END $$;
             CREATE CONSTRAINT TRIGGER streamload_test_slow AFTER INSERT ON events
               DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION streamload_test_slow();",
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_loader_loads_a_topic_once_across_partitions() {
    let stack = TestStack::new("esmkaf", false).await;
    let broker = streamload_cli::broker(None);
    let client = streamload_cli::kafka_client(&broker).await.unwrap();
    let target = Target::Kafka(stack.name.clone());
    produce::create_kafka(&client, &broker, &stack.name, 3)
        .await
        .unwrap();
    let (records, manifest) = plan(300, 0.10, 0.03, &target);
    produce::StreamWriter::connect(&target, &broker, false)
        .await
        .unwrap()
        .send(&records)
        .await
        .unwrap();
    let o = options(
        FunctionSpec {
            binary: loader("kafka-loader"),
            name: "kafka-loader".into(),
            env: loader_env(&stack),
            log: std::env::temp_dir().join(format!("{}.log", stack.name)),
        },
        MappingSettings {
            batch_size: 64,
            batching_window: Duration::from_millis(100),
            function_timeout: Duration::from_secs(10),
            ..MappingSettings::default()
        },
        None,
    );
    let stats = run_target(&target, &o, &broker, quiet()).await.unwrap();
    assert_eq!(stats.len(), 3);
    assert_eq!(
        stats.iter().map(|s| s.records_done).sum::<u64>(),
        manifest.records_sent
    );
    assert_exactly_once(&stack, &manifest).await;
    // And the checkpoints are the consumer group's committed offsets: each partition's end
    let group = streamload_cli::kafka_group::GroupOffsets::find(
        &broker,
        &format!("streamload-{}", stack.name),
    )
    .await
    .unwrap();
    let committed = group.fetch(&stack.name, &[0, 1, 2]).await.unwrap();
    let done: std::collections::HashMap<i32, i64> = stats
        .iter()
        .map(|s| {
            (
                s.unit.rsplit('-').next().unwrap().parse().unwrap(),
                s.records_done as i64,
            )
        })
        .collect();
    assert_eq!(
        committed, done,
        "offsets start at 0, so the next offset is the count"
    );
    // so a new mapping with the same group resumes there: nothing is delivered again
    let again = run_target(&target, &o, &broker, quiet()).await.unwrap();
    assert_eq!(
        again.iter().map(|s| s.invocations).sum::<u64>(),
        0,
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_batch_is_bisected_until_the_poison_stands_alone_then_sent_to_the_on_failure_queue(
) {
    // Given one shard of 16 records, the 6th and 13th poison for a function that fails any
    // batch holding one, with bisect on and two retries
    let stack = TestStack::new("esmbisect", false).await;
    let target = Target::Kinesis(stack.name.clone());
    kinesis_stream(&stack.name, 1, &numbered(16, &[5, 12])).await;
    let on_failure = queue(&stack, "onfailure").await;
    let (spec, log) = scripted(&stack, "fail-on-poison");
    let settings = MappingSettings {
        batch_size: 16,
        batching_window: Duration::ZERO,
        max_retry_attempts: Some(2),
        bisect_on_error: true,
        function_timeout: Duration::from_secs(10),
        ..MappingSettings::default()
    };
    // When the mapping runs
    let stats = run_target(
        &target,
        &options(spec, settings, Some(on_failure.clone())),
        "",
        quiet(),
    )
    .await
    .unwrap();
    // Then exactly the two poison records were skipped, one batch of one each
    assert_eq!(stats[0].skipped_records, 2, "{:?}", stats[0]);
    assert_eq!(stats[0].records_done, 14);
    let sent = batches(&log);
    let failures = messages(&stack, &on_failure).await;
    assert_eq!(failures.len(), 2, "{failures:?}");
    for f in &failures {
        let info = &f["KinesisBatchInfo"];
        assert_eq!(f["requestContext"]["condition"], "RetryAttemptsExhausted");
        assert_eq!(info["batchSize"], 1);
        assert_eq!(info["startSequenceNumber"], info["endSequenceNumber"]);
        assert_eq!(info["shardId"], stats[0].unit);
    }
    // and the first attempt held all 16, the next one half of them (the bisect)
    assert_eq!(sent[0].len(), 16);
    assert_eq!(sent[1].len(), 8);
    // and every good record was delivered in a batch that succeeded
    let all: std::collections::HashSet<&String> = sent.iter().flatten().collect();
    assert_eq!(all.len(), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_answer_resumes_from_the_lowest_reported_record() {
    // Given 10 records, the 4th poison, and a function that reports it as a batch item failure
    let stack = TestStack::new("esmpartial", false).await;
    let target = Target::Kinesis(stack.name.clone());
    kinesis_stream(&stack.name, 1, &numbered(10, &[3])).await;
    let on_failure = queue(&stack, "onfailure").await;
    let (spec, log) = scripted(&stack, "partial-on-poison");
    let settings = MappingSettings {
        batch_size: 10,
        batching_window: Duration::ZERO,
        max_retry_attempts: Some(1),
        function_timeout: Duration::from_secs(10),
        ..MappingSettings::default()
    };
    let stats = run_target(
        &target,
        &options(spec, settings, Some(on_failure.clone())),
        "",
        quiet(),
    )
    .await
    .unwrap();
    let sent = batches(&log);
    // Then the second delivery starts at the reported record, the ones before it checkpointed
    assert_eq!(sent[0].len(), 10);
    assert_eq!(sent[1][0], sent[0][3]);
    assert_eq!(sent[1].len(), 7);
    // and after its one retry the rest of that batch is skipped, as AWS skips a batch
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(stats[0].records_done, 3);
    assert_eq!(stats[0].skipped_records, 7);
    let failures = messages(&stack, &on_failure).await;
    assert_eq!(failures.len(), 1);
    assert_eq!(
        failures[0]["KinesisBatchInfo"]["startSequenceNumber"],
        sent[0][3].as_str()
    );
    assert_eq!(failures[0]["KinesisBatchInfo"]["batchSize"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_older_than_the_maximum_age_are_skipped_without_an_invocation() {
    let stack = TestStack::new("esmage", false).await;
    let target = Target::Kinesis(stack.name.clone());
    kinesis_stream(&stack.name, 1, &numbered(5, &[])).await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let on_failure = queue(&stack, "onfailure").await;
    let (spec, log) = scripted(&stack, "fail-on-poison");
    let settings = MappingSettings {
        batch_size: 10,
        batching_window: Duration::ZERO,
        max_record_age: Some(Duration::from_secs(1)),
        ..MappingSettings::default()
    };
    let stats = run_target(
        &target,
        &options(spec, settings, Some(on_failure.clone())),
        "",
        quiet(),
    )
    .await
    .unwrap();
    assert_eq!(stats[0].invocations, 0);
    assert_eq!(stats[0].skipped_records, 5);
    assert!(batches(&log).is_empty());
    let failures = messages(&stack, &on_failure).await;
    assert_eq!(failures.len(), 1);
    assert_eq!(
        failures[0]["requestContext"]["condition"],
        "RecordAgeExceeded"
    );
    assert_eq!(failures[0]["KinesisBatchInfo"]["batchSize"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mapping_can_invoke_a_function_that_cargo_lambda_watch_serves() {
    // Given `cargo lambda watch` serving the Runtime API, the real loader started against it,
    // and a stream of 60 events
    let stack = TestStack::new("esmwatch", false).await;
    let cargo_lambda = workspace().join(".venv/bin/cargo-lambda");
    assert!(
        cargo_lambda.exists(),
        "cargo-lambda is installed by scripts/install.sh"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut watch = tokio::process::Command::new(&cargo_lambda)
        .args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "--invoke-address",
            "127.0.0.1",
            "--invoke-port",
            &port.to_string(),
        ])
        .current_dir(workspace())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // On a loaded host cargo lambda watch can take well over 10 s to listen; a loader started
    // before it exits at once (its Runtime API refuses) and every invocation fails.
    let mut listening = false;
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            listening = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        listening,
        "cargo lambda watch did not listen on {port} within 60 s"
    );
    let mut function = tokio::process::Command::new(loader("kinesis-loader"))
        .envs(loader_env(&stack))
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("http://127.0.0.1:{port}/.rt"),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", "kinesis-loader")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let target = Target::Kinesis(stack.name.clone());
    let (records, manifest) = plan(60, 0.1, 0.0, &target);
    kinesis_stream(&stack.name, 1, &records).await;
    // When the mapping invokes through the Invoke API instead of a sandbox of its own
    let mut o = options(
        FunctionSpec {
            binary: "unused".into(),
            name: "_".into(),
            env: Vec::new(),
            log: std::env::temp_dir().join(format!("{}.log", stack.name)),
        },
        MappingSettings {
            batch_size: 25,
            batching_window: Duration::ZERO,
            function_timeout: Duration::from_secs(20),
            ..MappingSettings::default()
        },
        None,
    );
    o.invoke_endpoint = Some(format!("http://127.0.0.1:{port}"));
    let stats = run_target(&target, &o, "", quiet()).await.unwrap();
    // Then every record was checkpointed and each event loaded once
    assert_eq!(stats[0].records_done, manifest.records_sent, "{stats:?}");
    assert_eq!(stats[0].failed_invocations, 0, "{stats:?}");
    assert_exactly_once(&stack, &manifest).await;
    let _ = function.kill().await;
    let _ = watch.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_that_cannot_start_is_retried_with_back_off_and_its_init_error_is_said() {
    // Given one shard with records and a function whose every cold start reports an init
    // error and exits (a wrong DATABASE_URL, say)
    let stack = TestStack::new("esminit", false).await;
    let target = Target::Kinesis(stack.name.clone());
    kinesis_stream(&stack.name, 1, &numbered(5, &[])).await;
    let (spec, log) = scripted(&stack, "init-error");
    let settings = MappingSettings {
        batch_size: 5,
        batching_window: Duration::ZERO,
        function_timeout: Duration::from_secs(10),
        ..MappingSettings::default()
    };
    let mut o = options(spec, settings, None);
    o.max_duration = Duration::from_secs(8);
    // When the mapping runs for 8 s
    let stats = run_target(&target, &o, "", quiet()).await.unwrap();
    // Then sandboxes were started with back-off (1, 2, 4 s...), not one after another
    // (thousands a minute before), and the run's last result names the init error
    let starts = batches(&log).len();
    assert!((2..=6).contains(&starts), "{starts} starts in 8 s");
    assert!(
        stats[0]
            .last_result
            .contains("init error: Runtime.ConfigError: DATABASE_URL: TLS handshake refused"),
        "{:?}",
        stats[0]
    );
    assert_eq!(stats[0].records_done, 0);
    // And the run says it was stopped by its time limit, not caught up (the CLI exits 3)
    assert!(stats[0].stopped_by_max_duration, "{:?}", stats[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shards_lag_counts_the_records_waiting_past_its_checkpoint() {
    use streamload_cli::source::{KinesisShard, Unit, LAG_COUNT_INTERVAL};
    // Given a one-shard stream holding 300 records, and its poller
    let stack = TestStack::new("lag", false).await;
    kinesis_stream(&stack.name, 1, &numbered(300, &[])).await;
    let (client, _) = streamload_cli::kinesis_client().await;
    let mut shard = KinesisShard::new(
        client,
        &stack.name,
        "arn:aws:kinesis:us-east-1:000000000000:stream/lag",
        "us-east-1",
        "shardId-000000000000",
        None,
    );
    // When the poller reads a batch of 100
    shard.fill(100).await.unwrap();
    // Then the lag is every record not checkpointed: the 100 read and the 200 still waiting
    assert_eq!(shard.pending().len(), 100);
    assert_eq!(shard.lag(), Some(300));
    // And as batches are checkpointed and read, it falls by each
    shard.commit(100);
    shard.fill(100).await.unwrap();
    assert_eq!(shard.lag(), Some(200));
    // and records produced meanwhile count from the next count on
    kinesis_stream(&stack.name, 1, &numbered(50, &[])).await;
    shard.commit(100);
    tokio::time::sleep(LAG_COUNT_INTERVAL).await;
    shard.fill(100).await.unwrap();
    assert_eq!(shard.lag(), Some(150));
    // and once the poller reads to the tip and checkpoints, nothing is waiting
    shard.commit(100);
    shard.fill(100).await.unwrap();
    assert_eq!((shard.pending().len(), shard.lag()), (50, Some(50)));
    shard.commit(50);
    shard.fill(100).await.unwrap();
    assert_eq!(shard.lag(), Some(0));
}
