//! Object keys. Keys are built only from configuration, source coordinates (stream, shard,
//! topic, partition, positions), the invocation id and `created_at` — never from payload
//! text — and every piece that comes from the event is reduced to a safe alphabet.

use crate::record::Position;
use chrono::DateTime;

/// Longest piece of a key taken from the event (stream, topic, shard, request id).
const MAX_COMPONENT_CHARS: usize = 160;

/// Keeps `[A-Za-z0-9._=-]`, maps everything else (including `/`) to `_`, and never yields
/// `.` or `..` on its own.
pub fn sanitize(component: &str) -> String {
    let mut out: String = component
        .chars()
        .take(MAX_COMPONENT_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '=') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.chars().all(|c| c == '.') {
        out = out.replace('.', "_");
        out.push('_');
    }
    out
}

/// Hive-style partition of a `created_at` in UTC: `dt=YYYY-MM-DD/hour=HH`.
pub fn hour_partition(created_at_us: i64) -> String {
    let t = DateTime::from_timestamp_micros(created_at_us).unwrap_or_default();
    t.format("dt=%Y-%m-%d/hour=%H").to_string()
}

/// The Parquet object for one invocation's records of one unit and hour:
/// `<prefix>dt=…/hour=…/<unit>-<first>-<last>-<attempt>.parquet`.
///
/// The positions are the first and last of the records planned for the object; the attempt
/// (Lambda request id) makes each invocation's object distinct, because two attempts over the
/// same positions can carry different subsets (see docs/exactly-once.md).
pub fn data_object_key(
    prefix: &str,
    partition: &str,
    unit_label: &str,
    first: &Position,
    last: &Position,
    attempt: &str,
) -> String {
    format!(
        "{prefix}{partition}/{}-{first}-{last}-{}.parquet",
        sanitize(unit_label),
        sanitize(attempt)
    )
}

/// The folder under a lake-less route's prefix where its commit markers live. The leading `_`
/// keeps query engines (Hive, Spark, Athena, Trino) from reading it as data.
pub const MARKER_FOLDER: &str = "_markers/";

/// The commit marker of a route without a lake (`lake = false`): one per invocation and unit,
/// `<prefix>_markers/<unit>-<first>-<last>-<attempt>.jsonl`. It stands where the Parquet object
/// would: its existence proves every claim that names it loaded, exactly as an object does.
pub fn marker_object_key(
    prefix: &str,
    unit_label: &str,
    first: &Position,
    last: &Position,
    attempt: &str,
) -> String {
    format!(
        "{prefix}{MARKER_FOLDER}{}-{first}-{last}-{}.jsonl",
        sanitize(unit_label),
        sanitize(attempt)
    )
}

/// The content type an object of the loaders is written with, by its key's extension.
pub fn content_type(key: &str) -> &'static str {
    if key.ends_with(".parquet") {
        "application/vnd.apache.parquet"
    } else if key.ends_with(".jsonl") {
        "application/x-ndjson"
    } else {
        "application/octet-stream"
    }
}

/// Where a record too large for the queue keeps its raw bytes. `digest` is the record's
/// poison digest (hex): the unit label may be cut and coordinates repeat across clusters.
pub fn dead_letter_key(
    prefix: &str,
    unit_label: &str,
    position: &Position,
    digest: &str,
) -> String {
    format!(
        "{prefix}{}/{position}-{}.bin",
        sanitize(unit_label),
        sanitize(digest)
    )
}

/// The archive of the dead-letter messages one invocation sent for one unit, one JSON message
/// per line: its existence proves every poison claim that names it sent.
/// `<prefix><unit>/<first>-<last>-<attempt>.jsonl`, the positions the first and last of the
/// poison records planned for it (sets planned in one invocation are disjoint, so their first
/// positions differ), the attempt making each invocation's archive its own.
pub fn dead_letter_archive_key(
    prefix: &str,
    unit_label: &str,
    first: &Position,
    last: &Position,
    attempt: &str,
) -> String {
    format!(
        "{prefix}{}/{first}-{last}-{}.jsonl",
        sanitize(unit_label),
        sanitize(attempt)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_components_cannot_escape_the_prefix() {
        assert_eq!(sanitize("../../etc/passwd"), ".._.._etc_passwd");
        assert_eq!(sanitize(".."), "___");
        assert_eq!(sanitize(""), "_");
        assert_eq!(
            sanitize("orders/shardId-000000000001"),
            "orders_shardId-000000000001"
        );
        assert_eq!(sanitize("tópic with space"), "t_pic_with_space");
        assert_eq!(sanitize(&"x".repeat(500)).len(), MAX_COMPONENT_CHARS);
    }

    #[test]
    fn keys_are_partitioned_by_utc_hour() {
        // 2024-03-01T10:34:56Z
        assert_eq!(
            hour_partition(1_709_289_296_000_000),
            "dt=2024-03-01/hour=10"
        );
        let key = data_object_key(
            "events/",
            "dt=2024-03-01/hour=10",
            "orders/shardId-1",
            &Position::parse("5").unwrap(),
            &Position::parse("9").unwrap(),
            "req-1",
        );
        assert_eq!(
            key,
            "events/dt=2024-03-01/hour=10/orders_shardId-1-5-9-req-1.parquet"
        );
    }

    #[test]
    fn a_lake_less_routes_markers_sit_apart_from_data() {
        let key = marker_object_key(
            "orders/",
            "orders/shardId-1",
            &Position::parse("5").unwrap(),
            &Position::parse("9").unwrap(),
            "req-1",
        );
        assert_eq!(key, "orders/_markers/orders_shardId-1-5-9-req-1.jsonl");
        assert_eq!(content_type(&key), "application/x-ndjson");
        assert_eq!(
            content_type("orders/dt=2024-03-01/hour=10/u-1-2-r.parquet"),
            "application/vnd.apache.parquet"
        );
    }
}
