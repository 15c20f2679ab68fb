//! AWS adapters of streamload's ports: DynamoDB dedup claims, S3 objects, SQS dead letters,
//! and the database secret from Secrets Manager.
//!
//! Every client reaches AWS (or an emulator named by `AWS_ENDPOINT_URL`) through one shared
//! SDK configuration: rustls with ring, and the SDK's standard retry strategy with the numbers
//! of [`streamload_core::retry::SINK_RETRY`].

mod dedup;
mod error;
mod objects;
mod queue;
mod secrets;

pub use dedup::DynamoDedup;
pub use error::{classify_sdk_error, AwsError};
pub use objects::S3Objects;
pub use queue::{SqsDeadLetters, SQS_MAX_MESSAGE_BYTES};
pub use secrets::{database_secret, DatabaseSecret};

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use streamload_core::retry::SINK_RETRY;

/// Loads the shared SDK configuration from the environment (region, credentials,
/// `AWS_ENDPOINT_URL`).
pub async fn sdk_config() -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let retry = RetryConfig::standard()
        .with_max_attempts(SINK_RETRY.max_attempts)
        .with_initial_backoff(SINK_RETRY.initial_backoff)
        .with_max_backoff(SINK_RETRY.max_backoff);
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .retry_config(retry)
        .load()
        .await
}

/// An S3 client; path-style addressing when an emulator endpoint is configured, since
/// emulators rarely serve virtual-hosted bucket names.
pub fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    let mut b = aws_sdk_s3::config::Builder::from(config);
    if config.endpoint_url().is_some() {
        b = b.force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(b.build())
}
