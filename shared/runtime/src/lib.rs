//! Lambda glue shared by the functions: typed configuration, clients built once, and the
//! handlers that turn an event-source batch into the pipeline's work and its report into
//! the partial-batch response.

pub mod config;
pub mod database;
pub mod logging;
pub mod raw_body;

pub use config::{
    CallClient, Config, ConfigError, DatabaseEnv, DatabaseSource, RoutesSource, SearchAuthSource,
    SearchSettings,
};
pub use raw_body::RawBodies;

use lambda_runtime::{Context, LambdaEvent};
use std::time::Instant;
use streamload_aws::{DynamoDedup, S3Objects, SqsDeadLetters};
use streamload_core::pacing::{PacingConfig, WakePacer};
use streamload_core::ports::{DeadLetters, DedupStore, ObjectSink, RowSink};
use streamload_core::record::Batch;
use streamload_core::response::{BatchItemFailures, ItemFailure};
use streamload_core::route::{ConfigFile, RouteErrors, Routes};
pub use streamload_core::source::{EventSource, Kafka, Kinesis};
use streamload_core::{Invocation, Pipeline, PipelineSettings};
use streamload_postgres::{PgError, PgRows};

/// The pipeline as deployed: DynamoDB, PostgreSQL, S3 and SQS.
pub type AwsPipeline = Pipeline<DynamoDedup, Rows, S3Objects, SqsDeadLetters>;

/// Why a function could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("database secret: {0}")]
    Secret(#[from] streamload_aws::AwsError),
    /// The route file could not be read or parsed.
    #[error("STREAMLOAD_CONFIG {source_name}: {why}")]
    RouteFile { source_name: String, why: String },
    #[error("{0}")]
    Routes(#[from] RouteErrors),
    #[error("{0}")]
    Database(#[from] PgError),
    /// The search index: unreachable configuration, a missing index or a field that
    /// differs (one line naming the route and the field).
    #[error("{0}")]
    Search(String),
    /// A route writes a table and no database is configured.
    #[error("{0}")]
    NoDatabase(String),
}

/// Parses a route file's TOML text and compiles it.
///
/// ```
/// let routes = streamload_runtime::parse_routes(r#"
///     [[route]]
///     name = "orders"
///     source = "kafka:orders"
///     table = "orders"
///     key = ["order_id"]
///     [[route.column]]
///     name = "order_id"
///     from = "/order_id"
///     type = "text"
///     required = true
/// "#, "inline").unwrap();
/// assert_eq!(routes.get(0).name, "orders");
/// ```
pub fn parse_routes(text: &str, source_name: &str) -> Result<Routes, StartError> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| StartError::RouteFile {
        source_name: source_name.to_owned(),
        // toml's message names the line and the key; it quotes configuration, not data.
        why: e.to_string().trim().replace('\n', " "),
    })?;
    Ok(Routes::compile(&file)?)
}

/// The routes `config` names: its file, its S3 object or the built-in route.
pub async fn load_routes(
    config: &Config,
    sdk: &aws_config::SdkConfig,
) -> Result<Routes, StartError> {
    let routes = read_routes(config, sdk).await?;
    check_dead_letter_prefix(&routes, &config.dead_letter_prefix)?;
    Ok(routes)
}

/// Refuses a `DEAD_LETTER_PREFIX` that is a prefix of a route's lake prefix or has one as its
/// prefix: dead-letter archives and the lake's objects (the commit markers of the claims)
/// would share keys, and the dead letters' expiry rule would delete the lake's markers.
pub fn check_dead_letter_prefix(
    routes: &Routes,
    dead_letter_prefix: &str,
) -> Result<(), ConfigError> {
    for route in routes.iter() {
        let lake = route.lake_prefix.as_str();
        if lake.starts_with(dead_letter_prefix) || dead_letter_prefix.starts_with(lake) {
            return Err(ConfigError::Invalid {
                name: "DEAD_LETTER_PREFIX",
                why: format!(
                    "{dead_letter_prefix:?} overlaps route {:?}'s lake prefix {lake:?}: the dead letters' expiry would delete the lake's objects (the claims' commit markers); give them prefixes apart",
                    route.name
                ),
            });
        }
    }
    Ok(())
}

async fn read_routes(config: &Config, sdk: &aws_config::SdkConfig) -> Result<Routes, StartError> {
    if let RoutesSource::Builtin = &config.routes {
        return Ok(Routes::builtin(
            &config.target_table,
            &config.output_prefix,
        )?);
    }
    read_route_file(&config.routes, sdk).await
}

/// The routes of a configuration file named by `STREAMLOAD_CONFIG` (a path or an S3 object);
/// the table committer reads the loaders' file through this too. The built-in route has no
/// file: it is refused here.
pub async fn read_route_file(
    source: &RoutesSource,
    sdk: &aws_config::SdkConfig,
) -> Result<Routes, StartError> {
    let (name, text) = match source {
        RoutesSource::Builtin => {
            return Err(ConfigError::Missing("STREAMLOAD_CONFIG").into());
        }
        RoutesSource::File(path) => (
            path.clone(),
            std::fs::read_to_string(path).map_err(|e| StartError::RouteFile {
                source_name: path.clone(),
                why: e.kind().to_string(),
            })?,
        ),
        RoutesSource::S3 { bucket, key } => {
            let name = format!("s3://{bucket}/{key}");
            let bytes = streamload_aws::read_object(&streamload_aws::s3_client(sdk), bucket, key)
                .await
                .map_err(|why| StartError::RouteFile {
                    source_name: name.clone(),
                    why,
                })?;
            let text = String::from_utf8(bytes).map_err(|_| StartError::RouteFile {
                source_name: name.clone(),
                why: "not UTF-8".into(),
            })?;
            (name, text)
        }
    };
    parse_routes(&text, &name)
}

/// Logs on stdout as the function's Lambda log controls say (see [`logging`]): JSON with
/// the invocation's fields at the top level unless `AWS_LAMBDA_LOG_FORMAT=Text`; the level
/// from `RUST_LOG`, else `AWS_LAMBDA_LOG_LEVEL`, else info. No ANSI colours.
pub fn init_tracing() {
    let var = |k: &str| std::env::var(k).ok();
    let directive = logging::filter_directive(
        var("RUST_LOG").as_deref(),
        var("AWS_LAMBDA_LOG_LEVEL").as_deref(),
    );
    let filter = tracing_subscriber::EnvFilter::try_new(&directive)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false);
    let _ = if logging::json_format(var("AWS_LAMBDA_LOG_FORMAT").as_deref()) {
        let function_name = var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|| "streamload".into());
        builder
            .event_format(logging::LambdaJson::new(&function_name))
            .try_init()
    } else {
        // CloudWatch stamps each line itself.
        builder.without_time().try_init()
    };
}

/// Start-up: reads the configuration and builds every client once. A failure is reported to
/// the Lambda Runtime API as an init error (one line naming the cause) before it is returned.
pub async fn start() -> Result<AwsPipeline, StartError> {
    let result = async {
        let config = Config::from_env()?;
        build_pipeline(&config).await
    }
    .await;
    if let Err(e) = &result {
        tracing::error!(error = %e, "start-up failed");
        report_init_error(&e.to_string()).await;
    }
    result
}

/// Builds the AWS pipeline for `config`.
pub async fn build_pipeline(config: &Config) -> Result<AwsPipeline, StartError> {
    let sdk = streamload_aws::sdk_config().await;
    build_pipeline_with(config, &sdk).await
}

/// [`build_pipeline`] over a given SDK configuration (tests point it at a fault proxy).
pub async fn build_pipeline_with(
    config: &Config,
    sdk: &aws_config::SdkConfig,
) -> Result<AwsPipeline, StartError> {
    let sdk = sdk.clone();
    let routes = load_routes(config, &sdk).await?;
    // Routes without a table (index and lake only) never reach the database: with none, no
    // database is needed, and none is connected to.
    let table_route = routes.iter().find(|r| r.has_table());
    let rows = match (table_route, &config.database) {
        (None, _) => Rows::NoTables,
        (Some(route), DatabaseSource::Unset) => {
            return Err(StartError::NoDatabase(format!(
                "configuration: DATABASE_URL, DATABASE_SECRET_ARN or DATABASE_IAM_AUTH is required: route {:?} writes table {}",
                route.name,
                route.table_name()
            )))
        }
        (Some(_), _) => {
            let pg_options = database::connect_options(config, &sdk).await?;
            Rows::Postgres(Box::new(
                check_tables(PgRows::new(pg_options, &routes), &routes).await?,
            ))
        }
    };
    Ok(Pipeline {
        dedup: dedup_store(config, &sdk),
        rows,
        objects: object_store(config, &sdk),
        dead_letters: SqsDeadLetters::new(streamload_aws::sqs_client(&sdk), &config.dlq_url),
        search: search_index(config, &sdk, &routes).await?,
        settings: PipelineSettings {
            max_record_bytes: config.max_record_bytes,
            dedup_ttl_s: config.dedup_ttl_seconds,
            routes,
            dead_letter_prefix: config.dead_letter_prefix.clone(),
            finish_margin: config.finish_margin,
            wake_pacer: Some(&WAKE_PACER),
            ..PipelineSettings::default()
        },
    })
}

/// The route tables' start-up checks (and `auto_migrate`); a database unreachable now is
/// checked on its first connection instead.
async fn check_tables(rows: PgRows, routes: &Routes) -> Result<PgRows, StartError> {
    match rows.check_routes(routes).await {
        Ok(done) => {
            for ddl in done {
                tracing::info!(statement = %ddl, "schema migrated at start-up");
            }
        }
        // Unreachable now is not a mistake in the configuration: the first connection
        // runs the checks before any row is written.
        Err(PgError::Connect(why)) => {
            tracing::warn!(error = %why, "database unreachable at start-up; checking routes on first connect");
            rows.check_on_first_connect();
        }
        Err(e) => return Err(e.into()),
    }
    Ok(rows)
}

/// The table sink: PostgreSQL, or none when no route writes a table.
pub enum Rows {
    Postgres(Box<PgRows>),
    /// No route writes a table: nothing is ever upserted, and no database is configured.
    NoTables,
}

impl RowSink for Rows {
    async fn upsert(
        &self,
        rows: &[streamload_core::ports::Row<'_>],
        until_ms: i64,
    ) -> Result<streamload_core::ports::Upserted, streamload_core::error::PortError> {
        match self {
            Rows::Postgres(pg) => pg.upsert(rows, until_ms).await,
            Rows::NoTables if rows.is_empty() => Ok(Default::default()),
            Rows::NoTables => Err(streamload_core::error::PortError::permanent(
                "no route writes a table, and rows were sent for one",
            )),
        }
    }
}

/// The search index of the routes that name one, checked (or created, with the route's
/// `auto_migrate`) at start-up; `None` when no route names one.
async fn search_index(
    config: &Config,
    sdk: &aws_config::SdkConfig,
    routes: &Routes,
) -> Result<Option<std::sync::Arc<dyn streamload_core::ports::DynSearchIndex>>, StartError> {
    use streamload_core::ports::SearchIndex;
    use streamload_core::Classify;
    let indexed: Vec<_> = routes.iter().filter(|r| r.search.is_some()).collect();
    let Some(first) = indexed.first() else {
        return Ok(None);
    };
    let Some(settings) = &config.search else {
        return Err(StartError::Search(format!(
            "configuration: STREAMLOAD_SEARCH_URL is required: route {:?} names a search index",
            first.name
        )));
    };
    let auth = match &settings.auth {
        SearchAuthSource::None => streamload_aws::SearchAuth::None,
        SearchAuthSource::SigV4 => streamload_aws::SearchAuth::SigV4 { service: "es" },
        SearchAuthSource::Secret(arn) => {
            streamload_aws::search_secret(&streamload_aws::secrets_client(sdk), arn)
                .await
                .map_err(|e| StartError::Search(format!("STREAMLOAD_SEARCH_SECRET_ARN: {e}")))?
        }
    };
    let client = streamload_aws::SearchClient::new(&settings.url, auth, Some(sdk))
        .map_err(|why| StartError::Search(format!("STREAMLOAD_SEARCH_URL: {why}")))?;
    for route in indexed {
        let Some(plan) = &route.search else { continue };
        match client.prepare(&route.name, plan, route.auto_migrate).await {
            Ok(()) => {}
            // Unreachable now is not a mistake in the configuration: the first batches fail
            // their records (redelivered) until it answers.
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, route = %route.name, "search index unreachable at start-up; not checked");
            }
            Err(e) => return Err(StartError::Search(start_up_line(&route.name, &e.message))),
        }
    }
    Ok(Some(std::sync::Arc::new(client)))
}

/// A start-up check's refusal as one line naming the route, and, when the cluster refused the
/// credentials (HTTP 401 or 403), which settings give them.
fn start_up_line(route: &str, message: &str) -> String {
    let named = if message.starts_with("route ") {
        message.to_owned()
    } else {
        format!("route {route:?}: {message}")
    };
    if message.contains("HTTP 401") || message.contains("HTTP 403") {
        format!(
            "{named} (the cluster refused the loader's credentials: check STREAMLOAD_SEARCH_AUTH and the secret STREAMLOAD_SEARCH_SECRET_ARN names, or the role's access to the domain)"
        )
    } else {
        named
    }
}

/// The claims' store: conditional writes sent directly unless configured otherwise or the
/// endpoint needs the SDK's rules.
fn dedup_store(config: &Config, sdk: &aws_config::SdkConfig) -> DynamoDedup {
    let store = DynamoDedup::new(streamload_aws::dynamodb_client(sdk), &config.dedup_table);
    if config.dedup_client == CallClient::Sdk {
        return store;
    }
    match streamload_aws::PutItemClient::from_sdk(sdk) {
        Some(direct) => store.with_direct_writes(direct),
        None => {
            tracing::info!("claims go through the SDK client: its endpoint rules apply here");
            store
        }
    }
}

/// The objects' store: create-only writes sent directly unless configured otherwise or the
/// endpoint or bucket needs the SDK's rules.
fn object_store(config: &Config, sdk: &aws_config::SdkConfig) -> S3Objects {
    let store = S3Objects::new(streamload_aws::s3_client(sdk), &config.output_bucket);
    if config.objects_client == CallClient::Sdk {
        return store;
    }
    match streamload_aws::PutObjectClient::from_sdk(sdk, &config.output_bucket) {
        Some(direct) => store.with_direct_puts(direct),
        None => {
            tracing::info!(
                "object writes go through the SDK client: its endpoint rules apply here"
            );
            store
        }
    }
}

/// Worker threads of the function's runtime (`STREAMLOAD_WORKER_THREADS`); 0, the default,
/// is a current-thread runtime.
pub const WORKER_THREADS_VAR: &str = "STREAMLOAD_WORKER_THREADS";

/// Wake pacing of the current-thread runtime (`STREAMLOAD_WAKE_PACING`): `on`, the default
/// (four answers a wake-up), `off`, or a number of answers a wake-up (2–64).
pub const WAKE_PACING_VAR: &str = "STREAMLOAD_WAKE_PACING";

/// The process's one pacer: the pipeline counts its claim writes in flight here and the
/// runtime's park hook asks it how long to wait ([`streamload_core::pacing`]).
pub static WAKE_PACER: WakePacer = WakePacer::new(PacingConfig::DEFAULT);

/// How the runtime paces its wake-ups ([`WAKE_PACING_VAR`]; `None`: not at all). Start-up
/// code: a value other than `on`, `off` or a number from 2 to 64 is an error naming the
/// variable.
pub fn wake_pacing() -> Result<Option<PacingConfig>, ConfigError> {
    parse_wake_pacing(std::env::var(WAKE_PACING_VAR).ok().as_deref())
}

/// [`wake_pacing`] for a given value of [`WAKE_PACING_VAR`] (`None`: unset).
///
/// ```
/// use streamload_runtime::parse_wake_pacing;
/// use streamload_core::pacing::PacingConfig;
/// assert_eq!(parse_wake_pacing(None).unwrap(), Some(PacingConfig::DEFAULT));
/// assert_eq!(parse_wake_pacing(Some("off")).unwrap(), None);
/// assert_eq!(parse_wake_pacing(Some("8")).unwrap(), Some(PacingConfig::answers(8)));
/// assert!(parse_wake_pacing(Some("1")).is_err());
/// let e = parse_wake_pacing(Some("sometimes")).unwrap_err();
/// assert!(e.to_string().contains("STREAMLOAD_WAKE_PACING"), "{e}");
/// ```
pub fn parse_wake_pacing(value: Option<&str>) -> Result<Option<PacingConfig>, ConfigError> {
    let value = value.map(|v| v.trim().to_ascii_lowercase());
    match value.as_deref() {
        None | Some("" | "on" | "true") => Ok(Some(PacingConfig::DEFAULT)),
        Some("off" | "false") => Ok(None),
        Some(n) => match n.parse::<u32>() {
            Ok(answers @ 2..=64) => Ok(Some(PacingConfig::answers(answers))),
            _ => Err(ConfigError::Invalid {
                name: WAKE_PACING_VAR,
                why: "expected on, off or a number of answers a wake-up from 2 to 64".into(),
            }),
        },
    }
}

/// The function's async runtime. Lambda gives one invocation at a time to a sandbox with at
/// most a few vCPUs (a fraction of one below 1,769 MB), and the pipeline's work is one batch
/// waiting on many requests: a current-thread runtime runs it without the thread hand-offs
/// and futex wake-ups of a work-stealing pool (BENCHMARKS.md §5). `STREAMLOAD_WORKER_THREADS=N`
/// (N ≥ 1) asks for a multi-thread runtime with N workers instead. The current-thread runtime
/// paces its wake-ups while many claim writes are in flight ([`WAKE_PACING_VAR`],
/// [`streamload_core::pacing`]). Start-up code: a bad value is an error naming the variable.
pub fn async_runtime() -> Result<tokio::runtime::Runtime, ConfigError> {
    let threads = match std::env::var(WORKER_THREADS_VAR) {
        Err(_) => 0,
        Ok(v) if v.trim().is_empty() => 0,
        Ok(v) => v
            .trim()
            .parse::<usize>()
            .map_err(|_| ConfigError::Invalid {
                name: WORKER_THREADS_VAR,
                why: "not a number of threads".into(),
            })?,
    };
    let mut builder = runtime_builder(threads, wake_pacing()?);
    builder
        .enable_all()
        .build()
        .map_err(|e| ConfigError::Invalid {
            name: WORKER_THREADS_VAR,
            why: format!("the runtime could not start: {e}"),
        })
}

/// The builder [`async_runtime`] starts from: `threads` workers (0: current-thread) and, on
/// a current-thread runtime, wake pacing by `pacing` through [`WAKE_PACER`] (`None`: none).
pub fn runtime_builder(threads: usize, pacing: Option<PacingConfig>) -> tokio::runtime::Builder {
    if threads > 0 {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        return b;
    }
    let mut b = tokio::runtime::Builder::new_current_thread();
    if let Some(config) = pacing {
        WAKE_PACER.configure(config);
        // Called only when the thread has nothing left to run and is about to block on the
        // I/O driver: waiting here lets several answers arrive for one wake-up.
        b.on_thread_park(|| {
            let pause = WAKE_PACER.pause(Instant::now());
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        });
    }
    b
}

/// Posts `/runtime/init/error` when running under the Lambda Runtime API.
pub async fn report_init_error(message: &str) {
    if std::env::var("AWS_LAMBDA_RUNTIME_API").is_err() {
        return;
    }
    let Ok(client) = lambda_runtime_api_client::Client::builder().build() else {
        return;
    };
    let body = serde_json::json!({"errorMessage": message, "errorType": "Runtime.ConfigError"})
        .to_string();
    let request = lambda_runtime_api_client::build_request()
        .method("POST")
        .uri("/2018-06-01/runtime/init/error")
        .header("Lambda-Runtime-Function-Error-Type", "Runtime.ConfigError")
        .body(body.into());
    if let Ok(request) = request {
        let _ = client.call(request).await;
    }
}

/// Smallest value read as an epoch time in ms (2001-09-09). Lambda sends the deadline as epoch
/// ms; some local emulators (`cargo lambda watch` sends `600000`) send the timeout instead, which
/// would otherwise look like a deadline long past and fail every record.
const EPOCH_MS_FLOOR: u64 = 1_000_000_000_000;

fn deadline_ms(header_value: u64, now_ms: i64) -> i64 {
    if header_value < EPOCH_MS_FLOOR {
        now_ms + header_value as i64
    } else {
        header_value as i64
    }
}

fn invocation(ctx: &Context) -> Invocation {
    Invocation {
        attempt_id: ctx.request_id.clone(),
        deadline_ms: deadline_ms(ctx.deadline, epoch_ms()),
    }
}

fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs a decoded batch and answers with the lowest failed record of each unit, named by
/// `identify`. Logs one summary line and one EMF document.
pub async fn run_batch<D, R, O, Q>(
    pipeline: &Pipeline<D, R, O, Q>,
    batch: &Batch,
    inv: &Invocation,
    function_name: &str,
    identify: impl Fn(
        &streamload_core::record::SourceUnit,
        &streamload_core::Position,
    ) -> serde_json::Value,
) -> BatchItemFailures
where
    D: DedupStore,
    R: RowSink,
    O: ObjectSink,
    Q: DeadLetters,
{
    let margin = pipeline.settings.finish_margin.as_millis() as i64;
    let left = inv.deadline_ms - epoch_ms();
    if left <= margin {
        tracing::error!(
            finish_margin_ms = margin,
            time_left_ms = left,
            "FINISH_MARGIN_MS is not below the invocation's time left: every record will be reported failed; set it well below the function timeout"
        );
    }
    let report = pipeline.process(batch, inv).await;
    let s = &report.summary;
    tracing::info!(
        received = s.received,
        loaded = s.loaded,
        duplicates = s.duplicates,
        poison = s.poison,
        failed = s.failed,
        duration_ms = s.duration_ms,
        phases = %s.phases,
        "batch done"
    );
    println!("{}", s.emf(function_name, epoch_ms()));
    BatchItemFailures {
        batch_item_failures: report
            .failures
            .iter()
            .map(|(unit, position)| ItemFailure {
                item_identifier: identify(unit, position),
            })
            .collect(),
    }
}

fn function_name(ctx: &Context, fallback: &str) -> String {
    if ctx.env_config.function_name.is_empty() {
        fallback.to_owned()
    } else {
        ctx.env_config.function_name.clone()
    }
}

/// Why an invocation failed as a whole (the mapping retries the batch).
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error("no body was kept for request {0}")]
    MissingBody(String),
    #[error("the event is not UTF-8 JSON (invalid byte at offset {0})")]
    NotUtf8(usize),
}

/// The handler of both functions: decode the source's event, run the shared pipeline, answer
/// with the source's failure identifiers. `bodies` holds the event as Lambda sent it (see
/// [`raw_body`]); the runtime itself parsed only a placeholder.
pub async fn handle<S, D, R, O, Q>(
    pipeline: &Pipeline<D, R, O, Q>,
    bodies: &RawBodies,
    event: LambdaEvent<()>,
) -> Result<BatchItemFailures, lambda_runtime::Error>
where
    S: EventSource,
    D: DedupStore,
    R: RowSink,
    O: ObjectSink,
    Q: DeadLetters,
{
    let context = event.context;
    let _invocation = logging::Invocation::begin(&context.request_id);
    let body = bodies
        .take(&context.request_id)
        .ok_or_else(|| InvocationError::MissingBody(context.request_id.clone()))?;
    let text = std::str::from_utf8(&body).map_err(|e| InvocationError::NotUtf8(e.valid_up_to()))?;
    let batch = S::decode(text)?;
    // The records hold their decoded bytes; the event text is not needed past this point.
    drop(body);
    let name = function_name(&context, S::FUNCTION);
    Ok(run_batch(
        pipeline,
        &batch,
        &invocation(&context),
        &name,
        S::failure_identifier,
    )
    .await)
}

/// Serves invocations of source `S` from the Lambda Runtime API until the sandbox ends:
/// `lambda_runtime::run` with the body kept aside for the source's own single parse.
pub async fn run<S: EventSource>(pipeline: AwsPipeline) -> Result<(), lambda_runtime::Error> {
    if !streamload_core::heap::keep_freed_memory() {
        tracing::debug!("allocator keeps its defaults: freed batch buffers go back to the kernel");
    }
    let bodies = RawBodies::default();
    let (pipeline, kept) = (&pipeline, &bodies);
    let handler = lambda_runtime::service_fn(move |event: LambdaEvent<()>| async move {
        handle::<S, _, _, _, _>(pipeline, kept, event).await
    });
    lambda_runtime::Runtime::new(handler)
        .layer(lambda_runtime::layers::TracingLayer::new())
        .layer(bodies.clone())
        .run()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_prefix_overlapping_a_lake_prefix_is_refused_naming_the_variable() {
        let routes = Routes::builtin("events", "events/").unwrap();
        for bad in ["events/", "events/dead/", "ev", ""] {
            match check_dead_letter_prefix(&routes, bad) {
                Err(ConfigError::Invalid { name, why }) => {
                    assert_eq!(name, "DEAD_LETTER_PREFIX");
                    assert!(why.contains("route \"events\""), "{why}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(check_dead_letter_prefix(&routes, "dead-letter/").is_ok());
    }

    #[test]
    fn an_epoch_deadline_is_kept_and_an_emulator_timeout_is_made_absolute() {
        assert_eq!(deadline_ms(1_795_633_452_025, 5), 1_795_633_452_025);
        assert_eq!(deadline_ms(600_000, 1_795_633_452_025), 1_795_634_052_025);
    }
}
