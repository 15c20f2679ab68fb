//! The on-call tools: `redrive` (dead letters back to a stream after a fix, with a loop guard)
//! and `replay` (the records an on-failure message describes, read again from the stream
//! while it still holds them and put back for the mapping to deliver). Re-delivery is safe:
//! the claim protocol makes an event that already loaded a duplicate.

use std::collections::HashMap;

use base64::Engine;
use serde_json::Value;

use crate::produce::{Outgoing, StreamWriter};
use crate::{CliError, Target};

/// How many times a record may be redriven before the guard stops it (default).
pub const DEFAULT_MAX_REDRIVES: u32 = 3;

/// What happened to one dead letter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum RedriveAction {
    /// Put back to the stream and deleted from the queue (or would be, in a dry run).
    Redriven { times: u32 },
    /// Left in the queue: redriven this many times already.
    StoppedByLoopGuard { times: u32 },
    /// Left in the queue: its bytes could not be recovered.
    Unreadable(String),
}

/// A dead letter's report line.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Redriven {
    pub dedup_id: String,
    pub reason: String,
    pub bytes: usize,
    pub action: RedriveAction,
}

/// A content digest of the raw bytes: the loop guard's key (the dead letter's own digest
/// includes its stream position, which changes with each redrive).
fn digest(bytes: &[u8]) -> String {
    // FNV-1a over 128 bits: a ledger key, not a security boundary.
    let (mut a, mut b): (u64, u64) = (0xcbf2_9ce4_8422_2325, 0x8422_2325_cbf2_9ce4);
    for &x in bytes {
        a = (a ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
        b = (b ^ u64::from(x.rotate_left(3))).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{a:016x}{b:016x}")
}

/// The ledger of redrives, an object per record under `<prefix>redrive-ledger/` in the
/// bucket, so every operator's redrive counts.
pub struct Ledger<'a> {
    pub s3: &'a aws_sdk_s3::Client,
    pub bucket: String,
    pub prefix: String,
}

impl Ledger<'_> {
    fn key(&self, digest: &str) -> String {
        format!("{}redrive-ledger/{digest}.json", self.prefix)
    }

    async fn count(&self, digest: &str) -> u32 {
        // No ledger object yet: never redriven.
        let Ok(body) = streamload_aws::read_object(self.s3, &self.bucket, &self.key(digest)).await
        else {
            return 0;
        };
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("redrives").and_then(Value::as_u64))
            .unwrap_or(0) as u32
    }

    async fn record(&self, digest: &str, times: u32) -> Result<(), CliError> {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(digest))
            .body(
                serde_json::json!({ "redrives": times })
                    .to_string()
                    .into_bytes()
                    .into(),
            )
            .send()
            .await
            .map_err(|e| CliError::aws("s3 PutObject (redrive ledger)", &e))?;
        Ok(())
    }
}

/// The raw bytes of a dead letter: inline, or the object it names.
async fn raw_bytes(doc: &Value, s3: &aws_sdk_s3::Client, bucket: &str) -> Result<Vec<u8>, String> {
    if let Some(b64) = doc.get("data_base64").and_then(Value::as_str) {
        return base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "data_base64 is not base64".to_owned());
    }
    if let Some(key) = doc.get("data_s3_key").and_then(Value::as_str) {
        let out = s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|_| format!("s3://{bucket}/{key} could not be read"))?;
        return out
            .body
            .collect()
            .await
            .map(|b| b.into_bytes().to_vec())
            .map_err(|e| e.to_string());
    }
    Err("the dead letter holds no bytes (a tombstone)".into())
}

/// Writers by target, connected on first use and kept for the rest of a run.
#[derive(Default)]
pub struct Writers(HashMap<String, StreamWriter>);

impl Writers {
    /// Sends `records` to `target` (nothing to send: no connection either).
    pub async fn send(
        &mut self,
        target: &Target,
        broker: &str,
        records: &[Outgoing],
    ) -> Result<(), CliError> {
        if records.is_empty() {
            return Ok(());
        }
        let key = target.to_string();
        if !self.0.contains_key(&key) {
            let writer = StreamWriter::connect(target, broker, false).await?;
            self.0.insert(key.clone(), writer);
        }
        match self.0.get(&key) {
            Some(writer) => writer.send(records).await.map(|_| ()),
            None => Ok(()),
        }
    }
}

/// Options of a redrive.
pub struct RedriveOptions<'a> {
    pub dlq_url: &'a str,
    pub to: &'a Target,
    pub broker: &'a str,
    pub max_redrives: u32,
    pub dry_run: bool,
    pub limit: usize,
}

/// Takes dead letters off the queue and sends their raw bytes to `to`; a message is deleted
/// only after its record was accepted. Returns one line per message seen.
pub async fn redrive(
    options: &RedriveOptions<'_>,
    sqs: &aws_sdk_sqs::Client,
    ledger: &Ledger<'_>,
    on_progress: &dyn Fn(usize),
) -> Result<Vec<Redriven>, CliError> {
    let mut report = Vec::new();
    // A dry run leaves every message visible (timeout 0), so the queue looks untouched; a
    // message seen twice ends the pass. A real run hides what it leaves for the run's length.
    let mut seen = std::collections::HashSet::new();
    let mut writers = Writers::default();
    'pass: while report.len() < options.limit {
        let out = sqs
            .receive_message()
            .queue_url(options.dlq_url)
            .max_number_of_messages(10)
            .visibility_timeout(if options.dry_run { 0 } else { 300 })
            .send()
            .await
            .map_err(|e| CliError::aws("sqs ReceiveMessage (dead-letter queue)", &e))?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            if !seen.insert(m.message_id().unwrap_or_default().to_owned()) {
                break 'pass;
            }
            let doc: Value = m
                .body()
                .and_then(|b| serde_json::from_str(b).ok())
                .unwrap_or(Value::Null);
            let dedup_id = doc
                .get("dedup_id")
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_owned();
            let reason = doc
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_owned();
            let bytes = match raw_bytes(&doc, ledger.s3, &ledger.bucket).await {
                Ok(b) => b,
                Err(why) => {
                    report.push(Redriven {
                        dedup_id,
                        reason,
                        bytes: 0,
                        action: RedriveAction::Unreadable(why),
                    });
                    continue;
                }
            };
            let d = digest(&bytes);
            let times = ledger.count(&d).await;
            let len = bytes.len();
            if times >= options.max_redrives {
                report.push(Redriven {
                    dedup_id,
                    reason,
                    bytes: len,
                    action: RedriveAction::StoppedByLoopGuard { times },
                });
                continue;
            }
            if !options.dry_run {
                // The record's own key: Kinesis's partition key, Kafka's key; else the digest.
                let key = doc
                    .pointer("/source/partition_key")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .or_else(|| {
                        let b64 = doc.pointer("/source/key_base64")?.as_str()?;
                        let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
                        Some(String::from_utf8_lossy(&raw).into_owned())
                    })
                    .unwrap_or_else(|| dedup_id.clone());
                writers
                    .send(options.to, options.broker, &[Outgoing { key, bytes }])
                    .await?;
                ledger.record(&d, times + 1).await?;
                if let Some(handle) = m.receipt_handle() {
                    sqs.delete_message()
                        .queue_url(options.dlq_url)
                        .receipt_handle(handle)
                        .send()
                        .await
                        .map_err(|e| CliError::aws("sqs DeleteMessage", &e))?;
                }
            }
            report.push(Redriven {
                dedup_id,
                reason,
                bytes: len,
                action: RedriveAction::Redriven { times: times + 1 },
            });
            on_progress(report.len());
        }
    }
    Ok(report)
}

/// What a replay of one on-failure message found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Replayed {
    pub unit: String,
    pub first: String,
    pub last: String,
    pub expected: u64,
    pub found: u64,
    /// Why some were not found (trimmed past retention, a different stream).
    pub missing: Option<String>,
}

/// Reads the records of an on-failure message from the stream and puts them back.
pub async fn replay_one(
    message: &Value,
    broker: &str,
    writers: &mut Writers,
) -> Result<Replayed, CliError> {
    if let Some(info) = message.get("KinesisBatchInfo") {
        let text = |k: &str| info.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let (shard, first, last, arn) = (
            text("shardId"),
            text("startSequenceNumber"),
            text("endSequenceNumber"),
            text("streamArn"),
        );
        let stream = arn.rsplit('/').next().unwrap_or("").to_owned();
        let expected = info.get("batchSize").and_then(Value::as_u64).unwrap_or(0);
        let (client, _) = crate::kinesis_client().await;
        let it = client
            .get_shard_iterator()
            .stream_name(&stream)
            .shard_id(&shard)
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::AtSequenceNumber)
            .starting_sequence_number(&first)
            .send()
            .await;
        let mut found = Vec::new();
        let mut missing = None;
        match it {
            Err(e) => {
                missing = Some(format!(
                    "the stream no longer holds {first} ({})",
                    CliError::aws("GetShardIterator", &e)
                ))
            }
            Ok(out) => {
                let mut iterator = out.shard_iterator;
                'read: while let Some(i) = iterator {
                    let out = client
                        .get_records()
                        .shard_iterator(i)
                        .limit(1000)
                        .send()
                        .await
                        .map_err(|e| CliError::aws("kinesis GetRecords", &e))?;
                    if out.records.is_empty() {
                        break;
                    }
                    for r in out.records {
                        let done = r.sequence_number == last;
                        found.push(Outgoing {
                            key: r.partition_key.unwrap_or_default(),
                            bytes: r.data.into_inner(),
                        });
                        if done || found.len() as u64 >= expected {
                            break 'read;
                        }
                    }
                    iterator = out.next_shard_iterator;
                }
                if (found.len() as u64) < expected {
                    missing = Some(format!(
                        "{} of {expected} records are no longer in the stream",
                        expected - found.len() as u64
                    ));
                }
            }
        }
        writers
            .send(&Target::Kinesis(stream), broker, &found)
            .await?;
        return Ok(Replayed {
            unit: shard,
            first,
            last,
            expected,
            found: found.len() as u64,
            missing,
        });
    }
    if let Some(info) = message.get("KafkaBatchInfo") {
        let topic = info
            .get("topic")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let partition = info.get("partition").and_then(Value::as_i64).unwrap_or(0) as i32;
        let first = info.get("startOffset").and_then(Value::as_i64).unwrap_or(0);
        let last = info
            .get("endOffset")
            .and_then(Value::as_i64)
            .unwrap_or(first);
        let expected = (last - first + 1).max(0) as u64;
        let client = crate::kafka_client(broker).await?;
        let pc = crate::kafka_partition_client(&client, &topic, partition).await?;
        let mut found = Vec::new();
        let mut next = first;
        while next <= last {
            let (records, _) = pc
                .fetch_records(next, 1..4_000_000, 200)
                .await
                .map_err(|e| CliError::Kafka(format!("fetch {topic}-{partition}@{next}: {e}")))?;
            if records.is_empty() {
                break;
            }
            for r in records
                .into_iter()
                .filter(|r| (first..=last).contains(&r.offset))
            {
                next = r.offset + 1;
                let key = r
                    .record
                    .key
                    .map(|k| String::from_utf8_lossy(&k).into_owned())
                    .unwrap_or_default();
                found.push(Outgoing {
                    key,
                    bytes: r.record.value.unwrap_or_default(),
                });
            }
        }
        let missing = ((found.len() as u64) < expected).then(|| {
            format!(
                "{} of {expected} offsets are no longer in the topic",
                expected - found.len() as u64
            )
        });
        writers
            .send(&Target::Kafka(topic.clone()), broker, &found)
            .await?;
        return Ok(Replayed {
            unit: format!("{topic}-{partition}"),
            first: first.to_string(),
            last: last.to_string(),
            expected,
            found: found.len() as u64,
            missing,
        });
    }
    Err(CliError::Usage(
        "not an on-failure message (no KinesisBatchInfo or KafkaBatchInfo)".into(),
    ))
}

/// Replays every on-failure message of the queue; a message is deleted once all its records
/// were found and put back (unless `keep`).
pub async fn replay(
    queue: &str,
    broker: &str,
    keep: bool,
    sqs: &aws_sdk_sqs::Client,
) -> Result<Vec<Replayed>, CliError> {
    let mut report = Vec::new();
    let mut writers = Writers::default();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .visibility_timeout(300)
            .send()
            .await
            .map_err(|e| CliError::aws("sqs ReceiveMessage (on-failure queue)", &e))?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(report);
        }
        for m in messages {
            let doc: Value = m
                .body()
                .and_then(|b| serde_json::from_str(b).ok())
                .unwrap_or(Value::Null);
            let r = replay_one(&doc, broker, &mut writers).await?;
            if r.missing.is_none() && !keep {
                if let Some(h) = m.receipt_handle() {
                    sqs.delete_message()
                        .queue_url(queue)
                        .receipt_handle(h)
                        .send()
                        .await
                        .map_err(|e| CliError::aws("sqs DeleteMessage", &e))?;
                }
            }
            report.push(r);
        }
    }
}

/// One deployed mapping, as Lambda reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeployedMapping {
    pub uuid: String,
    pub state: String,
    pub last_result: String,
    pub source: String,
    pub batch_size: i32,
    pub max_retry_attempts: Option<i32>,
    pub on_failure: Option<String>,
}

/// The mappings of a deployed function (or alias ARN), and its lag metrics.
pub async fn deployed_status(
    lambda: &aws_sdk_lambda::Client,
    cloudwatch: &aws_sdk_cloudwatch::Client,
    function: &str,
) -> Result<
    (
        Vec<DeployedMapping>,
        Vec<(String, Result<Option<f64>, String>)>,
    ),
    CliError,
> {
    let out = lambda
        .list_event_source_mappings()
        .function_name(function)
        .send()
        .await
        .map_err(|e| CliError::aws("lambda ListEventSourceMappings", &e))?;
    let mappings = out
        .event_source_mappings
        .unwrap_or_default()
        .into_iter()
        .map(|m| DeployedMapping {
            uuid: m.uuid.unwrap_or_default(),
            state: m.state.unwrap_or_default(),
            last_result: m.last_processing_result.unwrap_or_else(|| "-".into()),
            source: m
                .event_source_arn
                .or_else(|| {
                    m.self_managed_event_source
                        .map(|s| format!("{:?}", s.endpoints))
                })
                .unwrap_or_default(),
            batch_size: m.batch_size.unwrap_or(0),
            max_retry_attempts: m.maximum_retry_attempts,
            on_failure: m
                .destination_config
                .and_then(|d| d.on_failure)
                .and_then(|f| f.destination),
        })
        .collect();
    // Lag is per function in CloudWatch: the worst value of the last 15 minutes.
    let name = function.rsplit(':').next().unwrap_or(function);
    let now = std::time::SystemTime::now();
    let mut lags = Vec::new();
    for metric in ["IteratorAge", "OffsetLag"] {
        let out = cloudwatch
            .get_metric_statistics()
            .namespace("AWS/Lambda")
            .metric_name(metric)
            .dimensions(
                aws_sdk_cloudwatch::types::Dimension::builder()
                    .name("FunctionName")
                    .value(name)
                    .build(),
            )
            .start_time((now - std::time::Duration::from_secs(900)).into())
            .end_time(now.into())
            .period(60)
            .statistics(aws_sdk_cloudwatch::types::Statistic::Maximum)
            .send()
            .await;
        // Metrics are a view, not the state: an endpoint without CloudWatch (moto speaks
        // only its query protocol) still gets the mappings.
        let worst = out
            .map(|out| {
                out.datapoints
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|d| d.maximum)
                    .fold(None, |acc: Option<f64>, v| {
                        Some(acc.map_or(v, |a| a.max(v)))
                    })
            })
            .map_err(|e| match e.raw_response().map(|r| r.status().as_u16()) {
                Some(code) => format!("CloudWatch answered HTTP {code}"),
                None => "CloudWatch did not answer".to_owned(),
            });
        lags.push((metric.to_owned(), worst));
    }
    Ok((mappings, lags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_key_depends_on_the_bytes_only() {
        assert_eq!(digest(b"abc"), digest(b"abc"));
        assert_ne!(digest(b"abc"), digest(b"abd"));
        assert_eq!(digest(b"").len(), 32);
    }
}
