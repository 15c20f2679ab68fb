//! The event-source mapping's decisions, apart from any I/O: what the next batch of a shard or
//! partition is, and what an invocation's answer does to the checkpoint — the semantics the
//! loader is built against on AWS (see `../shared/reference/esm-facts.md`):
//!
//! - a batch is at most `batch_size` records and at most the 6 MB invocation payload;
//! - success (an empty or absent `batchItemFailures`) checkpoints past the batch;
//! - a partial-batch response checkpoints before the lowest reported record and redelivers
//!   everything from it (successes after it included);
//! - a function error, a timeout or a crashed sandbox fails the whole batch; with
//!   `bisect_on_error` it is split in two and each half is retried on its own, recursively,
//!   until a failing batch is a single record;
//! - after `max_retry_attempts` failed attempts without progress (with bisect: of a batch that
//!   cannot be split further — our reading, AWS does not spell it out), or when the first
//!   record is older than `max_record_age`, the records are skipped and described to the
//!   on-failure destination (metadata only, as AWS sends it).
//!
//! The unit tests here are the mapping's own contract; `tests/` runs the same decisions
//! against the real function binaries.

use std::time::Duration;

/// Lambda's cap on the invocation payload of an event-source mapping.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// Lambda's cap on a mapping's batch size (Kinesis and Kafka).
pub const MAX_BATCH_SIZE: usize = 10_000;

/// The mapping's settings, named as in `AWS::Lambda::EventSourceMapping`.
#[derive(Debug, Clone, PartialEq)]
pub struct MappingSettings {
    /// `BatchSize`
    pub batch_size: usize,
    /// `MaximumBatchingWindowInSeconds`
    pub batching_window: Duration,
    /// `MaximumRetryAttempts` (`None` = -1, forever)
    pub max_retry_attempts: Option<u32>,
    /// `MaximumRecordAgeInSeconds` (`None` = -1, forever)
    pub max_record_age: Option<Duration>,
    /// `BisectBatchOnFunctionError`
    pub bisect_on_error: bool,
    /// The function's timeout: an invocation still running then is a failure.
    pub function_timeout: Duration,
}

impl Default for MappingSettings {
    fn default() -> Self {
        Self {
            batch_size: 100,
            batching_window: Duration::from_millis(500),
            max_retry_attempts: None,
            max_record_age: None,
            bisect_on_error: false,
            function_timeout: Duration::from_secs(60),
        }
    }
}

/// How the mapping reads an invocation's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Every record done (an empty, null or absent `batchItemFailures`).
    Success,
    /// Records before this index are done; this one and all after it are redelivered.
    FailedFrom(usize),
    /// The whole batch failed: a function error, a timeout, a crashed sandbox, or a
    /// failure identifier naming no record of the batch.
    Failed(String),
}

/// Why records were skipped (the `condition` of the on-failure message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipCondition {
    RetryAttemptsExhausted,
    RecordAgeExceeded,
}

impl SkipCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipCondition::RetryAttemptsExhausted => "RetryAttemptsExhausted",
            SkipCondition::RecordAgeExceeded => "RecordAgeExceeded",
        }
    }
}

/// What happened to a batch after its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// This many records from the start of the batch are done.
    Advance(usize),
    /// Nothing advanced; the batch (or its first half) is tried again.
    Retry,
    /// This many records from the start are skipped and reported to the destination.
    Skip(usize, SkipCondition),
}

/// One shard's or partition's retry state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    /// Failed attempts in a row without progress.
    pub attempts: u32,
    /// After a bisect: the lengths of the halves still to try, from the checkpoint on (the
    /// last is the next batch).
    pub halves: Vec<usize>,
    /// Invocations in all (for the on-failure message's `approximateInvokeCount`).
    pub invocations: u64,
}

impl UnitState {
    /// How many of the `available` records (with their encoded sizes) the next batch takes:
    /// the batch size, the half being retried and the payload limit, at least one record.
    pub fn next_batch_len(
        &self,
        settings: &MappingSettings,
        sizes: &[usize],
        overhead: usize,
    ) -> usize {
        let limit = settings
            .batch_size
            .min(self.halves.last().copied().unwrap_or(usize::MAX))
            .min(sizes.len());
        let mut bytes = overhead;
        let mut n = 0;
        for size in &sizes[..limit] {
            if n > 0 && bytes + size > MAX_PAYLOAD_BYTES {
                break;
            }
            bytes += size;
            n += 1;
        }
        n
    }

    /// Records at the head of the batch whose age (from their arrival) exceeds the limit.
    pub fn expired(settings: &MappingSettings, ages: &[Duration]) -> usize {
        match settings.max_record_age {
            None => 0,
            Some(limit) => ages.iter().take_while(|a| **a > limit).count(),
        }
    }

    /// `n` records from the checkpoint are settled: they leave the half being retried.
    fn settle(&mut self, mut n: usize) {
        while n > 0 {
            let Some(top) = self.halves.last_mut() else {
                return;
            };
            if *top > n {
                *top -= n;
                return;
            }
            n -= *top;
            self.halves.pop();
        }
    }

    /// Applies the answer to a batch of `len` records.
    pub fn after(&mut self, settings: &MappingSettings, len: usize, answer: &Answer) -> Verdict {
        self.invocations += 1;
        let done = match answer {
            Answer::Success => len,
            Answer::FailedFrom(i) if *i < len => *i,
            Answer::FailedFrom(_) | Answer::Failed(_) => 0,
        };
        if done > 0 {
            self.attempts = 0;
            self.settle(done);
            return Verdict::Advance(done);
        }
        if settings.bisect_on_error && matches!(answer, Answer::Failed(_)) && len > 1 {
            // The failed batch is replaced by its two halves, the first tried next.
            self.settle(len);
            let first = len.div_ceil(2);
            self.halves.push(len - first);
            self.halves.push(first);
            return Verdict::Retry;
        }
        self.attempts += 1;
        if settings
            .max_retry_attempts
            .is_some_and(|max| self.attempts > max)
        {
            self.attempts = 0;
            self.settle(len);
            return Verdict::Skip(len, SkipCondition::RetryAttemptsExhausted);
        }
        Verdict::Retry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> MappingSettings {
        MappingSettings {
            batch_size: 10,
            max_retry_attempts: Some(2),
            bisect_on_error: true,
            ..MappingSettings::default()
        }
    }

    #[test]
    fn a_partial_answer_checkpoints_before_the_lowest_failure() {
        let mut s = UnitState::default();
        assert_eq!(
            s.after(&settings(), 10, &Answer::FailedFrom(4)),
            Verdict::Advance(4)
        );
        assert_eq!(s.attempts, 0);
    }

    #[test]
    fn a_failure_identifier_outside_the_batch_fails_the_whole_batch() {
        let mut s = UnitState::default();
        assert_eq!(
            s.after(&settings(), 3, &Answer::FailedFrom(7)),
            Verdict::Retry
        );
        assert_eq!(s.attempts, 1);
    }

    #[test]
    fn an_error_bisects_until_the_failing_record_stands_alone_then_its_retries_run_out() {
        // Given 8 records of which the 3rd fails any batch holding it
        let st = settings();
        let mut s = UnitState::default();
        let mut checkpoint = 0usize;
        let mut skipped = Vec::new();
        let mut tried = Vec::new();
        // When the mapping works through them
        while checkpoint < 8 {
            let n = s.next_batch_len(&st, &vec![1; 8 - checkpoint], 0);
            tried.push((checkpoint, n));
            let answer = if (checkpoint..checkpoint + n).contains(&2) {
                Answer::Failed("boom".into())
            } else {
                Answer::Success
            };
            match s.after(&st, n, &answer) {
                Verdict::Advance(k) => checkpoint += k,
                Verdict::Retry => {}
                Verdict::Skip(k, c) => {
                    assert_eq!(c, SkipCondition::RetryAttemptsExhausted);
                    skipped.push((checkpoint, k));
                    checkpoint += k;
                }
            }
        }
        // Then halves are tried on their own: 8, 4, 2, then the 3rd alone 3 times (2 retries),
        // and only it is skipped
        assert_eq!(
            tried,
            vec![
                (0, 8),
                (0, 4),
                (0, 2),
                (2, 2),
                (2, 1),
                (2, 1),
                (2, 1),
                (3, 1),
                (4, 4)
            ]
        );
        assert_eq!(skipped, vec![(2, 1)]);
        assert!(s.halves.is_empty());
    }

    #[test]
    fn without_a_retry_limit_a_failing_batch_is_retried_forever() {
        let st = MappingSettings::default();
        let mut s = UnitState::default();
        for _ in 0..100 {
            assert_eq!(s.after(&st, 4, &Answer::Failed("x".into())), Verdict::Retry);
        }
        assert!(s.halves.is_empty(), "no bisect unless asked");
    }

    #[test]
    fn a_batch_stops_at_the_payload_limit_but_takes_at_least_one_record() {
        let st = MappingSettings {
            batch_size: 10_000,
            ..MappingSettings::default()
        };
        let s = UnitState::default();
        let mb = 1024 * 1024;
        assert_eq!(
            s.next_batch_len(&st, &[2 * mb, 2 * mb, 2 * mb, 2 * mb], 100),
            2
        );
        assert_eq!(s.next_batch_len(&st, &[7 * mb, 1], 0), 1);
        assert_eq!(s.next_batch_len(&st, &[], 0), 0);
    }

    #[test]
    fn records_older_than_the_age_limit_are_counted_from_the_head() {
        let st = MappingSettings {
            max_record_age: Some(Duration::from_secs(60)),
            ..MappingSettings::default()
        };
        let ages = [120, 90, 30, 100].map(Duration::from_secs);
        assert_eq!(UnitState::expired(&st, &ages), 2);
        assert_eq!(UnitState::expired(&MappingSettings::default(), &ages), 0);
    }
}
