//! `streamload`: see `streamload --help`. All logic lives in the library (`streamload_cli`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use streamload_cli::esm::MappingSettings;
use streamload_cli::produce::{self, ProduceOptions};
use streamload_cli::run::{self, RunOptions, UnitStats};
use streamload_cli::sandbox::FunctionSpec;
use streamload_cli::verify::{self, Sinks};
use streamload_cli::{CliError, Target};

/// What `streamload run` polls: a stream or topic, or an SQS queue.
#[derive(Debug, Clone)]
enum RunTarget {
    Stream(Target),
    Queue(String),
}

impl std::str::FromStr for RunTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("sqs://") {
            Some(name)
                if !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c)) =>
            {
                Ok(RunTarget::Queue(name.to_owned()))
            }
            Some(_) => Err(format!(
                "{s:?}: expected sqs://<queue name> (letters, digits, _ -)"
            )),
            None => s
                .parse()
                .map(RunTarget::Stream)
                .map_err(|e| format!("{e}, or sqs://<queue>")),
        }
    }
}

impl std::fmt::Display for RunTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunTarget::Stream(t) => t.fmt(f),
            RunTarget::Queue(q) => write!(f, "sqs://{q}"),
        }
    }
}

#[derive(Parser)]
#[command(
    name = "streamload",
    version,
    about = "Produce test streams, run the loaders locally with AWS's event-source-mapping semantics, and verify exactly-once."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make what a route file needs locally — lake bucket, dedup table (key pk, TTL expires_at), dead-letter and on-failure queues, optionally the stream or topic and the tables — and write the environment for the loader and `run` (docs/local.md).
    ///
    /// Example: streamload init --routes iot.toml --create-tables --stream kinesis://readings && source .streamload/iot.env
    Init {
        /// The route file (TOML), checked as the loader checks it
        #[arg(long)]
        routes: PathBuf,
        /// Name of the bucket, dedup table and queues (default: the route file's name)
        #[arg(long)]
        name: Option<String>,
        /// Create each route's table (and schema) when missing, from the route's columns
        #[arg(long)]
        create_tables: bool,
        /// Also create this stream or topic (kinesis://<stream> or kafka://<topic>)
        #[arg(long)]
        stream: Option<Target>,
        /// Shards or partitions of that stream or topic
        #[arg(long, default_value_t = 2)]
        partitions: u32,
        /// The loader's database (default: DATABASE_URL, which the local stack's .stack/env sets)
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// Where to write the environment (default: .streamload/<name>.env)
        #[arg(long)]
        env_file: Option<PathBuf>,
        #[arg(long)]
        broker: Option<String>,
    },
    /// Produce seed events, or records that fit a route (--routes/--route), with producer retries and poison, to a stream or topic.
    ///
    /// Example: streamload produce kinesis://clicks --events 20000 --duplicates 0.1 --poison 0.02 --create --manifest clicks.json
    ///
    /// Example: streamload produce kinesis://orders --routes streamload.toml --route orders --keys 50 --out-of-order --set currency=choice:EUR|USD --manifest orders.json
    ///
    /// With a route, each run numbers its newest_by revisions and per-record counters above those of the earlier runs into the same stream and route (kept in .streamload/produce/ in the working directory), so a second run makes new events with newer revisions, and both runs' manifests verify.
    Produce {
        /// kinesis://<stream> or kafka://<topic>
        target: Target,
        #[arg(long, default_value_t = 1000)]
        events: u64,
        /// Records per second (default: as fast as possible)
        #[arg(long)]
        rate: Option<f64>,
        /// Probability that an event is sent twice (a producer retry)
        #[arg(long, default_value_t = 0.0)]
        duplicates: f64,
        /// Probability that a record is poison (not JSON, or no event_id)
        #[arg(long, default_value_t = 0.0)]
        poison: f64,
        /// Distinct user_id values (the partition key)
        #[arg(long, default_value_t = 100)]
        users: u64,
        /// Create the stream or topic first
        #[arg(long)]
        create: bool,
        /// Shards or partitions when creating
        #[arg(long, default_value_t = 2)]
        partitions: u32,
        /// Write what was produced here (for `verify`)
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Kafka bootstrap address (default: STREAMLOAD_KAFKA_BROKER)
        #[arg(long)]
        broker: Option<String>,
        /// Records of a route's own shape instead of the seed events: the route file...
        #[arg(long, requires = "route")]
        routes: Option<PathBuf>,
        /// ...and the route's name
        #[arg(long, requires = "routes")]
        route: Option<String>,
        /// With --route: distinct key values (the partition key)
        #[arg(long, default_value_t = 100, requires = "route")]
        keys: u64,
        /// With --route: shuffle the sending order (windows of 1000 records), so a key's revisions arrive out of order
        #[arg(long, requires = "route")]
        out_of_order: bool,
        /// With --route: a column's generator, COLUMN=GEN with GEN one of const:<json>, range:<lo>..<hi>, choice:a|b|c, seq, uuid, now (repeatable)
        #[arg(long = "set", value_name = "COLUMN=GEN", requires = "route")]
        sets: Vec<String>,
        /// Seed of every choice, for a reproducible run (default: drawn, and printed); with a route, revisions still continue above earlier runs'
        #[arg(long)]
        seed: Option<u64>,
        /// Kinesis: pack the records into KPL aggregates (AWS's aggregation format, grouped per shard, at most 51,200 bytes of records each), as the Kinesis Producer Library sends them
        #[arg(long)]
        kpl: bool,
        /// Send these records as they are instead (JSON lines of {"key": …, "value": … or null for a tombstone}: a connector's output, say; examples/cdc)
        #[arg(long, conflicts_with_all = ["routes", "manifest"])]
        file: Option<PathBuf>,
    },
    /// Run a local event-source mapping: poll each shard/partition (or an SQS queue) and invoke the real function binary through the Lambda Runtime API.
    ///
    /// Example: streamload run kinesis://clicks --function target/release/kinesis-loader --until-caught-up --on-failure "$ON_FAILURE_URL"
    ///
    /// Example: streamload run sqs://commits --function target/debug/table-committer --batch-size 1000 --batching-window-ms 5000 --until-caught-up
    Run {
        /// kinesis://<stream>, kafka://<topic> or sqs://<queue> (the table committer's notifications)
        target: RunTarget,
        /// The function binary (default: target/release/<kinesis-loader|kafka-loader|table-committer>)
        #[arg(long)]
        function: Option<PathBuf>,
        #[arg(long, default_value_t = 100)]
        batch_size: usize,
        #[arg(long, default_value_t = 500)]
        batching_window_ms: u64,
        /// -1 = forever
        #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
        max_retry_attempts: i64,
        /// -1 = forever
        #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
        max_record_age_seconds: i64,
        #[arg(long)]
        bisect: bool,
        #[arg(long, default_value_t = 60)]
        timeout_seconds: u64,
        /// SQS queue URL: the on-failure destination
        #[arg(long)]
        on_failure: Option<String>,
        /// Stop when every shard/partition has no lag (exit code 3 if --max-duration-seconds
        /// ends the run first)
        #[arg(long)]
        until_caught_up: bool,
        /// With --until-caught-up: only after no record arrived for this long
        #[arg(long, default_value_t = 0)]
        idle_seconds: u64,
        /// Stop after this long in any case
        #[arg(long, default_value_t = 3600)]
        max_duration_seconds: u64,
        /// Kill each unit's sandbox mid-batch during its Nth invocation (chaos)
        #[arg(long)]
        kill_mid_batch: Option<u64>,
        /// With --kill-mid-batch: this long into the invocation (SIGKILL)
        #[arg(long, default_value_t = 30)]
        kill_after_ms: u64,
        /// Checkpoint file (kept between runs)
        #[arg(long)]
        state: Option<PathBuf>,
        /// Directory for the function's logs
        #[arg(long, default_value = ".")]
        log_dir: PathBuf,
        /// Invoke through a Lambda Invoke API endpoint instead (`cargo lambda watch`, e.g. http://127.0.0.1:9000)
        #[arg(long)]
        invoke_endpoint: Option<String>,
        /// The function name at that endpoint
        #[arg(long, default_value = "_")]
        invoke_function_name: String,
        /// Kafka: the consumer group whose committed offsets are the checkpoints (default streamload-<topic>)
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        broker: Option<String>,
        /// Print the stats as JSON
        #[arg(long)]
        json: bool,
    },
    /// Take dead letters off the DLQ and send their raw bytes back to a stream or topic (after a fix).
    ///
    /// Example: streamload redrive --dlq "$DLQ_URL" --to kinesis://clicks --dry-run
    Redrive {
        #[arg(long, env = "DLQ_URL")]
        dlq: String,
        /// kinesis://<stream> or kafka://<topic>
        #[arg(long)]
        to: Target,
        /// The loop guard: a record redriven this many times stays in the DLQ
        #[arg(long, default_value_t = streamload_cli::ops::DEFAULT_MAX_REDRIVES)]
        max_redrives: u32,
        /// Print what would happen; change nothing
        #[arg(long)]
        dry_run: bool,
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
        /// The bucket of dead letters too large for SQS, and of the redrive ledger
        #[arg(long, env = "OUTPUT_BUCKET")]
        bucket: String,
        #[arg(long, env = "DEAD_LETTER_PREFIX", default_value = "dead-letter/")]
        dead_letter_prefix: String,
        #[arg(long)]
        broker: Option<String>,
    },
    /// Re-deliver the records on-failure messages describe, from the stream while it still holds them.
    ///
    /// Example: streamload replay --on-failure "$ON_FAILURE_URL"
    Replay {
        #[arg(long)]
        on_failure: String,
        /// Keep the messages even when every record was found
        #[arg(long)]
        keep: bool,
        #[arg(long)]
        broker: Option<String>,
    },
    /// A mapping's state. Local: checkpoint and lag per shard/partition and the last batches; deployed (--function): each mapping's state and last result, IteratorAge/OffsetLag. Both: DLQ and on-failure depth.
    ///
    /// Example: streamload status kinesis://clicks --state .stack/demo/kinesis-state.json --dlq "$DLQ_URL" --log-dir .stack/demo
    /// Example: streamload status --function my-stack-kinesis-loader --dlq "$DLQ_URL" --on-failure "$ON_FAILURE_URL"
    Status {
        /// A local mapping's stream or topic
        #[arg(required_unless_present_any = ["function", "routes"])]
        target: Option<Target>,
        /// The route file: the lag of every route's Iceberg table (staged objects the table
        /// committer has not appended yet, the oldest one's age, the last commit). Reads
        /// STREAMLOAD_CATALOG and its settings, OUTPUT_BUCKET and DEDUP_TABLE
        #[arg(long)]
        routes: Option<PathBuf>,
        /// A deployed function (name, ARN or alias ARN): its event-source mappings
        #[arg(long, conflicts_with = "target")]
        function: Option<String>,
        #[arg(long)]
        state: Option<PathBuf>,
        #[arg(long, env = "DLQ_URL")]
        dlq: Option<String>,
        #[arg(long)]
        on_failure: Option<String>,
        /// Where `run` wrote the function logs (for the last batches' outcomes)
        #[arg(long)]
        log_dir: Option<PathBuf>,
        /// Kafka: the consumer group (default streamload-<topic>)
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        broker: Option<String>,
    },
    /// Audit a route's Iceberg table against the staged objects the table committer builds it from: each identity once in the current snapshot, every committed staged object's events in it, nothing else, and the lag. Reads STREAMLOAD_CATALOG (sql: STREAMLOAD_CATALOG_URI, STREAMLOAD_WAREHOUSE; s3tables: STREAMLOAD_TABLE_BUCKET_ARN), OUTPUT_BUCKET and DEDUP_TABLE.
    ///
    /// Example: streamload verify-table --routes examples/orders/routes.toml
    VerifyTable {
        #[arg(long)]
        routes: PathBuf,
        /// The route (default: every route with a [route.iceberg] table)
        #[arg(long)]
        route: Option<String>,
    },
    /// Audit a manifest: each event exactly once in PostgreSQL and in the lake, each poison record dead-lettered. With --routes, by the route's merge rule: each key's row holds its newest revision (newest_by) or a produced event (keep-first), every event once in the lake.
    ///
    /// Example: streamload verify --manifest clicks.json   (DATABASE_URL, OUTPUT_BUCKET from the environment)
    ///
    /// Example: streamload verify --manifest orders.json --routes streamload.toml --route orders
    Verify {
        /// The manifest of a produce run; repeat it to judge several runs of one route together (an index or table then holds what the latest run made)
        #[arg(long, required = true)]
        manifest: Vec<PathBuf>,
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[arg(long, env = "TARGET_TABLE", default_value = "events")]
        table: String,
        #[arg(long, env = "OUTPUT_BUCKET")]
        bucket: String,
        #[arg(long, env = "OUTPUT_PREFIX", default_value = "events/")]
        lake_prefix: String,
        #[arg(long, env = "DEAD_LETTER_PREFIX", default_value = "dead-letter/")]
        dead_letter_prefix: String,
        /// The column holding the manifest's ids, in the table and in the Parquet objects (text or uuid)
        #[arg(long, default_value = "event_id")]
        id_column: String,
        /// Judge a route's records by its merge rule: the route file (table, lake prefix, key, identity and newest_by come from the route; --table, --lake-prefix and --id-column are not used)...
        #[arg(long)]
        routes: Option<PathBuf>,
        /// ...and the route's name (default: the one the manifest was produced for)
        #[arg(long, requires = "routes")]
        route: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// `init`'s default name: the route file's stem, lower-cased, in the characters bucket, table
/// and queue names all accept (at least 3 of them).
fn default_init_name(routes: &std::path::Path) -> Result<String, CliError> {
    let stem = routes
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .to_owned();
    if name.len() < 3 {
        return Err(CliError::Usage(format!(
            "{}: pass --name (at least 3 letters or digits) for the bucket, table and queues",
            routes.display()
        )));
    }
    Ok(format!("streamload-{name}"))
}

fn bar(total: Option<u64>) -> indicatif::ProgressBar {
    let pb = match total {
        Some(t) => indicatif::ProgressBar::new(t),
        None => indicatif::ProgressBar::new_spinner(),
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {prefix:>24} {bar:30} {pos}/{len} {per_sec} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

async fn produce_cmd(
    target: Target,
    options: ProduceOptions,
    manifest_path: Option<PathBuf>,
    broker: Option<String>,
    shape: Option<(produce::RouteShape, produce::Ledger)>,
) -> Result<(), CliError> {
    let mut generator = produce::Generator::new(&options, &target);
    let (shape, ledger) = shape.unzip();
    if let Some(shape) = shape {
        generator = generator.with_shape(shape);
    }
    let seed = generator.manifest.seed;
    let pb = bar(Some(options.events));
    pb.set_prefix(target.to_string());
    let pace = produce::Pace::new(options.rate);
    let started = std::time::Instant::now();
    // Small chunks when paced, so `created_at` stays close to the moment of sending.
    let chunk = if options.rate.is_some() {
        20
    } else {
        produce::KINESIS_PUT_RECORDS_MAX as u64
    };
    let broker = streamload_cli::broker(broker.as_deref());
    if options.create {
        match &target {
            Target::Kinesis(stream) => {
                let (client, _) = streamload_cli::kinesis_client().await;
                produce::create_kinesis(&client, stream, options.partitions).await?;
            }
            Target::Kafka(topic) => {
                let client = streamload_cli::kafka_client(&broker).await?;
                produce::create_kafka(&client, &broker, topic, options.partitions).await?;
            }
        }
    }
    let writer = produce::StreamWriter::connect(&target, &broker, options.kpl).await?;
    let mut stream_records = 0;
    while generator.left() > 0 {
        pace.wait_for(options.events - generator.left()).await;
        let records = generator.chunk(chunk)?;
        // Kept before sending: an interrupted run's records are counted too.
        if let (Some(ledger), Some(used)) = (&ledger, generator.used()) {
            ledger.write(&used)?;
        }
        stream_records += writer.send(&records).await?;
        pb.set_position(options.events - generator.left());
    }
    let manifest = generator.manifest;
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{target}: {} records ({} events, {} producer retries, {} poison) in {secs:.1} s ({:.0} records/s)",
        manifest.records_sent,
        manifest.event_ids.len(),
        manifest.duplicates_sent,
        manifest.poison_tokens.len(),
        manifest.records_sent as f64 / secs.max(1e-9)
    );
    if options.kpl {
        println!(
            "packed into {stream_records} KPL aggregates (≤ {} bytes of records each, grouped per shard)",
            produce::KPL_AGGREGATION_MAX_BYTES
        );
    }
    match (seed, &ledger, manifest.after) {
        (Some(seed), Some(ledger), Some(after)) => {
            println!(
                "seed: {seed} (--seed {seed} makes the same choices again; revisions and counters continue above earlier runs')"
            );
            println!(
                "revisions numbered above {}, record counters above {} (earlier runs); kept in {}",
                after.revision,
                after.record,
                ledger.path().display()
            );
        }
        (Some(seed), _, _) => println!("seed: {seed} (--seed {seed} makes the same records again)"),
        _ => {}
    }
    if let Some(path) = manifest_path {
        let text = serde_json::to_string(&manifest).map_err(|e| CliError::Usage(e.to_string()))?;
        std::fs::write(&path, text)?;
        println!("manifest: {}", path.display());
    }
    Ok(())
}

fn stats_table(stats: &[UnitStats]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.set_header(vec![
        "unit",
        "invocations",
        "records done",
        "partial",
        "failed",
        "skipped",
        "sandboxes",
        "lag",
        "last result",
    ]);
    for s in stats {
        t.add_row(vec![
            s.unit.clone(),
            s.invocations.to_string(),
            s.records_done.to_string(),
            s.partial_answers.to_string(),
            s.failed_invocations.to_string(),
            s.skipped_records.to_string(),
            s.sandboxes_started.to_string(),
            s.lag.to_string(),
            s.last_result.clone(),
        ]);
    }
    t
}

async fn main_inner() -> Result<i32, CliError> {
    match Cli::parse().command {
        Command::Init {
            routes,
            name,
            create_tables,
            stream,
            partitions,
            database_url,
            env_file,
            broker,
        } => {
            let name = match name {
                Some(n) => n,
                None => default_init_name(&routes)?,
            };
            let env_file =
                env_file.unwrap_or_else(|| PathBuf::from(format!(".streamload/{name}.env")));
            let made = streamload_cli::init::init(&streamload_cli::init::InitOptions {
                routes,
                name,
                database_url,
                create_tables,
                env_file: env_file.clone(),
            })
            .await?;
            for step in &made.steps {
                println!("{step}");
            }
            if let Some(target) = stream {
                let broker = streamload_cli::broker(broker.as_deref());
                match &target {
                    Target::Kinesis(s) => {
                        let (client, _) = streamload_cli::kinesis_client().await;
                        produce::create_kinesis(&client, s, partitions).await?;
                    }
                    Target::Kafka(t) => {
                        let client = streamload_cli::kafka_client(&broker).await?;
                        produce::create_kafka(&client, &broker, t, partitions).await?;
                    }
                }
                println!("{target}: ready ({partitions} shards or partitions)");
            }
            print!("{}", streamload_cli::init::env_text(&made.env));
            println!(
                "# written to {} — load it with: set -a; . {}; set +a",
                env_file.display(),
                env_file.display()
            );
            Ok(0)
        }
        Command::Produce {
            target,
            events,
            rate,
            duplicates,
            poison,
            users,
            create,
            partitions,
            manifest,
            broker,
            routes,
            route,
            keys,
            out_of_order,
            sets,
            seed,
            kpl,
            file,
        } => {
            if let Some(file) = file {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
                let records = produce::records_of_file(&text)
                    .map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
                let broker = streamload_cli::broker(broker.as_deref());
                if create {
                    match &target {
                        Target::Kinesis(stream) => {
                            let (client, _) = streamload_cli::kinesis_client().await;
                            produce::create_kinesis(&client, stream, partitions).await?;
                        }
                        Target::Kafka(topic) => {
                            let client = streamload_cli::kafka_client(&broker).await?;
                            produce::create_kafka(&client, &broker, topic, partitions).await?;
                        }
                    }
                }
                let writer = produce::StreamWriter::connect(&target, &broker, kpl).await?;
                let sent = writer.send(&records).await?;
                println!("{target}: {sent} records from {}", file.display());
                return Ok(0);
            }
            let shape = match (routes, route) {
                (Some(file), Some(name)) => {
                    let text = std::fs::read_to_string(&file).map_err(|e| {
                        CliError::Usage(format!("route file {}: {e}", file.display()))
                    })?;
                    let ledger = produce::Ledger::new(
                        std::path::Path::new(produce::Ledger::DIR),
                        &target,
                        &name,
                    );
                    let options = produce::ShapeOptions {
                        keys,
                        events,
                        sets,
                        after: ledger.read()?,
                    };
                    Some((
                        produce::RouteShape::from_toml(&text, &name, &options)?,
                        ledger,
                    ))
                }
                _ => None,
            };
            let options = ProduceOptions {
                events,
                rate,
                duplicates,
                poison,
                users,
                create,
                partitions,
                seed,
                out_of_order,
                kpl,
            };
            produce_cmd(target, options, manifest, broker, shape).await?;
            Ok(0)
        }
        Command::Run {
            target,
            function,
            batch_size,
            batching_window_ms,
            max_retry_attempts,
            max_record_age_seconds,
            bisect,
            timeout_seconds,
            on_failure,
            until_caught_up,
            idle_seconds,
            max_duration_seconds,
            kill_mid_batch,
            kill_after_ms,
            state,
            log_dir,
            invoke_endpoint,
            invoke_function_name,
            group,
            broker,
            json,
        } => {
            if !(1..=streamload_cli::esm::MAX_BATCH_SIZE).contains(&batch_size) {
                return Err(CliError::Usage("--batch-size must be 1..=10000".into()));
            }
            let name = match &target {
                RunTarget::Stream(Target::Kinesis(_)) => "kinesis-loader",
                RunTarget::Stream(Target::Kafka(_)) => "kafka-loader",
                RunTarget::Queue(_) => "table-committer",
            };
            if matches!(target, RunTarget::Queue(_))
                && !(1..=streamload_cli::queue::MAX_QUEUE_BATCH).contains(&batch_size)
            {
                return Err(CliError::Usage(
                    "sqs: --batch-size must be 1..=10000".into(),
                ));
            }
            let binary =
                function.unwrap_or_else(|| PathBuf::from(format!("target/release/{name}")));
            if invoke_endpoint.is_none() && !binary.exists() {
                return Err(CliError::Usage(format!(
                    "no function binary at {} (build it: cargo build --release -p {name}, or pass --function)",
                    binary.display()
                )));
            }
            std::fs::create_dir_all(&log_dir)?;
            let options = RunOptions {
                settings: MappingSettings {
                    batch_size,
                    batching_window: Duration::from_millis(batching_window_ms),
                    max_retry_attempts: u32::try_from(max_retry_attempts).ok(),
                    max_record_age: u64::try_from(max_record_age_seconds)
                        .ok()
                        .map(Duration::from_secs),
                    bisect_on_error: bisect,
                    function_timeout: Duration::from_secs(timeout_seconds),
                },
                function: FunctionSpec {
                    binary,
                    name: if invoke_endpoint.is_some() {
                        invoke_function_name
                    } else {
                        name.into()
                    },
                    env: Vec::new(),
                    log: log_dir.join(format!("{name}.log")),
                },
                until_caught_up,
                idle_before_stop: Duration::from_secs(idle_seconds),
                max_duration: Duration::from_secs(max_duration_seconds),
                on_failure_queue: on_failure,
                kill_mid_batch: kill_mid_batch.map(|n| (n, Duration::from_millis(kill_after_ms))),
                state_file: state,
                invoke_endpoint,
                kafka_group: group,
            };
            let broker = streamload_cli::broker(broker.as_deref());
            let multi = indicatif::MultiProgress::new();
            let bars: Arc<
                std::sync::Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
            > = Arc::default();
            let progress = {
                let (multi, bars) = (multi.clone(), bars.clone());
                Arc::new(move |s: &UnitStats| {
                    if let Ok(mut bars) = bars.lock() {
                        let pb = bars.entry(s.unit.clone()).or_insert_with(|| {
                            let pb = multi.add(bar(None));
                            pb.set_prefix(s.unit.clone());
                            pb
                        });
                        pb.set_position(s.records_done);
                        pb.set_length(s.records_done + s.lag);
                        pb.set_message(format!("lag {} · {}", s.lag, s.last_result));
                    }
                }) as Arc<dyn Fn(&UnitStats) + Send + Sync>
            };
            let started = std::time::Instant::now();
            let stats = match &target {
                RunTarget::Stream(t) => run::run_target(t, &options, &broker, progress).await?,
                RunTarget::Queue(q) => {
                    vec![streamload_cli::queue::run_queue(q, &options, &*progress).await?]
                }
            };
            let _ = multi.clear();
            let done: u64 = stats.iter().map(|s| s.records_done).sum();
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&stats).map_err(|e| CliError::Usage(e.to_string()))?
                );
            } else {
                println!("{}", stats_table(&stats));
                let secs = started.elapsed().as_secs_f64();
                println!(
                    "{target}: {done} records in {secs:.1} s ({:.0} records/s)",
                    done as f64 / secs.max(1e-9)
                );
            }
            // Asked to catch up and stopped by the time limit instead: not a success (a
            // function that never started, or a lag that never closed, must not read as one).
            let behind: Vec<&str> = stats
                .iter()
                .filter(|s| s.stopped_by_max_duration)
                .map(|s| s.unit.as_str())
                .collect();
            if until_caught_up && !behind.is_empty() {
                eprintln!(
                    "{target}: not caught up: --max-duration-seconds ended the run first ({}); see the last results above and the sandbox logs",
                    behind.join(", ")
                );
                return Ok(3);
            }
            Ok(0)
        }
        Command::Redrive {
            dlq,
            to,
            max_redrives,
            dry_run,
            limit,
            bucket,
            dead_letter_prefix,
            broker,
        } => {
            let sdk = streamload_aws::sdk_config().await;
            let sqs = aws_sdk_sqs::Client::new(&sdk);
            let s3 = streamload_aws::s3_client(&sdk);
            let ledger = streamload_cli::ops::Ledger {
                s3: &s3,
                bucket,
                prefix: dead_letter_prefix,
            };
            let broker = streamload_cli::broker(broker.as_deref());
            let pb = bar(None);
            pb.set_prefix(if dry_run {
                "redrive (dry run)"
            } else {
                "redrive"
            });
            let options = streamload_cli::ops::RedriveOptions {
                dlq_url: &dlq,
                to: &to,
                broker: &broker,
                max_redrives,
                dry_run,
                limit,
            };
            let report = streamload_cli::ops::redrive(&options, &sqs, &ledger, &|n| {
                pb.set_position(n as u64)
            })
            .await?;
            pb.finish_and_clear();
            let mut t = comfy_table::Table::new();
            t.set_header(vec!["dead letter", "reason", "bytes", "action"]);
            for r in &report {
                t.add_row(vec![
                    r.dedup_id.clone(),
                    r.reason.clone(),
                    r.bytes.to_string(),
                    format!("{:?}", r.action),
                ]);
            }
            println!("{t}");
            let sent = report
                .iter()
                .filter(|r| {
                    matches!(
                        r.action,
                        streamload_cli::ops::RedriveAction::Redriven { .. }
                    )
                })
                .count();
            println!(
                "{} {sent} of {} dead letters to {to}{}",
                if dry_run { "would redrive" } else { "redrove" },
                report.len(),
                if dry_run {
                    " (dry run: nothing changed)"
                } else {
                    ""
                }
            );
            Ok(0)
        }
        Command::Replay {
            on_failure,
            keep,
            broker,
        } => {
            let sdk = streamload_aws::sdk_config().await;
            let sqs = aws_sdk_sqs::Client::new(&sdk);
            let broker = streamload_cli::broker(broker.as_deref());
            let report = streamload_cli::ops::replay(&on_failure, &broker, keep, &sqs).await?;
            let mut t = comfy_table::Table::new();
            t.set_header(vec![
                "unit",
                "first",
                "last",
                "expected",
                "re-delivered",
                "not found",
            ]);
            for r in &report {
                t.add_row(vec![
                    r.unit.clone(),
                    r.first.clone(),
                    r.last.clone(),
                    r.expected.to_string(),
                    r.found.to_string(),
                    r.missing.clone().unwrap_or_default(),
                ]);
            }
            println!("{t}");
            Ok(if report.iter().any(|r| r.missing.is_some()) {
                1
            } else {
                0
            })
        }
        Command::Status {
            target: None,
            function: None,
            routes: Some(routes),
            ..
        } => Ok(if tables(&routes, None, false).await? {
            0
        } else {
            1
        }),
        Command::VerifyTable { routes, route } => {
            Ok(if tables(&routes, route.as_deref(), true).await? {
                0
            } else {
                1
            })
        }
        Command::Status {
            target,
            function,
            group,
            state,
            dlq,
            on_failure,
            log_dir,
            broker,
            routes: _,
        } => {
            match (target, function) {
                (_, Some(function)) => deployed(&function, dlq, on_failure).await?,
                (Some(target), None) => {
                    status(target, state, dlq, on_failure, log_dir, broker, group).await?
                }
                (None, None) => return Err(CliError::Usage("give a target or --function".into())),
            }
            Ok(0)
        }
        Command::Verify {
            manifest,
            database_url,
            table,
            bucket,
            lake_prefix,
            dead_letter_prefix,
            id_column,
            routes,
            route,
            json,
        } => {
            let mut runs = Vec::with_capacity(manifest.len());
            for path in &manifest {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| CliError::Usage(format!("manifest {}: {e}", path.display())))?;
                let run: produce::Manifest = serde_json::from_str(&text)
                    .map_err(|e| CliError::Usage(format!("manifest {}: {e}", path.display())))?;
                runs.push(run);
            }
            let mut runs = runs.into_iter();
            let first = runs
                .next()
                .ok_or_else(|| CliError::Usage("give --manifest FILE".into()))?;
            let manifest = runs
                .try_fold(first, produce::Manifest::merge)
                .map_err(CliError::Usage)?;
            let route = match routes {
                Some(file) => Some(verify_route(&file, route.as_deref(), &manifest)?),
                None => match &manifest.route {
                    Some(name) => {
                        return Err(CliError::Usage(format!(
                            "the manifest's records were made for route {name:?}: give --routes FILE so verify judges them by the route's merge rule"
                        )))
                    }
                    None => None,
                },
            };
            let sdk = streamload_aws::sdk_config().await;
            let s3 = streamload_aws::s3_client(&sdk);
            let sinks = Sinks {
                database_url,
                table: route.as_ref().map_or(table, |r| r.table_name()),
                bucket,
                lake_prefix: route
                    .as_ref()
                    .map_or(lake_prefix, |r| r.lake_prefix.clone()),
                dead_letter_prefix,
                id_column,
            };
            let mut audit = match &route {
                Some(route) => verify::audit_route(&manifest, route, &sinks, &s3).await?,
                None => verify::audit(&manifest, &sinks, &s3).await?,
            };
            if let Some(route) = route.as_ref().filter(|r| r.search.is_some()) {
                let index = search_client(&route.name, &sdk)?;
                audit.index = Some(
                    streamload_cli::verify_index::audit_index(
                        &manifest,
                        route,
                        &index,
                        &audit.index_refused,
                    )
                    .await?,
                );
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&audit).map_err(|e| CliError::Usage(e.to_string()))?
                );
            } else {
                println!("{}", audit.table());
                println!("verdict: {}", audit.verdict());
            }
            Ok(if audit.exactly_once() { 0 } else { 1 })
        }
    }
}

/// The search cluster `verify` reads a route's index from: `STREAMLOAD_SEARCH_URL`, with
/// `STREAMLOAD_SEARCH_AUTH` `none` (the default) or `sigv4`.
fn search_client(
    route: &str,
    sdk: &aws_config::SdkConfig,
) -> Result<streamload_aws::SearchClient, CliError> {
    let url = std::env::var("STREAMLOAD_SEARCH_URL").map_err(|_| {
        CliError::Usage(format!(
            "route {route:?} names a search index: set STREAMLOAD_SEARCH_URL so verify can audit it"
        ))
    })?;
    let auth = match std::env::var("STREAMLOAD_SEARCH_AUTH").as_deref() {
        Err(_) | Ok("none") => streamload_aws::SearchAuth::None,
        Ok("sigv4") => streamload_aws::SearchAuth::SigV4 { service: "es" },
        Ok(other) => {
            return Err(CliError::Usage(format!(
                "STREAMLOAD_SEARCH_AUTH {other:?}: verify takes none or sigv4"
            )))
        }
    };
    streamload_aws::SearchClient::new(&url, auth, Some(sdk))
        .map_err(|why| CliError::Usage(format!("STREAMLOAD_SEARCH_URL: {why}")))
}

/// The route `verify --routes FILE [--route NAME]` judges: NAME, or the manifest's route.
fn verify_route(
    file: &std::path::Path,
    name: Option<&str>,
    manifest: &produce::Manifest,
) -> Result<streamload_core::Route, CliError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::Usage(format!("route file {}: {e}", file.display())))?;
    let parsed: streamload_core::route::ConfigFile = toml::from_str(&text)
        .map_err(|e| CliError::Usage(format!("route file: {}", e.to_string().trim())))?;
    let routes =
        streamload_core::Routes::compile(&parsed).map_err(|e| CliError::Usage(e.to_string()))?;
    let name = name
        .or(manifest.route.as_deref())
        .ok_or_else(|| CliError::Usage("give --route NAME (the manifest names no route)".into()))?;
    let route = routes.iter().find(|r| r.name == name).cloned();
    route.ok_or_else(|| CliError::Usage(format!("the route file has no route {name:?}")))
}

async fn queue_lines(dlq: Option<String>, on_failure: Option<String>) -> Result<(), CliError> {
    let sdk = streamload_aws::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    for (label, url) in [("dead-letter queue", dlq), ("on-failure queue", on_failure)] {
        if let Some(url) = url {
            let (visible, in_flight) = streamload_cli::queue_depth(&sqs, &url).await?;
            println!("{label}: {visible} messages ({in_flight} in flight)");
        }
    }
    Ok(())
}

async fn deployed(
    function: &str,
    dlq: Option<String>,
    on_failure: Option<String>,
) -> Result<(), CliError> {
    let sdk = streamload_aws::sdk_config().await;
    let (mappings, lags) = streamload_cli::ops::deployed_status(
        &aws_sdk_lambda::Client::new(&sdk),
        &aws_sdk_cloudwatch::Client::new(&sdk),
        function,
    )
    .await?;
    let mut t = comfy_table::Table::new();
    t.set_header(vec![
        "mapping (UUID)",
        "state",
        "last result",
        "source",
        "batch",
        "max retries",
        "on failure",
    ]);
    for m in &mappings {
        t.add_row(vec![
            m.uuid.clone(),
            m.state.clone(),
            m.last_result.clone(),
            m.source.clone(),
            m.batch_size.to_string(),
            m.max_retry_attempts.map_or("-1".into(), |r| r.to_string()),
            m.on_failure.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    println!(
        "{function}: {} event-source mapping(s)\n{t}",
        mappings.len()
    );
    for (metric, worst) in lags {
        match worst {
            Ok(Some(v)) => println!("{metric} (worst of the last 15 min): {v:.0}"),
            Ok(None) => println!("{metric}: no datapoints in the last 15 min"),
            Err(why) => println!("{metric}: unavailable ({why})"),
        }
    }
    queue_lines(dlq, on_failure).await
}

async fn status(
    target: Target,
    state: Option<PathBuf>,
    dlq: Option<String>,
    on_failure: Option<String>,
    log_dir: Option<PathBuf>,
    broker: Option<String>,
    group: Option<String>,
) -> Result<(), CliError> {
    let checkpoints: std::collections::BTreeMap<String, String> = state
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let mut t = comfy_table::Table::new();
    t.set_header(vec!["unit", "checkpoint", "lag (records)"]);
    match &target {
        Target::Kinesis(stream) => {
            let (client, _) = streamload_cli::kinesis_client().await;
            let shards = client
                .list_shards()
                .stream_name(stream)
                .send()
                .await
                .map_err(|e| CliError::aws("kinesis ListShards", &e))?;
            for shard in shards.shards.unwrap_or_default() {
                let cp = checkpoints.get(&shard.shard_id).cloned();
                let mut req = client
                    .get_shard_iterator()
                    .stream_name(stream)
                    .shard_id(&shard.shard_id);
                req = match &cp {
                    Some(seq) => req
                        .shard_iterator_type(
                            aws_sdk_kinesis::types::ShardIteratorType::AfterSequenceNumber,
                        )
                        .starting_sequence_number(seq),
                    None => req.shard_iterator_type(
                        aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon,
                    ),
                };
                let mut iterator = req
                    .send()
                    .await
                    .map_err(|e| CliError::aws("kinesis GetShardIterator", &e))?
                    .shard_iterator;
                let mut lag = 0usize;
                while let Some(i) = iterator {
                    let out = client
                        .get_records()
                        .shard_iterator(i)
                        .limit(10_000)
                        .send()
                        .await
                        .map_err(|e| CliError::aws("kinesis GetRecords", &e))?;
                    if out.records.is_empty() {
                        break;
                    }
                    lag += out.records.len();
                    iterator = out.next_shard_iterator;
                }
                t.add_row(vec![
                    shard.shard_id.clone(),
                    cp.unwrap_or_else(|| "(none: TRIM_HORIZON)".into()),
                    lag.to_string(),
                ]);
            }
        }
        Target::Kafka(topic) => {
            let broker = streamload_cli::broker(broker.as_deref());
            let client = streamload_cli::kafka_client(&broker).await?;
            let partitions = streamload_cli::kafka_partitions(&client, topic).await?;
            let group_id = group.unwrap_or_else(|| format!("streamload-{topic}"));
            let committed = streamload_cli::kafka_group::GroupOffsets::find(&broker, &group_id)
                .await?
                .fetch(topic, &partitions)
                .await?;
            for p in partitions {
                let pc = streamload_cli::kafka_partition_client(&client, topic, p).await?;
                let high = pc
                    .get_offset(rskafka::client::partition::OffsetAt::Latest)
                    .await
                    .map_err(|e| CliError::Kafka(e.to_string()))?;
                let name = format!("{topic}-{p}");
                let cp: i64 = committed.get(&p).copied().unwrap_or_else(|| {
                    checkpoints
                        .get(&name)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0)
                });
                t.add_row(vec![name, cp.to_string(), (high - cp).max(0).to_string()]);
            }
        }
    }
    println!("{target}\n{t}");
    queue_lines(dlq, on_failure).await?;
    if let Some(dir) = log_dir {
        let mut last: Vec<(String, serde_json::Value)> = Vec::new();
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            for line in text.lines() {
                if let Ok(doc) = serde_json::from_str::<serde_json::Value>(line) {
                    if doc["message"] == "batch done" {
                        last.push((doc["timestamp"].as_str().unwrap_or("").to_owned(), doc));
                    }
                }
            }
        }
        last.sort_by(|a, b| a.0.cmp(&b.0));
        let mut t = comfy_table::Table::new();
        t.set_header(vec![
            "time",
            "request",
            "received",
            "loaded",
            "duplicates",
            "poison",
            "failed",
        ]);
        for (_, d) in last.iter().rev().take(10).rev() {
            t.add_row(vec![
                d["timestamp"].to_string(),
                d["requestId"].to_string(),
                d["received"].to_string(),
                d["loaded"].to_string(),
                d["duplicates"].to_string(),
                d["poison"].to_string(),
                d["failed"].to_string(),
            ]);
        }
        println!("last batches:\n{t}");
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let code = match main_inner().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("streamload: {e}");
            2
        }
    };
    std::process::exit(code);
}

/// The audit (`full`) or the lag of the routes' Iceberg tables, a line each; `true` when every
/// audited table holds each event exactly once.
async fn tables(
    routes: &std::path::Path,
    only: Option<&str>,
    full: bool,
) -> Result<bool, CliError> {
    let routes = streamload_cli::init::read_routes(routes)?;
    let var = |k: &str| std::env::var(k).ok();
    let need = |k: &str| var(k).ok_or_else(|| CliError::Usage(format!("{k} is not set")));
    let (bucket, dedup) = (need("OUTPUT_BUCKET")?, need("DEDUP_TABLE")?);
    let settings = streamload_iceberg::CatalogSettings::from_env(var)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let catalog = streamload_iceberg::connect(&settings, streamload_iceberg::storage_props(var))
        .await
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let sdk = streamload_aws::sdk_config().await;
    let mut all_once = true;
    let mut any = false;
    for route in routes.iter().filter(|r| r.iceberg.is_some()) {
        if only.is_some_and(|name| name != route.name) {
            continue;
        }
        any = true;
        let audit = table_committer::audit::audit_table(
            &sdk,
            catalog.clone(),
            route,
            &bucket,
            &dedup,
            full,
        )
        .await
        .map_err(CliError::Usage)?;
        println!("{}", audit.line());
        all_once &= !full || audit.exactly_once();
    }
    if !any {
        return Err(CliError::Usage(
            "no route with a [route.iceberg] table (or no such route)".into(),
        ));
    }
    Ok(all_once)
}
