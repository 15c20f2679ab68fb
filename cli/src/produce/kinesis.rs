//! Kinesis for `produce`: creating the stream and PutRecords with the retry of the records an
//! answer reports as failed.

use std::time::Duration;

use super::Outgoing;
use crate::CliError;

/// Kinesis PutRecords: at most 500 records per call.
pub const KINESIS_PUT_RECORDS_MAX: usize = 500;

/// The most user-record bytes `produce --kpl` packs into one aggregate: the KPL's default
/// `AggregationMaxSize` (51,200 bytes).
pub const KPL_AGGREGATION_MAX_BYTES: usize = 51_200;

/// One Kinesis record to put: a record of its own, or a KPL aggregate with the explicit hash
/// key of the shard its user records were grouped for.
pub struct KinesisEntry {
    pub key: String,
    pub bytes: Vec<u8>,
    pub explicit_hash_key: Option<String>,
}

impl From<&Outgoing> for KinesisEntry {
    fn from(o: &Outgoing) -> Self {
        Self {
            key: o.key.clone(),
            bytes: o.bytes.clone(),
            explicit_hash_key: None,
        }
    }
}

/// The hash key ranges of the stream's open shards, in the order ListShards gives them.
pub async fn shard_hash_ranges(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<(u128, u128)>, CliError> {
    let out = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| CliError::aws("kinesis ListShards", &e))?;
    let ranges: Vec<(u128, u128)> = out
        .shards
        .unwrap_or_default()
        .into_iter()
        .filter(|s| {
            s.sequence_number_range
                .as_ref()
                .is_none_or(|r| r.ending_sequence_number.is_none())
        })
        .filter_map(|s| {
            let r = s.hash_key_range?;
            Some((
                r.starting_hash_key.parse().ok()?,
                r.ending_hash_key.parse().ok()?,
            ))
        })
        .collect();
    if ranges.is_empty() {
        return Err(CliError::Usage(format!("stream {stream}: no open shard")));
    }
    Ok(ranges)
}

/// Packs `records` as the KPL does: grouped by the shard their partition key hashes to (MD5,
/// as Kinesis does), each group in order into aggregates of at most
/// [`KPL_AGGREGATION_MAX_BYTES`] of user data, each put with its shard's starting hash key
/// so it lands where its user records' keys would have. A key's records stay in order.
pub fn pack_kpl(records: &[Outgoing], shards: &[(u128, u128)]) -> Vec<KinesisEntry> {
    use md5::{Digest, Md5};
    let mut groups: Vec<Vec<&Outgoing>> = vec![Vec::new(); shards.len().max(1)];
    for r in records {
        let hash = u128::from_be_bytes(Md5::digest(r.key.as_bytes()).into());
        let shard = shards
            .iter()
            .position(|(lo, hi)| (*lo..=*hi).contains(&hash))
            .unwrap_or(0);
        groups[shard].push(r);
    }
    let mut entries = Vec::new();
    for (shard, group) in groups.iter().enumerate() {
        let mut start = 0;
        while start < group.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < group.len()
                && (end == start || bytes + group[end].bytes.len() <= KPL_AGGREGATION_MAX_BYTES)
            {
                bytes += group[end].bytes.len();
                end += 1;
            }
            let users: Vec<(&str, &[u8])> = group[start..end]
                .iter()
                .map(|r| (r.key.as_str(), r.bytes.as_slice()))
                .collect();
            entries.push(KinesisEntry {
                key: group[start].key.clone(),
                bytes: streamload_core::kpl::aggregate(&users),
                explicit_hash_key: shards.get(shard).map(|(lo, _)| lo.to_string()),
            });
            start = end;
        }
    }
    entries
}

/// Sends up to [`KINESIS_PUT_RECORDS_MAX`] records to Kinesis, retrying the records a
/// PutRecords answer reports as failed.
pub async fn send_kinesis(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    records: &[KinesisEntry],
) -> Result<(), CliError> {
    let mut todo: Vec<&KinesisEntry> = records.iter().collect();
    for _ in 0..10 {
        if todo.is_empty() {
            return Ok(());
        }
        let entries: Vec<_> = todo
            .iter()
            .filter_map(|r| {
                aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                    .partition_key(&r.key)
                    .set_explicit_hash_key(r.explicit_hash_key.clone())
                    .data(aws_sdk_kinesis::primitives::Blob::new(r.bytes.clone()))
                    .build()
                    .ok()
            })
            .collect();
        let out = client
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries))
            .send()
            .await
            .map_err(|e| CliError::aws("kinesis PutRecords", &e))?;
        if out.failed_record_count.unwrap_or(0) == 0 {
            return Ok(());
        }
        todo = todo
            .into_iter()
            .zip(out.records)
            .filter(|(_, r)| r.error_code.is_some())
            .map(|(o, _)| o)
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(CliError::Usage(format!(
        "kinesis PutRecords: {} records still refused after 10 attempts",
        todo.len()
    )))
}

/// Creates the stream (one shard per `partitions`) and waits until it is active.
pub async fn create_kinesis(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    shards: u32,
) -> Result<(), CliError> {
    let exists = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .is_ok();
    if !exists {
        let created = client
            .create_stream()
            .stream_name(stream)
            .shard_count(shards as i32)
            .send()
            .await;
        match created {
            Ok(_) => {}
            // Made meanwhile — by another producer, or by an attempt of ours whose answer was
            // lost and which the SDK retried: either way the stream is there; wait for it below.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) => {}
            Err(e) => return Err(CliError::aws("kinesis CreateStream", &e)),
        }
    }
    for _ in 0..100 {
        let s = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .map_err(|e| CliError::aws("kinesis DescribeStreamSummary", &e))?;
        if s.stream_description_summary.map(|d| d.stream_status)
            == Some(aws_sdk_kinesis::types::StreamStatus::Active)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(CliError::Usage(format!(
        "stream {stream} did not become ACTIVE"
    )))
}
