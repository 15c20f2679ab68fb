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
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

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
    // Objects this commit holds, with the commit each was taken over from.
    let mut mine: BTreeMap<String, (StagedObject, Option<String>)> = BTreeMap::new();
    let mut log: Option<BTreeSet<String>> = None;
    for (key, object) in unique {
        let record = claims.read(key).await?;
        let now = clock.now_ms();
        let claim = as_claim(record.as_ref(), now, settings);
        let mut decision = decide(&claim, InLog::NotAsked, settings.retention);
        if let (Decision::Report { .. }, Some(r)) = (&decision, &record) {
            // A dead holder: only the snapshot log can say whether its commit landed.
            if log.is_none() {
                log = Some(table.commits(&table.load().await?));
            }
            let in_log = match log.as_ref() {
                Some(l) if l.contains(&r.commit) => InLog::Found,
                _ => InLog::Absent,
            };
            decision = decide(&claim, in_log, settings.retention);
        }
        let outcome = match decision {
            Decision::Claim => match claims.take(key, commit, lease_until, now).await? {
                TakeAnswer::Taken => {
                    mine.insert(key.to_string(), (object.clone(), None));
                    continue;
                }
                TakeAnswer::Held(other) => outcome_of_held(&other),
            },
            Decision::TakeOver { from } => {
                match claims
                    .take_over(key, &from, commit, lease_until, now)
                    .await?
                {
                    TakeAnswer::Taken => {
                        mine.insert(key.to_string(), (object.clone(), Some(from)));
                        continue;
                    }
                    TakeAnswer::Held(other) => outcome_of_held(&other),
                }
            }
            Decision::Skip => Outcome::AlreadyInTable {
                commit: record.map(|r| r.commit).unwrap_or_default(),
            },
            Decision::MarkCommitted { commit: found } => {
                claims.mark_committed(key, &found, &found).await?;
                Outcome::AlreadyInTable { commit: found }
            }
            Decision::Leave => Outcome::Left,
            Decision::Report { commit } => Outcome::Report { commit },
        };
        report.outcomes.insert(key.to_string(), outcome);
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
    for key in mine.keys() {
        // A lost answer here is harmless: the claim stays `committing` naming a commit the
        // log holds, and the next committer to see it marks it.
        let _ = claims.mark_committed(key, &commit, &commit).await;
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
    for key in mine.keys() {
        match claims.read(key).await? {
            Some(r) if r.commit == commit && r.state == ClaimState::Committing => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
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
