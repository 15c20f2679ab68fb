//! Wake pacing: fewer, fuller wake-ups while many conditional writes are in flight.
//!
//! Why this exists: the claims phase keeps [`PipelineSettings::claim_concurrency`] writes in
//! flight and, left alone, the function goes idle and is woken once per answer. Each of those
//! idle → woken cycles costs far more CPU than the answer's own work (≈80 µs against ≈17 µs of
//! work per record on the bench host, BENCHMARKS.md §5: the code runs on cold caches after
//! whatever ran in between); below one vCPU, that CPU is what the billed duration is made of.
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
//! Where the endpoint holds a queue of our writes — it takes them one at a time, as a local
//! emulator does — the pause costs nothing until that queue runs dry: a write's time in
//! flight (from Little's law, `in_flight / rate`) at least four times the phase's
//! quickest answer says so, and the pause may then be half the time a write waits behind the
//! others, up to [`PacingConfig::max_queue_pause`] (100 ms). Where each write takes about the
//! same round trip (DynamoDB answering concurrently) that rule never applies.
//!
//! No pause is taken when fewer than [`PacingConfig::min_in_flight`] writes are in flight (a
//! single round trip, the tail of the phase, the rest of the invocation and the wait for the
//! next one are never delayed), before the rate is known, or when the answers come so slowly
//! that even [`PacingConfig::max_pause`] would not collect more than one (a pause would then be
//! one more wake-up, not one fewer). Nothing here changes what is written or when a call is
//! cut off beyond the pause itself, which is bounded by `max_pause` / `max_queue_pause` (20 /
//! 100 ms by default, against a finish margin of 3 s and leases of seconds).
//!
//! [`PipelineSettings::claim_concurrency`]: crate::PipelineSettings::claim_concurrency
//!
//! ```
//! use std::collections::VecDeque;
//! use std::time::{Duration, Instant};
//! use streamload_core::pacing::{PacingConfig, WakePacer};
//!
//! let pacer = WakePacer::new(PacingConfig::DEFAULT);
//! let ms = |n: u64| Instant::now() + Duration::from_millis(n);
//! // 64 writes in flight, each answered in 64 ms: 1,000 answers a second.
//! let mut writes: VecDeque<_> = (0..64).map(|j| pacer.start_at(ms(j))).collect();
//! let mut pause = Duration::ZERO;
//! for n in 64..=74 {
//!     writes.pop_front().unwrap().end_at(ms(n)); // one answer handled…
//!     writes.push_back(pacer.start_at(ms(n))); // …and the next write sent in its place
//!     pause = pacer.pause(ms(n));
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
    /// The longest pause sized by [`Self::answers_per_wake`].
    pub max_pause: Duration,
    /// The longest pause while the endpoint holds a queue of our writes (see the module doc).
    pub max_queue_pause: Duration,
}

impl PacingConfig {
    /// Four answers a wake-up, from 32 writes in flight, pauses of at most 20 ms; up to 100 ms
    /// while the endpoint holds a queue of our writes.
    pub const DEFAULT: Self = Self {
        answers_per_wake: 4.0,
        min_in_flight: 32,
        max_pause: Duration::from_millis(20),
        max_queue_pause: Duration::from_millis(100),
    };

    /// `answers` a wake-up, with a longest pause of 5 ms per answer (so an endpoint answering
    /// 200 a second, one at a time, still fills a pause) and [`Self::DEFAULT`]'s threshold
    /// and queue rule.
    ///
    /// ```
    /// use std::time::Duration;
    /// use streamload_core::pacing::PacingConfig;
    /// assert_eq!(PacingConfig::answers(8).max_pause, Duration::from_millis(40));
    /// assert_eq!(PacingConfig::answers(4), PacingConfig::DEFAULT);
    /// ```
    pub fn answers(answers: u32) -> Self {
        Self {
            answers_per_wake: f64::from(answers),
            max_pause: PAUSE_PER_ANSWER * answers,
            ..Self::DEFAULT
        }
    }
}

/// The longest pause of [`PacingConfig::answers`], per answer it aims to collect.
const PAUSE_PER_ANSWER: Duration = Duration::from_millis(5);

impl Default for PacingConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Rate samples needed before the first pause.
const WARM_UP_SAMPLES: u32 = 4;
/// Weight of the newest sample in the answer-rate average.
const RATE_WEIGHT: f64 = 0.25;
/// A write's time in flight at least this many times the phase's quickest answer means the
/// endpoint holds a queue of our writes (latency varies by less than this where it does not).
const QUEUE_RATIO: f64 = 4.0;
/// No quickest answer seen in this phase yet.
const UNKNOWN: u64 = u64::MAX;

/// The writes in flight and the answers so far, shared by the pipeline (which counts them,
/// through [`WakePacer::start`]) and the runtime's park hook (which asks [`WakePacer::pause`]).
/// `const`-constructible so a process can keep one in a `static`.
#[derive(Debug)]
pub struct WakePacer {
    in_flight: AtomicUsize,
    answered: AtomicU64,
    /// The quickest answer since the phase began (ns; [`UNKNOWN`] before the first).
    quickest_ns: AtomicU64,
    rate: Mutex<RateState>,
}

#[derive(Debug)]
struct RateState {
    config: PacingConfig,
    /// When the last park asked, and how many answers had come by then.
    last: Option<(Instant, u64)>,
    /// Answers per second, averaged over recent parks.
    answers_per_s: f64,
    samples: u32,
}

/// One write in flight; dropping it counts its answer (whatever it was) at the time of the
/// drop, [`InFlight::end_at`] at a given time.
#[derive(Debug)]
#[must_use = "the write counts as in flight until this is dropped"]
pub struct InFlight<'a> {
    pacer: &'a WakePacer,
    sent: Instant,
}

impl InFlight<'_> {
    /// The write's answer (or its end) came at `now`.
    pub fn end_at(self, now: Instant) {
        self.end(now);
        // Counted: the drop must not count it again.
        std::mem::forget(self);
    }

    fn end(&self, now: Instant) {
        let took = u64::try_from(now.saturating_duration_since(self.sent).as_nanos())
            .unwrap_or(UNKNOWN - 1);
        self.pacer.quickest_ns.fetch_min(took, Ordering::Relaxed);
        self.pacer.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.pacer.answered.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.end(Instant::now());
    }
}

impl WakePacer {
    pub const fn new(config: PacingConfig) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            answered: AtomicU64::new(0),
            quickest_ns: AtomicU64::new(UNKNOWN),
            rate: Mutex::new(RateState {
                config,
                last: None,
                answers_per_s: 0.0,
                samples: 0,
            }),
        }
    }

    /// Replaces the configuration (start-up: the process's one pacer is a `static`).
    pub fn configure(&self, config: PacingConfig) {
        if let Ok(mut state) = self.rate.lock() {
            state.config = config;
            state.samples = 0;
        }
    }

    /// A write is sent now: it counts as in flight until the guard is dropped.
    pub fn start(&self) -> InFlight<'_> {
        self.start_at(Instant::now())
    }

    /// A write is sent at `now`.
    pub fn start_at(&self, now: Instant) -> InFlight<'_> {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
            // A new phase: the endpoint's queue, if any, is empty again.
            self.quickest_ns.store(UNKNOWN, Ordering::Relaxed);
        }
        InFlight {
            pacer: self,
            sent: now,
        }
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
        let quickest_ns = self.quickest_ns.load(Ordering::Relaxed);
        let Ok(mut state) = self.rate.lock() else {
            return Duration::ZERO;
        };
        let previous = state.last.replace((now, answered));
        let config = state.config;
        if in_flight < config.min_in_flight {
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
        let rate = state.answers_per_s;
        if state.samples < WARM_UP_SAMPLES || rate <= 0.0 {
            return Duration::ZERO;
        }
        let mut pause = (config.answers_per_wake / rate).min(config.max_pause.as_secs_f64());
        // Little's law: a write's time in flight now. Half of what it spends waiting behind
        // our own writes at the endpoint can be spent here without the endpoint running dry.
        let in_flight_s = in_flight as f64 / rate;
        let quickest_s = quickest_ns as f64 / 1e9;
        if quickest_ns != UNKNOWN && in_flight_s >= QUEUE_RATIO * quickest_s {
            let queued =
                ((in_flight_s - quickest_s) / 2.0).min(config.max_queue_pause.as_secs_f64());
            pause = pause.max(queued);
        }
        // A pause that would collect one answer or fewer only adds a wake-up.
        if rate * pause < 1.5 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives `pacer` through a phase with `in_flight` writes kept in flight, answered at
    /// `per_second`, asking at each answer; returns the last pause. `queued`: the endpoint
    /// takes the writes one at a time (all sent at once, each answered one interval after the
    /// last, a write waiting behind the others); else each write takes the same round trip
    /// (`in_flight` intervals: sent one interval apart, as a steady pipeline sends them).
    fn phase(
        pacer: &WakePacer,
        in_flight: usize,
        per_second: u64,
        answers: u64,
        queued: bool,
    ) -> Duration {
        let interval = Duration::from_nanos(1_000_000_000 / per_second);
        let start = Instant::now() + interval * in_flight as u32;
        let mut writes: std::collections::VecDeque<InFlight<'_>> = (0..in_flight)
            .map(|j| {
                let sent = if queued {
                    start
                } else {
                    start - interval * (in_flight - j) as u32
                };
                pacer.start_at(sent)
            })
            .collect();
        let mut pause = Duration::ZERO;
        for n in 1..=answers {
            let now = start + interval * n as u32;
            if let Some(write) = writes.pop_front() {
                write.end_at(now);
            }
            writes.push_back(pacer.start_at(now));
            pause = pacer.pause(now);
        }
        for write in writes {
            write.end_at(start + interval * answers as u32);
        }
        pause
    }

    #[test]
    fn a_full_pipeline_pauses_for_about_four_answers() {
        // Given 64 writes in flight, each answered in 4 ms: 16,000 answers a second
        let pacer = WakePacer::new(PacingConfig::DEFAULT);
        // When the runtime asks at every answer
        let pause = phase(&pacer, 64, 16_000, 200, false);
        // Then it waits about four answer intervals (250 µs)
        let micros = pause.as_micros();
        assert!((240..=260).contains(&micros), "{micros} µs");
    }

    #[test]
    fn a_slow_endpoint_without_a_queue_is_paused_for_at_most_the_maximum() {
        // Given answers at 150 a second, each write's round trip the same (64 / 150 s)
        let pacer = WakePacer::new(PacingConfig::DEFAULT);
        // When
        let pause = phase(&pacer, 64, 150, 40, false);
        // Then the pause is the maximum, which still collects three answers
        assert_eq!(pause, PacingConfig::DEFAULT.max_pause);
    }

    #[test]
    fn an_endpoint_holding_a_queue_of_our_writes_gets_a_longer_pause() {
        // Given an endpoint that takes writes one at a time, 250 a second (a serial emulator):
        // the first answer came in 4 ms, a write now waits 256 ms behind the others
        let pacer = WakePacer::new(PacingConfig::DEFAULT);
        // When
        let pause = phase(&pacer, 64, 250, 40, true);
        // Then the pause is the queue's maximum (half of a write's wait beyond the quickest
        // answer is 126 ms), which collects about 25 answers
        assert_eq!(pause, PacingConfig::DEFAULT.max_queue_pause);
    }

    #[test]
    fn a_new_phase_forgets_the_last_phases_quickest_answer() {
        // Given a phase whose first answer came in 62.5 µs, then every write answered
        let pacer = WakePacer::new(PacingConfig::DEFAULT);
        phase(&pacer, 64, 16_000, 200, true);
        assert_eq!(pacer.in_flight(), 0);
        // When the next phase's writes each take 64 ms, answered at 1,000 a second (against
        // the last phase's quickest answer, a queue)
        let pause = phase(&pacer, 64, 1_000, 40, false);
        // Then it is paced as an endpoint without a queue: four answers, 4 ms
        let micros = pause.as_micros();
        assert!((3_990..=4_010).contains(&micros), "{micros} µs");
    }

    #[test]
    fn answers_too_slow_to_collect_two_get_no_pause() {
        // Given answers at 50 a second: a 20 ms pause would collect one
        let pacer = WakePacer::new(PacingConfig::DEFAULT);
        // Then
        assert_eq!(phase(&pacer, 64, 50, 20, false), Duration::ZERO);
    }

    #[test]
    fn few_writes_in_flight_get_no_pause() {
        // Given 31 writes in flight (below min_in_flight), answered fast, queued or not
        let pacer = WakePacer::new(PacingConfig::DEFAULT);
        // Then the tail of a phase, or a lone round trip, is never delayed
        assert_eq!(phase(&pacer, 31, 16_000, 50, false), Duration::ZERO);
        assert_eq!(phase(&pacer, 31, 250, 50, true), Duration::ZERO);
    }

    #[test]
    fn no_pause_before_the_rate_is_known_and_after_the_phase() {
        // Given a fresh pacer and a full pipeline
        let pacer = WakePacer::new(PacingConfig::DEFAULT);
        // When fewer samples than the warm-up have come
        let pause = phase(&pacer, 64, 16_000, u64::from(WARM_UP_SAMPLES), false);
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
        assert_eq!(pacer.answered(), 3);
    }
}
