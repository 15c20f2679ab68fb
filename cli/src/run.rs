//! `streamload run`: a local event-source mapping. Each shard or partition has its own poller
//! and its own sandbox (one invocation at a time per unit, units in parallel), applies
//! [`crate::esm`]'s decisions to the real function's answers, keeps its checkpoint in a state
//! file, and sends skipped batches' metadata to the on-failure queue.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Mutex;

use crate::esm::{Answer, MappingSettings, UnitState, Verdict};
use crate::sandbox::{FunctionSpec, Outcome, RemoteFunction, Sandbox};
use crate::source::{Unit, EVENT_OVERHEAD};
use crate::CliError;

/// Counts of one unit's run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UnitStats {
    pub unit: String,
    pub invocations: u64,
    pub records_done: u64,
    pub partial_answers: u64,
    pub failed_invocations: u64,
    pub skipped_records: u64,
    pub sandboxes_started: u32,
    pub lag: u64,
    pub last_result: String,
    /// The run reached `--max-duration` before this unit caught up.
    pub stopped_by_max_duration: bool,
}

/// How a run stops, and what it injects.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub settings: MappingSettings,
    pub function: FunctionSpec,
    /// Stop when every unit has nothing pending and no lag...
    pub until_caught_up: bool,
    /// ...and no new record arrived for this long (a producer may still be starting).
    pub idle_before_stop: Duration,
    /// Stop after this long in any case.
    pub max_duration: Duration,
    /// SQS queue URL for skipped batches.
    pub on_failure_queue: Option<String>,
    /// Kill the sandbox this long into the Nth invocation of each unit (chaos).
    pub kill_mid_batch: Option<(u64, Duration)>,
    /// The checkpoint file.
    pub state_file: Option<PathBuf>,
    /// The Kafka consumer group (`ConsumerGroupId`); default `streamload-<topic>`.
    pub kafka_group: Option<String>,
    /// Invoke through this Lambda Invoke API endpoint (`cargo lambda watch`) instead of
    /// running the binary in a sandbox of our own.
    pub invoke_endpoint: Option<String>,
}

/// Reads the function's answer the way the mapping does.
pub fn answer_of<U: Unit>(unit: &U, n: usize, outcome: &Outcome) -> Answer {
    match outcome {
        Outcome::Response(body) => {
            let Ok(doc) = serde_json::from_str::<Value>(body) else {
                // Not JSON: AWS documents a null or empty response as success and
                // says nothing of this case; it is read the same way.
                return Answer::Success;
            };
            let failures = match doc.get("batchItemFailures") {
                Some(Value::Array(items)) => items,
                _ => return Answer::Success,
            };
            if failures.is_empty() {
                return Answer::Success;
            }
            let mut lowest = usize::MAX;
            for item in failures {
                match item
                    .get("itemIdentifier")
                    .and_then(|id| unit.failure_index(n, id))
                {
                    Some(i) => lowest = lowest.min(i),
                    None => {
                        return Answer::Failed(
                            "a failure identifier names no record of the batch".into(),
                        )
                    }
                }
            }
            Answer::FailedFrom(lowest)
        }
        Outcome::FunctionError(e) => Answer::Failed(format!("function error: {e}")),
        Outcome::Timeout => Answer::Failed("timed out".into()),
        Outcome::Crashed(why) => Answer::Failed(why.clone()),
        Outcome::InitError(body) => {
            Answer::Failed(format!("init error: {}", init_error_text(body)))
        }
    }
}

/// The `errorType: errorMessage` of an init error body (the Runtime API's JSON), or the body.
pub fn init_error_text(body: &str) -> String {
    let doc: Option<Value> = serde_json::from_str(body).ok();
    let field = |k: &str| {
        doc.as_ref()
            .and_then(|d| d.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    match (field("errorType"), field("errorMessage")) {
        (Some(t), Some(m)) => format!("{t}: {m}"),
        (None, Some(m)) => m,
        _ => body.trim().to_owned(),
    }
}

/// The first wait after a sandbox that failed to start, doubled after each further failure
/// up to [`START_BACKOFF_MAX`]: Lambda backs off from a function whose cold starts fail rather
/// than starting one sandbox after another.
pub const START_BACKOFF_FIRST: Duration = Duration::from_secs(1);

/// The longest wait between two failed starts.
pub const START_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Starts of a sandbox that failed in a row (an init error, or a crash no chaos asked for),
/// and the last init error said in the terminal: what the next invocation waits for.
#[derive(Debug, Default)]
pub struct FailedStarts {
    pub in_a_row: u32,
    last_init_error: String,
}

impl FailedStarts {
    /// Counts `outcome` (of a sandbox killed on purpose when `killed`), saying a new init
    /// error once in the terminal, not only in the function's log at `log`.
    pub fn after(&mut self, outcome: &Outcome, killed: bool, unit: &str, log: &std::path::Path) {
        match outcome {
            Outcome::InitError(body) => {
                self.in_a_row += 1;
                let text = init_error_text(body);
                if text != self.last_init_error {
                    eprintln!(
                        "{unit}: the function failed to start: {text} (log: {}); retrying with back-off",
                        log.display()
                    );
                    self.last_init_error = text;
                }
            }
            Outcome::Crashed(_) if !killed => self.in_a_row += 1,
            _ => self.in_a_row = 0,
        }
    }
}

/// The wait before the next invocation after `failed_starts` starts in a row failed.
pub fn start_backoff(failed_starts: u32) -> Duration {
    if failed_starts == 0 {
        return Duration::ZERO;
    }
    START_BACKOFF_FIRST
        .saturating_mul(1 << (failed_starts - 1).min(16))
        .min(START_BACKOFF_MAX)
}

/// Checkpoints by unit name, shared by the units of one run and saved after each change.
#[derive(Clone, Default)]
pub struct Checkpoints {
    path: Option<PathBuf>,
    map: Arc<Mutex<BTreeMap<String, String>>>,
}

impl Checkpoints {
    pub fn load(path: Option<PathBuf>) -> Self {
        let map = path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        Self {
            path,
            map: Arc::new(Mutex::new(map)),
        }
    }

    pub async fn get(&self, unit: &str) -> Option<String> {
        self.map.lock().await.get(unit).cloned()
    }

    async fn set(&self, unit: &str, value: Option<String>) {
        let mut map = self.map.lock().await;
        match value {
            Some(v) => map.insert(unit.to_owned(), v),
            None => map.remove(unit),
        };
        if let Some(path) = &self.path {
            if let Ok(text) = serde_json::to_string_pretty(&*map) {
                let tmp = path.with_extension("tmp");
                if std::fs::write(&tmp, text).is_ok() {
                    let _ = std::fs::rename(&tmp, path);
                }
            }
        }
    }
}

/// Polls `unit` and invokes the function until the run stops. `progress` is told the
/// stats after each invocation.
pub async fn run_unit<U: Unit>(
    mut unit: U,
    options: &RunOptions,
    checkpoints: &Checkpoints,
    sqs: Option<&aws_sdk_sqs::Client>,
    progress: &(dyn Fn(&UnitStats) + Sync),
) -> Result<UnitStats, CliError> {
    let settings = &options.settings;
    let mut spec = options.function.clone();
    spec.log = sandbox_log(&options.function, &unit.name());
    let remote = options
        .invoke_endpoint
        .as_ref()
        .map(|endpoint| RemoteFunction {
            endpoint: endpoint.clone(),
            function_name: spec.name.clone(),
        });
    let mut sandbox = Sandbox::new(spec).await?;
    let mut state = UnitState::default();
    let mut stats = UnitStats {
        unit: unit.name(),
        ..UnitStats::default()
    };
    let started = Instant::now();
    let mut first_seen: Option<Instant> = None;
    let mut last_record = Instant::now();
    // Starts in a row that failed (an init error or a crash before any answer), and the last
    // init error printed.
    let mut starts = FailedStarts::default();
    // Source reads in a row that failed.
    let mut read_failures: u32 = 0;
    let log_path = sandbox_log(&options.function, &unit.name());
    loop {
        if started.elapsed() > options.max_duration {
            stats.last_result = format!("stopped: --max-duration ({})", stats.last_result);
            stats.stopped_by_max_duration = true;
            break;
        }
        // A source read that fails (a GetRecords or Fetch that timed out, a broker restarting)
        // is retried with back-off, as the mapping's poller does; the run goes on.
        if let Err(e) = unit.fill(settings.batch_size).await {
            read_failures += 1;
            let text = e.to_string();
            if read_failures == 1 {
                eprintln!(
                    "{}: reading the source failed ({text}); retrying",
                    unit.name()
                );
            }
            stats.last_result = format!("source read failed: {text}");
            progress(&stats);
            let left = options.max_duration.saturating_sub(started.elapsed());
            tokio::time::sleep(read_backoff(read_failures).min(left)).await;
            continue;
        }
        read_failures = 0;
        stats.lag = unit.lag().unwrap_or(0);
        if unit.pending().is_empty() {
            first_seen = None;
            if options.until_caught_up
                && stats.lag == 0
                && last_record.elapsed() >= options.idle_before_stop
            {
                break;
            }
            progress(&stats);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        last_record = Instant::now();
        // The batching window: wait for a full batch, at most the window from the first record.
        let first = *first_seen.get_or_insert_with(Instant::now);
        if unit.pending().len() < settings.batch_size && first.elapsed() < settings.batching_window
        {
            tokio::time::sleep(Duration::from_millis(50).min(settings.batching_window)).await;
            continue;
        }
        first_seen = None;

        let now = chrono::Utc::now().timestamp_millis();
        let ages: Vec<Duration> = unit
            .pending()
            .iter()
            .map(|r| Duration::from_millis((now - r.arrival_ms).max(0) as u64))
            .collect();
        let expired = UnitState::expired(settings, &ages);
        if expired > 0 {
            let n = expired.min(settings.batch_size);
            send_on_failure(
                &unit,
                n,
                "RecordAgeExceeded",
                state.invocations,
                options,
                sqs,
            )
            .await?;
            unit.commit(n);
            stats.skipped_records += n as u64;
            checkpoints.set(&unit.name(), unit.checkpoint()).await;
            unit.flush().await?;
            continue;
        }

        let sizes: Vec<usize> = unit.pending().iter().map(|r| r.size).collect();
        let n = state.next_batch_len(settings, &sizes, EVENT_OVERHEAD);
        let event = unit.event(n);
        let kill = options
            .kill_mid_batch
            .filter(|(nth, _)| stats.invocations + 1 == *nth)
            .map(|(_, after)| after);
        let outcome = match &remote {
            Some(f) => f.invoke(event, settings.function_timeout).await,
            None => sandbox.invoke(event, settings.function_timeout, kill).await,
        };
        stats.invocations += 1;
        stats.sandboxes_started = sandbox.starts;
        starts.after(&outcome, kill.is_some(), &unit.name(), &log_path);
        let answer = answer_of(&unit, n, &outcome);
        match &answer {
            Answer::Success => stats.last_result = format!("ok ({n})"),
            Answer::FailedFrom(i) => {
                stats.partial_answers += 1;
                stats.last_result = format!("partial: {i} of {n} done");
            }
            Answer::Failed(why) => {
                stats.failed_invocations += 1;
                stats.last_result =
                    format!("failed: {}", why.chars().take(120).collect::<String>());
            }
        }
        match state.after(settings, n, &answer) {
            Verdict::Advance(k) => {
                unit.commit(k);
                stats.records_done += k as u64;
            }
            Verdict::Retry => {}
            Verdict::Skip(k, condition) => {
                send_on_failure(
                    &unit,
                    k,
                    condition.as_str(),
                    state.invocations,
                    options,
                    sqs,
                )
                .await?;
                unit.commit(k);
                stats.skipped_records += k as u64;
            }
        }
        checkpoints.set(&unit.name(), unit.checkpoint()).await;
        unit.flush().await?;
        stats.lag = unit.lag().unwrap_or(0);
        progress(&stats);
        let wait = start_backoff(starts.in_a_row);
        if !wait.is_zero() {
            let left = options.max_duration.saturating_sub(started.elapsed());
            tokio::time::sleep(wait.min(left)).await;
        }
    }
    sandbox.kill().await;
    Ok(stats)
}

/// The wait after `failures` source reads in a row failed: 200 ms doubling to 5 s.
pub fn read_backoff(failures: u32) -> Duration {
    Duration::from_millis(200)
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(Duration::from_secs(5))
}

/// Where a unit's sandbox writes the function's output (see [`run_unit`]).
fn sandbox_log(function: &FunctionSpec, unit: &str) -> PathBuf {
    function
        .log
        .with_file_name(format!("{}-{unit}.log", function.name))
}

async fn send_on_failure<U: Unit>(
    unit: &U,
    n: usize,
    condition: &str,
    invocations: u64,
    options: &RunOptions,
    sqs: Option<&aws_sdk_sqs::Client>,
) -> Result<(), CliError> {
    let message = unit.on_failure(n, condition, invocations);
    match (sqs, &options.on_failure_queue) {
        (Some(client), Some(url)) => {
            client
                .send_message()
                .queue_url(url)
                .message_body(message.to_string())
                .send()
                .await
                .map_err(|e| CliError::aws("sqs SendMessage (on-failure destination)", &e))?;
        }
        _ => eprintln!("on-failure (no destination configured): {message}"),
    }
    Ok(())
}

/// Runs a mapping over every shard or partition of `target` until it stops; the stats of
/// each unit in the order of their names. `progress` is told each unit's stats as they change.
pub async fn run_target(
    target: &crate::Target,
    options: &RunOptions,
    broker: &str,
    progress: std::sync::Arc<dyn Fn(&UnitStats) + Send + Sync>,
) -> Result<Vec<UnitStats>, CliError> {
    let sdk = streamload_aws::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let checkpoints = Checkpoints::load(options.state_file.clone());
    let mut tasks = tokio::task::JoinSet::new();
    match target {
        crate::Target::Kinesis(stream) => {
            let (client, region) = crate::kinesis_client().await;
            let summary = client
                .describe_stream_summary()
                .stream_name(stream)
                .send()
                .await
                .map_err(|e| {
                    CliError::aws(&format!("kinesis DescribeStreamSummary {stream}"), &e)
                })?;
            let arn = summary
                .stream_description_summary
                .map(|d| d.stream_arn)
                .unwrap_or_default();
            let shards = client
                .list_shards()
                .stream_name(stream)
                .send()
                .await
                .map_err(|e| CliError::aws("kinesis ListShards", &e))?;
            for shard in shards.shards.unwrap_or_default() {
                let committed = checkpoints.get(&shard.shard_id).await;
                let unit = crate::source::KinesisShard::new(
                    client.clone(),
                    stream,
                    &arn,
                    &region,
                    &shard.shard_id,
                    committed,
                );
                let (options, checkpoints, sqs, progress) = (
                    options.clone(),
                    checkpoints.clone(),
                    sqs.clone(),
                    progress.clone(),
                );
                tasks.spawn(async move {
                    run_unit(unit, &options, &checkpoints, Some(&sqs), &*progress).await
                });
            }
        }
        crate::Target::Kafka(topic) => {
            let client = crate::kafka_client(broker).await?;
            let partitions = crate::kafka_partitions(&client, topic).await?;
            let group_id = options
                .kafka_group
                .clone()
                .unwrap_or_else(|| format!("streamload-{topic}"));
            let group = std::sync::Arc::new(
                crate::kafka_group::GroupOffsets::find(broker, &group_id).await?,
            );
            let committed_in_group = group.fetch(topic, &partitions).await?;
            for partition in partitions {
                let pc = crate::kafka_partition_client(&client, topic, partition).await?;
                let name = format!("{topic}-{partition}");
                // The group's commit is the checkpoint; a state file only fills in for a
                // group that has none yet.
                let committed = match committed_in_group.get(&partition) {
                    Some(o) => *o,
                    None => checkpoints
                        .get(&name)
                        .await
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0),
                };
                let unit = crate::source::KafkaPartition::new(
                    std::sync::Arc::new(pc),
                    broker,
                    topic,
                    partition,
                    committed,
                )
                .with_group(group.clone());
                let (options, checkpoints, sqs, progress) = (
                    options.clone(),
                    checkpoints.clone(),
                    sqs.clone(),
                    progress.clone(),
                );
                tasks.spawn(async move {
                    run_unit(unit, &options, &checkpoints, Some(&sqs), &*progress).await
                });
            }
        }
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(stats) => all.push(stats?),
            Err(e) => return Err(CliError::Usage(format!("a poller stopped: {e}"))),
        }
    }
    all.sort_by(|a, b| a.unit.cmp(&b.unit));
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_starts_back_off_doubling_to_a_ceiling() {
        assert_eq!(start_backoff(0), Duration::ZERO);
        assert_eq!(start_backoff(1), Duration::from_secs(1));
        assert_eq!(start_backoff(3), Duration::from_secs(4));
        assert_eq!(start_backoff(6), START_BACKOFF_MAX);
        assert_eq!(start_backoff(60), START_BACKOFF_MAX);
    }

    #[test]
    fn an_init_error_reads_as_its_type_and_message() {
        let body = r#"{"errorMessage":"DATABASE_URL: refused","errorType":"Runtime.ConfigError"}"#;
        assert_eq!(
            init_error_text(body),
            "Runtime.ConfigError: DATABASE_URL: refused"
        );
        assert_eq!(init_error_text(" plain text "), "plain text");
    }
}
