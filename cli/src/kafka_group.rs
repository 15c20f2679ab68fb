//! A Kafka consumer group's committed offsets, as an event-source mapping keeps them: the
//! mapping commits each partition's next offset to its group (`ConsumerGroupId`), and a new
//! mapping with the same group resumes there. rskafka has no group protocol, so the three
//! requests this needs are spoken here: FindCoordinator v0, OffsetFetch v1 and OffsetCommit
//! v2 (a "simple" commit: generation -1, no member), versions every broker since 0.10 and
//! tansu accept.

use std::collections::HashMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::CliError;

const FIND_COORDINATOR: i16 = 10;
const OFFSET_FETCH: i16 = 9;
const OFFSET_COMMIT: i16 = 8;

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A reader over a response body.
struct Body<'a>(&'a [u8]);

impl Body<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], CliError> {
        if self.0.len() < n {
            return Err(CliError::Kafka("truncated group response".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn i16(&mut self) -> Result<i16, CliError> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().unwrap_or([0; 2]),
        ))
    }
    fn i32(&mut self) -> Result<i32, CliError> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().unwrap_or([0; 4]),
        ))
    }
    fn i64(&mut self) -> Result<i64, CliError> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }
    fn string(&mut self) -> Result<String, CliError> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(String::new());
        }
        Ok(String::from_utf8_lossy(self.take(n as usize)?).into_owned())
    }
}

async fn call(addr: &str, api_key: i16, version: i16, body: &[u8]) -> Result<Vec<u8>, CliError> {
    let err = |e: std::io::Error| CliError::Kafka(format!("group request to {addr}: {e}"));
    let mut conn = TcpStream::connect(addr).await.map_err(err)?;
    let mut msg = Vec::with_capacity(body.len() + 16);
    msg.extend_from_slice(&api_key.to_be_bytes());
    msg.extend_from_slice(&version.to_be_bytes());
    msg.extend_from_slice(&1i32.to_be_bytes()); // correlation id
    string(&mut msg, "streamload");
    msg.extend_from_slice(body);
    conn.write_all(&(msg.len() as i32).to_be_bytes())
        .await
        .map_err(err)?;
    conn.write_all(&msg).await.map_err(err)?;
    let size = conn.read_i32().await.map_err(err)?;
    let mut response = vec![0; size.max(0) as usize];
    conn.read_exact(&mut response).await.map_err(err)?;
    // The correlation id, then the body.
    Ok(response.split_off(4.min(response.len())))
}

/// The committed offsets of one group, at its coordinator.
pub struct GroupOffsets {
    coordinator: String,
    group: String,
}

impl GroupOffsets {
    /// Finds the group's coordinator through `bootstrap`.
    pub async fn find(bootstrap: &str, group: &str) -> Result<Self, CliError> {
        let mut body = Vec::new();
        string(&mut body, group);
        let response = call(bootstrap, FIND_COORDINATOR, 0, &body).await?;
        let mut r = Body(&response);
        let error = r.i16()?;
        let _node = r.i32()?;
        let host = r.string()?;
        let port = r.i32()?;
        if error != 0 {
            return Err(CliError::Kafka(format!(
                "no coordinator for group {group:?} (error {error})"
            )));
        }
        Ok(Self {
            coordinator: format!("{host}:{port}"),
            group: group.to_owned(),
        })
    }

    /// Each partition's committed next offset (absent: none committed yet).
    pub async fn fetch(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, CliError> {
        let mut body = Vec::new();
        string(&mut body, &self.group);
        body.extend_from_slice(&1i32.to_be_bytes());
        string(&mut body, topic);
        body.extend_from_slice(&(partitions.len() as i32).to_be_bytes());
        for p in partitions {
            body.extend_from_slice(&p.to_be_bytes());
        }
        let response = call(&self.coordinator, OFFSET_FETCH, 1, &body).await?;
        let mut r = Body(&response);
        let mut offsets = HashMap::new();
        for _ in 0..r.i32()? {
            let _topic = r.string()?;
            for _ in 0..r.i32()? {
                let (partition, offset) = (r.i32()?, r.i64()?);
                let _metadata = r.string()?;
                let error = r.i16()?;
                if error == 0 && offset >= 0 {
                    offsets.insert(partition, offset);
                }
            }
        }
        Ok(offsets)
    }

    /// Commits `offset` (the next one to deliver) for `partition`.
    pub async fn commit(&self, topic: &str, partition: i32, offset: i64) -> Result<(), CliError> {
        let mut body = Vec::new();
        string(&mut body, &self.group);
        body.extend_from_slice(&(-1i32).to_be_bytes()); // generation: a simple commit
        string(&mut body, "");
        body.extend_from_slice(&(-1i64).to_be_bytes()); // retention: the broker's default
        body.extend_from_slice(&1i32.to_be_bytes());
        string(&mut body, topic);
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&partition.to_be_bytes());
        body.extend_from_slice(&offset.to_be_bytes());
        body.extend_from_slice(&(-1i16).to_be_bytes()); // no metadata
        let response = call(&self.coordinator, OFFSET_COMMIT, 2, &body).await?;
        let mut r = Body(&response);
        for _ in 0..r.i32()? {
            let _topic = r.string()?;
            for _ in 0..r.i32()? {
                let (_partition, error) = (r.i32()?, r.i16()?);
                if error != 0 {
                    return Err(CliError::Kafka(format!(
                        "commit {topic}-{partition}@{offset} for group {:?}: error {error}",
                        self.group
                    )));
                }
            }
        }
        Ok(())
    }
}
