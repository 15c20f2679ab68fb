//! Poison verdicts: why a record can never load, and the limits that decide it.
//!
//! A record that fails here is *poison*: retrying cannot fix it, so it goes to the dead-letter
//! queue with its raw bytes and the reason, and it never blocks its shard or partition.

use chrono::{DateTime, NaiveDateTime};

/// Default largest record accepted, in bytes: the Kinesis per-record limit (1 MiB). Larger
/// records are poison so that one record can never exhaust the function's memory.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Longest accepted `event_id`, in bytes. DynamoDB allows 2,048 bytes in a partition key; the
/// margin keeps room for a key prefix should the dedup table ever need one.
pub const MAX_EVENT_ID_BYTES: usize = 1024;

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
    pub fn new(kind: PoisonKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }
}

/// Parses ISO-8601 / RFC 3339. A timestamp without an offset (as Python's
/// `datetime.utcnow().isoformat()` writes it) is UTC.
pub(crate) fn parse_timestamp(text: &str) -> Option<i64> {
    if let Some(us) = parse_iso8601_fast(text.as_bytes()) {
        return Some(us);
    }
    let utc = if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        dt.to_utc()
    } else {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
            .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
            .ok()?
            .and_utc()
    };
    Some(utc.timestamp_micros())
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
pub(crate) fn json_has_nul_escape(json: &str) -> bool {
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
}
