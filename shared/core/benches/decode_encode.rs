//! decode → validate → Arrow → Parquet for a 10,000-record, ~6 MB batch: the CPU work of one
//! invocation apart from I/O. Kinesis and Kafka decoding side by side, and a naive baseline
//! (serde_json::Value per record, default Parquet settings) in the same run.
//!
//! Run: `make bench` (or `cargo bench -p streamload-core --bench decode_encode`).

use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use streamload_core::encode::{encode_parquet, ParquetRow};
use streamload_core::event::DEFAULT_MAX_RECORD_BYTES;
use streamload_core::record::{Batch, SourceRecord};
use streamload_core::route::{Mapped, Routes};
use streamload_core::source::{EventSource, Kafka, Kinesis};

const RECORDS: usize = 10_000;

/// A producer event of about 450 bytes of JSON (6 MB of event payload after base64 is ~4.5 MB
/// of JSON; the invocation cap is on the base64 form).
fn record_json(i: usize) -> Vec<u8> {
    format!(
        r#"{{"event_id":"evt-{i:012}","user_id":"user-{u}","event_type":"page_view","payload":{{"path":"/products/{i}","referrer":"https://example.com/search?q=shoes&page={p}","device":{{"os":"android","version":"14","model":"Pixel 8"}},"items":[{{"sku":"SKU-{i}","qty":1,"price":19.99}},{{"sku":"SKU-{j}","qty":2,"price":5.5}}],"session":"s-{u}-{p}","flags":["a","b","c"]}},"created_at":"2024-05-01T10:{m:02}:{s:02}.{i:06}","source":"web","version":3}}"#,
        u = i % 997,
        p = i % 13,
        j = i * 7,
        m = (i / 60) % 60,
        s = i % 60,
    )
    .into_bytes()
}

/// A Kinesis event with every field Lambda sends (those the loader ignores still cost a parse).
fn kinesis_event_json(records: &[Vec<u8>]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let recs: Vec<serde_json::Value> = records
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let seq = format!("4959033827149025660855969253836157109592157598913{i:07}");
            serde_json::json!({
                "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "pk", "sequenceNumber": seq,
                            "data": b64.encode(d), "approximateArrivalTimestamp": 1714557600.5},
                "eventSource": "aws:kinesis", "eventVersion": "1.0",
                "eventID": format!("shardId-000000000000:{seq}"), "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/loader", "awsRegion": "us-east-1",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/orders"})
        })
        .collect();
    serde_json::json!({ "Records": recs }).to_string()
}

/// The same records packed as a KPL producer sends them: aggregates of 100 user records
/// (≈50 KB, the KPL's default size limit), one Kinesis record each.
fn kinesis_kpl_event_json(records: &[Vec<u8>]) -> String {
    let aggregates: Vec<Vec<u8>> = records
        .chunks(100)
        .map(|chunk| {
            let users: Vec<(&str, &[u8])> = chunk.iter().map(|r| ("pk", r.as_slice())).collect();
            streamload_core::kpl::aggregate(&users)
        })
        .collect();
    kinesis_event_json(&aggregates)
}

fn kafka_event_json(records: &[Vec<u8>]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let recs: Vec<serde_json::Value> = records
        .iter()
        .enumerate()
        .map(|(i, d)| serde_json::json!({"topic": "orders", "partition": 0, "offset": i, "timestamp": 1714557600500i64,
            "timestampType": "CREATE_TIME", "key": null, "value": b64.encode(d), "headers": [{"trace": [116, 45, 49]}]}))
        .collect();
    serde_json::json!({ "eventSource": "aws:kafka",
        "eventSourceArn": "arn:aws:kafka:us-east-1:123456789012:cluster/c/abcd-1",
        "bootstrapServers": "b-1.c.kafka.us-east-1.amazonaws.com:9098",
        "records": { "orders-0": recs } })
    .to_string()
}

/// What `lambda_runtime` 1.x would do with the body if it parsed the event itself, as it does
/// for any typed handler (a path-tracking serde_json parse), here into the cheapest type, a
/// `RawValue`. The shipped functions skip it (`streamload_runtime::RawBodies`); it is
/// measured to show what that saves.
fn runtime_raw_event(body: &[u8]) -> Box<serde_json::value::RawValue> {
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body)).unwrap()
}

/// The shipped path from the invocation body, as `streamload_runtime::handle` runs it: UTF-8
/// check, the source's one parse and decode, validation, Arrow and one Parquet file.
fn shipped<S: EventSource>(body: &[u8]) -> usize
where
    S::Error: std::fmt::Debug,
{
    let batch = S::decode(std::str::from_utf8(body).unwrap()).unwrap();
    to_parquet(&valid_events(&batch), &batch)
}

/// The same path behind `lambda_runtime`'s own parse of the body (the previous design).
fn behind_runtime_parse<S: EventSource>(body: &[u8]) -> usize
where
    S::Error: std::fmt::Debug,
{
    let raw = runtime_raw_event(body);
    let batch = S::decode(raw.get()).unwrap();
    drop(raw);
    to_parquet(&valid_events(&batch), &batch)
}

/// The built-in events route (the first release's contract), compiled once as at start-up.
fn builtin() -> &'static Routes {
    static ROUTES: std::sync::OnceLock<Routes> = std::sync::OnceLock::new();
    ROUTES.get_or_init(|| Routes::builtin("events", "events/").unwrap())
}

/// Every record of the batch mapped by `routes` (all are valid in this bench), into a list
/// sized for the batch as the pipeline's is.
fn mapped(routes: &Routes, batch: &Batch) -> Vec<Mapped> {
    let mut out = Vec::with_capacity(batch.records.len());
    for m in routes
        .map_batch(&batch.records, DEFAULT_MAX_RECORD_BYTES)
        .into_iter()
        .flatten()
        .flatten()
    {
        out.push(m);
    }
    out
}

fn valid_events(batch: &Batch) -> Vec<Mapped> {
    mapped(builtin(), batch)
}

/// Arrow + Parquet for mapped records (every record of the bench batch is valid).
fn to_parquet(events: &[Mapped], batch: &Batch) -> usize {
    parquet_of(builtin(), events, batch)
}

fn parquet_of(routes: &Routes, events: &[Mapped], batch: &Batch) -> usize {
    parquet_of_rows(routes, events, &batch.records)
}

fn parquet_of_rows(routes: &Routes, events: &[Mapped], records: &[SourceRecord]) -> usize {
    let rows: Vec<ParquetRow<'_>> = events
        .iter()
        .zip(records)
        .map(|(e, r)| ParquetRow {
            values: &e.values,
            source_unit: &r.unit.label,
            source_position: r.position.as_str(),
            source_key: r.key.as_deref(),
            source_headers: r.headers_json.as_deref(),
        })
        .collect();
    encode_parquet(routes.get(0), &rows, 1_714_557_600_000_000)
        .unwrap()
        .len()
}

#[path = "support/wide_route.rs"]
mod wide_route;
use wide_route::{wide_record, WIDE_ROUTE};

fn wide_routes() -> &'static Routes {
    static ROUTES: std::sync::OnceLock<Routes> = std::sync::OnceLock::new();
    ROUTES.get_or_init(|| Routes::compile(&serde_json::from_str(WIDE_ROUTE).unwrap()).unwrap())
}

/// The wide route's path from the Kinesis event: decode, map 20 columns, Arrow and Parquet.
fn wide_shipped(event: &str) -> usize {
    let batch = Kinesis::decode(event).unwrap();
    let events = mapped(wide_routes(), &batch);
    assert_eq!(events.len(), batch.records.len());
    parquet_of(wide_routes(), &events, &batch)
}

/// Naive: a serde_json::Value tree per record, fields cloned out, default Parquet settings.
fn naive(records: &[Vec<u8>]) -> usize {
    use arrow_array::{RecordBatch, StringArray};
    use std::sync::Arc;
    let mut cols: [Vec<String>; 5] = Default::default();
    for d in records {
        let v: serde_json::Value = serde_json::from_slice(d).unwrap();
        cols[0].push(v["event_id"].as_str().unwrap().to_string());
        cols[1].push(v["user_id"].as_str().unwrap().to_string());
        cols[2].push(v["event_type"].as_str().unwrap().to_string());
        cols[3].push(v["payload"].to_string());
        cols[4].push(v["created_at"].as_str().unwrap().to_string());
    }
    let schema = Arc::new(arrow_schema::Schema::new(
        ["event_id", "user_id", "event_type", "payload", "created_at"]
            .iter()
            .map(|n| arrow_schema::Field::new(*n, arrow_schema::DataType::Utf8, false))
            .collect::<Vec<_>>(),
    ));
    let arrays = cols
        .iter()
        .map(|c| Arc::new(StringArray::from(c.clone())) as arrow_array::ArrayRef)
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), arrays).unwrap();
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    out.len()
}

/// CPU time of this thread: unlike wall time it does not count time the hypervisor gives
/// to other machines, which on shared 2-core hosts swings wall-clock results by ±40%.
fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the pointer we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Median CPU time of `f` over `runs` runs.
fn cpu_median(runs: usize, mut f: impl FnMut() -> usize) -> std::time::Duration {
    let mut times: Vec<_> = (0..runs)
        .map(|_| {
            let t = thread_cpu();
            black_box(f());
            thread_cpu() - t
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn cpu_report(name: &str, event_bytes: usize, json_bytes: usize, d: std::time::Duration) {
    let ms = d.as_secs_f64() * 1e3;
    eprintln!(
        "cpu {name:34} {ms:7.1} ms  {:6.0} MB/s of record JSON  {:6.0} MB/s of event",
        json_bytes as f64 / 1e6 / d.as_secs_f64(),
        event_bytes as f64 / 1e6 / d.as_secs_f64()
    );
}

/// A batch at the 6 MB invocation cap: as many of the same records as fit in a Kinesis event.
fn capped_records(records: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut n = records.len();
    while kinesis_event_json(&records[..n]).len() > 6 * 1024 * 1024 {
        n = n * 95 / 100;
    }
    records[..n].to_vec()
}

fn bench(c: &mut Criterion) {
    // As the shipped functions start (streamload_runtime::run); the allocator's defaults stay
    // when DECODE_ENCODE_ALLOCATOR_DEFAULTS is set, to measure what keeping memory saves.
    if std::env::var_os("DECODE_ENCODE_ALLOCATOR_DEFAULTS").is_none() {
        streamload_core::heap::keep_freed_memory();
    }
    let records: Vec<Vec<u8>> = (0..RECORDS).map(record_json).collect();
    let json_bytes: usize = records.iter().map(Vec::len).sum();
    let kinesis = kinesis_event_json(&records);
    let kafka = kafka_event_json(&records);
    eprintln!(
        "batch: {RECORDS} records, {:.2} MB of record JSON, Kinesis event {:.2} MB, Kafka event {:.2} MB",
        json_bytes as f64 / 1e6,
        kinesis.len() as f64 / 1e6,
        kafka.len() as f64 / 1e6
    );
    if let Ok(path) = std::env::var("DECODE_ENCODE_ONCE") {
        return run_once(&path, &kinesis, &kafka, &records);
    }
    // CPU time per batch: the 10,000-record batch, and one at the 6 MB invocation cap.
    let capped = capped_records(&records);
    let capped_json: usize = capped.iter().map(Vec::len).sum();
    let capped_event = kinesis_event_json(&capped);
    let kinesis_run = |ev: &str| shipped::<Kinesis>(ev.as_bytes());
    let kafka_run = |ev: &str| shipped::<Kafka>(ev.as_bytes());
    let runs = 31;
    cpu_report(
        "kinesis 10k: event -> parquet",
        kinesis.len(),
        json_bytes,
        cpu_median(runs, || kinesis_run(&kinesis)),
    );
    cpu_report(
        "kafka 10k: event -> parquet",
        kafka.len(),
        json_bytes,
        cpu_median(runs, || kafka_run(&kafka)),
    );
    let kpl = kinesis_kpl_event_json(&records);
    cpu_report(
        "kinesis 10k in 100 KPL aggregates",
        kpl.len(),
        json_bytes,
        cpu_median(runs, || kinesis_run(&kpl)),
    );
    cpu_report(
        "kinesis 10k, lambda_runtime parse first",
        kinesis.len(),
        json_bytes,
        cpu_median(runs, || behind_runtime_parse::<Kinesis>(kinesis.as_bytes())),
    );
    cpu_report(
        "naive 10k: records -> parquet",
        kinesis.len(),
        json_bytes,
        cpu_median(runs, || naive(&records)),
    );
    let wide: Vec<Vec<u8>> = (0..RECORDS).map(wide_record).collect();
    let wide_json: usize = wide.iter().map(Vec::len).sum();
    let wide_event = kinesis_event_json(&wide);
    cpu_report(
        "wide route 10k (20 cols): event -> parquet",
        wide_event.len(),
        wide_json,
        cpu_median(runs, || wide_shipped(&wide_event)),
    );
    cpu_report(
        &format!("kinesis 6 MB cap ({} records)", capped.len()),
        capped_event.len(),
        capped_json,
        cpu_median(runs, || kinesis_run(&capped_event)),
    );

    // Late data: the same 1,000 events as one object, and as 100 objects of 10 events (event
    // times spread over two days: one object per route and hour), CPU per object.
    let late_event = kinesis_event_json(&records[..1000]);
    let late_batch = Kinesis::decode(&late_event).unwrap();
    let late_events = valid_events(&late_batch);
    let one = cpu_median(runs, || to_parquet(&late_events, &late_batch));
    let hundred = cpu_median(runs, || {
        late_events
            .chunks(10)
            .zip(late_batch.records.chunks(10))
            .map(|(e, r)| parquet_of_rows(builtin(), e, r))
            .sum()
    });
    eprintln!(
        "late data, 1,000 events: one object {:.0} µs; 100 objects of 10 {:.0} µs ({:.0} µs per object beyond the one)",
        one.as_secs_f64() * 1e6,
        hundred.as_secs_f64() * 1e6,
        (hundred.as_secs_f64() - one.as_secs_f64()) * 1e6 / 99.0
    );

    let mut g = c.benchmark_group("batch_10k");
    g.throughput(Throughput::Bytes(json_bytes as u64));
    g.sample_size(20);
    g.bench_function("kinesis_event_to_parquet", |b| {
        b.iter(|| shipped::<Kinesis>(black_box(kinesis.as_bytes())))
    });
    g.bench_function("kafka_event_to_parquet", |b| {
        b.iter(|| shipped::<Kafka>(black_box(kafka.as_bytes())))
    });
    g.bench_function("wide_route_20_columns_event_to_parquet", |b| {
        b.iter(|| wide_shipped(black_box(&wide_event)))
    });
    g.bench_function("naive_value_tree_baseline", |b| {
        b.iter(|| naive(black_box(&records)))
    });
    g.finish();
    stages(c, &kinesis, json_bytes);
}

/// `DECODE_ENCODE_ONCE=<path>`: run one path once over the 10,000-record batch and stop, for
/// counting instructions under callgrind (scripts/bench.sh), which other tenants of a shared
/// host cannot disturb. `setup` runs nothing past building the inputs, to be subtracted.
/// `DECODE_ENCODE_TIMES=<n>` runs it n times back to back, as a warm function handles batch
/// after batch, and reports CPU time and page faults per batch (also for `perf record`).
fn run_once(path: &str, kinesis: &str, kafka: &str, records: &[Vec<u8>]) {
    let times: u32 = std::env::var("DECODE_ENCODE_TIMES").map_or(1, |n| n.parse().unwrap());
    let (cpu, faults) = (thread_cpu(), minor_faults());
    for _ in 0..times {
        run_path(path, kinesis, kafka, records);
    }
    if times > 1 {
        eprintln!(
            "{path} x{times}: {:.2} ms CPU, {:.0} page faults per batch",
            (thread_cpu() - cpu).as_secs_f64() * 1e3 / f64::from(times),
            (minor_faults() - faults) as f64 / f64::from(times)
        );
    }
}

/// Minor page faults this thread has taken so far.
fn minor_faults() -> i64 {
    // SAFETY: getrusage writes one rusage into the zeroed value we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    usage.ru_minflt
}

fn run_path(path: &str, kinesis: &str, kafka: &str, records: &[Vec<u8>]) {
    let bytes = match path {
        "setup" => 0,
        "kinesis" => shipped::<Kinesis>(kinesis.as_bytes()),
        "kinesis_behind_runtime_parse" => behind_runtime_parse::<Kinesis>(kinesis.as_bytes()),
        "kafka" => shipped::<Kafka>(kafka.as_bytes()),
        "naive" => naive(records),
        "wide" => wide_shipped(&kinesis_event_json(
            &(0..RECORDS).map(wide_record).collect::<Vec<_>>(),
        )),
        "wide_setup" => {
            kinesis_event_json(&(0..RECORDS).map(wide_record).collect::<Vec<_>>()).len()
        }
        "kinesis_envelope" => Kinesis::decode(kinesis).unwrap().records.len(),
        "kinesis_kpl" => shipped::<Kinesis>(kinesis_kpl_event_json(records).as_bytes()),
        "kinesis_kpl_setup" => kinesis_kpl_event_json(records).len(),
        // 1,000 events as 100 objects of 10 (late data): the fixed cost per object.
        "late_objects" => {
            let event = kinesis_event_json(&records[..1000]);
            let batch = Kinesis::decode(&event).unwrap();
            let events = valid_events(&batch);
            events
                .chunks(10)
                .zip(batch.records.chunks(10))
                .map(|(e, r)| parquet_of_rows(builtin(), e, r))
                .sum()
        }
        other => panic!("DECODE_ENCODE_ONCE: unknown path {other}"),
    };
    black_box(bytes);
}

/// Where the time goes, stage by stage, for the Kinesis path.
fn stages(c: &mut Criterion, kinesis: &str, json_bytes: usize) {
    let mut s = c.benchmark_group("kinesis_stages");
    s.throughput(Throughput::Bytes(json_bytes as u64));
    s.sample_size(20);
    let batch = Kinesis::decode(kinesis).unwrap();
    let events = valid_events(&batch);
    s.bench_function("0_avoided_lambda_runtime_parse", |b| {
        b.iter(|| runtime_raw_event(black_box(kinesis.as_bytes())))
    });
    s.bench_function("1_utf8_check", |b| {
        b.iter(|| std::str::from_utf8(black_box(kinesis.as_bytes())).is_ok())
    });
    s.bench_function("2_parse_event_and_base64", |b| {
        b.iter(|| Kinesis::decode(black_box(kinesis)).unwrap())
    });

    s.bench_function("3_validate", |b| {
        b.iter(|| valid_events(black_box(&batch)).len())
    });
    s.bench_function("4_arrow_and_parquet", |b| {
        b.iter(|| to_parquet(black_box(&events), &batch))
    });
    s.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
