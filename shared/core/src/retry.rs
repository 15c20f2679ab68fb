//! The one retry policy for calls to outside systems.
//!
//! The AWS adapters hand these numbers to the SDK's standard retry strategy; the Postgres
//! adapter uses [`retry`]. Retries are short: the event-source mapping is the long-term retry,
//! so a call that still fails after these attempts becomes a reported record failure.

use crate::error::{Classify, PortError};
use std::future::Future;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

/// Used for DynamoDB, S3, SQS and PostgreSQL alike.
pub const SINK_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 4,
    initial_backoff: Duration::from_millis(50),
    max_backoff: Duration::from_secs(2),
};

impl RetryPolicy {
    /// Backoff before attempt `n + 1` (n ≥ 1): exponential, capped, with up to 50% jitter.
    pub fn backoff(&self, n: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << n.saturating_sub(1).min(16));
        let capped = exp.min(self.max_backoff);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jitter = capped.mul_f64(f64::from(nanos % 1000) / 2000.0);
        capped - jitter
    }
}

/// Runs `op` until it succeeds, fails permanently or runs out of attempts.
pub async fn retry<T, F, Fut>(policy: RetryPolicy, mut op: F) -> Result<T, PortError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PortError>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && attempt < policy.max_attempts => {
                tokio::time::sleep(policy.backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const FAST: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    };

    #[tokio::test]
    async fn retries_retryable_errors_up_to_the_limit() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry(FAST, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(PortError::retryable("down"))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn never_retries_permanent_errors() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry(FAST, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(PortError::permanent("bad"))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn stops_at_the_first_success() {
        let calls = AtomicU32::new(0);
        let r = retry(FAST, || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(PortError::retryable("blip"))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn backoff_is_capped() {
        assert!(SINK_RETRY.backoff(30) <= SINK_RETRY.max_backoff);
        assert!(SINK_RETRY.backoff(1) <= SINK_RETRY.initial_backoff);
    }
}
