//! An HTTP/1.1 proxy that injects faults between the AWS SDK and the AWS endpoint (moto).
//!
//! The in-process fault switches (`streamload_core::memory::Faulty`) fail an adapter call
//! before or after it runs, but they never exercise the SDK itself. This proxy puts the faults
//! on the wire instead: a request can be applied upstream and then lose its answer (a 500 or
//! a closed connection), be black-holed, or be refused the way the real service refuses it
//! when it throttles or fails. The SDK's own retry strategy then runs against those faults,
//! exactly as it would against AWS: a retried conditional write that meets its own applied
//! first attempt, a dispatch failure, a throttled call that runs out of attempts.
//!
//! Give [`FaultProxy::endpoint`] to an SDK client as its endpoint url, arm it with
//! [`Rule`]s, and read back what it saw with [`FaultProxy::seen`] / [`FaultProxy::faulted`].

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to a request a [`Rule`] picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward the request (it is applied upstream), then answer 500 in the service's error
    /// format (as [`Fault::ServerError`]) instead of upstream's answer.
    LoseAnswer500,
    /// Forward the request (applied upstream), then close the client connection without any
    /// answer.
    LoseAnswerClose,
    /// Never forward and never answer; keep the connection open (a black-holed call), until
    /// [`FaultProxy::release_hung`] (then the connection is closed without an answer) or the
    /// client gives up.
    Hang,
    /// Do not forward; answer as the service does when it throttles: DynamoDB 400
    /// `ThrottlingException` (JSON), S3 503 `SlowDown` (XML), SQS 400 `ThrottlingException`
    /// (JSON with `x-amzn-query-error`), anything else a bare 503.
    Throttle,
    /// Do not forward a `PutItem`: answer it after [`ACCEPT_DELAY`] from the proxy's own
    /// memory, as DynamoDB answers a create-if-absent write: refused with
    /// `ConditionalCheckFailedException` and the held item (`ALL_OLD`) if the proxy holds
    /// an item under the same table and `pk`, else kept there and answered `200 {}`. Not a
    /// fault but a stand-in for AWS's answer rate: the invocation bench's diagnostic of what
    /// the loader costs when conditional writes are answered concurrently within milliseconds
    /// instead of one at a time by moto. The items never reach the upstream, and the
    /// condition is taken as "absent" only (no expiry, no takeover of a dead holder's claim):
    /// enough for runs without crashes; no test relies on it.
    ClaimsInProxy,
    /// Do not forward; answer 500 in the service's error format: DynamoDB
    /// `InternalServerError`, S3 `InternalError`, SQS `InternalError`, anything else a bare 500.
    ServerError,
    /// Hold the request this many milliseconds, then forward it (it is applied upstream) and
    /// answer upstream's answer — to a client that has usually given up by then: a request
    /// applied after its attempt timed out.
    SlowForward(u64),
    /// Close the client connection at once without an answer, and forward the request this
    /// many milliseconds later (it is applied upstream then): a write the client takes for
    /// lost, applied after the client's later attempts.
    CloseThenForward(u64),
}

/// Which requests get a [`Fault`], and how many of them.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Operation name such as `"DynamoDB.PutItem"` or `"S3.PutObject"`; `"*"` matches every
    /// request.
    pub operation: String,
    /// When set, the request body must contain this text (e.g. `"#owner = :owner"` to pick
    /// one kind of conditional PutItem).
    pub body_contains: Option<String>,
    /// What happens to a picked request.
    pub fault: Fault,
    /// `None`: unlimited; `Some(n)`: only the first `n` matching requests.
    pub times: Option<usize>,
    /// Chance that a matching request is faulted (1.0 = always), drawn from the proxy's
    /// seeded PRNG, so a given sequence of requests is faulted the same way on every run.
    pub probability: f64,
}

impl Rule {
    /// Every matching request.
    pub fn always(operation: &str, fault: Fault) -> Self {
        Self {
            operation: operation.to_owned(),
            body_contains: None,
            fault,
            times: None,
            probability: 1.0,
        }
    }

    /// The first matching request only.
    pub fn once(operation: &str, fault: Fault) -> Self {
        Self::always(operation, fault).times(1)
    }

    /// Each matching request with the given probability (deterministic, see [`Rule::probability`]).
    pub fn share(operation: &str, fault: Fault, probability: f64) -> Self {
        Self {
            probability,
            ..Self::always(operation, fault)
        }
    }

    /// Only requests whose body contains `needle`.
    pub fn with_body(mut self, needle: &str) -> Self {
        self.body_contains = Some(needle.to_owned());
        self
    }

    /// Only the first `n` requests that match (and win the probability draw).
    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    fn matches(&self, operation: &str, body: &[u8]) -> bool {
        (self.operation == "*" || self.operation == operation)
            && self
                .body_contains
                .as_deref()
                .is_none_or(|needle| String::from_utf8_lossy(body).contains(needle))
    }
}

/// A fault-injecting HTTP proxy on `127.0.0.1:<ephemeral>`; it stops (dropping every
/// connection, hung ones included) when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    /// Dropped with the proxy: the accept loop and every connection task see it and end.
    _shutdown: watch::Sender<()>,
}

impl FaultProxy {
    /// Listens on 127.0.0.1:<ephemeral> and forwards every HTTP/1.1 request to `upstream`
    /// (e.g. `"http://127.0.0.1:5050"`, as in `AWS_ENDPOINT_URL`), one upstream connection
    /// per request. Panics if `upstream` is not an `http://host[:port]` url or if it cannot
    /// bind, as test setup does.
    pub async fn start(upstream: &str) -> Self {
        let uri: Uri = upstream
            .parse()
            .unwrap_or_else(|e| panic!("fault proxy upstream {upstream:?}: {e}"));
        assert!(
            uri.scheme_str().is_none_or(|s| s == "http"),
            "fault proxy forwards plain http only, not {upstream:?}"
        );
        let authority = uri
            .authority()
            .unwrap_or_else(|| panic!("fault proxy upstream {upstream:?} has no host"));
        let upstream = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );

        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fault proxy");
        let addr = listener.local_addr().expect("fault proxy address");
        let (release, _) = watch::channel(0u64);
        let state = Arc::new(State {
            upstream,
            rules: Mutex::new(Rules {
                armed: Vec::new(),
                rng: XorShift64::new(SEED),
            }),
            counts: Mutex::new(BTreeMap::new()),
            release,
            claims: Mutex::new(BTreeMap::new()),
            authorization: Mutex::new(None),
            rewrites: Mutex::new(Vec::new()),
        });
        let (shutdown, shutdown_rx) = watch::channel(());
        tokio::spawn(accept_loop(listener, state.clone(), shutdown_rx));
        Self {
            addr,
            state,
            _shutdown: shutdown,
        }
    }

    /// `"http://127.0.0.1:<port>"`: give it to the SDK as the endpoint url.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a rule. Rules are checked in the order added; the first that matches, still has
    /// `times` left and wins its probability draw applies.
    pub fn add(&self, rule: Rule) {
        let remaining = rule.times;
        lock(&self.state.rules)
            .armed
            .push(Armed { rule, remaining });
    }

    /// Removes every rule. Requests already hung stay hung until [`FaultProxy::release_hung`].
    /// From now on, answers a request whose `Authorization` header is not exactly `value` with
    /// 401 and OpenSearch's `security_exception` (not forwarded), as a cluster that demands
    /// basic credentials or an API key does. Returns nothing; see [`FaultProxy::unauthorized`].
    /// Replaces `from` with `to` in every forwarded answer's body: for an emulator whose
    /// answer differs from the service's documented shape in a way an SDK refuses (the one
    /// use: moto 5.2's S3 Tables sends `managedByService` as a boolean where AWS's model has
    /// a string). A test that uses it says so.
    pub fn rewrite_answers(&self, from: &str, to: &str) {
        lock(&self.state.rewrites).push((from.to_owned(), to.to_owned()));
    }

    pub fn require_authorization(&self, value: &str) {
        *lock(&self.state.authorization) = Some((value.to_owned(), 0));
    }

    /// How many requests were refused for their `Authorization` header.
    pub fn unauthorized(&self) -> usize {
        lock(&self.state.authorization)
            .as_ref()
            .map_or(0, |(_, n)| *n)
    }

    pub fn clear(&self) {
        lock(&self.state.rules).armed.clear();
    }

    /// Makes every request currently hung ([`Fault::Hang`]) fail: its connection is closed
    /// without an answer. Requests that hang later wait for the next call.
    pub fn release_hung(&self) {
        self.state
            .release
            .send_modify(|generation| *generation += 1);
    }

    /// Requests seen for an operation name, faulted or not.
    pub fn seen(&self, operation: &str) -> usize {
        lock(&self.state.counts)
            .get(operation)
            .map_or(0, |c| c.seen)
    }

    /// Faults injected so far for an operation name.
    pub fn faulted(&self, operation: &str) -> usize {
        lock(&self.state.counts)
            .get(operation)
            .map_or(0, |c| c.faulted)
    }

    /// All counts: operation -> (seen, faulted), sorted by name.
    pub fn counts(&self) -> BTreeMap<String, (usize, usize)> {
        lock(&self.state.counts)
            .iter()
            .map(|(op, c)| (op.clone(), (c.seen, c.faulted)))
            .collect()
    }
}

/// The PRNG seed of every proxy: the same requests are faulted the same way on every run.
const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

struct State {
    /// `host:port` of the AWS endpoint.
    upstream: String,
    rules: Mutex<Rules>,
    counts: Mutex<BTreeMap<String, Counts>>,
    /// Bumped by `release_hung`; hung requests wait for a change.
    release: watch::Sender<u64>,
    /// [`Fault::ClaimsInProxy`]'s items, by table and `pk`.
    claims: Mutex<BTreeMap<String, serde_json::Value>>,
    /// [`FaultProxy::require_authorization`]'s header value, and the requests refused for
    /// lacking it.
    authorization: Mutex<Option<(String, usize)>>,
    /// [`FaultProxy::rewrite_answers`]'s replacements in forwarded answers.
    rewrites: Mutex<Vec<(String, String)>>,
}

/// The rules and the PRNG under one lock, so the draws follow the order requests arrive in.
struct Rules {
    armed: Vec<Armed>,
    rng: XorShift64,
}

struct Armed {
    rule: Rule,
    /// `None`: unlimited.
    remaining: Option<usize>,
}

#[derive(Default)]
struct Counts {
    seen: usize,
    faulted: usize,
}

impl State {
    /// Counts the request and picks its fault, if any rule applies.
    fn decide(&self, operation: &str, body: &[u8]) -> Option<Fault> {
        let fault = {
            let mut rules = lock(&self.rules);
            let Rules { armed, rng } = &mut *rules;
            armed.iter_mut().find_map(|a| {
                if a.remaining == Some(0) || !a.rule.matches(operation, body) {
                    return None;
                }
                if a.rule.probability < 1.0 && rng.unit() >= a.rule.probability {
                    return None;
                }
                if let Some(n) = &mut a.remaining {
                    *n -= 1;
                }
                Some(a.rule.fault)
            })
        };
        let mut counts = lock(&self.counts);
        let c = counts.entry(operation.to_owned()).or_default();
        c.seen += 1;
        c.faulted += usize::from(fault.is_some());
        fault
    }
}

/// A mutex guard even if a panicking test thread poisoned it (the data stays consistent:
/// every critical section is a few plain assignments).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// xorshift64: small, seeded, deterministic; statistical quality is plenty for fault draws.
struct XorShift64(u64);

impl XorShift64 {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, shutdown: watch::Receiver<()>) {
    loop {
        let mut stop = shutdown.clone();
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // e.g. out of file descriptors: back off instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            // A service error (a lost answer, a released hang) ends `conn` with an error and
            // drops the socket without writing a response; so does the proxy's shutdown.
            tokio::select! {
                _ = conn => {}
                _ = stop.changed() => {}
            }
        });
    }
}

/// Why the proxy closes a client connection without answering.
#[derive(Debug)]
enum Dropped {
    /// [`Fault::LoseAnswerClose`]: applied upstream, answer withheld.
    LostAnswer,
    /// [`Fault::Hang`] released, or the proxy stopped.
    Released,
    /// The client's request body could not be read.
    ClientBody(hyper::Error),
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LostAnswer => f.write_str("fault proxy: answer withheld (LoseAnswerClose)"),
            Self::Released => f.write_str("fault proxy: hung request released"),
            Self::ClientBody(e) => write!(f, "fault proxy: reading the request body: {e}"),
        }
    }
}

impl std::error::Error for Dropped {}

type ProxyResponse = Response<Full<Bytes>>;

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<ProxyResponse, Dropped> {
    // Subscribed before deciding, so a release_hung() after this request hangs frees it.
    let mut release = state.release.subscribe();
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(Dropped::ClientBody)?
        .to_bytes();
    let (service, operation) = classify(&parts.method, &parts.uri, &parts.headers, &body);
    if let Some((wanted, refused)) = lock(&state.authorization).as_mut() {
        let given = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if given != Some(wanted.as_str()) {
            *refused += 1;
            let body = r#"{"error":{"root_cause":[{"type":"security_exception","reason":"missing authentication credentials"}],"type":"security_exception","reason":"missing authentication credentials"},"status":401}"#;
            let mut answer = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
            *answer.status_mut() = StatusCode::UNAUTHORIZED;
            answer
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return Ok(answer);
        }
    }
    let fault = state.decide(&operation, &body);
    let head = matches!(parts.method, Method::HEAD);
    match fault {
        None => {
            let answer = forward(&state.upstream, parts, body).await;
            let rewrites = lock(&state.rewrites).clone();
            if rewrites.is_empty() {
                return Ok(answer);
            }
            let (mut parts, body) = answer.into_parts();
            let Ok(body) = body.collect().await.map(|b| b.to_bytes());
            let mut text = String::from_utf8_lossy(&body).into_owned();
            for (from, to) in &rewrites {
                text = text.replace(from, to);
            }
            parts
                .headers
                .insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(text.len()));
            Ok(Response::from_parts(parts, Full::new(Bytes::from(text))))
        }
        Some(Fault::LoseAnswer500) => {
            let _applied = forward(&state.upstream, parts, body).await;
            Ok(error_answer(service, Fault::ServerError, head))
        }
        Some(Fault::LoseAnswerClose) => {
            let _applied = forward(&state.upstream, parts, body).await;
            Err(Dropped::LostAnswer)
        }
        Some(Fault::Hang) => {
            // Ok: released; Err: the proxy is gone. Either way, no answer.
            let _ = release.changed().await;
            Err(Dropped::Released)
        }
        Some(fault @ (Fault::Throttle | Fault::ServerError)) => {
            Ok(error_answer(service, fault, head))
        }
        Some(Fault::ClaimsInProxy) => {
            tokio::time::sleep(ACCEPT_DELAY).await;
            Ok(state.claim_in_proxy(&body))
        }
        Some(Fault::SlowForward(ms)) => {
            // A task of its own: the request is applied even when the client has given up and
            // closed the connection (which drops this handler).
            let upstream = state.upstream.clone();
            let late = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                forward(&upstream, parts, body).await
            });
            late.await.map_err(|_| Dropped::Released)
        }
        Some(Fault::CloseThenForward(ms)) => {
            let upstream = state.upstream.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let _applied = forward(&upstream, parts, body).await;
            });
            Err(Dropped::LostAnswer)
        }
    }
}

impl State {
    /// [`Fault::ClaimsInProxy`]'s answer to one `PutItem` body.
    fn claim_in_proxy(&self, body: &[u8]) -> ProxyResponse {
        let json_answer = |status: StatusCode, text: String| {
            let mut answer = Response::new(Full::new(Bytes::from(text)));
            *answer.status_mut() = status;
            answer.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-amz-json-1.0"),
            );
            answer
        };
        let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let (Some(table), Some(pk)) = (
            request["TableName"].as_str(),
            request["Item"]["pk"]["S"].as_str(),
        ) else {
            return json_answer(
                StatusCode::BAD_REQUEST,
                r#"{"__type":"com.amazon.coral.validate#ValidationException","message":"no TableName or pk"}"#.into(),
            );
        };
        let key = format!("{table}\n{pk}");
        let mut held = lock(&self.claims);
        match held.get(&key) {
            Some(item) => json_answer(
                StatusCode::BAD_REQUEST,
                serde_json::json!({
                    "__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
                    "message": "The conditional request failed",
                    "Item": item,
                })
                .to_string(),
            ),
            None => {
                held.insert(key, request["Item"].clone());
                json_answer(StatusCode::OK, "{}".into())
            }
        }
    }
}

/// How long [`Fault::ClaimsInProxy`] waits before answering: a conditional PutItem's
/// typical latency inside a region.
pub const ACCEPT_DELAY: Duration = Duration::from_millis(5);

/// Hop-by-hop headers: they describe one connection, not the message, so they are not
/// forwarded (`expect` too: the proxy has already read the whole body).
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Sends the request upstream on a fresh connection and buffers the answer; a 502 if the
/// upstream cannot be reached or breaks off.
async fn forward(
    upstream: &str,
    mut parts: hyper::http::request::Parts,
    body: Bytes,
) -> ProxyResponse {
    strip_hop_by_hop(&mut parts.headers);
    match try_forward(upstream, Request::from_parts(parts, Full::new(body))).await {
        Ok(resp) => resp,
        Err(e) => plain(
            StatusCode::BAD_GATEWAY,
            format!("fault proxy: upstream {upstream}: {e}"),
        ),
    }
}

async fn try_forward(
    upstream: &str,
    req: Request<Full<Bytes>>,
) -> Result<ProxyResponse, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(upstream).await?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await?;
    let (mut parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    // Keeps content-length (a HEAD answer's describes the object, not this empty body).
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Full::new(body)))
}

/// The service a request is for, which decides the format of injected error answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    DynamoDb,
    S3,
    /// SQS over its JSON protocol (`x-amz-target: AmazonSQS.*`).
    SqsJson,
    /// SQS over the query protocol (`Action=` form body).
    SqsQuery,
    Other,
}

/// The service and operation name of a request: `x-amz-target` for the JSON protocols
/// (`DynamoDB_20120810.PutItem` -> `DynamoDB.PutItem`, `AmazonSQS.SendMessage` ->
/// `SQS.SendMessage`), the `Action=` of a query-protocol form body (service from the SigV4
/// credential scope), else S3 by method and path-style url (`S3.PutObject`, `S3.GetBucket`).
fn classify(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> (Service, String) {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        let Some((prefix, op)) = target.split_once('.') else {
            return (Service::Other, "Other".to_owned());
        };
        return if prefix.starts_with("DynamoDB") {
            (Service::DynamoDb, format!("DynamoDB.{op}"))
        } else if prefix == "AmazonSQS" {
            (Service::SqsJson, format!("SQS.{op}"))
        } else {
            (Service::Other, format!("{prefix}.{op}"))
        };
    }
    let form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if form {
        if let Some(action) = form_action(body) {
            return match credential_service(headers) {
                Some("sqs") => (Service::SqsQuery, format!("SQS.{action}")),
                Some("dynamodb") => (Service::DynamoDb, format!("DynamoDB.{action}")),
                Some(service) => (Service::Other, format!("{service}.{action}")),
                None => (Service::Other, "Other".to_owned()),
            };
        }
    }
    (Service::S3, s3_operation(method, uri.path()))
}

/// The `Action` parameter of a query-protocol form body.
fn form_action(body: &[u8]) -> Option<String> {
    let body = std::str::from_utf8(body).ok()?;
    body.split('&')
        .find_map(|pair| pair.strip_prefix("Action="))
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
}

/// The service of a SigV4 `Authorization` header's credential scope
/// (`Credential=AKID/20240501/us-east-1/sqs/aws4_request`).
fn credential_service(headers: &HeaderMap) -> Option<&str> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let credential = auth.split("Credential=").nth(1)?;
    credential.split([',', ' ']).next()?.split('/').nth(3)
}

/// `S3.<Method>Object` for a path-style url with a key, `S3.<Method>Bucket` otherwise.
fn s3_operation(method: &Method, path: &str) -> String {
    let m = method.as_str();
    let mut verb = m[..1].to_ascii_uppercase();
    verb.push_str(&m[1..].to_ascii_lowercase());
    let has_key = path
        .trim_start_matches('/')
        .split_once('/')
        .is_some_and(|(_, key)| !key.is_empty());
    let target = if has_key { "Object" } else { "Bucket" };
    format!("S3.{verb}{target}")
}

/// The answer the service gives when it throttles ([`Fault::Throttle`]) or fails
/// ([`Fault::ServerError`]). HEAD answers get the status and headers only.
fn error_answer(service: Service, fault: Fault, head: bool) -> ProxyResponse {
    let throttle = fault == Fault::Throttle;
    let (status, content_type, body, query_error) = match (service, throttle) {
        (Service::DynamoDb, true) => (
            StatusCode::BAD_REQUEST,
            "application/x-amz-json-1.0",
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#,
            None,
        ),
        (Service::DynamoDb, false) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/x-amz-json-1.0",
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"Internal server error"}"#,
            None,
        ),
        (Service::S3, true) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "application/xml",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
            None,
        ),
        (Service::S3, false) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/xml",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>",
            None,
        ),
        (Service::SqsJson, true) => (
            StatusCode::BAD_REQUEST,
            "application/x-amz-json-1.0",
            r#"{"__type":"com.amazonaws.sqs#ThrottlingException","message":"Rate exceeded"}"#,
            Some("ThrottlingException;Sender"),
        ),
        (Service::SqsJson, false) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/x-amz-json-1.0",
            r#"{"__type":"com.amazonaws.sqs#InternalError","message":"We encountered an internal error. Please try again."}"#,
            Some("InternalError;Receiver"),
        ),
        (Service::SqsQuery, true) => (
            StatusCode::BAD_REQUEST,
            "text/xml",
            "<ErrorResponse><Error><Type>Sender</Type><Code>ThrottlingException</Code><Message>Rate exceeded</Message></Error><RequestId>fault-proxy</RequestId></ErrorResponse>",
            None,
        ),
        (Service::SqsQuery, false) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/xml",
            "<ErrorResponse><Error><Type>Receiver</Type><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error><RequestId>fault-proxy</RequestId></ErrorResponse>",
            None,
        ),
        (Service::Other, true) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "fault proxy: throttled",
            None,
        ),
        (Service::Other, false) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "fault proxy: internal error",
            None,
        ),
    };
    let mut resp = Response::new(Full::new(if head {
        Bytes::new()
    } else {
        Bytes::from_static(body.as_bytes())
    }));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        HeaderName::from_static("x-amzn-requestid"),
        HeaderValue::from_static("fault-proxy"),
    );
    if let Some(q) = query_error {
        headers.insert(
            HeaderName::from_static("x-amzn-query-error"),
            HeaderValue::from_static(q),
        );
    }
    resp
}

fn plain(status: StatusCode, text: String) -> ProxyResponse {
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(method: Method, path: &str, headers: &[(&'static str, &str)], body: &str) -> String {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        classify(&method, &path.parse().unwrap(), &map, body.as_bytes()).1
    }

    #[test]
    fn operation_names() {
        // Given requests of each protocol, Then each gets the documented operation name.
        let t = |target| name(Method::POST, "/", &[("x-amz-target", target)], "{}");
        assert_eq!(t("DynamoDB_20120810.PutItem"), "DynamoDB.PutItem");
        assert_eq!(t("AmazonSQS.SendMessage"), "SQS.SendMessage");
        assert_eq!(
            t("secretsmanager.GetSecretValue"),
            "secretsmanager.GetSecretValue"
        );
        assert_eq!(name(Method::PUT, "/b/k/x.parquet", &[], ""), "S3.PutObject");
        assert_eq!(name(Method::HEAD, "/b/k", &[], ""), "S3.HeadObject");
        assert_eq!(name(Method::GET, "/b/k?x=1", &[], ""), "S3.GetObject");
        assert_eq!(name(Method::DELETE, "/b/k", &[], ""), "S3.DeleteObject");
        assert_eq!(name(Method::PUT, "/b", &[], ""), "S3.PutBucket");
        assert_eq!(
            name(Method::GET, "/b/?list-type=2", &[], ""),
            "S3.GetBucket"
        );
        let form = [
            ("content-type", "application/x-www-form-urlencoded; charset=utf-8"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20240501/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=00",
            ),
        ];
        assert_eq!(
            name(
                Method::POST,
                "/",
                &form,
                "Action=SendMessage&Version=2012-11-05"
            ),
            "SQS.SendMessage"
        );
        assert_eq!(
            name(Method::POST, "/", &form[..1], "Version=1&Action=Foo"),
            "Other"
        );
    }

    #[test]
    fn draws_are_deterministic_and_fair() {
        // Given two PRNGs with the same seed, When drawing 10 000 times at p = 0.3,
        // Then they agree draw for draw and hit about 30%.
        let (mut a, mut b) = (XorShift64::new(SEED), XorShift64::new(SEED));
        let hits: Vec<bool> = (0..10_000).map(|_| a.unit() < 0.3).collect();
        let again: Vec<bool> = (0..10_000).map(|_| b.unit() < 0.3).collect();
        assert_eq!(hits, again);
        let n = hits.iter().filter(|h| **h).count();
        assert!((2_700..3_300).contains(&n), "{n}");
    }
}
