//! A stand-in Lambda Runtime API for the shipped binaries: it hands out one invocation and
//! captures what the function posts back, so a test can run a release-shaped `bootstrap` the
//! way Lambda does without an emulator.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Request id of the one invocation.
pub const REQUEST_ID: &str = "req-1";

/// What the function posted: the request line and the body.
pub type Posted = (String, String);

/// One HTTP request: its request line and body.
fn read_request(conn: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        if header == "\r\n" || header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((line.trim().to_owned(), body))
}

/// Serves `event` as the one invocation, with a deadline `deadline_in` from now, and returns
/// the first thing the function posts (its response or its error).
pub fn serve_one_invocation(
    event: String,
    deadline_in: Duration,
) -> (SocketAddr, JoinHandle<Posted>) {
    serve_one_invocation_as(event, deadline_in, REQUEST_ID)
}

/// [`serve_one_invocation`] with its own request id: two sandboxes racing for one batch.
pub fn serve_one_invocation_as(
    event: String,
    deadline_in: Duration,
    request_id: &str,
) -> (SocketAddr, JoinHandle<Posted>) {
    let request_id = request_id.to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stand-in API");
    let addr = listener.local_addr().expect("its address");
    let handle = std::thread::spawn(move || {
        let mut served = false;
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
            while let Some((line, body)) = read_request(&mut conn) {
                if line.starts_with("GET /2018-06-01/runtime/invocation/next") && !served {
                    served = true;
                    let deadline = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d + deadline_in)
                        .unwrap_or_default()
                        .as_millis();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         lambda-runtime-aws-request-id: {request_id}\r\n\
                         lambda-runtime-deadline-ms: {deadline}\r\n\
                         lambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:123456789012:function:loader\r\n\
                         content-length: {}\r\n\r\n",
                        event.len()
                    );
                    let _ = conn.write_all(head.as_bytes());
                    let _ = conn.write_all(event.as_bytes());
                } else if line.starts_with("POST") {
                    let _ = conn.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n");
                    return (line, String::from_utf8_lossy(&body).into_owned());
                } else {
                    // A second /next: there is nothing more; the test ends the process.
                    std::thread::sleep(Duration::from_secs(30));
                }
            }
        }
        (String::new(), String::new())
    });
    (addr, handle)
}

/// Runs `binary` against a stand-in API that hands it `event` (deadline inside the finish
/// margin, so it must answer without I/O) and returns what it posts first.
pub fn run_one_invocation(binary: &str, event: String) -> Posted {
    let (api, posted) = serve_one_invocation(event, Duration::from_millis(1000));
    let mut child = loader_command(binary, api).spawn().expect("run the binary");
    let result = posted.join().expect("the stand-in API thread");
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// The request line of a response posted for the one invocation.
pub fn response_line() -> String {
    format!("POST /2018-06-01/runtime/invocation/{REQUEST_ID}/response HTTP/1.1")
}

/// The function binary configured against `api`, with a valid configuration whose database
/// and AWS endpoint do not answer: what it can do without them is decode, decide and report.
pub fn loader_command(binary: &str, api: SocketAddr) -> Command {
    let mut c = Command::new(binary);
    c.env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "loader")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("DATABASE_URL", "postgres://u@127.0.0.1:1/db")
        .env("DEDUP_TABLE", "claims")
        .env("OUTPUT_BUCKET", "b")
        .env("DLQ_URL", "http://127.0.0.1:1/q")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("FINISH_MARGIN_MS", "3000")
        .stdout(std::process::Stdio::null());
    c
}
