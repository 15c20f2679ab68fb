//! Objects in S3: create-only puts (`If-None-Match: *`) and existence checks.
//!
//! The puts go through streamload's own signed client ([`PutObjectClient`]) where one is
//! given and through the SDK otherwise; either way their attempts are made here, under the
//! one retry policy.

use crate::error::classify_sdk_error;
use crate::put_item::conditional_write_attempts;
use crate::put_object::PutObjectClient;
use crate::{OBJECT_CALL_ATTEMPT_TIMEOUT, SMALL_CALL_ATTEMPT_TIMEOUT};
use aws_config::retry::RetryConfig;
use aws_sdk_s3::operation::head_object::HeadObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use bytes::Bytes;
use streamload_core::error::PortError;
use streamload_core::ports::{ObjectSink, PutOutcome};
use streamload_core::retry::SINK_RETRY;

#[derive(Clone)]
pub struct S3Objects {
    client: Client,
    /// The same client with the SDK's retries off, for the create-only writes whose
    /// attempts `put_new` makes itself (built once: a per-call config override costs every
    /// put a merge of the client's configuration).
    put_client: Client,
    /// The direct client of the create-only writes, where the endpoint allows one.
    direct: Option<std::sync::Arc<PutObjectClient>>,
    bucket: String,
    /// Longest attempt of a create-only write ([`OBJECT_CALL_ATTEMPT_TIMEOUT`]).
    attempt_timeout: std::time::Duration,
}

impl S3Objects {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        let put_client = Client::from_conf(
            client
                .config()
                .to_builder()
                .retry_config(RetryConfig::disabled())
                .build(),
        );
        Self {
            client,
            put_client,
            direct: None,
            bucket: bucket.into(),
            attempt_timeout: OBJECT_CALL_ATTEMPT_TIMEOUT,
        }
    }

    /// The same sink with its create-only writes and existence checks sent by `direct`.
    pub fn with_direct_puts(mut self, direct: PutObjectClient) -> Self {
        self.direct = Some(std::sync::Arc::new(direct));
        self
    }

    /// The same sink with a different attempt bound for writes (tests shorten it).
    pub fn with_attempt_timeout(mut self, attempt_timeout: std::time::Duration) -> Self {
        self.attempt_timeout = attempt_timeout;
        self
    }
}

impl ObjectSink for S3Objects {
    /// One create-only write, its attempts made here rather than by the SDK: the SDK would
    /// report only its last attempt's error, so a first attempt that timed out with its body
    /// sent (and may still be applied) followed by a `SlowDown` would read "not written", the
    /// claims would be released, and the late object plus the redelivery's would hold the
    /// events twice. [`conditional_write_attempts`] keeps the call's error ambiguous when any
    /// attempt may have been applied, and the pipeline's `HeadObject` then decides.
    async fn put_new(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
    ) -> Result<PutOutcome, PortError> {
        let written = conditional_write_attempts(SINK_RETRY, self.attempt_timeout, || {
            let body = body.clone();
            async move {
                if let Some(direct) = &self.direct {
                    return direct.put_attempt(key, &body, content_type).await;
                }
                let r = self
                    .put_client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .if_none_match("*")
                    .content_type(content_type)
                    .body(ByteStream::from(body))
                    .send()
                    .await;
                match r {
                    Ok(_) => Ok(PutOutcome::Created),
                    // 412: the key exists. Keys are unique per attempt, so it is our own
                    // earlier write.
                    Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => {
                        Ok(PutOutcome::AlreadyExists)
                    }
                    Err(e) => Err(classify_put_error(&e)),
                }
            }
        })
        .await?;
        Ok(written.answer)
    }

    async fn exists(&self, key: &str) -> Result<bool, PortError> {
        if let Some(direct) = &self.direct {
            // The same attempts as a write's; a read is never ambiguous, so only the retries
            // and the bound per attempt matter here.
            return conditional_write_attempts(SINK_RETRY, SMALL_CALL_ATTEMPT_TIMEOUT, || {
                direct.exists_attempt(key)
            })
            .await
            .map(|checked| checked.answer);
        }
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match e.as_service_error() {
                Some(HeadObjectError::NotFound(_)) => Ok(false),
                _ if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(false),
                _ => Err(classify_sdk_error("s3 HeadObject", &e)),
            },
        }
    }
}

/// A create-only PutObject's error. A 500 (`InternalError`) may come from a write that was
/// applied, so it is ambiguous like a lost answer; a 503 `SlowDown` is S3 refusing the
/// request before doing it, and a 4xx is a plain refusal.
fn classify_put_error(
    e: &aws_sdk_s3::error::SdkError<
        aws_sdk_s3::operation::put_object::PutObjectError,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
) -> PortError {
    let p = classify_sdk_error("s3 PutObject", e);
    match e.raw_response().map(|r| r.status().as_u16()) {
        Some(500) if !p.ambiguous => PortError::ambiguous(p.message),
        _ => p,
    }
}

/// Longest configuration object read at start-up: a route file is a few kilobytes; anything
/// this large is a wrong URI.
pub const MAX_CONFIG_OBJECT_BYTES: usize = 1024 * 1024;

/// Reads a small object whole (the route configuration at start-up). An error names the
/// bucket and key, never the content.
pub async fn read_object(client: &Client, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| {
            let p = classify_sdk_error("s3 GetObject", &e);
            format!("s3://{bucket}/{key}: {}", p.message)
        })?;
    if out
        .content_length()
        .is_some_and(|n| n as usize > MAX_CONFIG_OBJECT_BYTES)
    {
        return Err(format!(
            "s3://{bucket}/{key}: over {MAX_CONFIG_OBJECT_BYTES} bytes"
        ));
    }
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|_| format!("s3://{bucket}/{key}: the body could not be read"))?;
    Ok(bytes.into_bytes().to_vec())
}
