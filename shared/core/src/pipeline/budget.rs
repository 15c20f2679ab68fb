//! Time as the pipeline spends it: every outside call bounded by the time left before the
//! invocation's cutoff, and the in-budget retries (rounds with back-off, never past the
//! cutoff, remembering whether any attempt may have been applied).

use super::lease::Fence;
use super::*;
use crate::clock::Clock;

/// Until when a call may run: a fixed time (epoch ms), and, for every call that writes, the
/// holder's fence, which renewals move while the call runs.
#[derive(Clone, Copy)]
pub(crate) struct Until<'a> {
    clock: &'a dyn Clock,
    hard_ms: i64,
    fence: Option<&'a Fence>,
}

impl<'a> Until<'a> {
    /// Until `hard_ms`, whatever the lease: reads, and releases of our own claims (a release
    /// after a takeover finds another owner and changes nothing).
    pub(crate) fn at(clock: &'a dyn Clock, hard_ms: i64) -> Self {
        Self {
            clock,
            hard_ms,
            fence: None,
        }
    }

    /// Until `hard_ms` or the fence, whichever comes first.
    pub(crate) fn fenced(clock: &'a dyn Clock, hard_ms: i64, fence: &'a Fence) -> Self {
        Self {
            clock,
            hard_ms,
            fence: Some(fence),
        }
    }

    /// The limit as of now (epoch ms).
    pub(crate) fn limit_ms(&self) -> i64 {
        match self.fence {
            Some(f) => self.hard_ms.min(f.until_ms()),
            None => self.hard_ms,
        }
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Whether the limit has passed.
    pub(crate) fn passed(&self) -> bool {
        self.now_ms() > self.limit_ms()
    }
}

/// Runs `call` until `until`'s limit. The limit is looked at again when reached: a renewal
/// that moved the fence meanwhile lets the call go on. A call cut off may have taken effect:
/// its error is ambiguous. A call never started is a plain failure.
pub(crate) async fn bounded<T>(
    until: Until<'_>,
    call: impl Future<Output = Result<T, PortError>>,
) -> Result<T, PortError> {
    let mut call = std::pin::pin!(call);
    let mut started = false;
    loop {
        let left = until.limit_ms() - until.now_ms();
        if left <= 0 {
            return Err(if started {
                PortError::ambiguous("the call did not answer before the deadline or the fence")
            } else {
                PortError::retryable("no time left before the deadline or the fence")
            });
        }
        started = true;
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(left as u64), &mut call).await {
            return r;
        }
    }
}

/// Runs an idempotent `call` until it succeeds, fails permanently, runs out of rounds or
/// out of time (`until_ms`), each attempt bounded by the time left.
///
/// The final error is ambiguous if *any* round's was: an attempt cut off with its request
/// sent may still be applied after a later round was refused for a plain reason (a create-only
/// object write that timed out, then throttled), so the last error alone would say "not
/// written" about a write that may land.
pub(super) async fn in_budget<T, F, Fut>(
    policy: RetryPolicy,
    until: Until<'_>,
    mut call: F,
) -> Result<T, PortError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PortError>>,
{
    let mut round = 1;
    let mut maybe_applied = false;
    loop {
        let e = match bounded(until, call()).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        maybe_applied |= e.ambiguous;
        let pause = if e.is_retryable() {
            pause_before_retry(policy, round, until)
        } else {
            None
        };
        let Some(pause) = pause else {
            return Err(if maybe_applied && !e.ambiguous {
                PortError::ambiguous(format!(
                    "{} (an earlier attempt may have been applied)",
                    e.message
                ))
            } else {
                e
            });
        };
        tokio::time::sleep(pause).await;
        round += 1;
    }
}

/// The pause before retrying after attempt `round`, or `None` when the policy's attempts are
/// spent or the pause would end at or after `until`'s limit.
pub(super) fn pause_before_retry(
    policy: RetryPolicy,
    round: u32,
    until: Until<'_>,
) -> Option<Duration> {
    if round >= policy.max_attempts {
        return None;
    }
    let pause = policy.backoff(round);
    (until.now_ms() + (pause.as_millis() as i64) < until.limit_ms()).then_some(pause)
}
