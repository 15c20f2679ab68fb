//! The HTTP fault proxy against the real AWS endpoint: faults are on the wire, and the SDK's
//! own retries run against them.

use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
use aws_sdk_dynamodb::types::AttributeValue;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use streamload_tests::fault_proxy::{Fault, FaultProxy, Rule};
use streamload_tests::streamload_core::retry::SINK_RETRY;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique lowercase resource name: pid + time + counter.
fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
        % 1_000_000_000;
    format!("slfp{tag}{}x{t}x{n}", std::process::id())
}

fn upstream() -> String {
    std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL is not set: source .stack/env (make stack) first")
}

/// A proxy in front of the AWS endpoint and a fresh DynamoDB table (`pk` string), created
/// through the proxy.
struct Fixture {
    proxy: FaultProxy,
    sdk: aws_config::SdkConfig,
    /// Through the proxy, with the shared SDK retry strategy.
    ddb: aws_sdk_dynamodb::Client,
    /// Straight to the endpoint, to look at what was really applied.
    direct: aws_sdk_dynamodb::Client,
    table: String,
}

/// A DynamoDB client through `proxy`; `retry` overrides the shared retry strategy.
fn proxied_ddb(
    sdk: &aws_config::SdkConfig,
    proxy: &FaultProxy,
    retry: Option<RetryConfig>,
) -> aws_sdk_dynamodb::Client {
    let mut b = aws_sdk_dynamodb::config::Builder::from(sdk).endpoint_url(proxy.endpoint());
    if let Some(r) = retry {
        b = b.retry_config(r);
    }
    aws_sdk_dynamodb::Client::from_conf(b.build())
}

impl Fixture {
    async fn new(tag: &str) -> Self {
        let proxy = FaultProxy::start(&upstream()).await;
        let sdk = streamload_aws::sdk_config().await;
        let f = Self {
            ddb: proxied_ddb(&sdk, &proxy, None),
            direct: aws_sdk_dynamodb::Client::new(&sdk),
            proxy,
            sdk,
            table: unique(tag),
        };
        streamload_tests::create_dedup_table(&f.ddb, &f.table).await;
        f
    }

    /// A DynamoDB client through the proxy; `retry` overrides the shared retry strategy.
    fn ddb_client(&self, retry: Option<RetryConfig>) -> aws_sdk_dynamodb::Client {
        proxied_ddb(&self.sdk, &self.proxy, retry)
    }

    fn s3_client(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::from(&self.sdk)
            .endpoint_url(self.proxy.endpoint())
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    fn sqs_client(&self) -> aws_sdk_sqs::Client {
        let conf = aws_sdk_sqs::config::Builder::from(&self.sdk)
            .endpoint_url(self.proxy.endpoint())
            .build();
        aws_sdk_sqs::Client::from_conf(conf)
    }

    /// Whether the item is in the table, read straight from the endpoint.
    async fn exists(&self, pk: &str) -> bool {
        self.direct
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.into()))
            .consistent_read(true)
            .send()
            .await
            .expect("direct get")
            .item
            .is_some()
    }
}

/// A conditional create: PutItem with `attribute_not_exists(pk)`.
async fn put_new(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
) -> Result<PutItemOutput, SdkError<PutItemError>> {
    ddb.put_item()
        .table_name(table)
        .item("pk", AttributeValue::S(pk.into()))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await
}

fn is_condition_failed(r: &Result<PutItemOutput, SdkError<PutItemError>>) -> bool {
    matches!(r, Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()))
}

const PUT: &str = "DynamoDB.PutItem";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_requests_through_and_counts_them_per_operation() {
    // Given a proxy with no rules and a table created through it
    let f = Fixture::new("pass").await;
    // When an item is put and read back through the proxy
    f.ddb
        .put_item()
        .table_name(&f.table)
        .item("pk", AttributeValue::S("a".into()))
        .item("v", AttributeValue::N("42".into()))
        .send()
        .await
        .expect("put through the proxy");
    let got = f
        .ddb
        .get_item()
        .table_name(&f.table)
        .key("pk", AttributeValue::S("a".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("get through the proxy");
    // Then the item round-trips and every request is counted once, none faulted
    assert_eq!(
        got.item.and_then(|i| i.get("v").cloned()),
        Some(AttributeValue::N("42".into()))
    );
    let counts = f.proxy.counts();
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        vec![
            ("DynamoDB.CreateTable".to_owned(), (1, 0)),
            ("DynamoDB.GetItem".to_owned(), (1, 0)),
            (PUT.to_owned(), (1, 0)),
        ]
    );
    assert_eq!(f.proxy.seen(PUT), 1);
    assert_eq!(f.proxy.faulted(PUT), 0);
    assert_eq!(f.proxy.seen("DynamoDB.DeleteItem"), 0);

    // When a bucket, an object and a message go through the proxy
    let s3 = f.s3_client();
    let bucket = unique("b");
    streamload_tests::create_bucket(&s3, &bucket).await;
    s3.put_object()
        .bucket(&bucket)
        .key("dir/o.txt")
        .body(b"hello".to_vec().into())
        .send()
        .await
        .expect("put object through the proxy");
    let head = s3
        .head_object()
        .bucket(&bucket)
        .key("dir/o.txt")
        .send()
        .await
        .unwrap();
    let body = s3
        .get_object()
        .bucket(&bucket)
        .key("dir/o.txt")
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let sqs = f.sqs_client();
    let queue_url = sqs
        .create_queue()
        .queue_name(unique("q"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    sqs.send_message()
        .queue_url(&queue_url)
        .message_body("m1")
        .send()
        .await
        .unwrap();
    // Then they round-trip (a HEAD keeps upstream's content-length) and are named per
    // operation
    assert_eq!(head.content_length, Some(5));
    assert_eq!(&body[..], b"hello");
    for op in [
        "S3.PutBucket",
        "S3.PutObject",
        "S3.HeadObject",
        "S3.GetObject",
        "SQS.CreateQueue",
        "SQS.SendMessage",
    ] {
        assert_eq!(f.proxy.counts().get(op), Some(&(1, 0)), "{op}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kits_table_creation_takes_its_own_applied_attempt_as_made() {
    // Given a proxy that applies the next CreateTable and answers it with a 500
    let f = Fixture::new("mk").await;
    f.proxy
        .add(Rule::once("DynamoDB.CreateTable", Fault::LoseAnswer500));
    let table = unique("mk2");
    let before = f.proxy.seen("DynamoDB.CreateTable"); // the fixture's own table
                                                       // When the kit creates a table through it
    streamload_tests::create_dedup_table(&f.ddb, &table).await;
    // Then the SDK's retry met "already exists" and the table is there
    assert_eq!(f.proxy.seen("DynamoDB.CreateTable") - before, 2);
    assert_eq!(f.proxy.faulted("DynamoDB.CreateTable"), 1);
    f.direct
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .expect("the table exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_500_answer_is_retried_and_meets_the_applied_first_attempt() {
    // Given the first PutItem's answer replaced by a 500 after it was applied
    let f = Fixture::new("l500").await;
    f.proxy.add(Rule::once(PUT, Fault::LoseAnswer500));
    // When a conditional create is sent
    let r = put_new(&f.ddb, &f.table, "k").await;
    // Then the SDK retried by itself, and the retry met its own applied first attempt
    assert!(is_condition_failed(&r), "{r:?}");
    assert_eq!((f.proxy.seen(PUT), f.proxy.faulted(PUT)), (2, 1));
    assert!(f.exists("k").await, "the first attempt was applied");

    // Given the same fault, When the SDK may not retry,
    // Then it reports the service's InternalServerError
    f.proxy.add(Rule::once(PUT, Fault::LoseAnswer500));
    let no_retry = f.ddb_client(Some(RetryConfig::disabled()));
    let r = put_new(&no_retry, &f.table, "k2").await;
    let e = r.expect_err("the answer was lost");
    assert!(matches!(e, SdkError::ServiceError(_)), "{e:?}");
    assert_eq!(e.code(), Some("InternalServerError"));
    assert!(f.exists("k2").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_is_a_dispatch_failure_the_sdk_retries() {
    // Given the first PutItem applied, then its connection closed without an answer
    let f = Fixture::new("lclose").await;
    f.proxy.add(Rule::once(PUT, Fault::LoseAnswerClose));
    // When a conditional create is sent
    let r = put_new(&f.ddb, &f.table, "k").await;
    // Then the SDK retried, and the retry met the applied first attempt
    assert!(is_condition_failed(&r), "{r:?}");
    assert_eq!((f.proxy.seen(PUT), f.proxy.faulted(PUT)), (2, 1));
    assert!(f.exists("k").await, "the first attempt was applied");

    // Given the same fault, When the SDK may not retry, Then it is a dispatch failure the
    // connector classifies as transient (hyper's IncompleteMessage: not `is_io()`)
    f.proxy.add(Rule::once(PUT, Fault::LoseAnswerClose));
    let no_retry = f.ddb_client(Some(RetryConfig::disabled()));
    let e = put_new(&no_retry, &f.table, "k2")
        .await
        .expect_err("no answer");
    match &e {
        SdkError::DispatchFailure(d) => {
            assert!(!d.is_timeout(), "{d:?}");
            assert_eq!(
                format!("{:?}", d.as_other()),
                "Some(TransientError)",
                "{d:?}"
            );
        }
        other => panic!("expected a dispatch failure, got {other:?}"),
    }
    assert!(f.exists("k2").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_request_never_completes_until_released() {
    // Given the first PutItem black-holed
    let f = Fixture::new("hang").await;
    f.proxy.add(Rule::once(PUT, Fault::Hang));
    let (ddb, table) = (f.ddb.clone(), f.table.clone());
    let mut call = tokio::spawn(async move { put_new(&ddb, &table, "k").await });
    // When the caller waits 2 s
    let waited = tokio::time::timeout(Duration::from_secs(2), &mut call).await;
    // Then the call has not completed and nothing was applied
    assert!(waited.is_err(), "a hung call must not complete: {waited:?}");
    assert!(!f.exists("k").await, "a hung request is never forwarded");
    assert_eq!((f.proxy.seen(PUT), f.proxy.faulted(PUT)), (1, 1));

    // When the hung request is released
    f.proxy.release_hung();
    let r = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("released")
        .unwrap();
    // Then its connection closes, the SDK retries, and the retry (not faulted) applies
    assert!(r.is_ok(), "{r:?}");
    assert_eq!((f.proxy.seen(PUT), f.proxy.faulted(PUT)), (2, 1));
    assert!(f.exists("k").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_answers_in_each_services_format_until_attempts_run_out() {
    let f = Fixture::new("thr").await;
    let attempts = SINK_RETRY.max_attempts as usize;

    // Given every S3 PutObject throttled
    let bucket = unique("b");
    streamload_tests::create_bucket(&streamload_aws::s3_client(&f.sdk), &bucket).await;
    f.proxy.add(Rule::always("S3.PutObject", Fault::Throttle));
    // When an object is put through the proxy
    let e = f
        .s3_client()
        .put_object()
        .bucket(&bucket)
        .key("k/x.bin")
        .body(b"hello".to_vec().into())
        .send()
        .await
        .expect_err("throttled");
    // Then the SDK retried up to its attempts and returns S3's SlowDown; nothing was written
    assert_eq!(e.code(), Some("SlowDown"), "{e:?}");
    assert!(f.proxy.seen("S3.PutObject") > 1);
    assert_eq!(f.proxy.seen("S3.PutObject"), attempts);
    assert_eq!(f.proxy.faulted("S3.PutObject"), attempts);
    let head = streamload_aws::s3_client(&f.sdk)
        .head_object()
        .bucket(&bucket)
        .key("k/x.bin")
        .send()
        .await;
    assert!(head.is_err(), "a throttled put is not forwarded");

    // Given every DynamoDB PutItem throttled, When a put is sent,
    // Then DynamoDB's ThrottlingException after every attempt
    f.proxy.add(Rule::always(PUT, Fault::Throttle));
    let e = put_new(&f.ddb, &f.table, "k").await.expect_err("throttled");
    assert_eq!(e.code(), Some("ThrottlingException"), "{e:?}");
    assert_eq!(f.proxy.seen(PUT), attempts);
    assert!(!f.exists("k").await);

    // Given every SQS SendMessage throttled, When a message is sent,
    // Then SQS's ThrottlingException after every attempt
    let queue_url = aws_sdk_sqs::Client::new(&f.sdk)
        .create_queue()
        .queue_name(unique("q"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    f.proxy
        .add(Rule::always("SQS.SendMessage", Fault::Throttle));
    let e = f
        .sqs_client()
        .send_message()
        .queue_url(&queue_url)
        .message_body("m")
        .send()
        .await
        .expect_err("throttled");
    assert_eq!(e.code(), Some("ThrottlingException"), "{e:?}");
    assert_eq!(f.proxy.seen("SQS.SendMessage"), attempts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_answer_in_each_services_format() {
    let f = Fixture::new("err").await;
    let attempts = SINK_RETRY.max_attempts as usize;
    // Given S3 PutObject, DynamoDB PutItem and SQS SendMessage always failing with a 500
    let bucket = unique("b");
    streamload_tests::create_bucket(&streamload_aws::s3_client(&f.sdk), &bucket).await;
    let queue_url = aws_sdk_sqs::Client::new(&f.sdk)
        .create_queue()
        .queue_name(unique("q"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    f.proxy.add(Rule::always("*", Fault::ServerError));
    // When each is called through the proxy, Then each gets its service's error code,
    // after every attempt
    let s3 = f
        .s3_client()
        .put_object()
        .bucket(&bucket)
        .key("k")
        .body(b"x".to_vec().into())
        .send()
        .await
        .expect_err("500");
    assert_eq!(s3.code(), Some("InternalError"), "{s3:?}");
    let ddb = put_new(&f.ddb, &f.table, "k").await.expect_err("500");
    assert_eq!(ddb.code(), Some("InternalServerError"), "{ddb:?}");
    let sqs = f
        .sqs_client()
        .send_message()
        .queue_url(&queue_url)
        .message_body("m")
        .send()
        .await
        .expect_err("500");
    assert_eq!(sqs.code(), Some("InternalError"), "{sqs:?}");
    for op in ["S3.PutObject", PUT, "SQS.SendMessage"] {
        assert_eq!(f.proxy.seen(op), attempts, "{op}");
        assert_eq!(f.proxy.faulted(op), attempts, "{op}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_filters_pick_one_kind_of_request_and_clear_removes_rules() {
    let f = Fixture::new("body").await;
    // Given a lost answer for PutItems whose condition checks the owner only
    f.proxy
        .add(Rule::once(PUT, Fault::LoseAnswer500).with_body("#owner = :owner"));
    // When an unconditional put is sent, Then it is not faulted
    f.ddb
        .put_item()
        .table_name(&f.table)
        .item("pk", AttributeValue::S("plain".into()))
        .send()
        .await
        .expect("not faulted");
    assert_eq!((f.proxy.seen(PUT), f.proxy.faulted(PUT)), (1, 0));
    // When an owner-conditional put is sent, Then it is faulted once; the SDK's retry meets
    // the applied first attempt, whose owner matches, so it succeeds
    let r = f
        .ddb
        .put_item()
        .table_name(&f.table)
        .item("pk", AttributeValue::S("owned".into()))
        .item("owner", AttributeValue::S("a".into()))
        .condition_expression("attribute_not_exists(pk) OR #owner = :owner")
        .expression_attribute_names("#owner", "owner")
        .expression_attribute_values(":owner", AttributeValue::S("a".into()))
        .send()
        .await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!((f.proxy.seen(PUT), f.proxy.faulted(PUT)), (3, 1));

    // Given a rule failing every PutItem, When the rules are cleared, Then puts pass again
    f.proxy.add(Rule::always(PUT, Fault::ServerError));
    f.proxy.clear();
    put_new(&f.ddb, &f.table, "after-clear")
        .await
        .expect("no rules left");
    assert_eq!(f.proxy.faulted(PUT), 1);
}

/// 200 GetItems without SDK retries through a fresh proxy with `rule`: which were faulted.
async fn faulted_pattern(f: &Fixture, rule: Rule) -> (FaultProxy, Vec<bool>) {
    let proxy = FaultProxy::start(&upstream()).await;
    proxy.add(rule);
    let ddb = proxied_ddb(&f.sdk, &proxy, Some(RetryConfig::disabled()));
    let mut pattern = Vec::new();
    for i in 0..200 {
        let r = ddb
            .get_item()
            .table_name(&f.table)
            .key("pk", AttributeValue::S(format!("k{i}")))
            .send()
            .await;
        match r {
            Ok(_) => pattern.push(false),
            Err(e) if e.code() == Some("ThrottlingException") => pattern.push(true),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    (proxy, pattern)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_of_requests_is_faulted_deterministically() {
    let f = Fixture::new("share").await;
    let rule = Rule::share("DynamoDB.GetItem", Fault::Throttle, 0.5);
    // Given half of the GetItems throttled, When 200 are sent
    let (proxy, pattern) = faulted_pattern(&f, rule.clone()).await;
    // Then about half are faulted, and the proxy's counts agree with what the SDK saw
    let faulted = pattern.iter().filter(|p| **p).count();
    assert!((60..=140).contains(&faulted), "{faulted}");
    assert_eq!(proxy.seen("DynamoDB.GetItem"), 200);
    assert_eq!(proxy.faulted("DynamoDB.GetItem"), faulted);
    // When a second proxy gets the same requests, Then it faults exactly the same ones
    let (_, again) = faulted_pattern(&f, rule.clone()).await;
    assert_eq!(pattern, again);
    // When the share is capped, Then no more than the cap is faulted
    let (capped, _) = faulted_pattern(&f, rule.times(7)).await;
    assert_eq!(capped.faulted("DynamoDB.GetItem"), 7);
}

/// One raw HTTP/1.1 request over a fresh connection; the bytes that came back before the
/// connection closed.
async fn raw_request(proxy: &FaultProxy, wait: Duration) -> Result<Vec<u8>, &'static str> {
    let addr = proxy.endpoint().trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /fault-proxy-raw/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    match tokio::time::timeout(wait, s.read_to_end(&mut got)).await {
        Ok(Ok(_)) => Ok(got),
        Ok(Err(_)) => Ok(got), // a reset is also a close without an answer
        Err(_) => Err("still open"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withheld_answers_close_the_connection_without_a_single_byte() {
    let proxy = FaultProxy::start(&upstream()).await;
    // Given no rules, When a raw request is sent, Then upstream's answer comes back
    let answer = raw_request(&proxy, Duration::from_secs(10)).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 "), "{answer:?}");
    assert_eq!(proxy.seen("S3.GetBucket"), 1);

    // Given every answer withheld, When a raw request is sent,
    // Then the connection closes with no response at all (no 500 written by hyper)
    proxy.add(Rule::always("*", Fault::LoseAnswerClose));
    let answer = raw_request(&proxy, Duration::from_secs(10)).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&answer), "");

    // Given every request hung, When a raw request is sent, Then nothing comes back while
    // hung, and after release_hung the connection closes with no response
    proxy.clear();
    proxy.add(Rule::always("*", Fault::Hang));
    let p = std::sync::Arc::new(proxy);
    let hung = tokio::spawn({
        let p = p.clone();
        async move { raw_request(&p, Duration::from_secs(10)).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!hung.is_finished());
    assert_eq!(p.faulted("S3.GetBucket"), 2);
    p.release_hung();
    let answer = hung.await.unwrap().expect("closed after release");
    assert_eq!(String::from_utf8_lossy(&answer), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_in_the_proxy_are_refused_as_dynamodb_refuses_them_and_never_reach_the_endpoint() {
    // Given a proxy that keeps conditional writes itself (the invocation bench's stand-in)
    let f = Fixture::new("inproxy").await;
    f.proxy.add(Rule::always(PUT, Fault::ClaimsInProxy));
    // When a key is created twice, and another key once
    let first = put_new(&f.ddb, &f.table, "k1").await;
    let second = put_new(&f.ddb, &f.table, "k1").await;
    let other = put_new(&f.ddb, &f.table, "k2").await;
    // Then the first and the other are written, the second refused with the condition failure
    assert!(first.is_ok() && other.is_ok(), "{first:?} {other:?}");
    assert!(is_condition_failed(&second), "{second:?}");
    // ...and none of them reached the endpoint
    assert!(!f.exists("k1").await && !f.exists("k2").await);
    assert_eq!(f.proxy.counts()[PUT], (3, 3));
}
