//! Time as the pipeline spends it: every outside call bounded by the time left before the
//! invocation's cutoff, and the in-budget retries (rounds with back-off, never past the
//! cutoff, remembering whether any attempt may have been applied).

use super::*;

/// Runs `call` with the time left until `until_ms` (epoch ms) as its bound. A call cut off
/// may have taken effect: its error is ambiguous. A call never started is a plain failure.
pub async fn bounded<T>(
    until_ms: i64,
    call: impl Future<Output = Result<T, PortError>>,
) -> Result<T, PortError> {
    let left = until_ms - now_ms();
    if left <= 0 {
        return Err(PortError::retryable("no time left before the deadline"));
    }
    match tokio::time::timeout(Duration::from_millis(left as u64), call).await {
        Ok(r) => r,
        Err(_) => Err(PortError::ambiguous(
            "the call did not answer before the deadline",
        )),
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
    until_ms: i64,
    mut call: F,
) -> Result<T, PortError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PortError>>,
{
    let mut round = 1;
    let mut maybe_applied = false;
    loop {
        let e = match bounded(until_ms, call()).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        maybe_applied |= e.ambiguous;
        let pause = if e.is_retryable() {
            pause_before_retry(policy, round, until_ms)
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
/// spent or the pause would end at or after `until_ms`.
pub(super) fn pause_before_retry(
    policy: RetryPolicy,
    round: u32,
    until_ms: i64,
) -> Option<Duration> {
    if round >= policy.max_attempts {
        return None;
    }
    let pause = policy.backoff(round);
    (now_ms() + (pause.as_millis() as i64) < until_ms).then_some(pause)
}
