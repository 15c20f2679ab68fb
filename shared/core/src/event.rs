//! The producer's event and the rules that decide whether a record can ever load.
//!
//! A record that fails here is *poison*: retrying cannot fix it, so it goes to the dead-letter
//! queue with its raw bytes and the reason, and it never blocks its shard or partition.

use crate::text::{JsonStr, Text};
use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Default largest record accepted, in bytes: the Kinesis per-record limit (1 MiB). Larger
/// records are poison so that one record can never exhaust the function's memory.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Longest accepted `event_id`, in bytes. DynamoDB allows 2,048 bytes in a partition key; the
/// margin keeps room for a key prefix should the dedup table ever need one.
pub const MAX_EVENT_ID_BYTES: usize = 1024;

/// A validated event, ready for both sinks. Its text shares the record's bytes wherever the
/// JSON held a field without escapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: Text,
    pub user_id: Text,
    pub event_type: Text,
    /// The producer's `payload` as JSON text, exactly as sent; `None` when absent.
    pub payload: Option<Text>,
    /// `created_at` in microseconds since the Unix epoch, UTC.
    pub created_at_us: i64,
    pub source: Option<Text>,
    pub version: Option<Text>,
}

/// Why a record can never load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoisonKind {
    /// Not UTF-8 or not JSON.
    Decode,
    /// JSON, but not an event we can store.
    Validation,
    /// Over the configured size limit.
    TooLarge,
    /// A Kafka record with a null value.
    Tombstone,
    /// Valid JSON, but a sink refused it for a reason of its own: a constraint or column
    /// type of the user's table, or a value the Parquet encoder cannot write.
    Refused,
}

impl PoisonKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PoisonKind::Decode => "decode",
            PoisonKind::Validation => "validation",
            PoisonKind::TooLarge => "too_large",
            PoisonKind::Tombstone => "tombstone",
            PoisonKind::Refused => "refused",
        }
    }
}

/// A poison verdict: the kind and a human-readable reason that never quotes payload text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    pub kind: PoisonKind,
    pub reason: String,
}

impl Poison {
    fn new(kind: PoisonKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }
}

#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(borrow, default)]
    event_id: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    user_id: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    event_type: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(borrow, default)]
    created_at: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    source: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    version: Option<&'a RawValue>,
}

/// Decodes and validates one record's bytes.
pub fn validate(data: &Bytes, max_record_bytes: usize) -> Result<Event, Poison> {
    if data.len() > max_record_bytes {
        return Err(Poison::new(
            PoisonKind::TooLarge,
            format!(
                "record is {} bytes, over the {max_record_bytes}-byte limit",
                data.len()
            ),
        ));
    }
    let text = std::str::from_utf8(data).map_err(|e| {
        Poison::new(
            PoisonKind::Decode,
            format!("not UTF-8 (invalid byte at offset {})", e.valid_up_to()),
        )
    })?;
    let wire: WireEvent = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            Poison::new(PoisonKind::Validation, describe_data_error(text, &e))
        }
        _ => Poison::new(
            PoisonKind::Decode,
            format!("not JSON (line {}, column {})", e.line(), e.column()),
        ),
    })?;

    let text_of = |v: Cow<'_, str>| match v {
        Cow::Borrowed(s) => Text::within(data, s),
        Cow::Owned(s) => Text::from(s),
    };
    let event_id = required_text("event_id", wire.event_id.map(|j| j.0), text_of)?;
    if event_id.len() > MAX_EVENT_ID_BYTES {
        return Err(Poison::new(
            PoisonKind::Validation,
            format!(
                "event_id is {} bytes, over {MAX_EVENT_ID_BYTES}",
                event_id.len()
            ),
        ));
    }
    let user_id = required_text("user_id", wire.user_id.map(|j| j.0), text_of)?;
    let event_type = required_text("event_type", wire.event_type.map(|j| j.0), text_of)?;
    let created_at = wire
        .created_at
        .ok_or_else(|| Poison::new(PoisonKind::Validation, "created_at is missing"))?;
    let created_at_us = parse_created_at(&created_at)?;
    let payload = match wire.payload {
        Some(raw) if raw.get() != "null" => {
            if json_has_nul_escape(raw.get()) {
                return Err(Poison::new(
                    PoisonKind::Validation,
                    "payload contains a \\u0000 escape, which PostgreSQL jsonb cannot store",
                ));
            }
            Some(Text::within(data, raw.get()))
        }
        _ => None,
    };
    let source = optional_text("source", wire.source.map(|j| j.0), text_of)?;
    let version = match wire.version {
        None => None,
        Some(raw) => scalar_text("version", raw)?.map(text_of),
    };
    Ok(Event {
        event_id,
        user_id,
        event_type,
        payload,
        created_at_us,
        source,
        version,
    })
}

/// A reason for well-formed JSON that is not an event. serde's messages can quote values,
/// so only messages known to carry field names alone are passed through.
fn describe_data_error(text: &str, e: &serde_json::Error) -> String {
    if !text.trim_start().starts_with('{') {
        return "not a JSON object".to_owned();
    }
    let msg = e.to_string();
    if msg.starts_with("duplicate field") {
        let end = msg.find(" at line ").unwrap_or(msg.len());
        return msg[..end].to_owned();
    }
    "a field has the wrong type (event_id, user_id, event_type, created_at and source must be strings)"
        .to_owned()
}

fn required_text<'a>(
    field: &str,
    value: Option<Cow<'a, str>>,
    text_of: impl Fn(Cow<'a, str>) -> Text,
) -> Result<Text, Poison> {
    match value {
        None => Err(Poison::new(
            PoisonKind::Validation,
            format!("{field} is missing"),
        )),
        Some(v) if v.trim().is_empty() => Err(Poison::new(
            PoisonKind::Validation,
            format!("{field} is empty"),
        )),
        Some(v) => {
            reject_nul(field, &v)?;
            Ok(text_of(v))
        }
    }
}

fn optional_text<'a>(
    field: &str,
    value: Option<Cow<'a, str>>,
    text_of: impl Fn(Cow<'a, str>) -> Text,
) -> Result<Option<Text>, Poison> {
    match value {
        None => Ok(None),
        Some(v) => {
            reject_nul(field, &v)?;
            Ok(Some(text_of(v)))
        }
    }
}

fn reject_nul(field: &str, value: &str) -> Result<(), Poison> {
    if value.contains('\0') {
        return Err(Poison::new(
            PoisonKind::Validation,
            format!("{field} contains a NUL character, which PostgreSQL text cannot store"),
        ));
    }
    Ok(())
}

/// `version` may be a string or a number; it is stored as text.
fn scalar_text<'a>(field: &str, raw: &'a RawValue) -> Result<Option<Cow<'a, str>>, Poison> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'n') => Ok(None),
        Some(b'"') => {
            let s: Cow<'a, str> = serde_json::from_str(text).map_err(|_| {
                Poison::new(
                    PoisonKind::Validation,
                    format!("{field} is not a valid string"),
                )
            })?;
            reject_nul(field, &s)?;
            Ok(Some(s))
        }
        Some(b'-' | b'0'..=b'9') => Ok(Some(Cow::Borrowed(text))),
        _ => Err(Poison::new(
            PoisonKind::Validation,
            format!("{field} must be a string or a number"),
        )),
    }
}

/// Parses ISO-8601 / RFC 3339. A timestamp without an offset (as Python's
/// `datetime.utcnow().isoformat()` writes it) is UTC.
fn parse_created_at(text: &str) -> Result<i64, Poison> {
    if let Some(us) = parse_iso8601_fast(text.as_bytes()) {
        return Ok(us);
    }
    let bad = || {
        Poison::new(
            PoisonKind::Validation,
            "created_at is not an ISO-8601 timestamp",
        )
    };
    let utc = if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        dt.to_utc()
    } else {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
            .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
            .map_err(|_| bad())?
            .and_utc()
    };
    Ok(utc.timestamp_micros())
}

/// The common shapes without chrono's format machinery (a tenth of the cost):
/// `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|±HH:MM]`. `None` sends the text to the general parser.
fn parse_iso8601_fast(b: &[u8]) -> Option<i64> {
    fn num(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    }
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let (hour, minute, second) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day < 1
        || day > month_days[(month - 1) as usize]
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut micros = 0i64;
    if let Some((&b'.', frac)) = rest.split_first() {
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let scaled = num(&frac[..digits.min(6)])?;
        micros = scaled * 10i64.pow(6 - digits.min(6) as u32);
        rest = &frac[digits..];
    }
    let offset_s = match rest {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (h, m) = (num(&[*h1, *h2])?, num(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            let o = h * 3600 + m * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    Some(seconds * 1_000_000 + micros)
}

/// True when JSON text holds a `\u0000` escape (a NUL inside a string), which jsonb rejects.
fn json_has_nul_escape(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut i = 0;
    // Jump from backslash to backslash: most payloads have none, and memchr scans a word
    // or a vector at a time.
    while let Some(at) = bytes.get(i..).and_then(|rest| memchr::memchr(b'\\', rest)) {
        let b = i + at;
        if bytes.get(b + 1) == Some(&b'u') && bytes.get(b + 2..b + 6) == Some(b"0000") {
            return true;
        }
        i = b + 2; // skip the escaped character, so `\\u0000` is not mistaken for a NUL
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(json: &str) -> Event {
        validate(
            &Bytes::copy_from_slice(json.as_bytes()),
            DEFAULT_MAX_RECORD_BYTES,
        )
        .expect("valid event")
    }

    fn poison(bytes: &[u8]) -> Poison {
        validate(&Bytes::copy_from_slice(bytes), DEFAULT_MAX_RECORD_BYTES).expect_err("poison")
    }

    #[test]
    fn a_complete_event_keeps_every_field() {
        let e = ok(
            r#"{"event_id":"e1","user_id":"u1","event_type":"click","payload":{"a":[1,2]},"created_at":"2024-03-01T12:34:56.789+02:00","source":"web","version":3}"#,
        );
        assert_eq!(e.event_id, "e1");
        assert_eq!(e.user_id, "u1");
        assert_eq!(e.event_type, "click");
        assert_eq!(e.payload.as_deref(), Some(r#"{"a":[1,2]}"#));
        // 12:34:56.789 at +02:00 is 10:34:56.789 UTC
        assert_eq!(e.created_at_us, 1_709_289_296_789_000);
        assert_eq!(e.source.as_deref(), Some("web"));
        assert_eq!(e.version.as_deref(), Some("3"));
    }

    #[test]
    fn a_timestamp_without_offset_is_utc() {
        let e = ok(
            r#"{"event_id":"e","user_id":"u","event_type":"t","created_at":"2024-03-01T10:34:56.789012"}"#,
        );
        assert_eq!(e.created_at_us, 1_709_289_296_789_012);
        let z = ok(
            r#"{"event_id":"e","user_id":"u","event_type":"t","created_at":"2024-03-01T10:34:56.789012Z"}"#,
        );
        assert_eq!(z.created_at_us, e.created_at_us);
    }

    #[test]
    fn each_poison_kind_is_named() {
        assert_eq!(poison(&[0xff, 0xfe]).kind, PoisonKind::Decode);
        assert_eq!(poison(b"{not json").kind, PoisonKind::Decode);
        assert_eq!(poison(b"[1,2]").kind, PoisonKind::Validation);
        assert_eq!(poison(b"42").kind, PoisonKind::Validation);
        let missing =
            poison(br#"{"user_id":"u","event_type":"t","created_at":"2024-01-01T00:00:00"}"#);
        assert_eq!(
            missing,
            Poison::new(PoisonKind::Validation, "event_id is missing")
        );
        let empty = poison(
            br#"{"event_id":"e","user_id":"","event_type":"t","created_at":"2024-01-01T00:00:00"}"#,
        );
        assert_eq!(empty.reason, "user_id is empty");
        let no_type = poison(br#"{"event_id":"e","user_id":"u","event_type":" ","created_at":"2024-01-01T00:00:00"}"#);
        assert_eq!(no_type.reason, "event_type is empty");
        let bad_time =
            poison(br#"{"event_id":"e","user_id":"u","event_type":"t","created_at":"yesterday"}"#);
        assert_eq!(bad_time.reason, "created_at is not an ISO-8601 timestamp");
        let wrong_type = poison(
            br#"{"event_id":7,"user_id":"u","event_type":"t","created_at":"2024-01-01T00:00:00"}"#,
        );
        assert_eq!(wrong_type.kind, PoisonKind::Validation);
    }

    #[test]
    fn the_fast_timestamp_path_agrees_with_chrono() {
        let cases = [
            "2024-03-01T10:34:56",
            "2024-03-01T10:34:56.7",
            "2024-03-01T10:34:56.789012",
            "2024-03-01T10:34:56.789012345",
            "2024-03-01 10:34:56.5",
            "2024-02-29T23:59:59Z",
            "2000-01-01T00:00:00+00:00",
            "1969-12-31T23:59:59.999999Z",
            "2024-03-01T10:34:56.789+02:00",
            "2024-03-01T10:34:56-05:30",
            "1900-03-01T00:00:00Z",
            "2399-12-31T23:59:59Z",
        ];
        for text in cases {
            let fast =
                parse_iso8601_fast(text.as_bytes()).unwrap_or_else(|| panic!("{text} not fast"));
            let slow = DateTime::parse_from_rfc3339(text)
                .map(|d| d.to_utc())
                .or_else(|_| {
                    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
                        .map(|n| n.and_utc())
                })
                .unwrap()
                .timestamp_micros();
            assert_eq!(fast, slow, "{text}");
        }
        for bad in [
            "2023-02-29T00:00:00",
            "2024-13-01T00:00:00",
            "2024-01-01T24:00:00",
            "2024-01-01T00:00:00+25:00",
            "2024-01-01T00:00:00.",
            "2024-01-01",
        ] {
            assert!(parse_iso8601_fast(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn fields_without_escapes_share_the_record_bytes() {
        // Given a record whose user_id holds an escape
        let data = Bytes::from_static(
            br#"{"event_id":"e1","user_id":"u\"1","event_type":"t","payload":{"a":1},"created_at":"2024-01-01T00:00:00"}"#,
        );
        // When it is validated
        let e = validate(&data, DEFAULT_MAX_RECORD_BYTES).unwrap();
        // Then plain fields are views of the record and the escaped one is unescaped text
        let inside = |t: &Text| {
            let (p, s) = (t.bytes().as_ptr() as usize, data.as_ptr() as usize);
            p >= s && p < s + data.len()
        };
        assert!(inside(&e.event_id) && inside(&e.event_type));
        assert!(inside(e.payload.as_ref().unwrap()));
        assert_eq!(e.payload.as_deref(), Some(r#"{"a":1}"#));
        assert!(!inside(&e.user_id));
        assert_eq!(e.user_id, "u\"1");
    }

    #[test]
    fn records_over_the_limit_are_too_large() {
        let p = validate(&Bytes::from_static(&[b' '; 11]), 10).expect_err("too large");
        assert_eq!(p.kind, PoisonKind::TooLarge);
    }

    #[test]
    fn nul_characters_that_postgres_rejects_are_poison() {
        let p = poison(br#"{"event_id":"e","user_id":"u\u0000","event_type":"t","created_at":"2024-01-01T00:00:00"}"#);
        assert!(p.reason.contains("user_id contains a NUL"), "{}", p.reason);
        let q = poison(br#"{"event_id":"e","user_id":"u","event_type":"t","payload":{"x":"a\u0000"},"created_at":"2024-01-01T00:00:00"}"#);
        assert!(q.reason.contains("payload contains"), "{}", q.reason);
        // An escaped backslash followed by u0000 is plain text, not a NUL.
        let e = ok(
            r#"{"event_id":"e","user_id":"u","event_type":"t","payload":"\\u0000","created_at":"2024-01-01T00:00:00"}"#,
        );
        assert_eq!(e.payload.as_deref(), Some(r#""\\u0000""#));
    }

    #[test]
    fn reasons_never_quote_the_payload() {
        let p = poison(
            br#"{"event_id":"e","user_id":"u","event_type":"t","created_at":"secret-token-123"}"#,
        );
        assert!(!p.reason.contains("secret-token-123"));
        let q = poison(br#"{"event_id":["secret-token-456"],"user_id":"u"}"#);
        assert!(!q.reason.contains("secret-token-456"), "{}", q.reason);
    }
}
