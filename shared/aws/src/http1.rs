//! A minimal HTTP/1.1 client for the one hot request: a small POST to one endpoint, answered
//! with a small body, over kept-alive connections.
//!
//! The claim's conditional `PutItem` is sent once per new event, so everything its transport
//! does per request is paid per record. A general client (hyper-util's pool) checks a
//! connection out of a keyed pool, hands the request to the connection's own task through a
//! channel and hands the answer back through another, and builds a header map for every
//! request: four task wakes and a dozen small allocations per call. Here the request's own
//! future writes the request (already one buffer: head and body) and reads the answer on a
//! connection it took from a plain stack of idle ones, and puts it back when the answer is
//! whole. What it does not do, it refuses rather than guesses: an answer it cannot frame
//! closes the connection and reports the outcome as unknown.
//!
//! Outcomes are told apart by what the pipeline must do: [`Http1Error::Connect`] means the
//! request never left (safe to retry as new); every failure after the first byte was written
//! is [`Http1Error::Lost`]: the request may have been applied.

use crate::CONNECT_TIMEOUT;
use rustls::pki_types::ServerName;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A kept-alive connection idle longer than this is closed rather than reused: servers close
/// idle connections on their own schedule, and a request written to a connection the server
/// is closing has an unknown outcome. Shorter than the idle timeouts AWS endpoints are known
/// to use, and than hyper's default (90 s).
pub const IDLE_REUSE_LIMIT: Duration = Duration::from_secs(20);

/// Largest answer head (status line and headers) accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest answer body accepted: a refused claim's item is a few hundred bytes.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most headers an answer may carry.
const MAX_HEADERS: usize = 64;

/// Why a request has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Http1Error {
    /// No connection could be made: the request was not sent.
    #[error("connect failed: {0}")]
    Connect(String),
    /// The connection failed or the answer was unreadable after the request was (perhaps
    /// partly) written: it may have been applied.
    #[error("answer lost: {0}")]
    Lost(String),
}

impl Http1Error {
    /// The port's error for `operation`: not sent is retryable, lost may have been applied
    /// (ambiguous). The reason names the failure (an I/O kind, a TLS alert), never request
    /// text.
    pub fn into_port_error(self, operation: &str) -> streamload_core::error::PortError {
        use streamload_core::error::PortError;
        match self {
            Http1Error::Connect(why) => {
                PortError::retryable(format!("{operation}: connect failed: {why}"))
            }
            Http1Error::Lost(why) => PortError::ambiguous(format!("{operation}: {why}")),
        }
    }
}

/// One HTTP/1.1 request written into a single buffer: the request line and headers, then
/// [`RequestBuf::finish`] adds the length and the body. Every part is appended to a buffer
/// sized once.
pub(crate) struct RequestBuf {
    bytes: Vec<u8>,
}

impl RequestBuf {
    /// `method path HTTP/1.1` and `host`, with room for `room` more bytes (headers, body).
    pub fn new(method: &str, path: &str, host: &str, room: usize) -> Self {
        let mut bytes = Vec::with_capacity(32 + method.len() + path.len() + host.len() + room);
        for part in [method, " ", path, " HTTP/1.1\r\nhost: ", host, "\r\n"] {
            bytes.extend_from_slice(part.as_bytes());
        }
        Self { bytes }
    }

    pub fn header(&mut self, name: &str, value: &str) -> &mut Self {
        for part in [name, ": ", value, "\r\n"] {
            self.bytes.extend_from_slice(part.as_bytes());
        }
        self
    }

    /// The signature's headers: `x-amz-date`, `authorization`, and the session token of
    /// temporary credentials.
    pub fn signed(&mut self, signed: &crate::sigv4::Signed, token: Option<&str>) -> &mut Self {
        self.header("x-amz-date", &signed.amz_date)
            .header("authorization", &signed.authorization);
        if let Some(token) = token {
            self.header("x-amz-security-token", token);
        }
        self
    }

    /// The whole request: `content-length`, the blank line and `body`.
    pub fn finish(mut self, body: &[u8]) -> Vec<u8> {
        self.bytes.extend_from_slice(b"content-length: ");
        self.bytes
            .extend_from_slice(body.len().to_string().as_bytes());
        self.bytes.extend_from_slice(b"\r\n\r\n");
        self.bytes.extend_from_slice(body);
        self.bytes
    }
}

/// An answer: its status and its whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Where the endpoint is and how to reach it.
#[derive(Clone)]
pub struct Endpoint {
    /// Host name or address to connect to (without brackets for IPv6).
    pub host: String,
    pub port: u16,
    /// TLS with the name to verify, or plain TCP (`http://` endpoints, local emulators).
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(bytes).await,
            Stream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }

    async fn read_buf(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read_buf(buf).await,
            Stream::Tls(s) => s.read_buf(buf).await,
        }
    }
}

struct Connection {
    stream: Stream,
    /// Bytes read and not yet consumed (always empty between answers).
    buf: Vec<u8>,
    idle_since: Instant,
}

impl Connection {
    /// Whether an idle connection can carry a request: not idle too long, and nothing waiting
    /// on it (an end of stream, a TLS close alert or stray bytes all mean the server is done
    /// with it). One non-blocking read, which finds nothing on a healthy connection.
    fn reusable(&self, now: Instant) -> bool {
        if now.duration_since(self.idle_since) > IDLE_REUSE_LIMIT {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(
            self.stream.tcp().try_read(&mut probe),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        )
    }
}

/// Kept-alive connections to one endpoint, and the requests sent over them.
pub struct Http1Pool {
    endpoint: Endpoint,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
    /// The longest answer body read ([`MAX_BODY_BYTES`] unless set otherwise).
    max_body: usize,
}

impl std::fmt::Debug for Http1Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Http1Pool({:?})", self.endpoint)
    }
}

impl Http1Pool {
    /// A pool keeping at most `max_idle` idle connections to `endpoint`.
    pub fn new(endpoint: Endpoint, max_idle: usize) -> Self {
        Self {
            endpoint,
            idle: Mutex::new(Vec::with_capacity(max_idle)),
            max_idle,
            max_body: MAX_BODY_BYTES,
        }
    }

    /// The same pool reading answers of up to `max_body` bytes (a `_bulk` answer holds an
    /// item per document).
    pub fn with_max_body(mut self, max_body: usize) -> Self {
        self.max_body = max_body;
        self
    }

    fn checkout(&self) -> Option<Connection> {
        let now = Instant::now();
        let mut idle = self.idle.lock().ok()?;
        while let Some(connection) = idle.pop() {
            if connection.reusable(now) {
                return Some(connection);
            }
        }
        None
    }

    fn checkin(&self, mut connection: Connection) {
        connection.idle_since = Instant::now();
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push(connection);
            }
        }
    }

    async fn connect(&self) -> Result<Connection, Http1Error> {
        let e = &self.endpoint;
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((e.host.as_str(), e.port)),
        )
        .await
        .map_err(|_| Http1Error::Connect("timed out".into()))?
        .map_err(|err| Http1Error::Connect(err.kind().to_string()))?;
        tcp.set_nodelay(true)
            .map_err(|err| Http1Error::Connect(err.kind().to_string()))?;
        let stream = match &e.tls {
            None => Stream::Plain(tcp),
            Some((connector, name)) => {
                let handshake = connector.connect(name.clone(), tcp);
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
                    .await
                    .map_err(|_| Http1Error::Connect("TLS handshake timed out".into()))?
                    .map_err(|err| Http1Error::Connect(format!("TLS: {err}")))?;
                Stream::Tls(Box::new(tls))
            }
        };
        Ok(Connection {
            stream,
            buf: Vec::with_capacity(4096),
            idle_since: Instant::now(),
        })
    }

    /// Sends `request` (a whole HTTP/1.1 request: head and body) and reads its answer. The
    /// caller bounds the time; dropping the future closes the connection it was using.
    pub async fn send(&self, request: &[u8]) -> Result<Answer, Http1Error> {
        self.exchange(request, false).await
    }

    /// [`Http1Pool::send`] for a `HEAD` request, whose answer has no body whatever its
    /// `content-length` says (RFC 9110, 9.3.2).
    pub async fn send_head(&self, request: &[u8]) -> Result<Answer, Http1Error> {
        self.exchange(request, true).await
    }

    async fn exchange(&self, request: &[u8], head: bool) -> Result<Answer, Http1Error> {
        let mut connection = match self.checkout() {
            Some(c) => c,
            // Boxed: a connection is made rarely, and its TLS handshake's future is larger
            // than all the rest of a request's; inline, every request's future would carry it.
            None => Box::pin(self.connect()).await?,
        };
        connection
            .stream
            .write_all(request)
            .await
            .map_err(|err| Http1Error::Lost(format!("write: {}", err.kind())))?;
        let (answer, keep_alive) = read_answer(&mut connection, head, self.max_body).await?;
        if keep_alive {
            self.checkin(connection);
        }
        Ok(answer)
    }
}

/// How the answer's body is delimited.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Reads one answer (to a `HEAD` request if `head`); returns it and whether the connection
/// may carry another request.
async fn read_answer(
    c: &mut Connection,
    head: bool,
    max_body: usize,
) -> Result<(Answer, bool), Http1Error> {
    c.buf.clear();
    let (head_len, status, framing, mut keep_alive) = loop {
        if let Some(head) = parse_head(&c.buf)? {
            break head;
        }
        if c.buf.len() > MAX_HEAD_BYTES {
            return Err(Http1Error::Lost("answer head too long".into()));
        }
        fill(c).await?;
    };
    // Informational answers (100 Continue) are not sent to a request without `Expect`.
    if (100..200).contains(&status) {
        return Err(Http1Error::Lost(format!("unexpected HTTP {status}")));
    }
    // Answers to HEAD, 204 and 304 answers have no body whatever their headers say (RFC
    // 9112, 6.3).
    let framing = if head || status == 204 || status == 304 {
        Framing::Length(0)
    } else {
        framing
    };
    let body = match framing {
        Framing::Length(len) => {
            if len > max_body {
                return Err(Http1Error::Lost("answer body too long".into()));
            }
            while c.buf.len() < head_len + len {
                fill(c).await?;
            }
            if c.buf.len() > head_len + len {
                // Bytes past the answer: the connection is out of step; do not reuse it.
                keep_alive = false;
            }
            c.buf[head_len..head_len + len].to_vec()
        }
        Framing::Chunked => {
            let (body, end) = read_chunked(c, head_len, max_body).await?;
            if c.buf.len() > end {
                // As with a length: bytes past the answer put the connection out of step.
                keep_alive = false;
            }
            body
        }
        Framing::UntilClose => {
            keep_alive = false;
            loop {
                if c.buf.len() > head_len + max_body {
                    return Err(Http1Error::Lost("answer body too long".into()));
                }
                match c.stream.read_buf(&mut c.buf).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(err) => return Err(Http1Error::Lost(format!("read: {}", err.kind()))),
                }
            }
            c.buf[head_len..].to_vec()
        }
    };
    c.buf.clear();
    Ok((Answer { status, body }, keep_alive))
}

/// Reads more bytes; an end of stream before the answer is whole loses it.
async fn fill(c: &mut Connection) -> Result<(), Http1Error> {
    match c.stream.read_buf(&mut c.buf).await {
        Ok(0) => Err(Http1Error::Lost(
            "connection closed before the answer".into(),
        )),
        Ok(_) => Ok(()),
        Err(err) => Err(Http1Error::Lost(format!("read: {}", err.kind()))),
    }
}

/// The answer head, once `buf` holds all of it: its length, status, body framing and whether
/// the server keeps the connection open.
#[allow(clippy::type_complexity)]
fn parse_head(buf: &[u8]) -> Result<Option<(usize, u16, Framing, bool)>, Http1Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Http1Error::Lost(format!("unreadable answer: {e}"))),
    };
    let status = response.code.unwrap_or(0);
    let mut keep_alive = response.version == Some(1);
    let mut framing = Framing::UntilClose;
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).unwrap_or("").trim();
        if header.name.eq_ignore_ascii_case("content-length") {
            let len = value
                .parse()
                .map_err(|_| Http1Error::Lost("unreadable content-length".into()))?;
            if !matches!(framing, Framing::Chunked) {
                framing = Framing::Length(len);
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if value.eq_ignore_ascii_case("chunked") {
                framing = Framing::Chunked;
            } else {
                return Err(Http1Error::Lost(format!("transfer-encoding {value}")));
            }
        } else if header.name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close") && keep_alive;
        }
    }
    Ok(Some((head_len, status, framing, keep_alive)))
}

/// Decodes a chunked body that starts at `start` in the connection's buffer, reading until
/// its last chunk and trailers are in; returns it and where the answer ends in the buffer.
async fn read_chunked(
    c: &mut Connection,
    start: usize,
    max_body: usize,
) -> Result<(Vec<u8>, usize), Http1Error> {
    let mut body = Vec::new();
    let mut at = start;
    loop {
        // A chunk-size line: hex size, optional extensions, CRLF.
        let line_end = loop {
            if let Some(p) = find_crlf(&c.buf[at..]) {
                break at + p;
            }
            fill(c).await?;
        };
        let line = std::str::from_utf8(&c.buf[at..line_end])
            .map_err(|_| Http1Error::Lost("unreadable chunk size".into()))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| Http1Error::Lost("unreadable chunk size".into()))?;
        at = line_end + 2;
        if size == 0 {
            // Trailers, each a line, until an empty line.
            loop {
                let end = loop {
                    if let Some(p) = find_crlf(&c.buf[at..]) {
                        break at + p;
                    }
                    fill(c).await?;
                };
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Ok((body, at));
                }
            }
        }
        if body.len() + size > max_body {
            return Err(Http1Error::Lost("answer body too long".into()));
        }
        while c.buf.len() < at + size + 2 {
            fill(c).await?;
        }
        body.extend_from_slice(&c.buf[at..at + size]);
        if &c.buf[at + size..at + size + 2] != b"\r\n" {
            return Err(Http1Error::Lost("malformed chunk".into()));
        }
        at += size + 2;
    }
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

/// The TLS settings of every connection: the platform's root certificates (as the SDK's own
/// client uses) with rustls' ring provider, TLS 1.2 and 1.3, HTTP/1.1 only.
pub fn tls_connector() -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        // A certificate the store cannot use is skipped, as the SDK's client does.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err("no usable platform root certificates".into());
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Where to connect for an endpoint's scheme and authority (`host`, `host:port`,
/// `[v6]:port`); `None` for a scheme other than http and https, an unreadable port, or
/// when the platform's root certificates cannot be read.
pub(crate) fn connect_to(scheme: &str, authority: &str) -> Option<Endpoint> {
    let (default_port, tls) = match scheme {
        "http" => (80, false),
        "https" => (443, true),
        _ => return None,
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, port.parse().ok()?),
        _ => (authority, default_port),
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let tls = if tls {
        let name = rustls::pki_types::ServerName::try_from(host.clone()).ok()?;
        Some((tls_connector().ok()?, name))
    } else {
        None
    };
    Some(Endpoint { host, port, tls })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each request with the next of `answers` (raw bytes), keeping
    /// the connection open until the last answer; counts the connections it accepted.
    async fn server(
        answers: Vec<&'static [u8]>,
    ) -> (Endpoint, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let answers = Arc::new(Mutex::new(answers.into_iter()));
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answers = answers.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        // One request per read is enough for these small requests.
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        let (next, last) = {
                            let mut answers = answers.lock().unwrap();
                            let next = answers.next();
                            (next, answers.len() == 0)
                        };
                        match next {
                            Some(answer) => socket.write_all(answer).await.unwrap(),
                            None => return,
                        }
                        if last {
                            // The last answer: end the connection, as a server going away.
                            return;
                        }
                    }
                });
            }
        });
        let endpoint = Endpoint {
            host: "127.0.0.1".into(),
            port,
            tls: None,
        };
        (endpoint, accepted)
    }

    const REQUEST: &[u8] = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}";

    #[tokio::test]
    async fn answers_framed_by_length_or_chunks_are_read_whole_and_the_connection_reused() {
        // Given a server answering first with a content-length, then chunked with a trailer
        let (endpoint, accepted) = server(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nx-t: 1\r\n\r\n",
        ])
        .await;
        let pool = Http1Pool::new(endpoint, 4);
        // When two requests are sent one after the other
        let first = pool.send(REQUEST).await.unwrap();
        let second = pool.send(REQUEST).await.unwrap();
        // Then both answers are whole, and one connection carried both
        assert_eq!((first.status, &first.body[..]), (200, &b"hello"[..]));
        assert_eq!((second.status, &second.body[..]), (400, &b"abcde"[..]));
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answer_to_head_has_no_body_whatever_its_length_says() {
        // Given a server answering two HEADs with the object's length and no body, back to
        // back on one connection
        let (endpoint, accepted) = server(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 40000\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 120\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ])
        .await;
        let pool = Http1Pool::new(endpoint, 4);
        let head = b"HEAD /b/k HTTP/1.1\r\nhost: x\r\n\r\n";
        // When they are sent, Then each answer ends at its head and the connection is reused
        // (waiting for 40,000 bytes that never come would hang here)
        let found = tokio::time::timeout(Duration::from_secs(5), pool.send_head(head))
            .await
            .expect("the answer ends at its head")
            .unwrap();
        assert_eq!((found.status, found.body.len()), (200, 0));
        let missing = pool.send_head(head).await.unwrap();
        assert_eq!((missing.status, missing.body.len()), (404, 0));
        pool.send(REQUEST).await.unwrap();
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_with_bytes_past_its_answer_is_not_reused() {
        // Given a server whose chunked answer is followed by stray bytes
        let (endpoint, accepted) = server(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ])
        .await;
        let pool = Http1Pool::new(endpoint, 4);
        // When two requests are sent
        let first = pool.send(REQUEST).await.unwrap();
        let second = pool.send(REQUEST).await.unwrap();
        // Then the stray bytes were never read as the second answer: it came on a new connection
        assert_eq!(&first.body[..], b"{}");
        assert_eq!(&second.body[..], b"ok");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_server_closes_is_not_reused() {
        // Given a server that says it closes after its answer (and does)
        let (endpoint, accepted) = server(vec![
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        ])
        .await;
        let pool = Http1Pool::new(endpoint, 4);
        // When two requests are sent
        pool.send(REQUEST).await.unwrap();
        let second = pool.send(REQUEST).await.unwrap();
        // Then the second went over a new connection
        assert_eq!(second.status, 200);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_answer_cut_short_is_lost_not_refused() {
        // Given a server whose answer ends before its content-length says
        let (endpoint, _) =
            server(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"par"]).await;
        let pool = Http1Pool::new(endpoint, 4);
        // When a request is sent, then its outcome is unknown (it may have been applied)
        let err = pool.send(REQUEST).await.unwrap_err();
        assert!(matches!(err, Http1Error::Lost(_)), "{err}");
    }

    #[tokio::test]
    async fn an_endpoint_nobody_listens_on_fails_to_connect() {
        // Given a port with no listener
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let pool = Http1Pool::new(
            Endpoint {
                host: "127.0.0.1".into(),
                port,
                tls: None,
            },
            4,
        );
        // When a request is sent, then it never left
        let err = pool.send(REQUEST).await.unwrap_err();
        assert!(matches!(err, Http1Error::Connect(_)), "{err}");
    }
    #[test]
    fn an_endpoint_connects_to_its_host_and_port_with_tls_only_for_https() {
        let plain = connect_to("http", "127.0.0.1:5050").unwrap();
        assert_eq!(
            (plain.host.as_str(), plain.port, plain.tls.is_none()),
            ("127.0.0.1", 5050, true)
        );
        let v6 = connect_to("http", "[::1]:8000").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 8000));
        let bare_v6 = connect_to("http", "[::1]").unwrap();
        assert_eq!((bare_v6.host.as_str(), bare_v6.port), ("::1", 80));
        assert_eq!(connect_to("http", "localhost").unwrap().port, 80);
        assert!(connect_to("ftp", "localhost").is_none());
        assert!(connect_to("http", "localhost:port").is_none());
        // https verifies the endpoint's name against the platform's roots
        let tls = connect_to("https", "dynamodb.eu-west-1.amazonaws.com")
            .expect("the platform's root certificates are readable here");
        assert_eq!(tls.port, 443);
        assert!(tls.tls.is_some());
    }
}
