//! Time as an input: the one clock the pipeline reads.
//!
//! Leases, deadlines and back-off all compare epoch milliseconds. Reading them through a
//! [`Clock`] lets a test move time instead of sleeping. [`SystemClock`] is production's: it
//! reads the system's wall clock on every call, so a sandbox thawed after minutes, or a clock
//! stepped by NTP, is seen at once (leases compare clocks of different hosts). [`TokioClock`],
//! the tests' clock, follows tokio's timer: under `#[tokio::test(start_paused = true)]` the runtime advances its
//! paused time whenever every task waits, so a test crosses a lease or a deadline in no wall
//! time, and `now_ms` agrees with every `sleep` and `timeout` of the run.

use std::fmt::Debug;
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time in epoch milliseconds.
pub trait Clock: Send + Sync + Debug {
    fn now_ms(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// Epoch time read as the system's at creation plus tokio's elapsed time since.
///
/// ```
/// use streamload_core::clock::{Clock, TokioClock};
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let clock = TokioClock::new();
/// let before = clock.now_ms();
/// tokio::time::sleep(std::time::Duration::from_secs(60)).await; // paused: no wall time
/// assert!(clock.now_ms() - before >= 60_000);
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    epoch_ms: i64,
    base: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> Self {
        Self {
            epoch_ms: SystemClock.now_ms(),
            base: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        self.epoch_ms + self.base.elapsed().as_millis() as i64
    }
}
