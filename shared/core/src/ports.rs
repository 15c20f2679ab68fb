//! The narrow traits through which the pipeline reaches the outside world.
//!
//! Each has one real adapter (`streamload-aws`, `streamload-postgres`) and an in-memory one
//! ([`crate::memory`]) for fault injection. Every method is a single idempotent-or-conditional
//! call; retries of transient errors happen inside the adapter per [`crate::retry`].

use crate::error::PortError;
use crate::route::{Route, Value};
use std::future::Future;

/// A dedup claim, as stored in the dedup table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// `ev:<event_id>` for an event, `dl:<unit>:<position>:<digest>` for a poison record
    /// (see [`crate::pipeline::poison_claim_key`]).
    pub key: String,
    /// The invocation that holds the claim (its Lambda request id).
    pub owner: String,
    /// Epoch ms after which the owner is certainly gone: its deadline plus a grace period.
    pub lease_until_ms: i64,
    /// The object that proves the work done: the Parquet object that will hold the event (its
    /// existence proves the owner committed the event to both sinks), or the archive of the
    /// dead-letter messages the owner sent, a poison record's among them (see
    /// docs/exactly-once.md).
    pub object_key: String,
    /// Epoch seconds after which the claim counts as absent (DynamoDB TTL attribute).
    pub expires_at_s: i64,
    /// Whether the owner keeps a renewable [`HolderLease`]: once `lease_until_ms` is over, the
    /// holder's lease says whether it is alive. A claim without one (written before leases
    /// existed) is the holder's own lease, to its end.
    pub renewable: bool,
}

/// An invocation's renewable lease: one item per invocation that its claims refer to (by
/// owner). The holder writes nothing after `alive_until_ms`, by its own clock, unless a
/// renewal moved it; a taker may revoke it once it is over by more than the lease grace
/// (docs/exactly-once.md, "Renewable leases").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderLease {
    /// The invocation (its Lambda request id), as in [`Claim::owner`].
    pub owner: String,
    /// Epoch ms: the holder's fence, by its own clock, as of its last applied renewal.
    pub alive_until_ms: i64,
    /// A taker declared the holder dead: no renewal can succeed any more.
    pub revoked: bool,
}

/// The answer to a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The lease now reaches at least the requested time (written now, or by a later renewal
    /// of ours that was applied first).
    Renewed,
    /// A taker revoked the lease: the holder must stop writing at once.
    Revoked,
}

/// The answer to a revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// The lease is revoked (now, or already): its holder can write nothing more, and its
    /// claims may be taken over.
    Revoked,
    /// The lease changed since it was read (a renewal landed): it is what the item holds now.
    Changed(Option<HolderLease>),
}

/// The answer to a conditional claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimAttempt {
    /// The claim is ours now.
    Claimed,
    /// A live (unexpired) claim already exists; this is its content, returned by the failed
    /// conditional write itself (`ReturnValuesOnConditionCheckFailure = ALL_OLD`).
    Held(Claim),
    /// The conditional write was refused and the key holds no item (a takeover whose claim
    /// was released meanwhile).
    Absent,
    /// The claim is ours (written, or our own earlier attempt's item returned), but an attempt
    /// of the same call lost its answer and was not shown to be the one that landed: it may
    /// still be applied later — after a release of this claim, say — recreating it. The
    /// pipeline then treats a release of this claim as unconfirmed (docs/exactly-once.md,
    /// "a claim applied late").
    MineAfterLostAttempt,
}

impl ClaimAttempt {
    /// Whether `mine` holds the key after this answer: written now, or written by an earlier
    /// attempt of the same call whose answer was lost (the item returned is our own).
    pub fn is_mine(&self, mine: &Claim) -> bool {
        match self {
            ClaimAttempt::Claimed | ClaimAttempt::MineAfterLostAttempt => true,
            ClaimAttempt::Held(c) => c.owner == mine.owner && c.object_key == mine.object_key,
            ClaimAttempt::Absent => false,
        }
    }
}

/// Dedup claims: DynamoDB in production.
pub trait DedupStore: Send + Sync {
    /// Writes `claim` if no claim exists for its key or the existing one has expired
    /// (`expires_at < now_s`). One write request.
    fn try_claim(
        &self,
        claim: &Claim,
        now_s: i64,
    ) -> impl Future<Output = Result<ClaimAttempt, PortError>> + Send;

    /// Replaces `previous` (a claim of a dead owner) with `claim`, only if it is unchanged.
    /// A refusal returns what the item holds now (`ReturnValuesOnConditionCheckFailure`), so
    /// the caller can tell its own earlier, applied attempt (an SDK retry after a lost answer
    /// meets it) from someone else's write.
    fn take_over(
        &self,
        claim: &Claim,
        previous: &Claim,
    ) -> impl Future<Output = Result<ClaimAttempt, PortError>> + Send;

    /// Strongly consistent read of the claim on `key`, expired or not.
    fn read(&self, key: &str) -> impl Future<Output = Result<Option<Claim>, PortError>> + Send;

    /// Deletes the claim if `owner` still holds it: used when the owner knows it will not
    /// write the claim's object, so a redelivery need not wait for the lease.
    fn release(
        &self,
        event_id: &str,
        owner: &str,
    ) -> impl Future<Output = Result<(), PortError>> + Send;

    /// Moves `owner`'s lease to `alive_until_ms`, creating it if absent, only if it is not
    /// revoked and the move is forward. A refusal because a later renewal of ours already
    /// landed counts as [`Renewal::Renewed`]. `expires_at_s` is the item's TTL.
    fn renew_lease(
        &self,
        owner: &str,
        alive_until_ms: i64,
        expires_at_s: i64,
    ) -> impl Future<Output = Result<Renewal, PortError>> + Send;

    /// Strongly consistent read of `owner`'s lease.
    fn read_lease(
        &self,
        owner: &str,
    ) -> impl Future<Output = Result<Option<HolderLease>, PortError>> + Send;

    /// Revokes `owner`'s lease only if it is still as read: `seen` is the lease read (its
    /// `alive_until_ms` unchanged and not revoked), or `None` for a lease that did not exist
    /// (a tombstone is written, so a creation still in flight fails).
    fn revoke_lease(
        &self,
        owner: &str,
        seen: Option<&HolderLease>,
        expires_at_s: i64,
    ) -> impl Future<Output = Result<Revocation, PortError>> + Send;
}

/// One mapped row for the database: its route (table, columns, key, merge) and its values,
/// one per route column (lake-only columns included; the sink skips them).
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub route: &'a Route,
    pub values: &'a [Value],
    /// Columns the event does not carry (a change event's unchanged TOASTed columns): the
    /// table keeps what it holds there. Empty for other events.
    pub unavailable: &'a [usize],
}

/// A row the database refused for a reason that belongs to the row itself (a constraint, a
/// value its column cannot hold): it can never load, and it must not hold back the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Index into the rows given to [`RowSink::upsert`].
    pub index: usize,
    /// The database's reason: SQLSTATE and the names of the objects involved, never values.
    pub reason: String,
}

/// What an upsert did: the rows refused for reasons of their own, and the rows of routes with a
/// search index whose event the table does not hold afterwards (another event of the key won:
/// the first under keep-first, a newer or an equal-but-earlier one under newest_by). Only the
/// event the table holds may write the key's document, so the table and the index agree
/// whatever order parallel invocations reach them in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upserted {
    pub refused: Vec<Refusal>,
    /// Indices into the rows given, sorted; never a refused row's.
    pub superseded: Vec<usize>,
}

/// The database: PostgreSQL in production. `upsert` commits every row it does not refuse in
/// one transaction; rows have distinct identities, each row is merged into its route's table
/// by the route's key and merge rule, and re-applying the same rows changes nothing more.
pub trait RowSink: Send + Sync {
    /// Upserts `rows`, returning the rows refused for reasons of their own (the rest are
    /// committed) and, for routes with a search index, the rows superseded (see [`Upserted`]).
    /// `until_ms` (epoch ms) bounds the call: a statement still running then is cancelled and
    /// the call fails with an ambiguous error.
    fn upsert(
        &self,
        rows: &[Row<'_>],
        until_ms: i64,
    ) -> impl Future<Output = Result<Upserted, PortError>> + Send;
}

/// Whether a create-only put made the object or found it there already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    AlreadyExists,
}

/// The object store: S3 in production. Objects appear whole or not at all.
pub trait ObjectSink: Send + Sync {
    /// Creates `key` only if it does not exist (`If-None-Match: *`). The body is shared
    /// (`Bytes`), so a retried write never copies it.
    fn put_new(
        &self,
        key: &str,
        body: bytes::Bytes,
        content_type: &str,
    ) -> impl Future<Output = Result<PutOutcome, PortError>> + Send;

    fn exists(&self, key: &str) -> impl Future<Output = Result<bool, PortError>> + Send;
}

/// One dead letter on its way to the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// The message body (JSON text).
    pub body: String,
    /// Identifies the poison record: a FIFO queue uses it as `MessageDeduplicationId`, so a
    /// resend after a lost answer is dropped.
    pub dedup_id: String,
}

/// What one letter of a batch became; the request as a whole answered.
pub type LetterResult = Result<(), PortError>;

/// The dead-letter queue: SQS in production.
pub trait DeadLetters: Send + Sync {
    /// Sends `letters` in one request: at most [`DeadLetters::max_batch_len`] of them, their
    /// bodies summing to at most [`DeadLetters::max_body_bytes`]. `Ok` holds one result per
    /// letter, in order: one letter refused leaves the others sent. `Err` is the request's own
    /// failure; if ambiguous, any of the letters may have been queued.
    fn send_batch(
        &self,
        letters: &[Letter],
    ) -> impl Future<Output = Result<Vec<LetterResult>, PortError>> + Send;

    /// Largest body the queue accepts, in bytes, and the most a batch's bodies may sum to;
    /// larger records go to the object store.
    fn max_body_bytes(&self) -> usize;

    /// Most letters one request may carry.
    fn max_batch_len(&self) -> usize;
}

/// A stored search document, as read back (verification, the contract suite).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDocument {
    /// Its version (the external version written; 1 for a create-only document).
    pub version: u64,
    pub source: serde_json::Value,
}

/// A search index (OpenSearch, Elasticsearch): the sink searched by people. Every write is
/// versioned or create-only, so a request sent again, whole or in part, changes nothing.
pub trait SearchIndex: Send + Sync {
    /// Sends one `_bulk` request carrying `documents` documents (made by
    /// [`crate::search::bulk::encode`]) and reads the index's answer for each. An error is
    /// the whole request's; after the request was sent it may have been applied, which is
    /// harmless here.
    fn bulk(
        &self,
        body: bytes::Bytes,
        documents: usize,
    ) -> impl Future<Output = Result<Vec<crate::search::bulk::ItemOutcome>, PortError>> + Send;

    /// Makes sure `plan`'s index (or, for a time pattern, its index template) exists with the
    /// field types the route writes, creating it when `create` allows. A mismatch or a missing
    /// index is a permanent error: one line naming `route` and the field.
    fn prepare(
        &self,
        route: &str,
        plan: &crate::search::IndexPlan,
        create: bool,
    ) -> impl Future<Output = Result<(), PortError>> + Send;

    /// One document, read back.
    fn document(
        &self,
        index: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<StoredDocument>, PortError>> + Send;

    /// The id and version of every document in `index`, after making recent writes visible
    /// (an audit's read: `streamload verify` finds documents nobody produced with it).
    fn list_documents(
        &self,
        index: &str,
    ) -> impl Future<Output = Result<Vec<(String, u64)>, PortError>> + Send;
}

/// A future of a [`DynSearchIndex`] call.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`SearchIndex`] as a trait object, so the pipeline holds an index only when a route names
/// one: one boxed future per `_bulk` request, nothing when none is configured.
pub trait DynSearchIndex: Send + Sync {
    fn bulk_dyn(
        &self,
        body: bytes::Bytes,
        documents: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::search::bulk::ItemOutcome>, PortError>>;
}

impl<T: SearchIndex> DynSearchIndex for T {
    fn bulk_dyn(
        &self,
        body: bytes::Bytes,
        documents: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::search::bulk::ItemOutcome>, PortError>> {
        Box::pin(self.bulk(body, documents))
    }
}
