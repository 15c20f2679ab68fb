//! Progress under everyday faults, against the real local stack with an HTTP fault proxy
//! between the SDK and the AWS endpoint (so the SDK's own retries meet every fault):
//!
//! 1. records completed in the first invocation, and invocations until a batch is done,
//!    under 0/10/20/30% of DynamoDB and S3 requests throttled or failing — with the
//!    pipeline's in-budget retry rounds as shipped, beside the same code with the rounds
//!    turned off (one attempt per call, the SDK's retries only), in the same run;
//! 2. how long the function takes to answer when a call never answers;
//! 3. how long a crashed invocation's claims hold back a redelivery (sticky claims), with
//!    function timeouts of 60 s and 900 s (the renewable lease: target ≤ 15 s for both);
//! 4. records loaded per invocation when every claim write is answered 0.5–1 s late
//!    (sustained throttling), for batches of 1,000 and 10,000 and timeouts of 10 s and 60 s.
//!
//! Every run also checks exactly-once in both sinks; a violation aborts the bench.
//! Run: `make bench` (or `cargo bench -p streamload-tests --bench faults` with the stack up;
//! `FAULTS_BENCH=sticky,slow` for some sections only).

use std::time::{Duration, Instant};
use streamload_core::kinesis::decode;
use streamload_core::retry::RetryPolicy;
use streamload_tests::fault_proxy::{Fault, Rule};
use streamload_tests::*;

/// Records per batch: 10% producer retries of earlier events, 2% poison.
const EVENTS: u64 = 300;
const TRIALS: usize = 3;

fn batch_records() -> (Vec<(u64, Vec<u8>)>, Vec<String>) {
    let mut records = Vec::new();
    let mut expected = Vec::new();
    for n in 0..EVENTS {
        let id = format!("e{n}");
        records.push((n, event_json(&id, "user-1", r#"{"page":"/"}"#)));
        expected.push(id);
        if n % 10 == 9 {
            let again = format!("e{}", n - 5);
            records.push((10_000 + n, event_json(&again, "user-1", r#"{"page":"/"}"#)));
        }
        if n % 50 == 49 {
            records.push((20_000 + n, b"{poison".to_vec()));
        }
    }
    // Sequence order, as a shard delivers it.
    records.sort_by_key(|(s, _)| *s % 10_000 * 10 + *s / 10_000);
    expected.sort();
    (records, expected)
}

struct Trial {
    first_share: f64,
    invocations: usize,
    first_wall: Duration,
}

async fn trial(rate: f64, rounds: bool) -> Trial {
    let stack = TestStack::new("bench", false).await;
    let proxy = stack.fault_proxy().await;
    if rate > 0.0 {
        for op in ["DynamoDB.PutItem", "S3.HeadObject", "S3.PutObject"] {
            proxy.add(Rule::share(op, Fault::Throttle, rate / 2.0));
            proxy.add(Rule::share(
                op,
                Fault::ServerError,
                rate / 2.0 / (1.0 - rate / 2.0),
            ));
        }
    }
    let mut p = stack.pipeline_via(&proxy).await;
    if !rounds {
        p.settings.in_budget_retry = RetryPolicy {
            max_attempts: 1,
            ..p.settings.in_budget_retry
        };
    }
    let (records, expected) = batch_records();
    let run = deliver_until_done(&p, &records, Duration::from_secs(60), 200).await;
    stack.assert_each_once_in_both_sinks(&expected).await;
    Trial {
        first_share: run.first_completed as f64 / records.len() as f64,
        invocations: run.invocations,
        first_wall: run.first_wall,
    }
}

async fn progress_under_errors() {
    println!(
        "## Progress under errors ({TRIALS} batches of {} records each)",
        batch_records().0.len()
    );
    println!("| errors | retry rounds | first invocation completes (mean, min) | invocations (mean, max) | first invocation wall (mean) |");
    println!("|---|---|---|---|---|");
    for rate in [0.0, 0.1, 0.2, 0.3] {
        for rounds in [true, false] {
            let mut trials = Vec::new();
            for _ in 0..TRIALS {
                trials.push(trial(rate, rounds).await);
            }
            let n = trials.len() as f64;
            let mean_share = trials.iter().map(|t| t.first_share).sum::<f64>() / n;
            let min_share = trials.iter().map(|t| t.first_share).fold(1.0, f64::min);
            let mean_inv = trials.iter().map(|t| t.invocations as f64).sum::<f64>() / n;
            let max_inv = trials.iter().map(|t| t.invocations).max().unwrap_or(0);
            let wall = trials
                .iter()
                .map(|t| t.first_wall.as_secs_f64())
                .sum::<f64>()
                / n;
            println!(
                "| {:.0}% | {} | {:.1}%, {:.1}% | {:.1}, {} | {:.2} s |",
                rate * 100.0,
                if rounds {
                    "on (shipped)"
                } else {
                    "off (SDK only)"
                },
                mean_share * 100.0,
                min_share * 100.0,
                mean_inv,
                max_inv,
                wall
            );
        }
    }
}

async fn hung_calls() {
    println!(
        "\n## A call that never answers (budget 10 s, FINISH_MARGIN_MS 500 in the test stack)"
    );
    println!("| black-holed operation | function answered after | then redelivered: loaded once |");
    println!("|---|---|---|");
    for op in [
        "DynamoDB.PutItem",
        "S3.HeadObject",
        "S3.PutObject",
        "SQS.SendMessage",
    ] {
        let stack = TestStack::new("hung", false).await;
        let proxy = stack.fault_proxy().await;
        proxy.add(Rule::always(op, Fault::Hang));
        let p = stack.pipeline_via(&proxy).await;
        let records = vec![
            (1, event_json("a", "u", "{}")),
            (2, event_json("b", "u", "{}")),
            (3, b"{poison".to_vec()),
        ];
        let b = decode(&kinesis_event(&records)).unwrap();
        if op == "S3.HeadObject" {
            // HeadObject is only asked about a holder's object: load once, deliver again.
            stack
                .pipeline()
                .await
                .process(&b, &invocation("inv-0", Duration::from_secs(30)))
                .await;
        }
        let started = Instant::now();
        p.process(&b, &invocation("inv-1", Duration::from_secs(10)))
            .await;
        let took = started.elapsed();
        proxy.clear();
        proxy.release_hung();
        let again = stack
            .pipeline()
            .await
            .process(&b, &invocation("inv-2", Duration::from_secs(30)))
            .await;
        assert!(again.failures.is_empty(), "{op}: {:?}", again.outcomes);
        stack
            .assert_each_once_in_both_sinks(&["a".to_owned(), "b".to_owned()])
            .await;
        println!("| {op} | {:.2} s | yes |", took.as_secs_f64());
    }
}

async fn sticky_claims() {
    println!("\n## Sticky claims: a sandbox dies 3 s into a batch, after its claims and two lease renewals; Lambda redelivers at once");
    println!("| crashed invocation's timeout | lease grace | redelivery loaded the batch after the crash |");
    println!("|---|---|---|");
    for budget_s in [60u64, 900] {
        let stack = TestStack::new("sticky", false).await;
        let (p1, s1) = stack.faulty_pipeline().await;
        s1.rows
            .crash_before
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let records: Vec<(u64, Vec<u8>)> = (0..20)
            .map(|n| (n, event_json(&format!("e{n}"), "u", "{}")))
            .collect();
        let b = decode(&kinesis_event(&records)).unwrap();
        let crashed = tokio::time::timeout(
            Duration::from_millis(3_000),
            p1.process(
                &b,
                &invocation("inv-crashed", Duration::from_secs(budget_s)),
            ),
        )
        .await;
        assert!(crashed.is_err());
        drop(p1);
        let crash_at = Instant::now();
        let mut p2 = stack.pipeline().await;
        // Production's grace: the figure is what a deployment sees.
        p2.settings.lease_grace = streamload_core::PipelineSettings::default().lease_grace;
        let grace = p2.settings.lease_grace;
        let mut n = 0;
        loop {
            n += 1;
            let r = p2
                .process(
                    &b,
                    &invocation(&format!("inv-{n}"), Duration::from_secs(60)),
                )
                .await;
            if r.failures.is_empty() {
                break;
            }
        }
        let mut expected: Vec<String> = (0..20).map(|n| format!("e{n}")).collect();
        expected.sort();
        stack.assert_each_once_in_both_sinks(&expected).await;
        println!(
            "| {budget_s} s | {:.1} s | {:.2} s ({n} invocation(s)) |",
            grace.as_secs_f64(),
            crash_at.elapsed().as_secs_f64()
        );
    }
}

/// A batch of `n` distinct events, in sequence order.
fn distinct_records(n: u64) -> Vec<(u64, Vec<u8>)> {
    (0..n)
        .map(|i| (i, event_json(&format!("s{i:05}"), "u", "{}")))
        .collect()
}

async fn slow_claims() {
    println!("\n## Slow claims: every conditional PutItem answered late (proxy), records loaded per invocation");
    println!("| claim answered after | batch | timeout | loaded by the 1st invocation | by the 2nd | claims phase (1st) |");
    println!("|---|---|---|---|---|---|");
    for (delay_ms, size, timeout_s) in [
        (500u64, 1_000u64, 10u64),
        (1_000, 1_000, 10),
        (500, 1_000, 60),
        (1_000, 10_000, 10),
        (500, 10_000, 60),
        (1_000, 10_000, 60),
    ] {
        let stack = TestStack::new("slowclaims", false).await;
        let proxy = stack.fault_proxy().await;
        proxy.add(Rule::always(
            "DynamoDB.PutItem",
            Fault::SlowForward(delay_ms),
        ));
        let p = stack.pipeline_via(&proxy).await;
        let mut b = decode(&kinesis_event(&distinct_records(size))).unwrap();
        let mut loaded = Vec::new();
        let mut claims_ms = 0;
        for n in 0..2 {
            let r = p
                .process(
                    &b,
                    &invocation(&format!("inv-{n}"), Duration::from_secs(timeout_s)),
                )
                .await;
            if n == 0 {
                claims_ms = r
                    .summary
                    .phases
                    .wall_us(streamload_core::metrics::Phase::Claims)
                    / 1000;
            }
            loaded.push(
                r.outcomes
                    .iter()
                    .filter(|o| **o == streamload_core::RecordOutcome::Loaded)
                    .count(),
            );
            let Some((_, lowest)) = r.failures.first() else {
                break;
            };
            b.records.retain(|rec| rec.position >= *lowest);
        }
        println!(
            "| {delay_ms} ms | {size} | {timeout_s} s | {} | {} | {:.1} s |",
            loaded[0],
            loaded.get(1).map_or("—".to_owned(), |n| n.to_string()),
            claims_ms as f64 / 1000.0
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // FAULTS_BENCH=sticky,slow runs only those sections (names: errors, hung, sticky, slow).
    let only = std::env::var("FAULTS_BENCH").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only.split(',').any(|n| n == name);
    if run("errors") {
        progress_under_errors().await;
    }
    if run("hung") {
        hung_calls().await;
    }
    if run("sticky") {
        sticky_claims().await;
    }
    if run("slow") {
        slow_claims().await;
    }
}
