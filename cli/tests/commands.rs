//! The commands as a user runs them (the `streamload` binary), end to end on the stack:
//! produce → run → status → verify, and verify's exit status when something is missing.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use streamload_tests::TestStack;

fn streamload(stack: &TestStack, args: &[&str]) -> (i32, String, String) {
    streamload_with(stack, args, &[])
}

/// The test's own directory. Commands run in it, so what they keep in their working
/// directory (init's env file, produce's ledger) stays with the test.
fn test_dir(stack: &TestStack) -> PathBuf {
    let dir = std::env::temp_dir().join(&stack.name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// [`streamload`] with more variables (a route file's `STREAMLOAD_CONFIG`, say).
fn streamload_with(
    stack: &TestStack,
    args: &[&str],
    env: &[(&str, &std::path::Path)],
) -> (i32, String, String) {
    let c = &stack.config;
    let mut command = Command::new(env!("CARGO_BIN_EXE_streamload"));
    command
        .env("DATABASE_URL", &stack.database_url)
        .env("DEDUP_TABLE", &c.dedup_table)
        .env("OUTPUT_BUCKET", &c.output_bucket)
        .env("DLQ_URL", &c.dlq_url)
        .envs(env.iter().copied());
    output(command.args(args).current_dir(test_dir(stack)))
}

/// `streamload` in `dir` with no environment of the stack's but `env` (and the AWS endpoint
/// and broker): what a user has after sourcing init's env file.
fn streamload_in(dir: &Path, args: &[&str], env: &[(String, String)]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_streamload"));
    command
        .env_remove("DATABASE_URL")
        .envs(env.iter().map(|(k, v)| (k, v)));
    output(command.args(args).current_dir(dir))
}

fn output(command: &mut Command) -> (i32, String, String) {
    let out = command.output().expect("run streamload");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `produce` of `events` with 10% producer retries and 5% poison to a Kinesis stream of
/// `shards` it creates, with `extra` options; the manifest at `manifest`.
fn produce_retries_and_poison(
    stack: &TestStack,
    target: &str,
    events: &str,
    shards: &str,
    manifest: &Path,
    extra: &[&str],
) -> (i32, String, String) {
    let mut args = vec![
        "produce",
        target,
        "--events",
        events,
        "--duplicates",
        "0.1",
        "--poison",
        "0.05",
        "--create",
        "--partitions",
        shards,
        "--manifest",
        manifest.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    streamload(stack, &args)
}

/// `run` of the debug Kinesis loader until caught up, logs in `dir`, with `extra` options.
fn run_kinesis_loader(
    stack: &TestStack,
    target: &str,
    dir: &Path,
    extra: &[&str],
) -> (i32, String, String) {
    run_kinesis_loader_with(stack, target, dir, extra, &[])
}

/// [`run_kinesis_loader`] with environment for the function (`STREAMLOAD_CONFIG`, say).
fn run_kinesis_loader_with(
    stack: &TestStack,
    target: &str,
    dir: &Path,
    extra: &[&str],
    env: &[(&str, &Path)],
) -> (i32, String, String) {
    let binary = loader("kinesis-loader");
    let mut args = vec![
        "run",
        target,
        "--function",
        binary.to_str().unwrap(),
        "--until-caught-up",
        "--batching-window-ms",
        "0",
        "--log-dir",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    streamload_with(stack, &args, env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kpl_aggregated_records_load_each_user_record_once() {
    // Given events with retries and poison produced to a two-shard stream as the KPL sends
    // them: packed per shard into aggregates
    let stack = TestStack::new("kpl", false).await;
    let dir = test_dir(&stack);
    let manifest = dir.join("manifest.json");
    let target = format!("kinesis://{}", stack.name);
    let (code, out, err) =
        produce_retries_and_poison(&stack, &target, "400", "2", &manifest, &["--kpl"]);
    assert_eq!(code, 0, "{out}{err}");
    let aggregates: u64 = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("packed into ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no aggregate count in {out}"));
    let produced: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let user_records = produced["records_sent"].as_u64().unwrap();
    // When the mapping runs the real loader until caught up
    let (code, out, err) = run_kinesis_loader(&stack, &target, &dir, &[]);
    assert_eq!(code, 0, "{out}{err}");
    // Then the stream held aggregates (far fewer Kinesis records than user records)
    let kinesis_records: u64 = out
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once(": ")?;
            rest.split(" records in ").next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no record count in {out}"));
    assert!(
        kinesis_records == aggregates && kinesis_records * 10 < user_records,
        "{kinesis_records} Kinesis records, {aggregates} aggregates, {user_records} user records"
    );
    // And verify finds each event once in both sinks and each poison user record
    // dead-lettered
    verify_says_exactly_once(&stack, &manifest);
}

/// `verify` of `manifest`: exit 0 and the verdict "exactly once".
fn verify_says_exactly_once(stack: &TestStack, manifest: &Path) {
    let (code, out, err) = streamload(stack, &["verify", "--manifest", manifest.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("verdict: exactly once"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_run_status_and_verify_work_as_commands() {
    // Given a fresh stack and a directory for the run's files
    let stack = TestStack::new("commands", false).await;
    let dir = test_dir(&stack);
    let (manifest, state) = (dir.join("manifest.json"), dir.join("state.json"));
    let target = format!("kinesis://{}", stack.name);

    // When events are produced, with retries and poison, to a stream the command creates
    let (code, out, err) = produce_retries_and_poison(&stack, &target, "150", "1", &manifest, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("events") && manifest.exists(), "{out}");

    // and the mapping runs the real loader until caught up
    let (code, out, err) =
        run_kinesis_loader(&stack, &target, &dir, &["--state", state.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("shardId-000000000000"), "{out}");

    // Then status shows the checkpoint, no lag, the queue depth and the last batches
    let (code, out, err) = streamload(
        &stack,
        &[
            "status",
            &target,
            "--state",
            state.to_str().unwrap(),
            "--log-dir",
            dir.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let checkpoint: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let seq = checkpoint["shardId-000000000000"].as_str().unwrap();
    let shard_line = out
        .lines()
        .find(|l| l.contains("shardId-000000000000"))
        .unwrap_or_default();
    assert!(
        shard_line.contains(seq) && shard_line.contains("| 0 "),
        "{out}"
    );
    assert!(
        out.contains("dead-letter queue:") && out.contains("last batches"),
        "{out}"
    );

    // and verify finds each event once in both sinks and each poison record dead-lettered
    verify_says_exactly_once(&stack, &manifest);

    // But when a row goes missing, verify says so and exits non-zero
    stack
        .pg
        .batch_execute("DELETE FROM events WHERE event_id IN (SELECT event_id FROM events LIMIT 1)")
        .await
        .unwrap();
    let (code, out, _) = streamload(
        &stack,
        &["verify", "--manifest", manifest.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("1 missing") && out.contains("LOSS OR DUPLICATES"),
        "{out}"
    );
}

/// The example's orders route (newest_by revision) reading this test's stream, and its
/// tables: the route file and the target.
async fn orders_route(stack: &TestStack) -> (PathBuf, String) {
    let toml = include_str!("../../examples/orders/streamload.toml")
        .replace("kinesis:orders", &format!("kinesis:{}", stack.name));
    stack
        .pg
        .batch_execute(include_str!("../../examples/orders/ddl.sql"))
        .await
        .unwrap();
    let routes = test_dir(stack).join("streamload.toml");
    std::fs::write(&routes, &toml).unwrap();
    (routes, format!("kinesis://{}", stack.name))
}

/// 120 orders of 12 keys (seed 26), revisions out of order, with producer retries and
/// poison, produced to `target` (one shard); the manifest written to `manifest` and read.
fn produce_orders(
    stack: &TestStack,
    target: &str,
    routes: &Path,
    manifest: &Path,
) -> streamload_cli::produce::Manifest {
    let (code, out, err) = streamload(
        stack,
        &[
            "produce",
            target,
            "--events",
            "120",
            "--keys",
            "12",
            "--out-of-order",
            "--seed",
            "26",
            "--duplicates",
            "0.1",
            "--poison",
            "0.05",
            "--create",
            "--partitions",
            "1",
            "--routes",
            routes.to_str().unwrap(),
            "--route",
            "orders",
            "--manifest",
            manifest.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap()
}

/// The mapping loads `target` through the real loader, configured by `routes`.
fn load(stack: &TestStack, target: &str, routes: &Path) {
    let (code, out, err) = run_kinesis_loader_with(
        stack,
        target,
        &test_dir(stack),
        &["--batch-size", "25"],
        &[("STREAMLOAD_CONFIG", routes)],
    );
    assert_eq!(code, 0, "{out}{err}");
}

/// `verify --json` of `manifest` by the orders route: exit status and the audit.
fn verify_orders(stack: &TestStack, manifest: &Path, routes: &Path) -> (i32, serde_json::Value) {
    let (code, out, err) = streamload(
        stack,
        &[
            "verify",
            "--manifest",
            manifest.to_str().unwrap(),
            "--routes",
            routes.to_str().unwrap(),
            "--route",
            "orders",
            "--json",
        ],
    );
    let audit = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}{err}"));
    (code, audit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_into_the_same_route_is_new_and_newer_and_both_manifests_verify() {
    // Given the orders route and a first run of 120 orders over 12 keys
    let stack = TestStack::new("rerun", false).await;
    let (routes, target) = orders_route(&stack).await;
    let dir = test_dir(&stack);
    let (first, second) = (dir.join("first.json"), dir.join("second.json"));
    let m1 = produce_orders(&stack, &target, &routes, &first);
    // When the same command runs again (the same seed: the same choices), and the mapping
    // loads both runs
    let m2 = produce_orders(&stack, &target, &routes, &second);
    load(&stack, &target, &routes);
    // Then each key's revisions in the second run are above all of the first run's
    let revisions = |m: &streamload_cli::produce::Manifest| {
        let mut by_key: std::collections::HashMap<String, Vec<i64>> = Default::default();
        for e in &m.route_events {
            let r = e.newest_by.as_deref().unwrap().parse().unwrap();
            by_key.entry(e.key[0].clone()).or_default().push(r);
        }
        by_key
    };
    let (r1, r2) = (revisions(&m1), revisions(&m2));
    for (key, revs) in &r2 {
        let first_newest = r1.get(key).and_then(|r| r.iter().max()).copied();
        assert!(revs.iter().all(|r| Some(*r) > first_newest), "{key}");
    }
    // and verify of the second manifest finds each key holding its newest revision, and
    // every revision of both runs once in the lake
    let (code, a) = verify_orders(&stack, &second, &routes);
    assert_eq!(code, 0, "{a}");
    assert_eq!(
        (a["expected_keys"].as_u64(), a["keys_in_table"].as_u64()),
        (Some(12), Some(12)),
        "{a}"
    );
    assert_eq!(a["keys_with_newer_revision"], 0, "{a}");
    assert_eq!(a["in_lake_once"], m2.event_ids.len(), "{a}");
    assert_eq!(
        a["parquet_rows"],
        m1.event_ids.len() + m2.event_ids.len(),
        "{a}"
    );
    // And verify of the first manifest is right too: its revisions once in the lake, and each
    // of its keys holding a later run's revision
    let (code, a) = verify_orders(&stack, &first, &routes);
    assert_eq!(code, 0, "{a}");
    assert_eq!(a["keys_in_table"], r1.len(), "{a}");
    assert_eq!(a["keys_with_newer_revision"], r1.len(), "{a}");
    assert_eq!(a["in_lake_once"], m1.event_ids.len(), "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newest_by_route_sent_out_of_order_is_judged_by_its_merge_rule() {
    // Given the example's orders route (newest_by revision) reading this test's stream, and
    // its table
    let stack = TestStack::new("shape", false).await;
    let (routes, target) = orders_route(&stack).await;
    let manifest = test_dir(&stack).join("manifest.json");
    // When 120 orders of 12 keys are produced, their revisions out of order, with producer
    // retries and poison, and the mapping loads them
    let m = produce_orders(&stack, &target, &routes, &manifest);
    let events = m.event_ids.len();
    assert!(events > 90 && !m.poison_tokens.is_empty());
    // (the revisions really were sent out of order)
    let mut last: std::collections::HashMap<&str, i64> = Default::default();
    let out_of_order = m.route_events.iter().any(|e| {
        let r: i64 = e.newest_by.as_deref().unwrap().parse().unwrap();
        last.insert(&e.key[0], r).is_some_and(|prev| prev > r)
    });
    assert!(out_of_order);
    load(&stack, &target, &routes);
    // Then verify, told the route, finds each key holding its newest revision, every revision
    // once in the lake and the poison dead-lettered
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "--manifest", manifest.to_str().unwrap()];
        args.extend_from_slice(extra);
        streamload(&stack, &args)
    };
    let with_route = ["--routes", routes.to_str().unwrap(), "--route", "orders"];
    let (code, out, err) = verify(&with_route);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("verdict: exactly once"), "{out}");
    assert!(
        out.contains("holding their newest revision") && out.contains("| 12 "),
        "{out}"
    );
    let (code, out, err) = verify(&["--routes", routes.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let a: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(a["expected_keys"], 12, "{a}");
    assert_eq!(a["keys_in_table"], 12, "{a}");
    assert_eq!(a["in_lake_once"], events, "{a}");
    assert_eq!(a["merge"], "newest_by:revision", "{a}");
    assert_eq!(a["missing_dead_letters"], 0, "{a}");

    // And without the route, verify says the manifest needs it (not a false loss)
    let (code, _, err) = verify(&[]);
    assert_eq!(code, 2);
    assert!(err.contains("--routes"), "{err}");

    // But when a key's row goes back to an older revision, verify says so and exits non-zero
    stack
        .pg
        .batch_execute(
            "UPDATE sales.orders SET revision = revision - 1 \
             WHERE order_id = (SELECT min(order_id) FROM sales.orders WHERE revision > 1)",
        )
        .await
        .unwrap();
    let (code, out, _) = verify(&with_route);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("1 holding an older revision") && out.contains("WRONG ROWS IN THE TABLE"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_first_route_is_judged_as_before() {
    // Given the example's events route (keep-first, identity = key = event_id) reading this
    // test's stream
    let stack = TestStack::new("keepfirst", false).await;
    let toml = include_str!("../../examples/orders/streamload.toml")
        .replace("kinesis:clickstream", &format!("kinesis:{}", stack.name))
        .replace("kinesis:orders", "kinesis:not-this-test");
    // (the loader checks every route's table at start-up)
    stack
        .pg
        .batch_execute(include_str!("../../examples/orders/ddl.sql"))
        .await
        .unwrap();
    let dir = test_dir(&stack);
    let (routes, manifest) = (dir.join("streamload.toml"), dir.join("manifest.json"));
    std::fs::write(&routes, &toml).unwrap();
    let target = format!("kinesis://{}", stack.name);
    // When events of the route's shape are produced with retries and poison, and loaded
    let (code, out, err) = streamload(
        &stack,
        &[
            "produce",
            &target,
            "--events",
            "60",
            "--duplicates",
            "0.2",
            "--poison",
            "0.05",
            "--seed",
            "3",
            "--create",
            "--partitions",
            "1",
            "--routes",
            routes.to_str().unwrap(),
            "--route",
            "events",
            "--manifest",
            manifest.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let binary = loader("kinesis-loader");
    let (code, out, err) = streamload_with(
        &stack,
        &[
            "run",
            &target,
            "--function",
            binary.to_str().unwrap(),
            "--until-caught-up",
            "--batching-window-ms",
            "0",
            "--log-dir",
            dir.to_str().unwrap(),
        ],
        &[("STREAMLOAD_CONFIG", routes.as_path())],
    );
    assert_eq!(code, 0, "{out}{err}");
    let m: streamload_cli::produce::Manifest =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    // Then verify, told the route (named by the manifest), finds each event's row and each
    // event once in the lake
    let verify = || {
        streamload(
            &stack,
            &[
                "verify",
                "--manifest",
                manifest.to_str().unwrap(),
                "--routes",
                routes.to_str().unwrap(),
                "--json",
            ],
        )
    };
    let (code, out, err) = verify();
    assert_eq!(code, 0, "{out}{err}");
    let a: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(a["merge"], "keep-first", "{a}");
    assert_eq!(a["keys_in_table"], m.event_ids.len(), "{a}");
    assert_eq!(a["in_lake_once"], m.event_ids.len(), "{a}");
    // But when a row goes missing, it is missing, as before
    stack
        .pg
        .batch_execute("DELETE FROM events WHERE event_id IN (SELECT event_id FROM events LIMIT 1)")
        .await
        .unwrap();
    let (code, out, _) = verify();
    assert_eq!(code, 1, "{out}");
    let a: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (a["keys_missing"].as_u64(), a["missing_in_table"].as_u64()),
        (Some(1), Some(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_deployed_function_lists_its_mappings() {
    // Given a function and its Kinesis mapping on the AWS endpoint (made with boto3, as a
    // deployment would have made them)
    let stack = TestStack::new("deployed", false).await;
    let script = format!(
        r#"
import boto3, io, zipfile, time
iam, lam, kin = boto3.client("iam"), boto3.client("lambda"), boto3.client("kinesis")
role = iam.create_role(RoleName="{n}", AssumeRolePolicyDocument="{{}}")["Role"]["Arn"]
buf = io.BytesIO(); z = zipfile.ZipFile(buf, "w"); z.writestr("bootstrap", "x"); z.close()
lam.create_function(FunctionName="{n}", Runtime="provided.al2023", Role=role, Handler="bootstrap", Code={{"ZipFile": buf.getvalue()}})
kin.create_stream(StreamName="{n}", ShardCount=1); time.sleep(0.3)
arn = kin.describe_stream_summary(StreamName="{n}")["StreamDescriptionSummary"]["StreamARN"]
print(lam.create_event_source_mapping(FunctionName="{n}", EventSourceArn=arn, StartingPosition="TRIM_HORIZON", BatchSize=250)["UUID"])
"#,
        n = stack.name
    );
    let made = Command::new(workspace().join(".venv/bin/python"))
        .args(["-c", &script])
        .output()
        .expect("run boto3");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let uuid = String::from_utf8_lossy(&made.stdout).trim().to_owned();
    // When status asks about the function
    let (code, out, err) = streamload(
        &stack,
        &[
            "status",
            "--function",
            &stack.name,
            "--dlq",
            &stack.config.dlq_url,
        ],
    );
    // Then each mapping is listed with its state, source and batch size, beside the DLQ depth
    assert_eq!(code, 0, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.contains(&uuid))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("Enabled")
            && line.contains(&format!("stream/{}", stack.name))
            && line.contains("250"),
        "{line}"
    );
    assert!(
        out.contains("1 event-source mapping(s)") && out.contains("dead-letter queue: 0 messages"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_create_answer_was_lost_is_taken_as_made() {
    use streamload_tests::fault_proxy::{Fault, FaultProxy, Rule};
    const CREATE: &str = "Kinesis_20131202.CreateStream";
    // Given a proxy in front of the endpoint that applies the first CreateStream and answers
    // it with a 500, so the SDK's retry meets the stream its first attempt made
    let upstream = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (make stack)");
    let proxy = FaultProxy::start(&upstream).await;
    proxy.add(Rule::once(CREATE, Fault::LoseAnswer500));
    let sdk = streamload_aws::sdk_config().await;
    let proxied = aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::config::Builder::from(&sdk)
            .endpoint_url(proxy.endpoint())
            .build(),
    );
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("lost-create-{}-{nanos}", std::process::id());
    // When the producer makes the stream
    streamload_cli::produce::create_kinesis(&proxied, &name, 2)
        .await
        .expect("a stream made by our own lost attempt is made");
    // Then the create was sent twice, its first answer lost, and the stream is there, active
    assert_eq!((proxy.seen(CREATE), proxy.faulted(CREATE)), (2, 1));
    let summary = aws_sdk_kinesis::Client::new(&sdk)
        .describe_stream_summary()
        .stream_name(&name)
        .send()
        .await
        .unwrap()
        .stream_description_summary
        .unwrap();
    assert_eq!(
        summary.stream_status,
        aws_sdk_kinesis::types::StreamStatus::Active
    );
    assert_eq!(summary.open_shard_count, 2);
}

/// `export K='v'` lines of an env file `init` wrote.
fn env_file(path: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_of_a_new_shape_runs_from_init_alone_as_docs_local_md_says() {
    // Given only a database and a route no example has (IoT readings: numeric(5,2), epoch-ms
    // times, newest by seq), as docs/local.md starts
    let stack = TestStack::new("initpath", false).await;
    let dir = test_dir(&stack);
    let routes = dir.join("iot.toml");
    std::fs::write(
        &routes,
        format!(
            r#"
[[route]]
name = "readings"
source = "kinesis:{name}"
table = "iot.readings"
event_time = "/ts"
key = ["device"]
merge = {{ newest_by = "seq" }}
[[route.column]]
name = "device"
from = "/device"
type = "text"
required = true
[[route.column]]
name = "seq"
from = "/seq"
type = "bigint"
required = true
[[route.column]]
name = "humidity"
from = "/humidity"
type = "numeric"
precision = 5
scale = 2
[[route.column]]
name = "ts"
from = "/ts"
type = "timestamptz"
unit = "ms"
required = true
"#,
            name = stack.name
        ),
    )
    .unwrap();
    let run = |args: &[&str], env: &[(String, String)]| streamload_in(&dir, args, env);
    // When init makes what the route needs, and its environment is all the later commands get
    let env_path = dir.join("iot.env");
    let target = format!("kinesis://{}", stack.name);
    let (code, out, err) = run(
        &[
            "init",
            "--routes",
            routes.to_str().unwrap(),
            "--name",
            &format!("{}-init", stack.name),
            "--create-tables",
            "--stream",
            &target,
            "--partitions",
            "1",
            "--database-url",
            &stack.database_url,
            "--env-file",
            env_path.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let env = env_file(&env_path);
    for name in [
        "STREAMLOAD_CONFIG",
        "DEDUP_TABLE",
        "OUTPUT_BUCKET",
        "DLQ_URL",
        "ON_FAILURE_URL",
        "DATABASE_URL",
    ] {
        assert!(env.iter().any(|(k, _)| k == name), "{name} in {env:?}");
    }
    // and records of the route's shape are produced, loaded and verified
    let manifest = dir.join("m.json");
    let (code, out, err) = run(
        &[
            "produce",
            &target,
            "--routes",
            routes.to_str().unwrap(),
            "--route",
            "readings",
            "--events",
            "150",
            "--keys",
            "20",
            "--out-of-order",
            "--duplicates",
            "0.05",
            "--poison",
            "0.03",
            "--manifest",
            manifest.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    let binary = loader("kinesis-loader");
    let (code, out, err) = run(
        &[
            "run",
            &target,
            "--function",
            binary.to_str().unwrap(),
            "--until-caught-up",
            "--batching-window-ms",
            "0",
            "--idle-seconds",
            "1",
            "--max-duration-seconds",
            "150",
            "--log-dir",
            dir.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(
        &[
            "verify",
            "--manifest",
            manifest.to_str().unwrap(),
            "--routes",
            routes.to_str().unwrap(),
        ],
        &env,
    );
    // Then the verdict is exactly once: every device's row holds its newest seq, every reading
    // is once in the lake, and every poison record is in the dead-letter queue
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("exactly once"), "{out}");
    // And init a second time finds everything made
    let (code, out, err) = run(
        &[
            "init",
            "--routes",
            routes.to_str().unwrap(),
            "--name",
            &format!("{}-init", stack.name),
            "--create-tables",
            "--database-url",
            &stack.database_url,
            "--env-file",
            env_path.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("exists"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_example_runs_as_its_readme_says() {
    // Given the example's route file, reading this test's stream rather than `orders` (and
    // init given a name of the test's own), and only the stack's database, as the README
    // starts
    let stack = TestStack::new("readme", false).await;
    let dir = test_dir(&stack);
    let routes = dir.join("streamload.toml");
    std::fs::write(
        &routes,
        include_str!("../../examples/orders/streamload.toml")
            .replace("kinesis:orders", &format!("kinesis:{}", stack.name)),
    )
    .unwrap();
    let (routes, target) = (
        routes.to_str().unwrap(),
        format!("kinesis://{}", stack.name),
    );
    let name = format!("{}-orders", stack.name);
    let database = [("DATABASE_URL".to_string(), stack.database_url.clone())];
    // When the README's commands run in order, each after the environment init wrote:
    // init …
    let (code, out, err) = streamload_in(
        &dir,
        &[
            "init",
            "--routes",
            routes,
            "--create-tables",
            "--stream",
            &target,
            "--name",
            &name,
        ],
        &database,
    );
    assert_eq!(code, 0, "{out}{err}");
    let env = env_file(&dir.join(format!(".streamload/{name}.env")));
    // … produce …
    let (code, out, err) = streamload_in(
        &dir,
        &[
            "produce",
            &target,
            "--routes",
            routes,
            "--route",
            "orders",
            "--events",
            "1000",
            "--keys",
            "100",
            "--out-of-order",
            "--duplicates",
            "0.05",
            "--poison",
            "0.01",
            "--manifest",
            "orders.json",
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    // … run (the debug loader for the release one, and a bound on the test's time) …
    let binary = loader("kinesis-loader");
    let (code, out, err) = streamload_in(
        &dir,
        &[
            "run",
            &target,
            "--function",
            binary.to_str().unwrap(),
            "--until-caught-up",
            "--idle-seconds",
            "3",
            "--max-duration-seconds",
            "240",
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    // … verify
    let (code, out, err) = streamload_in(
        &dir,
        &[
            "verify",
            "--manifest",
            "orders.json",
            "--routes",
            routes,
            "--route",
            "orders",
        ],
        &env,
    );
    // Then the verdict is exactly once: each order's row holds its newest revision, every
    // revision is once in the lake, and the poison is in the dead-letter queue
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("verdict: exactly once") && out.contains("holding their newest revision"),
        "{out}"
    );
}

/// Sends `DELETE path` to the local search server (a document lost behind the loader's back).
fn delete_in_search_index(path: &str) -> String {
    use std::io::{Read, Write};
    let url = std::env::var("STREAMLOAD_SEARCH_URL").expect("STREAMLOAD_SEARCH_URL (make stack)");
    let authority = url.trim_start_matches("http://");
    let mut tcp = std::net::TcpStream::connect(authority).unwrap();
    write!(
        tcp,
        "DELETE {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_audits_the_search_index_of_an_indexed_route_and_finds_a_missing_document() {
    // Given the orders route also indexed (the index made at start-up from the route), and
    // 120 orders of 12 keys produced out of order with retries and poison, loaded
    let stack = TestStack::new("vsrch", false).await;
    let (routes, target) = orders_route(&stack).await;
    let index = format!("{}-orders", stack.name);
    let text = std::fs::read_to_string(&routes).unwrap();
    let orders = text.match_indices("[[route]]").nth(1).unwrap().0;
    let columns = orders + text[orders..].find("[[route.column]]").unwrap();
    let indexed = format!(
        "{}[route.index]\nname = \"{index}\"\n\n{}",
        &text[..columns],
        &text[columns..]
    );
    std::fs::write(&routes, indexed).unwrap();
    let manifest = test_dir(&stack).join("manifest.json");
    produce_orders(&stack, &target, &routes, &manifest);
    load(&stack, &target, &routes);
    // When verify audits the route
    let (code, a) = verify_orders(&stack, &manifest, &routes);
    // Then each key's document holds its newest revision, once
    assert_eq!(code, 0, "{a}");
    assert_eq!(a["index"]["index"], index.as_str(), "{a}");
    assert_eq!(a["index"]["expected_keys"], 12, "{a}");
    assert_eq!(a["index"]["documents_ok"], 12, "{a}");
    // When a document disappears from the index
    let key = a["index"].clone();
    let m: streamload_cli::produce::Manifest =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let answer = delete_in_search_index(&format!("/{index}/_doc/{}", m.route_events[0].key[0]));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Then verify says it is missing and exits non-zero
    let (code, a) = verify_orders(&stack, &manifest, &routes);
    assert_eq!(code, 1, "{a} (before: {key})");
    assert_eq!(a["index"]["documents_missing"], 1, "{a}");
}
