//! Helpers shared by the command's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use streamload_cli::esm::MappingSettings;
use streamload_cli::produce::{self, Outgoing, ProduceOptions};
use streamload_cli::run::{RunOptions, UnitStats};
use streamload_cli::sandbox::FunctionSpec;
use streamload_cli::verify::{audit, Sinks};
use streamload_cli::Target;
use streamload_tests::TestStack;

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The loader binary. `cargo test --workspace` (what `make test` runs) builds it beside this
/// crate's tests; run alone, the tests build it if it is missing. (Building it again here
/// would rebuild its dependencies with `-p`'s feature set: minutes, for nothing.)
pub fn loader(name: &str) -> PathBuf {
    let target = option_env!("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let path = target.join("debug").join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-q", "-p", name])
            .current_dir(workspace())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p {name}");
    }
    path
}

pub fn quiet() -> Arc<dyn Fn(&UnitStats) + Send + Sync> {
    Arc::new(|_: &UnitStats| {})
}

pub fn options(
    function: FunctionSpec,
    settings: MappingSettings,
    on_failure: Option<String>,
) -> RunOptions {
    RunOptions {
        settings,
        function,
        until_caught_up: true,
        idle_before_stop: Duration::ZERO,
        max_duration: Duration::from_secs(240),
        on_failure_queue: on_failure,
        kill_mid_batch: None,
        state_file: None,
        invoke_endpoint: None,
        kafka_group: None,
    }
}

pub fn loader_env(stack: &TestStack) -> Vec<(String, String)> {
    let c = &stack.config;
    vec![
        ("DATABASE_URL".into(), stack.database_url.clone()),
        ("DEDUP_TABLE".into(), c.dedup_table.clone()),
        ("OUTPUT_BUCKET".into(), c.output_bucket.clone()),
        ("DLQ_URL".into(), c.dlq_url.clone()),
    ]
}

pub async fn queue(stack: &TestStack, suffix: &str) -> String {
    aws_sdk_sqs::Client::new(&stack.sdk)
        .create_queue()
        .queue_name(format!("{}-{suffix}", stack.name))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap()
}

pub async fn messages(stack: &TestStack, url: &str) -> Vec<serde_json::Value> {
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let mut all = Vec::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(600)
            .send()
            .await
            .unwrap();
        let batch = out.messages.unwrap_or_default();
        if batch.is_empty() {
            return all;
        }
        all.extend(
            batch
                .iter()
                .map(|m| serde_json::from_str(m.body().unwrap()).unwrap()),
        );
    }
}

pub async fn kinesis_stream(name: &str, shards: u32, records: &[Outgoing]) {
    let (client, _) = streamload_cli::kinesis_client().await;
    produce::create_kinesis(&client, name, shards)
        .await
        .unwrap();
    let entries: Vec<produce::KinesisEntry> =
        records.iter().map(produce::KinesisEntry::from).collect();
    for part in entries.chunks(produce::KINESIS_PUT_RECORDS_MAX) {
        produce::send_kinesis(&client, name, part).await.unwrap();
    }
}

pub fn plan(
    events: u64,
    duplicates: f64,
    poison: f64,
    target: &Target,
) -> (Vec<Outgoing>, produce::Manifest) {
    produce::plan(
        &ProduceOptions {
            events,
            rate: None,
            duplicates,
            poison,
            users: 40,
            create: true,
            partitions: 2,
            ..ProduceOptions::default()
        },
        target,
    )
}

pub async fn assert_exactly_once(stack: &TestStack, manifest: &produce::Manifest) {
    let sinks = Sinks {
        database_url: stack.database_url.clone(),
        table: "events".into(),
        bucket: stack.config.output_bucket.clone(),
        lake_prefix: "events/".into(),
        dead_letter_prefix: "dead-letter/".into(),
        id_column: "event_id".into(),
    };
    let a = audit(manifest, &sinks, &streamload_aws::s3_client(&stack.sdk))
        .await
        .unwrap();
    assert!(a.exactly_once(), "{a:?}");
    assert_eq!(a.in_table, manifest.event_ids.len());
    assert_eq!(a.dead_lettered, manifest.poison_tokens.len());
}

pub fn scripted(stack: &TestStack, mode: &str) -> (FunctionSpec, PathBuf) {
    let log = std::env::temp_dir().join(format!("{}-{mode}.batches", stack.name));
    let _ = std::fs::remove_file(&log);
    let spec = FunctionSpec {
        binary: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/scripted_function.py"),
        name: "scripted".into(),
        env: vec![
            ("SCRIPT_MODE".into(), mode.into()),
            ("SCRIPT_LOG".into(), log.display().to_string()),
        ],
        log: std::env::temp_dir().join(format!("{}-{mode}.log", stack.name)),
    };
    (spec, log)
}

pub fn batches(log: &PathBuf) -> Vec<Vec<String>> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn numbered(n: usize, poison_at: &[usize]) -> Vec<Outgoing> {
    (0..n)
        .map(|i| Outgoing {
            key: "one-shard".into(),
            bytes: if poison_at.contains(&i) {
                format!("poison {i}").into_bytes()
            } else {
                format!("record {i}").into_bytes()
            },
        })
        .collect()
}
