//! `streamload run sqs://<queue>`: a local SQS event-source mapping, as AWS runs the table
//! committer's. Messages are gathered up to the batch size or the batching window, the real
//! function is invoked with Lambda's SQS event, and the messages its answer does not name in
//! `batchItemFailures` are deleted. The rest — every message of a failed, timed-out or killed
//! invocation — stay on the queue and come back after its visibility timeout; SQS itself moves
//! a message that keeps coming back to the queue's dead-letter queue (`maxReceiveCount`).
//!
//! Unlike a stream there is no order and no checkpoint: each message succeeds or fails alone.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, QueueAttributeName};
use serde_json::{json, Value};

use crate::run::{start_backoff, FailedStarts, RunOptions, UnitStats};
use crate::sandbox::{Outcome, Sandbox};
use crate::CliError;

/// Messages one `ReceiveMessage` returns at most (SQS's limit).
const RECEIVE_MAX: usize = 10;
/// Entries one `DeleteMessageBatch` takes at most (SQS's limit).
const DELETE_BATCH_MAX: usize = 10;
/// The largest batch an SQS mapping delivers (with a batching window).
pub const MAX_QUEUE_BATCH: usize = 10_000;

/// Lambda's SQS event for `messages` (the fields AWS sends for each record).
///
/// ```
/// let m = aws_sdk_sqs::types::Message::builder()
///     .message_id("m-1").receipt_handle("r-1").body("{}").md5_of_body("99914b932bd37a50b983c5e7c90ae93b")
///     .build();
/// let event = streamload_cli::queue::sqs_event(&[m], "arn:aws:sqs:eu-west-1:1:commits", "eu-west-1");
/// let v: serde_json::Value = serde_json::from_str(&event).unwrap();
/// assert_eq!(v["Records"][0]["messageId"], "m-1");
/// assert_eq!(v["Records"][0]["eventSource"], "aws:sqs");
/// ```
pub fn sqs_event(messages: &[Message], queue_arn: &str, region: &str) -> String {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, Value> = m
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_string(), Value::String(v.clone())))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "messageId": m.message_id().unwrap_or_default(),
                "receiptHandle": m.receipt_handle().unwrap_or_default(),
                "body": m.body().unwrap_or_default(),
                "attributes": attributes,
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body().unwrap_or_default(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            })
        })
        .collect();
    json!({ "Records": records }).to_string()
}

/// The message ids of a batch that stay on the queue after `outcome`, as AWS documents for
/// SQS partial batch responses: the ones the answer names in `batchItemFailures`; none for an
/// empty or null answer or list; all of them when the invocation failed, or the answer is not
/// JSON, or it names an id that is empty, missing or not in the batch.
pub fn kept_ids(outcome: &Outcome, batch: &[String]) -> HashSet<String> {
    let all = || batch.iter().cloned().collect();
    let Outcome::Response(body) = outcome else {
        return all();
    };
    if body.trim().is_empty() {
        return HashSet::new();
    }
    let Ok(doc) = serde_json::from_str::<Value>(body) else {
        return all();
    };
    let items = match doc.get("batchItemFailures") {
        None | Some(Value::Null) => return HashSet::new(),
        Some(Value::Array(items)) => items,
        Some(_) => return all(),
    };
    let mut kept = HashSet::new();
    for item in items {
        match item.get("itemIdentifier").and_then(Value::as_str) {
            Some(id) if batch.iter().any(|b| b == id) => {
                kept.insert(id.to_string());
            }
            _ => return all(),
        }
    }
    kept
}

/// Runs the mapping over one queue until it stops (`--until-caught-up`: nothing visible or in
/// flight, and idle for `idle_before_stop`; or `max_duration`).
pub async fn run_queue(
    queue: &str,
    options: &RunOptions,
    progress: &(dyn Fn(&UnitStats) + Sync),
) -> Result<UnitStats, CliError> {
    let sdk = streamload_aws::sdk_config().await;
    let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = sqs
        .get_queue_url()
        .queue_name(queue)
        .send()
        .await
        .map_err(|e| CliError::aws(&format!("sqs GetQueueUrl {queue}"), &e))?
        .queue_url
        .unwrap_or_default();
    let arn = queue_attribute(&sqs, &url, QueueAttributeName::QueueArn).await?;
    let mut spec = options.function.clone();
    spec.log = spec.log.with_file_name(format!(
        "{}-{queue}.log",
        spec.log
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("function")
    ));
    let log_path = spec.log.clone();
    let mut sandbox = Sandbox::new(spec).await?;
    let mut stats = UnitStats {
        unit: queue.to_string(),
        ..UnitStats::default()
    };
    let settings = &options.settings;
    let batch_size = settings.batch_size.min(MAX_QUEUE_BATCH);
    let started = Instant::now();
    let mut last_message = Instant::now();
    let mut starts = FailedStarts::default();
    loop {
        if started.elapsed() > options.max_duration {
            stats.last_result = format!("stopped: --max-duration ({})", stats.last_result);
            stats.stopped_by_max_duration = true;
            break;
        }
        let batch = gather(&sqs, &url, batch_size, settings.batching_window).await?;
        if batch.is_empty() {
            stats.lag = backlog(&sqs, &url).await?;
            if options.until_caught_up
                && stats.lag == 0
                && last_message.elapsed() >= options.idle_before_stop
            {
                break;
            }
            progress(&stats);
            continue;
        }
        last_message = Instant::now();
        let ids: Vec<String> = batch
            .iter()
            .map(|m| m.message_id().unwrap_or_default().to_string())
            .collect();
        let kill = options
            .kill_mid_batch
            .filter(|(nth, _)| stats.invocations + 1 == *nth)
            .map(|(_, after)| after);
        let outcome = sandbox
            .invoke(
                sqs_event(&batch, &arn, &region),
                settings.function_timeout,
                kill,
            )
            .await;
        stats.invocations += 1;
        stats.sandboxes_started = sandbox.starts;
        starts.after(&outcome, kill.is_some(), queue, &log_path);
        let kept = kept_ids(&outcome, &ids);
        let done: Vec<&Message> = batch
            .iter()
            .filter(|m| !kept.contains(m.message_id().unwrap_or_default()))
            .collect();
        delete(&sqs, &url, &done).await?;
        stats.records_done += done.len() as u64;
        stats.last_result = match (&outcome, kept.len()) {
            (Outcome::Response(_), 0) => format!("ok ({})", ids.len()),
            (Outcome::Response(_), k) => {
                stats.partial_answers += 1;
                format!("partial: {k} of {} kept", ids.len())
            }
            (other, _) => {
                stats.failed_invocations += 1;
                format!("failed: {other:?}").chars().take(120).collect()
            }
        };
        progress(&stats);
        let wait = start_backoff(starts.in_a_row);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
    sandbox.kill().await;
    Ok(stats)
}

/// Receives up to `want` messages: until the batch is full, or `window` has passed since the
/// first one, or the queue had nothing for a second.
async fn gather(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    want: usize,
    window: Duration,
) -> Result<Vec<Message>, CliError> {
    let mut batch: Vec<Message> = Vec::new();
    let mut first: Option<Instant> = None;
    loop {
        let left = window.saturating_sub(first.map(|f| f.elapsed()).unwrap_or_default());
        if batch.len() >= want || (first.is_some() && left.is_zero()) {
            return Ok(batch);
        }
        let wait_seconds = if first.is_none() {
            1
        } else {
            i32::try_from(left.as_secs().min(1)).unwrap_or(1)
        };
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages((want - batch.len()).min(RECEIVE_MAX) as i32)
            .wait_time_seconds(wait_seconds)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| CliError::aws("sqs ReceiveMessage", &e))?
            .messages
            .unwrap_or_default();
        if got.is_empty() {
            if first.is_none() {
                return Ok(batch);
            }
            if wait_seconds == 0 {
                tokio::time::sleep(left.min(Duration::from_millis(100))).await;
            }
            continue;
        }
        first.get_or_insert_with(Instant::now);
        batch.extend(got);
    }
}

async fn delete(sqs: &aws_sdk_sqs::Client, url: &str, done: &[&Message]) -> Result<(), CliError> {
    for chunk in done.chunks(DELETE_BATCH_MAX) {
        let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(format!("d{i}"))
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()
                    .ok()
            })
            .collect();
        let answer = sqs
            .delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| CliError::aws("sqs DeleteMessageBatch", &e))?;
        // A delete that failed leaves the message to come back: delivered twice, as SQS may.
        if !answer.failed().is_empty() {
            eprintln!(
                "sqs DeleteMessageBatch: {} not deleted (they will be delivered again)",
                answer.failed().len()
            );
        }
    }
    Ok(())
}

/// Messages visible or in flight on the queue.
async fn backlog(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<u64, CliError> {
    let counts = [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
    ];
    let answer = sqs
        .get_queue_attributes()
        .queue_url(url)
        .set_attribute_names(Some(counts.to_vec()))
        .send()
        .await
        .map_err(|e| CliError::aws("sqs GetQueueAttributes", &e))?;
    let attributes = answer.attributes();
    Ok(counts
        .iter()
        .filter_map(|name| attributes.and_then(|a| a.get(name)))
        .map(|n| n.parse::<u64>().unwrap_or(0))
        .sum())
}

async fn queue_attribute(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    name: QueueAttributeName,
) -> Result<String, CliError> {
    let answer = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(name.clone())
        .send()
        .await
        .map_err(|e| CliError::aws("sqs GetQueueAttributes", &e))?;
    Ok(answer
        .attributes()
        .and_then(|a| a.get(&name))
        .cloned()
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Vec<String> {
        vec!["m-1".into(), "m-2".into(), "m-3".into()]
    }

    #[test]
    fn a_partial_answer_keeps_only_the_messages_it_names() {
        // Given a batch of three and an answer naming the second
        let outcome =
            Outcome::Response(r#"{"batchItemFailures":[{"itemIdentifier":"m-2"}]}"#.into());
        // Then only m-2 stays on the queue
        assert_eq!(kept_ids(&outcome, &batch()), HashSet::from(["m-2".into()]));
    }

    #[test]
    fn success_deletes_all_and_every_failure_keeps_all() {
        let all: HashSet<String> = batch().into_iter().collect();
        for ok in [
            r#"{"batchItemFailures":[]}"#,
            r#"{"batchItemFailures":null}"#,
            "null",
            "",
            "{}",
        ] {
            assert!(
                kept_ids(&Outcome::Response(ok.into()), &batch()).is_empty(),
                "{ok}"
            );
        }
        for failed in [
            Outcome::FunctionError("boom".into()),
            Outcome::Timeout,
            Outcome::Crashed("killed".into()),
            Outcome::InitError("{}".into()),
            // an id that is not in the batch, or no id: the whole batch failed
            Outcome::Response(r#"{"batchItemFailures":[{"itemIdentifier":"other"}]}"#.into()),
            Outcome::Response(r#"{"batchItemFailures":[{}]}"#.into()),
            Outcome::Response(r#"{"batchItemFailures":"m-1"}"#.into()),
            Outcome::Response(r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#.into()),
            Outcome::Response("not json".into()),
        ] {
            assert_eq!(kept_ids(&failed, &batch()), all, "{failed:?}");
        }
    }
}
