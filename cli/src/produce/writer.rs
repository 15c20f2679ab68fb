//! Sending a run: one connected writer to the stream or topic, and the pace of `--rate`.

use std::time::{Duration, Instant};

use super::{
    pack_kpl, partition_of, send_kinesis, shard_hash_ranges, KinesisEntry, Outgoing,
    KINESIS_PUT_RECORDS_MAX,
};
use crate::{CliError, Target};

/// A connected writer to a stream or topic, made once and used for every send: the Kinesis
/// client, or one client per Kafka partition (a key picks its partition with
/// [`partition_of`], so one user's events stay in order).
pub enum StreamWriter {
    Kinesis {
        client: aws_sdk_kinesis::Client,
        stream: String,
        /// `--kpl`: the open shards' hash key ranges, to pack records per shard as the KPL
        /// does; `None` puts each record as it is.
        kpl_shards: Option<Vec<(u128, u128)>>,
    },
    Kafka {
        partitions: Vec<rskafka::client::partition::PartitionClient>,
    },
}

impl StreamWriter {
    /// `kpl`: pack Kinesis records into KPL aggregates (refused for Kafka).
    pub async fn connect(target: &Target, broker: &str, kpl: bool) -> Result<Self, CliError> {
        Ok(match target {
            Target::Kinesis(stream) => {
                let client = crate::kinesis_client().await.0;
                let kpl_shards = match kpl {
                    true => Some(shard_hash_ranges(&client, stream).await?),
                    false => None,
                };
                StreamWriter::Kinesis {
                    client,
                    stream: stream.clone(),
                    kpl_shards,
                }
            }
            Target::Kafka(_) if kpl => {
                return Err(CliError::Usage(
                    "--kpl: KPL aggregation is a Kinesis record format; a Kafka topic takes records as they are".into(),
                ))
            }
            Target::Kafka(topic) => {
                let client = crate::kafka_client(broker).await?;
                let mut partitions = Vec::new();
                for p in crate::kafka_partitions(&client, topic).await? {
                    partitions.push(crate::kafka_partition_client(&client, topic, p).await?);
                }
                StreamWriter::Kafka { partitions }
            }
        })
    }

    /// Sends `records`, in order per key; returns how many records the stream or topic took
    /// (with `--kpl`, the aggregates).
    pub async fn send(&self, records: &[Outgoing]) -> Result<usize, CliError> {
        match self {
            StreamWriter::Kinesis {
                client,
                stream,
                kpl_shards,
            } => {
                let entries: Vec<KinesisEntry> = match kpl_shards {
                    Some(shards) => pack_kpl(records, shards),
                    None => records.iter().map(KinesisEntry::from).collect(),
                };
                for part in entries.chunks(KINESIS_PUT_RECORDS_MAX) {
                    send_kinesis(client, stream, part).await?;
                }
                return Ok(entries.len());
            }
            StreamWriter::Kafka { partitions } => {
                let mut by_partition: Vec<Vec<rskafka::record::Record>> =
                    vec![Vec::new(); partitions.len()];
                for r in records {
                    by_partition[partition_of(&r.key, partitions.len())].push(
                        rskafka::record::Record {
                            key: Some(r.key.clone().into_bytes()),
                            // An empty record is sent as a tombstone (a null value).
                            value: (!r.bytes.is_empty()).then(|| r.bytes.clone()),
                            headers: Default::default(),
                            timestamp: chrono::Utc::now(),
                        },
                    );
                }
                for (pc, recs) in partitions.iter().zip(by_partition) {
                    if !recs.is_empty() {
                        pc.produce(recs, rskafka::client::partition::Compression::NoCompression)
                            .await
                            .map_err(|e| CliError::Kafka(format!("produce: {e}")))?;
                    }
                }
            }
        }
        Ok(records.len())
    }
}

/// Paces sending to `rate` records a second.
pub struct Pace {
    start: Instant,
    rate: Option<f64>,
}

impl Pace {
    pub fn new(rate: Option<f64>) -> Self {
        Self {
            start: Instant::now(),
            rate,
        }
    }

    pub async fn wait_for(&self, sent: u64) {
        if let Some(rate) = self.rate.filter(|r| *r > 0.0) {
            let due = Duration::from_secs_f64(sent as f64 / rate);
            let elapsed = self.start.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
    }
}
