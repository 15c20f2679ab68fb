//! The objects' hot calls — the create-only S3 `PutObject` and the `HeadObject` of a
//! redelivered event's object — sent without the SDK's orchestrator.
//!
//! Every batch writes one Parquet object per source unit and event-time hour, so late data
//! spread over many hours writes many small objects, and the SDK's fixed cost per request (its
//! config bag and interceptors, endpoint rules, the flexible-checksum machinery, hyper's
//! request building) was most of a small object's CPU (BENCHMARKS.md §5, run M: ≈200–270 µs
//! per object). Here the request is built by hand like the claims' `PutItem`: signed by the
//! fixed-shape signer (`sigv4`, checked against `aws-sigv4` under S3's rules), with the body's
//! SHA-256 as `x-amz-content-sha256` (S3 checks it, so a body damaged on the way is refused,
//! never stored), sent as one buffer over kept-alive connections (`http1`).
//!
//! The existence checks of redelivered events (`HeadObject`) go the same way.
//!
//! One attempt per call; [`crate::S3Objects`] runs the attempts with the same ambiguity rules
//! as every conditional write. An answer means:
//! - 200: created; 412 `PreconditionFailed`: the key exists (keys are unique per attempt, so it
//!   is this invocation's own earlier write);
//! - 500 and any other 5xx but 503: may have been applied (ambiguous); 503 (`SlowDown`,
//!   `ServiceUnavailable`): refused before it was done, retried;
//! - 409 `ConditionalRequestConflict` and the other throttling codes: retried; any other 4xx:
//!   refused, named by its code;
//! - a connection that could not be made: retried; an answer lost after the request was sent:
//!   ambiguous.
//!
//! Used for `AWS_ENDPOINT_URL[_S3]` endpoints (path-style, as emulators serve them) and
//! standard regional endpoints (virtual-hosted, for a bucket name that is a plain DNS label);
//! [`PutObjectClient::from_sdk`] declines FIPS, dual-stack, GovCloud and isolated partitions,
//! directory buckets, ARNs and dotted bucket names, whose rules only the SDK knows.

use crate::error::RETRYABLE_CODES;
use crate::http1::{connect_to, Http1Pool, RequestBuf};
use crate::signing_keys::SigningKeys;
use crate::sigv4::{encode_path, sha256_hex, FixedShapeSigner, PathRequest, EMPTY_SHA256};
use aws_config::SdkConfig;
use bytes::Bytes;
use std::time::SystemTime;
use streamload_core::error::PortError;
use streamload_core::ports::PutOutcome;

/// SigV4 signing name of S3.
const SIGNING_NAME: &str = "s3";
/// Room for the request head's fixed text (the request line's method and version, header
/// names, `if-none-match`, the payload hash, the date and length) beside its variable parts.
const REQUEST_HEAD_BYTES: usize = 384;
/// Kept-alive connections to the endpoint: the pipeline's object writes in flight, and room
/// for the dead-letter archive written beside them.
pub const OBJECT_POOL_IDLE: usize = streamload_core::OBJECT_WRITE_CONCURRENCY + 4;
/// Longest bucket name S3 accepts.
const MAX_BUCKET_NAME_CHARS: usize = 63;

/// A create-only `PutObject` sender for one bucket.
pub struct PutObjectClient {
    http: Http1Pool,
    /// The endpoint's authority, as the `host` header carries and SigV4 signs it.
    host: String,
    /// What precedes the encoded key in the path: `/<bucket>/` path-style, `/`
    /// virtual-hosted.
    path_prefix: String,
    signer: FixedShapeSigner,
    keys: SigningKeys,
}

impl std::fmt::Debug for PutObjectClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PutObjectClient({}{})", self.host, self.path_prefix)
    }
}

/// Where a bucket's objects are written, as (`scheme`, host, path prefix), or `None` where
/// the SDK's rules must decide.
fn endpoint(sdk: &SdkConfig, region: &str, bucket: &str) -> Option<(String, String, String)> {
    if sdk.use_fips() == Some(true) || sdk.use_dual_stack() == Some(true) {
        return None;
    }
    if !plain_bucket_name(bucket) {
        return None;
    }
    let url = std::env::var("AWS_ENDPOINT_URL_S3")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| sdk.endpoint_url().map(str::to_owned));
    if let Some(url) = url {
        // An emulator, or a gateway: path-style, as `crate::s3_client` addresses it.
        let (scheme, authority) = url.trim_end_matches('/').split_once("://")?;
        if authority.is_empty() || authority.contains('/') {
            // A path in the endpoint is something only the SDK's rules handle.
            return None;
        }
        return Some((
            scheme.to_owned(),
            authority.to_owned(),
            format!("/{bucket}/"),
        ));
    }
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else if region.starts_with("us-gov-") || region.starts_with("us-iso") {
        return None;
    } else {
        "amazonaws.com"
    };
    Some((
        "https".to_owned(),
        format!("{bucket}.s3.{region}.{suffix}"),
        "/".to_owned(),
    ))
}

/// A general-purpose bucket whose name is one DNS label: lower-case letters, digits and
/// hyphens (no dots: a dotted name does not match S3's wildcard certificate), not a directory
/// bucket (`--x-s3`, which signs with session credentials) or an ARN.
fn plain_bucket_name(bucket: &str) -> bool {
    (3..=MAX_BUCKET_NAME_CHARS).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !bucket.starts_with('-')
        && !bucket.ends_with('-')
        && !bucket.ends_with("--x-s3")
}

/// The `<Code>` of an S3 XML error body, if it has one.
fn error_code(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    Some(&text[start..start + len])
}

impl PutObjectClient {
    /// The client for `sdk`'s region, endpoint and credentials writing into `bucket`; `None`
    /// when the endpoint or bucket is one only the SDK's rules resolve, or no region is set.
    pub fn from_sdk(sdk: &SdkConfig, bucket: &str) -> Option<Self> {
        let region = sdk.region()?.to_string();
        let (scheme, host, path_prefix) = endpoint(sdk, &region, bucket)?;
        let credentials = sdk.credentials_provider()?;
        let http = Http1Pool::new(connect_to(&scheme, &host)?, OBJECT_POOL_IDLE);
        Some(Self {
            http,
            host,
            path_prefix,
            signer: FixedShapeSigner::new(&region, SIGNING_NAME),
            keys: SigningKeys::new(credentials),
        })
    }

    /// One signed create-only attempt of `key` with `body`. The caller bounds its time and
    /// runs the retries (see the module docs for what each answer means).
    ///
    /// ```no_run
    /// # async fn demo(sdk: aws_config::SdkConfig) {
    /// use streamload_core::ports::PutOutcome;
    /// let client = streamload_aws::PutObjectClient::from_sdk(&sdk, "my-lake")
    ///     .expect("a plain endpoint and bucket");
    /// let body = bytes::Bytes::from_static(b"PAR1...");
    /// match client.put_attempt("out/dt=2026-12-05/hour=13/o.parquet", &body, "application/vnd.apache.parquet").await {
    ///     Ok(PutOutcome::Created) => {}
    ///     Ok(PutOutcome::AlreadyExists) => {} // our own earlier attempt landed
    ///     Err(e) => eprintln!("{}", e.message),
    /// }
    /// # }
    /// ```
    pub async fn put_attempt(
        &self,
        key: &str,
        body: &Bytes,
        content_type: &str,
    ) -> Result<PutOutcome, PortError> {
        let credentials = self.keys.get("s3 PutObject").await?;
        let keys = credentials.keys();
        let path = self.path_of(key);
        let payload_sha256 = sha256_hex(body);
        let signed = self.signer.sign_object_request(
            &keys,
            &self.host,
            &PathRequest {
                method: "PUT",
                path: &path,
                content_type: Some(content_type),
                create_only: true,
                payload_sha256: &payload_sha256,
            },
            SystemTime::now(),
        );
        let token = keys.session_token;
        let mut request = RequestBuf::new(
            "PUT",
            &path,
            &self.host,
            REQUEST_HEAD_BYTES
                + content_type.len()
                + signed.authorization.len()
                + token.map_or(0, str::len)
                + body.len(),
        );
        request
            .header("content-type", content_type)
            .header("if-none-match", "*")
            .header("x-amz-content-sha256", &payload_sha256)
            .signed(&signed, token);
        let request = request.finish(body);
        // The reasons name the failure (an I/O kind, a TLS alert, S3's code), never the key
        // or the body.
        let answer = self
            .http
            .send(&request)
            .await
            .map_err(|e| e.into_port_error("s3 PutObject"))?;
        answer_of(answer.status, &answer.body)
    }

    /// One signed `HeadObject` attempt: whether `key` exists. The caller bounds its time and
    /// runs the retries.
    pub async fn exists_attempt(&self, key: &str) -> Result<bool, PortError> {
        let credentials = self.keys.get("s3 HeadObject").await?;
        let keys = credentials.keys();
        let path = self.path_of(key);
        let signed = self.signer.sign_object_request(
            &keys,
            &self.host,
            &PathRequest {
                method: "HEAD",
                path: &path,
                content_type: None,
                create_only: false,
                payload_sha256: EMPTY_SHA256,
            },
            SystemTime::now(),
        );
        let token = keys.session_token;
        let mut request = RequestBuf::new(
            "HEAD",
            &path,
            &self.host,
            REQUEST_HEAD_BYTES + signed.authorization.len() + token.map_or(0, str::len),
        );
        request
            .header("x-amz-content-sha256", EMPTY_SHA256)
            .signed(&signed, token);
        let request = request.finish(b"");
        // A read applies nothing: a lost answer is only worth another attempt.
        let answer = self.http.send_head(&request).await.map_err(|e| {
            let mut e = e.into_port_error("s3 HeadObject");
            e.ambiguous = false;
            e
        })?;
        existence_of(answer.status)
    }

    /// `key`'s path: the bucket's prefix and the key, encoded.
    fn path_of(&self, key: &str) -> String {
        let mut path = String::with_capacity(self.path_prefix.len() + key.len() + 16);
        path.push_str(&self.path_prefix);
        path.push_str(&encode_path(key));
        path
    }
}

/// What an answer to `HeadObject` means: 200 found, 404 not; an answer to a `HEAD` has no
/// body, so errors are known by their status alone. A read applies nothing, so no error of it
/// is ambiguous.
fn existence_of(status: u16) -> Result<bool, PortError> {
    match status {
        200..=299 => Ok(true),
        404 => Ok(false),
        // Without s3:ListBucket S3 answers a missing key with 403, not 404.
        403 => Err(PortError::permanent(
            "s3 HeadObject: HTTP 403 (AccessDenied; a missing key reads so without s3:ListBucket)",
        )),
        408 | 409 | 429 | 500..=599 => Err(PortError::retryable(format!(
            "s3 HeadObject: HTTP {status}"
        ))),
        _ => Err(PortError::permanent(format!(
            "s3 HeadObject: HTTP {status}"
        ))),
    }
}

/// What an answer to a create-only `PutObject` means (see the module docs).
fn answer_of(status: u16, body: &[u8]) -> Result<PutOutcome, PortError> {
    match status {
        200..=299 => Ok(PutOutcome::Created),
        412 => Ok(PutOutcome::AlreadyExists),
        503 => Err(PortError::retryable(format!(
            "s3 PutObject: {}",
            error_code(body).unwrap_or("HTTP 503")
        ))),
        500..=599 => Err(PortError::ambiguous(format!(
            "s3 PutObject: {} (HTTP {status}; it may have been applied)",
            error_code(body).unwrap_or("no error code")
        ))),
        _ => {
            let code = error_code(body).unwrap_or("");
            let message = if code.is_empty() {
                format!("s3 PutObject: HTTP {status}")
            } else {
                format!("s3 PutObject: {code}")
            };
            if status == 409 || status == 429 || RETRYABLE_CODES.contains(&code) {
                Err(PortError::retryable(message))
            } else {
                Err(PortError::permanent(message))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_config::Region;
    use streamload_core::Classify;

    fn sdk(region: &str, endpoint: Option<&str>) -> SdkConfig {
        let mut b = SdkConfig::builder().region(Region::new(region.to_owned()));
        if let Some(url) = endpoint {
            b = b.endpoint_url(url);
        }
        b.build()
    }

    #[test]
    fn emulators_are_addressed_path_style_and_aws_virtual_hosted() {
        // AWS_ENDPOINT_URL_S3 is not set in unit tests.
        assert_eq!(
            endpoint(
                &sdk("eu-west-1", Some("http://127.0.0.1:5000/")),
                "eu-west-1",
                "lake"
            ),
            Some(("http".into(), "127.0.0.1:5000".into(), "/lake/".into()))
        );
        assert_eq!(
            endpoint(&sdk("eu-west-1", None), "eu-west-1", "my-lake-1"),
            Some((
                "https".into(),
                "my-lake-1.s3.eu-west-1.amazonaws.com".into(),
                "/".into()
            ))
        );
        assert_eq!(
            endpoint(&sdk("cn-north-1", None), "cn-north-1", "lake").map(|(_, host, _)| host),
            Some("lake.s3.cn-north-1.amazonaws.com.cn".into())
        );
    }

    #[test]
    fn buckets_and_endpoints_only_the_sdk_resolves_are_declined() {
        for bucket in [
            "my.dotted.bucket",
            "UpperCase",
            "ab",
            "express--use1-az4--x-s3",
            "arn:aws:s3:eu-west-1:123456789012:accesspoint/ap",
            "-leading",
        ] {
            assert_eq!(
                endpoint(&sdk("eu-west-1", None), "eu-west-1", bucket),
                None,
                "{bucket}"
            );
        }
        assert_eq!(
            endpoint(&sdk("us-gov-west-1", None), "us-gov-west-1", "lake"),
            None
        );
        let fips = SdkConfig::builder()
            .region(Region::new("us-east-1"))
            .use_fips(true)
            .build();
        assert_eq!(endpoint(&fips, "us-east-1", "lake"), None);
        assert_eq!(
            endpoint(
                &sdk("eu-west-1", Some("http://gw:8080/s3")),
                "eu-west-1",
                "lake"
            ),
            None
        );
    }

    #[test]
    fn existence_answers_mean_found_missing_retry_or_refused() {
        assert!(matches!(existence_of(200), Ok(true)));
        assert!(matches!(existence_of(404), Ok(false)));
        for status in [500, 503, 429] {
            let e = existence_of(status).unwrap_err();
            assert!(e.is_retryable() && !e.ambiguous, "{status}: {e:?}");
        }
        let e = existence_of(403).unwrap_err();
        assert!(
            !e.is_retryable() && e.message.contains("ListBucket"),
            "{e:?}"
        );
    }

    #[test]
    fn answers_mean_created_exists_retry_maybe_applied_or_refused() {
        let xml = |code: &str| {
            format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>")
        };
        assert!(matches!(answer_of(200, b""), Ok(PutOutcome::Created)));
        assert!(matches!(
            answer_of(412, xml("PreconditionFailed").as_bytes()),
            Ok(PutOutcome::AlreadyExists)
        ));
        // 500: may have been applied
        let e = answer_of(500, xml("InternalError").as_bytes()).unwrap_err();
        assert!(e.ambiguous && e.is_retryable(), "{e:?}");
        // A gateway's 502 without a body: may have been applied too
        let e = answer_of(502, b"").unwrap_err();
        assert!(e.ambiguous, "{e:?}");
        // 503 SlowDown: refused before it was done
        let e = answer_of(503, xml("SlowDown").as_bytes()).unwrap_err();
        assert!(!e.ambiguous && e.is_retryable(), "{e:?}");
        assert!(e.message.contains("SlowDown"));
        // 409: a concurrent conditional write on the key; retried
        let e = answer_of(409, xml("ConditionalRequestConflict").as_bytes()).unwrap_err();
        assert!(!e.ambiguous && e.is_retryable(), "{e:?}");
        // 403: refused, named by its code
        let e = answer_of(403, xml("AccessDenied").as_bytes()).unwrap_err();
        assert!(!e.is_retryable(), "{e:?}");
        assert_eq!(e.message, "s3 PutObject: AccessDenied");
        let e = answer_of(400, xml("RequestTimeout").as_bytes()).unwrap_err();
        assert!(e.is_retryable(), "{e:?}");
    }
}
