//! Kafka for `produce`: creating the topic (through the broker, or tansu's own tool) and the
//! stable hash that keeps one key in one partition.

use crate::CliError;

/// Creates the topic through the broker's CreateTopics API, or its own tool (tansu) when
/// STREAMLOAD_TANSU names it and the API is refused.
pub async fn create_kafka(
    client: &rskafka::client::Client,
    broker: &str,
    topic: &str,
    partitions: u32,
) -> Result<(), CliError> {
    if crate::kafka_partitions(client, topic).await.is_ok() {
        return Ok(());
    }
    let controller = client
        .controller_client()
        .map_err(|e| CliError::Kafka(format!("controller: {e}")));
    let created = match controller {
        Ok(c) => c
            .create_topic(topic, partitions as i32, 1, 5_000)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(why) = created {
        let Ok(tansu) = std::env::var("STREAMLOAD_TANSU") else {
            return Err(CliError::Kafka(format!("create topic {topic}: {why}")));
        };
        let out = tokio::process::Command::new(tansu)
            .args([
                "topic",
                "create",
                topic,
                "--broker",
                &format!("tcp://{broker}"),
                "--partitions",
                &partitions.to_string(),
            ])
            .output()
            .await?;
        if !out.status.success() {
            return Err(CliError::Kafka(format!(
                "create topic {topic}: {why}; tansu: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(())
}

/// The partition of `key` among `n` (a stable hash, so one user stays in order).
pub fn partition_of(key: &str, n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % n.max(1) as u64) as usize
}
