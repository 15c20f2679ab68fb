//! Objects in S3: create-only puts (`If-None-Match: *`) and existence checks.

use crate::error::classify_sdk_error;
use aws_sdk_s3::operation::head_object::HeadObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use streamload_core::error::PortError;
use streamload_core::ports::{ObjectSink, PutOutcome};

#[derive(Clone)]
pub struct S3Objects {
    client: Client,
    bucket: String,
}

impl S3Objects {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }
}

impl ObjectSink for S3Objects {
    async fn put_new(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<PutOutcome, PortError> {
        let r = self
            .client
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
            // 412: the key exists. Keys are unique per attempt, so it is our own earlier write.
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => {
                Ok(PutOutcome::AlreadyExists)
            }
            Err(e) => Err(classify_sdk_error("s3 PutObject", &e)),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool, PortError> {
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
