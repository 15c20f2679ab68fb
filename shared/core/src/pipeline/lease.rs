//! The holder's renewable lease: how a crashed invocation's claims become takeable within
//! seconds whatever the function timeout, and how a live one never writes after a taker could
//! have taken over (docs/exactly-once.md, "Renewable leases").
//!
//! - The **fence** is the time (by the holder's clock) after which this invocation starts and
//!   continues no write. It starts [`HOLDER_LEASE_MS`] after the invocation began and is never
//!   beyond the cutoff. Every outside call is bounded by it (`budget::Until`): a call still
//!   running when the fence is reached, and not moved, is cut off.
//! - The **renewer** runs beside the batch: every [`RENEW_EVERY_MS`] it writes the lease item
//!   (`alive_until` = its send time + `HOLDER_LEASE_MS`), and on the answer moves the fence
//!   there. An invocation that ends within `RENEW_EVERY_MS` writes no lease at all. A renewal
//!   only moves the lease forward and never once it is revoked; a holder whose fence has
//!   passed never renews again.
//! - A **taker** that finds a renewable claim whose own lease is over reads the holder's lease.
//!   Alive (its `alive_until` + the lease grace not yet passed) means wait or fail. Otherwise
//!   it revokes the lease — a conditional write on the `alive_until` it read, or a tombstone
//!   where none exists — and only then takes the claims over. A renewal that lands first makes
//!   the revocation fail; a revocation that lands first makes every later renewal fail.

use super::*;
use crate::clock::Clock;
use crate::ports::{HolderLease, Renewal, Revocation};
use std::sync::atomic::{AtomicI64, Ordering};

/// How far one renewal moves the fence: the holder's lease, from the renewal's send time.
/// A holder dead since its last renewal is takeable `HOLDER_LEASE_MS` + the lease grace
/// (5 s) later: 9 s after its last sign of life.
pub const HOLDER_LEASE_MS: i64 = 4_000;

/// How often the renewer writes: one write per 1.25 s of invocation, under the one write per
/// invocation-second the lease may cost, and three renewals per lease so that one lost answer
/// never stops the holder.
pub const RENEW_EVERY_MS: i64 = 1_250;

/// How soon a renewal that failed is tried again.
const RENEW_RETRY_MS: i64 = 250;

/// How long a claim phase waits for a live, renewing holder before it reports the record
/// held: a holder that died just before is shown dead within this (a lease and its grace).
pub(super) const LIVE_HOLDER_WAIT_MS: i64 = 12_000;

/// How long a lease item is kept (its TTL): long after every claim naming its owner has
/// lost its meaning.
const LEASE_ITEM_TTL_S: i64 = 86_400;

/// The time after which the holder starts and continues no write (epoch ms, its own clock).
#[derive(Debug)]
pub struct Fence {
    until_ms: AtomicI64,
    /// The invocation's cutoff: the fence never passes it.
    cutoff_ms: i64,
}

impl Fence {
    pub(super) fn new(until_ms: i64, cutoff_ms: i64) -> Self {
        Self {
            until_ms: AtomicI64::new(until_ms.min(cutoff_ms)),
            cutoff_ms,
        }
    }

    /// The current fence.
    pub fn until_ms(&self) -> i64 {
        self.until_ms.load(Ordering::SeqCst)
    }

    /// Moves the fence forward to `to` (never back, never past the cutoff).
    fn extend(&self, to: i64) {
        self.until_ms
            .fetch_max(to.min(self.cutoff_ms), Ordering::SeqCst);
    }

    /// A taker revoked the lease: nothing more may be written.
    fn close(&self) {
        self.until_ms.store(i64::MIN, Ordering::SeqCst);
    }

    fn reaches_cutoff(&self) -> bool {
        self.until_ms() >= self.cutoff_ms
    }
}

/// What a claim's holder is, by its lease.
pub(super) enum Holder {
    /// Renewing: its lease (plus the grace) is not over.
    Alive,
    /// Revoked (now, by us, or earlier): its claims may be taken over.
    Dead,
    /// A renewal landed between our read and our revocation: judge again.
    Changed,
    /// The lease could not be read or revoked.
    Unknown,
}

impl<D, R, O, Q> Pipeline<D, R, O, Q>
where
    D: DedupStore,
    R: RowSink,
    O: ObjectSink,
    Q: DeadLetters,
{
    /// Renews `owner`'s lease until the fence reaches the cutoff, the fence passes (a holder
    /// that lapsed never renews again), or a taker revokes it. Runs beside the batch, which
    /// drops it when done.
    pub(super) async fn keep_lease(&self, owner: &str, fence: &Fence) {
        let clock = &*self.settings.clock;
        let mut next = clock.now_ms() + RENEW_EVERY_MS;
        loop {
            sleep_until(clock, next).await;
            let now = clock.now_ms();
            if fence.reaches_cutoff() || now >= fence.until_ms() {
                return;
            }
            let alive_until = now + HOLDER_LEASE_MS;
            let expires = alive_until / 1000 + LEASE_ITEM_TTL_S;
            let until = budget::Until::fenced(clock, fence.cutoff_ms, fence);
            match bounded(until, self.dedup.renew_lease(owner, alive_until, expires)).await {
                Ok(Renewal::Renewed) => {
                    fence.extend(alive_until);
                    next = now + RENEW_EVERY_MS;
                }
                Ok(Renewal::Revoked) => {
                    tracing::warn!(
                        "holder lease revoked by a taker: this invocation stops writing"
                    );
                    fence.close();
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "holder lease renewal failed");
                    next = now + RENEW_RETRY_MS;
                }
            }
        }
    }

    /// Judges the holders of renewable claims whose own lease is over, one read (and at most
    /// one revocation) per owner: a lease over by more than the grace, or absent, is revoked.
    pub(super) async fn judge_holders(
        &self,
        owners: HashSet<&str>,
        until: budget::Until<'_>,
    ) -> HashMap<String, Holder> {
        let clock = &*self.settings.clock;
        let grace = self.settings.lease_grace.as_millis() as i64;
        stream::iter(owners)
            .map(|owner| async move {
                let read = bounded(until, self.dedup.read_lease(owner)).await;
                let now = clock.now_ms();
                let verdict = match read {
                    Err(_) => Holder::Unknown,
                    Ok(Some(l)) if l.revoked => Holder::Dead,
                    Ok(Some(l)) if l.alive_until_ms + grace >= now => Holder::Alive,
                    Ok(seen) => self.revoke(owner, seen.as_ref(), until).await,
                };
                (owner.to_owned(), verdict)
            })
            .buffer_unordered(self.settings.claim_concurrency.max(1))
            .collect()
            .await
    }

    async fn revoke(
        &self,
        owner: &str,
        seen: Option<&HolderLease>,
        until: budget::Until<'_>,
    ) -> Holder {
        let expires = self.settings.clock.now_ms() / 1000 + LEASE_ITEM_TTL_S;
        match bounded(until, self.dedup.revoke_lease(owner, seen, expires)).await {
            Ok(Revocation::Revoked) => Holder::Dead,
            Ok(Revocation::Changed(_)) => Holder::Changed,
            Err(e) => {
                tracing::warn!(error = %e, "holder lease revocation failed");
                Holder::Unknown
            }
        }
    }
}

/// Sleeps until `at_ms` by `clock`.
pub(super) async fn sleep_until(clock: &dyn Clock, at_ms: i64) {
    let left = at_ms - clock.now_ms();
    if left > 0 {
        tokio::time::sleep(Duration::from_millis(left as u64)).await;
    }
}
