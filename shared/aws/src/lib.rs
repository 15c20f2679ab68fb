//! AWS adapters of streamload's ports: DynamoDB dedup claims, S3 objects, SQS dead letters,
//! and the database secret from Secrets Manager.
//!
//! Every client reaches AWS (or an emulator named by `AWS_ENDPOINT_URL`) through one shared
//! SDK configuration: rustls with ring, bounded connects and attempts, and the SDK's standard
//! retry strategy with the numbers of [`streamload_core::retry::SINK_RETRY`].
//!
//! Retry quota: the standard strategy pays for each retry from a token bucket shared by a
//! retry partition; under sustained errors (20% throttling, say) it drains, and from then on
//! nothing is retried at all — every error becomes a failed record. Batch work retries inside
//! each invocation's budget anyway (the pipeline's rounds are bounded by the deadline), so
//! each client gets its own partition with an unlimited bucket. Standard rather than adaptive
//! mode: adaptive adds a client-side rate limiter that sleeps before requests once it has seen
//! throttling, which spends the invocation's budget waiting; the pipeline's jittered rounds
//! already back off, and DynamoDB on-demand and S3 scale with the request rate.

mod dedup;
mod error;
mod http1;
mod objects;
mod put_item;
mod put_object;
mod queue;
mod rds_iam;
mod search_index;
mod secrets;
mod signing_keys;
mod sigv4;

pub use dedup::DynamoDedup;
pub use error::{classify_sdk_error, AwsError};
pub use objects::{read_object, S3Objects, MAX_CONFIG_OBJECT_BYTES};
pub use put_item::{Answered, AttributeText, PutAnswer, PutItemClient, POOL_IDLE_PER_HOST};
pub use put_object::{PutObjectClient, OBJECT_POOL_IDLE};
pub use queue::{SqsDeadLetters, SQS_MAX_BATCH_ENTRIES, SQS_MAX_MESSAGE_BYTES};
pub use rds_iam::{rds_auth_token, RdsIamToken};
pub use search_index::{SearchAuth, SearchClient, SEARCH_ATTEMPT_TIMEOUT};
pub use secrets::{database_secret, search_secret, secrets_client, DatabaseSecret};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::config::retry::{RetryPartition, TokenBucket};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use std::time::Duration;
use streamload_core::retry::SINK_RETRY;

/// Longest wait for a TCP and TLS connection to an AWS endpoint: connects inside a region take
/// milliseconds, so a slower one is a black hole worth abandoning for a fresh attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest single attempt of a DynamoDB or SQS call (small requests, answered in
/// milliseconds): a hung attempt is abandoned and retried while the invocation has time.
pub const SMALL_CALL_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest single attempt of an S3 call: a Parquet object of a 6 MB batch takes well under a
/// second to upload from Lambda, so 10 s leaves room for slow links without waiting forever.
pub const OBJECT_CALL_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

fn timeouts(attempt: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(attempt)
        .build()
}

/// A retry partition of its own with an unlimited retry quota (see the module docs).
fn retry_partition(name: &'static str) -> RetryPartition {
    RetryPartition::custom(name)
        .token_bucket(TokenBucket::unlimited())
        .build()
}

/// Loads the shared SDK configuration from the environment (region, credentials,
/// `AWS_ENDPOINT_URL`).
pub async fn sdk_config() -> SdkConfig {
    sdk_config_with_endpoint(None).await
}

/// [`sdk_config`] with an endpoint that overrides `AWS_ENDPOINT_URL` (tests put a fault
/// proxy there).
pub async fn sdk_config_with_endpoint(endpoint: Option<&str>) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let retry = RetryConfig::standard()
        .with_max_attempts(SINK_RETRY.max_attempts)
        .with_initial_backoff(SINK_RETRY.initial_backoff)
        .with_max_backoff(SINK_RETRY.max_backoff);
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .retry_config(retry)
        .timeout_config(timeouts(SMALL_CALL_ATTEMPT_TIMEOUT));
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// An S3 client; path-style addressing when an emulator endpoint is configured, since
/// emulators rarely serve virtual-hosted bucket names.
pub fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    let mut b = aws_sdk_s3::config::Builder::from(config)
        .timeout_config(timeouts(OBJECT_CALL_ATTEMPT_TIMEOUT))
        .retry_partition(retry_partition("streamload-s3"));
    if config.endpoint_url().is_some() {
        b = b.force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(b.build())
}

/// The DynamoDB client of the claims.
pub fn dynamodb_client(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    let b = aws_sdk_dynamodb::config::Builder::from(config)
        .retry_partition(retry_partition("streamload-dynamodb"));
    aws_sdk_dynamodb::Client::from_conf(b.build())
}

/// The SQS client of the dead letters.
pub fn sqs_client(config: &SdkConfig) -> aws_sdk_sqs::Client {
    let b = aws_sdk_sqs::config::Builder::from(config)
        .retry_partition(retry_partition("streamload-sqs"));
    aws_sdk_sqs::Client::from_conf(b.build())
}
