//! The adapters' contracts against the real AWS endpoint: the conditions the protocol relies on.

use streamload_aws::{DynamoDedup, S3Objects, SqsDeadLetters};
use streamload_core::error::Classify;
use streamload_core::memory::{MemoryDeadLetters, MemoryDedup, MemoryObjects};
use streamload_core::ports::{
    Claim, ClaimAttempt, DeadLetters, DedupStore, HolderLease, Letter, ObjectSink, PutOutcome,
    Renewal, Revocation,
};
use streamload_tests::*;

fn claim(owner: &str, expires_at_s: i64) -> Claim {
    Claim {
        key: "ev:evt-1".into(),
        owner: owner.into(),
        lease_until_ms: 1_000,
        object_key: format!("events/x-{owner}.parquet"),
        expires_at_s,
        renewable: true,
    }
}

/// The dedup store both ways it reaches DynamoDB: every call through the SDK, and the
/// conditional writes through streamload's own PutItem client (the default).
fn both_dedup_clients(stack: &TestStack) -> [(&'static str, DynamoDedup); 2] {
    let sdk = DynamoDedup::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        &stack.config.dedup_table,
    );
    let direct = sdk.clone().with_direct_writes(
        streamload_aws::PutItemClient::from_sdk(&stack.sdk).expect("moto is a plain endpoint"),
    );
    assert!(direct.writes_directly() && !sdk.writes_directly());
    [("sdk", sdk), ("direct", direct)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_claims_are_conditional_and_return_the_holder() {
    for (client, dedup) in both_dedup_clients(&TestStack::new("ddb", false).await) {
        eprintln!("dedup client: {client}");
        dedup_contract(&dedup).await;
        holder_lease_contract(&dedup, client).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_key_and_owner_of_any_text_round_trip_through_both_clients() {
    // Given keys and owners with quotes, backslashes, control and non-ASCII characters (an
    // event id is the producer's text)
    let stack = TestStack::new("ddbtext", false).await;
    for (n, (client, dedup)) in both_dedup_clients(&stack).into_iter().enumerate() {
        let tricky = Claim {
            key: format!("ev:{n}\"q\"\\ \u{1}\n ünïcødé 🦀 }}{{"),
            owner: "own\"er\\".into(),
            lease_until_ms: 1_700_000_000_123,
            object_key: "events/dt=2026-12-02/h=05/x.parquet".into(),
            expires_at_s: 1_900_000_000,
            renewable: false,
        };
        // When it is claimed, then claimed again by someone else
        assert_eq!(
            dedup.try_claim(&tricky, 1_000).await.unwrap(),
            ClaimAttempt::Claimed,
            "{client}"
        );
        let other = Claim {
            owner: "someone else".into(),
            ..tricky.clone()
        };
        // Then the refusal returns it byte for byte, and a read agrees
        assert_eq!(
            dedup.try_claim(&other, 1_000).await.unwrap(),
            ClaimAttempt::Held(tricky.clone()),
            "{client}"
        );
        assert_eq!(
            dedup.read(&tricky.key).await.unwrap(),
            Some(tricky.clone()),
            "{client}"
        );
    }
}

/// Each run leaves the key as it found it (absent), so the next client starts clean.
#[tokio::test]
async fn the_in_memory_dedup_store_keeps_the_same_contract() {
    let memory = MemoryDedup::default();
    dedup_contract(&memory).await;
    holder_lease_contract(&memory, "memory").await;
}

/// The holder leases' contract, held by DynamoDB (both clients) and the in-memory store alike:
/// renewals only move forward and never after a revocation; a revocation only from the lease
/// as read, or a tombstone where none was. `tag` keeps the owners of one run apart.
async fn holder_lease_contract<D: DedupStore>(dedup: &D, tag: &str) {
    let [h1, h2, h3] = [1, 2, 3].map(|n| format!("{tag}-holder-{n}"));
    // Given no lease for &h1, When a taker revokes it as absent (a tombstone)
    assert_eq!(
        dedup.revoke_lease(&h1, None, 2_000_000_000).await.unwrap(),
        Revocation::Revoked
    );
    // Then the holder's first renewal (a creation still in flight) fails: revoked
    assert_eq!(
        dedup.renew_lease(&h1, 5_000, 2_000_000_000).await.unwrap(),
        Renewal::Revoked
    );
    // Given &h2 renewed to 5000
    assert_eq!(
        dedup.renew_lease(&h2, 5_000, 2_000_000_000).await.unwrap(),
        Renewal::Renewed
    );
    // When an older renewal lands late (4000), Then it counts as renewed and moves nothing back
    assert_eq!(
        dedup.renew_lease(&h2, 4_000, 2_000_000_000).await.unwrap(),
        Renewal::Renewed
    );
    let current = dedup.read_lease(&h2).await.unwrap().unwrap();
    assert_eq!(
        current,
        HolderLease {
            owner: h2.clone(),
            alive_until_ms: 5_000,
            revoked: false
        }
    );
    // When a taker revokes from a stale read (4000), Then it is refused with the lease as is
    let stale = HolderLease {
        alive_until_ms: 4_000,
        ..current.clone()
    };
    assert_eq!(
        dedup
            .revoke_lease(&h2, Some(&stale), 2_000_000_000)
            .await
            .unwrap(),
        Revocation::Changed(Some(current.clone()))
    );
    // When it revokes from the current read, Then it is revoked, again and again (a retry after
    // a lost answer), and no renewal succeeds any more
    for _ in 0..2 {
        assert_eq!(
            dedup
                .revoke_lease(&h2, Some(&current), 2_000_000_000)
                .await
                .unwrap(),
            Revocation::Revoked
        );
    }
    assert_eq!(
        dedup.renew_lease(&h2, 9_000, 2_000_000_000).await.unwrap(),
        Renewal::Revoked
    );
    assert!(dedup.read_lease(&h2).await.unwrap().unwrap().revoked);
    // And a lease never written reads as absent
    assert_eq!(dedup.read_lease(&h3).await.unwrap(), None);
}

/// The dedup store's contract, held by DynamoDB (both clients) and the in-memory store alike.
async fn dedup_contract<D: DedupStore>(dedup: &D) {
    let now = 1_000_000;
    // Given a first claim
    assert_eq!(
        dedup.try_claim(&claim("a", now + 100), now).await.unwrap(),
        ClaimAttempt::Claimed
    );
    // When a second owner claims the same event, Then it is refused with the holder's claim
    assert_eq!(
        dedup.try_claim(&claim("b", now + 100), now).await.unwrap(),
        ClaimAttempt::Held(claim("a", now + 100))
    );
    // When the first claim has expired (TTL not yet applied), Then it counts as absent
    assert_eq!(
        dedup
            .try_claim(&claim("b", now + 500), now + 101)
            .await
            .unwrap(),
        ClaimAttempt::Claimed
    );
    // A takeover from a stale view of the holder is refused with the current holder
    assert_eq!(
        dedup
            .take_over(&claim("c", now + 500), &claim("a", now + 100))
            .await
            .unwrap(),
        ClaimAttempt::Held(claim("b", now + 500))
    );
    // From the current one it succeeds
    assert_eq!(
        dedup
            .take_over(&claim("c", now + 500), &claim("b", now + 500))
            .await
            .unwrap(),
        ClaimAttempt::Claimed
    );
    // When the same takeover is sent again (an SDK retry after a lost answer), Then it is
    // refused with our own claim, which the pipeline recognises as ours
    let again = dedup
        .take_over(&claim("c", now + 500), &claim("b", now + 500))
        .await
        .unwrap();
    assert_eq!(again, ClaimAttempt::Held(claim("c", now + 500)));
    assert!(again.is_mine(&claim("c", now + 500)));
    // A takeover is conditional on the holder and its lease only: a view of the holder that
    // differs in another attribute still takes it over
    let seen = Claim {
        object_key: "events/other-view.parquet".into(),
        ..claim("c", now + 500)
    };
    assert_eq!(
        dedup
            .take_over(&claim("c", now + 500), &seen)
            .await
            .unwrap(),
        ClaimAttempt::Claimed
    );
    // A release by someone else leaves the claim; by the holder it removes it
    dedup.release("ev:evt-1", "b").await.unwrap();
    assert_eq!(
        dedup.read("ev:evt-1").await.unwrap(),
        Some(claim("c", now + 500))
    );
    dedup.release("ev:evt-1", "c").await.unwrap();
    assert_eq!(dedup.read("ev:evt-1").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_are_created_once_and_never_overwritten() {
    let stack = TestStack::new("s3", false).await;
    // Through the SDK, and through the direct create-only client, on keys of their own
    let sdk_puts = S3Objects::new(streamload_aws::s3_client(&stack.sdk), &stack.name);
    object_contract(&sdk_puts, "sdk/", async |key| {
        stack.object_bytes(key).await.to_vec()
    })
    .await;
    let direct_puts = S3Objects::new(streamload_aws::s3_client(&stack.sdk), &stack.name)
        .with_direct_puts(
            streamload_aws::PutObjectClient::from_sdk(&stack.sdk, &stack.name)
                .expect("moto is a plain endpoint and the bucket a plain name"),
        );
    object_contract(&direct_puts, "direct/", async |key| {
        stack.object_bytes(key).await.to_vec()
    })
    .await;
    let memory = MemoryObjects::default();
    let stored = memory.objects.clone();
    object_contract(&memory, "", async |key| stored.lock().unwrap()[key].clone()).await;
}

/// The object store's contract, held by S3 (moto) and the in-memory store alike: an object is
/// created once, a second create-only put finds it and changes nothing, and `exists` agrees.
async fn object_contract<O: ObjectSink>(
    objects: &O,
    prefix: &str,
    body_of: impl AsyncFn(&str) -> Vec<u8>,
) {
    // Given no object at a key shaped like the loader's (with `=`, which S3 wants encoded)
    let key = format!("{prefix}events/dt=2026-12-05/hour=13/shard-0_1-2=3.parquet");
    assert!(!objects.exists(&key).await.unwrap());
    // When it is put, Then it is created
    let first: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        objects
            .put_new(
                &key,
                bytes::Bytes::from(first.clone()),
                "application/octet-stream"
            )
            .await
            .unwrap(),
        PutOutcome::Created
    );
    // When it is put again with other bytes, Then it already exists and keeps the first
    assert_eq!(
        objects
            .put_new(
                &key,
                bytes::Bytes::from_static(b"second"),
                "application/octet-stream"
            )
            .await
            .unwrap(),
        PutOutcome::AlreadyExists
    );
    assert!(objects.exists(&key).await.unwrap());
    assert!(body_of(&key).await == first, "the first body, whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_errors_name_the_constraint_but_never_the_row() {
    use streamload_core::ports::{Row, RowSink};
    // Given a table whose check constraint rejects a user, and a row carrying that user
    let stack = TestStack::new("pgerr", false).await;
    stack
        .pg
        .batch_execute(
            "ALTER TABLE events ADD CONSTRAINT no_secret_user CHECK (user_id <> 'secret-user-42')",
        )
        .await
        .unwrap();
    use streamload_core::route::{Routes, Value};
    let routes = Routes::builtin("events", "events/").unwrap();
    let sink = streamload_postgres::PgRows::new(
        streamload_postgres::ConnectOptions::parse(&stack.database_url).unwrap(),
        &routes,
    );
    let values = [
        Value::Text("e1".into()),
        Value::Text("secret-user-42".into()),
        Value::Text("t".into()),
        Value::Json(r#"{"card":"4111-secret"}"#.into()),
        Value::Timestamp(0),
        Value::Null,
        Value::Null,
    ];
    let row = Row {
        route: routes.get(0),
        values: &values,
        unavailable: &[],
    };
    // When it is upserted
    let refused = sink
        .upsert(&[row], now_ms() + 10_000)
        .await
        .expect("a refused row is an answer, not a failed call")
        .refused;
    // Then the row is refused with a reason naming the constraint, and no row value
    assert_eq!(refused.len(), 1);
    let reason = &refused[0].reason;
    assert!(
        reason.contains("23514") && reason.contains("no_secret_user"),
        "{reason}"
    );
    assert!(
        !reason.contains("secret-user-42") && !reason.contains("4111"),
        "{reason}"
    );
}

/// The dead-letter queue's contract, held by SQS (moto) and the in-memory queue alike: a
/// batch within the limits is sent whole, one result per letter; a batch over the entry
/// limit is refused as a whole, permanently, and sends nothing.
async fn dead_letter_contract<Q: DeadLetters>(queue: &Q, sent: impl AsyncFn() -> Vec<String>) {
    // Given three letters, one of them holding quotes and non-ASCII text
    let letters: Vec<Letter> = ["{\"n\":1}", "{\"n\":2,\"t\":\"ü \\\" 🦀\"}", "{\"n\":3}"]
        .iter()
        .enumerate()
        .map(|(n, body)| Letter {
            body: (*body).to_owned(),
            dedup_id: format!("digest-{n}"),
        })
        .collect();
    // When they are sent in one batch
    let answers = queue.send_batch(&letters).await.unwrap();
    // Then each is answered as sent, and exactly those bodies arrive
    assert_eq!(answers.len(), 3);
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    let mut bodies = sent().await;
    bodies.sort();
    assert_eq!(
        bodies,
        letters.iter().map(|l| l.body.clone()).collect::<Vec<_>>()
    );

    // Given one letter more than a batch may carry
    let too_many: Vec<Letter> = (0..=queue.max_batch_len())
        .map(|n| Letter {
            body: format!("{{\"over\":{n}}}"),
            dedup_id: format!("over-{n}"),
        })
        .collect();
    // When they are sent, then the request is refused for good and nothing more arrives
    let refused = queue.send_batch(&too_many).await.unwrap_err();
    assert!(!refused.is_retryable(), "{refused}");
    assert!(sent().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_go_in_batches_answered_per_letter_in_sqs_and_in_memory() {
    let stack = TestStack::new("sqsbatch", false).await;
    let sqs = SqsDeadLetters::new(aws_sdk_sqs::Client::new(&stack.sdk), &stack.config.dlq_url);
    assert_eq!(sqs.max_batch_len(), 10);
    dead_letter_contract(&sqs, async || {
        stack
            .dead_letters()
            .await
            .iter()
            .map(|v| v.to_string())
            .collect()
    })
    .await;

    let memory = MemoryDeadLetters::default();
    let taken = memory.sent.clone();
    dead_letter_contract(&memory, async || {
        std::mem::take(&mut *taken.lock().unwrap())
    })
    .await;
}

/// A row of the built-in events route.
fn event_row(id: &str, user: &str) -> Vec<streamload_core::route::Value> {
    use streamload_core::route::Value;
    vec![
        Value::Text(id.into()),
        Value::Text(user.into()),
        Value::Text("click".into()),
        Value::Json(r#"{"n":1}"#.into()),
        Value::Timestamp(0),
        Value::Null,
        Value::Null,
    ]
}

/// The database's contract, held by PostgreSQL and the in-memory rows alike: a batch commits
/// every row but those refused for reasons of their own (each refusal names its row's index),
/// the same rows again change nothing, and the same event again rewrites its own row (the
/// built-in route: key and identity are the event id).
/// `refusing_user` is a user the sink refuses (a CHECK constraint on the real table).
async fn row_contract<R: streamload_core::ports::RowSink>(
    rows: &R,
    routes: &streamload_core::Routes,
    refusing_user: &str,
    stored_users: impl AsyncFn() -> Vec<(String, String)>,
) {
    use streamload_core::ports::Row;
    let route = routes.get(0);
    // Given three rows, the second carrying the refused user
    let values = [
        event_row("c1", "u-1"),
        event_row("c2", refusing_user),
        event_row("c3", "u-3"),
    ];
    let batch: Vec<Row<'_>> = values
        .iter()
        .map(|v| Row {
            route,
            values: v,
            unavailable: &[],
        })
        .collect();
    // When they are upserted, Then only the second is refused, by its index
    let refused = rows
        .upsert(&batch, now_ms() + 10_000)
        .await
        .unwrap()
        .refused;
    assert_eq!(refused.iter().map(|r| r.index).collect::<Vec<_>>(), vec![1]);
    // When the first again, and the third with another value, are upserted (a redelivery)
    let again = [event_row("c1", "u-1"), event_row("c3", "u-changed")];
    let batch: Vec<Row<'_>> = again
        .iter()
        .map(|v| Row {
            route,
            values: v,
            unavailable: &[],
        })
        .collect();
    assert!(rows
        .upsert(&batch, now_ms() + 10_000)
        .await
        .unwrap()
        .refused
        .is_empty());
    // Then the table holds the two rows once each, the third as last written
    let mut stored = stored_users().await;
    stored.sort();
    assert_eq!(
        stored,
        vec![
            ("c1".to_owned(), "u-1".to_owned()),
            ("c3".to_owned(), "u-changed".to_owned())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_commit_all_but_the_refused_in_postgres_and_in_memory() {
    let routes = streamload_core::Routes::builtin("events", "events/").unwrap();
    // PostgreSQL, with a CHECK constraint refusing the user
    let stack = TestStack::new("pgcontract", false).await;
    stack
        .pg
        .batch_execute("ALTER TABLE events ADD CONSTRAINT no_refused CHECK (user_id <> 'refused')")
        .await
        .unwrap();
    let pg = streamload_postgres::PgRows::new(
        streamload_postgres::ConnectOptions::parse(&stack.database_url).unwrap(),
        &routes,
    );
    row_contract(&pg, &routes, "refused", async || {
        stack
            .pg
            .query("SELECT event_id, user_id FROM events", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    })
    .await;
    // The in-memory rows, refusing the same user
    let memory = memory_refusing("refused");
    let stored = memory.clone();
    row_contract(&memory, &routes, "refused", async || {
        stored
            .table("events")
            .into_values()
            .map(|row| match (&row.values[0], &row.values[1]) {
                (
                    streamload_core::route::Value::Text(id),
                    streamload_core::route::Value::Text(user),
                ) => (id.to_string(), user.to_string()),
                other => panic!("{other:?}"),
            })
            .collect()
    })
    .await;
}

/// A keep-first route with a search index whose events are (order, revision): the rows whose
/// event the table does not hold after an upsert are reported superseded.
fn indexed_keep_first_routes(table: &str) -> streamload_core::Routes {
    let file: streamload_core::route::ConfigFile = serde_json::from_value(serde_json::json!({
        "route": [{
            "name": "kf", "source": "*", "table": table, "key": ["order_id"],
            "identity": ["/order_id", "/revision"], "merge": "keep-first",
            "index": {"name": "kf"},
            "column": [
                {"name": "order_id", "from": "/order_id", "type": "text", "required": true},
                {"name": "user_id", "from": "/user_id", "type": "text"},
                {"name": "revision", "from": "/revision", "type": "bigint", "required": true}
            ]
        }]
    }))
    .unwrap();
    streamload_core::Routes::compile(&file).unwrap()
}

/// Held by PostgreSQL (both ways of finding refused rows) and the in-memory rows alike.
async fn superseded_contract<R: streamload_core::ports::RowSink>(
    rows: &R,
    routes: &streamload_core::Routes,
) {
    use streamload_core::ports::Row;
    use streamload_core::route::Value;
    let route = routes.get(0);
    let order = |id: &str, user: &str, revision: i64| {
        vec![
            Value::Text(id.into()),
            Value::Text(user.into()),
            Value::Int(revision),
        ]
    };
    let upsert = async |values: &[Vec<Value>]| {
        let batch: Vec<Row<'_>> = values
            .iter()
            .map(|v| Row {
                route,
                values: v,
                unavailable: &[],
            })
            .collect();
        rows.upsert(&batch, now_ms() + 10_000).await.unwrap()
    };
    // Given o-1's first event in the table
    let first = upsert(&[order("o-1", "u", 1)]).await;
    assert!(
        first.refused.is_empty() && first.superseded.is_empty(),
        "{first:?}"
    );
    // When a batch brings another event of o-1, a refused row, and two events of o-3
    let later = upsert(&[
        order("o-1", "u", 2),
        order("o-2", "refused", 1),
        order("o-3", "u", 1),
        order("o-3", "u", 2),
    ])
    .await;
    // Then the refused row is refused, and the events the table did not keep are superseded:
    // o-1's second (the table kept the first) and o-3's second (the batch's first won)
    assert_eq!(
        later.refused.iter().map(|r| r.index).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(later.superseded, vec![0, 3]);
    // And the event the table holds, loaded again (a redelivery), is not superseded
    let again = upsert(&[order("o-1", "u", 1), order("o-3", "u", 1)]).await;
    assert_eq!(again, streamload_core::ports::Upserted::default());
    // And in a batch nothing refuses, a new key merges and another event of a held key is
    // superseded (the one-transaction path)
    let plain = upsert(&[order("o-1", "u", 3), order("o-4", "u", 1)]).await;
    assert!(plain.refused.is_empty());
    assert_eq!(plain.superseded, vec![0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_a_table_did_not_keep_are_superseded_in_postgres_both_ways_and_in_memory() {
    let stack = TestStack::new("superseded", false).await;
    for (n, bisecting) in [(0, false), (1, true)] {
        let table = format!("kf_superseded_{n}");
        stack
            .pg
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (order_id text PRIMARY KEY, \
                 user_id text CHECK (user_id <> 'refused'), revision bigint NOT NULL)"
            ))
            .await
            .unwrap();
        let routes = indexed_keep_first_routes(&table);
        let pg = streamload_postgres::PgRows::new(
            streamload_postgres::ConnectOptions::parse(&stack.database_url).unwrap(),
            &routes,
        );
        let pg = if bisecting { pg.bisecting() } else { pg };
        superseded_contract(&pg, &routes).await;
    }
    let memory = memory_refusing("refused");
    superseded_contract(&memory, &indexed_keep_first_routes("kf")).await;
}

/// In-memory rows that refuse `user` (as the real tables' CHECK constraint does).
fn memory_refusing(user: &str) -> streamload_core::memory::MemoryRows {
    let memory = streamload_core::memory::MemoryRows::default();
    memory.refused_users.lock().unwrap().insert(user.to_owned());
    memory
}
