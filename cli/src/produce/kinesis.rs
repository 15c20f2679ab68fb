//! Kinesis for `produce`: creating the stream and PutRecords with the retry of the records an
//! answer reports as failed.

use std::time::Duration;

use super::Outgoing;
use crate::CliError;

/// Kinesis PutRecords: at most 500 records per call.
pub const KINESIS_PUT_RECORDS_MAX: usize = 500;

/// Sends up to [`KINESIS_PUT_RECORDS_MAX`] records to Kinesis, retrying the records a
/// PutRecords answer reports as failed.
pub async fn send_kinesis(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    records: &[Outgoing],
) -> Result<(), CliError> {
    let mut todo: Vec<&Outgoing> = records.iter().collect();
    for _ in 0..10 {
        if todo.is_empty() {
            return Ok(());
        }
        let entries: Vec<_> = todo
            .iter()
            .filter_map(|r| {
                aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                    .partition_key(&r.key)
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
