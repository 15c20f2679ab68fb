//! Sink benchmarks against the real local stack (`make bench` starts it):
//! 1. Peak memory of one 10,000-record Kinesis invocation through the real pipeline (decode,
//!    claims in DynamoDB, Postgres, S3, response), read from VmHWM before anything else ran.
//! 2. PostgreSQL upsert of 10,000-row batches: the shipped binary COPY + one upsert, beside one
//!    INSERT … SELECT FROM UNNEST of arrays (the other fast design) and a row-at-a-time
//!    prepared INSERT … ON CONFLICT in one transaction (the naive baseline).
//!
//! 3. The same upsert for a 20-column route (shared/core/benches/support/wide_route.rs):
//!    mapped from JSON, newest_by merge, beside the events route in the same run.
//!
//! Run: `make bench` (or, with the stack's env exported, `cargo bench -p streamload-tests --bench load`).

use std::time::{Duration, Instant};
use streamload_core::ports::{Row, RowSink};
use streamload_core::route::{Routes, Value};
use streamload_postgres::PgRows;
use streamload_tests::*;

#[path = "../../shared/core/benches/support/wide_route.rs"]
mod wide_route;

const ROWS: usize = 10_000;
const RUNS: usize = 7;

fn payload(i: usize) -> String {
    format!(
        r#"{{"path":"/products/{i}","items":[{{"sku":"SKU-{i}","qty":1,"price":19.99}}],"device":{{"os":"android"}}}}"#
    )
}

/// The rows of `route` over each record's values.
fn rows_of<'a>(
    route: &'a streamload_core::Route,
    values: impl IntoIterator<Item = &'a [Value]>,
) -> Vec<Row<'a>> {
    values
        .into_iter()
        .map(|values| Row {
            route,
            values,
            unavailable: &[],
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A `kB` field of /proc/self/status: VmHWM (peak resident set) or VmRSS (current).
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // As the shipped functions start (streamload_runtime::run).
    streamload_core::heap::keep_freed_memory();
    let stack = TestStack::new("bench", false).await;
    // 1. Peak memory of one full invocation, first, so no earlier phase has grown the heap;
    // then of a second one, as a warm function meets it with the first one's memory kept.
    let event_of = |batch: &str| {
        let records: Vec<(u64, Vec<u8>)> = (0..ROWS as u64)
            .map(|i| {
                (
                    i,
                    event_json(
                        &format!("mem-{batch}-{i}"),
                        "user-1",
                        &format!(r#"{{"blob":"{}"}}"#, "x".repeat(420)),
                    ),
                )
            })
            .collect();
        kinesis_event(&records)
    };
    let event_json_text = event_of("1");
    let pipeline = stack.pipeline().await;
    let before = status_kb("VmRSS:");
    let t = Instant::now();
    let batch = streamload_core::kinesis::decode(&event_json_text).unwrap();
    let report = pipeline
        .process(&batch, &invocation("mem", Duration::from_secs(600)))
        .await;
    let took = t.elapsed();
    assert!(report.failures.is_empty());
    println!(
        "one Kinesis invocation, {ROWS} records, event {:.2} MB:",
        event_json_text.len() as f64 / 1e6
    );
    println!(
        "  wall time (moto DynamoDB ~200 req/s dominates): {:.1} s",
        took.as_secs_f64()
    );
    println!(
        "  RSS before {:.1} MB, process peak (VmHWM) {:.1} MB",
        before as f64 / 1024.0,
        status_kb("VmHWM:") as f64 / 1024.0
    );
    drop((batch, report, event_json_text));
    let second_event = event_of("2");
    let batch = streamload_core::kinesis::decode(&second_event).unwrap();
    let report = pipeline
        .process(&batch, &invocation("mem-2", Duration::from_secs(600)))
        .await;
    assert!(report.failures.is_empty());
    println!(
        "  after a second such invocation in the same process: peak (VmHWM) {:.1} MB",
        status_kb("VmHWM:") as f64 / 1024.0
    );

    // 2. Postgres upsert.
    let config = streamload_postgres::ConnectOptions::parse(&stack.database_url).unwrap();
    let routes = Routes::builtin("events", "events/").unwrap();
    let sink = PgRows::new(config.clone(), &routes);
    // The previous design (bisection under savepoints), the refused-row baseline below.
    let bisecting = PgRows::new(config, &routes).bisecting();
    let event_values = |id: &str, user: &str, p: &str| {
        vec![
            Value::Text(id.into()),
            Value::Text(user.into()),
            Value::Text("page_view".into()),
            Value::Json(p.into()),
            Value::Timestamp(1_714_557_600_000_000),
            Value::Null,
            Value::Null,
        ]
    };
    let payloads: Vec<String> = (0..ROWS).map(payload).collect();

    // 2a. The shipped sink beside one INSERT … SELECT FROM UNNEST of five binary arrays (no
    // stage table), interleaved run by run so both meet the same table size: new ids each run
    // (inserts), then the same ids again (every row a conflict: updates).
    let mut pg = stack.pg_clone().await;
    let unnest = pg
        .prepare(
            "INSERT INTO events (event_id, user_id, event_type, payload, created_at)
             SELECT u.a, u.b, u.c, u.d::jsonb, u.e
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
               AS u(a, b, c, d, e)
             ON CONFLICT (event_id) DO UPDATE SET payload = EXCLUDED.payload, updated_at = now()",
        )
        .await
        .unwrap();
    let created = chrono::DateTime::from_timestamp_micros(1_714_557_600_000_000).unwrap();
    let (users, types, times) = (
        vec!["user-1"; ROWS],
        vec!["page_view"; ROWS],
        vec![created; ROWS],
    );
    let [mut copy_new, mut copy_update, mut unnest_new, mut unnest_update] =
        [(); 4].map(|_| Vec::new());
    for run in 0..RUNS {
        let ids: Vec<String> = (0..ROWS).map(|i| format!("copy-{run}-{i}")).collect();
        let values: Vec<Vec<Value>> = ids
            .iter()
            .zip(&payloads)
            .map(|(id, p)| event_values(id, "user-1", p))
            .collect();
        let rows = rows_of(routes.get(0), values.iter().map(Vec::as_slice));
        for times_out in [&mut copy_new, &mut copy_update] {
            let t = Instant::now();
            sink.upsert(&rows, i64::MAX / 2).await.unwrap();
            times_out.push(t.elapsed());
        }
        let ids: Vec<String> = (0..ROWS).map(|i| format!("unnest-{run}-{i}")).collect();
        for times_out in [&mut unnest_new, &mut unnest_update] {
            let t = Instant::now();
            let tx = pg.transaction().await.unwrap();
            tx.execute(&unnest, &[&ids, &users, &types, &payloads, &times])
                .await
                .unwrap();
            tx.commit().await.unwrap();
            times_out.push(t.elapsed());
        }
    }

    // 2b. Naive baseline: one prepared INSERT … ON CONFLICT per row, one transaction.
    let mut naive_times = Vec::new();
    for run in 0..3 {
        let t = Instant::now();
        let tx = pg.transaction().await.unwrap();
        let stmt = tx
            .prepare("INSERT INTO events (event_id, user_id, event_type, payload, created_at) VALUES ($1, $2, $3, $4::text::jsonb, to_timestamp($5::float8)) ON CONFLICT (event_id) DO UPDATE SET payload = EXCLUDED.payload, updated_at = now()")
            .await
            .unwrap();
        for (i, p) in payloads.iter().enumerate() {
            let id = format!("naive-{run}-{i}");
            tx.execute(
                &stmt,
                &[&id, &"user-1", &"page_view", p, &1_714_557_600.0f64],
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        naive_times.push(t.elapsed());
    }
    let rate = |d: Duration| ROWS as f64 / d.as_secs_f64();
    let n = median(naive_times.clone());
    println!("postgres upsert, {ROWS} rows per batch (median of {RUNS}; baseline median of 3):");
    for (label, times) in [
        ("shipped: binary COPY + upsert, new rows", &copy_new),
        ("shipped: binary COPY + upsert, conflicts", &copy_update),
        ("UNNEST arrays + upsert, new rows", &unnest_new),
        ("UNNEST arrays + upsert, conflicts", &unnest_update),
        ("row-at-a-time prepared INSERT", &naive_times),
    ] {
        let d = median(times.clone());
        println!(
            "  {label:42}: {:>8.1} ms  {:>9.0} rows/s  {:>5.1}x row-at-a-time",
            d.as_secs_f64() * 1e3,
            rate(d),
            n.as_secs_f64() / d.as_secs_f64()
        );
    }

    // 2c. Refused rows: the same 10,000-row batch with 0, 1, 10 and 100 rows a CHECK
    // constraint refuses. 0 is the happy path (one COPY, one upsert); the others pay a
    // rollback and then either the server-side isolation (one statement: chunks under
    // subtransactions, row by row in a refused chunk) or, as the baseline in the same run,
    // the previous bisection under savepoints.
    pg.batch_execute(
        "ALTER TABLE events ADD CONSTRAINT bench_no_banned CHECK (user_id <> 'banned')",
    )
    .await
    .unwrap();
    println!("postgres upsert with refused rows, {ROWS} new rows per batch (median of 3):");
    for (design, sink) in [
        ("server-side isolation", &sink),
        ("bisection (baseline)", &bisecting),
    ] {
        for refused in [0usize, 1, 10, 100] {
            let mut times = Vec::new();
            for run in 0..3 {
                let ids: Vec<String> = (0..ROWS)
                    .map(|i| format!("refuse-{design}-{refused}-{run}-{i}"))
                    .collect();
                let values: Vec<Vec<Value>> = ids
                    .iter()
                    .zip(&payloads)
                    .enumerate()
                    .map(|(i, (id, p))| {
                        let user = if refused > 0 && i % (ROWS / refused) == ROWS / refused / 2 {
                            "banned"
                        } else {
                            "user-1"
                        };
                        event_values(id, user, p)
                    })
                    .collect();
                let rows = rows_of(routes.get(0), values.iter().map(Vec::as_slice));
                let t = Instant::now();
                let out = sink.upsert(&rows, i64::MAX / 2).await.unwrap();
                times.push(t.elapsed());
                assert_eq!(out.refused.len(), refused);
            }
            println!(
                "  {design}: {refused:>3} refused: {:>8.1} ms",
                median(times).as_secs_f64() * 1e3
            );
        }
    }

    // 3. A 20-column route: the same binary COPY + merge, for rows mapped from JSON by the
    // route's plan; new orders, then the same orders at a higher revision (every row a
    // conflict that replaces), then the same again (every row a conflict the merge keeps).
    pg.batch_execute(wide_route::WIDE_TABLE_DDL).await.unwrap();
    let wide = Routes::compile(&serde_json::from_str(wide_route::WIDE_ROUTE).unwrap()).unwrap();
    let config = streamload_postgres::ConnectOptions::parse(&stack.database_url).unwrap();
    let wide_sink = PgRows::new(config, &wide);
    wide_sink.check_routes(&wide).await.unwrap();
    let [mut new_rows, mut replaced, mut kept] = [(); 3].map(|_| Vec::new());
    for run in 0..RUNS {
        let records: Vec<(u64, Vec<u8>)> = (0..ROWS)
            .map(|i| {
                let mut v: serde_json::Value =
                    serde_json::from_slice(&wide_route::wide_record(i)).unwrap();
                v["order_id"] = format!("run{run}-{i}").into();
                (i as u64, serde_json::to_vec(&v).unwrap())
            })
            .collect();
        let batch = kinesis_batch(&records);
        let mapped: Vec<_> = wide
            .map_batch(&batch.records, 1 << 20)
            .into_iter()
            .map(|m| m.unwrap().unwrap())
            .collect();
        let rows = rows_of(wide.get(0), mapped.iter().map(|m| m.values.as_slice()));
        let t = Instant::now();
        wide_sink.upsert(&rows, i64::MAX / 2).await.unwrap();
        new_rows.push(t.elapsed());
        let revised: Vec<Vec<Value>> = mapped
            .iter()
            .map(|m| {
                let mut v = m.values.clone();
                v[1] = Value::Int(100);
                v
            })
            .collect();
        let rows = rows_of(wide.get(0), revised.iter().map(Vec::as_slice));
        let t = Instant::now();
        wide_sink.upsert(&rows, i64::MAX / 2).await.unwrap();
        replaced.push(t.elapsed());
        let rows = rows_of(wide.get(0), mapped.iter().map(|m| m.values.as_slice()));
        let t = Instant::now();
        wide_sink.upsert(&rows, i64::MAX / 2).await.unwrap();
        kept.push(t.elapsed());
    }
    let newest: i64 = pg
        .query_one(
            "SELECT count(*) FROM bench_orders WHERE revision = 100",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        newest,
        (ROWS * RUNS) as i64,
        "older revisions must not replace newer ones"
    );
    println!("postgres upsert, 20-column route, {ROWS} rows per batch (median of {RUNS}):");
    for (label, times) in [
        ("events route (5 columns), new rows [2a]", &copy_new),
        ("20-column route, new rows", &new_rows),
        ("20-column route, newer revision replaces", &replaced),
        ("20-column route, older revision kept", &kept),
    ] {
        let d = median(times.clone());
        println!(
            "  {label:42}: {:>8.1} ms  {:>9.0} rows/s",
            d.as_secs_f64() * 1e3,
            rate(d)
        );
    }
}
