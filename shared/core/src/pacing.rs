//! Wake pacing: fewer, fuller wake-ups while many conditional writes are in flight.
//!
//! Why this exists: the claims phase keeps [`PipelineSettings::claim_concurrency`] writes in
//! flight and, left alone, the function goes idle and is woken once per answer. Each of those
//! idle → woken cycles costs far more CPU than the answer's own work (≈80 µs against ≈17 µs of
//! work per record on the bench host, BENCHMARKS.md §5: the code runs on cold caches after
//! whatever ran in between), and on Lambda CPU is what the duration is billed on.
//!
//! With many writes in flight, handling the answers a few at a time costs no throughput: the
//! runtime's park hook asks [`WakePacer::pause`] how long to wait before it blocks for the
//! next event, and the answers that arrive meanwhile are handled in one wake-up. The pause is
//! sized from the answer rate just observed so that about [`PacingConfig::answers_per_wake`]
//! answers are waiting when it ends. Whether the endpoint is the bottleneck (answers come at
//! its pace, the writes queue there) or the round trip is (answers come at
//! `in_flight / latency`), a pause that collects `k` answers delays each write by about `k /
//! 2` answer intervals out of the `in_flight` intervals its round trip already takes, so
//! throughput drops by about `k / (2 · in_flight)`: ≈3% at 4 answers and 64 in flight.
//!
//! No pause is taken when fewer than [`PacingConfig::min_in_flight`] writes are in flight (a
//! single round trip, the tail of the phase, the rest of the invocation and the wait for the
//! next one are never delayed), before the rate is known, or when the answers come so slowly
//! that even [`PacingConfig::max_pause`] would not collect more than one (a pause would then be
//! one more wake-up, not one fewer). Nothing here changes what is written or when a call is
//! cut off beyond the pause itself, which is bounded by `max_pause` (20 ms by default, against
//! deadlines and leases of seconds).
//!
//! [`PipelineSettings::claim_concurrency`]: crate::PipelineSettings::claim_concurrency
//!
//! ```
//! use std::time::{Duration, Instant};
//! use streamload_core::pacing::{PacingConfig, WakePacer};
//!
//! let pacer = WakePacer::new(PacingConfig::DEFAULT);
//! let start = Instant::now();
//! // 64 writes in flight, answered at 1,000 a second: one answer per millisecond.
//! let mut writes: Vec<_> = (0..64).map(|_| pacer.start()).collect();
//! let mut pause = Duration::ZERO;
//! for ms in 1..=10u64 {
//!     writes.remove(0); // one answer handled…
//!     writes.push(pacer.start()); // …and the next write sent in its place
//!     pause = pacer.pause(start + Duration::from_millis(ms));
//! }
//! // The runtime waits about four answers' worth before it blocks again.
//! let micros = pause.as_micros();
//! assert!((3_990..=4_010).contains(&micros), "{micros} µs");
//! ```

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How the pause is sized; [`PacingConfig::DEFAULT`] suits production.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacingConfig {
    /// Answers a pause aims to collect before the function wakes.
    pub answers_per_wake: f64,
    /// Fewer writes in flight than this: no pause.
    pub min_in_flight: usize,
    /// The longest pause.
    pub max_pause: Duration,
}

impl PacingConfig {
    /// Four answers a wake-up, from 32 writes in flight, pauses of at most 20 ms.
    pub const DEFAULT: Self = Self {
        answers_per_wake: 4.0,
        min_in_flight: 32,
        max_pause: Duration::from_millis(20),
    };
}

impl Default for PacingConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Rate samples needed before the first pause.
const WARM_UP_SAMPLES: u32 = 4;
/// Weight of the newest sample in the answer-rate average.
const RATE_WEIGHT: f64 = 0.25;

/// The writes in flight and the answers so far, shared by the pipeline (which counts them,
/// through [`WakePacer::start`]) and the runtime's park hook (which asks [`WakePacer::pause`]).
/// `const`-constructible so a process can keep one in a `static`.
#[derive(Debug)]
pub struct WakePacer {
    config: PacingConfig,
    in_flight: AtomicUsize,
    answered: AtomicU64,
    rate: Mutex<RateState>,
}

#[derive(Debug)]
struct RateState {
    /// When the last park asked, and how many answers had come by then.
    last: Option<(Instant, u64)>,
    /// Answers per second, averaged over recent parks.
    answers_per_s: f64,
    samples: u32,
}

/// One write in flight; dropping it counts its answer (whatever it was).
#[derive(Debug)]
#[must_use = "the write counts as in flight until this is dropped"]
pub struct InFlight<'a>(&'a WakePacer);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.answered.fetch_add(1, Ordering::Relaxed);
    }
}

impl WakePacer {
    pub const fn new(config: PacingConfig) -> Self {
        Self {
            config,
            in_flight: AtomicUsize::new(0),
            answered: AtomicU64::new(0),
            rate: Mutex::new(RateState {
                last: None,
                answers_per_s: 0.0,
                samples: 0,
            }),
        }
    }

    /// A write is sent: it counts as in flight until the guard is dropped.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Writes in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Writes answered (or given up) since the process started.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// How long the runtime should wait before it blocks for the next event, asked each time
    /// it is about to park (`now`: the time of asking). Zero unless enough writes are in
    /// flight and their answers come fast enough to collect more than one in a pause.
    pub fn pause(&self, now: Instant) -> Duration {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let answered = self.answered.load(Ordering::Relaxed);
        let Ok(mut state) = self.rate.lock() else {
            return Duration::ZERO;
        };
        let previous = state.last.replace((now, answered));
        if in_flight < self.config.min_in_flight {
            // Between phases the rate is stale: learn it again next time.
            state.samples = 0;
            return Duration::ZERO;
        }
        let Some((then, answered_then)) = previous else {
            return Duration::ZERO;
        };
        let elapsed = now.saturating_duration_since(then).as_secs_f64();
        if elapsed <= 0.0 {
            return Duration::ZERO;
        }
        let sample = answered.saturating_sub(answered_then) as f64 / elapsed;
        state.answers_per_s = if state.samples == 0 {
            sample
        } else {
            RATE_WEIGHT * sample + (1.0 - RATE_WEIGHT) * state.answers_per_s
        };
        state.samples = state.samples.saturating_add(1);
        if state.samples < WARM_UP_SAMPLES || state.answers_per_s <= 0.0 {
            return Duration::ZERO;
        }
        let max = self.config.max_pause.as_secs_f64();
        // A pause that would collect one answer or fewer only adds a wake-up.
        if state.answers_per_s * max < 1.5 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((self.config.answers_per_wake / state.answers_per_s).min(max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives `pacer` as a phase answered at `per_second` with `in_flight` writes kept in
    /// flight, asking at each answer; returns the last pause.
    fn steady(pacer: &WakePacer, in_flight: usize, per_second: u64, answers: u64) -> Duration {
        let start = Instant::now();
        let mut writes: Vec<InFlight<'_>> = (0..in_flight).map(|_| pacer.start()).collect();
        let mut pause = Duration::ZERO;
        for n in 1..=answers {
            writes.remove(0);
            writes.push(pacer.start());
            pause = pacer.pause(start + Duration::from_micros(n * 1_000_000 / per_second));
        }
        pause
    }

    #[test]
    fn a_full_pipeline_pauses_for_about_four_answers() {
        // Given 64 writes in flight answered at 16,000 a second (64 in flight, 4 ms each)
        let pacer = WakePacer::new(PacingConfig::DEFAULT);
        // When the runtime asks at every answer
        let pause = steady(&pacer, 64, 16_000, 50);
        // Then it waits about four answer intervals (250 µs)
        let micros = pause.as_micros();
        assert!((240..=260).contains(&micros), "{micros} µs");
    }

    #[test]
    fn a_slow_endpoint_is_paused_for_at_most_the_maximum() {
        // Given answers at 150 a second (a serial emulator): four take 26.7 ms
        let pacer = WakePacer::new(PacingConfig::DEFAULT);
        // When
        let pause = steady(&pacer, 64, 150, 20);
        // Then the pause is the maximum, which still collects three answers
        assert_eq!(pause, PacingConfig::DEFAULT.max_pause);
    }

    #[test]
    fn answers_too_slow_to_collect_two_get_no_pause() {
        // Given answers at 50 a second: a 20 ms pause would collect one
        let pacer = WakePacer::new(PacingConfig::DEFAULT);
        // Then
        assert_eq!(steady(&pacer, 64, 50, 20), Duration::ZERO);
    }

    #[test]
    fn few_writes_in_flight_get_no_pause() {
        // Given 31 writes in flight (below min_in_flight), answered fast
        let pacer = WakePacer::new(PacingConfig::DEFAULT);
        // Then the tail of a phase, or a lone round trip, is never delayed
        assert_eq!(steady(&pacer, 31, 16_000, 50), Duration::ZERO);
    }

    #[test]
    fn no_pause_before_the_rate_is_known_and_after_the_phase() {
        // Given a fresh pacer and a full pipeline
        let pacer = WakePacer::new(PacingConfig::DEFAULT);
        // When fewer samples than the warm-up have come
        let pause = steady(&pacer, 64, 16_000, u64::from(WARM_UP_SAMPLES) - 1);
        // Then no pause yet
        assert_eq!(pause, Duration::ZERO);
        // And once every write has been answered, nothing is in flight and nothing pauses
        assert_eq!(pacer.in_flight(), 0);
        assert_eq!(pacer.pause(Instant::now()), Duration::ZERO);
    }

    #[test]
    fn every_answer_counts_whatever_it_was() {
        // Given three writes sent
        let pacer = WakePacer::new(PacingConfig::DEFAULT);
        let writes: Vec<_> = (0..3).map(|_| pacer.start()).collect();
        assert_eq!(pacer.in_flight(), 3);
        // When their futures end (answered, failed or cut off: the guard is dropped)
        drop(writes);
        // Then none is in flight and three answers are counted
        assert_eq!(pacer.in_flight(), 0);
        assert_eq!(pacer.answered.load(Ordering::Relaxed), 3);
    }
}
