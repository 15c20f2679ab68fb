//! Pure Parquet encoding of mapped records: typed values in, Parquet bytes out, by the
//! route's schema and writer properties (built once, see [`crate::route`]). The I/O that
//! stores the bytes lives in the S3 adapter.

use crate::route::{value::uuid_text, ColumnType, Route, Value};
use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use parquet::arrow::ArrowWriter;
use std::sync::Arc;

/// One row of a Parquet object: the mapped values and where the record came from.
#[derive(Debug, Clone, Copy)]
pub struct ParquetRow<'a> {
    /// One value per route column.
    pub values: &'a [Value],
    /// `stream/shard` or `topic/partition`.
    pub source_unit: &'a str,
    /// Sequence number or offset.
    pub source_position: &'a str,
    /// Kinesis partition key or Kafka key (base64).
    pub source_key: Option<&'a str>,
    /// Kafka headers as JSON text.
    pub source_headers: Option<&'a str>,
}

/// One line of a lake-less route's commit marker: which record it proves loaded, and the
/// claim key of its event (what `streamload verify` counts). No value of the event beyond its
/// identity, which the claim key already holds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct MarkerLine<'a> {
    pub source_unit: &'a str,
    pub source_position: &'a str,
    pub claim_key: &'a str,
}

/// A commit marker's body: one JSON object per line, in the order given.
///
/// ```
/// use streamload_core::encode::{encode_markers, MarkerLine};
/// let body = encode_markers(&[MarkerLine {
///     source_unit: "orders/shardId-0", source_position: "7", claim_key: "rt:orders:o-1",
/// }]);
/// assert_eq!(
///     String::from_utf8(body).unwrap(),
///     "{\"source_unit\":\"orders/shardId-0\",\"source_position\":\"7\",\"claim_key\":\"rt:orders:o-1\"}\n"
/// );
/// ```
pub fn encode_markers(lines: &[MarkerLine<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.len() * 96);
    for line in lines {
        // Serialising three strings into a Vec cannot fail.
        if serde_json::to_writer(&mut out, line).is_ok() {
            out.push(b'\n');
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("column {0:?} got a value of another type")]
    Mismatch(String),
}

impl crate::Classify for EncodeError {
    fn class(&self) -> crate::ErrorClass {
        crate::ErrorClass::Permanent
    }
}

/// Encodes `rows` of `route` as one zstd-compressed Parquet file.
///
/// ```
/// use streamload_core::encode::{encode_parquet, ParquetRow};
/// use streamload_core::route::{Routes, Value};
/// let routes = Routes::builtin("events", "events/").unwrap();
/// let values = [
///     Value::Text("e1".into()), Value::Text("u1".into()), Value::Text("click".into()),
///     Value::Null, Value::Timestamp(1_700_000_000_000_000), Value::Null, Value::Null,
/// ];
/// let row = ParquetRow { values: &values, source_unit: "s/shard-0", source_position: "1",
///                        source_key: None, source_headers: None };
/// let bytes = encode_parquet(routes.get(0), &[row], 1_700_000_001_000_000).unwrap();
/// assert_eq!(&bytes[..4], b"PAR1");
/// ```
pub fn encode_parquet(
    route: &Route,
    rows: &[ParquetRow<'_>],
    ingested_at_us: i64,
) -> Result<Vec<u8>, EncodeError> {
    let n = rows.len();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(route.columns.len() + 5);
    let mismatch = |i: usize| EncodeError::Mismatch(route.columns[i].name.clone());
    for (i, c) in route.columns.iter().enumerate() {
        let values = rows.iter().map(|r| &r.values[i]);
        let array: ArrayRef = match c.ty {
            ColumnType::Text | ColumnType::Jsonb => {
                let bytes = rows.iter().map(|r| text_len(&r.values[i])).sum();
                let mut b = StringBuilder::with_capacity(n, bytes);
                for v in values {
                    match v {
                        Value::Text(t) | Value::Json(t) => b.append_value(t),
                        Value::Null => b.append_null(),
                        _ => return Err(mismatch(i)),
                    }
                }
                Arc::new(b.finish())
            }
            ColumnType::Uuid => {
                let mut b = StringBuilder::with_capacity(n, n * 36);
                for v in values {
                    match v {
                        Value::Uuid(u) => b.append_value(uuid_text(u)),
                        Value::Null => b.append_null(),
                        _ => return Err(mismatch(i)),
                    }
                }
                Arc::new(b.finish())
            }
            ColumnType::Numeric {
                precision: Some(p),
                scale,
            } => {
                let mut b = Decimal128Builder::with_capacity(n)
                    .with_precision_and_scale(p, scale.unwrap_or(0) as i8)?;
                for v in values {
                    match v {
                        Value::Numeric {
                            unscaled: Some(u), ..
                        } => b.append_value(*u),
                        Value::Null => b.append_null(),
                        _ => return Err(mismatch(i)),
                    }
                }
                Arc::new(b.finish())
            }
            ColumnType::Numeric { .. } => {
                let mut b = StringBuilder::with_capacity(n, n * 8);
                for v in values {
                    match v {
                        Value::Numeric { text, .. } => b.append_value(text),
                        Value::Null => b.append_null(),
                        _ => return Err(mismatch(i)),
                    }
                }
                Arc::new(b.finish())
            }
            ColumnType::Integer => {
                let mut b = Int32Builder::with_capacity(n);
                for v in values {
                    match v {
                        Value::Int(x) => {
                            b.append_value(i32::try_from(*x).map_err(|_| mismatch(i))?)
                        }
                        Value::Null => b.append_null(),
                        _ => return Err(mismatch(i)),
                    }
                }
                Arc::new(b.finish())
            }
            ColumnType::Bigint => {
                let mut b = Int64Builder::with_capacity(n);
                for v in values {
                    match v {
                        Value::Int(x) => b.append_value(*x),
                        Value::Null => b.append_null(),
                        _ => return Err(mismatch(i)),
                    }
                }
                Arc::new(b.finish())
            }
            ColumnType::Double => {
                let mut b = Float64Builder::with_capacity(n);
                for v in values {
                    match v {
                        Value::Double(x) => b.append_value(*x),
                        Value::Null => b.append_null(),
                        _ => return Err(mismatch(i)),
                    }
                }
                Arc::new(b.finish())
            }
            ColumnType::Boolean => {
                let mut b = BooleanBuilder::with_capacity(n);
                for v in values {
                    match v {
                        Value::Bool(x) => b.append_value(*x),
                        Value::Null => b.append_null(),
                        _ => return Err(mismatch(i)),
                    }
                }
                Arc::new(b.finish())
            }
            ColumnType::Timestamptz { .. } => {
                let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
                for v in values {
                    match v {
                        Value::Timestamp(x) => b.append_value(*x),
                        Value::Null => b.append_null(),
                        _ => return Err(mismatch(i)),
                    }
                }
                Arc::new(b.finish())
            }
            ColumnType::Date => {
                let mut b = Date32Builder::with_capacity(n);
                for v in values {
                    match v {
                        Value::Date(x) => b.append_value(*x),
                        Value::Null => b.append_null(),
                        _ => return Err(mismatch(i)),
                    }
                }
                Arc::new(b.finish())
            }
        };
        columns.push(array);
    }

    let text_bytes = |f: fn(&ParquetRow<'_>) -> usize| rows.iter().map(f).sum::<usize>();
    let mut source_unit = StringBuilder::with_capacity(n, text_bytes(|r| r.source_unit.len()));
    let mut source_position =
        StringBuilder::with_capacity(n, text_bytes(|r| r.source_position.len()));
    let mut source_key = StringBuilder::new();
    let mut source_headers = StringBuilder::new();
    let mut ingested_at = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    for r in rows {
        source_unit.append_value(r.source_unit);
        source_position.append_value(r.source_position);
        source_key.append_option(r.source_key);
        source_headers.append_option(r.source_headers);
        ingested_at.append_value(ingested_at_us);
    }
    columns.push(Arc::new(source_unit.finish()));
    columns.push(Arc::new(source_position.finish()));
    columns.push(Arc::new(source_key.finish()));
    columns.push(Arc::new(source_headers.finish()));
    columns.push(Arc::new(ingested_at.finish()));

    let schema = route.lake_schema().clone();
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let raw: usize = rows
        .iter()
        .map(|r| r.values.iter().map(text_len).sum::<usize>() + 64)
        .sum();
    let small = raw < crate::route::SMALL_OBJECT_BYTES;
    let mut out = Vec::with_capacity(if small { raw } else { raw / 3 });
    let properties = route.lake_properties(raw).clone();
    let mut writer = ArrowWriter::try_new(&mut out, schema, Some(properties))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(out)
}

fn text_len(v: &Value) -> usize {
    match v {
        Value::Text(t) | Value::Json(t) => t.len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Routes;
    use bytes::Bytes;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn values(id: &str) -> Vec<Value> {
        vec![
            Value::Text(id.into()),
            Value::Text("u".into()),
            Value::Text("t".into()),
            Value::Json(r#"{"k":"ü"}"#.into()),
            Value::Timestamp(1_700_000_000_000_000),
            Value::Null,
            Value::Text("2".into()),
        ]
    }

    /// One lake row per value list, from one position of one shard.
    fn rows_of<'a>(all: &'a [Vec<Value>], key: Option<&'a str>) -> Vec<ParquetRow<'a>> {
        all.iter()
            .map(|v| ParquetRow {
                values: v,
                source_unit: "s/shard-1",
                source_position: "42",
                source_key: key,
                source_headers: None,
            })
            .collect()
    }

    fn compression_of(rows: usize, payload: &str) -> Compression {
        let routes = Routes::builtin("events", "events/").unwrap();
        let all: Vec<Vec<Value>> = (0..rows)
            .map(|i| {
                let mut v = values(&format!("e{i}"));
                v[3] = Value::Json(payload.into());
                v
            })
            .collect();
        let bytes = encode_parquet(routes.get(0), &rows_of(&all, None), 1).unwrap();
        let reader = SerializedFileReader::new(Bytes::from(bytes)).unwrap();
        let meta = reader.metadata();
        assert_eq!(meta.file_metadata().num_rows(), all.len() as i64);
        meta.row_group(0).column(3).compression()
    }

    #[test]
    fn a_small_object_is_written_uncompressed_and_a_large_one_with_zstd() {
        // Given one route's events whose values add up to under and over SMALL_OBJECT_BYTES
        let payload = format!(r#"{{"p":"{}"}}"#, "x".repeat(200));
        // When each set is encoded as an object
        // Then the small one skips zstd's per-column contexts, the large one is zstd level 1
        assert_eq!(compression_of(10, &payload), Compression::UNCOMPRESSED);
        assert_eq!(
            compression_of(200, &payload),
            Compression::ZSTD(ZstdLevel::try_new(1).unwrap())
        );
    }

    #[test]
    fn the_builtin_route_keeps_the_first_release_columns() {
        // Given three events of the built-in route
        let routes = Routes::builtin("events", "events/").unwrap();
        let all = [values("a"), values("b"), values("c")];
        // When they are encoded
        let rows = rows_of(&all, Some("pk"));
        let bytes = encode_parquet(routes.get(0), &rows, 1_700_000_001_000_000).unwrap();
        // Then the file holds three rows in the twelve columns of the first release
        let reader = SerializedFileReader::new(Bytes::from(bytes)).unwrap();
        let meta = reader.metadata();
        assert_eq!(meta.file_metadata().num_rows(), 3);
        let names: Vec<&str> = meta
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .map(|c| c.name())
            .collect();
        assert_eq!(
            names,
            [
                "event_id",
                "user_id",
                "event_type",
                "payload",
                "created_at",
                "source",
                "version",
                "source_unit",
                "source_position",
                "source_key",
                "source_headers",
                "ingested_at"
            ]
        );
    }
}
