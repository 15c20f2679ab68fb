//! Log lines as Lambda's own log controls ask for them.
//!
//! Lambda passes a function's `LoggingConfig` to a custom runtime as `AWS_LAMBDA_LOG_FORMAT`
//! (`JSON` or `Text`) and `AWS_LAMBDA_LOG_LEVEL` (TRACE … FATAL); the runtime must honour
//! them itself. `RUST_LOG`, when set, still wins (a developer's override).
//!
//! A JSON line carries, at the top level, what an on-call query filters by: `timestamp`,
//! `level`, `message`, the event's own fields, and `requestId`, `functionName` and
//! `coldStart` of the invocation being served (lines outside an invocation have no
//! `requestId`). Fields hold counts, names, SQLSTATEs — never payloads or row values.

use std::sync::RwLock;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The invocation being served: one at a time per sandbox.
struct Current {
    request_id: String,
    cold_start: bool,
}

static CURRENT: RwLock<Option<Current>> = RwLock::new(None);
static SERVED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The invocation being logged, for as long as it lives (its drop ends it, whatever path
/// the handler leaves by).
pub struct Invocation(());

impl Invocation {
    pub fn begin(request_id: &str) -> Self {
        begin_invocation(request_id);
        Invocation(())
    }
}

impl Drop for Invocation {
    fn drop(&mut self) {
        end_invocation();
    }
}

/// Marks the start of an invocation: its lines carry `request_id`, and the first
/// invocation of the process is the cold start.
pub fn begin_invocation(request_id: &str) {
    let cold_start = !SERVED.swap(true, std::sync::atomic::Ordering::SeqCst);
    if let Ok(mut current) = CURRENT.write() {
        *current = Some(Current {
            request_id: request_id.to_owned(),
            cold_start,
        });
    }
}

/// Marks its end: later lines belong to no invocation.
pub fn end_invocation() {
    if let Ok(mut current) = CURRENT.write() {
        *current = None;
    }
}

/// streamload's own crates: a DEBUG or TRACE level applies to them only.
const OWN_CRATES: [&str; 9] = [
    "streamload_core",
    "streamload_aws",
    "streamload_postgres",
    "streamload_runtime",
    "streamload_table",
    "streamload_iceberg",
    "kinesis_loader",
    "kafka_loader",
    "table_committer",
];

/// Crates that log requests, answers or rows at DEBUG or TRACE — the AWS SDK's wire logs
/// carry request bodies (claims, dead letters with raw bytes), the PostgreSQL client its
/// parameters, the Lambda runtime the event: held at INFO whatever `RUST_LOG` says, so no
/// payload or row value reaches the logs at any level.
const PAYLOAD_CRATES: [&str; 21] = [
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http",
    "aws_smithy_http_client",
    "aws_smithy_types",
    "aws_sdk_dynamodb",
    "aws_sdk_s3",
    "aws_sdk_sqs",
    "aws_sdk_secretsmanager",
    "aws_sdk_glue",
    "aws_sdk_s3tables",
    "iceberg",
    "opendal",
    "reqwest",
    "sqlx",
    "aws_config",
    "hyper",
    "hyper_util",
    "h2",
    "tokio_postgres",
    "lambda_runtime",
];

/// The filter directive: `RUST_LOG` if set, else Lambda's level (FATAL is `error`: tracing
/// has no level above it; DEBUG and TRACE for streamload's own crates only, the rest at
/// INFO), else `info`. Either way the crates that log payloads stay at INFO at most.
pub fn filter_directive(rust_log: Option<&str>, lambda_level: Option<&str>) -> String {
    let caps: Vec<String> = PAYLOAD_CRATES.iter().map(|c| format!("{c}=info")).collect();
    let caps = caps.join(",");
    if let Some(directive) = rust_log.filter(|d| !d.trim().is_empty()) {
        return format!("{},{caps}", directive.trim());
    }
    let own = |level: &str| {
        let own: Vec<String> = OWN_CRATES.iter().map(|c| format!("{c}={level}")).collect();
        format!("info,{}", own.join(","))
    };
    match lambda_level
        .map(|l| l.trim().to_ascii_uppercase())
        .as_deref()
    {
        Some("TRACE") => own("trace"),
        Some("DEBUG") => own("debug"),
        Some("WARN") => "warn".to_owned(),
        Some("ERROR") | Some("FATAL") => "error".to_owned(),
        _ => "info".to_owned(),
    }
}

/// Whether lines are JSON: unless Lambda asks for `Text`.
pub fn json_format(lambda_format: Option<&str>) -> bool {
    !lambda_format.is_some_and(|f| f.trim().eq_ignore_ascii_case("text"))
}

/// One JSON object per line with the invocation's fields at the top level.
pub struct LambdaJson {
    function_name: String,
}

impl LambdaJson {
    pub fn new(function_name: &str) -> Self {
        Self {
            function_name: function_name.to_owned(),
        }
    }
}

struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
}

impl<S, N> FormatEvent<S, N> for LambdaJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = serde_json::Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into(),
        );
        line.insert("level".into(), event.metadata().level().as_str().into());
        event.record(&mut Fields(&mut line));
        if let Ok(current) = CURRENT.read() {
            if let Some(c) = current.as_ref() {
                line.insert("requestId".into(), c.request_id.clone().into());
                line.insert("coldStart".into(), c.cold_start.into());
            }
        }
        line.insert("functionName".into(), self.function_name.clone().into());
        writeln!(writer, "{}", serde_json::Value::Object(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lambda_levels_map_to_filters_and_rust_log_wins() {
        assert!(filter_directive(None, Some("DEBUG")).starts_with("info,streamload_core=debug,"));
        assert_eq!(filter_directive(None, Some("FATAL")), "error");
        assert_eq!(filter_directive(None, None), "info");
        assert!(
            filter_directive(Some("warn,streamload=debug"), Some("ERROR"))
                .starts_with("warn,streamload=debug,")
        );
    }

    #[test]
    fn trace_reaches_no_crate_that_logs_payloads() {
        // Given the most verbose settings a user can give
        let lambda = filter_directive(None, Some("TRACE"));
        let rust_log = filter_directive(Some("trace"), None);
        // When the filters are built (both parse)
        for directive in [&lambda, &rust_log] {
            tracing_subscriber::EnvFilter::try_new(directive.as_str()).unwrap();
        }
        // Then Lambda's TRACE traces streamload's own crates only: the rest stay at INFO
        let parts: Vec<&str> = lambda.split(',').collect();
        assert_eq!(parts[0], "info", "{lambda}");
        assert!(parts[1..].iter().all(|p| p.starts_with("streamload_")
            || p.starts_with("kinesis_loader")
            || p.starts_with("kafka_loader")
            || p.starts_with("table_committer")));
        assert!(parts.contains(&"streamload_aws=trace"));
        assert!(parts.contains(&"table_committer=trace"));
        // And a RUST_LOG of trace keeps the AWS SDK's wire logs (request bodies), the
        // PostgreSQL client and the Lambda runtime at INFO
        for crate_name in [
            "aws_smithy_runtime",
            "tokio_postgres",
            "hyper",
            "lambda_runtime",
            "sqlx",
            "opendal",
        ] {
            assert!(
                rust_log.contains(&format!(",{crate_name}=info")),
                "{rust_log}"
            );
        }
        assert!(json_format(None) && json_format(Some("JSON")) && !json_format(Some("Text")));
    }

    #[test]
    fn each_line_carries_request_id_function_name_and_cold_start_at_the_top() {
        // Given the JSON formatter writing into a buffer
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(LambdaJson::new("kinesis-loader"))
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            // When two invocations log, and a line is written between them
            begin_invocation("req-1");
            tracing::info!(received = 3, loaded = 2, "batch done");
            end_invocation();
            tracing::warn!("between invocations");
            begin_invocation("req-2");
            tracing::info!("second");
            end_invocation();
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // Then the fields are top-level, and only the first invocation is the cold start
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["requestId"], "req-1");
        assert_eq!(lines[0]["coldStart"], true);
        assert_eq!(lines[0]["functionName"], "kinesis-loader");
        assert_eq!(lines[0]["message"], "batch done");
        assert_eq!(lines[0]["received"], 3);
        assert_eq!(lines[0]["level"], "INFO");
        assert!(lines[1].get("requestId").is_none());
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[2]["requestId"], "req-2");
        assert_eq!(lines[2]["coldStart"], false);
    }
}
