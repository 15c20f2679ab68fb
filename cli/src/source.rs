//! The two streams as a mapping reads them: a Kinesis shard (GetShardIterator / GetRecords,
//! checkpointed by sequence number) and a Kafka partition (fetch by offset, checkpointed by the
//! next offset). Each builds the exact event Lambda would send and names its records the way
//! the partial-batch response names them, and says how many records wait past its checkpoint
//! (the lag: a partition's high watermark; a shard has none, so it counts them).

use std::collections::VecDeque;

use base64::Engine;
use serde_json::{json, Value};

use crate::CliError;

/// One record read from the stream and not yet checkpointed.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    /// Sequence number (Kinesis) or offset (Kafka), as text.
    pub position: String,
    /// When the stream received it (ms since the epoch).
    pub arrival_ms: i64,
    /// Its entry in the invocation event.
    pub entry: Value,
    /// The entry's encoded size (for the 6 MB payload limit).
    pub size: usize,
}

/// A shard or partition, as the mapping's poller sees it.
pub trait Unit: Send {
    /// `shardId-000000000000` or `<topic>-<partition>`.
    fn name(&self) -> String;
    /// Reads more records (up to `want` pending), without waiting long.
    fn fill(
        &mut self,
        want: usize,
    ) -> impl std::future::Future<Output = Result<(), CliError>> + Send;
    fn pending(&self) -> &VecDeque<SourceRecord>;
    /// Records behind the head of the stream, if known.
    fn lag(&self) -> Option<u64>;
    /// The invocation event for the first `n` pending records.
    fn event(&self, n: usize) -> String;
    /// The pending index an `itemIdentifier` names, among the first `n`.
    fn failure_index(&self, n: usize, identifier: &Value) -> Option<usize>;
    /// Checkpoints past the first `n` pending records.
    fn commit(&mut self, n: usize);
    /// Makes the checkpoint durable where the source keeps it (a Kafka consumer group).
    fn flush(&mut self) -> impl std::future::Future<Output = Result<(), CliError>> + Send {
        async { Ok(()) }
    }
    /// The checkpoint to keep between runs.
    fn checkpoint(&self) -> Option<String>;
    /// What AWS sends the on-failure destination for the first `n` pending records.
    fn on_failure(&self, n: usize, condition: &str, invocations: u64) -> Value;
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// AWS's on-failure message around a batch description (`KinesisBatchInfo` /
/// `KafkaBatchInfo`).
fn on_failure_message(condition: &str, invocations: u64, info_key: &str, info: Value) -> Value {
    let mut message = json!({
        "requestContext": {
            "requestId": format!("local-{}", chrono::Utc::now().timestamp_micros()),
            "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:local",
            "condition": condition,
            "approximateInvokeCount": invocations,
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": rfc3339(chrono::Utc::now().timestamp_millis()),
    });
    message[info_key] = info;
    message
}

/// The JSON size overhead of an event around its records.
pub const EVENT_OVERHEAD: usize = 512;

/// How often a shard behind the stream's tip counts the records past what it has read.
pub const LAG_COUNT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The records of a shard past what its poller has read, counted with an iterator of their
/// own that goes on from where the last count stopped (each record is read once more, not
/// once a count). Both counts run from `origin`, so the records waiting are `counted - read`;
/// when the poller reads past the count, the count starts again from there.
#[derive(Debug, Default)]
struct Ahead {
    /// The sequence number the counts start after (none: the shard's start).
    origin: Option<String>,
    /// The counting iterator, where the last count stopped.
    iterator: Option<String>,
    counted: u64,
    read: u64,
    last_count: Option<std::time::Instant>,
}

impl Ahead {
    fn waiting(&self) -> u64 {
        self.counted.saturating_sub(self.read)
    }

    /// Starts the counts again after `seq`: nothing counted past it yet.
    fn restart(&mut self, seq: Option<String>) {
        *self = Ahead {
            origin: seq,
            last_count: self.last_count,
            ..Ahead::default()
        };
    }
}

pub struct KinesisShard {
    client: aws_sdk_kinesis::Client,
    stream: String,
    stream_arn: String,
    region: String,
    shard_id: String,
    iterator: Option<String>,
    /// The last checkpointed sequence number.
    committed: Option<String>,
    /// The last sequence number read into `pending`.
    read_to: Option<String>,
    pending: VecDeque<SourceRecord>,
    /// The records past `read_to`, for the lag.
    ahead: Ahead,
    closed: bool,
}

impl KinesisShard {
    pub fn new(
        client: aws_sdk_kinesis::Client,
        stream: &str,
        stream_arn: &str,
        region: &str,
        shard_id: &str,
        committed: Option<String>,
    ) -> Self {
        Self {
            client,
            stream: stream.to_owned(),
            stream_arn: stream_arn.to_owned(),
            region: region.to_owned(),
            shard_id: shard_id.to_owned(),
            iterator: None,
            read_to: committed.clone(),
            ahead: Ahead {
                origin: committed.clone(),
                ..Ahead::default()
            },
            committed,
            pending: VecDeque::new(),
            closed: false,
        }
    }

    /// An iterator after sequence number `after`, or at the shard's start.
    async fn shard_iterator(&self, after: Option<&str>) -> Result<Option<String>, CliError> {
        use aws_sdk_kinesis::types::ShardIteratorType;
        let req = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(&self.shard_id);
        let req = match after {
            Some(seq) => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
            None => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let out = req
            .send()
            .await
            .map_err(|e| CliError::aws("kinesis GetShardIterator", &e))?;
        Ok(out.shard_iterator)
    }

    /// Counts the records past the last count, up to the shard's tip (at most a few pages a
    /// call, so a long backlog is counted over several polls).
    async fn count_ahead(&mut self) -> Result<(), CliError> {
        if self.ahead.iterator.is_none() {
            let iterator = self.shard_iterator(self.ahead.origin.as_deref()).await?;
            // Counted from the origin again: what an earlier iterator counted is dropped.
            self.ahead.counted = 0;
            self.ahead.iterator = iterator;
        }
        for _ in 0..5 {
            let Some(iterator) = self.ahead.iterator.clone() else {
                return Ok(());
            };
            let out = self
                .client
                .get_records()
                .shard_iterator(iterator)
                .limit(10_000)
                .send()
                .await
                .map_err(|e| CliError::aws("kinesis GetRecords", &e))?;
            let n = out.records.len();
            self.ahead.counted += n as u64;
            self.ahead.iterator = out.next_shard_iterator;
            // A short page with nothing behind it is the tip.
            if n < 10_000 && out.millis_behind_latest.is_none_or(|ms| ms <= 0) {
                return Ok(());
            }
        }
        Ok(())
    }
}

impl Unit for KinesisShard {
    fn name(&self) -> String {
        self.shard_id.clone()
    }

    async fn fill(&mut self, want: usize) -> Result<(), CliError> {
        if self.pending.len() >= want || self.closed {
            return Ok(());
        }
        if self.iterator.is_none() {
            self.iterator = self.shard_iterator(self.read_to.as_deref()).await?;
        }
        let Some(iterator) = self.iterator.clone() else {
            self.closed = true;
            return Ok(());
        };
        let limit = (want - self.pending.len()).clamp(1, 10_000) as i32;
        let out = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
            .map_err(|e| CliError::aws("kinesis GetRecords", &e))?;
        // Fewer records than asked, and none behind them: this read reached the tip.
        let at_tip =
            out.records.len() < limit as usize && out.millis_behind_latest.is_none_or(|ms| ms <= 0);
        self.iterator = out.next_shard_iterator;
        if self.iterator.is_none() {
            self.closed = true;
        }
        for r in out.records {
            let seq = r.sequence_number;
            let arrival_ms = r
                .approximate_arrival_timestamp
                .map(|t| t.to_millis().unwrap_or(0))
                .unwrap_or(0);
            let entry = json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": r.partition_key,
                    "sequenceNumber": seq,
                    "data": b64(r.data.as_ref()),
                    "approximateArrivalTimestamp": arrival_ms as f64 / 1000.0,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("{}:{}", self.shard_id, seq),
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::000000000000:role/streamload-local",
                "awsRegion": self.region,
                "eventSourceARN": self.stream_arn,
            });
            let size = entry.to_string().len();
            self.read_to = Some(seq.clone());
            self.pending.push_back(SourceRecord {
                position: seq,
                arrival_ms,
                entry,
                size,
            });
            self.ahead.read += 1;
        }
        if at_tip || self.ahead.read > self.ahead.counted {
            // Nothing is waiting past what was read, or the read went past the count: count
            // again from here.
            self.ahead.restart(self.read_to.clone());
        }
        if !at_tip
            && self
                .ahead
                .last_count
                .is_none_or(|t| t.elapsed() >= LAG_COUNT_INTERVAL)
        {
            self.ahead.last_count = Some(std::time::Instant::now());
            if self.count_ahead().await.is_err() {
                // The lag is a report, not the load: a count that failed keeps the last one,
                // and the next count starts from a new iterator.
                self.ahead.iterator = None;
            }
        }
        Ok(())
    }

    fn pending(&self) -> &VecDeque<SourceRecord> {
        &self.pending
    }

    fn lag(&self) -> Option<u64> {
        // Kinesis reports time behind, not records: the records read and not checkpointed,
        // and those counted past them.
        Some(self.pending.len() as u64 + self.ahead.waiting())
    }

    fn event(&self, n: usize) -> String {
        let records: Vec<&Value> = self.pending.iter().take(n).map(|r| &r.entry).collect();
        json!({ "Records": records }).to_string()
    }

    fn failure_index(&self, n: usize, identifier: &Value) -> Option<usize> {
        let seq = identifier.as_str()?;
        self.pending.iter().take(n).position(|r| r.position == seq)
    }

    fn commit(&mut self, n: usize) {
        for _ in 0..n {
            if let Some(r) = self.pending.pop_front() {
                self.committed = Some(r.position);
            }
        }
    }

    fn checkpoint(&self) -> Option<String> {
        self.committed.clone()
    }

    fn on_failure(&self, n: usize, condition: &str, invocations: u64) -> Value {
        let batch: Vec<&SourceRecord> = self.pending.iter().take(n).collect();
        on_failure_message(
            condition,
            invocations,
            "KinesisBatchInfo",
            json!({
                    "shardId": self.shard_id,
                    "startSequenceNumber": batch.first().map(|r| r.position.clone()),
                    "endSequenceNumber": batch.last().map(|r| r.position.clone()),
                    "approximateArrivalOfFirstRecord": batch.first().map(|r| rfc3339(r.arrival_ms)),
                    "approximateArrivalOfLastRecord": batch.last().map(|r| rfc3339(r.arrival_ms)),
                    "batchSize": batch.len(),
                    "streamArn": self.stream_arn,
            }),
        )
    }
}

pub struct KafkaPartition {
    client: std::sync::Arc<rskafka::client::partition::PartitionClient>,
    bootstrap: String,
    topic: String,
    partition: i32,
    /// The next offset to deliver (the committed position).
    committed: i64,
    next_fetch: i64,
    high_watermark: Option<i64>,
    pending: VecDeque<SourceRecord>,
    /// The consumer group the checkpoint is committed to, and the offset last committed.
    group: Option<(std::sync::Arc<crate::kafka_group::GroupOffsets>, i64)>,
}

impl KafkaPartition {
    /// Commits checkpoints to `group` (starting from `committed`).
    pub fn with_group(mut self, group: std::sync::Arc<crate::kafka_group::GroupOffsets>) -> Self {
        self.group = Some((group, self.committed));
        self
    }

    pub fn new(
        client: std::sync::Arc<rskafka::client::partition::PartitionClient>,
        bootstrap: &str,
        topic: &str,
        partition: i32,
        committed: i64,
    ) -> Self {
        Self {
            client,
            bootstrap: bootstrap.to_owned(),
            topic: topic.to_owned(),
            partition,
            committed,
            next_fetch: committed,
            high_watermark: None,
            pending: VecDeque::new(),
            group: None,
        }
    }

    fn key(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

impl Unit for KafkaPartition {
    fn name(&self) -> String {
        self.key()
    }

    async fn fill(&mut self, want: usize) -> Result<(), CliError> {
        if self.pending.len() >= want {
            return Ok(());
        }
        let (records, high) = self
            .client
            .fetch_records(self.next_fetch, 1..4_000_000, 100)
            .await
            .map_err(|e| CliError::Kafka(format!("fetch {}: {e}", self.key())))?;
        self.high_watermark = Some(high);
        for r in records {
            if r.offset < self.next_fetch {
                continue;
            }
            self.next_fetch = r.offset + 1;
            let headers: Vec<Value> = r
                .record
                .headers
                .iter()
                .map(|(k, v)| json!({ k: v.iter().map(|&b| b as i8).collect::<Vec<i8>>() }))
                .collect();
            let arrival_ms = r.record.timestamp.timestamp_millis();
            let entry = json!({
                "topic": self.topic, "partition": self.partition, "offset": r.offset,
                "timestamp": arrival_ms, "timestampType": "CREATE_TIME",
                "key": r.record.key.as_deref().map(b64),
                "value": r.record.value.as_deref().map(b64),
                "headers": headers,
            });
            let size = entry.to_string().len();
            self.pending.push_back(SourceRecord {
                position: r.offset.to_string(),
                arrival_ms,
                entry,
                size,
            });
        }
        Ok(())
    }

    fn pending(&self) -> &VecDeque<SourceRecord> {
        &self.pending
    }

    fn lag(&self) -> Option<u64> {
        self.high_watermark
            .map(|h| (h - self.committed).max(0) as u64)
    }

    fn event(&self, n: usize) -> String {
        let records: Vec<&Value> = self.pending.iter().take(n).map(|r| &r.entry).collect();
        json!({
            "eventSource": "SelfManagedKafka",
            "bootstrapServers": self.bootstrap,
            "records": { self.key(): records },
        })
        .to_string()
    }

    fn failure_index(&self, n: usize, identifier: &Value) -> Option<usize> {
        if identifier.get("partition")?.as_str()? != self.key() {
            return None;
        }
        let offset = identifier.get("offset")?.as_i64()?.to_string();
        self.pending
            .iter()
            .take(n)
            .position(|r| r.position == offset)
    }

    fn commit(&mut self, n: usize) {
        for _ in 0..n {
            if let Some(r) = self.pending.pop_front() {
                self.committed = r
                    .position
                    .parse::<i64>()
                    .map(|o| o + 1)
                    .unwrap_or(self.committed);
            }
        }
    }

    fn checkpoint(&self) -> Option<String> {
        Some(self.committed.to_string())
    }

    async fn flush(&mut self) -> Result<(), CliError> {
        if let Some((group, last)) = &mut self.group {
            if *last != self.committed {
                group
                    .commit(&self.topic, self.partition, self.committed)
                    .await?;
                *last = self.committed;
            }
        }
        Ok(())
    }

    fn on_failure(&self, n: usize, condition: &str, invocations: u64) -> Value {
        let batch: Vec<&SourceRecord> = self.pending.iter().take(n).collect();
        on_failure_message(
            condition,
            invocations,
            "KafkaBatchInfo",
            json!({
                    "batchSize": batch.len(),
                    "bootstrapServers": self.bootstrap,
                    "topic": self.topic,
                    "partition": self.partition,
                    "startOffset": batch.first().and_then(|r| r.position.parse::<i64>().ok()),
                    "endOffset": batch.last().and_then(|r| r.position.parse::<i64>().ok()),
                    "approximateArrivalOfFirstRecord": batch.first().map(|r| rfc3339(r.arrival_ms)),
                    "approximateArrivalOfLastRecord": batch.last().map(|r| rfc3339(r.arrival_ms)),
            }),
        )
    }
}
