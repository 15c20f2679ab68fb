//! Giving claims back: a record that will not load in this invocation releases its claim so
//! a redelivery can take it at once instead of waiting for the lease.

use super::*;

impl<D, R, O, Q> Pipeline<D, R, O, Q>
where
    D: DedupStore,
    R: RowSink,
    O: ObjectSink,
    Q: DeadLetters,
{
    pub(super) async fn release_one(&self, key: &str, owner: &str, until: Until<'_>) {
        self.release_confirmed(key, owner, until).await;
    }

    /// Gives the claim back by `until`; false when that could not be confirmed.
    pub(super) async fn release_confirmed(&self, key: &str, owner: &str, until: Until<'_>) -> bool {
        match in_budget(self.settings.in_budget_retry, until, || {
            self.dedup.release(key, owner)
        })
        .await
        {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(error = %err, "claim release failed; the lease will expire instead");
                false
            }
        }
    }

    /// Fails `indices` and releases their claims, so a redelivery can claim them at once
    /// instead of waiting for the lease. Safe because their object will not be written.
    pub(super) async fn give_up(
        &self,
        work: &mut Work<'_>,
        indices: &[usize],
        cause: FailureCause,
    ) {
        let owner = work.inv.attempt_id.as_str();
        let cleanup = work.cleanup(&self.settings);
        let slots = &work.slots;
        stream::iter(
            indices
                .iter()
                .filter_map(|&i| slots[i].claim_key.as_deref()),
        )
        .map(|key| self.release_one(key, owner, cleanup))
        .buffer_unordered(self.settings.claim_concurrency.max(1))
        .collect::<Vec<()>>()
        .await;
        for &i in indices {
            work.fail(i, cause);
        }
    }
}
