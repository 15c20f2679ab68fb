//! KPL aggregation: many user records packed into one Kinesis record.
//!
//! Why this exists: the Kinesis Producer Library and AWS's aggregation libraries put many user
//! records in one Kinesis record, and the event-source mapping delivers that record as it is
//! (Lambda does not de-aggregate). Without this module every aggregate is poison and a KPL
//! producer loses everything to the dead-letter queue.
//!
//! The format (AWS's `KPL-Aggregation.md`): the magic bytes `F3 89 9A C2`, a protobuf
//! `AggregatedRecord`, and the MD5 digest of that protobuf (16 bytes):
//!
//! ```text
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;
//! }
//! ```
//!
//! The protobuf is read here by hand (a few dozen lines: varints and length-delimited fields)
//! rather than through a protobuf crate, so the loaders' binaries do not grow for it. A user
//! record's data is returned as a range of the aggregate: the pipeline slices the batch's one
//! buffer, no copy.
//!
//! ```
//! use streamload_core::kpl::{deaggregate, Aggregate};
//! // Not an aggregate: a plain record is left alone, at the cost of a 4-byte comparison.
//! assert!(matches!(deaggregate(br#"{"event_id":"e1"}"#), Aggregate::Plain));
//! ```

use md5::{Digest, Md5};
use std::ops::Range;

/// The four bytes every aggregated record starts with.
pub const KPL_MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
/// Length of the MD5 digest that ends every aggregated record.
const DIGEST_LEN: usize = 16;

/// One user record of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The partition key the producer gave this user record (from the aggregate's table).
    pub partition_key: String,
    /// Where its data lies in the aggregated record's bytes.
    pub data: Range<usize>,
}

/// What a Kinesis record's data turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Aggregate {
    /// Not an aggregate (no magic bytes): one record, as delivered.
    Plain,
    /// An aggregate and its user records, in order (the order gives the sub-sequence numbers).
    Records(Vec<UserRecord>),
    /// It starts with the magic bytes but cannot be read: poison as a whole, with the reason.
    Corrupt(String),
}

/// Reads a Kinesis record's data as a KPL aggregate, if it is one.
pub fn deaggregate(data: &[u8]) -> Aggregate {
    if !data.starts_with(&KPL_MAGIC) {
        return Aggregate::Plain;
    }
    if data.len() < KPL_MAGIC.len() + DIGEST_LEN {
        return Aggregate::Corrupt("KPL aggregate shorter than its magic bytes and digest".into());
    }
    let body = KPL_MAGIC.len()..data.len() - DIGEST_LEN;
    let digest = Md5::digest(&data[body.clone()]);
    if digest.as_slice() != &data[body.end..] {
        return Aggregate::Corrupt("KPL aggregate whose MD5 digest does not match".into());
    }
    match parse_aggregate(data, body) {
        Ok(records) => Aggregate::Records(records),
        Err(reason) => Aggregate::Corrupt(format!("KPL aggregate: {reason}")),
    }
}

/// The protobuf `AggregatedRecord` at `body` of `data`.
fn parse_aggregate(data: &[u8], body: Range<usize>) -> Result<Vec<UserRecord>, String> {
    let mut keys: Vec<String> = Vec::new();
    // (partition key index, data range), resolved once the key table is complete: protobuf
    // does not promise the table comes first.
    let mut records: Vec<(u64, Range<usize>)> = Vec::new();
    let mut r = Reader {
        data,
        at: body.start,
        end: body.end,
    };
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, Value::Bytes(span)) => keys.push(
                std::str::from_utf8(&data[span])
                    .map_err(|_| "a partition key that is not UTF-8")?
                    .to_owned(),
            ),
            (3, Value::Bytes(span)) => records.push(parse_record(data, span)?),
            // The explicit hash key table and unknown fields are skipped, as protobuf does.
            (_, _) => {}
        }
    }
    if records.is_empty() {
        return Err("no user records".into());
    }
    records
        .into_iter()
        .enumerate()
        .map(|(n, (index, data))| {
            let partition_key = usize::try_from(index)
                .ok()
                .and_then(|i| keys.get(i))
                .ok_or_else(|| {
                    format!(
                        "user record {n} names partition key {index} of a table of {}",
                        keys.len()
                    )
                })?
                .clone();
            Ok(UserRecord {
                partition_key,
                data,
            })
        })
        .collect()
}

/// One protobuf `Record` at `span`: its partition key index and where its data lies.
fn parse_record(data: &[u8], span: Range<usize>) -> Result<(u64, Range<usize>), String> {
    let mut r = Reader {
        data,
        at: span.start,
        end: span.end,
    };
    let (mut key, mut bytes) = (None, None);
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, Value::Varint(v)) => key = Some(v),
            (3, Value::Bytes(span)) => bytes = Some(span),
            (_, _) => {}
        }
    }
    match (key, bytes) {
        (Some(k), Some(b)) => Ok((k, b)),
        (None, _) => Err("a user record without its partition key index".into()),
        (_, None) => Err("a user record without data".into()),
    }
}

/// Packs user records `(partition key, data)` into one aggregated record, as the KPL does:
/// the magic bytes, the protobuf (each distinct partition key once in the table, in order of
/// first use) and its MD5 digest. For producers (`streamload produce --kpl`) and tests; the
/// Kinesis record's own partition key is the caller's choice (the KPL uses the first user
/// record's).
///
/// ```
/// use streamload_core::kpl::{aggregate, deaggregate, Aggregate};
/// let packed = aggregate(&[("k1", b"one"), ("k2", b"two")]);
/// let Aggregate::Records(users) = deaggregate(&packed) else { panic!() };
/// assert_eq!((users[1].partition_key.as_str(), &packed[users[1].data.clone()]), ("k2", &b"two"[..]));
/// ```
pub fn aggregate(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut keys: Vec<&str> = Vec::new();
    let mut body = Vec::new();
    let mut entries = Vec::new();
    for (key, data) in records {
        let index = match keys.iter().position(|k| k == key) {
            Some(i) => i,
            None => {
                keys.push(key);
                keys.len() - 1
            }
        };
        entries.push((index as u64, *data));
    }
    for k in &keys {
        bytes_field(&mut body, 1, k.as_bytes());
    }
    for (index, data) in entries {
        let mut r = Vec::with_capacity(data.len() + 12);
        put_varint(&mut r, 1 << 3);
        put_varint(&mut r, index);
        bytes_field(&mut r, 3, data);
        bytes_field(&mut body, 3, &r);
    }
    let mut out = Vec::with_capacity(KPL_MAGIC.len() + body.len() + DIGEST_LEN);
    out.extend_from_slice(&KPL_MAGIC);
    out.extend_from_slice(&body);
    out.extend_from_slice(&Md5::digest(&body));
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

enum Value {
    Varint(u64),
    Bytes(Range<usize>),
    Other,
}

/// A protobuf reader over `data[at..end]`.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
    end: usize,
}

impl Reader<'_> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .data
                .get(self.at)
                .filter(|_| self.at < self.end)
                .ok_or("a varint cut short")?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint longer than 64 bits".into())
    }

    fn skip(&mut self, n: u64) -> Result<Range<usize>, String> {
        let n = usize::try_from(n).map_err(|_| "a field longer than the record")?;
        let start = self.at;
        let end = start
            .checked_add(n)
            .filter(|&e| e <= self.end)
            .ok_or("a field longer than the record")?;
        self.at = end;
        Ok(start..end)
    }

    /// The next field's number and value, or `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Value)>, String> {
        if self.at >= self.end {
            return Ok(None);
        }
        let tag = self.varint()?;
        let value = match tag & 7 {
            0 => Value::Varint(self.varint()?),
            1 => self.skip(8).map(|_| Value::Other)?,
            2 => {
                let len = self.varint()?;
                Value::Bytes(self.skip(len)?)
            }
            5 => self.skip(4).map(|_| Value::Other)?,
            wire => return Err(format!("protobuf wire type {wire} is not allowed here")),
        };
        Ok(Some((tag >> 3, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An aggregate of `(partition key index, data)` over `keys`, indices as given (even out of
    /// the table's range).
    fn aggregate_indexed(keys: &[&str], records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for k in keys {
            bytes_field(&mut body, 1, k.as_bytes());
        }
        for (index, data) in records {
            let mut r = Vec::new();
            put_varint(&mut r, 1 << 3);
            put_varint(&mut r, *index);
            bytes_field(&mut r, 3, data);
            bytes_field(&mut body, 3, &r);
        }
        let mut out = KPL_MAGIC.to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(&Md5::digest(&body));
        out
    }

    #[test]
    fn an_aggregate_gives_its_user_records_in_order_with_their_keys() {
        // Given an aggregate of three user records over two partition keys
        let agg = aggregate(&[("k1", b"one"), ("k2", b"two"), ("k1", b"three")]);
        // When it is read
        let Aggregate::Records(records) = deaggregate(&agg) else {
            panic!("not read as an aggregate")
        };
        // Then each user record has its key and its own bytes, in order
        let got: Vec<(&str, &[u8])> = records
            .iter()
            .map(|r| (r.partition_key.as_str(), &agg[r.data.clone()]))
            .collect();
        assert_eq!(
            got,
            [
                ("k1", &b"one"[..]),
                ("k2", &b"two"[..]),
                ("k1", &b"three"[..])
            ]
        );
    }

    #[test]
    fn a_corrupt_aggregate_is_refused_with_its_reason() {
        // Given aggregates damaged in each way the format can be
        let good = aggregate(&[("k", b"x")]);
        let mut bad_digest = good.clone();
        let last = bad_digest.len() - 1;
        bad_digest[last] ^= 1;
        let out_of_range = aggregate_indexed(&["k"], &[(0, b"x"), (3, b"y")]);
        let mut cut = KPL_MAGIC.to_vec();
        let body = [0x0a, 0x05, b'k'];
        cut.extend_from_slice(&body);
        cut.extend_from_slice(&Md5::digest(body));
        // Then each is corrupt, with a reason that says what is wrong
        let reason = |data: &[u8]| match deaggregate(data) {
            Aggregate::Corrupt(r) => r,
            other => panic!("{other:?}"),
        };
        assert!(reason(&bad_digest).contains("MD5"));
        assert!(reason(&out_of_range).contains("partition key 3 of a table of 1"));
        assert!(reason(&cut).contains("longer than the record"));
        assert!(reason(&KPL_MAGIC).contains("shorter"));
        // And plain data is not touched
        assert_eq!(deaggregate(b"{}"), Aggregate::Plain);
    }
}
