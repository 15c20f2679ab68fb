//! The in-memory stack the pipeline's tests share: adapters with fault switches, batches of
//! sample events, and the tests' one clock.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use streamload_core::clock::{Clock, TokioClock};
use streamload_core::memory::{
    FaultSwitch, Faulty, MemoryDeadLetters, MemoryDedup, MemoryObjects, MemoryRows,
};
use streamload_core::record::{Batch, Origin, Position, SourceRecord, SourceUnit};
use streamload_core::retry::RetryPolicy;
use streamload_core::search::memory::MemoryIndex;
use streamload_core::{BatchReport, Invocation, Pipeline, PipelineSettings};

pub type TestPipeline = Pipeline<
    Faulty<MemoryDedup>,
    Faulty<MemoryRows>,
    Faulty<MemoryObjects>,
    Faulty<MemoryDeadLetters>,
>;

pub struct Stack {
    pub dedup: MemoryDedup,
    pub rows: MemoryRows,
    pub objects: MemoryObjects,
    pub dead_letters: MemoryDeadLetters,
    pub search: MemoryIndex,
}

pub struct Switches {
    pub dedup: Arc<FaultSwitch>,
    pub rows: Arc<FaultSwitch>,
    pub objects: Arc<FaultSwitch>,
    pub dead_letters: Arc<FaultSwitch>,
    pub search: Arc<FaultSwitch>,
}

impl Stack {
    pub fn new() -> Self {
        Self {
            dedup: MemoryDedup::default(),
            rows: MemoryRows::default(),
            objects: MemoryObjects::default(),
            dead_letters: MemoryDeadLetters::default(),
            search: MemoryIndex::default(),
        }
    }

    /// A fresh "sandbox" over the same stores, with its own fault switches.
    pub fn pipeline(&self) -> (TestPipeline, Switches) {
        let s = Switches {
            dedup: FaultSwitch::new(),
            rows: FaultSwitch::new(),
            objects: FaultSwitch::new(),
            dead_letters: FaultSwitch::new(),
            search: FaultSwitch::new(),
        };
        let settings = PipelineSettings {
            lease_grace: Duration::from_millis(50),
            finish_margin: Duration::from_millis(200),
            clock: clock(),
            in_budget_retry: RetryPolicy {
                max_attempts: 4,
                initial_backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(20),
            },
            ..PipelineSettings::default()
        };
        let p = Pipeline {
            dedup: Faulty::new(self.dedup.clone(), s.dedup.clone()),
            rows: Faulty::new(self.rows.clone(), s.rows.clone()),
            objects: Faulty::new(self.objects.clone(), s.objects.clone()),
            dead_letters: Faulty::new(self.dead_letters.clone(), s.dead_letters.clone()),
            search: Some(Arc::new(Faulty::new(self.search.clone(), s.search.clone()))),
            settings,
        };
        (p, s)
    }

    /// The dead-letter archives: each object's key and its messages, one per line.
    pub fn archives(&self) -> BTreeMap<String, Vec<serde_json::Value>> {
        self.objects
            .objects
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.ends_with(".jsonl") && !k.contains("/_markers/"))
            .map(|(k, stored)| {
                let text = std::str::from_utf8(stored).unwrap();
                let lines = text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                (k.clone(), lines)
            })
            .collect()
    }

    /// The commit markers of routes without a lake: key → the claim keys its lines name.
    pub fn markers(&self) -> BTreeMap<String, Vec<String>> {
        self.objects
            .objects
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.contains("/_markers/"))
            .map(|(k, stored)| {
                let lines = std::str::from_utf8(stored)
                    .unwrap()
                    .lines()
                    .map(|l| {
                        let line: serde_json::Value = serde_json::from_str(l).unwrap();
                        line["claim_key"].as_str().unwrap().to_owned()
                    })
                    .collect();
                (k.clone(), lines)
            })
            .collect()
    }

    pub fn row_count(&self) -> usize {
        self.rows.rows.lock().unwrap().len()
    }

    /// Event ids across all Parquet objects, with multiplicity.
    pub fn parquet_event_ids(&self) -> Vec<String> {
        self.parquet_column("event_id")
    }

    /// A text column's values across all Parquet objects, sorted, with multiplicity.
    pub fn parquet_column(&self, name: &str) -> Vec<String> {
        use arrow_array::cast::AsArray;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let mut ids = Vec::new();
        for (key, body) in self.objects.objects.lock().unwrap().iter() {
            if !key.ends_with(".parquet") {
                continue;
            }
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(body.clone()))
                .unwrap()
                .build()
                .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let col = batch.column_by_name(name).unwrap().as_string::<i32>();
                ids.extend(col.iter().map(|v| v.unwrap().to_owned()));
            }
        }
        ids.sort();
        ids
    }
}

pub fn event_json(id: &str) -> Vec<u8> {
    format!(r#"{{"event_id":"{id}","user_id":"u-{id}","event_type":"click","payload":{{"n":1}},"created_at":"2024-05-01T10:00:00"}}"#).into_bytes()
}

pub fn record(seq: u64, data: Option<Vec<u8>>) -> SourceRecord {
    SourceRecord {
        unit: Arc::new(SourceUnit {
            label: "orders/shardId-000000000000".into(),
            topic_partition: None,
        }),
        position: Position::from_offset(seq),
        data: data.map(bytes::Bytes::from),
        key: Some("pk".into()),
        headers_json: None,
        arrival_ms: None,
        undecodable: None,
        origin: Origin::Kinesis {
            stream_arn: "arn:aws:kinesis:us-east-1:1:stream/orders".into(),
            shard_id: "shardId-000000000000".into(),
            approximate_arrival: None,
        },
    }
}

pub fn batch_of(ids: &[&str], first_seq: u64) -> Batch {
    Batch {
        records: ids
            .iter()
            .enumerate()
            .map(|(i, id)| record(first_seq + i as u64, Some(event_json(id))))
            .collect(),
    }
}

/// The tests' one clock: tokio's time, so a paused test moves it without sleeping (shared by
/// every pipeline and invocation of a test, so they agree).
pub fn clock() -> Arc<TokioClock> {
    static CLOCK: std::sync::OnceLock<Arc<TokioClock>> = std::sync::OnceLock::new();
    CLOCK.get_or_init(|| Arc::new(TokioClock::new())).clone()
}

pub fn invocation(id: &str, budget: Duration) -> Invocation {
    let now = clock().now_ms();
    Invocation {
        attempt_id: id.into(),
        deadline_ms: now + budget.as_millis() as i64,
    }
}

pub fn expected_ids(ids: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    v.sort();
    v.dedup();
    v
}

/// `batch` delivered again to a fresh sandbox (`id` its invocation, 30 s), which must find
/// every record done already: each outcome `Duplicate`. Returns its report.
#[allow(dead_code)] // not every suite redelivers
pub async fn redeliver_expecting_only_duplicates(
    stack: &Stack,
    batch: &Batch,
    id: &str,
) -> BatchReport {
    let (p, _) = stack.pipeline();
    let again = p
        .process(batch, &invocation(id, Duration::from_secs(30)))
        .await;
    assert!(
        again
            .outcomes
            .iter()
            .all(|o| *o == streamload_core::RecordOutcome::Duplicate),
        "{:?}",
        again.outcomes
    );
    again
}

/// `batch` processed by a fresh sandbox 200 ms after another invocation ("inv-1", 60 s)
/// claimed `held` and got stuck in the database, alive and renewing its lease: what the
/// taker reports. The holder is dropped afterwards (its sandbox died).
#[allow(dead_code)] // not every suite holds a claim
pub async fn beside_a_live_holder_of(stack: &Stack, held: &str, batch: &Batch) -> BatchReport {
    let (p1, s1) = stack.pipeline();
    s1.rows
        .crash_before
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let b1 = batch_of(&[held], 1);
    let inv1 = invocation("inv-1", Duration::from_secs(60));
    let holder = p1.process(&b1, &inv1);
    let (p2, _) = stack.pipeline();
    let taker = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        p2.process(batch, &invocation("inv-2", Duration::from_secs(30)))
            .await
    };
    tokio::select! {
        _ = holder => panic!("the first invocation is stuck mid-batch"),
        report = taker => report,
    }
}
