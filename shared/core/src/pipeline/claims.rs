//! Step 3, the claims: one conditional write per record, refusals judged by the holder's
//! object and lease, waits for a lease ending within the budget, takeovers of dead holders,
//! and the lost-answer cases (docs/exactly-once.md, "Claim" and "a claim applied late").

use super::lease::{Holder, LIVE_HOLDER_WAIT_MS};
use super::*;

/// How often the object of a holder we wait for is looked at again.
pub(super) const LEASE_POLL_MS: i64 = 500;

/// The least time a wait for someone else's lease leaves before the cutoff, to load what it
/// wins.
pub(super) const MIN_LOAD_RESERVE_MS: i64 = 1_000;

/// Records whose claim is not settled yet, each with its next step.
pub(super) type Pending = Vec<(usize, Step)>;

/// The next step of a record whose claim is not settled yet.
#[derive(Debug, Clone)]
pub(super) enum Step {
    /// Write our claim (first try, after a retryable error, or after waiting for a lease).
    Claim,
    /// Replace a dead holder's claim.
    Takeover(Claim),
    /// Decide from the holder's object whether the event is done.
    Judge(Claim),
}

/// What a refused claim told us about the event.
pub(super) enum Existing {
    Done,
    Takeover(Claim),
    /// Look again at this time (epoch ms).
    Wait(Claim, i64),
    Live,
    /// The holder's object could not be looked at.
    Unreadable,
    /// The holder's lease could not be read or revoked.
    HolderUnknown,
}

impl<D, R, O, Q> Pipeline<D, R, O, Q>
where
    D: DedupStore,
    R: RowSink,
    O: ObjectSink,
    Q: DeadLetters,
{
    /// Step 3: claim every record, resolve refused claims, wait briefly for a dead holder's
    /// lease when the budget allows, take over claims of dead invocations, and retry what
    /// failed in rounds with backoff while the budget lasts.
    ///
    /// A write whose answer was lost is retried as the same conditional write: if the first
    /// attempt landed, the retry is refused with our own claim, which [`ClaimAttempt::is_mine`]
    /// recognises. Only a write still unresolved when the rounds or the time run out taints
    /// its object.
    pub(super) async fn claim_all(&self, work: &mut Work<'_>, indices: &[usize]) {
        let clock = work.clock;
        let cutoff = work.cutoff_ms(&self.settings);
        let until = work.until(&self.settings);
        let started = clock.now_ms();
        // A wait for someone else's lease must leave time to load what it wins: no wait ends
        // later than this (a third of what is left, at least `MIN_LOAD_RESERVE_MS`, stays;
        // never more than half, so a short budget still claims).
        let left = cutoff - started;
        let wait_limit = cutoff - (left / 3).max(MIN_LOAD_RESERVE_MS).min(left / 2);
        // A holder that keeps renewing is waited for a lease and its grace at most: long
        // enough to see one that died just before, not the whole budget.
        let live_wait_limit = wait_limit.min(started + LIVE_HOLDER_WAIT_MS);
        // No claim write starts later than this either: what is claimed by then is loaded in
        // the time left, even when every write is answered slowly (a throttled or splitting
        // table). Writes already started run on to the cutoff.
        let start_limit = wait_limit;
        let mut pending: Vec<(usize, Step)> = indices.iter().map(|&i| (i, Step::Claim)).collect();
        // Records with a write of unknown outcome, and the last reason each is not settled.
        let mut maybe_landed: HashSet<usize> = HashSet::new();
        // Records with a plain claim write that may still land: sent, its answer lost, and
        // not since shown ours. Such a write can be applied late — after a live holder that
        // refused a later attempt has released its claim — so if the record ends failed, the
        // object its claim names must not be written (docs/exactly-once.md, "a claim applied
        // late"). A takeover cannot land late: its condition pins the old owner and lease.
        let mut in_doubt: HashSet<usize> = HashSet::new();
        let mut failed: Vec<(usize, FailureCause)> = Vec::new();
        let mut cause: HashMap<usize, FailureCause> = HashMap::new();
        let mut error_rounds: u32 = 0;
        let policy = self.settings.in_budget_retry;
        // A holder whose fence has passed claims nothing more: a taker may have revoked it.
        while !pending.is_empty() && error_rounds < policy.max_attempts && !until.passed() {
            let now_s = clock.now_ms() / 1000;
            let (judge, writes): (Pending, Pending) = pending
                .drain(..)
                .partition(|(_, step)| matches!(step, Step::Judge(_)));
            let w = &*work;
            // `None`: not started, the claim phase's time being up.
            type Written = Option<Result<ClaimAttempt, PortError>>;
            let results: Vec<(usize, Claim, Step, Written)> = stream::iter(
                writes
                    .into_iter()
                    .filter_map(|(i, step)| w.claim_for(i, &self.settings).map(|c| (i, c, step))),
            )
            .map(|(i, mine, step)| async move {
                // Writes start in delivery order, so the records claimed when time is up are
                // a prefix of each unit's: what they load is checkpointed, and the mapping
                // redelivers from the first record not started.
                if clock.now_ms() > start_limit {
                    return (i, mine, step, None);
                }
                let _in_flight = self.settings.wake_pacer.map(WakePacer::start);
                let r = match &step {
                    Step::Takeover(old) => bounded(until, self.dedup.take_over(&mine, old)).await,
                    _ => bounded(until, self.dedup.try_claim(&mine, now_s)).await,
                };
                (i, mine, step, Some(r))
            })
            .buffer_unordered(self.settings.claim_concurrency.max(1))
            .collect()
            .await;

            let mut retry: Vec<(usize, Step)> = Vec::new();
            let mut refused: Vec<(usize, Claim)> = judge
                .into_iter()
                .filter_map(|(i, step)| match step {
                    Step::Judge(old) => Some((i, old)),
                    _ => None,
                })
                .collect();
            for (i, mine, step, result) in results {
                let Some(result) = result else {
                    failed.push((i, FailureCause::Deadline));
                    continue;
                };
                match result {
                    Ok(attempt) if attempt.is_mine(&mine) => {
                        maybe_landed.remove(&i);
                        // Ours now; a plain attempt of ours whose answer was lost may still
                        // land after this claim is released: `in_doubt` stays, and a release
                        // of it counts as unconfirmed (`Work::in_doubt`).
                        if matches!(attempt, ClaimAttempt::MineAfterLostAttempt)
                            && matches!(step, Step::Claim)
                        {
                            in_doubt.insert(i);
                        }
                        work.slots[i].progress = Progress::Claimed {
                            in_doubt: in_doubt.contains(&i),
                        };
                    }
                    // Refused by someone else's live claim: our earlier attempts did not land
                    // *yet* (nobody can replace our claim within its lease), but a plain one
                    // still in flight may land later; `in_doubt` remembers it.
                    Ok(ClaimAttempt::Held(old)) if matches!(step, Step::Claim) => {
                        maybe_landed.remove(&i);
                        refused.push((i, old));
                    }
                    // No item at all (a takeover whose holder released it meanwhile): an
                    // ordinary claim decides next round (not an error: no back-off).
                    Ok(ClaimAttempt::Absent) => {
                        maybe_landed.remove(&i);
                        pending.push((i, Step::Claim));
                    }
                    Ok(_) => {
                        // A takeover lost to someone else's write: theirs, not ours.
                        maybe_landed.remove(&i);
                        failed.push((i, FailureCause::Contended));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "claim write failed");
                        if e.ambiguous {
                            maybe_landed.insert(i);
                            if matches!(step, Step::Claim) {
                                in_doubt.insert(i);
                            }
                        }
                        cause.insert(i, FailureCause::Dedup);
                        if e.is_retryable() {
                            retry.push((i, step));
                        } else {
                            failed.push((i, FailureCause::Dedup));
                        }
                    }
                }
            }

            // The lease is judged against a clock read before the existence checks, so a
            // slow HeadObject cannot make a live holder look dead.
            let verdicts = self
                .judge_existing(&refused, until, wait_limit, live_wait_limit)
                .await;
            let mut wake_at: Option<i64> = None;
            for ((i, old), verdict) in refused.into_iter().zip(verdicts) {
                match verdict {
                    Existing::Done => work.finish(i, RecordOutcome::Duplicate),
                    Existing::Live => failed.push((i, FailureCause::HeldByLiveInvocation)),
                    Existing::Unreadable => {
                        cause.insert(i, FailureCause::ObjectStore);
                        retry.push((i, Step::Judge(old)));
                    }
                    Existing::HolderUnknown => {
                        cause.insert(i, FailureCause::Dedup);
                        retry.push((i, Step::Judge(old)));
                    }
                    Existing::Takeover(old) => {
                        cause.insert(i, FailureCause::Contended);
                        pending.push((i, Step::Takeover(old)));
                    }
                    Existing::Wait(old, next) => {
                        // A holder whose lease ends within our budget is cheaper to wait for
                        // here than a retry spent by the mapping. Its object is looked at
                        // again every `LEASE_POLL_MS` meanwhile: a holder that finishes makes
                        // the record a duplicate at once, without sleeping to its lease end.
                        cause.insert(i, FailureCause::HeldByLiveInvocation);
                        wake_at = Some(wake_at.map_or(next, |t: i64| t.min(next)));
                        pending.push((i, Step::Judge(old)));
                    }
                }
            }
            let backoff = if retry.is_empty() {
                0
            } else {
                error_rounds += 1;
                policy.backoff(error_rounds).as_millis() as i64
            };
            pending.append(&mut retry);
            let resume = wake_at.map_or(backoff, |t| (t - clock.now_ms()).max(backoff));
            if !pending.is_empty() && resume > 0 {
                if clock.now_ms() + resume > cutoff {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(resume as u64)).await;
            }
        }
        for (i, _) in pending {
            // Last resort for a write still unresolved: a consistent read showing it ours.
            if maybe_landed.contains(&i) {
                let key = work.slots[i].claim_key.clone().unwrap_or_default();
                let owner = work.inv.attempt_id.as_str();
                let read = bounded(work.cleanup(&self.settings), self.dedup.read(&key)).await;
                if matches!(&read, Ok(Some(c)) if c.owner == owner && Some(&c.object_key) == work.slots[i].object_key.as_ref())
                {
                    work.slots[i].progress = Progress::Claimed {
                        in_doubt: in_doubt.contains(&i),
                    };
                    continue;
                }
            }
            let c = cause.get(&i).copied().unwrap_or(FailureCause::Deadline);
            failed.push((i, c));
        }
        for (i, c) in failed {
            if maybe_landed.contains(&i) || in_doubt.contains(&i) {
                // Truly unknown: the claim may name its object (now or later), which must
                // then not be written without the event. Only this object is held back.
                if let Some(key) = &work.slots[i].object_key {
                    work.tainted.insert(key.clone());
                }
                work.slots[i].progress = Progress::ClaimUnknown;
            } else {
                work.fail(i, c);
            }
        }
    }

    /// Decides, for claims held by others, whether the event is done (its object exists),
    /// its holder is certainly dead (its claim's lease over and, for a renewable claim, its
    /// holder lease revoked), worth waiting for (the lease ends before `wait_limit`, or a
    /// renewing holder before `live_wait_limit`) or still possibly alive beyond what we can
    /// wait.
    pub(super) async fn judge_existing(
        &self,
        refused: &[(usize, Claim)],
        until: Until<'_>,
        wait_limit: i64,
        live_wait_limit: i64,
    ) -> Vec<Existing> {
        let now = until.now_ms();
        let keys: HashSet<&str> = refused
            .iter()
            .map(|(_, old)| old.object_key.as_str())
            .collect();
        let exists: HashMap<&str, Result<bool, PortError>> = stream::iter(keys)
            .map(|k| async move { (k, bounded(until, self.objects.exists(k)).await) })
            .buffer_unordered(self.settings.claim_concurrency.max(1))
            .collect()
            .await;
        let absent = |old: &Claim| matches!(exists.get(old.object_key.as_str()), Some(Ok(false)));
        // Renewable claims whose own lease is over: their holder's lease decides.
        let owners: HashSet<&str> = refused
            .iter()
            .filter(|(_, old)| old.renewable && old.lease_until_ms < now && absent(old))
            .map(|(_, old)| old.owner.as_str())
            .collect();
        let holders = if owners.is_empty() {
            HashMap::new()
        } else {
            self.judge_holders(owners, until).await
        };
        let poll = now + LEASE_POLL_MS;
        refused
            .iter()
            .map(|(_, old)| match exists.get(old.object_key.as_str()) {
                Some(Ok(true)) => Existing::Done,
                Some(Err(_)) | None => Existing::Unreadable,
                Some(Ok(false)) if old.lease_until_ms < now && !old.renewable => {
                    Existing::Takeover(old.clone())
                }
                Some(Ok(false)) if old.lease_until_ms < now => match holders.get(&old.owner) {
                    Some(Holder::Dead) => Existing::Takeover(old.clone()),
                    Some(Holder::Alive | Holder::Changed) if poll < live_wait_limit => {
                        Existing::Wait(old.clone(), poll)
                    }
                    Some(Holder::Alive | Holder::Changed) => Existing::Live,
                    Some(Holder::Unknown) | None => Existing::HolderUnknown,
                },
                Some(Ok(false)) if old.lease_until_ms < wait_limit => {
                    Existing::Wait(old.clone(), (old.lease_until_ms + 1).min(poll))
                }
                Some(Ok(false)) => Existing::Live,
            })
            .collect()
    }
}
