//! Dead letters in SQS: one message per poison record.
//!
//! A standard queue delivers at least once, and a send whose answer was lost (retried by the
//! SDK, or by a redelivered batch) can queue the same dead letter twice; each message carries
//! `dedup_id` for consumers. A FIFO queue (its URL ends in `.fifo`) gets `MessageGroupId` and
//! `MessageDeduplicationId = dedup_id`, so SQS itself drops a resend within its 5-minute
//! deduplication interval (without them a FIFO queue refuses every message).

use crate::error::classify_sdk_error;
use aws_sdk_sqs::Client;
use streamload_core::error::PortError;
use streamload_core::ports::DeadLetters;

/// Largest SQS message body streamload sends inline: 256 KiB, the limit every SQS endpoint
/// and emulator accepts (AWS raised its own to 1 MiB in 2025). Larger records keep their
/// bytes in S3 and the message carries the key.
pub const SQS_MAX_MESSAGE_BYTES: usize = 256 * 1024;

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

impl DeadLetters for SqsDeadLetters {
    async fn send(&self, body: String, dedup_id: &str) -> Result<(), PortError> {
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body);
        if self.fifo {
            request = request
                .message_group_id(FIFO_GROUP)
                .message_deduplication_id(dedup_id);
        }
        request
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify_sdk_error("sqs SendMessage", &e))
    }

    fn max_body_bytes(&self) -> usize {
        SQS_MAX_MESSAGE_BYTES
    }
}
