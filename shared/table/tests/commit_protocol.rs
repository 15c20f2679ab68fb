//! The committer's protocol at every crash point and lost answer (docs/exactly-once.md, "The
//! table committer"), on the in-memory ports: each test ends with every staged object in the
//! table exactly once, or provably not yet and still claimed.

use std::sync::Arc;
use streamload_table::commit::{commit_staged, Outcome, Report, Settings};
use streamload_table::memory::{Call, Fault, FixedClock, MemoryClaims, MemoryTable};
use streamload_table::ports::{ClaimState, CommitClaims, PortError, StagedObject, TakeAnswer};

const LEASE_MS: i64 = 120_000;

struct World {
    claims: Arc<MemoryClaims>,
    table: Arc<MemoryTable>,
    clock: Arc<FixedClock>,
}

fn world() -> World {
    World {
        claims: Arc::new(MemoryClaims::default()),
        table: Arc::new(MemoryTable::default()),
        clock: Arc::new(FixedClock::at(1_000_000)),
    }
}

fn staged(keys: &[&str]) -> Vec<StagedObject> {
    keys.iter()
        .map(|k| StagedObject {
            key: format!("orders/dt=2024-03-01/hour=10/{k}.parquet"),
            bytes: 100,
        })
        .collect()
}

impl World {
    async fn run(&self, commit: &str, objects: &[StagedObject]) -> Result<Report, PortError> {
        commit_staged(
            self.claims.as_ref(),
            self.table.as_ref(),
            self.clock.as_ref(),
            Settings::default(),
            commit,
            objects,
        )
        .await
    }

    fn assert_once(&self, objects: &[StagedObject]) {
        for o in objects {
            assert_eq!(self.table.times_in_table(&o.key), 1, "{}", o.key);
        }
    }

    /// Just before the next `call` of the memory table: the clock passes the lease of a
    /// committer "slow", a "taker" takes `key` over from it and lands it.
    fn taker_lands_before(&self, call: Call, key: &str) {
        let (claims, table, clock, key) = (
            self.claims.clone(),
            self.table.clone(),
            self.clock.clone(),
            key.to_string(),
        );
        self.table.before_next(call, move || {
            clock.advance(LEASE_MS + 2_001);
            let now = clock.now();
            assert!(claims.take_over_now(&key, "slow", "taker", now + LEASE_MS, now));
            table.land("taker", &[&key]);
        });
    }

    /// A committer that took the claims for `commit` and then died (nothing else done).
    async fn claimed_by_dead(&self, commit: &str, objects: &[StagedObject]) {
        let now = self.clock.now();
        for o in objects {
            let answer = self.claims.take(&o.key, commit, now + LEASE_MS, now).await;
            assert_eq!(answer, Ok(TakeAnswer::Taken));
        }
    }
}

trait Now {
    fn now(&self) -> i64;
}
impl Now for FixedClock {
    fn now(&self) -> i64 {
        streamload_table::commit::Clock::now_ms(self)
    }
}

#[tokio::test]
async fn a_batch_lands_once_and_its_claims_are_marked_committed() {
    // Given three staged objects, one named twice by the notifications
    let w = world();
    let mut objects = staged(&["a", "b", "c"]);
    objects.push(objects[0].clone());
    // When one committer runs
    let report = w.run("c1", &objects).await.unwrap();
    // Then one snapshot holds each object once, and every claim says committed by c1
    assert_eq!(report.appended(), 3);
    assert_eq!(w.table.snapshot_count(), 1);
    w.assert_once(&objects);
    for o in &objects {
        let claim = w.claims.get(&o.key).unwrap();
        assert_eq!(
            (claim.state, claim.commit.as_str()),
            (ClaimState::Committed, "c1")
        );
    }
}

#[tokio::test]
async fn an_append_applied_whose_answer_was_lost_is_found_in_the_log_not_appended_again() {
    // Given the catalog applies the append and the answer is lost
    let w = world();
    let objects = staged(&["a", "b"]);
    w.table.inject(Fault::LostAnswerAfterApply);
    // When the committer runs
    let report = w.run("c1", &objects).await.unwrap();
    // Then its next attempt finds c1 in the snapshot log: appended once, reported appended
    assert_eq!(report.appended(), 2);
    assert_eq!(report.attempts, 2);
    assert_eq!(w.table.snapshot_count(), 1);
    w.assert_once(&objects);
}

#[tokio::test]
async fn a_conflicting_writer_makes_the_append_retry_on_the_new_version() {
    // Given another writer lands a snapshot between our base and our append (failed CAS)
    let w = world();
    let objects = staged(&["a"]);
    w.table.inject(Fault::OtherWriterFirst);
    // When the committer runs
    let report = w.run("c1", &objects).await.unwrap();
    // Then it appends on the new version, once, reusing the files it wrote
    assert_eq!(report.appended(), 1);
    assert_eq!(w.table.snapshot_count(), 2);
    assert_eq!(w.table.writes(), ["c1"]);
    w.assert_once(&objects);
}

#[tokio::test]
async fn refusals_before_applying_and_failed_writes_are_retried() {
    let w = world();
    let objects = staged(&["a"]);
    w.table.inject(Fault::WriteFails);
    w.table.inject(Fault::FailBeforeApply);
    let report = w.run("c1", &objects).await.unwrap();
    assert_eq!(report.appended(), 1);
    assert_eq!(report.attempts, 3);
    w.assert_once(&objects);
}

#[tokio::test]
async fn a_committer_dead_after_its_claims_is_taken_over_after_its_lease_only() {
    // Given a committer that claimed two objects (and maybe wrote files) and died
    let w = world();
    let objects = staged(&["a", "b"]);
    w.claimed_by_dead("dead", &objects).await;
    // When another runs while the lease is live: the objects are left for later
    let early = w.run("c2", &objects).await.unwrap();
    assert!(early.outcomes.values().all(|o| *o == Outcome::Left));
    assert_eq!(w.table.snapshot_count(), 0);
    // When one runs after the lease and the skew: dead's commit is not in the log → taken over
    w.clock.advance(LEASE_MS + 2_001);
    let late = w.run("c3", &objects).await.unwrap();
    // Then appended once, by c3
    assert_eq!(late.appended(), 2);
    w.assert_once(&objects);
    assert_eq!(w.claims.get(&objects[0].key).unwrap().commit, "c3");
}

#[tokio::test]
async fn a_committer_dead_after_its_commit_and_before_its_bookkeeping_is_marked_not_appended() {
    // Given a committer whose snapshot landed and which died before marking its claims
    let w = world();
    let objects = staged(&["a", "b"]);
    w.claimed_by_dead("dead", &objects).await;
    w.table.land("dead", &[&objects[0].key, &objects[1].key]);
    w.clock.advance(LEASE_MS + 2_001);
    // When the next committer is sent the same objects
    let report = w.run("c2", &objects).await.unwrap();
    // Then it finds dead's commit in the log, marks the claims, appends nothing
    for o in &objects {
        assert_eq!(
            report.outcomes[&o.key],
            Outcome::AlreadyInTable {
                commit: "dead".into()
            }
        );
        let claim = w.claims.get(&o.key).unwrap();
        assert_eq!(
            (claim.state, claim.commit.as_str()),
            (ClaimState::Committed, "dead")
        );
    }
    assert_eq!(w.table.snapshot_count(), 1);
    w.assert_once(&objects);
}

#[tokio::test]
async fn a_holder_that_lands_after_being_taken_over_is_found_by_the_taker_before_it_appends() {
    // Given a holder past its lease whose append is still in flight
    let w = world();
    let objects = staged(&["a"]);
    w.claimed_by_dead("slow", &objects).await;
    w.clock.advance(LEASE_MS + 2_001);
    // When the taker has taken the object over and the holder's append lands just before
    // the taker's
    let (table, key) = (w.table.clone(), objects[0].key.clone());
    w.table
        .before_next(Call::Append, move || table.land("slow", &[&key]));
    let report = w.run("taker", &objects).await.unwrap();
    // Then the taker's append conflicts, its next attempt finds slow's commit: once
    assert_eq!(
        report.outcomes[&objects[0].key],
        Outcome::AlreadyInTable {
            commit: "slow".into()
        }
    );
    w.assert_once(&objects);
}

#[tokio::test]
async fn a_holder_taken_over_while_it_was_slow_never_appends_after_the_taker() {
    // Given a committer that claimed an object and then stalls past its lease before its
    // append; meanwhile a taker takes the object over and lands it
    let w = world();
    let objects = staged(&["a"]);
    w.taker_lands_before(Call::Append, &objects[0].key);
    // When the slow committer's append runs
    let report = w.run("slow", &objects).await.unwrap();
    // Then its append conflicts, it sees its claim taken, and leaves it: once, by the taker
    assert_eq!(report.outcomes[&objects[0].key], Outcome::Left);
    w.assert_once(&objects);
}

#[tokio::test]
async fn a_holder_that_resumes_after_the_taker_landed_checks_its_claims_before_appending() {
    // Given a committer that stalls past its lease between its claims and its first base
    let w = world();
    let objects = staged(&["a"]);
    w.taker_lands_before(Call::Load, &objects[0].key);
    // When it goes on: its base already holds the taker's snapshot, so no conflict can stop it
    let report = w.run("slow", &objects).await.unwrap();
    // Then only its claims check (its lease is no longer certain) keeps it from appending
    assert_eq!(report.outcomes[&objects[0].key], Outcome::Left);
    w.assert_once(&objects);
}

#[tokio::test]
async fn a_claim_older_than_the_snapshot_retention_is_reported_never_re_appended() {
    // Given a dead holder's claim older than the table keeps snapshots, its commit not in log
    let w = world();
    let objects = staged(&["a"]);
    w.claimed_by_dead("ancient", &objects).await;
    w.clock
        .advance(Settings::default().retention.as_millis() as i64 + 1);
    // When a committer is sent the object
    let report = w.run("c2", &objects).await.unwrap();
    // Then it reports it for an operator and appends nothing
    assert_eq!(
        report.outcomes[&objects[0].key],
        Outcome::Report {
            commit: "ancient".into()
        }
    );
    assert_eq!(w.table.snapshot_count(), 0);
}

#[tokio::test]
async fn a_commit_out_of_attempts_leaves_its_claims_and_the_next_invocation_finishes_it() {
    // Given every append of the first invocation conflicts
    let w = world();
    let objects = staged(&["a", "b"]);
    for _ in 0..Settings::default().max_attempts {
        w.table.inject(Fault::OtherWriterFirst);
    }
    // When it runs out of attempts: an error, nothing of it in the table, claims kept
    let first = w.run("c1", &objects).await;
    assert!(matches!(first, Err(PortError::Conflict(_))), "{first:?}");
    assert_eq!(w.table.times_in_table(&objects[0].key), 0);
    // Then after its lease the next invocation takes the objects over and appends them once
    w.clock.advance(LEASE_MS + 2_001);
    let second = w.run("c2", &objects).await.unwrap();
    assert_eq!(second.appended(), 2);
    w.assert_once(&objects);
}

#[tokio::test]
async fn many_committers_racing_over_overlapping_deliveries_append_each_object_once() {
    // Given deliveries that overlap (notifications twice, the sweep resending), some with
    // faults, run one after another with the clock moving past leases
    let w = world();
    let all = staged(&["a", "b", "c", "d", "e", "f"]);
    let faults = [
        Fault::LostAnswerAfterApply,
        Fault::OtherWriterFirst,
        Fault::FailBeforeApply,
    ];
    for (i, window) in all.windows(3).enumerate() {
        w.table.inject(faults[i % faults.len()]);
        let _ = w.run(&format!("c{i}"), window).await.unwrap();
        w.clock.advance(LEASE_MS / 2);
    }
    let _ = w.run("sweep", &all).await.unwrap();
    // Then every object is in the table once
    w.assert_once(&all);
}
