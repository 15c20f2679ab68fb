//! Column types and the typed values a route extracts from a record.
//!
//! Each [`ColumnType`] accepts the JSON forms producers actually send (numbers or numeric
//! strings for numbers, RFC 3339 text or epoch numbers for times, any JSON for `jsonb`) and
//! refuses everything that would not fit its PostgreSQL column *and* its Parquet column, so a
//! value is either in both sinks or the record is poison. A refusal names the problem, never
//! the value.

use crate::text::Text;
use bytes::Bytes;
use std::borrow::Cow;

/// A route column's type: what PostgreSQL stores and what Parquet holds (see
/// docs/configuration.md for the pairs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Integer,
    Bigint,
    Double,
    /// `precision`/`scale` for the lake's `DECIMAL(p, s)`; without them the lake keeps the
    /// exact decimal text.
    Numeric {
        precision: Option<u8>,
        scale: Option<u8>,
    },
    Boolean,
    Timestamptz {
        /// How an epoch number is read; `None` accepts RFC 3339 text only.
        unit: Option<EpochUnit>,
    },
    Date,
    Uuid,
    Jsonb,
}

/// The unit of an epoch-number timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochUnit {
    Seconds,
    Millis,
    Micros,
}

impl EpochUnit {
    fn micros(self) -> f64 {
        match self {
            EpochUnit::Seconds => 1e6,
            EpochUnit::Millis => 1e3,
            EpochUnit::Micros => 1.0,
        }
    }
}

impl ColumnType {
    /// Parses the `type` of a column.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "text" => ColumnType::Text,
            "integer" => ColumnType::Integer,
            "bigint" => ColumnType::Bigint,
            "double" => ColumnType::Double,
            "numeric" => ColumnType::Numeric {
                precision: None,
                scale: None,
            },
            "boolean" => ColumnType::Boolean,
            "timestamptz" => ColumnType::Timestamptz { unit: None },
            "date" => ColumnType::Date,
            "uuid" => ColumnType::Uuid,
            "jsonb" => ColumnType::Jsonb,
            _ => return None,
        })
    }

    /// The name used in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Integer => "integer",
            ColumnType::Bigint => "bigint",
            ColumnType::Double => "double",
            ColumnType::Numeric { .. } => "numeric",
            ColumnType::Boolean => "boolean",
            ColumnType::Timestamptz { .. } => "timestamptz",
            ColumnType::Date => "date",
            ColumnType::Uuid => "uuid",
            ColumnType::Jsonb => "jsonb",
        }
    }

    /// The PostgreSQL type a column of this type is created with (`auto_migrate`).
    pub fn sql_type(self) -> String {
        match self {
            ColumnType::Text => "text".into(),
            ColumnType::Integer => "integer".into(),
            ColumnType::Bigint => "bigint".into(),
            ColumnType::Double => "double precision".into(),
            ColumnType::Numeric {
                precision: Some(p),
                scale,
            } => format!("numeric({p}, {})", scale.unwrap_or(0)),
            ColumnType::Numeric { .. } => "numeric".into(),
            ColumnType::Boolean => "boolean".into(),
            ColumnType::Timestamptz { .. } => "timestamptz".into(),
            ColumnType::Date => "date".into(),
            ColumnType::Uuid => "uuid".into(),
            ColumnType::Jsonb => "jsonb".into(),
        }
    }
}

/// One typed value of a mapped record. Text shares the record's bytes where it can.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Text(Text),
    /// `integer` (checked to fit 32 bits) and `bigint`.
    Int(i64),
    Double(f64),
    /// Canonical decimal text (no exponent, no superfluous zeros), and for a lake
    /// `DECIMAL(p, s)` the unscaled integer.
    Numeric {
        text: Box<str>,
        unscaled: Option<i128>,
    },
    Bool(bool),
    /// Microseconds since the Unix epoch, UTC.
    Timestamp(i64),
    /// Days since 1970-01-01.
    Date(i32),
    Uuid([u8; 16]),
    /// JSON text exactly as sent.
    Json(Text),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A stable text form of the value, used for event identities: equal values (whatever
    /// JSON form they arrived in) give equal text.
    pub fn identity_text(&self) -> Cow<'_, str> {
        match self {
            Value::Null => Cow::Borrowed(""),
            Value::Text(t) | Value::Json(t) => Cow::Borrowed(t.as_str()),
            Value::Int(i) => Cow::Owned(i.to_string()),
            Value::Double(d) => Cow::Owned(d.to_string()),
            Value::Numeric { text, .. } => Cow::Borrowed(text),
            Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Value::Timestamp(us) => Cow::Owned(us.to_string()),
            Value::Date(d) => Cow::Owned(d.to_string()),
            Value::Uuid(u) => Cow::Owned(uuid_text(u)),
        }
    }
}

/// The hyphenated lowercase form of a UUID.
pub fn uuid_text(u: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Why a value does not fit its column: a short phrase, never the value.
pub type Misfit = &'static str;

/// Earliest and latest accepted instant (0001-01-01 and 9999-12-31T23:59:59.999999 UTC):
/// inside what PostgreSQL, Arrow and every lake reader represent.
const MIN_TIMESTAMP_US: i64 = -62_135_596_800_000_000;
const MAX_TIMESTAMP_US: i64 = 253_402_300_799_999_999;

/// Converts one JSON value (its raw text, inside `owner`) to `ty`. JSON `null` is
/// [`Value::Null`]; the caller decides whether the column may be null.
pub fn convert(ty: ColumnType, raw: &str, owner: &Bytes) -> Result<Value, Misfit> {
    let first = raw.as_bytes().first().copied().unwrap_or(b'n');
    if first == b'n' {
        return Ok(Value::Null);
    }
    match ty {
        ColumnType::Jsonb => {
            if crate::event::json_has_nul_escape(raw) {
                return Err("holds a \\u0000 escape, which PostgreSQL jsonb cannot store");
            }
            Ok(Value::Json(Text::within(owner, raw)))
        }
        ColumnType::Text => match first {
            b'"' => string(raw).map(|s| Value::Text(text_of(owner, s))),
            b'-' | b'0'..=b'9' | b't' | b'f' => Ok(Value::Text(Text::within(owner, raw))),
            _ => Err("is an object or array, not text"),
        },
        _ => {
            let s = match first {
                b'"' => string(raw)?,
                b'-' | b'0'..=b'9' | b't' | b'f' => Cow::Borrowed(raw),
                _ => return Err("is an object or array"),
            };
            convert_scalar(ty, &s, first == b'"')
        }
    }
}

/// Converts text that came from a record's metadata (a key, a topic) or from a JSON scalar.
pub fn convert_scalar(ty: ColumnType, s: &str, quoted: bool) -> Result<Value, Misfit> {
    match ty {
        ColumnType::Text | ColumnType::Jsonb => {
            if s.contains('\0') {
                return Err("contains a NUL character, which PostgreSQL text cannot store");
            }
            Ok(Value::Text(Text::from(s)))
        }
        ColumnType::Integer => {
            let i = integer(s)?;
            if i32::try_from(i).is_err() {
                return Err("is out of range for integer");
            }
            Ok(Value::Int(i))
        }
        ColumnType::Bigint => integer(s).map(Value::Int),
        ColumnType::Double => {
            if !is_json_number(s) {
                return Err("is not a number");
            }
            let d: f64 = s.parse().map_err(|_| "is not a number")?;
            if !d.is_finite() {
                return Err("is out of range for double");
            }
            Ok(Value::Double(d))
        }
        ColumnType::Numeric { precision, scale } => numeric(s, precision, scale),
        ColumnType::Boolean => match s {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err("is not true or false"),
        },
        ColumnType::Timestamptz { unit } => {
            let us = if quoted && !is_json_number(s) {
                crate::event::parse_timestamp(s).ok_or("is not an RFC 3339 timestamp")?
            } else {
                let Some(unit) = unit else {
                    return Err("is a number, but the column has no epoch unit");
                };
                epoch_micros(s, unit)?
            };
            if !(MIN_TIMESTAMP_US..=MAX_TIMESTAMP_US).contains(&us) {
                return Err("is out of range for timestamptz (years 1 to 9999)");
            }
            Ok(Value::Timestamp(us))
        }
        ColumnType::Date => {
            if !quoted {
                return Err("is not a date (YYYY-MM-DD)");
            }
            date(s).map(Value::Date)
        }
        ColumnType::Uuid => {
            if !quoted {
                return Err("is not a UUID");
            }
            uuid(s).map(Value::Uuid)
        }
    }
}

fn text_of(owner: &Bytes, s: Cow<'_, str>) -> Text {
    match s {
        Cow::Borrowed(b) => Text::within(owner, b),
        Cow::Owned(o) => Text::from(o),
    }
}

/// A JSON string's content: borrowed when it holds no escapes.
fn string(raw: &str) -> Result<Cow<'_, str>, Misfit> {
    let inner = &raw[1..raw.len().saturating_sub(1).max(1)];
    let s = if !inner.contains('\\') {
        Cow::Borrowed(inner)
    } else {
        // serde_json refuses a lone surrogate (`\ud800`), which no UTF-8 text can hold.
        Cow::Owned(serde_json::from_str::<String>(raw).map_err(|_| "is not a valid string")?)
    };
    if s.contains('\0') {
        return Err("contains a NUL character, which PostgreSQL text cannot store");
    }
    Ok(s)
}

fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    let int_start = i;
    if digits(&mut i) == 0 || (b[int_start] == b'0' && i - int_start > 1) {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

fn integer(s: &str) -> Result<i64, Misfit> {
    if !is_json_number(s) {
        return Err("is not a number");
    }
    if let Ok(i) = s.parse::<i64>() {
        return Ok(i);
    }
    // `1.0`, `1e3`: integral values written otherwise are accepted exactly.
    let d = Decimal::parse(s).ok_or("is not a number")?;
    if d.scale > 0 {
        return Err("is not a whole number");
    }
    d.text()
        .parse::<i64>()
        .map_err(|_| "is out of range for bigint")
}

fn epoch_micros(s: &str, unit: EpochUnit) -> Result<i64, Misfit> {
    if !is_json_number(s) {
        return Err("is not an RFC 3339 timestamp or an epoch number");
    }
    if let Ok(i) = s.parse::<i64>() {
        return i
            .checked_mul(unit.micros() as i64)
            .ok_or("is out of range for timestamptz (years 1 to 9999)");
    }
    let f: f64 = s.parse().map_err(|_| "is not a number")?;
    let us = (f * unit.micros()).round();
    if !us.is_finite() || us.abs() > 9.0e18 {
        return Err("is out of range for timestamptz (years 1 to 9999)");
    }
    Ok(us as i64)
}

/// Days since 1970-01-01 of `YYYY-MM-DD`.
fn date(s: &str) -> Result<i32, Misfit> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| "is not a date (YYYY-MM-DD)")?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).ok_or("is not a date")?;
    let days = d.signed_duration_since(epoch).num_days();
    if !(-719_162..=2_932_896).contains(&days) {
        return Err("is out of range for date (years 1 to 9999)");
    }
    Ok(days as i32)
}

/// Hyphenated (36 characters) or plain (32 hex digits), either case.
fn uuid(s: &str) -> Result<[u8; 16], Misfit> {
    let b = s.as_bytes();
    let hex: Vec<u8> = match b.len() {
        36 if b[8] == b'-' && b[13] == b'-' && b[18] == b'-' && b[23] == b'-' => {
            b.iter().copied().filter(|&c| c != b'-').collect()
        }
        32 => b.to_vec(),
        _ => return Err("is not a UUID"),
    };
    if hex.len() != 32 {
        return Err("is not a UUID");
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let (Some(hi), Some(lo)) = (nibble(pair[0]), nibble(pair[1])) else {
            return Err("is not a UUID");
        };
        out[i] = hi << 4 | lo;
    }
    Ok(out)
}

/// A decimal number as sign, digits and scale.
struct Decimal {
    negative: bool,
    /// Significant digits, no leading zeros ("0" for zero).
    digits: String,
    /// Digits after the point.
    scale: u32,
}

/// Largest exponent accepted in a numeric value: PostgreSQL's numeric holds up to 131,072
/// digits before the point and 16,383 after; far past any real field.
const MAX_DECIMAL_EXPONENT: i64 = 1000;

impl Decimal {
    fn parse(s: &str) -> Option<Self> {
        if !is_json_number(s) {
            return None;
        }
        let (negative, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (mantissa, exponent) = match body.find(['e', 'E']) {
            Some(at) => (&body[..at], body[at + 1..].parse::<i64>().ok()?),
            None => (body, 0),
        };
        if exponent.abs() > MAX_DECIMAL_EXPONENT {
            return None;
        }
        let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let mut digits: String = format!("{int_part}{frac_part}");
        let mut scale = frac_part.len() as i64 - exponent;
        if scale < 0 {
            digits.extend(std::iter::repeat_n('0', (-scale) as usize));
            scale = 0;
        }
        // Trailing zeros after the point carry no value.
        while scale > 0 && digits.ends_with('0') {
            digits.pop();
            scale -= 1;
        }
        let trimmed = digits.trim_start_matches('0');
        let mut digits = trimmed.to_owned();
        if (digits.len() as i64) <= scale {
            let pad = scale as usize + 1 - digits.len();
            digits.insert_str(0, &"0".repeat(pad));
        }
        let zero = digits.bytes().all(|b| b == b'0');
        Some(Self {
            negative: negative && !zero,
            digits,
            scale: scale as u32,
        })
    }

    fn text(&self) -> String {
        let split = self.digits.len() - self.scale as usize;
        let mut out = String::with_capacity(self.digits.len() + 2);
        if self.negative {
            out.push('-');
        }
        out.push_str(&self.digits[..split]);
        if self.scale > 0 {
            out.push('.');
            out.push_str(&self.digits[split..]);
        }
        out
    }
}

fn numeric(s: &str, precision: Option<u8>, scale: Option<u8>) -> Result<Value, Misfit> {
    let d = Decimal::parse(s).ok_or("is not a decimal number")?;
    let text = d.text();
    let unscaled = match precision {
        None => None,
        Some(p) => {
            let want = u32::from(scale.unwrap_or(0));
            if d.scale > want {
                return Err("has more decimal places than the column's scale");
            }
            let mut digits = d.digits.trim_start_matches('0').to_owned();
            digits.extend(std::iter::repeat_n('0', (want - d.scale) as usize));
            if digits.len() > usize::from(p) {
                return Err("has more digits than the column's precision");
            }
            let magnitude: i128 = if digits.is_empty() {
                0
            } else {
                digits.parse().map_err(|_| "is out of range")?
            };
            Some(if d.negative { -magnitude } else { magnitude })
        }
    };
    Ok(Value::Numeric {
        text: text.into_boxed_str(),
        unscaled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(ty: ColumnType, raw: &str) -> Result<Value, Misfit> {
        convert(ty, raw, &Bytes::from(raw.to_owned()))
    }

    #[test]
    fn numbers_accept_numbers_and_numeric_strings() {
        assert_eq!(conv(ColumnType::Integer, "42"), Ok(Value::Int(42)));
        assert_eq!(conv(ColumnType::Integer, "\"42\""), Ok(Value::Int(42)));
        assert_eq!(conv(ColumnType::Integer, "4e1"), Ok(Value::Int(40)));
        assert!(conv(ColumnType::Integer, "4.5").is_err());
        assert!(conv(ColumnType::Integer, "3000000000").is_err());
        assert_eq!(
            conv(ColumnType::Bigint, "3000000000"),
            Ok(Value::Int(3_000_000_000))
        );
        assert!(conv(ColumnType::Bigint, "\"12a\"").is_err());
        assert!(conv(ColumnType::Bigint, "true").is_err());
        assert_eq!(conv(ColumnType::Double, "\"1.5\""), Ok(Value::Double(1.5)));
        assert!(conv(ColumnType::Double, "1e400").is_err());
        assert!(conv(ColumnType::Double, "\"NaN\"").is_err());
    }

    #[test]
    fn numerics_are_canonical_and_checked_against_precision_and_scale() {
        let n = ColumnType::Numeric {
            precision: Some(10),
            scale: Some(2),
        };
        let v = |t: &str, u: Option<i128>| Value::Numeric {
            text: t.into(),
            unscaled: u,
        };
        assert_eq!(conv(n, "19.90"), Ok(v("19.9", Some(1990))));
        assert_eq!(conv(n, "\"-0.5\""), Ok(v("-0.5", Some(-50))));
        assert_eq!(conv(n, "1.5e2"), Ok(v("150", Some(15000))));
        assert_eq!(conv(n, "0"), Ok(v("0", Some(0))));
        assert!(conv(n, "1.999").is_err(), "more places than the scale");
        assert!(
            conv(n, "123456789").is_err(),
            "more digits than the precision"
        );
        let free = ColumnType::Numeric {
            precision: None,
            scale: None,
        };
        assert_eq!(conv(free, "0.000"), Ok(v("0", None)));
        assert_eq!(conv(free, "-00.10"), Err("is not a decimal number"));
        assert_eq!(
            conv(free, "12345678901234567890.123"),
            Ok(v("12345678901234567890.123", None))
        );
    }

    #[test]
    fn timestamps_accept_rfc3339_and_epoch_numbers_with_a_unit() {
        let rfc = ColumnType::Timestamptz { unit: None };
        let ms = ColumnType::Timestamptz {
            unit: Some(EpochUnit::Millis),
        };
        let t = 1_709_289_296_789_000;
        assert_eq!(
            conv(rfc, "\"2024-03-01T10:34:56.789Z\""),
            Ok(Value::Timestamp(t))
        );
        assert_eq!(
            conv(rfc, "\"2024-03-01T10:34:56.789\""),
            Ok(Value::Timestamp(t))
        );
        assert_eq!(
            conv(rfc, "\"2024-03-01T11:34:56.789+01:00\""),
            Ok(Value::Timestamp(t))
        );
        assert!(conv(rfc, "1709289296789").is_err(), "a number needs a unit");
        assert_eq!(conv(ms, "1709289296789"), Ok(Value::Timestamp(t)));
        assert_eq!(conv(ms, "\"1709289296789\""), Ok(Value::Timestamp(t)));
        assert!(conv(ms, "\"yesterday\"").is_err());
        assert!(conv(ms, "99999999999999999").is_err(), "out of range");
        let s = ColumnType::Timestamptz {
            unit: Some(EpochUnit::Seconds),
        };
        assert_eq!(conv(s, "1709289296.789"), Ok(Value::Timestamp(t)));
    }

    #[test]
    fn other_types_accept_their_forms_only() {
        assert_eq!(conv(ColumnType::Boolean, "true"), Ok(Value::Bool(true)));
        assert_eq!(
            conv(ColumnType::Boolean, "\"false\""),
            Ok(Value::Bool(false))
        );
        assert!(conv(ColumnType::Boolean, "1").is_err());
        assert_eq!(
            conv(ColumnType::Date, "\"2024-02-29\""),
            Ok(Value::Date(19_782))
        );
        assert!(conv(ColumnType::Date, "\"2023-02-29\"").is_err());
        let u = conv(ColumnType::Uuid, "\"6F9619FF-8B86-D011-B42D-00C04FC964FF\"").unwrap();
        assert_eq!(u.identity_text(), "6f9619ff-8b86-d011-b42d-00c04fc964ff");
        assert!(conv(ColumnType::Uuid, "\"6f9619ff\"").is_err());
        assert_eq!(conv(ColumnType::Text, "12"), Ok(Value::Text("12".into())));
        assert!(conv(ColumnType::Text, "{\"a\":1}").is_err());
        assert!(conv(ColumnType::Text, "\"a\\u0000b\"").is_err(), "NUL");
        assert!(
            conv(ColumnType::Text, "\"\\ud800\"").is_err(),
            "lone surrogate"
        );
        assert_eq!(
            conv(ColumnType::Text, "\"a\\\"b\""),
            Ok(Value::Text("a\"b".into()))
        );
        assert_eq!(
            conv(ColumnType::Jsonb, "[1,{\"a\":2}]"),
            Ok(Value::Json("[1,{\"a\":2}]".into()))
        );
        assert!(conv(ColumnType::Jsonb, "\"\\u0000\"").is_err());
        assert_eq!(conv(ColumnType::Integer, "null"), Ok(Value::Null));
    }
}
