//! The search index adapter: OpenSearch (Amazon OpenSearch Service with SigV4 `es`,
//! self-managed) and Elasticsearch, over the same minimal HTTP/1.1 client and signer as the
//! claims and objects — no search client crate, so the loaders' binaries and cold starts do
//! not grow by one (the official Rust clients bring reqwest and its own TLS stack).
//!
//! Always TLS with the platform's roots; plain `http://` only to a loopback address (the local
//! stack's osmem-server, a test's fault proxy). Each request's attempts follow
//! [`SINK_RETRY`]: a `_bulk` request may be sent again whole, since every action in it is
//! versioned or create-only.

use crate::http1::{connect_to, Answer, Http1Pool, RequestBuf};
use crate::signing_keys::SigningKeys;
use crate::sigv4::{encode_path, sha256_hex, FixedShapeSigner, PathRequest};
use aws_config::SdkConfig;
use base64::Engine;
use bytes::Bytes;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};
use streamload_core::error::PortError;
use streamload_core::ports::{SearchIndex, StoredDocument};
use streamload_core::retry::{retry, SINK_RETRY};
use streamload_core::search::bulk::{read_answer, ItemOutcome, MAX_REQUEST_DOCUMENTS};
use streamload_core::search::{compare_fields, IndexPlan};

/// Longest attempt of one request: a 10 MiB `_bulk` takes a few seconds on a busy cluster.
pub const SEARCH_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest answer read: an unfiltered `_bulk` answer holds ≈ 260 bytes per item (Amazon
/// OpenSearch Service ignores `filter_path` on signed requests, so it cannot be trimmed).
const MAX_ANSWER_BYTES: usize = MAX_REQUEST_DOCUMENTS * 1024;
/// Kept-alive connections: the pipeline sends a batch's requests a few at a time.
const SEARCH_POOL_IDLE: usize = 8;
/// One page of a scroll: the scroll id to ask for the next, and the (id, version) of each hit.
type ScrollPage = (Option<String>, Vec<(String, u64)>);

/// Documents per page of an audit's scroll (ids and versions only: ≈100 bytes a hit).
const LIST_PAGE_DOCUMENTS: usize = 1_000;
/// How long the server keeps an audit's scroll between pages.
const LIST_SCROLL_KEEP_ALIVE: &str = "1m";
/// Room for a request head's fixed text.
const REQUEST_HEAD_BYTES: usize = 384;

/// How requests are authorised.
#[derive(Clone)]
pub enum SearchAuth {
    /// No credentials (a local server).
    None,
    /// `Authorization: Basic` (self-managed clusters; from a secret).
    Basic { user: String, password: String },
    /// `Authorization: ApiKey` (Elasticsearch and OpenSearch API keys; from a secret).
    ApiKey(String),
    /// SigV4 with the function's credentials: `es` (Amazon OpenSearch Service).
    SigV4 { service: &'static str },
}

impl std::fmt::Debug for SearchAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret itself.
        f.write_str(match self {
            SearchAuth::None => "none",
            SearchAuth::Basic { .. } => "basic",
            SearchAuth::ApiKey(_) => "api key",
            SearchAuth::SigV4 { .. } => "sigv4",
        })
    }
}

enum Authorize {
    None,
    Header(String),
    SigV4(Box<SigV4Keys>),
}

struct SigV4Keys {
    signer: FixedShapeSigner,
    keys: SigningKeys,
}

/// A search cluster's endpoint and how to authorise requests to it.
pub struct SearchClient {
    http: Http1Pool,
    host: String,
    authorize: Authorize,
    attempt_timeout: Duration,
}

impl std::fmt::Debug for SearchClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SearchClient({})", self.host)
    }
}

/// Whether `host` is a loopback address or name.
fn loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl SearchClient {
    /// The client of the cluster at `url` (`https://host[:port]`; `http://` only on
    /// loopback). `sdk` gives the region and credentials of SigV4. `Err` is one line naming
    /// what is wrong (never a secret).
    ///
    /// ```no_run
    /// # async fn demo() {
    /// use streamload_aws::{SearchAuth, SearchClient};
    /// let client = SearchClient::new("http://127.0.0.1:19200", SearchAuth::None, None).unwrap();
    /// # }
    /// ```
    pub fn new(url: &str, auth: SearchAuth, sdk: Option<&SdkConfig>) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("search endpoint {url:?} is not a URL"))?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(format!(
                "search endpoint {url:?}: only scheme and host (and port), no path"
            ));
        }
        let endpoint = connect_to(scheme, authority).ok_or_else(|| {
            format!(
                "search endpoint {url:?}: https (or http on loopback) with a valid host and port"
            )
        })?;
        if endpoint.host.ends_with(".aoss.amazonaws.com") {
            return Err(format!(
                "search endpoint {url:?}: OpenSearch Serverless (aoss) is not supported: its TIMESERIES and VECTORSEARCH collections refuse custom document ids and its external versions are unconfirmed, so exactly once cannot be promised there; use an OpenSearch Service domain"
            ));
        }
        if scheme != "https" && !loopback(&endpoint.host) {
            return Err(format!(
                "search endpoint {url:?}: must be https (plain http only to a loopback address)"
            ));
        }
        let authorize = match auth {
            SearchAuth::None => Authorize::None,
            SearchAuth::Basic { user, password } => Authorize::Header(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            SearchAuth::ApiKey(key) => Authorize::Header(format!("ApiKey {key}")),
            SearchAuth::SigV4 { service } => {
                let sdk = sdk.ok_or("search endpoint: SigV4 needs the AWS configuration")?;
                let region = sdk
                    .region()
                    .ok_or("search endpoint: SigV4 needs a region (AWS_REGION)")?;
                let credentials = sdk
                    .credentials_provider()
                    .ok_or("search endpoint: SigV4 needs credentials")?;
                Authorize::SigV4(Box::new(SigV4Keys {
                    signer: FixedShapeSigner::new(region.as_ref(), service),
                    keys: SigningKeys::new(credentials),
                }))
            }
        };
        Ok(Self {
            http: Http1Pool::new(endpoint, SEARCH_POOL_IDLE).with_max_body(MAX_ANSWER_BYTES),
            host: authority.to_owned(),
            authorize,
            attempt_timeout: SEARCH_ATTEMPT_TIMEOUT,
        })
    }

    /// One attempt of `method path` with `body` (JSON or NDJSON). `Err`: the request may
    /// have been applied when it is ambiguous.
    async fn attempt(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Answer, PortError> {
        let what = format!("search {method} {}", path.split('/').nth(1).unwrap_or(""));
        let payload_sha256 = sha256_hex(body);
        let mut request =
            RequestBuf::new(method, path, &self.host, REQUEST_HEAD_BYTES + body.len());
        if !body.is_empty() {
            request.header("content-type", content_type);
        }
        match &self.authorize {
            Authorize::None => {}
            Authorize::Header(value) => {
                request.header("authorization", value);
            }
            Authorize::SigV4(sigv4) => {
                let SigV4Keys { signer, keys } = sigv4.as_ref();
                let credentials = keys.get(&what).await?;
                let keys = credentials.keys();
                let signed = signer.sign_object_request(
                    &keys,
                    &self.host,
                    &PathRequest {
                        method,
                        path,
                        content_type: (!body.is_empty()).then_some(content_type),
                        create_only: false,
                        payload_sha256: &payload_sha256,
                    },
                    SystemTime::now(),
                );
                request
                    .header("x-amz-content-sha256", &payload_sha256)
                    .signed(&signed, keys.session_token);
            }
        }
        let request = request.finish(body);
        let sent = tokio::time::timeout(self.attempt_timeout, self.http.send(&request)).await;
        match sent {
            Err(_) => Err(PortError::ambiguous(format!("{what}: timed out"))),
            Ok(Err(e)) => Err(e.into_port_error(&what)),
            Ok(Ok(answer)) if answer.status == 429 => Err(PortError::retryable(format!(
                "{what}: HTTP 429 {}",
                error_type(&answer.body)
            ))),
            Ok(Ok(answer)) if answer.status >= 500 => Err(PortError::ambiguous(format!(
                "{what}: HTTP {} {}",
                answer.status,
                error_type(&answer.body)
            ))),
            Ok(Ok(answer)) => Ok(answer),
        }
    }

    /// `method path` with its attempts (every request here is idempotent).
    async fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Answer, PortError> {
        retry(SINK_RETRY, || {
            self.attempt(method, path, content_type, body)
        })
        .await
    }

    /// The field types of an index's mapping (`GET /<index>/_mapping`), or of a template's
    /// (`GET /_index_template/<name>`); `None` when it does not exist.
    async fn held_fields(
        &self,
        path: &str,
        properties: impl Fn(&Json) -> Option<&Json>,
    ) -> Result<Option<HashMap<String, String>>, PortError> {
        let answer = self.call("GET", path, "application/json", b"").await?;
        match answer.status {
            404 => Ok(None),
            200 => {
                let json: Json = serde_json::from_slice(&answer.body).map_err(|_| {
                    PortError::retryable(format!("search GET {path}: an unreadable answer"))
                })?;
                let fields = properties(&json)
                    .and_then(Json::as_object)
                    .map(|p| {
                        p.iter()
                            .map(|(name, m)| {
                                (
                                    name.clone(),
                                    m["type"].as_str().unwrap_or("object").to_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(Some(fields))
            }
            status => Err(PortError::permanent(format!(
                "search GET {path}: HTTP {status} {}",
                error_type(&answer.body)
            ))),
        }
    }

    async fn put_json(&self, path: &str, body: &Json) -> Result<(), PortError> {
        let answer = self
            .call("PUT", path, "application/json", body.to_string().as_bytes())
            .await?;
        match answer.status {
            200..=299 => Ok(()),
            // Made by someone else meanwhile: compared on the next start.
            400 if error_type(&answer.body) == "resource_already_exists_exception" => Ok(()),
            status => Err(PortError::permanent(format!(
                "search PUT {path}: HTTP {status} {}",
                error_type(&answer.body)
            ))),
        }
    }
}

/// The `error.type` of an error answer, for messages (never its reason, which can quote
/// values).
fn error_type(body: &[u8]) -> String {
    serde_json::from_slice::<Json>(body)
        .ok()
        .and_then(|j| j["error"]["type"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The template name of a route: `streamload-<route>`, in the characters names allow.
fn template_name(route: &str) -> String {
    let safe: String = route
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("streamload-{safe}")
}

impl SearchIndex for SearchClient {
    async fn bulk(&self, body: Bytes, documents: usize) -> Result<Vec<ItemOutcome>, PortError> {
        let answer = self
            .call("POST", "/_bulk", "application/x-ndjson", &body)
            .await?;
        match answer.status {
            200 => read_answer(&answer.body, documents)
                .map_err(|why| PortError::ambiguous(format!("search _bulk: {why}"))),
            413 => Err(PortError::permanent(
                "search _bulk: HTTP 413, the request is larger than the cluster accepts; lower STREAMLOAD_SEARCH_MAX_REQUEST_BYTES",
            )),
            status => Err(PortError::permanent(format!(
                "search _bulk: HTTP {status} {}",
                error_type(&answer.body)
            ))),
        }
    }

    async fn prepare(&self, route: &str, plan: &IndexPlan, create: bool) -> Result<(), PortError> {
        let wanted = plan.field_types();
        let name = plan.template_pattern();
        let (path, held) = if plan.is_pattern() {
            let path = format!("/_index_template/{}", template_name(route));
            let held = self
                .held_fields(&path, |j| {
                    j["index_templates"][0]["index_template"]["template"]["mappings"]
                        .get("properties")
                })
                .await?;
            (path, held)
        } else {
            let path = format!("/{}/_mapping", encode_path(&name));
            let held = self
                .held_fields(&path, |j| {
                    j.as_object()
                        .and_then(|o| o.values().next())
                        .and_then(|i| i["mappings"].get("properties"))
                })
                .await?;
            (path, held)
        };
        match held {
            Some(held) => compare_fields(route, &name, &held, &wanted),
            None if create => {
                if plan.is_pattern() {
                    let body = serde_json::json!({
                        "index_patterns": [name],
                        "template": {"mappings": plan.mapping()},
                    });
                    self.put_json(&path, &body).await
                } else {
                    let body = serde_json::json!({"mappings": plan.mapping()});
                    self.put_json(&format!("/{}", encode_path(&name)), &body)
                        .await
                }
            }
            None => Err(PortError::permanent(format!(
                "route {route:?}: search index {name:?} does not exist (set auto_migrate = \"add-columns\" to create it)"
            ))),
        }
    }

    /// `_refresh`, then a scroll over `_doc` order (ids and versions only, no sources), then
    /// the scroll cleared. Scrolls work alike on OpenSearch and Elasticsearch 8/9; sorting by
    /// `_id` does not (Elasticsearch refuses field data on `_id`).
    async fn list_documents(&self, index: &str) -> Result<Vec<(String, u64)>, PortError> {
        let name = encode_path(index);
        let refreshed = self
            .call(
                "POST",
                &format!("/{name}/_refresh"),
                "application/json",
                b"",
            )
            .await?;
        if refreshed.status == 404 {
            return Ok(Vec::new());
        }
        let page = |answer: Answer, what: &str| -> Result<ScrollPage, PortError> {
            if answer.status != 200 {
                return Err(PortError::permanent(format!(
                    "search {what}: HTTP {} {}",
                    answer.status,
                    error_type(&answer.body)
                )));
            }
            let json: Json = serde_json::from_slice(&answer.body).map_err(|_| {
                PortError::retryable(format!("search {what}: an unreadable answer"))
            })?;
            let hits = json["hits"]["hits"]
                .as_array()
                .map(|hits| {
                    hits.iter()
                        .filter_map(|h| {
                            Some((h["_id"].as_str()?.to_owned(), h["_version"].as_u64()?))
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok((json["_scroll_id"].as_str().map(str::to_owned), hits))
        };
        let first = serde_json::json!({
            "size": LIST_PAGE_DOCUMENTS, "sort": ["_doc"], "_source": false, "version": true,
            "query": {"match_all": {}},
        });
        let answer = self
            .call(
                "POST",
                &format!("/{name}/_search?scroll={LIST_SCROLL_KEEP_ALIVE}"),
                "application/json",
                first.to_string().as_bytes(),
            )
            .await?;
        let (mut scroll, mut hits) = page(answer, "_search")?;
        let mut listed = Vec::new();
        while !hits.is_empty() {
            listed.append(&mut hits);
            let Some(id) = &scroll else { break };
            let next = serde_json::json!({"scroll": LIST_SCROLL_KEEP_ALIVE, "scroll_id": id});
            let answer = self
                .call(
                    "POST",
                    "/_search/scroll",
                    "application/json",
                    next.to_string().as_bytes(),
                )
                .await?;
            let (next_scroll, next_hits) = page(answer, "_search/scroll")?;
            scroll = next_scroll.or(scroll);
            hits = next_hits;
        }
        if let Some(id) = scroll {
            // Best effort: an uncleared scroll expires by itself after its keep-alive.
            let clear = serde_json::json!({ "scroll_id": [id] });
            let _ = self
                .call(
                    "DELETE",
                    "/_search/scroll",
                    "application/json",
                    clear.to_string().as_bytes(),
                )
                .await;
        }
        listed.sort();
        Ok(listed)
    }

    async fn document(&self, index: &str, id: &str) -> Result<Option<StoredDocument>, PortError> {
        let path = format!(
            "/{}/_doc/{}",
            encode_path(index),
            encode_path(id).replace('/', "%2F")
        );
        let answer = self.call("GET", &path, "application/json", b"").await?;
        match answer.status {
            404 => Ok(None),
            200 => {
                let json: Json = serde_json::from_slice(&answer.body).map_err(|_| {
                    PortError::retryable("search GET _doc: an unreadable answer".to_owned())
                })?;
                Ok(Some(StoredDocument {
                    version: json["_version"].as_u64().unwrap_or(0),
                    source: json["_source"].clone(),
                }))
            }
            status => Err(PortError::permanent(format!(
                "search GET _doc: HTTP {status} {}",
                error_type(&answer.body)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_for_loopback_only_and_a_path_is_refused() {
        assert!(SearchClient::new("http://127.0.0.1:9200", SearchAuth::None, None).is_ok());
        assert!(SearchClient::new("http://localhost:9200", SearchAuth::None, None).is_ok());
        let e =
            SearchClient::new("http://search.internal:9200", SearchAuth::None, None).unwrap_err();
        assert!(e.contains("must be https"), "{e}");
        let e = SearchClient::new("https://search.internal/prefix", SearchAuth::None, None)
            .unwrap_err();
        assert!(e.contains("no path"), "{e}");
        assert!(SearchClient::new("https://search.internal", SearchAuth::None, None).is_ok());
        let e = SearchClient::new(
            "https://abc123.us-east-1.aoss.amazonaws.com",
            SearchAuth::None,
            None,
        )
        .unwrap_err();
        assert!(e.contains("Serverless"), "{e}");
        let e = SearchClient::new(
            "https://search.internal",
            SearchAuth::SigV4 { service: "es" },
            None,
        )
        .unwrap_err();
        assert!(e.contains("SigV4"), "{e}");
    }

    #[test]
    fn template_names_keep_to_the_allowed_characters() {
        assert_eq!(template_name("Orders v2"), "streamload-orders-v2");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let auth = SearchAuth::Basic {
            user: "u".into(),
            password: "hunter2".into(),
        };
        assert_eq!(format!("{auth:?}"), "basic");
    }
}
