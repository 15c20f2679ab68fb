//! `streamload init`: everything a route file needs to run locally, made in one command — the
//! lake bucket, the dedup table (key `pk`, TTL on `expires_at`), the dead-letter queue and the
//! on-failure queue, optionally the stream or topic and each route's table — then the
//! environment the loader and `streamload run` read, written to a file and printed.
//!
//! Every step is idempotent: a resource that exists is used as it is, so `init` can be run
//! again after an edit of the route file (a table that exists is left alone; the loader's
//! start-up check then says what does not fit, or `auto_migrate` adds the missing columns).

use std::path::{Path, PathBuf};

use streamload_core::route::{quote, Merge, Route, Routes};

use crate::CliError;

/// What `init` makes, and where.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The route file (TOML), checked as the loader checks it.
    pub routes: PathBuf,
    /// The name of the bucket, dedup table and queues (`<name>-dlq`, `<name>-on-failure`).
    pub name: String,
    /// The loader's connection string (for `--create-tables`, and written to the env file).
    pub database_url: Option<String>,
    /// Create each route's table when it does not exist.
    pub create_tables: bool,
    /// Where to write the environment.
    pub env_file: PathBuf,
}

/// The resources made, and the environment that points at them.
#[derive(Debug, Clone, Default)]
pub struct Made {
    pub env: Vec<(String, String)>,
    /// One line per thing made or found.
    pub steps: Vec<String>,
}

/// Reads and compiles a route file; a mistake is one line per problem, naming route and
/// column, as at the loader's start-up.
pub fn read_routes(path: &Path) -> Result<Routes, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("route file {}: {e}", path.display())))?;
    let file: streamload_core::route::ConfigFile = toml::from_str(&text).map_err(|e| {
        CliError::Usage(format!(
            "route file {}: {}",
            path.display(),
            e.to_string().trim()
        ))
    })?;
    Routes::compile(&file).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
}

/// `CREATE SCHEMA/TABLE IF NOT EXISTS` for `route`'s table: its table columns in their types
/// (`NOT NULL` where required), the key as the primary key, and the `updated_at_column`.
///
/// ```
/// use streamload_core::route::{ConfigFile, Routes};
/// let file: ConfigFile = toml::from_str(r#"
///     [[route]]
///     name = "readings"
///     source = "*"
///     table = "iot.readings"
///     key = ["device"]
///     merge = { newest_by = "seq" }
///     [[route.column]]
///     name = "device"
///     from = "/device"
///     type = "text"
///     required = true
///     [[route.column]]
///     name = "seq"
///     from = "/seq"
///     type = "bigint"
///     required = true
/// "#).unwrap();
/// let routes = Routes::compile(&file).unwrap();
/// let ddl = streamload_cli::init::table_ddl(routes.get(0));
/// assert!(ddl.contains(r#"CREATE TABLE IF NOT EXISTS "iot"."readings""#));
/// assert!(ddl.contains(r#"PRIMARY KEY ("device")"#));
/// ```
pub fn table_ddl(route: &Route) -> String {
    let mut columns: Vec<String> = route
        .table_columns()
        .map(|(i, c)| {
            let not_null = if route.not_null(i) { " NOT NULL" } else { "" };
            format!("{} {}{not_null}", quote(&c.name), c.ty.sql_type())
        })
        .collect();
    if let Some(u) = &route.updated_at_column {
        columns.push(format!("{} timestamptz NOT NULL DEFAULT now()", quote(u)));
    }
    let key: Vec<String> = route
        .key
        .iter()
        .map(|&i| quote(&route.columns[i].name))
        .collect();
    columns.push(format!("PRIMARY KEY ({})", key.join(", ")));
    let schema = match route.table.as_ref().and_then(|t| t.0.as_ref()) {
        Some(s) => format!("CREATE SCHEMA IF NOT EXISTS {};\n", quote(s)),
        None => String::new(),
    };
    format!(
        "{schema}CREATE TABLE IF NOT EXISTS {} (\n  {}\n);",
        route.quoted_table(),
        columns.join(",\n  ")
    )
}

/// A one-line description of a route for `init`'s report.
fn describe(route: &Route) -> String {
    let merge = match route.merge {
        Merge::KeepFirst => "keep-first".to_owned(),
        Merge::NewestBy(i) => format!("newest by {}", route.columns[i].name),
    };
    format!(
        "route {:?}: table {}, lake s3://…/{}, {merge}",
        route.name,
        route.table_name(),
        route.lake_prefix
    )
}

/// Makes what `options` asks for against the AWS endpoint of the environment
/// (`AWS_ENDPOINT_URL`: the local stack's moto, or LocalStack) and the database.
pub async fn init(options: &InitOptions) -> Result<Made, CliError> {
    let routes = read_routes(&options.routes)?;
    let mut made = Made::default();
    for route in routes.iter() {
        made.steps.push(describe(route));
    }
    let sdk = streamload_aws::sdk_config().await;
    let name = &options.name;

    // The lake bucket.
    let s3 = streamload_aws::s3_client(&sdk);
    match s3.create_bucket().bucket(name).send().await {
        Ok(_) => made.steps.push(format!("bucket {name}: created")),
        Err(e)
            if e.as_service_error().is_some_and(|e| {
                e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists()
            }) =>
        {
            made.steps.push(format!("bucket {name}: exists"))
        }
        Err(e) => return Err(CliError::aws("s3 CreateBucket", &e)),
    }

    // The dedup table: key `pk` (string), on demand, TTL on `expires_at`.
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        TimeToLiveSpecification,
    };
    let attribute = AttributeDefinition::builder()
        .attribute_name("pk")
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let key = KeySchemaElement::builder()
        .attribute_name("pk")
        .key_type(KeyType::Hash)
        .build()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    match ddb
        .create_table()
        .table_name(name)
        .attribute_definitions(attribute)
        .key_schema(key)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
    {
        Ok(_) => made.steps.push(format!("dedup table {name}: created")),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            made.steps.push(format!("dedup table {name}: exists"))
        }
        Err(e) => return Err(CliError::aws("dynamodb CreateTable", &e)),
    }
    let ttl = TimeToLiveSpecification::builder()
        .attribute_name("expires_at")
        .enabled(true)
        .build()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    // Already on (a second init) is refused by DynamoDB with a validation error: fine.
    let _ = ddb
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(ttl)
        .send()
        .await;

    // The queues (CreateQueue is idempotent for the same attributes).
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = |suffix: &str| {
        let sqs = sqs.clone();
        let queue_name = format!("{name}-{suffix}");
        async move {
            sqs.create_queue()
                .queue_name(&queue_name)
                .send()
                .await
                .map_err(|e| CliError::aws("sqs CreateQueue", &e))
                .map(|q| (queue_name, q.queue_url.unwrap_or_default()))
        }
    };
    let (dlq_name, dlq) = queue("dlq").await?;
    made.steps
        .push(format!("dead-letter queue {dlq_name}: ready"));
    let (on_failure_name, on_failure) = queue("on-failure").await?;
    made.steps
        .push(format!("on-failure queue {on_failure_name}: ready"));

    // The tables.
    if options.create_tables {
        let url = options.database_url.as_deref().ok_or_else(|| {
            CliError::Usage(
                "--create-tables needs DATABASE_URL (the local stack's .stack/env sets it)".into(),
            )
        })?;
        let client = connect(url).await?;
        for route in routes.iter().filter(|r| r.has_table()) {
            client.batch_execute(&table_ddl(route)).await.map_err(|e| {
                CliError::Postgres(format!(
                    "create table {} of route {:?}: {}",
                    route.table_name(),
                    route.name,
                    e.as_db_error()
                        .map(|d| d.message().to_owned())
                        .unwrap_or_else(|| e.to_string())
                ))
            })?;
            made.steps
                .push(format!("table {}: ready", route.table_name()));
        }
    }

    let config = std::fs::canonicalize(&options.routes)?;
    made.env = vec![
        ("STREAMLOAD_CONFIG".into(), config.display().to_string()),
        ("DEDUP_TABLE".into(), name.clone()),
        ("OUTPUT_BUCKET".into(), name.clone()),
        ("DLQ_URL".into(), dlq),
        ("ON_FAILURE_URL".into(), on_failure),
    ];
    if let Some(url) = &options.database_url {
        made.env.push(("DATABASE_URL".into(), url.clone()));
    }
    if let Some(dir) = options
        .env_file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&options.env_file, env_text(&made.env))?;
    Ok(made)
}

/// `export NAME='value'` lines, each value quoted for a POSIX shell.
pub fn env_text(env: &[(String, String)]) -> String {
    env.iter()
        .map(|(k, v)| format!("export {k}='{}'\n", v.replace('\'', "'\\''")))
        .collect()
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, CliError> {
    let options = streamload_postgres::ConnectOptions::parse(url)
        .map_err(|e| CliError::Postgres(format!("DATABASE_URL: {e}")))?;
    let tls = options
        .tls_settings()
        .connector()
        .map_err(|e| CliError::Postgres(e.to_string()))?;
    let (client, conn) = options.config().connect(tls).await.map_err(|e| {
        CliError::Postgres(format!(
            "connect: {e} (locally, DATABASE_URL needs ?sslmode=disable for a plaintext server; the local stack's .stack/env sets it)"
        ))
    })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_table_holds_each_table_column_in_its_type_with_the_key_as_primary_key() {
        // Given a route with a numeric, a lake-only column and an updated_at column
        let file: streamload_core::route::ConfigFile = toml::from_str(
            r#"
            [[route]]
            name = "orders"
            source = "*"
            table = "orders"
            key = ["id"]
            updated_at_column = "loaded_at"
            [[route.column]]
            name = "id"
            from = "/id"
            type = "uuid"
            required = true
            [[route.column]]
            name = "total"
            from = "/total"
            type = "numeric"
            precision = 12
            scale = 2
            [[route.column]]
            name = "raw"
            from = ""
            type = "jsonb"
            lake_only = true
            "#,
        )
        .unwrap();
        let routes = Routes::compile(&file).unwrap();
        // When its table's DDL is made
        let ddl = table_ddl(routes.get(0));
        // Then it has the typed columns, not the lake-only one, and the key
        assert_eq!(
            ddl,
            "CREATE TABLE IF NOT EXISTS \"orders\" (\n  \"id\" uuid NOT NULL,\n  \"total\" numeric(12, 2),\n  \"loaded_at\" timestamptz NOT NULL DEFAULT now(),\n  PRIMARY KEY (\"id\")\n);"
        );
    }

    #[test]
    fn env_values_are_quoted_for_the_shell() {
        let text = env_text(&[("A".into(), "it's".into())]);
        assert_eq!(text, "export A='it'\\''s'\n");
    }
}
