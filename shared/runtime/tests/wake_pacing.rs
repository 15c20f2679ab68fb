//! Wake pacing on the function's real runtime: the park hook `runtime_builder` installs must
//! cut the thread's sleeps per answer, whether the endpoint queues our writes or answers them
//! concurrently, and lose no answer.
//!
//! The endpoint is a thread of its own that answers through oneshot channels, so each answer
//! wakes the runtime's thread through its driver as a socket's readiness does; the count is
//! the kernel's (voluntary context switches of the runtime's thread, `/proc/thread-self`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use streamload_core::pacing::PacingConfig;
use streamload_runtime::{runtime_builder, WAKE_PACER};
use tokio::sync::oneshot;

/// The tests share the process's one pacer: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Writes kept in flight, as the claims phase does by default.
const IN_FLIGHT: usize = 64;
/// Writes per measured phase.
const WRITES: usize = 3_000;

#[derive(Clone, Copy)]
enum Endpoint {
    /// Takes the writes one at a time, one answer per interval (a serial emulator).
    Serial(Duration),
    /// Answers every write this long after it arrived, many at once (DynamoDB).
    Concurrent(Duration),
}

/// Runs the endpoint thread until every sender of its requests is gone.
fn serve(endpoint: Endpoint, requests: mpsc::Receiver<oneshot::Sender<()>>) {
    match endpoint {
        Endpoint::Serial(interval) => {
            while let Ok(answer) = requests.recv() {
                std::thread::sleep(interval);
                let _ = answer.send(());
            }
        }
        Endpoint::Concurrent(latency) => {
            // Each write's own latency: `latency` ± 40%, so the answers spread in time as a
            // real service's do instead of coming back in the bursts they were sent in.
            let mut due: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
            let mut answers: HashMap<u64, oneshot::Sender<()>> = HashMap::new();
            let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
            let mut next_id: u64 = 0;
            let mut open = true;
            while open || !due.is_empty() {
                let next = match due.peek() {
                    Some(Reverse((at, _))) => {
                        requests.recv_timeout(at.saturating_duration_since(Instant::now()))
                    }
                    None => requests
                        .recv()
                        .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                };
                match next {
                    Ok(answer) => {
                        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        let spread = (seed >> 33) % 800; // ‰ of the latency, 0..0.8
                        let took = latency.mul_f64(0.6 + spread as f64 / 1000.0);
                        due.push(Reverse((Instant::now() + took, next_id)));
                        answers.insert(next_id, answer);
                        next_id += 1;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        open = false;
                        if let Some(Reverse((at, _))) = due.peek() {
                            std::thread::sleep(at.saturating_duration_since(Instant::now()));
                        }
                    }
                }
                let now = Instant::now();
                while due.peek().is_some_and(|Reverse((at, _))| *at <= now) {
                    if let Some(Reverse((_, id))) = due.pop() {
                        if let Some(answer) = answers.remove(&id) {
                            let _ = answer.send(());
                        }
                    }
                }
            }
        }
    }
}

fn voluntary_switches() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status")
        .unwrap_or_else(|e| panic!("/proc/thread-self/status: {e} (Linux only)"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no voluntary_ctxt_switches in {status}"))
}

/// One claims-like phase on a runtime built by `runtime_builder(0, pacing)`: `WRITES` writes,
/// `IN_FLIGHT` at a time, each counted by the pacer; returns the runtime thread's sleeps per
/// answer.
fn sleeps_per_answer(endpoint: Endpoint, pacing: Option<PacingConfig>) -> f64 {
    let (requests, incoming) = mpsc::channel::<oneshot::Sender<()>>();
    let server = std::thread::spawn(move || serve(endpoint, incoming));
    let runtime = runtime_builder(0, pacing)
        .enable_all()
        .build()
        .expect("runtime");
    let answered_before = WAKE_PACER.answered();
    let sent = Arc::new(AtomicUsize::new(0));
    let switches = runtime.block_on(async {
        let before = voluntary_switches();
        let workers: Vec<_> = (0..IN_FLIGHT)
            .map(|_| {
                let (requests, sent) = (requests.clone(), sent.clone());
                tokio::spawn(async move {
                    while sent.fetch_add(1, Ordering::Relaxed) < WRITES {
                        let _in_flight = WAKE_PACER.start();
                        let (answer, answered) = oneshot::channel();
                        requests.send(answer).expect("endpoint gone");
                        answered.await.expect("endpoint dropped a write");
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.expect("worker");
        }
        voluntary_switches() - before
    });
    drop(requests);
    server.join().expect("endpoint thread");
    // Every write was answered and none is left counted in flight.
    assert_eq!(WAKE_PACER.answered() - answered_before, WRITES as u64);
    assert_eq!(WAKE_PACER.in_flight(), 0);
    switches as f64 / WRITES as f64
}

fn compare(endpoint: Endpoint) -> (f64, f64) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let unpaced = sleeps_per_answer(endpoint, None);
    let paced = sleeps_per_answer(endpoint, Some(PacingConfig::DEFAULT));
    eprintln!("sleeps per answer: unpaced {unpaced:.3}, paced {paced:.3}");
    (unpaced, paced)
}

#[test]
fn a_serial_endpoint_wakes_the_paced_runtime_far_less_often() {
    // Given an endpoint taking our 64 writes one at a time, one every 200 µs
    // When the same phase runs without and with pacing
    let (unpaced, paced) = compare(Endpoint::Serial(Duration::from_micros(200)));
    // Then unpaced the thread sleeps about once per answer, paced a small fraction of that
    // (the queue rule: pauses of half the queue wait collect tens of answers)
    assert!(unpaced > 0.5, "unpaced: {unpaced:.3} sleeps per answer");
    assert!(
        paced < unpaced / 4.0,
        "paced {paced:.3} vs unpaced {unpaced:.3}"
    );
}

#[test]
fn a_concurrent_endpoint_wakes_the_paced_runtime_less_often() {
    // Given an endpoint answering every write 5 ms after it came, many at once
    // When the same phase runs without and with pacing
    let (unpaced, paced) = compare(Endpoint::Concurrent(Duration::from_millis(5)));
    // Then pacing (about four answers a wake-up) cuts the sleeps per answer clearly
    assert!(
        paced < unpaced * 0.6,
        "paced {paced:.3} vs unpaced {unpaced:.3}"
    );
}
