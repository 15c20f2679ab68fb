//! Dead letters in SQS: one message per poison record, sent up to ten per request.
//!
//! A standard queue delivers at least once, and a send whose answer was lost (retried by the
//! SDK, or by a redelivered batch) can queue the same dead letter twice; each message carries
//! `dedup_id` for consumers. A FIFO queue (its URL ends in `.fifo`) gets `MessageGroupId` and
//! `MessageDeduplicationId = dedup_id`, so SQS itself drops a resend within its 5-minute
//! deduplication interval (without them a FIFO queue refuses every message).

use crate::error::classify_sdk_error;
use aws_config::retry::RetryConfig;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use aws_sdk_sqs::Client;
use streamload_core::error::PortError;
use streamload_core::ports::{DeadLetters, Letter, LetterResult};

/// Largest SQS message body streamload sends inline: 256 KiB, the limit every SQS endpoint
/// and emulator accepts (AWS raised its own to 1 MiB in 2025). Larger records keep their
/// bytes in S3 and the message carries the key.
pub const SQS_MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Most entries one `SendMessageBatch` request may carry (an SQS limit; the entries' bodies
/// together must also fit [`SQS_MAX_MESSAGE_BYTES`]).
pub const SQS_MAX_BATCH_ENTRIES: usize = 10;

/// The message group of every dead letter on a FIFO queue: dead letters need no order among
/// themselves, and one group keeps the queue's throughput rules simple.
const FIFO_GROUP: &str = "streamload-dead-letters";

#[derive(Clone)]
pub struct SqsDeadLetters {
    client: Client,
    queue_url: String,
    fifo: bool,
}

impl SqsDeadLetters {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        let queue_url = queue_url.into();
        Self {
            client,
            fifo: queue_url.ends_with(".fifo"),
            queue_url,
        }
    }
}

/// The letter an answer's entry id names: its index among `len` letters.
fn entry_index(id: &str, len: usize) -> Option<usize> {
    id.parse().ok().filter(|&n| n < len)
}

impl DeadLetters for SqsDeadLetters {
    async fn send_batch(&self, letters: &[Letter]) -> Result<Vec<LetterResult>, PortError> {
        let mut request = self.client.send_message_batch().queue_url(&self.queue_url);
        for (n, letter) in letters.iter().enumerate() {
            let mut entry = SendMessageBatchRequestEntry::builder()
                .id(n.to_string())
                .message_body(&letter.body);
            if self.fifo {
                entry = entry
                    .message_group_id(FIFO_GROUP)
                    .message_deduplication_id(&letter.dedup_id);
            }
            let entry = entry
                .build()
                .map_err(|e| PortError::permanent(format!("sqs SendMessageBatch entry: {e}")))?;
            request = request.entries(entry);
        }
        // One attempt: the SDK would resend a batch whose answer was lost (a timeout, a 5xx)
        // up to four times, each copy queued again; the pipeline decides what is resent, and
        // resends a letter of unknown outcome at most once per invocation.
        let answer = request
            .customize()
            .config_override(
                aws_sdk_sqs::config::Builder::default().retry_config(RetryConfig::disabled()),
            )
            .send()
            .await
            .map_err(|e| classify_sdk_error("sqs SendMessageBatch", &e))?;
        // Each letter's entry id is its index; an id the answer names neither sent nor failed
        // is of unknown outcome.
        let mut results: Vec<LetterResult> = letters
            .iter()
            .map(|_| {
                Err(PortError::ambiguous(
                    "sqs SendMessageBatch: no answer for the letter",
                ))
            })
            .collect();
        for sent in answer.successful() {
            if let Some(n) = entry_index(sent.id(), letters.len()) {
                results[n] = Ok(());
            }
        }
        for failed in answer.failed() {
            if let Some(n) = entry_index(failed.id(), letters.len()) {
                let message = format!("sqs SendMessageBatch: {}", failed.code());
                // SQS marks the errors the request itself caused; the others are its own.
                results[n] = Err(if failed.sender_fault() {
                    PortError::permanent(message)
                } else {
                    PortError::retryable(message)
                });
            }
        }
        Ok(results)
    }

    fn max_body_bytes(&self) -> usize {
        SQS_MAX_MESSAGE_BYTES
    }

    fn max_batch_len(&self) -> usize {
        SQS_MAX_BATCH_ENTRIES
    }
}
