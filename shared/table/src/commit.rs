//! One committer invocation: claim the staged objects it was sent, write them as data files,
//! and append them to the route's table exactly once (docs/exactly-once.md, "The table
//! committer").
//!
//! Exactly once rests on two facts, not on timing:
//! * the catalog's compare-and-swap: an append lands only if the table's main branch is still
//!   at the snapshot the append was built on ([`TableLog::append`]), so of two appends built
//!   on one version at most one lands;
//! * every attempt re-checks after loading its base: its own commit id in the snapshot log
//!   (a lost answer that was applied), the commit it took an object over from (a holder that
//!   landed late), and — unless its lease is certainly live — that its claims still name it.
//!
//! The claim's lease only decides *when* another committer may take an object over (liveness);
//! a holder that outlives it is fenced by the checks above, whichever of the two lands first.

use crate::ports::{
    ClaimRecord, ClaimState, CommitClaims, PortError, StagedObject, TableLog, TakeAnswer,
};
use crate::reconcile::{decide, Claim, Decision, InLog};
use futures::stream::{self, StreamExt, TryStreamExt};
use std::collections::BTreeMap;
use std::time::Duration;

/// Claim reads and writes one invocation has in flight at once: each is a round trip of a few
/// milliseconds to DynamoDB, and one commit may take a thousand objects.
pub const CLAIM_CONCURRENCY: usize = 32;

/// What acting on one object's decision left.
enum Acted {
    /// This commit holds it (taken, or taken over from the commit named).
    Mine(StagedObject, Option<String>),
    Done(Outcome),
}

/// The committer's clock: milliseconds since the epoch. An input, so tests move time.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The protocol's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long a claim's holder may append it; another committer takes it over only after
    /// `lease + skew`.
    pub lease: Duration,
    /// The clock difference allowed between two committers.
    pub skew: Duration,
    /// How far back the table keeps snapshots: a commit older than that may have been expired
    /// out of the log, so its absence proves nothing ([`crate::reconcile`]).
    pub retention: Duration,
    /// Appends tried per invocation (conflicts, lost answers, retryable failures).
    pub max_attempts: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lease: Duration::from_secs(120),
            skew: Duration::from_secs(2),
            // S3 Tables' default snapshot retention (maximum snapshot age, 120 hours).
            retention: Duration::from_secs(120 * 3600),
            max_attempts: 5,
        }
    }
}

/// What became of one staged object in this invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// In the table by this invocation's commit.
    Appended,
    /// Already in the table, by `commit` (a notification sent twice, or another committer's
    /// commit found in the log).
    AlreadyInTable { commit: String },
    /// Held by a commit that may still land: retry later.
    Left,
    /// Its commit's outcome can no longer be known: an operator decides (never re-appended
    /// blind, never dropped).
    Report { commit: String },
}

impl Outcome {
    /// Whether the message that named the object is done (not retried).
    pub fn is_done(&self) -> bool {
        matches!(self, Outcome::Appended | Outcome::AlreadyInTable { .. })
    }
}

/// What one invocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub commit: String,
    /// One outcome per distinct staged key sent.
    pub outcomes: BTreeMap<String, Outcome>,
    /// Appends tried (0 when nothing needed one).
    pub attempts: u32,
}

impl Report {
    pub fn appended(&self) -> usize {
        self.outcomes
            .values()
            .filter(|o| **o == Outcome::Appended)
            .count()
    }
}

/// Claims `objects` for `commit` (a fresh id per invocation), appends what it took to the
/// table once, and records the claims committed.
///
/// ```
/// use std::time::Duration;
/// use streamload_table::commit::{commit_staged, Outcome, Settings};
/// use streamload_table::memory::{FixedClock, MemoryClaims, MemoryTable};
/// use streamload_table::ports::StagedObject;
/// # tokio_test_block_on(async {
/// let (claims, table, clock) = (MemoryClaims::default(), MemoryTable::default(), FixedClock::at(0));
/// let staged = [StagedObject { key: "o/dt=2024-03-01/hour=10/a.parquet".into(), bytes: 10 }];
/// let report = commit_staged(&claims, &table, &clock, Settings::default(), "c1", &staged).await.unwrap();
/// assert_eq!(report.outcomes[&staged[0].key], Outcome::Appended);
/// // The same notification again: already in the table, nothing appended twice.
/// let again = commit_staged(&claims, &table, &clock, Settings::default(), "c2", &staged).await.unwrap();
/// assert_eq!(again.outcomes[&staged[0].key], Outcome::AlreadyInTable { commit: "c1".into() });
/// assert_eq!(table.times_in_table(&staged[0].key), 1);
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
pub async fn commit_staged<C: CommitClaims, T: TableLog>(
    claims: &C,
    table: &T,
    clock: &dyn Clock,
    settings: Settings,
    commit: &str,
    objects: &[StagedObject],
) -> Result<Report, PortError> {
    let mut report = Report {
        commit: commit.to_string(),
        outcomes: BTreeMap::new(),
        attempts: 0,
    };
    let mut unique: BTreeMap<&str, &StagedObject> = BTreeMap::new();
    for o in objects {
        unique.entry(o.key.as_str()).or_insert(o);
    }
    let lease_until = clock.now_ms() + millis(settings.lease);
    // Every object's claim, read concurrently (one round trip each, CLAIM_CONCURRENCY at once).
    // (The futures are made first and then streamed: a closure in `StreamExt::map` over
    // borrowed keys trips the compiler's Send inference for callers that need a Send future.)
    let reads: Vec<_> = unique.keys().map(|key| claims.read(key)).collect();
    let records: Vec<Option<ClaimRecord>> = stream::iter(reads)
        .buffered(CLAIM_CONCURRENCY)
        .try_collect()
        .await?;
    let now = clock.now_ms();
    let first: Vec<(Claim, Decision)> = records
        .iter()
        .map(|r| {
            let claim = as_claim(r.as_ref(), now, settings);
            let decision = decide(&claim, InLog::NotAsked, settings.retention);
            (claim, decision)
        })
        .collect();
    // A dead holder: only the snapshot log can say whether its commit landed (loaded once).
    let dead_holder = first
        .iter()
        .any(|(_, d)| matches!(d, Decision::Report { .. }));
    let log = if dead_holder {
        Some(table.commits(&table.load().await?))
    } else {
        None
    };
    let plans = unique.into_iter().zip(records).zip(first).map(
        |(((key, object), record), (claim, decision))| {
            let decision = match (&decision, &record, &log) {
                (Decision::Report { .. }, Some(r), Some(l)) => {
                    let in_log = if l.contains(&r.commit) {
                        InLog::Found
                    } else {
                        InLog::Absent
                    };
                    decide(&claim, in_log, settings.retention)
                }
                _ => decision,
            };
            (key, object, record, decision)
        },
    );
    // Then each decision acted on, concurrently.
    let acts: Vec<_> = plans
        .map(|(key, object, record, decision)| async move {
            let acted = match decision {
                Decision::Claim => match claims.take(key, commit, lease_until, now).await? {
                    TakeAnswer::Taken => Acted::Mine(object.clone(), None),
                    TakeAnswer::Held(other) => Acted::Done(outcome_of_held(&other)),
                },
                Decision::TakeOver { from } => {
                    match claims
                        .take_over(key, &from, commit, lease_until, now)
                        .await?
                    {
                        TakeAnswer::Taken => Acted::Mine(object.clone(), Some(from)),
                        TakeAnswer::Held(other) => Acted::Done(outcome_of_held(&other)),
                    }
                }
                Decision::Skip => Acted::Done(Outcome::AlreadyInTable {
                    commit: record.map(|r| r.commit).unwrap_or_default(),
                }),
                Decision::MarkCommitted { commit: found } => {
                    claims.mark_committed(key, &found, &found).await?;
                    Acted::Done(Outcome::AlreadyInTable { commit: found })
                }
                Decision::Leave => Acted::Done(Outcome::Left),
                Decision::Report { commit } => Acted::Done(Outcome::Report { commit }),
            };
            Ok::<_, PortError>((key.to_string(), acted))
        })
        .collect();
    let acted: Vec<(String, Acted)> = stream::iter(acts)
        .buffered(CLAIM_CONCURRENCY)
        .try_collect()
        .await?;
    // Objects this commit holds, with the commit each was taken over from.
    let mut mine: BTreeMap<String, (StagedObject, Option<String>)> = BTreeMap::new();
    for (key, acted) in acted {
        match acted {
            Acted::Mine(object, from) => {
                mine.insert(key, (object, from));
            }
            Acted::Done(outcome) => {
                report.outcomes.insert(key, outcome);
            }
        }
    }
    if mine.is_empty() {
        return Ok(report);
    }
    append_once(
        claims,
        table,
        clock,
        settings,
        lease_until,
        &mut mine,
        &mut report,
    )
    .await?;
    Ok(report)
}

/// The append loop: every attempt loads its base and re-checks before appending.
async fn append_once<C: CommitClaims, T: TableLog>(
    claims: &C,
    table: &T,
    clock: &dyn Clock,
    settings: Settings,
    lease_until: i64,
    mine: &mut BTreeMap<String, (StagedObject, Option<String>)>,
    report: &mut Report,
) -> Result<(), PortError> {
    let commit = report.commit.clone();
    let mut written: Option<T::Written> = None;
    let mut writes = 0u32;
    let mut last_error: Option<PortError> = None;
    let mut landed = false;
    while report.attempts < settings.max_attempts {
        report.attempts += 1;
        let base = match table.load().await {
            Ok(b) => b,
            Err(PortError::Permanent(m)) => return Err(PortError::Permanent(m)),
            Err(e) => {
                last_error = Some(e);
                continue;
            }
        };
        let log = table.commits(&base);
        if log.contains(&commit) {
            // Applied earlier in this invocation, its answer lost.
            landed = true;
            break;
        }
        let lease_certain = clock.now_ms() + millis(settings.skew) < lease_until;
        if (report.attempts > 1 || !lease_certain) && !still_mine(claims, &commit, mine).await? {
            // Taken over (we outlived our lease): the taker decides; never append.
            for key in mine.keys() {
                report.outcomes.insert(key.clone(), Outcome::Left);
            }
            return Ok(());
        }
        // A holder we took an object over from may have landed after all.
        let landed_elsewhere: Vec<(String, String)> = mine
            .iter()
            .filter_map(|(k, (_, from))| {
                from.as_ref()
                    .filter(|f| log.contains(*f))
                    .map(|f| (k.clone(), f.clone()))
            })
            .collect();
        if !landed_elsewhere.is_empty() {
            for (key, found) in landed_elsewhere {
                claims.mark_committed(&key, &commit, &found).await?;
                mine.remove(&key);
                report
                    .outcomes
                    .insert(key, Outcome::AlreadyInTable { commit: found });
            }
            // The files written so far hold those objects' rows: write again without them.
            written = None;
            if mine.is_empty() {
                return Ok(());
            }
        }
        if written.is_none() {
            let write_id = if writes == 0 {
                commit.clone()
            } else {
                format!("{commit}-w{writes}")
            };
            writes += 1;
            let objects: Vec<StagedObject> = mine.values().map(|(o, _)| o.clone()).collect();
            match table.write(&base, &write_id, &objects).await {
                Ok(w) => written = Some(w),
                Err(PortError::Permanent(m)) => return Err(PortError::Permanent(m)),
                Err(e) => {
                    last_error = Some(e);
                    continue;
                }
            }
        }
        let Some(files) = written.as_ref() else {
            continue;
        };
        match table.append(&base, &commit, files).await {
            Ok(()) => {
                landed = true;
                break;
            }
            Err(PortError::Permanent(m)) => return Err(PortError::Permanent(m)),
            // A conflict or a lost answer: the next attempt's base decides.
            Err(e) => last_error = Some(e),
        }
    }
    if !landed {
        for key in mine.keys() {
            report.outcomes.insert(key.clone(), Outcome::Left);
        }
        return match last_error {
            Some(e) => Err(e),
            None => Ok(()),
        };
    }
    // A lost answer here is harmless: the claim stays `committing` naming a commit the log
    // holds, and the next committer to see it marks it.
    let marks: Vec<_> = mine
        .keys()
        .map(|key| claims.mark_committed(key, &commit, &commit))
        .collect();
    stream::iter(marks)
        .buffer_unordered(CLAIM_CONCURRENCY)
        .for_each(|_| async {})
        .await;
    for key in mine.keys() {
        report.outcomes.insert(key.clone(), Outcome::Appended);
    }
    Ok(())
}

/// Whether every claim of `mine` still names `commit` as `committing`.
async fn still_mine<C: CommitClaims>(
    claims: &C,
    commit: &str,
    mine: &BTreeMap<String, (StagedObject, Option<String>)>,
) -> Result<bool, PortError> {
    let reads: Vec<_> = mine.keys().map(|key| claims.read(key)).collect();
    let records: Vec<Option<ClaimRecord>> = stream::iter(reads)
        .buffered(CLAIM_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(records
        .iter()
        .all(|r| matches!(r, Some(r) if r.commit == commit && r.state == ClaimState::Committing)))
}

fn outcome_of_held(other: &ClaimRecord) -> Outcome {
    match other.state {
        ClaimState::Committed => Outcome::AlreadyInTable {
            commit: other.commit.clone(),
        },
        ClaimState::Committing => Outcome::Left,
    }
}

fn as_claim(record: Option<&ClaimRecord>, now_ms: i64, settings: Settings) -> Claim {
    match record {
        None => Claim::Absent,
        Some(r) if r.state == ClaimState::Committed => Claim::Committed {
            commit: r.commit.clone(),
        },
        Some(r) => Claim::Committing {
            commit: r.commit.clone(),
            holder_live: now_ms < r.lease_until_ms + millis(settings.skew),
            age: Duration::from_millis(now_ms.saturating_sub(r.taken_at_ms).max(0) as u64),
        },
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
