//! Dead letters in SQS: one message per poison record.

use crate::error::classify_sdk_error;
use aws_sdk_sqs::Client;
use streamload_core::error::PortError;
use streamload_core::ports::DeadLetters;

/// Largest SQS message body streamload sends inline: 256 KiB, the limit every SQS endpoint
/// and emulator accepts (AWS raised its own to 1 MiB in 2025). Larger records keep their
/// bytes in S3 and the message carries the key.
pub const SQS_MAX_MESSAGE_BYTES: usize = 256 * 1024;

#[derive(Clone)]
pub struct SqsDeadLetters {
    client: Client,
    queue_url: String,
}

impl SqsDeadLetters {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

impl DeadLetters for SqsDeadLetters {
    async fn send(&self, body: String) -> Result<(), PortError> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify_sdk_error("sqs SendMessage", &e))
    }

    fn max_body_bytes(&self) -> usize {
        SQS_MAX_MESSAGE_BYTES
    }
}
