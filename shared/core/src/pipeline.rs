//! The exactly-once pipeline: one micro-batch in, every record accounted for out.
//!
//! Order of work (each step's crash point is discussed in docs/exactly-once.md):
//! 1. decode and validate; poison records go to the dead-letter queue;
//! 2. collapse duplicates inside the batch (the first copy wins, as it would across batches);
//! 3. claim each new `event_id` with one conditional write that names the Parquet object
//!    the event will live in; a refused claim returns the holder's claim, and the holder's
//!    object existing proves the event is already in both sinks;
//! 4. upsert all claimed rows into the database in one transaction;
//! 5. write each Parquet object whole, create-only.
//!
//! The object is the commit marker, so the happy path costs one DynamoDB write per new event.
//! Whatever fails transiently is reported back to the event-source mapping, which redelivers
//! from the lowest failed position of each unit.

use crate::dead_letter::{self, poison_digest, DeadLetterData};
use crate::encode::{encode_parquet, EncodeError, ParquetRow};
use crate::error::{Classify, PortError};
use crate::event::{Poison, PoisonKind, DEFAULT_MAX_RECORD_BYTES};
use crate::metrics::{BatchSummary, Phase, PhaseMark, PhaseTimes};
use crate::object_key::{
    data_object_key, dead_letter_archive_key, dead_letter_key, hour_partition,
};
use crate::pacing::WakePacer;
use crate::ports::{
    Claim, ClaimAttempt, DeadLetters, DedupStore, Letter, LetterResult, ObjectSink, Row, RowSink,
};
use crate::record::{Batch, Position, SourceRecord, SourceUnit};
use crate::retry::RetryPolicy;
use crate::route::{Mapped, Routes};
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Tunables of the pipeline; the defaults suit production.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub max_record_bytes: usize,
    /// How long a loaded `event_id` is remembered (DEDUP_TTL_SECONDS).
    pub dedup_ttl_s: i64,
    /// The routes records are mapped by; each names its table, columns and lake prefix.
    pub routes: Routes,
    /// Prefix of dead-letter objects too large for the queue.
    pub dead_letter_prefix: String,
    /// Conditional writes in flight at once.
    pub claim_concurrency: usize,
    /// Added to the invocation's cutoff (deadline − finish margin) to form a claim's lease:
    /// covers clock skew between hosts and a write already on the wire when its call was cut
    /// off.
    pub lease_grace: Duration,
    /// No new step starts later than this before the deadline; the rest is reported failed.
    pub finish_margin: Duration,
    /// Rounds and backoff of the retries inside one invocation ([`IN_BUDGET_RETRY`]).
    pub in_budget_retry: RetryPolicy,
    /// Counts the claim writes in flight for the runtime's park hook ([`crate::pacing`]);
    /// `None` (the default) counts nothing.
    pub wake_pacer: Option<&'static WakePacer>,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            dedup_ttl_s: 604_800,
            routes: Routes::builtin("events", "events/")
                .unwrap_or_else(|e| unreachable!("the built-in route is valid: {e}")),
            dead_letter_prefix: "dead-letter/".into(),
            claim_concurrency: 64,
            lease_grace: Duration::from_secs(10),
            finish_margin: Duration::from_secs(3),
            in_budget_retry: IN_BUDGET_RETRY,
            wake_pacer: None,
        }
    }
}

/// The invocation the batch arrived in.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Unique per attempt: the Lambda request id.
    pub attempt_id: String,
    /// Epoch ms when Lambda stops the invocation.
    pub deadline_ms: i64,
}

/// Why a record must be redelivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCause {
    /// Another live invocation holds the event's claim.
    HeldByLiveInvocation,
    /// Someone else changed a dead invocation's claim while we took it over.
    Contended,
    Dedup,
    Database,
    ObjectStore,
    DeadLetterQueue,
    /// Not enough time left before the deadline.
    Deadline,
}

/// What happened to one delivered record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Written to both sinks by this invocation.
    Loaded,
    /// Already in both sinks from an earlier delivery.
    Duplicate,
    /// The same `event_id` appears earlier in this batch; that copy decides.
    DuplicateInBatch,
    /// Poison, now in the dead-letter queue.
    DeadLettered(PoisonKind),
    /// Transient failure: the event-source mapping must redeliver it.
    Failed(FailureCause),
}

/// The result of one batch.
#[derive(Debug, Clone)]
pub struct BatchReport {
    /// One outcome per delivered record, in delivery order.
    pub outcomes: Vec<RecordOutcome>,
    /// Per unit with a failure: the lowest failed position. Units absent here succeeded.
    pub failures: Vec<(SourceUnit, Position)>,
    pub summary: BatchSummary,
}

pub struct Pipeline<D, R, O, Q> {
    pub dedup: D,
    pub rows: R,
    pub objects: O,
    pub dead_letters: Q,
    pub settings: PipelineSettings,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The dedup key of a poison record: its coordinates for a person reading the table, and its
/// [`poison_digest`] (source ARN, timestamp, bytes) so that no two poison records share one.
pub fn poison_claim_key(record: &SourceRecord, digest: &str) -> String {
    format!("dl:{}:{}:{digest}", record.unit.label, record.position)
}

/// In-invocation retries of a failed outside call, on top of the SDK's own attempts: a
/// failure the budget can still absorb costs a short sleep here instead of a redelivery of
/// the whole range by the event-source mapping. 6 rounds, 100 ms doubling to 1.6 s, jittered
/// (see [`RetryPolicy::backoff`]); never past the invocation's cutoff.
pub const IN_BUDGET_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 6,
    initial_backoff: Duration::from_millis(100),
    max_backoff: Duration::from_millis(1600),
};

/// Progress of one delivered record through the pipeline.
#[derive(Debug, Default)]
struct Slot {
    /// The mapped record; `None` for a poison record.
    event: Option<Mapped>,
    /// Why the record can never load.
    poison: Option<Poison>,
    /// The poison record's identity ([`poison_digest`]).
    digest: Option<String>,
    /// The dedup key this invocation must claim: `ev:<event_id>` for the first copy of an
    /// event, [`poison_claim_key`] for a poison record.
    claim_key: Option<String>,
    /// The object whose existence proves the record done: the Parquet object of an event,
    /// the archived dead-letter message of a poison record.
    object_key: Option<String>,
    outcome: Option<RecordOutcome>,
}

/// Working state of one run.
struct Work<'b> {
    batch: &'b Batch,
    inv: &'b Invocation,
    slots: Vec<Slot>,
    /// Indices whose claim this invocation holds, not yet loaded.
    claimed: Vec<usize>,
    /// Object keys that must not be written: a claim naming them is in an unknown state.
    tainted: HashSet<String>,
    /// Indices whose claim write has an unknown outcome: it may have landed, so it is
    /// released too.
    unknown: Vec<usize>,
    /// Indices with a plain claim write whose answer was lost and which may still land —
    /// even after we hold (and release) the claim. A release of their claim is never taken
    /// as confirmed: the late write would recreate it, naming an object that lacks the record.
    in_doubt: HashSet<usize>,
    /// Where the time went.
    phases: PhaseTimes,
}

impl Work<'_> {
    fn fail(&mut self, i: usize, cause: FailureCause) {
        self.slots[i].outcome = Some(RecordOutcome::Failed(cause));
    }

    /// No new step starts after this (epoch ms).
    fn cutoff_ms(&self, settings: &PipelineSettings) -> i64 {
        self.inv.deadline_ms - settings.finish_margin.as_millis() as i64
    }

    /// Clean-up calls (claim releases) run until this: a third of the margin stays for
    /// answering.
    fn cleanup_until_ms(&self, settings: &PipelineSettings) -> i64 {
        self.inv.deadline_ms - settings.finish_margin.as_millis() as i64 / 3
    }

    fn claim_for(&self, i: usize, settings: &PipelineSettings) -> Option<Claim> {
        let slot = &self.slots[i];
        Some(Claim {
            key: slot.claim_key.clone()?,
            owner: self.inv.attempt_id.clone(),
            // Every write that can make the claim's object appear is bounded by the cutoff
            // (see `bounded`), so the holder is certainly done writing by then: the lease
            // ends a grace period after the cutoff, not after the deadline.
            lease_until_ms: self.cutoff_ms(settings) + settings.lease_grace.as_millis() as i64,
            object_key: slot.object_key.clone()?,
            expires_at_s: now_ms() / 1000 + settings.dedup_ttl_s,
        })
    }
}

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
async fn in_budget<T, F, Fut>(
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

/// The lowest and highest position among `members` (indices into `batch`): the range an
/// object's key names. `None` for no members.
fn position_span<'b>(batch: &'b Batch, members: &[usize]) -> Option<(&'b Position, &'b Position)> {
    let positions = members.iter().map(|&i| &batch.records[i].position);
    Some((positions.clone().min()?, positions.max()?))
}

/// The pause before retrying after attempt `round`, or `None` when the policy's attempts are
/// spent or the pause would end at or after `until_ms`.
fn pause_before_retry(policy: RetryPolicy, round: u32, until_ms: i64) -> Option<Duration> {
    if round >= policy.max_attempts {
        return None;
    }
    let pause = policy.backoff(round);
    (now_ms() + (pause.as_millis() as i64) < until_ms).then_some(pause)
}

/// Packs letters, in order, into batches of at most `max_len` letters whose bodies sum to at
/// most `max_bytes`. A letter over `max_bytes` on its own travels alone (the queue refuses it,
/// and only it).
fn pack_letters(
    letters: Vec<(usize, Letter)>,
    max_len: usize,
    max_bytes: usize,
) -> Vec<Vec<(usize, Letter)>> {
    let mut batches: Vec<Vec<(usize, Letter)>> = Vec::new();
    let mut bytes = 0;
    for (i, letter) in letters {
        let len = letter.body.len();
        match batches.last_mut() {
            Some(batch) if batch.len() < max_len.max(1) && bytes + len <= max_bytes => {
                bytes += len;
                batch.push((i, letter));
            }
            _ => {
                bytes = len;
                batches.push(vec![(i, letter)]);
            }
        }
    }
    batches
}

/// Sends of one dead letter whose outcome is unknown (cut off, answered 5xx) after which the
/// invocation stops resending it: the letter may be queued already, and its claim is then
/// kept for the lease to decide (see `dead_letter_all`).
const MAX_UNKNOWN_SENDS: u32 = 2;

/// How often the object of a holder we wait for is looked at again.
const LEASE_POLL_MS: i64 = 500;

/// The least time a wait for someone else's lease leaves before the cutoff, to load what it
/// wins.
const MIN_LOAD_RESERVE_MS: i64 = 1_000;

/// Records whose claim is not settled yet, each with its next step.
type Pending = Vec<(usize, Step)>;

/// The next step of a record whose claim is not settled yet.
#[derive(Debug, Clone)]
enum Step {
    /// Write our claim (first try, after a retryable error, or after waiting for a lease).
    Claim,
    /// Replace a dead holder's claim.
    Takeover(Claim),
    /// Decide from the holder's object whether the event is done.
    Judge(Claim),
}

/// What a refused claim told us about the event.
enum Existing {
    Done,
    Takeover(Claim),
    Wait(Claim),
    Live,
    Unreadable,
}

impl<D, R, O, Q> Pipeline<D, R, O, Q>
where
    D: DedupStore,
    R: RowSink,
    O: ObjectSink,
    Q: DeadLetters,
{
    /// Processes one batch. Never returns an error: every record ends loaded, duplicate,
    /// dead-lettered or failed (to be redelivered), and every outside call is bounded by the
    /// time left before `finish_margin`, so the answer always reaches Lambda in time.
    pub async fn process(&self, batch: &Batch, inv: &Invocation) -> BatchReport {
        let started = Instant::now();
        let mark = PhaseMark::now();
        let n = batch.records.len();
        let mut work = Work {
            batch,
            inv,
            slots: Vec::with_capacity(n),
            claimed: Vec::new(),
            tainted: HashSet::new(),
            unknown: Vec::new(),
            in_doubt: HashSet::new(),
            phases: PhaseTimes::default(),
        };

        // 1. Route, decode and map.
        let verdicts = self
            .settings
            .routes
            .map_batch(&batch.records, self.settings.max_record_bytes);
        for verdict in verdicts {
            work.slots.push(match verdict {
                Ok(event) => Slot {
                    event: Some(event),
                    ..Slot::default()
                },
                Err(p) => Slot {
                    poison: Some(p),
                    ..Slot::default()
                },
            });
        }

        // 2. Collapse duplicates inside the batch: the first copy wins.
        let mut first_copy: HashMap<&str, usize> = HashMap::new();
        let mut copy_of: Vec<(usize, usize)> = Vec::new();
        let mut winners = Vec::new();
        for (i, slot) in work.slots.iter().enumerate() {
            if let Some(e) = &slot.event {
                match first_copy.get(e.claim_key.as_str()) {
                    Some(&w) => copy_of.push((i, w)),
                    None => {
                        first_copy.insert(&e.claim_key, i);
                        winners.push(i);
                    }
                }
            }
        }
        drop(first_copy);
        for &(i, _) in &copy_of {
            work.slots[i].outcome = Some(RecordOutcome::DuplicateInBatch);
        }
        self.plan_objects(&mut work, &winners);
        let poisoned: Vec<usize> = (0..n).filter(|&i| work.slots[i].poison.is_some()).collect();
        self.plan_dead_letters(&mut work, &poisoned);
        let mark = work.phases.add(Phase::Decode, mark);

        // 3. Claims, for new events and poison records alike.
        let mut to_claim = winners;
        to_claim.extend(poisoned);
        self.claim_all(&mut work, &to_claim).await;
        let mark = work.phases.add(Phase::Claims, mark);

        // 4 and 5: database then Parquet objects for events; the queue for poison records.
        let claimed = std::mem::take(&mut work.claimed);
        let (events, poison): (Vec<usize>, Vec<usize>) = claimed
            .into_iter()
            .partition(|&i| work.slots[i].event.is_some());
        work.claimed = events;
        self.dead_letter_all(&mut work, &poison).await;
        work.phases.add(Phase::DeadLetters, mark);
        let refused = self.load_claimed(&mut work).await;
        let mark = PhaseMark::now();

        // 6. Rows a sink refused are poison too: dead-lettered under a poison claim of
        // their own, like a record that failed validation.
        if !refused.is_empty() {
            self.plan_dead_letters(&mut work, &refused);
            self.claim_all(&mut work, &refused).await;
            let claimed = std::mem::take(&mut work.claimed);
            self.dead_letter_all(&mut work, &claimed).await;
            let unknown = std::mem::take(&mut work.unknown);
            self.give_up(&mut work, &unknown, FailureCause::Dedup).await;
            work.phases.add(Phase::DeadLetters, mark);
        }

        // A copy follows its first copy's failure, so it is redelivered with it.
        for &(i, w) in &copy_of {
            if let Some(RecordOutcome::Failed(c)) = work.slots[w].outcome {
                work.slots[i].outcome = Some(RecordOutcome::Failed(c));
            }
        }
        let outcomes: Vec<RecordOutcome> = work
            .slots
            .iter()
            .map(|s| {
                s.outcome
                    .unwrap_or(RecordOutcome::Failed(FailureCause::Deadline))
            })
            .collect();
        let mut summary = summarise(batch, &work.slots, &outcomes, started.elapsed());
        summary.phases = work.phases;
        BatchReport {
            failures: lowest_failures(batch, &outcomes),
            outcomes,
            summary,
        }
    }

    /// Names the object each winner will live in: one object per route, unit and UTC hour
    /// of the event time, under the route's lake prefix, named by the first and last planned
    /// positions and this attempt.
    fn plan_objects(&self, work: &mut Work<'_>, winners: &[usize]) {
        let mut groups: BTreeMap<(usize, &SourceUnit, String), Vec<usize>> = BTreeMap::new();
        for &i in winners {
            if let Some(e) = &work.slots[i].event {
                let unit = &work.batch.records[i].unit;
                groups
                    .entry((e.route, unit, hour_partition(e.event_time_us)))
                    .or_default()
                    .push(i);
            }
        }
        let mut keys: Vec<(usize, String)> = Vec::with_capacity(winners.len());
        for ((route, unit, hour), members) in groups {
            let Some((first, last)) = position_span(work.batch, &members) else {
                continue;
            };
            let key = data_object_key(
                &self.settings.routes.get(route).lake_prefix,
                &hour,
                &unit.label,
                first,
                last,
                &work.inv.attempt_id,
            );
            keys.extend(members.into_iter().map(|i| (i, key.clone())));
        }
        for (i, key) in keys {
            work.slots[i].object_key = Some(key);
        }
        for &i in winners {
            let slot = &mut work.slots[i];
            if let Some(e) = &slot.event {
                slot.claim_key = Some(e.claim_key.clone());
            }
        }
    }

    /// A poison record is claimed like an event, and the dead-letter messages sent are
    /// archived as one object per unit, so a redelivered batch does not queue the same
    /// poison record again. Every claim names its unit's archive.
    fn plan_dead_letters(&self, work: &mut Work<'_>, poisoned: &[usize]) {
        let mut by_unit: BTreeMap<&SourceUnit, Vec<usize>> = BTreeMap::new();
        for &i in poisoned {
            by_unit
                .entry(&work.batch.records[i].unit)
                .or_default()
                .push(i);
        }
        let mut keys: Vec<(usize, String)> = Vec::with_capacity(poisoned.len());
        for (unit, members) in by_unit {
            let Some((first, last)) = position_span(work.batch, &members) else {
                continue;
            };
            let key = dead_letter_archive_key(
                &self.settings.dead_letter_prefix,
                &unit.label,
                first,
                last,
                &work.inv.attempt_id,
            );
            keys.extend(members.into_iter().map(|i| (i, key.clone())));
        }
        for (i, key) in keys {
            let r = &work.batch.records[i];
            let digest = poison_digest(r);
            let slot = &mut work.slots[i];
            slot.claim_key = Some(poison_claim_key(r, &digest));
            slot.object_key = Some(key);
            slot.digest = Some(digest);
        }
    }

    /// Sends each claimed poison record to the queue, then archives the messages sent, one
    /// object per unit: the archive is the proof a later delivery checks. A crash between the
    /// two sends them once more.
    ///
    /// An archive is written only when every claim naming it is either sent or released: a
    /// record whose letter did not go out gives its claim back first, and if that cannot be
    /// confirmed the archive is held back (its records were sent; without the archive a
    /// later delivery sends them again once the lease is over, rather than taking a claim
    /// whose letter never went out for done).
    ///
    /// Letters travel in batches (up to the queue's batch limits), so a batch with many poison
    /// records costs a request per ten of them rather than one each.
    async fn dead_letter_all(&self, work: &mut Work<'_>, claimed: &[usize]) {
        let cutoff = work.cutoff_ms(&self.settings);
        let cleanup = work.cleanup_until_ms(&self.settings);
        let owner = work.inv.attempt_id.as_str();
        let w = &*work;
        let concurrency = self.settings.claim_concurrency.max(1);

        // 1. Each record's letter; a record too big to travel inline is stored first.
        let prepared: Vec<(usize, Result<Letter, FailureCause>)> = stream::iter(claimed)
            .map(|&i| async move {
                let slot = &w.slots[i];
                let (Some(poison), Some(digest)) = (&slot.poison, &slot.digest) else {
                    return (i, Err(FailureCause::DeadLetterQueue));
                };
                if now_ms() > cutoff {
                    return (i, Err(FailureCause::Deadline));
                }
                let record = &w.batch.records[i];
                match self.letter_of(record, poison, digest, cutoff).await {
                    Ok(letter) => (i, Ok(letter)),
                    Err(e) => {
                        tracing::warn!(error = %e, position = %record.position, "dead-letter data write failed");
                        (i, Err(FailureCause::DeadLetterQueue))
                    }
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut ready = Vec::with_capacity(prepared.len());
        let mut failed = Vec::new();
        for (i, letter) in prepared {
            match letter {
                Ok(letter) => ready.push((i, letter)),
                Err(cause) => failed.push((i, cause)),
            }
        }
        ready.sort_by_key(|(i, _)| *i);

        // 2. Send.
        let mut sent: Vec<(usize, Letter)> = Vec::with_capacity(ready.len());
        // Letters whose last send has an unknown outcome: maybe queued. Their claims are kept
        // (a redelivery waits for the lease instead of sending them again at once) and their
        // archive is held back (it must not vouch for a letter that may not be queued).
        let mut maybe_sent: Vec<usize> = Vec::new();
        for (i, letter, result) in self.send_letters(ready, cutoff).await {
            match result {
                Ok(()) => sent.push((i, letter)),
                Err(e) => {
                    let position = &w.batch.records[i].position;
                    tracing::warn!(error = %e, position = %position, "dead-letter send failed");
                    if e.ambiguous {
                        maybe_sent.push(i);
                    } else {
                        failed.push((i, FailureCause::DeadLetterQueue));
                    }
                }
            }
        }

        // 3. A record not dead-lettered gives its claim back, so a redelivery can claim it at
        // once; an archive named by a claim still held for an unsent letter is not written.
        let releases: Vec<(usize, bool)> = stream::iter(&failed)
            .map(|&(i, _)| async move {
                let released = match w.slots[i].claim_key.as_deref() {
                    Some(key) => self.release_confirmed(key, owner, cleanup).await,
                    None => true,
                };
                (i, released && !w.in_doubt.contains(&i))
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        // An archive named by a claim whose write is in an unknown state (it may have landed
        // and be released later, or never) is held back too: written, it would make that
        // record look dead-lettered on every redelivery while its letter was never sent.
        let held_back: HashSet<&str> = releases
            .iter()
            .filter(|(_, released)| !released)
            .filter_map(|&(i, _)| w.slots[i].object_key.as_deref())
            .chain(w.tainted.iter().map(String::as_str))
            .chain(
                maybe_sent
                    .iter()
                    .filter_map(|&i| w.slots[i].object_key.as_deref()),
            )
            .collect();

        // 4. Archive what was sent, one object per unit. Sent, the records are dead-lettered
        // whatever happens to the archive.
        sent.sort_by_key(|(i, _)| *i);
        let mut archives: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
        for (i, letter) in &sent {
            let Some(key) = w.slots[*i].object_key.as_deref() else {
                continue;
            };
            if held_back.contains(key) {
                continue;
            }
            let body = archives.entry(key).or_default();
            body.extend_from_slice(letter.body.as_bytes());
            body.push(b'\n');
        }
        stream::iter(archives)
            .for_each_concurrent(concurrency, |(key, body)| async move {
                let body = bytes::Bytes::from(body);
                let archived = in_budget(self.settings.in_budget_retry, cleanup, || {
                    self.objects
                        .put_new(key, body.clone(), "application/x-ndjson")
                })
                .await;
                if let Err(e) = archived {
                    tracing::warn!(error = %e, "dead-letter archive write failed");
                }
            })
            .await;

        let sent: Vec<usize> = sent.into_iter().map(|(i, _)| i).collect();
        for i in sent {
            let kind = work.slots[i].poison.as_ref().map(|p| p.kind);
            work.slots[i].outcome = Some(match kind {
                Some(kind) => RecordOutcome::DeadLettered(kind),
                None => RecordOutcome::Failed(FailureCause::DeadLetterQueue),
            });
        }
        for (i, cause) in failed {
            work.fail(i, cause);
        }
        for i in maybe_sent {
            work.fail(i, FailureCause::DeadLetterQueue);
        }
    }

    /// The letter of one poison record. A record whose letter would not fit the queue's limit
    /// is stored as an object first, and the letter names its key.
    async fn letter_of(
        &self,
        record: &SourceRecord,
        poison: &Poison,
        digest: &str,
        until_ms: i64,
    ) -> Result<Letter, PortError> {
        let inline = dead_letter::body(record, poison, digest, DeadLetterData::Inline);
        let body = if inline.len() <= self.dead_letters.max_body_bytes() {
            inline
        } else {
            let key = dead_letter_key(
                &self.settings.dead_letter_prefix,
                &record.unit.label,
                &record.position,
                digest,
            );
            let bytes = record.data.clone().unwrap_or_default();
            in_budget(self.settings.in_budget_retry, until_ms, || {
                self.objects
                    .put_new(&key, bytes.clone(), "application/octet-stream")
            })
            .await?;
            dead_letter::body(record, poison, digest, DeadLetterData::InObject(&key))
        };
        Ok(Letter {
            body,
            dedup_id: digest.to_owned(),
        })
    }

    /// Sends `letters` packed into batches within the queue's limits, the batches side by
    /// side. A letter the queue refused retryably, or a batch whose request failed retryably,
    /// is sent again per the in-budget policy until `until_ms`; each letter ends with its last
    /// result.
    async fn send_letters(
        &self,
        letters: Vec<(usize, Letter)>,
        until_ms: i64,
    ) -> Vec<(usize, Letter, LetterResult)> {
        let batches = pack_letters(
            letters,
            self.dead_letters.max_batch_len(),
            self.dead_letters.max_body_bytes(),
        );
        let policy = self.settings.in_budget_retry;
        stream::iter(batches)
            .map(|pending| async move {
                // Each letter with the number of its sends whose outcome is unknown.
                let mut pending: Vec<(usize, Letter, u32)> =
                    pending.into_iter().map(|(i, l)| (i, l, 0)).collect();
                let mut done = Vec::with_capacity(pending.len());
                let mut round = 1;
                while !pending.is_empty() {
                    let batch: Vec<Letter> = pending.iter().map(|(_, l, _)| l.clone()).collect();
                    let answers =
                        match bounded(until_ms, self.dead_letters.send_batch(&batch)).await {
                            Ok(answers) if answers.len() == batch.len() => answers,
                            Ok(_) => vec![
                                Err(PortError::ambiguous(
                                    "dead-letter batch: answers do not match the letters"
                                ));
                                batch.len()
                            ],
                            Err(e) => vec![Err(e); batch.len()],
                        };
                    let pause = pause_before_retry(policy, round, until_ms);
                    let mut again = Vec::new();
                    for ((i, letter, unknown), answer) in pending.into_iter().zip(answers) {
                        let unknown =
                            unknown + u32::from(answer.as_ref().is_err_and(|e| e.ambiguous));
                        match answer {
                            // A send of unknown outcome (cut off, answered 5xx) may have queued
                            // the letter: it is sent again at most `MAX_UNKNOWN_SENDS` times in
                            // all, so a slow queue costs a copy, not one per round and attempt.
                            Err(e)
                                if e.is_retryable()
                                    && pause.is_some()
                                    && unknown < MAX_UNKNOWN_SENDS =>
                            {
                                again.push((i, letter, unknown))
                            }
                            answer => done.push((i, letter, answer)),
                        }
                    }
                    let (false, Some(pause)) = (again.is_empty(), pause) else {
                        break;
                    };
                    tokio::time::sleep(pause).await;
                    round += 1;
                    pending = again;
                }
                done
            })
            .buffer_unordered(self.settings.claim_concurrency.max(1))
            .flat_map(stream::iter)
            .collect()
            .await
    }

    /// Step 3: claim every record, resolve refused claims, wait briefly for a dead holder's
    /// lease when the budget allows, take over claims of dead invocations, and retry what
    /// failed in rounds with backoff while the budget lasts.
    ///
    /// A write whose answer was lost is retried as the same conditional write: if the first
    /// attempt landed, the retry is refused with our own claim, which [`ClaimAttempt::is_mine`]
    /// recognises. Only a write still unresolved when the rounds or the time run out taints
    /// its object.
    async fn claim_all(&self, work: &mut Work<'_>, indices: &[usize]) {
        let cutoff = work.cutoff_ms(&self.settings);
        // A wait for someone else's lease must leave time to load what it wins: no wait ends
        // later than this (a third of what is left, at least `MIN_LOAD_RESERVE_MS`, stays).
        let wait_limit = cutoff - ((cutoff - now_ms()) / 3).max(MIN_LOAD_RESERVE_MS);
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
        while !pending.is_empty() && error_rounds < policy.max_attempts && now_ms() <= cutoff {
            let now_s = now_ms() / 1000;
            let (judge, writes): (Pending, Pending) = pending
                .drain(..)
                .partition(|(_, step)| matches!(step, Step::Judge(_)));
            let w = &*work;
            let results: Vec<(usize, Claim, Step, Result<ClaimAttempt, PortError>)> = stream::iter(
                writes
                    .into_iter()
                    .filter_map(|(i, step)| w.claim_for(i, &self.settings).map(|c| (i, c, step))),
            )
            .map(|(i, mine, step)| async move {
                let _in_flight = self.settings.wake_pacer.map(WakePacer::start);
                let r = match &step {
                    Step::Takeover(old) => bounded(cutoff, self.dedup.take_over(&mine, old)).await,
                    _ => bounded(cutoff, self.dedup.try_claim(&mine, now_s)).await,
                };
                (i, mine, step, r)
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
                        work.claimed.push(i);
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
            let verdicts = self.judge_existing(&refused, cutoff, wait_limit).await;
            let mut wake_at: Option<i64> = None;
            for ((i, old), verdict) in refused.into_iter().zip(verdicts) {
                match verdict {
                    Existing::Done => work.slots[i].outcome = Some(RecordOutcome::Duplicate),
                    Existing::Live => failed.push((i, FailureCause::HeldByLiveInvocation)),
                    Existing::Unreadable => {
                        cause.insert(i, FailureCause::ObjectStore);
                        retry.push((i, Step::Judge(old)));
                    }
                    Existing::Takeover(old) => {
                        cause.insert(i, FailureCause::Contended);
                        pending.push((i, Step::Takeover(old)));
                    }
                    Existing::Wait(old) => {
                        // A holder whose lease ends within our budget is cheaper to wait for
                        // here than a retry spent by the mapping. Its object is looked at
                        // again every `LEASE_POLL_MS` meanwhile: a holder that finishes makes
                        // the record a duplicate at once, without sleeping to its lease end.
                        cause.insert(i, FailureCause::HeldByLiveInvocation);
                        let next = (old.lease_until_ms + 1).min(now_ms() + LEASE_POLL_MS);
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
            let resume = wake_at.map_or(backoff, |t| (t - now_ms()).max(backoff));
            if !pending.is_empty() && resume > 0 {
                if now_ms() + resume > cutoff {
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
                let read =
                    bounded(work.cleanup_until_ms(&self.settings), self.dedup.read(&key)).await;
                if matches!(&read, Ok(Some(c)) if c.owner == owner && Some(&c.object_key) == work.slots[i].object_key.as_ref())
                {
                    work.claimed.push(i);
                    continue;
                }
            }
            let c = cause.get(&i).copied().unwrap_or(FailureCause::Deadline);
            failed.push((i, c));
        }
        work.in_doubt.extend(in_doubt.iter().copied());
        for (i, c) in failed {
            if maybe_landed.contains(&i) || in_doubt.contains(&i) {
                // Truly unknown: the claim may name its object (now or later), which must
                // then not be written without the event. Only this object is held back.
                if let Some(key) = &work.slots[i].object_key {
                    work.tainted.insert(key.clone());
                }
                work.unknown.push(i);
            } else {
                work.fail(i, c);
            }
        }
    }

    /// Decides, for claims held by others, whether the event is done (its object exists),
    /// its holder is certainly dead (lease over), worth waiting for (the lease ends before
    /// `wait_limit`) or still possibly alive beyond what we can wait.
    async fn judge_existing(
        &self,
        refused: &[(usize, Claim)],
        cutoff: i64,
        wait_limit: i64,
    ) -> Vec<Existing> {
        let now = now_ms();
        let keys: HashSet<&str> = refused
            .iter()
            .map(|(_, old)| old.object_key.as_str())
            .collect();
        let exists: HashMap<&str, Result<bool, PortError>> = stream::iter(keys)
            .map(|k| async move { (k, bounded(cutoff, self.objects.exists(k)).await) })
            .buffer_unordered(self.settings.claim_concurrency.max(1))
            .collect()
            .await;
        refused
            .iter()
            .map(|(_, old)| match exists.get(old.object_key.as_str()) {
                Some(Ok(true)) => Existing::Done,
                Some(Err(_)) | None => Existing::Unreadable,
                Some(Ok(false)) if old.lease_until_ms < now => Existing::Takeover(old.clone()),
                Some(Ok(false)) if old.lease_until_ms < wait_limit => Existing::Wait(old.clone()),
                Some(Ok(false)) => Existing::Live,
            })
            .collect()
    }

    /// Steps 4 and 5 for every event this invocation holds the claim of. Returns the
    /// records a sink refused: their claims are released, and they are poison now.
    async fn load_claimed(&self, work: &mut Work<'_>) -> Vec<usize> {
        let mut claimed = std::mem::take(&mut work.claimed);
        claimed.sort_unstable();
        // Records whose object is tainted cannot be completed in this invocation.
        let (mut blocked, claimed): (Vec<usize>, Vec<usize>) =
            claimed.into_iter().partition(|&i| {
                work.slots[i]
                    .object_key
                    .as_ref()
                    .is_some_and(|k| work.tainted.contains(k))
            });
        blocked.append(&mut work.unknown);
        self.give_up(work, &blocked, FailureCause::Dedup).await;
        if claimed.is_empty() {
            return Vec::new();
        }
        let cutoff = work.cutoff_ms(&self.settings);
        if now_ms() > cutoff {
            self.give_up(work, &claimed, FailureCause::Deadline).await;
            return Vec::new();
        }

        let mut by_object: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for &i in &claimed {
            if let Some(k) = &work.slots[i].object_key {
                by_object.entry(k.clone()).or_default().push(i);
            }
        }

        // Encode first: a value the Parquet encoder cannot write is found before its row
        // reaches the database, so no event is ever in PostgreSQL and missing from the lake.
        let mark = PhaseMark::now();
        let ingested_at_us = now_ms() * 1000;
        let mut refused: Vec<(usize, String)> = Vec::new();
        let mut bodies: BTreeMap<String, Result<Vec<u8>, EncodeError>> = BTreeMap::new();
        for (key, members) in &mut by_object {
            let encode = |subset: &[usize]| {
                encode_members(&self.settings.routes, work, subset, ingested_at_us)
            };
            let body = match encode(members) {
                Ok(body) => Ok(body),
                Err(_) => {
                    let mut bad = Vec::new();
                    isolate_refusals(members, &encode, &mut bad);
                    members.retain(|i| !bad.iter().any(|(b, _)| b == i));
                    refused.extend(bad);
                    encode(members)
                }
            };
            bodies.insert(key.clone(), body);
        }
        // An object that still does not encode once its refused rows are out (the encoder
        // fails on the rows together, never alone) cannot be written in this invocation: its
        // rows stay out of the database too, so no event is in PostgreSQL and not in the lake.
        let unencodable: Vec<String> = bodies
            .iter()
            .filter(|(_, body)| body.is_err())
            .map(|(key, _)| key.clone())
            .collect();
        let mut not_loaded = Vec::new();
        for key in unencodable {
            tracing::error!("parquet encoding failed for an object's rows together; failing them");
            bodies.remove(&key);
            not_loaded.extend(by_object.remove(&key).unwrap_or_default());
        }
        self.give_up(work, &not_loaded, FailureCause::ObjectStore)
            .await;
        let encoder_refused: HashSet<usize> = refused.iter().map(|(i, _)| *i).collect();
        let not_loaded: HashSet<usize> = not_loaded.into_iter().collect();
        let to_load: Vec<usize> = claimed
            .iter()
            .copied()
            .filter(|i| !encoder_refused.contains(i) && !not_loaded.contains(i))
            .collect();

        let mark = work.phases.add(Phase::Encode, mark);
        let rows: Vec<Row<'_>> = to_load
            .iter()
            .filter_map(|&i| work.slots[i].event.as_ref())
            .map(|e| Row {
                route: self.settings.routes.get(e.route),
                values: &e.values,
            })
            .collect();
        let upserted = bounded(cutoff + 200, self.rows.upsert(&rows, cutoff)).await;
        drop(rows);
        match upserted {
            Ok(refusals) => {
                refused.extend(
                    refusals
                        .into_iter()
                        .filter_map(|r| to_load.get(r.index).map(|&i| (i, r.reason))),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, rows = to_load.len(), "database upsert failed");
                self.give_up(work, &claimed, FailureCause::Database).await;
                return Vec::new();
            }
        }

        // Refused rows leave their objects: release their event claims (a claim naming an
        // object that lacks the event would make it look loaded), and re-encode the object
        // without them. A release that cannot be confirmed holds the object back.
        let refused_set: HashSet<usize> = refused.iter().map(|(i, _)| *i).collect();
        let cleanup = work.cleanup_until_ms(&self.settings);
        let owner = work.inv.attempt_id.as_str();
        let w = &*work;
        let releases: Vec<(usize, bool)> = stream::iter(&refused)
            .map(|(i, _)| async move {
                let released = match &w.slots[*i].claim_key {
                    Some(key) => in_budget(self.settings.in_budget_retry, cleanup, || {
                        self.dedup.release(key, owner)
                    })
                    .await
                    .is_ok(),
                    None => true,
                };
                (*i, released && !w.in_doubt.contains(i))
            })
            .buffer_unordered(self.settings.claim_concurrency.max(1))
            .collect()
            .await;
        for (i, released) in releases {
            if !released {
                if let Some(k) = &work.slots[i].object_key {
                    work.tainted.insert(k.clone());
                }
            }
        }
        for (key, members) in &mut by_object {
            let before = members.len();
            members.retain(|i| !refused_set.contains(i));
            if members.len() != before && !work.tainted.contains(key) {
                let body = encode_members(&self.settings.routes, work, members, ingested_at_us);
                bodies.insert(key.clone(), body);
            }
        }
        for (i, reason) in &refused {
            tracing::warn!(position = %work.batch.records[*i].position, reason = %reason, "a sink refused the row; dead-lettering it");
            let slot = &mut work.slots[*i];
            slot.poison = Some(Poison {
                kind: PoisonKind::Refused,
                reason: reason.clone(),
            });
            slot.event = None;
        }

        let mark = work.phases.add(Phase::Database, mark);
        if now_ms() > cutoff {
            let all: Vec<usize> = by_object.into_values().flatten().collect();
            self.give_up(work, &all, FailureCause::Deadline).await;
            return refused.into_iter().map(|(i, _)| i).collect();
        }
        let mut held_back = Vec::new();
        let mut to_write = Vec::new();
        for (key, members) in by_object {
            if members.is_empty() {
                continue;
            }
            match (work.tainted.contains(&key), bodies.remove(&key)) {
                (false, Some(Ok(body))) => to_write.push((key, members, body)),
                (true, _) => held_back.push((members, FailureCause::Dedup)),
                (false, _) => {
                    tracing::error!("parquet encoding failed for the rows left in an object");
                    held_back.push((members, FailureCause::ObjectStore));
                }
            }
        }
        for (members, cause) in held_back {
            self.give_up(work, &members, cause).await;
        }
        let written: Vec<(Vec<usize>, ObjectResult)> = stream::iter(to_write)
            .map(|(key, members, body)| async move {
                let r = self.write_object(&key, body, cutoff, cleanup).await;
                (members, r)
            })
            .buffer_unordered(4)
            .collect()
            .await;
        for (members, result) in written {
            match result {
                ObjectResult::Written => {
                    for i in members {
                        work.slots[i].outcome = Some(RecordOutcome::Loaded);
                    }
                }
                ObjectResult::NotWritten => {
                    self.give_up(work, &members, FailureCause::ObjectStore)
                        .await
                }
                ObjectResult::Unknown => {
                    // Keep the claims: the object may still appear, and the lease decides.
                    for i in members {
                        work.fail(i, FailureCause::ObjectStore);
                    }
                }
            }
        }
        work.phases.add(Phase::Objects, mark);
        refused.into_iter().map(|(i, _)| i).collect()
    }

    /// Writes one object by `cutoff`; after an error, checks by `cleanup` whether it exists.
    async fn write_object(
        &self,
        key: &str,
        body: Vec<u8>,
        cutoff: i64,
        cleanup: i64,
    ) -> ObjectResult {
        let body = bytes::Bytes::from(body);
        let put = in_budget(self.settings.in_budget_retry, cutoff, || {
            self.objects
                .put_new(key, body.clone(), "application/vnd.apache.parquet")
        })
        .await;
        match put {
            Ok(_) => ObjectResult::Written,
            Err(e) => {
                tracing::warn!(error = %e, "object write failed");
                match in_budget(self.settings.in_budget_retry, cleanup, || {
                    self.objects.exists(key)
                })
                .await
                {
                    Ok(true) => ObjectResult::Written,
                    Ok(false) if !e.ambiguous => ObjectResult::NotWritten,
                    _ => ObjectResult::Unknown,
                }
            }
        }
    }

    async fn release_one(&self, key: &str, owner: &str, until_ms: i64) {
        self.release_confirmed(key, owner, until_ms).await;
    }

    /// Gives the claim back by `until_ms`; false when that could not be confirmed.
    async fn release_confirmed(&self, key: &str, owner: &str, until_ms: i64) -> bool {
        match in_budget(self.settings.in_budget_retry, until_ms, || {
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
    async fn give_up(&self, work: &mut Work<'_>, indices: &[usize], cause: FailureCause) {
        let owner = work.inv.attempt_id.as_str();
        let cleanup = work.cleanup_until_ms(&self.settings);
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

/// The Parquet object of `members` (all of one route: objects are planned per route).
fn encode_members(
    routes: &Routes,
    work: &Work<'_>,
    members: &[usize],
    ingested_at_us: i64,
) -> Result<Vec<u8>, EncodeError> {
    let Some(route) = members
        .iter()
        .find_map(|&i| work.slots[i].event.as_ref().map(|e| routes.get(e.route)))
    else {
        return Ok(Vec::new());
    };
    let rows: Vec<ParquetRow<'_>> = members
        .iter()
        .filter_map(|&i| {
            let r = &work.batch.records[i];
            work.slots[i].event.as_ref().map(|event| ParquetRow {
                values: &event.values,
                source_unit: &r.unit.label,
                source_position: r.position.as_str(),
                source_key: r.key.as_deref(),
                source_headers: r.headers_json.as_deref(),
            })
        })
        .collect();
    encode_parquet(route, &rows, ingested_at_us)
}

/// Finds, by bisection, each member that `encode` refuses on its own, with the reason.
/// `k` refused members among `n` cost about `2k·log2(n/k)` encodings; none on the happy path,
/// where the caller's first encoding succeeded.
pub fn isolate_refusals<E, F>(members: &[usize], encode: &F, refused: &mut Vec<(usize, String)>)
where
    E: std::fmt::Display,
    F: Fn(&[usize]) -> Result<Vec<u8>, E>,
{
    match encode(members) {
        Ok(_) => {}
        Err(e) if members.len() == 1 => refused.push((
            members[0],
            format!("the Parquet encoder refused the row: {e}"),
        )),
        Err(_) if members.is_empty() => {}
        Err(_) => {
            let (left, right) = members.split_at(members.len() / 2);
            isolate_refusals(left, encode, refused);
            isolate_refusals(right, encode, refused);
        }
    }
}

enum ObjectResult {
    Written,
    NotWritten,
    Unknown,
}

/// Lowest failed position per unit, in unit order.
fn lowest_failures(batch: &Batch, outcomes: &[RecordOutcome]) -> Vec<(SourceUnit, Position)> {
    let mut lowest: BTreeMap<&SourceUnit, &Position> = BTreeMap::new();
    for (r, o) in batch.records.iter().zip(outcomes) {
        if matches!(o, RecordOutcome::Failed(_)) {
            let e = lowest.entry(&r.unit).or_insert(&r.position);
            if r.position < **e {
                *e = &r.position;
            }
        }
    }
    lowest
        .into_iter()
        .map(|(u, p)| (u.clone(), p.clone()))
        .collect()
}

fn summarise(
    batch: &Batch,
    slots: &[Slot],
    outcomes: &[RecordOutcome],
    elapsed: Duration,
) -> BatchSummary {
    let now = now_ms();
    let mut s = BatchSummary {
        received: outcomes.len(),
        duration_ms: elapsed.as_millis() as u64,
        ..BatchSummary::default()
    };
    for ((o, slot), r) in outcomes.iter().zip(slots).zip(&batch.records) {
        match o {
            RecordOutcome::Loaded => {
                s.loaded += 1;
                if let Some(e) = &slot.event {
                    s.latency_from_created_ms.push(now - e.event_time_us / 1000);
                }
                if let Some(a) = r.arrival_ms {
                    s.latency_from_arrival_ms.push(now - a);
                }
            }
            RecordOutcome::Duplicate | RecordOutcome::DuplicateInBatch => s.duplicates += 1,
            RecordOutcome::DeadLettered(_) => s.poison += 1,
            RecordOutcome::Failed(_) => s.failed += 1,
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letters(sizes: &[usize]) -> Vec<(usize, Letter)> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let letter = Letter {
                    body: "x".repeat(len),
                    dedup_id: i.to_string(),
                };
                (i, letter)
            })
            .collect()
    }

    fn shape(batches: &[Vec<(usize, Letter)>]) -> Vec<Vec<usize>> {
        batches
            .iter()
            .map(|b| b.iter().map(|(i, _)| *i).collect())
            .collect()
    }

    #[test]
    fn letters_pack_in_order_within_the_count_and_the_bytes() {
        // Given 12 small letters and a limit of 5 per batch: 5 + 5 + 2, in order
        assert_eq!(
            shape(&pack_letters(letters(&[1; 12]), 5, 100)),
            vec![vec![0, 1, 2, 3, 4], vec![5, 6, 7, 8, 9], vec![10, 11]]
        );
        // Given letters of 60, 30, 20, 100 and 1 bytes and 100 bytes a batch
        assert_eq!(
            shape(&pack_letters(letters(&[60, 30, 20, 100, 1]), 10, 100)),
            vec![vec![0, 1], vec![2], vec![3], vec![4]]
        );
        // A letter over the byte limit travels alone
        assert_eq!(
            shape(&pack_letters(letters(&[1, 150, 1]), 10, 100)),
            vec![vec![0], vec![1], vec![2]]
        );
        assert!(pack_letters(Vec::new(), 10, 100).is_empty());
    }
}
