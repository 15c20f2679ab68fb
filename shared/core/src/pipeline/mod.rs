//! The exactly-once pipeline: one micro-batch in, every record accounted for out.
//!
//! Order of work (each step's crash point is discussed in docs/exactly-once.md):
//! 1. decode and validate; poison records go to the dead-letter queue;
//! 2. collapse duplicates inside the batch (the first copy wins, as it would across batches);
//! 3. claim each new `event_id` with one conditional write that names the Parquet object
//!    the event will live in; a refused claim returns the holder's claim, and the holder's
//!    object existing proves the event is already in both sinks;
//! 4. upsert all claimed rows into the database in one transaction, then write their search
//!    documents (routes with an index; versioned or create-only, so idempotent);
//! 5. write each Parquet object whole, create-only.
//!
//! The object is the commit marker, so the happy path costs one DynamoDB write per new event.
//! Whatever fails transiently is reported back to the event-source mapping, which redelivers
//! from the lowest failed position of each unit.
//!
//! [`Pipeline::process`] (here) runs the steps in order; each phase is a module of its own:
//! - `plan`: the object (or dead-letter archive) each record's claim will name;
//! - `claims`: step 3, the conditional writes, refusals, waits and takeovers;
//! - `dead_letters`: poison records to the queue, and their archive;
//! - `load`: encode, upsert, write the objects, take out refused rows;
//! - `index`: the search index's documents, after the database and before the objects;
//! - `release`: giving claims back for a prompt redelivery;
//! - `budget`: every outside call bounded by the time left, and the in-budget retries;
//! - `lease`: the holder's renewable lease, the fence on its writes, and takers' judgement of
//!   other holders.
//!
//! A record's progress is one typed state (`Progress`: pending, claimed, claim unknown, done
//! with its outcome) in its `Slot`; the run's shared state is `Work`.

use crate::clock::{Clock, SystemClock};
use crate::dead_letter::{self, poison_digest, DeadLetterData};
use crate::encode::{encode_markers, encode_parquet, EncodeError, MarkerLine, ParquetRow};
use crate::error::{Classify, PortError};
use crate::event::{Poison, PoisonKind, DEFAULT_MAX_RECORD_BYTES};
use crate::metrics::{BatchSummary, Phase, PhaseMark, PhaseTimes};
use crate::object_key::{
    content_type, data_object_key, dead_letter_archive_key, dead_letter_key, hour_partition,
    marker_object_key,
};
use crate::pacing::WakePacer;
use crate::ports::{
    Claim, ClaimAttempt, DeadLetters, DedupStore, Letter, LetterResult, ObjectSink, Row, RowSink,
    Upserted,
};
use crate::record::{Batch, Position, SourceRecord, SourceUnit};
use crate::retry::RetryPolicy;
use crate::route::{Mapped, Routes};
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod budget;
mod claims;
mod dead_letters;
mod index;
mod lease;
mod load;
mod plan;
mod release;

use budget::{bounded, in_budget, pause_before_retry, Until};
use lease::Fence;
pub use lease::{HOLDER_LEASE_MS, RENEW_EVERY_MS};
pub use load::{isolate_refusals, OBJECT_WRITE_CONCURRENCY};

/// Conditional writes in flight at once by default. A partition's throughput is one batch at
/// a time, and a claim takes one round trip (≈5–10 ms to DynamoDB): 64 in flight capped a
/// 10,000-record batch's claims at ≈1 s; 256 bring them to ≈0.3 s. The table must take the
/// rate (on-demand tables double their peak; provisioned ones need the write capacity);
/// throttled writes are retried within the budget.
pub const CLAIM_CONCURRENCY: usize = 256;

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
    /// Conditional writes in flight at once ([`CLAIM_CONCURRENCY`] by default).
    pub claim_concurrency: usize,
    /// Added to the holder's fence (at most the cutoff: deadline − finish margin) to form a
    /// claim's lease, and to a holder lease before a taker may revoke it: covers clock skew
    /// between hosts and a write already on the wire when its call was cut off.
    pub lease_grace: Duration,
    /// No new step starts later than this before the deadline; the rest is reported failed.
    pub finish_margin: Duration,
    /// Rounds and backoff of the retries inside one invocation ([`IN_BUDGET_RETRY`]).
    pub in_budget_retry: RetryPolicy,
    /// Counts the claim writes in flight for the runtime's park hook ([`crate::pacing`]);
    /// `None` (the default) counts nothing.
    pub wake_pacer: Option<&'static WakePacer>,
    /// Where the pipeline reads the time ([`SystemClock`]; tests use a [`TokioClock`] and
    /// paused time).
    ///
    /// [`TokioClock`]: crate::clock::TokioClock
    pub clock: Arc<dyn Clock>,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            dedup_ttl_s: 604_800,
            routes: Routes::builtin("events", "events/")
                .unwrap_or_else(|e| unreachable!("the built-in route is valid: {e}")),
            dead_letter_prefix: "dead-letter/".into(),
            claim_concurrency: CLAIM_CONCURRENCY,
            lease_grace: Duration::from_secs(5),
            finish_margin: Duration::from_secs(3),
            in_budget_retry: IN_BUDGET_RETRY,
            wake_pacer: None,
            clock: Arc::new(SystemClock),
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
    /// The search index did not take a document in time (refused for now, or no answer).
    SearchIndex,
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
    /// Nothing to load, by design: a change route's tombstone (the null value after a delete).
    Skipped,
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
    /// The search index of routes with `[route.index]`; `None` when no route names one
    /// (nothing is encoded or sent then).
    pub search: Option<Arc<dyn crate::ports::DynSearchIndex>>,
    pub settings: PipelineSettings,
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

/// Where one record is: exactly one state at a time, ending in `Done`. A record the run
/// leaves in another state is reported failed (the deadline came first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Progress {
    /// Not claimed (yet): being decoded, waiting to be claimed, or refused by a sink and
    /// waiting for its poison claim.
    #[default]
    Pending,
    /// Our claim is written. `in_doubt`: a plain write of ours whose answer was lost may still
    /// land after we release the claim, recreating it; such a release never counts as
    /// confirmed (docs/exactly-once.md, "a claim applied late").
    Claimed { in_doubt: bool },
    /// Our claim write's outcome is unknown: it may name the record's object, now or later,
    /// so that object is held back (`Work::tainted`).
    ClaimUnknown,
    /// Final.
    Done(RecordOutcome),
}

/// One delivered record: what it is, what its claim names, and its [`Progress`].
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
    progress: Progress,
}

/// Working state of one run.
struct Work<'b> {
    batch: &'b Batch,
    inv: &'b Invocation,
    slots: Vec<Slot>,
    /// Object keys that must not be written: a claim naming them is in an unknown state.
    tainted: HashSet<String>,
    /// Where the time went.
    phases: PhaseTimes,
    /// No write starts or continues after it: the holder's lease.
    fence: &'b Fence,
    clock: &'b dyn Clock,
}

impl<'b> Work<'b> {
    fn fail(&mut self, i: usize, cause: FailureCause) {
        self.finish(i, RecordOutcome::Failed(cause));
    }

    fn finish(&mut self, i: usize, outcome: RecordOutcome) {
        self.slots[i].progress = Progress::Done(outcome);
    }

    /// The records whose claim we hold, not yet finished, in delivery order.
    fn claimed(&self) -> Vec<usize> {
        self.in_progress(|p| matches!(p, Progress::Claimed { .. }))
    }

    /// The records whose claim write has an unknown outcome, in delivery order.
    fn unknown(&self) -> Vec<usize> {
        self.in_progress(|p| matches!(p, Progress::ClaimUnknown))
    }

    fn in_progress(&self, state: impl Fn(Progress) -> bool) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| state(self.slots[i].progress))
            .collect()
    }

    /// Whether a release of `i`'s claim can never be taken as confirmed ([`Progress::Claimed`]).
    fn in_doubt(&self, i: usize) -> bool {
        matches!(self.slots[i].progress, Progress::Claimed { in_doubt: true })
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

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The bound of a write in the main steps: the cutoff or the fence.
    fn until(&self, settings: &PipelineSettings) -> Until<'b> {
        Until::fenced(self.clock, self.cutoff_ms(settings), self.fence)
    }

    /// The bound of a write that finishes a step (an archive, a check after an error): the
    /// clean-up time or the fence.
    fn cleanup_fenced(&self, settings: &PipelineSettings) -> Until<'b> {
        Until::fenced(self.clock, self.cleanup_until_ms(settings), self.fence)
    }

    /// The bound of a read or of a release of our own claim (harmless after a takeover: it
    /// finds another owner): the clean-up time alone.
    fn cleanup(&self, settings: &PipelineSettings) -> Until<'b> {
        Until::at(self.clock, self.cleanup_until_ms(settings))
    }

    fn claim_for(&self, i: usize, settings: &PipelineSettings) -> Option<Claim> {
        let slot = &self.slots[i];
        Some(Claim {
            key: slot.claim_key.clone()?,
            owner: self.inv.attempt_id.clone(),
            // Every write that can make the claim's object appear is bounded by the fence
            // (see `bounded`), which is never past the cutoff, so the holder is done writing
            // by then unless a renewal moved it: the claim's own lease ends a grace period
            // after the fence as it stands now; after that a taker asks the holder's lease.
            lease_until_ms: self.fence.until_ms().min(self.cutoff_ms(settings))
                + settings.lease_grace.as_millis() as i64,
            object_key: slot.object_key.clone()?,
            expires_at_s: self.now_ms() / 1000 + settings.dedup_ttl_s,
            renewable: true,
        })
    }
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
        let clock = &*self.settings.clock;
        let cutoff = inv.deadline_ms - self.settings.finish_margin.as_millis() as i64;
        let fence = Fence::new(clock.now_ms() + HOLDER_LEASE_MS, cutoff);
        // Boxed: one allocation per batch keeps the callers' future types shallow.
        let run = Box::pin(self.run(batch, inv, &fence));
        let renew = std::pin::pin!(self.keep_lease(&inv.attempt_id, &fence));
        let report = match futures::future::select(run, renew).await {
            futures::future::Either::Left((report, _)) => report,
            // The renewer stopped (the fence reached the cutoff, passed, or was revoked):
            // the batch goes on within the fence as it stands.
            futures::future::Either::Right(((), run)) => run.await,
        };
        report
    }

    async fn run(&self, batch: &Batch, inv: &Invocation, fence: &Fence) -> BatchReport {
        let started = Instant::now();
        let mark = PhaseMark::now();
        let n = batch.records.len();
        let mut work = Work {
            batch,
            inv,
            slots: Vec::with_capacity(n),
            tainted: HashSet::new(),
            phases: PhaseTimes::default(),
            fence,
            clock: &*self.settings.clock,
        };

        // 1. Route, decode and map.
        let verdicts = self
            .settings
            .routes
            .map_batch(&batch.records, self.settings.max_record_bytes);
        let mut skipped = Vec::new();
        for (i, verdict) in verdicts.into_iter().enumerate() {
            work.slots.push(match verdict {
                Ok(None) => {
                    skipped.push(i);
                    Slot::default()
                }
                Ok(Some(event)) => Slot {
                    event: Some(event),
                    ..Slot::default()
                },
                Err(p) => Slot {
                    poison: Some(p),
                    ..Slot::default()
                },
            });
        }

        for i in skipped {
            work.finish(i, RecordOutcome::Skipped);
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
            work.finish(i, RecordOutcome::DuplicateInBatch);
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
        let poison: Vec<usize> = work
            .claimed()
            .into_iter()
            .filter(|&i| work.slots[i].event.is_none())
            .collect();
        self.dead_letter_all(&mut work, &poison).await;
        work.phases.add(Phase::DeadLetters, mark);
        let refused = self.load_claimed(&mut work).await;
        let mark = PhaseMark::now();

        // 6. Rows a sink refused are poison too: dead-lettered under a poison claim of
        // their own, like a record that failed validation.
        if !refused.is_empty() {
            self.plan_dead_letters(&mut work, &refused);
            self.claim_all(&mut work, &refused).await;
            let claimed = work.claimed();
            self.dead_letter_all(&mut work, &claimed).await;
            let unknown = work.unknown();
            self.give_up(&mut work, &unknown, FailureCause::Dedup).await;
            work.phases.add(Phase::DeadLetters, mark);
        }

        // A copy follows its first copy's failure, so it is redelivered with it.
        for &(i, w) in &copy_of {
            if let Progress::Done(RecordOutcome::Failed(c)) = work.slots[w].progress {
                work.fail(i, c);
            }
        }
        let outcomes: Vec<RecordOutcome> = work
            .slots
            .iter()
            .map(|s| match s.progress {
                Progress::Done(outcome) => outcome,
                _ => RecordOutcome::Failed(FailureCause::Deadline),
            })
            .collect();
        let now = work.now_ms();
        let mut summary = summarise(batch, &work.slots, &outcomes, started.elapsed(), now);
        summary.phases = work.phases;
        BatchReport {
            failures: lowest_failures(batch, &outcomes),
            outcomes,
            summary,
        }
    }
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
    now: i64,
) -> BatchSummary {
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
            RecordOutcome::Skipped => s.skipped += 1,
        }
    }
    s
}
