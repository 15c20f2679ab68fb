//! What a committer does with a staged object, given the claim another commit holds or held on
//! it and what the table's snapshot log says of that commit (docs/design/table-committer.md §4).
//!
//! The one rule it exists for: an append is never made again unless it is known not to have
//! been made. A commit id not found in the snapshot log proves the commit absent only while the
//! log still reaches back to it — within the table's snapshot retention — and only once its
//! holder can no longer commit (its lease has passed). Outside either, the object is reported,
//! neither re-appended (a duplicate) nor dropped (a loss).

use std::time::Duration;

/// The claim on one staged object, as read from the dedup table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// No claim: nobody took it yet.
    Absent,
    /// Taken and appended by `commit`.
    Committed { commit: String },
    /// Taken for `commit`, whose outcome the claim does not record.
    Committing {
        commit: String,
        /// The holder's lease is still live (it may yet commit).
        holder_live: bool,
        /// Since the claim was taken.
        age: Duration,
    },
}

/// Whether the holder's commit is in the table's snapshot log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InLog {
    /// A snapshot carries `streamload.commit-id = <commit>`.
    Found,
    /// No snapshot in the log carries it.
    Absent,
    /// Not looked (nothing to reconcile, or the holder is live).
    NotAsked,
}

/// The committer's move for one staged object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Claim it for this commit (create-if-absent).
    Claim,
    /// Already in the table: a notification or sweep sent it again. Nothing to do.
    Skip,
    /// A live holder may still commit it: leave the message to be retried.
    Leave,
    /// The holder's commit is in the table: record the claim as committed, append nothing.
    MarkCommitted { commit: String },
    /// The holder's commit provably did not happen: take the object over for this commit.
    TakeOver { from: String },
    /// The outcome cannot be known any more (older than the snapshot retention): alarm and
    /// keep the object for an operator.
    Report { commit: String },
}

/// Decides for one staged object. `retention` is how far back the table keeps snapshots
/// (S3 Tables' default 120 hours): a commit older than that may have been expired out of the
/// log, so its absence proves nothing.
///
/// ```
/// use std::time::Duration;
/// use streamload_table::reconcile::{decide, Claim, Decision, InLog};
/// let claim = Claim::Committing {
///     commit: "c1".into(), holder_live: false, age: Duration::from_secs(30),
/// };
/// let retention = Duration::from_secs(120 * 3600);
/// assert_eq!(decide(&claim, InLog::Found, retention),
///            Decision::MarkCommitted { commit: "c1".into() });
/// assert_eq!(decide(&claim, InLog::Absent, retention),
///            Decision::TakeOver { from: "c1".into() });
/// ```
pub fn decide(claim: &Claim, in_log: InLog, retention: Duration) -> Decision {
    match claim {
        Claim::Absent => Decision::Claim,
        Claim::Committed { .. } => Decision::Skip,
        Claim::Committing {
            holder_live: true, ..
        } => Decision::Leave,
        Claim::Committing { commit, age, .. } => match in_log {
            InLog::Found => Decision::MarkCommitted {
                commit: commit.clone(),
            },
            InLog::Absent if *age < retention => Decision::TakeOver {
                from: commit.clone(),
            },
            // Absent but possibly expired out of the log, or not looked at: never blind.
            InLog::Absent | InLog::NotAsked => Decision::Report {
                commit: commit.clone(),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETENTION: Duration = Duration::from_secs(120 * 3600);

    fn committing(live: bool, age_s: u64) -> Claim {
        Claim::Committing {
            commit: "c0".into(),
            holder_live: live,
            age: Duration::from_secs(age_s),
        }
    }

    #[test]
    fn a_free_object_is_claimed_and_a_committed_one_skipped_whatever_the_log_says() {
        for in_log in [InLog::Found, InLog::Absent, InLog::NotAsked] {
            assert_eq!(decide(&Claim::Absent, in_log, RETENTION), Decision::Claim);
            let done = Claim::Committed { commit: "c".into() };
            assert_eq!(decide(&done, in_log, RETENTION), Decision::Skip);
        }
    }

    #[test]
    fn a_live_holder_is_left_alone_even_when_its_commit_is_already_in_the_log() {
        for in_log in [InLog::Found, InLog::Absent, InLog::NotAsked] {
            assert_eq!(
                decide(&committing(true, 5), in_log, RETENTION),
                Decision::Leave
            );
        }
    }

    #[test]
    fn a_dead_holders_commit_is_marked_if_found_and_taken_over_only_if_provably_absent() {
        // A lost answer or a crash after the commit: found → never appended again
        assert_eq!(
            decide(&committing(false, 30), InLog::Found, RETENTION),
            Decision::MarkCommitted {
                commit: "c0".into()
            }
        );
        // A crash before the commit: absent within the retention → taken over
        assert_eq!(
            decide(&committing(false, 30), InLog::Absent, RETENTION),
            Decision::TakeOver { from: "c0".into() }
        );
        // Absent, but older than the retention (the snapshot may have been expired), or not
        // looked at: reported, neither re-appended nor dropped
        for (age, in_log) in [
            (RETENTION.as_secs(), InLog::Absent),
            (RETENTION.as_secs() + 1, InLog::Absent),
            (30, InLog::NotAsked),
        ] {
            assert_eq!(
                decide(&committing(false, age), in_log, RETENTION),
                Decision::Report {
                    commit: "c0".into()
                }
            );
        }
        // Found is found, however old
        assert_eq!(
            decide(
                &committing(false, RETENTION.as_secs() * 2),
                InLog::Found,
                RETENTION
            ),
            Decision::MarkCommitted {
                commit: "c0".into()
            }
        );
    }
}
