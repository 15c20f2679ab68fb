//! Pure Parquet encoding of loaded events: Arrow arrays in, Parquet bytes out. The I/O that
//! stores the bytes lives in the S3 adapter.

use crate::event::Event;
use arrow_array::builder::{StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use std::sync::{Arc, OnceLock};

/// zstd level 1: most of the size win of higher levels at several times the speed, which is
/// what a per-batch Lambda cares about.
const ZSTD_LEVEL: i32 = 1;

/// One row of a Parquet object: the event and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct ParquetRow<'a> {
    pub event: &'a Event,
    /// `stream/shard` or `topic/partition`.
    pub source_unit: &'a str,
    /// Sequence number or offset.
    pub source_position: &'a str,
    /// Kinesis partition key or Kafka key (base64).
    pub source_key: Option<&'a str>,
    /// Kafka headers as JSON text.
    pub source_headers: Option<&'a str>,
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

impl crate::Classify for EncodeError {
    fn class(&self) -> crate::ErrorClass {
        crate::ErrorClass::Permanent
    }
}

/// The columns of every Parquet object streamload writes.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
            Arc::new(Schema::new(vec![
                Field::new("event_id", DataType::Utf8, false),
                Field::new("user_id", DataType::Utf8, false),
                Field::new("event_type", DataType::Utf8, false),
                Field::new("payload", DataType::Utf8, true),
                Field::new("created_at", ts.clone(), false),
                Field::new("source", DataType::Utf8, true),
                Field::new("version", DataType::Utf8, true),
                Field::new("source_unit", DataType::Utf8, false),
                Field::new("source_position", DataType::Utf8, false),
                Field::new("source_key", DataType::Utf8, true),
                Field::new("source_headers", DataType::Utf8, true),
                Field::new("ingested_at", ts, false),
            ]))
        })
        .clone()
}

/// Encodes `rows` as one zstd-compressed Parquet file.
pub fn encode_parquet(
    rows: &[ParquetRow<'_>],
    ingested_at_us: i64,
) -> Result<Vec<u8>, EncodeError> {
    let n = rows.len();
    let text_bytes = |f: fn(&ParquetRow<'_>) -> usize| rows.iter().map(f).sum::<usize>();
    let mut event_id = StringBuilder::with_capacity(n, text_bytes(|r| r.event.event_id.len()));
    let mut user_id = StringBuilder::with_capacity(n, text_bytes(|r| r.event.user_id.len()));
    let mut event_type = StringBuilder::with_capacity(n, text_bytes(|r| r.event.event_type.len()));
    let mut payload = StringBuilder::with_capacity(
        n,
        text_bytes(|r| r.event.payload.as_ref().map_or(0, |p| p.len())),
    );
    let mut created_at = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut source = StringBuilder::new();
    let mut version = StringBuilder::new();
    let mut source_unit = StringBuilder::with_capacity(n, text_bytes(|r| r.source_unit.len()));
    let mut source_position =
        StringBuilder::with_capacity(n, text_bytes(|r| r.source_position.len()));
    let mut source_key = StringBuilder::new();
    let mut source_headers = StringBuilder::new();
    let mut ingested_at = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");

    for r in rows {
        event_id.append_value(&r.event.event_id);
        user_id.append_value(&r.event.user_id);
        event_type.append_value(&r.event.event_type);
        payload.append_option(r.event.payload.as_deref());
        created_at.append_value(r.event.created_at_us);
        source.append_option(r.event.source.as_deref());
        version.append_option(r.event.version.as_deref());
        source_unit.append_value(r.source_unit);
        source_position.append_value(r.source_position);
        source_key.append_option(r.source_key);
        source_headers.append_option(r.source_headers);
        ingested_at.append_value(ingested_at_us);
    }

    let columns: Vec<ArrayRef> = vec![
        Arc::new(event_id.finish()),
        Arc::new(user_id.finish()),
        Arc::new(event_type.finish()),
        Arc::new(payload.finish()),
        Arc::new(created_at.finish()),
        Arc::new(source.finish()),
        Arc::new(version.finish()),
        Arc::new(source_unit.finish()),
        Arc::new(source_position.finish()),
        Arc::new(source_key.finish()),
        Arc::new(source_headers.finish()),
        Arc::new(ingested_at.finish()),
    ];
    let batch = RecordBatch::try_new(schema(), columns)?;
    let mut out =
        Vec::with_capacity(text_bytes(|r| r.event.payload.as_ref().map_or(64, |p| p.len())) / 3);
    let mut writer = ArrowWriter::try_new(&mut out, schema(), Some(writer_properties()?))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(out)
}

/// Dictionary encoding only where values repeat (users, types, sources, the unit); unique
/// columns skip the dictionary attempt. Min/max statistics only on columns a query filters
/// on (ids, types, times, source); payload, headers, key and position (decimal text, whose
/// text order is not numeric order) skip the comparison pass.
fn writer_properties() -> Result<WriterProperties, EncodeError> {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
        .set_dictionary_enabled(false);
    for repeated in ["user_id", "event_type", "source", "version", "source_unit"] {
        b = b.set_column_dictionary_enabled(ColumnPath::from(repeated), true);
    }
    for unfiltered in ["payload", "source_headers", "source_key", "source_position"] {
        b = b.set_column_statistics_enabled(ColumnPath::from(unfiltered), EnabledStatistics::None);
    }
    Ok(b.build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn event(id: &str) -> Event {
        Event {
            event_id: id.into(),
            user_id: "u".into(),
            event_type: "t".into(),
            payload: Some(r#"{"k":"ü"}"#.into()),
            created_at_us: 1_700_000_000_000_000,
            source: None,
            version: Some("2".into()),
        }
    }

    #[test]
    fn encodes_every_row_with_zstd() {
        // Given three events
        let events = [event("a"), event("b"), event("c")];
        let rows: Vec<_> = events
            .iter()
            .map(|e| ParquetRow {
                event: e,
                source_unit: "s/shard-1",
                source_position: "42",
                source_key: Some("pk"),
                source_headers: None,
            })
            .collect();
        // When they are encoded
        let bytes = encode_parquet(&rows, 1_700_000_001_000_000).unwrap();
        // Then the file holds three rows in twelve columns, compressed with zstd
        let reader = SerializedFileReader::new(Bytes::from(bytes)).unwrap();
        let meta = reader.metadata();
        assert_eq!(meta.file_metadata().num_rows(), 3);
        assert_eq!(meta.file_metadata().schema_descr().num_columns(), 12);
        assert_eq!(
            meta.row_group(0).column(0).compression(),
            Compression::ZSTD(ZstdLevel::try_new(1).unwrap())
        );
    }
}
