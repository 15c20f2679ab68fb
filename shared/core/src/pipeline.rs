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

use crate::dead_letter::{self, DeadLetterData};
use crate::encode::{encode_parquet, ParquetRow};
use crate::event::{validate, Event, Poison, PoisonKind, DEFAULT_MAX_RECORD_BYTES};
use crate::metrics::BatchSummary;
use crate::object_key::{
    data_object_key, dead_letter_key, dead_letter_message_key, hour_partition,
};
use crate::ports::{Claim, ClaimAttempt, DeadLetters, DedupStore, ObjectSink, Row, RowSink};
use crate::record::{Batch, Position, SourceRecord, SourceUnit};
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Tunables of the pipeline; the defaults suit production.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub max_record_bytes: usize,
    /// How long a loaded `event_id` is remembered (DEDUP_TTL_SECONDS).
    pub dedup_ttl_s: i64,
    /// Prefix of the Parquet objects, ending in `/` (OUTPUT_PREFIX).
    pub output_prefix: String,
    /// Prefix of dead-letter objects too large for the queue.
    pub dead_letter_prefix: String,
    /// Conditional writes in flight at once.
    pub claim_concurrency: usize,
    /// Added to the invocation deadline to form a claim's lease: covers clock skew between
    /// hosts and a request already on the wire when the sandbox froze.
    pub lease_grace: Duration,
    /// No new step starts later than this before the deadline; the rest is reported failed.
    pub finish_margin: Duration,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            dedup_ttl_s: 604_800,
            output_prefix: "events/".into(),
            dead_letter_prefix: "dead-letter/".into(),
            claim_concurrency: 64,
            lease_grace: Duration::from_secs(10),
            finish_margin: Duration::from_secs(3),
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

/// The dedup key of an event. Namespaced, so no producer `event_id` can collide with the
/// claim of a poison record (`dl:<unit>:<position>`).
pub fn event_claim_key(event_id: &str) -> String {
    format!("ev:{event_id}")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Per-record working state of one run.
struct Work<'b> {
    batch: &'b Batch,
    inv: &'b Invocation,
    events: Vec<Option<Event>>,
    outcomes: Vec<Option<RecordOutcome>>,
    /// Poison verdict of each record that can never load.
    poison: Vec<Option<Poison>>,
    /// Dedup key of each record the invocation must claim: `ev:<event_id>` for the first copy
    /// of an event, `dl:<unit>:<position>` for a poison record.
    claim_key: Vec<Option<String>>,
    /// The object whose existence proves the record done: the Parquet object of an event, the
    /// archived dead-letter message of a poison record.
    object_key: Vec<Option<String>>,
    /// Indices whose claim this invocation holds, not yet loaded.
    claimed: Vec<usize>,
    /// Object keys that must not be written: a claim naming them is in an unknown state.
    tainted: HashSet<String>,
    /// Indices whose claim write errored: it may have landed, so it is released too.
    unknown: Vec<usize>,
}

impl Work<'_> {
    fn fail(&mut self, i: usize, cause: FailureCause) {
        self.outcomes[i] = Some(RecordOutcome::Failed(cause));
    }

    fn cutoff_ms(&self, settings: &PipelineSettings) -> i64 {
        self.inv.deadline_ms - settings.finish_margin.as_millis() as i64
    }

    fn claim_for(&self, i: usize, settings: &PipelineSettings) -> Option<Claim> {
        Some(Claim {
            key: self.claim_key[i].clone()?,
            owner: self.inv.attempt_id.clone(),
            lease_until_ms: self.inv.deadline_ms + settings.lease_grace.as_millis() as i64,
            object_key: self.object_key[i].clone()?,
            expires_at_s: now_ms() / 1000 + settings.dedup_ttl_s,
        })
    }
}

/// What a refused claim told us about the event.
enum Existing {
    Done,
    Takeover(Claim),
    Wait(Claim),
    Failed(FailureCause),
}

impl<D, R, O, Q> Pipeline<D, R, O, Q>
where
    D: DedupStore,
    R: RowSink,
    O: ObjectSink,
    Q: DeadLetters,
{
    /// Processes one batch. Never returns an error: every record ends loaded, duplicate,
    /// dead-lettered or failed (to be redelivered).
    pub async fn process(&self, batch: &Batch, inv: &Invocation) -> BatchReport {
        let started = Instant::now();
        let n = batch.records.len();
        let mut work = Work {
            batch,
            inv,
            events: Vec::with_capacity(n),
            poison: vec![None; n],
            outcomes: vec![None; n],
            claim_key: vec![None; n],
            object_key: vec![None; n],
            claimed: Vec::new(),
            tainted: HashSet::new(),
            unknown: Vec::new(),
        };

        // 1. Validate.
        for (i, record) in batch.records.iter().enumerate() {
            let verdict = match &record.data {
                None => Err(Poison {
                    kind: PoisonKind::Tombstone,
                    reason: "record has a null value (tombstone), which is not an event".into(),
                }),
                Some(data) => validate(data, self.settings.max_record_bytes),
            };
            match verdict {
                Ok(event) => work.events.push(Some(event)),
                Err(p) => {
                    work.events.push(None);
                    work.poison[i] = Some(p);
                }
            }
        }

        // 2. Collapse duplicates inside the batch: the first copy wins.
        let mut first_copy: HashMap<&str, usize> = HashMap::new();
        let mut copy_of: Vec<(usize, usize)> = Vec::new();
        let mut winners = Vec::new();
        for (i, e) in work.events.iter().enumerate() {
            if let Some(e) = e {
                match first_copy.get(e.event_id.as_str()) {
                    Some(&w) => copy_of.push((i, w)),
                    None => {
                        first_copy.insert(&e.event_id, i);
                        winners.push(i);
                    }
                }
            }
        }
        drop(first_copy);
        for &(i, _) in &copy_of {
            work.outcomes[i] = Some(RecordOutcome::DuplicateInBatch);
        }
        self.plan_objects(&mut work, &winners);
        let poisoned: Vec<usize> = (0..n).filter(|&i| work.poison[i].is_some()).collect();
        self.plan_dead_letters(&mut work, &poisoned);

        // 3. Claims, for new events and poison records alike.
        let mut to_claim = winners;
        to_claim.extend(poisoned);
        self.claim_all(&mut work, &to_claim).await;

        // 4 and 5: database then Parquet objects for events; the queue for poison records.
        let claimed = std::mem::take(&mut work.claimed);
        let (events, poison): (Vec<usize>, Vec<usize>) =
            claimed.into_iter().partition(|&i| work.events[i].is_some());
        work.claimed = events;
        let dead_lettered = self.dead_letter_all(&work, &poison).await;
        for (i, outcome) in dead_lettered {
            work.outcomes[i] = Some(outcome);
        }
        self.load_claimed(&mut work).await;

        // A copy follows its first copy's failure, so it is redelivered with it.
        for &(i, w) in &copy_of {
            if let Some(RecordOutcome::Failed(c)) = work.outcomes[w] {
                work.outcomes[i] = Some(RecordOutcome::Failed(c));
            }
        }
        let outcomes: Vec<RecordOutcome> = work
            .outcomes
            .into_iter()
            .map(|o| o.unwrap_or(RecordOutcome::Failed(FailureCause::Deadline)))
            .collect();
        let summary = summarise(batch, &work.events, &outcomes, started.elapsed());
        BatchReport {
            failures: lowest_failures(batch, &outcomes),
            outcomes,
            summary,
        }
    }

    /// Names the object each winner will live in: one object per unit and UTC hour, named by
    /// the first and last planned positions and this attempt.
    fn plan_objects(&self, work: &mut Work<'_>, winners: &[usize]) {
        let mut groups: BTreeMap<(&SourceUnit, String), Vec<usize>> = BTreeMap::new();
        for &i in winners {
            if let Some(e) = &work.events[i] {
                let unit = &work.batch.records[i].unit;
                groups
                    .entry((unit, hour_partition(e.created_at_us)))
                    .or_default()
                    .push(i);
            }
        }
        for ((unit, hour), members) in groups {
            let positions = members.iter().map(|&i| &work.batch.records[i].position);
            let (Some(first), Some(last)) = (positions.clone().min(), positions.max()) else {
                continue;
            };
            let key = data_object_key(
                &self.settings.output_prefix,
                &hour,
                &unit.label,
                first,
                last,
                &work.inv.attempt_id,
            );
            for i in members {
                work.object_key[i] = Some(key.clone());
            }
        }
        for &i in winners {
            if let Some(e) = &work.events[i] {
                work.claim_key[i] = Some(event_claim_key(&e.event_id));
            }
        }
    }

    /// A poison record is claimed like an event, and its dead-letter message is archived as
    /// an object, so a redelivered batch does not queue the same poison record again.
    fn plan_dead_letters(&self, work: &mut Work<'_>, poisoned: &[usize]) {
        for &i in poisoned {
            let r = &work.batch.records[i];
            work.claim_key[i] = Some(format!("dl:{}:{}", r.unit.label, r.position));
            work.object_key[i] = Some(dead_letter_message_key(
                &self.settings.dead_letter_prefix,
                &r.unit.label,
                &r.position,
            ));
        }
    }

    /// Sends each claimed poison record to the queue, then archives the message: the archive
    /// is the proof a later delivery checks. A crash between the two sends it once more.
    async fn dead_letter_all(
        &self,
        work: &Work<'_>,
        claimed: &[usize],
    ) -> Vec<(usize, RecordOutcome)> {
        let cutoff = work.cutoff_ms(&self.settings);
        let owner = work.inv.attempt_id.as_str();
        stream::iter(claimed)
            .map(|&i| async move {
                let (Some(poison), Some(archive), Some(claim_key)) =
                    (&work.poison[i], &work.object_key[i], &work.claim_key[i])
                else {
                    return (i, RecordOutcome::Failed(FailureCause::DeadLetterQueue));
                };
                let record = &work.batch.records[i];
                let failed = |cause| async move {
                    if let Err(err) = self.dedup.release(claim_key, owner).await {
                        tracing::warn!(error = %err, "claim release failed; the lease will expire instead");
                    }
                    (i, RecordOutcome::Failed(cause))
                };
                if now_ms() > cutoff {
                    return failed(FailureCause::Deadline).await;
                }
                let body = match self.dead_letter(record, poison).await {
                    Ok(body) => body,
                    Err(e) => {
                        tracing::warn!(error = %e, position = %record.position, "dead-letter send failed");
                        return failed(FailureCause::DeadLetterQueue).await;
                    }
                };
                // Sent: whatever happens to the archive, the record is dead-lettered. Without
                // the archive a later delivery sends it again once its claim expires.
                if let Err(e) = self.objects.put_new(archive, body.into_bytes(), "application/json").await {
                    tracing::warn!(error = %e, "dead-letter archive write failed");
                }
                (i, RecordOutcome::DeadLettered(poison.kind))
            })
            .buffer_unordered(self.settings.claim_concurrency.max(1))
            .collect()
            .await
    }

    /// Sends one dead letter and returns the body sent.
    async fn dead_letter(
        &self,
        record: &SourceRecord,
        poison: &Poison,
    ) -> Result<String, crate::error::PortError> {
        let inline = dead_letter::body(record, poison, DeadLetterData::Inline);
        if inline.len() <= self.dead_letters.max_body_bytes() {
            self.dead_letters.send(inline.clone()).await?;
            return Ok(inline);
        }
        let key = dead_letter_key(
            &self.settings.dead_letter_prefix,
            &record.unit.label,
            &record.position,
        );
        let bytes = record
            .data
            .as_deref()
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        self.objects
            .put_new(&key, bytes, "application/octet-stream")
            .await?;
        let body = dead_letter::body(record, poison, DeadLetterData::InObject(&key));
        self.dead_letters.send(body.clone()).await?;
        Ok(body)
    }

    /// Step 3: claim every winner, resolve refused claims, wait briefly for a dead holder's
    /// lease when the budget allows, and take over claims of dead invocations.
    async fn claim_all(&self, work: &mut Work<'_>, winners: &[usize]) {
        let cutoff = work.cutoff_ms(&self.settings);
        let mut pending: Vec<usize> = winners.to_vec();
        for round in 0..2 {
            if pending.is_empty() {
                return;
            }
            if now_ms() > cutoff {
                for &i in &pending {
                    work.fail(i, FailureCause::Deadline);
                }
                return;
            }
            let now_s = now_ms() / 1000;
            let attempts: Vec<(usize, Claim, Result<ClaimAttempt, crate::error::PortError>)> =
                stream::iter(
                    pending
                        .iter()
                        .filter_map(|&i| work.claim_for(i, &self.settings).map(|c| (i, c))),
                )
                .map(|(i, claim)| async move {
                    let r = self.dedup.try_claim(&claim, now_s).await;
                    (i, claim, r)
                })
                .buffer_unordered(self.settings.claim_concurrency.max(1))
                .collect()
                .await;

            let mut refused: Vec<(usize, Claim, Claim)> = Vec::new();
            for (i, mine, result) in attempts {
                match result {
                    Ok(ClaimAttempt::Claimed) => work.claimed.push(i),
                    Ok(ClaimAttempt::Held(old)) if old.owner == mine.owner => work.claimed.push(i),
                    Ok(ClaimAttempt::Held(old)) => refused.push((i, mine, old)),
                    Err(e) => {
                        tracing::warn!(error = %e, "claim failed");
                        self.resolve_unknown_claim(work, i, &mine).await;
                    }
                }
            }

            let verdicts = self.judge_existing(&refused, round == 0, cutoff).await;
            let mut waiting = Vec::new();
            let mut takeovers = Vec::new();
            for ((i, mine, _), verdict) in refused.into_iter().zip(verdicts) {
                match verdict {
                    Existing::Done => work.outcomes[i] = Some(RecordOutcome::Duplicate),
                    Existing::Failed(c) => work.fail(i, c),
                    Existing::Wait(old) => waiting.push((i, old)),
                    Existing::Takeover(old) => takeovers.push((i, mine, old)),
                }
            }
            self.take_over_all(work, takeovers).await;

            // A dead holder's lease ending within our budget is cheaper to wait for here
            // than to spend one of the mapping's retry attempts on.
            pending = waiting.iter().map(|(i, _)| *i).collect();
            if let Some(until) = waiting.iter().map(|(_, c)| c.lease_until_ms).max() {
                let pause = (until - now_ms() + 1).max(0) as u64;
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
        for i in pending {
            work.fail(i, FailureCause::HeldByLiveInvocation);
        }
    }

    /// A claim write that errored may still have landed. Only a read showing it ours
    /// rescues it; otherwise its object must never be written (a late-landing claim would
    /// otherwise point at an object that lacks the event).
    async fn resolve_unknown_claim(&self, work: &mut Work<'_>, i: usize, mine: &Claim) {
        match self.dedup.read(&mine.key).await {
            Ok(Some(c)) if c.owner == mine.owner => {
                work.claimed.push(i);
                return;
            }
            Ok(_) | Err(_) => {}
        }
        work.tainted.insert(mine.object_key.clone());
        work.unknown.push(i);
    }

    /// Decides, for claims held by others, whether the event is done (its object exists),
    /// its holder is certainly dead (lease over) or still possibly alive.
    async fn judge_existing(
        &self,
        refused: &[(usize, Claim, Claim)],
        may_wait: bool,
        cutoff: i64,
    ) -> Vec<Existing> {
        let keys: HashSet<&str> = refused
            .iter()
            .map(|(_, _, old)| old.object_key.as_str())
            .collect();
        let exists: HashMap<&str, Result<bool, crate::error::PortError>> = stream::iter(keys)
            .map(|k| async move { (k, self.objects.exists(k).await) })
            .buffer_unordered(self.settings.claim_concurrency.max(1))
            .collect()
            .await;
        let now = now_ms();
        refused
            .iter()
            .map(|(_, _, old)| match exists.get(old.object_key.as_str()) {
                Some(Ok(true)) => Existing::Done,
                Some(Err(_)) | None => Existing::Failed(FailureCause::ObjectStore),
                Some(Ok(false)) if old.lease_until_ms < now => Existing::Takeover(old.clone()),
                Some(Ok(false)) if may_wait && old.lease_until_ms < cutoff - 1000 => {
                    Existing::Wait(old.clone())
                }
                Some(Ok(false)) => Existing::Failed(FailureCause::HeldByLiveInvocation),
            })
            .collect()
    }

    async fn take_over_all(&self, work: &mut Work<'_>, takeovers: Vec<(usize, Claim, Claim)>) {
        let results: Vec<(usize, Claim, Result<bool, crate::error::PortError>)> =
            stream::iter(takeovers)
                .map(|(i, mine, old)| async move {
                    let r = self.dedup.take_over(&mine, &old).await;
                    (i, mine, r)
                })
                .buffer_unordered(self.settings.claim_concurrency.max(1))
                .collect()
                .await;
        for (i, mine, r) in results {
            match r {
                Ok(true) => work.claimed.push(i),
                Ok(false) => work.fail(i, FailureCause::Contended),
                Err(e) => {
                    tracing::warn!(error = %e, "claim takeover failed");
                    self.resolve_unknown_claim(work, i, &mine).await;
                }
            }
        }
    }

    /// Steps 4 and 5 for every record this invocation holds the claim of.
    async fn load_claimed(&self, work: &mut Work<'_>) {
        let mut claimed = std::mem::take(&mut work.claimed);
        claimed.sort_unstable();
        // Records whose object is tainted cannot be completed in this invocation.
        let (mut blocked, claimed): (Vec<usize>, Vec<usize>) =
            claimed.into_iter().partition(|&i| {
                work.object_key[i]
                    .as_ref()
                    .is_some_and(|k| work.tainted.contains(k))
            });
        blocked.append(&mut work.unknown);
        self.give_up(work, &blocked, FailureCause::Dedup).await;
        if claimed.is_empty() {
            return;
        }
        let cutoff = work.cutoff_ms(&self.settings);
        if now_ms() > cutoff {
            return self.give_up(work, &claimed, FailureCause::Deadline).await;
        }

        let rows: Vec<Row<'_>> = claimed
            .iter()
            .filter_map(|&i| work.events[i].as_ref())
            .map(|e| Row {
                event_id: &e.event_id,
                user_id: &e.user_id,
                event_type: &e.event_type,
                payload: e.payload.as_deref(),
                created_at_us: e.created_at_us,
            })
            .collect();
        if let Err(e) = self.rows.upsert(&rows).await {
            tracing::warn!(error = %e, rows = rows.len(), "database upsert failed");
            drop(rows);
            return self.give_up(work, &claimed, FailureCause::Database).await;
        }
        drop(rows);
        if now_ms() > cutoff {
            return self.give_up(work, &claimed, FailureCause::Deadline).await;
        }

        let mut by_object: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for &i in &claimed {
            if let Some(k) = &work.object_key[i] {
                by_object.entry(k.clone()).or_default().push(i);
            }
        }
        let ingested_at_us = now_ms() * 1000;
        let work_ref = &*work;
        let written: Vec<(Vec<usize>, ObjectResult)> = stream::iter(by_object)
            .map(|(key, members)| async move {
                let r = self
                    .write_object(work_ref, &key, &members, ingested_at_us)
                    .await;
                (members, r)
            })
            .buffer_unordered(4)
            .collect()
            .await;
        for (members, result) in written {
            match result {
                ObjectResult::Written => {
                    for i in members {
                        work.outcomes[i] = Some(RecordOutcome::Loaded);
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
    }

    async fn write_object(
        &self,
        work: &Work<'_>,
        key: &str,
        members: &[usize],
        ingested_at_us: i64,
    ) -> ObjectResult {
        let rows: Vec<ParquetRow<'_>> = members
            .iter()
            .filter_map(|&i| {
                let r = &work.batch.records[i];
                work.events[i].as_ref().map(|event| ParquetRow {
                    event,
                    source_unit: &r.unit.label,
                    source_position: r.position.as_str(),
                    source_key: r.key.as_deref(),
                    source_headers: r.headers_json.as_deref(),
                })
            })
            .collect();
        let body = match encode_parquet(&rows, ingested_at_us) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "parquet encoding failed");
                return ObjectResult::NotWritten;
            }
        };
        match self
            .objects
            .put_new(key, body, "application/vnd.apache.parquet")
            .await
        {
            Ok(_) => ObjectResult::Written,
            Err(e) => {
                tracing::warn!(error = %e, "object write failed");
                match self.objects.exists(key).await {
                    Ok(true) => ObjectResult::Written,
                    Ok(false) if !e.ambiguous => ObjectResult::NotWritten,
                    _ => ObjectResult::Unknown,
                }
            }
        }
    }

    /// Fails `indices` and releases their claims, so a redelivery can claim them at once
    /// instead of waiting for the lease. Safe because their object will not be written.
    async fn give_up(&self, work: &mut Work<'_>, indices: &[usize], cause: FailureCause) {
        let owner = work.inv.attempt_id.as_str();
        let keys = &work.claim_key;
        stream::iter(indices.iter().filter_map(|&i| keys[i].as_deref()))
            .map(|key| async move {
                if let Err(err) = self.dedup.release(key, owner).await {
                    tracing::warn!(error = %err, "claim release failed; the lease will expire instead");
                }
            })
            .buffer_unordered(self.settings.claim_concurrency.max(1))
            .collect::<Vec<()>>()
            .await;
        for &i in indices {
            work.fail(i, cause);
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
    events: &[Option<Event>],
    outcomes: &[RecordOutcome],
    elapsed: Duration,
) -> BatchSummary {
    let now = now_ms();
    let mut s = BatchSummary {
        received: outcomes.len(),
        duration_ms: elapsed.as_millis() as u64,
        ..BatchSummary::default()
    };
    for ((o, e), r) in outcomes.iter().zip(events).zip(&batch.records) {
        match o {
            RecordOutcome::Loaded => {
                s.loaded += 1;
                if let Some(e) = e {
                    s.latency_from_created_ms.push(now - e.created_at_us / 1000);
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
