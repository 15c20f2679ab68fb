//! The claim's one hot call — a conditional DynamoDB `PutItem` — sent without the SDK's
//! orchestrator.
//!
//! Every new event costs one conditional write, so the CPU of that one request is most of the
//! loader's CPU per record. Through the SDK each request builds a type-erased config bag,
//! runs a dozen interceptors, resolves the endpoint through the rules engine, serialises the
//! item map and walks its retry bookkeeping; measured from outside (BENCHMARKS.md §5) that
//! was most of the function's CPU. Here the request is a JSON body written straight from the
//! claim, signed by a SigV4 signer for this one request shape (`sigv4`, checked against
//! `aws-sigv4`), sent as one buffer by a minimal HTTP/1.1 client (`http1`) over kept-alive TLS
//! connections (rustls with the platform roots, as the SDK's client) sized for the claim
//! concurrency; the answer is read for the two things the pipeline needs: written, or refused
//! with the holder's item.
//!
//! Retries follow [`SINK_RETRY`] (the one policy) with the SDK's standard rules: throttling and
//! 5xx answers, connect failures, timeouts and lost answers are retried; other 4xx are final.
//! One thing is stricter than the SDK: once any attempt may have been applied (its answer was
//! lost, timed out or was a 5xx), the call's final error stays *ambiguous* even if a later
//! attempt was refused by throttling, so the pipeline never mistakes a landed claim for one
//! that was never written.
//!
//! Used for `AWS_ENDPOINT_URL[_DYNAMODB]` endpoints and standard regional endpoints; with FIPS
//! or dual-stack endpoints configured, [`PutItemClient::from_sdk`] declines and the SDK client
//! is used (as it is with `STREAMLOAD_DEDUP_CLIENT=sdk`).

use crate::error::RETRYABLE_CODES;
use crate::http1::{connect_to, Http1Pool, RequestBuf};
use crate::signing_keys::SigningKeys;
use crate::sigv4::FixedShapeSigner;
use crate::SMALL_CALL_ATTEMPT_TIMEOUT;
use aws_config::SdkConfig;
use bytes::Bytes;
use serde::Deserialize;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};
use streamload_core::error::PortError;
use streamload_core::retry::{RetryPolicy, SINK_RETRY};
use streamload_core::Classify;

/// The JSON protocol's target header of the call.
const TARGET: &str = "DynamoDB_20120810.PutItem";
/// Content type of DynamoDB's JSON 1.0 protocol.
const CONTENT_TYPE: &str = "application/x-amz-json-1.0";
/// SigV4 signing name of DynamoDB.
const SIGNING_NAME: &str = "dynamodb";
/// Room for the request head's fixed text (method, header names, the content type, target,
/// date and length) beside its variable parts.
const REQUEST_HEAD_BYTES: usize = 256;
/// Kept-alive connections per endpoint: the pipeline's claim concurrency plus room for the
/// existence checks and releases running beside it.
pub const POOL_IDLE_PER_HOST: usize = streamload_core::CLAIM_CONCURRENCY + 8;

/// One attribute value as DynamoDB's JSON carries it; only the kinds a claim holds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub enum AttributeText {
    S(String),
    N(String),
}

/// What a conditional `PutItem` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutAnswer {
    /// The item is written.
    Written,
    /// The condition failed; the item that refused it (`ReturnValuesOnConditionCheckFailure =
    /// ALL_OLD`), if the key held one.
    Refused(Option<HashMap<String, AttributeText>>),
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "__type", default)]
    kind: String,
    #[serde(rename = "Item", default, deserialize_with = "claim_attributes")]
    item: Option<HashMap<String, AttributeText>>,
}

/// One attribute of a returned item: a kind a claim holds, or any other (a `BOOL`, a set, a
/// map an operator or another tool added), which is skipped rather than failing the answer:
/// an unparsed answer would fail its record on every delivery.
#[derive(Deserialize)]
#[serde(untagged)]
enum AnyAttribute {
    Claim(AttributeText),
    Other(serde::de::IgnoredAny),
}

/// The item's claim attributes; attributes of other kinds are left out.
fn claim_attributes<'de, D>(d: D) -> Result<Option<HashMap<String, AttributeText>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let item: Option<HashMap<String, AnyAttribute>> = Deserialize::deserialize(d)?;
    Ok(item.map(|item| {
        item.into_iter()
            .filter_map(|(k, v)| match v {
                AnyAttribute::Claim(a) => Some((k, a)),
                AnyAttribute::Other(_) => None,
            })
            .collect()
    }))
}

/// A conditional-`PutItem` sender for one table's endpoint.
pub struct PutItemClient {
    http: Http1Pool,
    /// `scheme://authority/`
    url: String,
    /// The url's authority, as the `host` header carries and SigV4 signs it.
    host: String,
    region: String,
    signer: FixedShapeSigner,
    keys: SigningKeys,
    retry: RetryPolicy,
    attempt_timeout: Duration,
}

impl std::fmt::Debug for PutItemClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PutItemClient({} in {})", self.url, self.region)
    }
}

/// Where DynamoDB is for this configuration, or `None` where the SDK's rules must decide.
fn endpoint(sdk: &SdkConfig, region: &str) -> Option<String> {
    if sdk.use_fips() == Some(true) || sdk.use_dual_stack() == Some(true) {
        return None;
    }
    let url = std::env::var("AWS_ENDPOINT_URL_DYNAMODB")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| sdk.endpoint_url().map(str::to_owned));
    if let Some(url) = url {
        return Some(format!("{}/", url.trim_end_matches('/')));
    }
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else if region.starts_with("us-gov-") || region.starts_with("us-iso") {
        // GovCloud and the isolated partitions have rules of their own: the SDK knows them.
        return None;
    } else {
        "amazonaws.com"
    };
    Some(format!("https://dynamodb.{region}.{suffix}/"))
}

impl PutItemClient {
    /// The client for `sdk`'s region, endpoint and credentials; `None` when the endpoint is
    /// one only the SDK's rules resolve (FIPS, dual-stack, GovCloud), or no region is set.
    pub fn from_sdk(sdk: &SdkConfig) -> Option<Self> {
        let region = sdk.region()?.to_string();
        let url = endpoint(sdk, &region)?;
        let credentials = sdk.credentials_provider()?;
        let (scheme, host) = url.split_once("://")?;
        let host = host.trim_end_matches('/').to_owned();
        if host.is_empty() || host.contains('/') {
            // A path in the endpoint is something only the SDK's rules handle.
            return None;
        }
        let http = Http1Pool::new(connect_to(scheme, &host)?, POOL_IDLE_PER_HOST);
        Some(Self {
            http,
            signer: FixedShapeSigner::new(&region, SIGNING_NAME),
            host,
            url,
            region,
            keys: SigningKeys::new(credentials),
            retry: SINK_RETRY,
            attempt_timeout: SMALL_CALL_ATTEMPT_TIMEOUT,
        })
    }

    /// One signed attempt. `Err` carries whether the request may have been applied.
    async fn attempt(&self, body: &Bytes) -> Result<PutAnswer, PortError> {
        let credentials = self.keys.get("dynamodb PutItem").await?;
        let keys = credentials.keys();
        let signed = self.signer.sign(
            &keys,
            &self.host,
            CONTENT_TYPE,
            TARGET,
            body,
            SystemTime::now(),
        );
        // The request as one buffer: the head, with the headers the signature covers and
        // the body's length, then the body.
        let token = keys.session_token;
        let mut request = RequestBuf::new(
            "POST",
            "/",
            &self.host,
            REQUEST_HEAD_BYTES
                + signed.authorization.len()
                + token.map_or(0, str::len)
                + body.len(),
        );
        request
            .header("content-type", CONTENT_TYPE)
            .header("x-amz-target", TARGET)
            .signed(&signed, token);
        let request = request.finish(body);
        let answer = self
            .http
            .send(&request)
            .await
            .map_err(|e| e.into_port_error("dynamodb PutItem"))?;
        let status = answer.status;
        let bytes = answer.body;
        if (200..300).contains(&status) {
            return Ok(PutAnswer::Written);
        }
        if status >= 500 {
            // A 5xx may come after the write was applied.
            return Err(PortError::ambiguous(format!(
                "dynamodb PutItem: HTTP {}",
                status
            )));
        }
        let error: ErrorBody = serde_json::from_slice(&bytes).map_err(|_| {
            PortError::retryable(format!(
                "dynamodb PutItem: HTTP {} without a readable error",
                status
            ))
        })?;
        let code = error.kind.rsplit('#').next().unwrap_or("");
        if code == "ConditionalCheckFailedException" {
            return Ok(PutAnswer::Refused(error.item));
        }
        let message = format!("dynamodb PutItem: {code}");
        if RETRYABLE_CODES.contains(&code) {
            Err(PortError::retryable(message))
        } else {
            Err(PortError::permanent(message))
        }
    }

    /// Sends one `PutItem` request body (DynamoDB JSON), retrying per [`SINK_RETRY`].
    ///
    /// ```no_run
    /// # async fn demo(sdk: aws_config::SdkConfig) {
    /// let client = streamload_aws::PutItemClient::from_sdk(&sdk).expect("a plain endpoint");
    /// let body = br#"{"TableName":"dedup","Item":{"pk":{"S":"ev:1"}},
    ///     "ConditionExpression":"attribute_not_exists(pk)"}"#;
    /// let answer = client.put(bytes::Bytes::from_static(body)).await;
    /// # }
    /// ```
    pub async fn put(&self, body: Bytes) -> Result<PutAnswer, PortError> {
        Ok(self.put_answered(body).await?.answer)
    }

    /// [`PutItemClient::put`], saying too whether an attempt before the answer may have been
    /// applied (its answer lost): a refusal then does not prove that attempt never lands.
    pub async fn put_answered(&self, body: Bytes) -> Result<Answered<PutAnswer>, PortError> {
        conditional_write_attempts(self.retry, self.attempt_timeout, || self.attempt(&body)).await
    }
}

/// An answer, and whether an earlier attempt of the same call may have been applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered<T> {
    pub answer: T,
    /// An attempt before the one answered lost its answer (a timeout, a 5xx, a closed
    /// connection): it may have been applied, or may still be.
    pub after_lost_attempt: bool,
}

/// Runs a conditional write's attempts: retryable errors are retried after the policy's
/// backoff, each attempt bounded by `attempt_timeout` (a timeout may have been applied). If
/// any attempt may have been applied, the final error is ambiguous whatever the last attempt
/// said (see the module docs). Used for the direct client and, with the SDK's own retries
/// turned off, for the SDK client's conditional writes.
pub(crate) async fn conditional_write_attempts<T, F, Fut>(
    retry: RetryPolicy,
    attempt_timeout: Duration,
    mut attempt: F,
) -> Result<Answered<T>, PortError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PortError>>,
{
    let mut maybe_applied = false;
    let mut n = 1;
    loop {
        let error = match tokio::time::timeout(attempt_timeout, attempt()).await {
            Ok(Ok(answer)) => {
                return Ok(Answered {
                    answer,
                    after_lost_attempt: maybe_applied,
                })
            }
            Ok(Err(e)) => e,
            Err(_) => PortError::ambiguous("attempt timed out (it may have been applied)"),
        };
        maybe_applied |= error.ambiguous;
        if !error.is_retryable() || n >= retry.max_attempts {
            return Err(if maybe_applied && !error.ambiguous {
                PortError::ambiguous(format!(
                    "{} (an earlier attempt may have been applied)",
                    error.message
                ))
            } else {
                error
            });
        }
        tokio::time::sleep(retry.backoff(n)).await;
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_config::Region;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    const QUICK: RetryPolicy = RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
    };

    /// Runs the attempts over a script of answers; returns the result and attempts made.
    async fn run(script: Vec<Result<u8, PortError>>) -> (Result<Answered<u8>, PortError>, u32) {
        let made = AtomicU32::new(0);
        let script = Mutex::new(script.into_iter());
        let r = conditional_write_attempts(QUICK, Duration::from_secs(5), || {
            made.fetch_add(1, Ordering::SeqCst);
            let next = script
                .lock()
                .unwrap()
                .next()
                .expect("no more answers scripted");
            async move { next }
        })
        .await;
        (r, made.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn an_attempt_that_may_have_been_applied_keeps_the_final_error_ambiguous() {
        // Given a lost answer, then throttling to the last attempt
        let throttled = || {
            Err(PortError::retryable(
                "dynamodb PutItem: ThrottlingException",
            ))
        };
        let (r, made) = run(vec![
            Err(PortError::ambiguous("lost")),
            throttled(),
            throttled(),
            throttled(),
        ])
        .await;
        // Then every attempt ran and the error says the write may have landed
        let e = r.unwrap_err();
        assert_eq!(made, 4);
        assert!(e.ambiguous && e.is_retryable(), "{e:?}");
        assert!(e.message.contains("earlier attempt may have been applied"));
    }

    #[tokio::test]
    async fn throttling_alone_stays_a_plain_retryable_error_and_success_ends_the_attempts() {
        let throttled = || Err(PortError::retryable("throttled"));
        let (r, made) = run(vec![throttled(), throttled(), throttled(), throttled()]).await;
        let e = r.unwrap_err();
        assert_eq!(made, 4);
        assert!(!e.ambiguous && e.is_retryable());

        let (r, made) = run(vec![throttled(), Ok(7)]).await;
        let answered = r.unwrap();
        assert_eq!((answered.answer, made), (7, 2));
        assert!(!answered.after_lost_attempt);
    }

    #[tokio::test]
    async fn an_answer_after_a_lost_attempt_says_so() {
        // Given a lost answer, then an answer (a refusal, say)
        let (r, made) = run(vec![Err(PortError::ambiguous("lost")), Ok(3)]).await;
        // Then the answer comes with the news that the first attempt may still land
        let answered = r.unwrap();
        assert_eq!((answered.answer, made), (3, 2));
        assert!(answered.after_lost_attempt);
    }

    #[tokio::test]
    async fn a_permanent_error_is_not_retried() {
        let (r, made) = run(vec![Err(PortError::permanent("ValidationException"))]).await;
        assert_eq!(made, 1);
        assert!(!r.unwrap_err().is_retryable());
    }

    fn sdk(region: &str, endpoint: Option<&str>) -> SdkConfig {
        let mut b = SdkConfig::builder().region(Region::new(region.to_owned()));
        if let Some(url) = endpoint {
            b = b.endpoint_url(url);
        }
        b.build()
    }

    #[test]
    fn the_endpoint_is_the_configured_url_or_the_regional_one_and_the_sdk_keeps_special_ones() {
        // AWS_ENDPOINT_URL_DYNAMODB is not set in unit tests.
        assert_eq!(
            endpoint(
                &sdk("eu-west-1", Some("http://127.0.0.1:5050/")),
                "eu-west-1"
            )
            .as_deref(),
            Some("http://127.0.0.1:5050/")
        );
        assert_eq!(
            endpoint(&sdk("eu-west-1", None), "eu-west-1").as_deref(),
            Some("https://dynamodb.eu-west-1.amazonaws.com/")
        );
        assert_eq!(
            endpoint(&sdk("cn-north-1", None), "cn-north-1").as_deref(),
            Some("https://dynamodb.cn-north-1.amazonaws.com.cn/")
        );
        assert_eq!(endpoint(&sdk("us-gov-west-1", None), "us-gov-west-1"), None);
        let fips = SdkConfig::builder()
            .region(Region::new("us-east-1"))
            .use_fips(true)
            .build();
        assert_eq!(endpoint(&fips, "us-east-1"), None);
    }

    #[test]
    fn a_refusal_whose_item_holds_attributes_of_other_kinds_still_names_the_claim() {
        // Given a refusal whose held item carries a BOOL and a string set beside the claim
        let body =
            br#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
            "Item":{"pk":{"S":"rt:o:1"},"claim_owner":{"S":"req-1"},"lease_until":{"N":"5"},
            "object_key":{"S":"o/k.parquet"},"expires_at":{"N":"9"},
            "audited":{"BOOL":true},"tags":{"SS":["a","b"]},"note":{"M":{"x":{"NULL":true}}}}}"#;
        // When it is read
        let error: ErrorBody = serde_json::from_slice(body).expect("readable");
        // Then the claim's attributes are there and the others are left out
        let item = error.item.expect("an item");
        assert_eq!(item.get("pk"), Some(&AttributeText::S("rt:o:1".into())));
        assert_eq!(item.get("lease_until"), Some(&AttributeText::N("5".into())));
        assert_eq!(item.len(), 5);
    }
}
