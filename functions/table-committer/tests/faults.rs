//! The committer's lost answers and races made real: a commit whose answer a TCP relay drops
//! after PostgreSQL applied it, another committer landing between a base and its append (the
//! SQL catalog's compare-and-swap refusing), two committers racing for the same objects, and
//! claim writes whose answers the fault proxy loses after DynamoDB applied them, and a commit
//! whose answer never comes (the relay holds it and the connection open).

mod common;

use common::*;
use std::sync::Arc;
use streamload_iceberg::{connect, storage_props, CallDeadlines, CatalogSettings, IcebergTable};
use streamload_table::commit::{commit_staged, Outcome, Settings};
use streamload_table::ports::{CommitClaims, TakeAnswer};
use streamload_tests::fault_proxy::{Fault, Rule};
use streamload_tests::proxy::{CommitCut, CommitCuttingRelay};
use streamload_tests::TestStack;
use table_committer::claims::DynamoCommitClaims;
use table_committer::SystemClock;

async fn open_table(stack: &TestStack, catalog_url: &str) -> IcebergTable {
    let routes = streamload_runtime::parse_routes(ROUTE, "test").expect("routes");
    let settings = CatalogSettings::Sql {
        uri: catalog_url.to_string(),
        warehouse: format!("s3://{}/warehouse", stack.name),
    };
    let catalog = connect(&settings, storage_props(|k| std::env::var(k).ok()))
        .await
        .expect("catalog");
    IcebergTable::open(catalog, routes.get(0), &stack.name)
        .await
        .expect("table")
}

fn claims(stack: &TestStack, sdk: &aws_config::SdkConfig) -> DynamoCommitClaims {
    DynamoCommitClaims::new(
        streamload_aws::dynamodb_client(sdk),
        &stack.name,
        "orders",
        604_800,
    )
}

async fn staged_stack(tag: &str) -> (TestStack, Vec<String>) {
    let stack = lake_stack(tag).await;
    stage(
        &stack,
        "l-1",
        &[
            ("o-1", 1, "2024-03-01T10:15:00Z"),
            ("o-2", 1, "2024-03-02T11:20:00Z"),
        ],
        1,
    )
    .await;
    stage(&stack, "l-2", &[("o-3", 1, "2024-03-01T10:30:00Z")], 3).await;
    let keys = staged_keys(&stack).await;
    assert_eq!(keys.len(), 3, "{keys:?}");
    (stack, keys)
}

/// Commits the staged objects through a relay that breaks the catalog's commit transaction
/// as `cut` says; answers the report, the append calls sent and pyiceberg's view.
async fn commit_through_a_broken_transaction(
    tag: &str,
    cut: CommitCut,
) -> (streamload_table::commit::Report, usize, serde_json::Value) {
    let (stack, keys) = staged_stack(tag).await;
    let addr = stack
        .database_url
        .split('@')
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();
    let relay = CommitCuttingRelay::start(&addr).await;
    let via_relay = stack
        .database_url
        .replace(&addr, &format!("127.0.0.1:{}", relay.port()));
    // Call deadlines of 2 s: a commit whose answer never comes is given up on in seconds
    let deadlines = CallDeadlines::all(std::time::Duration::from_secs(2));
    let table = Hooked::new(
        open_table(&stack, &via_relay)
            .await
            .with_deadlines(deadlines),
    );
    relay.arm(cut);
    let report = commit_staged(
        &claims(&stack, &stack.sdk),
        &table,
        &SystemClock,
        Settings::default(),
        "c-cut",
        &objects(&keys),
    )
    .await
    .expect("commits");
    assert_eq!(relay.cuts(), 1, "{cut:?} happened");
    (report, table.appends(), read_back(&stack))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_applied_whose_answer_was_lost_is_found_in_the_log_and_not_sent_again() {
    // Given the COMMIT of the catalog's compare-and-swap applied and its answer lost
    let (report, appends, view) =
        commit_through_a_broken_transaction("icelost", CommitCut::LoseCommitAnswer).await;
    // Then the committer finds c-cut in the snapshot log and sends no second append;
    // pyiceberg reads each event once in one snapshot
    assert_eq!(report.appended(), 3);
    assert_eq!(appends, 1, "the applied commit was not sent again");
    assert_eq!(identities(&view), ["o-1#1", "o-2#1", "o-3#1"]);
    assert_eq!(view["snapshots"], 1);
    assert_eq!(view["summaries"][0]["streamload.commit-id"], "c-cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_applied_whose_answer_never_comes_is_given_up_on_and_found_in_the_log() {
    // Given the COMMIT applied and its answer held forever on an open connection
    let (report, appends, view) = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        commit_through_a_broken_transaction("icesilent", CommitCut::SilentCommit),
    )
    .await
    .expect("the committer answers instead of waiting on the silent connection");
    // Then the append given up on is an unknown outcome; the next attempt finds c-cut in the
    // log and sends no second append
    assert_eq!(report.appended(), 3);
    assert_eq!(appends, 1, "the applied commit was not sent again");
    assert_eq!(identities(&view), ["o-1#1", "o-2#1", "o-3#1"]);
    assert_eq!(view["snapshots"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_update_answer_was_lost_was_rolled_back_and_is_sent_again() {
    // Given the UPDATE's answer lost mid-transaction (PostgreSQL rolls it back)
    let (report, appends, view) =
        commit_through_a_broken_transaction("iceupd", CommitCut::LoseUpdateAnswer).await;
    // Then the next attempt does not find it in the log and appends: once
    assert_eq!(report.appended(), 3);
    assert_eq!(appends, 2);
    assert_eq!(identities(&view), ["o-1#1", "o-2#1", "o-3#1"]);
    assert_eq!(view["snapshots"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_commit_never_arrived_is_not_taken_for_landed_though_the_library_says_so() {
    // Given the COMMIT never reaching PostgreSQL — iceberg-catalog-sql ignores its COMMIT's
    // result, so the append call itself answers success
    let (report, appends, view) =
        commit_through_a_broken_transaction("icedrop", CommitCut::DropCommit).await;
    // Then the committer's check of the log after the answer catches it, and the next
    // attempt appends: every event once, none lost
    assert_eq!(report.appended(), 3);
    assert_eq!(appends, 2);
    assert_eq!(identities(&view), ["o-1#1", "o-2#1", "o-3#1"]);
    assert_eq!(view["snapshots"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committer_landing_between_a_base_and_its_append_makes_the_append_retry_on_its_snapshot()
{
    // Given two committers of one table: the second lands an object just before the first
    // sends its append
    let (stack, keys) = staged_stack("iceconflict").await;
    let first = Hooked::new(open_table(&stack, &stack.database_url).await);
    let second = Arc::new(open_table(&stack, &stack.database_url).await);
    let claims_a = claims(&stack, &stack.sdk);
    let claims_b = claims(&stack, &stack.sdk);
    let other = objects(&keys[2..]);
    let s = second.clone();
    first.before_next_append(async move {
        let r = commit_staged(
            &claims_b,
            s.as_ref(),
            &SystemClock,
            Settings::default(),
            "c-b",
            &other,
        )
        .await
        .expect("the other committer lands");
        assert_eq!(r.appended(), 1);
    });
    // When the first commits its objects
    let report = commit_staged(
        &claims_a,
        &first,
        &SystemClock,
        Settings::default(),
        "c-a",
        &objects(&keys[..2]),
    )
    .await
    .expect("commits");
    // Then the catalog refused its first append (the main branch moved), and its second,
    // built on the other's snapshot, landed: each event once, two snapshots
    assert_eq!(report.appended(), 2);
    assert_eq!(first.appends(), 2);
    let view = read_back(&stack);
    assert_eq!(identities(&view), ["o-1#1", "o-2#1", "o-3#1"]);
    assert_eq!(view["snapshots"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_committers_sent_the_same_objects_at_once_append_each_once() {
    // Given every object named to two committers at the same moment (a notification and the
    // sweep), each with its own catalog connection
    let (stack, keys) = staged_stack("icerace").await;
    let (a, b) = (
        open_table(&stack, &stack.database_url).await,
        open_table(&stack, &stack.database_url).await,
    );
    let (ca, cb) = (claims(&stack, &stack.sdk), claims(&stack, &stack.sdk));
    let all = objects(&keys);
    // When both run
    let (ra, rb) = tokio::join!(
        commit_staged(&ca, &a, &SystemClock, Settings::default(), "c-a", &all),
        commit_staged(&cb, &b, &SystemClock, Settings::default(), "c-b", &all),
    );
    let (ra, rb) = (ra.expect("a"), rb.expect("b"));
    // Then each object was appended by one of them; the other left it or found it in the table
    for key in &keys {
        let outcomes = [&ra.outcomes[key], &rb.outcomes[key]];
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| ***o == Outcome::Appended)
                .count(),
            1,
            "{key}: {outcomes:?}"
        );
    }
    let view = read_back(&stack);
    assert_eq!(identities(&view), ["o-1#1", "o-2#1", "o-3#1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_writes_whose_answers_are_lost_recognise_their_own_applied_attempt() {
    // Given DynamoDB behind the fault proxy, losing the answer to the first claim, the first
    // take-over and the first mark after applying each
    let stack = lake_stack("iceclaims").await;
    let proxy = stack.fault_proxy().await;
    let sdk = streamload_aws::sdk_config_with_endpoint(Some(&proxy.endpoint())).await;
    let real = claims(&stack, &sdk);
    proxy.add(
        Rule::once("DynamoDB.PutItem", Fault::LoseAnswer500).with_body("attribute_not_exists"),
    );
    proxy.add(Rule::once("DynamoDB.PutItem", Fault::LoseAnswerClose).with_body(":from"));
    proxy.add(Rule::once("DynamoDB.UpdateItem", Fault::LoseAnswer500));
    // When a claim is taken, taken over and marked committed
    let taken = real.take("k", "c1", 10_000, 1_000).await;
    let over = real.take_over("k", "c1", "c2", 20_000, 2_000).await;
    let marked = real.mark_committed("k", "c2", "c2").await;
    // Then each answer is what an answered call would have said, and the item is c2's
    assert_eq!(taken, Ok(TakeAnswer::Taken));
    assert_eq!(over, Ok(TakeAnswer::Taken));
    assert_eq!(marked, Ok(()));
    let record = real.read("k").await.unwrap().unwrap();
    assert_eq!(record.commit, "c2");
    assert_eq!(record.state, streamload_table::ports::ClaimState::Committed);
    assert_eq!(proxy.faulted("DynamoDB.PutItem"), 2);
    assert_eq!(proxy.faulted("DynamoDB.UpdateItem"), 1);
    // And another commit's claim is refused with the holder's record
    assert!(
        matches!(real.take("k", "c3", 1, 1).await, Ok(TakeAnswer::Held(r)) if r.commit == "c2")
    );
    assert!(matches!(
        real.take_over("k", "c1", "c3", 1, 1).await,
        Ok(TakeAnswer::Held(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_whose_append_lands_after_the_take_over_is_found_not_appended_twice() {
    use streamload_table::ports::TableLog;
    // Given an object claimed by a committer "x" whose lease has passed, and x's append still
    // in flight: it lands between the taker's base and the taker's append
    let (stack, keys) = staged_stack("icelate").await;
    let taker = Hooked::new(open_table(&stack, &stack.database_url).await);
    let holder = Arc::new(open_table(&stack, &stack.database_url).await);
    let c = claims(&stack, &stack.sdk);
    let now = streamload_tests::now_ms();
    let held = c.take(&keys[0], "x", now - 10_000, now - 20_000).await;
    assert_eq!(held, Ok(TakeAnswer::Taken));
    let (h, late) = (holder.clone(), objects(&keys[..1]));
    taker.before_next_append(async move {
        let base = h.load().await.unwrap();
        let written = h.write(&base, "x", &late).await.unwrap();
        h.append(&base, "x", &written).await.expect("x lands late");
    });
    // When the taker commits all three
    let report = commit_staged(
        &c,
        &taker,
        &SystemClock,
        Settings::default(),
        "t",
        &objects(&keys),
    )
    .await
    .expect("commits");
    // Then its append, pinned to the base it checked, is refused; its next base shows x, so
    // x's object is marked, not appended again; the rest land once
    assert_eq!(
        report.outcomes[&keys[0]],
        Outcome::AlreadyInTable { commit: "x".into() }
    );
    assert_eq!(report.appended(), 2);
    let view = read_back(&stack);
    assert_eq!(identities(&view), ["o-1#1", "o-2#1", "o-3#1"]);
    assert_eq!(view["snapshots"], 2);
}
