//! A Lambda sandbox on this machine: the real function binary as a child process, served by an
//! emulator of the Lambda Runtime API (`/2018-06-01/runtime/...`) on its own port. One
//! invocation at a time, as Lambda runs one per execution environment; a timeout or a crash
//! kills the process and the next invocation starts a fresh one (a new sandbox, a cold start).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, Mutex, Notify};

/// What the function answered, or how the invocation ended without an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The body posted to `/response`.
    Response(String),
    /// The body posted to `/error` (or `/init/error`).
    FunctionError(String),
    /// No answer within the function timeout: the sandbox was killed.
    Timeout,
    /// The function reported an error at start-up (`/runtime/init/error`, its body) and its
    /// process ended before taking the invocation: a failed cold start.
    InitError(String),
    /// The process exited (or was killed) before answering.
    Crashed(String),
}

struct Pending {
    request_id: String,
    deadline_ms: u128,
    body: String,
    reply: oneshot::Sender<Outcome>,
}

/// The emulated Runtime API of one sandbox.
struct Api {
    /// The next invocation to hand out on `/next`.
    slot: Mutex<Option<Pending>>,
    ready: Notify,
    /// Bumped when the process is killed: connections of a dead process take nothing more.
    generation: AtomicU64,
    /// Invocations handed out and not answered yet, by request id.
    open: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    /// The last `/runtime/init/error` body, posted before any invocation was taken.
    init_error: Mutex<Option<String>>,
}

/// The function's environment, binary and name.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    pub binary: std::path::PathBuf,
    pub name: String,
    pub env: Vec<(String, String)>,
    /// Where the function's stdout/stderr go (appended).
    pub log: std::path::PathBuf,
}

pub struct Sandbox {
    spec: FunctionSpec,
    port: u16,
    api: Arc<Api>,
    child: Option<Child>,
    counter: u64,
    /// Processes started so far (1 + restarts).
    pub starts: u32,
}

impl Sandbox {
    /// Binds the emulator on a free port; the process starts on the first invocation.
    pub async fn new(spec: FunctionSpec) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let api = Arc::new(Api {
            slot: Mutex::new(None),
            ready: Notify::new(),
            generation: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            init_error: Mutex::new(None),
        });
        let served = api.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let generation = served.generation.load(Ordering::SeqCst);
                tokio::spawn(serve(conn, served.clone(), generation));
            }
        });
        Ok(Self {
            spec,
            port,
            api,
            child: None,
            counter: 0,
            starts: 0,
        })
    }

    async fn ensure_running(&mut self) -> std::io::Result<()> {
        if let Some(child) = self.child.as_mut() {
            if child.try_wait()?.is_none() {
                return Ok(());
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log)?;
        let mut cmd = Command::new(&self.spec.binary);
        cmd.envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{}", self.port))
            .env("AWS_LAMBDA_FUNCTION_NAME", &self.spec.name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        self.child = Some(cmd.spawn()?);
        self.starts += 1;
        Ok(())
    }

    /// The id of the running process, if one runs: `/proc/<pid>` and cgroups measure and
    /// limit its CPU from outside (the invocation bench).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Kills the process (as Lambda reclaims a sandbox); the next invocation starts another.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        self.api.generation.fetch_add(1, Ordering::SeqCst);
        self.api.ready.notify_waiters();
    }

    /// Invokes the function with `event`, waiting at most `timeout`. With `kill_after`, the
    /// process is killed that long into the invocation (a sandbox lost mid-batch).
    pub async fn invoke(
        &mut self,
        event: String,
        timeout: Duration,
        kill_after: Option<Duration>,
    ) -> Outcome {
        if let Err(e) = self.ensure_running().await {
            return Outcome::Crashed(format!(
                "could not start {}: {e}",
                self.spec.binary.display()
            ));
        }
        self.counter += 1;
        let request_id = format!("local-{}-{}-{}", self.spec.name, self.port, self.counter);
        let (reply, answer) = oneshot::channel();
        let deadline_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| (d + timeout).as_millis())
            .unwrap_or_default();
        let pending = Pending {
            request_id: request_id.clone(),
            deadline_ms,
            body: event,
            reply,
        };
        *self.api.slot.lock().await = Some(pending);
        self.api.ready.notify_waiters();
        let kill_at = kill_after.unwrap_or(timeout + Duration::from_secs(3600));
        let child_exit = async {
            match self.child.as_mut() {
                Some(c) => c.wait().await.map(|s| s.to_string()).unwrap_or_default(),
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            a = answer => a.unwrap_or(Outcome::Crashed("no answer".into())),
            status = child_exit => match self.api.init_error.lock().await.take() {
                Some(body) => Outcome::InitError(body),
                None => Outcome::Crashed(format!("the process exited ({status})")),
            },
            _ = tokio::time::sleep(kill_at), if kill_after.is_some() => {
                Outcome::Crashed("sandbox killed mid-batch (--kill-after)".into())
            }
            _ = tokio::time::sleep(timeout) => Outcome::Timeout,
        };
        if !matches!(outcome, Outcome::Response(_) | Outcome::FunctionError(_)) {
            self.kill().await;
            // Whatever the dead process had taken, or not yet taken, is abandoned.
            self.api.open.lock().await.remove(&request_id);
            self.api.slot.lock().await.take();
        }
        outcome
    }
}

/// The next invocation for a connection of process `generation`, or `None` once that
/// process is dead.
async fn next_invocation(api: &Api, generation: u64) -> Option<Pending> {
    loop {
        if api.generation.load(Ordering::SeqCst) != generation {
            return None;
        }
        let notified = api.ready.notified();
        if let Some(p) = api.slot.lock().await.take() {
            return Some(p);
        }
        // Re-check now and then: a kill's notification may come before we wait.
        let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
    }
}

async fn serve(conn: TcpStream, api: Arc<Api>, generation: u64) {
    let (read, mut write) = conn.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).await.unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let response = if method == "GET" && path.ends_with("/runtime/invocation/next") {
            let Some(p) = next_invocation(&api, generation).await else {
                return;
            };
            api.open.lock().await.insert(p.request_id.clone(), p.reply);
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: {}\r\nLambda-Runtime-Deadline-Ms: {}\r\nLambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:000000000000:function:local\r\nLambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000\r\nContent-Length: {}\r\n\r\n{}",
                p.request_id,
                p.deadline_ms,
                p.body.len(),
                p.body
            )
        } else if method == "POST" {
            let text = String::from_utf8_lossy(&body).into_owned();
            let segments: Vec<&str> = path.split('/').collect();
            if path.ends_with("/init/error") {
                // A failed start-up answers every open invocation with the init error, and
                // is kept for the invocation waiting to be taken (the process exits next).
                *api.init_error.lock().await = Some(text.clone());
                for (_, reply) in api.open.lock().await.drain() {
                    let _ = reply.send(Outcome::FunctionError(text.clone()));
                }
            } else if let Some(pos) = segments.iter().position(|s| *s == "invocation") {
                let id = segments.get(pos + 1).copied().unwrap_or("");
                let kind = segments.get(pos + 2).copied().unwrap_or("");
                if let Some(reply) = api.open.lock().await.remove(id) {
                    let _ = reply.send(if kind == "response" {
                        Outcome::Response(text)
                    } else {
                        Outcome::FunctionError(text)
                    });
                }
            }
            "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
                .to_owned()
        } else {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned()
        };
        if write.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A function served by someone else's Runtime API emulator, invoked through the Lambda
/// Invoke API (`POST /2015-03-31/functions/<name>/invocations`): `cargo lambda watch`
/// listens there (port 9000 by default). The process is not ours, so it cannot be killed
/// mid-batch; a function error arrives as `X-Amz-Function-Error`.
pub struct RemoteFunction {
    pub endpoint: String,
    pub function_name: String,
}

impl RemoteFunction {
    pub async fn invoke(&self, event: String, timeout: Duration) -> Outcome {
        match tokio::time::timeout(timeout, self.post(event)).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => Outcome::Crashed(format!("invoke {}: {e}", self.endpoint)),
            Err(_) => Outcome::Timeout,
        }
    }

    async fn post(&self, event: String) -> std::io::Result<Outcome> {
        let hostport = self
            .endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let mut conn = TcpStream::connect(&hostport).await?;
        let request = format!(
            "POST /2015-03-31/functions/{}/invocations HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{event}",
            self.function_name,
            event.len()
        );
        conn.write_all(request.as_bytes()).await?;
        let mut reader = BufReader::new(conn);
        let mut status = String::new();
        reader.read_line(&mut status).await?;
        let (mut length, mut function_error, mut chunked) = (None, false, false);
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).await? == 0 || header == "\r\n" {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
            function_error |= lower.starts_with("x-amz-function-error:");
            chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).await?;
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                if n == 0 {
                    break;
                }
                let mut chunk = vec![0; n + 2];
                reader.read_exact(&mut chunk).await?;
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            reader.read_exact(&mut body).await?;
        } else {
            reader.read_to_end(&mut body).await?;
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        Ok(if !status.contains(" 200") {
            Outcome::Crashed(format!(
                "{}: {}",
                status.trim(),
                text.chars().take(200).collect::<String>()
            ))
        } else if function_error {
            Outcome::FunctionError(text)
        } else {
            Outcome::Response(text)
        })
    }
}
