//! The two outside systems the committer's protocol talks to, as narrow ports: the claims on
//! staged objects (the dedup table) and the Iceberg table (its catalog and storage). The real
//! adapters live in the committer's crates; [`crate::memory`] holds in-memory ones for the
//! protocol's crash-point tests, and one contract suite runs against both.

use std::collections::BTreeSet;
use std::fmt;

/// A staged Parquet object of the loaders, as a notification or the sweep names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StagedObject {
    pub key: String,
    pub bytes: u64,
}

/// Where a claim's commit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimState {
    /// Taken for `commit`; whether it was appended is not recorded (the table's snapshot log
    /// says).
    Committing,
    /// Appended by `commit`.
    Committed,
}

/// One staged object's claim as the dedup table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRecord {
    pub state: ClaimState,
    /// The commit id that took (or appended) the object.
    pub commit: String,
    /// Until when (ms since the epoch) the commit's holder may still append it.
    pub lease_until_ms: i64,
    /// When the claim was taken (ms since the epoch).
    pub taken_at_ms: i64,
}

/// The answer to a conditional claim write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeAnswer {
    /// The claim now names this commit.
    Taken,
    /// Somebody else's claim stands (as read back in the same call).
    Held(ClaimRecord),
}

/// How an outside call failed, which decides what the protocol may do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortError {
    /// Not applied; the same call may be made again.
    Retryable(String),
    /// The catalog refused the commit because the table moved on since its base (a failed
    /// compare-and-swap, S3 Tables' `ConflictException`, a REST 409): not applied.
    Conflict(String),
    /// Sent, and may or may not have been applied (a lost answer, a 5xx after the request).
    Unknown(String),
    /// Will fail the same way again (a missing table, a schema the table refuses, access).
    Permanent(String),
}

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortError::Retryable(m) => write!(f, "retryable: {m}"),
            PortError::Conflict(m) => write!(f, "commit conflict: {m}"),
            PortError::Unknown(m) => write!(f, "outcome unknown: {m}"),
            PortError::Permanent(m) => write!(f, "permanent: {m}"),
        }
    }
}

impl std::error::Error for PortError {}

/// The claims on staged objects (`tc:<route>:<staged key>` in the dedup table). Every write is
/// conditional, so two committers never both believe they hold an object.
#[allow(async_fn_in_trait)]
pub trait CommitClaims {
    /// The claim of `key`, if any.
    async fn read(&self, key: &str) -> Result<Option<ClaimRecord>, PortError>;
    /// Creates a `committing` claim naming `commit` if none exists.
    async fn take(
        &self,
        key: &str,
        commit: &str,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> Result<TakeAnswer, PortError>;
    /// Replaces a `committing` claim naming `from` with one naming `commit` (a compare-and-swap
    /// on the commit id and state).
    async fn take_over(
        &self,
        key: &str,
        from: &str,
        commit: &str,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> Result<TakeAnswer, PortError>;
    /// Records that `appended_by` appended the object, if the claim still names `holder`
    /// (the commit that holds it now: itself, or a taker that found the holder's commit in the
    /// log). Repeating it is harmless.
    async fn mark_committed(
        &self,
        key: &str,
        holder: &str,
        appended_by: &str,
    ) -> Result<(), PortError>;
}

/// The Iceberg table of one route.
#[allow(async_fn_in_trait)]
pub trait TableLog {
    /// A loaded version of the table: the base an append is made on, and the snapshot log it
    /// shows.
    type Base;
    /// The data files written for one commit, not yet referenced by any snapshot.
    type Written;

    /// Loads the table's current version from its catalog.
    async fn load(&self) -> Result<Self::Base, PortError>;
    /// The commit ids recorded in the summaries of the base's current snapshot and its
    /// ancestors (as far back as the table keeps snapshots).
    fn commits(&self, base: &Self::Base) -> BTreeSet<String>;
    /// Reads the staged objects and writes their rows as data files of the table, partitioned
    /// and sized by the table's settings, named from `write_id` (unique per write).
    async fn write(
        &self,
        base: &Self::Base,
        write_id: &str,
        objects: &[StagedObject],
    ) -> Result<Self::Written, PortError>;
    /// Appends the written files as one snapshot whose summary records `commit`, only if the
    /// table's main branch is still at `base`'s snapshot (never re-based silently).
    async fn append(
        &self,
        base: &Self::Base,
        commit: &str,
        written: &Self::Written,
    ) -> Result<(), PortError>;
}
