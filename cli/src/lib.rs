//! The `streamload` command's library: a producer of test streams ([`produce`]), a local
//! event-source mapping with AWS's semantics that runs the real function binaries
//! ([`esm`], [`source`], [`sandbox`], [`run`]), an exactly-once audit ([`verify`]), and the
//! on-call tools ([`ops`]: redrive dead letters, replay on-failure messages; `status`).
//!
//! Nothing here is linked into the Lambda functions: the functions depend on
//! `streamload-runtime`, never on this crate.

pub mod esm;
pub mod init;
pub mod kafka_group;
pub mod ops;
pub mod produce;
pub mod queue;
pub mod run;
pub mod sandbox;
pub mod source;
pub mod verify;
pub mod verify_index;

use std::sync::Arc;

/// Why a command failed, in words that say what to do.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{operation} failed: {message}\n  (is the AWS endpoint up? `make stack` starts the local one and writes .stack/env; `set -a; source .stack/env; set +a`)")]
    Aws { operation: String, message: String },
    #[error("kafka: {0}\n  (is the broker up? `make stack` starts the local one; STREAMLOAD_KAFKA_BROKER names it)")]
    Kafka(String),
    #[error("postgres: {0}")]
    Postgres(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl CliError {
    pub fn aws<E: std::fmt::Debug>(operation: &str, e: &E) -> Self {
        let text = format!("{e:?}");
        // The SDK's debug text is long; its first clause names the cause.
        let message = text.chars().take(300).collect();
        CliError::Aws {
            operation: operation.to_owned(),
            message,
        }
    }
}

/// A stream named on the command line: `kinesis://<stream>` or `kafka://<topic>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Kinesis(String),
    Kafka(String),
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = |n: &str| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        };
        match s.split_once("://") {
            Some(("kinesis", name)) if ok(name) => Ok(Target::Kinesis(name.to_owned())),
            Some(("kafka", name)) if ok(name) => Ok(Target::Kafka(name.to_owned())),
            _ => Err(format!(
                "{s:?}: expected kinesis://<stream> or kafka://<topic> (letters, digits, . _ -)"
            )),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Kinesis(n) => write!(f, "kinesis://{n}"),
            Target::Kafka(n) => write!(f, "kafka://{n}"),
        }
    }
}

/// The Kafka bootstrap address: `--broker`, else STREAMLOAD_KAFKA_BROKER, else localhost.
pub fn broker(flag: Option<&str>) -> String {
    flag.map(str::to_owned)
        .or_else(|| std::env::var("STREAMLOAD_KAFKA_BROKER").ok())
        .unwrap_or_else(|| "127.0.0.1:9092".into())
}

/// A Kafka client, or an error naming the address tried.
pub async fn kafka_client(broker: &str) -> Result<Arc<rskafka::client::Client>, CliError> {
    let connect = rskafka::client::ClientBuilder::new(vec![broker.to_owned()]).build();
    match tokio::time::timeout(std::time::Duration::from_secs(10), connect).await {
        Ok(Ok(c)) => Ok(Arc::new(c)),
        Ok(Err(e)) => Err(CliError::Kafka(format!("no broker at {broker}: {e}"))),
        Err(_) => Err(CliError::Kafka(format!(
            "no broker answered at {broker} within 10 s"
        ))),
    }
}

/// The partition count of `topic`.
pub async fn kafka_partitions(
    client: &rskafka::client::Client,
    topic: &str,
) -> Result<Vec<i32>, CliError> {
    let topics = client
        .list_topics()
        .await
        .map_err(|e| CliError::Kafka(format!("list topics: {e}")))?;
    let t = topics
        .into_iter()
        .find(|t| t.name == topic)
        .ok_or_else(|| {
            CliError::Kafka(format!(
                "topic {topic:?} does not exist (produce --create makes it)"
            ))
        })?;
    let mut partitions: Vec<i32> = t.partitions.into_iter().collect();
    partitions.sort_unstable();
    Ok(partitions)
}

/// A Kinesis client over the shared SDK configuration (`AWS_ENDPOINT_URL` honoured).
pub async fn kinesis_client() -> (aws_sdk_kinesis::Client, String) {
    let sdk = streamload_aws::sdk_config().await;
    let region = sdk
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "us-east-1".into());
    (aws_sdk_kinesis::Client::new(&sdk), region)
}

/// Messages in a queue (approximate, as SQS counts them: visible + in flight).
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<(u64, u64), CliError> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| CliError::aws("sqs GetQueueAttributes", &e))?;
    let attrs = out.attributes.unwrap_or_default();
    let get = |a: A| attrs.get(&a).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok((
        get(A::ApproximateNumberOfMessages),
        get(A::ApproximateNumberOfMessagesNotVisible),
    ))
}

/// The client of one partition of `topic`.
pub async fn kafka_partition_client(
    client: &rskafka::client::Client,
    topic: &str,
    partition: i32,
) -> Result<rskafka::client::partition::PartitionClient, CliError> {
    client
        .partition_client(
            topic,
            partition,
            rskafka::client::partition::UnknownTopicHandling::Retry,
        )
        .await
        .map_err(|e| CliError::Kafka(format!("partition {topic}-{partition}: {e}")))
}
