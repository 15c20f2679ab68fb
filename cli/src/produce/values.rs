//! A value of each column type for a route's records: decimals that fit precision and scale,
//! instants in the column's unit, dates, counters and small JSON documents.

use streamload_core::route::{ColumnSource, ColumnType, EpochUnit};

use super::{Rng, RouteShape};

/// `unscaled` / 10^`scale` as decimal text with exactly `scale` decimals.
pub(super) fn decimal_text(unscaled: i128, scale: u32) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let sign = if unscaled < 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale as usize + 1);
    let (int, frac) = padded.split_at(padded.len() - scale as usize);
    format!("{sign}{int}.{frac}")
}

/// A numeric value as JSON: a string keeps it exact; a whole number that fits is a number.
pub(super) fn decimal_json(unscaled: i128, scale: u32) -> serde_json::Value {
    if scale == 0 {
        if let Ok(i) = i64::try_from(unscaled) {
            if i.unsigned_abs() < (1 << 53) {
                return i.into();
            }
        }
    }
    decimal_text(unscaled, scale).into()
}

/// Parses decimal text to an unscaled integer at `scale` decimals (no more decimals allowed).
pub(super) fn unscaled_at(text: &str, scale: u32) -> Option<i128> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        || frac.len() > scale as usize
    {
        return None;
    }
    let mut digits = format!("{int}{frac}");
    digits.extend(std::iter::repeat_n('0', scale as usize - frac.len()));
    let magnitude: i128 = digits.trim_start_matches('0').parse().unwrap_or(0);
    Some(if negative { -magnitude } else { magnitude })
}

pub(super) fn decimals_of(text: &str) -> u32 {
    text.split_once('.').map_or(0, |(_, f)| f.len() as u32)
}

pub(super) fn pow10(n: u32) -> u128 {
    10u128.saturating_pow(n)
}

/// A timestamptz value: RFC 3339 text, or an epoch number in the column's unit.
pub(super) fn time_json(unit: Option<EpochUnit>, us: i64) -> serde_json::Value {
    match unit {
        Some(EpochUnit::Seconds) => us.div_euclid(1_000_000).into(),
        Some(EpochUnit::Millis) => us.div_euclid(1_000).into(),
        Some(EpochUnit::Micros) => us.into(),
        None => chrono::DateTime::from_timestamp_micros(us)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .into(),
    }
}

/// One step of a timestamptz counter: the smallest the column's unit tells apart.
pub(super) fn time_step(unit: Option<EpochUnit>) -> i64 {
    match unit {
        Some(EpochUnit::Seconds) => 1_000_000,
        Some(EpochUnit::Millis) => 1_000,
        _ => 1,
    }
}

/// A date `days` after 1970-01-01, as `YYYY-MM-DD`.
pub(super) fn date_json(days: i64) -> serde_json::Value {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|e| e.checked_add_signed(chrono::Duration::days(days)))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .into()
}

pub(super) const DAYS_2020_01_01: i64 = 18_262;
pub(super) const DAYS_2024_01_01: i64 = 19_723;
pub(super) const US_2026_01_01: i64 = 1_767_225_600_000_000;

pub(super) fn digits_of(n: u64) -> usize {
    n.max(1).to_string().len()
}

/// The digits of a text revision (`"r-0000000003"`): one width for every run, so the text
/// order of revisions is their number order across runs too.
pub(super) const REVISION_TEXT_DIGITS: u32 = 10;

/// Why a column of type `ty` cannot hold a run's counters — numbered above `after` (what
/// earlier runs used), at most `count` of them — if it cannot.
pub(super) fn counter_fits(
    ty: ColumnType,
    after: u64,
    count: u64,
    revision: bool,
) -> Result<(), String> {
    let top = after.saturating_add(count);
    let earlier = if after > 0 {
        format!(
            " (earlier runs into this stream counted to {after}; to start again from 1, empty the table and delete its produce ledger in {})",
            super::Ledger::DIR
        )
    } else {
        String::new()
    };
    match ty {
        ColumnType::Numeric {
            precision: Some(p),
            scale,
        } => {
            let (p, s) = (u32::from(p), u32::from(scale.unwrap_or(0)));
            if u128::from(top) >= pow10(p) {
                return Err(format!(
                    "(numeric({p})) cannot hold {top} distinct values; produce fewer --events{earlier}"
                ));
            }
            // Past the whole numbers a counter steps by the last decimal: smaller values than
            // an earlier run's whole numbers, so a later run may not go there.
            let whole = pow10(p.saturating_sub(s));
            if after > 0 && u128::from(top) >= whole {
                return Err(format!(
                    "(numeric({p}, {s})) holds whole numbers below {whole}, and this run would count to {top}; produce fewer --events{earlier}"
                ));
            }
            Ok(())
        }
        ColumnType::Integer if top > i32::MAX as u64 => Err(format!(
            "(integer) cannot count to {top}; produce fewer --events{earlier}"
        )),
        ColumnType::Text if revision && u128::from(top) >= pow10(REVISION_TEXT_DIGITS) => {
            Err(format!(
                "(text) cannot number {top} revisions in {REVISION_TEXT_DIGITS} digits{earlier}"
            ))
        }
        _ => Ok(()),
    }
}

impl RouteShape {
    /// A numeric counter's value: whole numbers at the column's scale while the counter's
    /// highest value `top` fits its precision, else steps of one unit of the last decimal.
    pub(super) fn numeric_count(&self, ty: ColumnType, n: u64, top: u64) -> serde_json::Value {
        let ColumnType::Numeric { precision, scale } = ty else {
            return n.into();
        };
        let Some(p) = precision else {
            return n.into();
        };
        let s = u32::from(scale.unwrap_or(0));
        let whole = u128::from(top) < pow10(u32::from(p) - s);
        let unscaled = if whole {
            i128::from(n) * pow10(s) as i128
        } else {
            i128::from(n)
        };
        decimal_json(unscaled, s)
    }

    /// The `n`-th record's value of an identity part that is unique per record: numbered
    /// above the records of earlier runs.
    pub(super) fn unique(&self, ty: ColumnType, n: u64, rng: &mut Rng) -> serde_json::Value {
        let top = self.after.record + self.max_count;
        let n = self.after.record + n;
        match ty {
            ColumnType::Integer | ColumnType::Bigint => n.into(),
            ColumnType::Double => (n as f64).into(),
            ColumnType::Numeric { .. } => self.numeric_count(ty, n, top),
            ColumnType::Timestamptz { unit } => time_json(
                unit,
                self.start_us - 3_600_000_000 + n as i64 * time_step(unit),
            ),
            ColumnType::Date => date_json(DAYS_2020_01_01 + n as i64),
            ColumnType::Boolean => rng.chance(0.5).into(),
            _ => rng.uuid().into(),
        }
    }

    pub(super) fn typed(&self, index: usize, rng: &mut Rng) -> serde_json::Value {
        let c = &self.route.columns[index];
        match c.ty {
            ColumnType::Text => format!("{}-{}", c.name, rng.below(20)).into(),
            ColumnType::Integer => rng.below(10_000).into(),
            ColumnType::Bigint => rng.below(1_000_000_000).into(),
            ColumnType::Double => (rng.below(10_000) as f64 / 100.0).into(),
            ColumnType::Numeric { precision, scale } => {
                let (int_digits, s) = match precision {
                    Some(p) => {
                        let s = u32::from(scale.unwrap_or(0));
                        (u32::from(p) - s, s)
                    }
                    None => (6, 2),
                };
                let int = rng.below(pow10(int_digits).min(1_000_000) as u64);
                let mut text = int.to_string();
                if s > 0 {
                    text.push('.');
                    for _ in 0..s {
                        text.push(char::from(b'0' + rng.below(10) as u8));
                    }
                    text.into()
                } else {
                    int.into()
                }
            }
            ColumnType::Boolean => rng.chance(0.5).into(),
            ColumnType::Timestamptz { unit } => {
                time_json(unit, self.start_us - rng.below(3_600_000_000) as i64)
            }
            ColumnType::Date => date_json(
                chrono::Utc::now().timestamp().div_euclid(86_400) + rng.below(61) as i64 - 30,
            ),
            ColumnType::Uuid => rng.uuid().into(),
            ColumnType::Jsonb => {
                let mut one = || {
                    serde_json::json!({
                        "n": rng.below(100),
                        "tag": format!("t{}", rng.below(10)),
                        "ok": rng.chance(0.5),
                    })
                };
                // An array when another column reads an index inside this one.
                match self.child_index(index) {
                    Some(n) => (0..=n).map(|_| one()).collect::<Vec<_>>().into(),
                    None => one(),
                }
            }
        }
    }

    /// The largest array index another pointer column reads directly inside column `index`.
    pub(super) fn child_index(&self, index: usize) -> Option<usize> {
        let ColumnSource::Pointer(parent) = &self.route.columns[index].source else {
            return None;
        };
        let prefix = format!("{parent}/");
        self.route
            .columns
            .iter()
            .filter_map(|c| match &c.source {
                ColumnSource::Pointer(p) => p.strip_prefix(&prefix),
                ColumnSource::Meta(_) => None,
            })
            .filter_map(|rest| rest.split('/').next()?.parse::<usize>().ok())
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::produce::test_routes::{doc, sensor_route, shape};

    #[test]
    fn a_numeric_5_2_column_never_exceeds_its_precision_or_scale() {
        // Given a route with a numeric(5, 2) column
        let mut shape = shape(&sensor_route("text", None), "sensors", 100, &[]).unwrap();
        let mut rng = Rng::from_seed(1);
        // When 10,000 records are made
        let mut seen = 0;
        for _ in 0..10_000 {
            let (_, _, rec) = shape.record(&mut rng).unwrap();
            let Some(h) = doc(&rec).pointer("/reading/humidity").cloned() else {
                continue;
            };
            // Then each value is exact text within 0..=999.99 with exactly 2 decimals
            let text = h.as_str().unwrap_or_else(|| panic!("not a string: {h}"));
            let (int, frac) = text.split_once('.').unwrap();
            assert_eq!(frac.len(), 2, "{text}");
            assert!(int.len() <= 3 && !int.starts_with('-'), "{text}");
            let v: f64 = text.parse().unwrap();
            assert!((0.0..=999.99).contains(&v), "{text}");
            seen += 1;
        }
        // and the optional column is present most of the time
        assert!((8_500..9_500).contains(&seen), "{seen}");
    }

    #[test]
    fn every_type_gets_values_that_fit_and_integers_fit_i32() {
        // Given a route with a column of each type, and integer, uuid and text keys
        for key_type in ["text", "integer", "uuid"] {
            let text = sensor_route(key_type, None);
            let mut shape = shape(&text, "sensors", 50, &[]).unwrap();
            let mut rng = Rng::from_seed(2);
            for _ in 0..3_000 {
                // When records are made, each maps through the route as the loader maps it
                let (id, event, rec) = shape.record(&mut rng).unwrap();
                let d = doc(&rec);
                // Then integers fit i32 and are realistic, times are recent epoch ms or RFC 3339
                if let Some(c) = d.get("count") {
                    let c = c.as_i64().unwrap();
                    assert!(i32::try_from(c).is_ok() && (0..10_000).contains(&c), "{c}");
                }
                let now = chrono::Utc::now().timestamp_millis();
                let ts = d["ts"].as_i64().unwrap();
                assert!((now - 3_700_000..=now).contains(&ts), "{ts}");
                if let Some(seen) = d.get("seen") {
                    assert!(chrono::DateTime::parse_from_rfc3339(seen.as_str().unwrap()).is_ok());
                }
                if let Some(day) = d.get("day") {
                    assert!(
                        chrono::NaiveDate::parse_from_str(day.as_str().unwrap(), "%Y-%m-%d")
                            .is_ok()
                    );
                }
                if let Some(b) = d.get("batch") {
                    assert_eq!(b.as_str().map(str::len), Some(36));
                }
                // and the identity is the key
                assert_eq!(event.identity, event.key);
                assert_eq!(id, event.key[0]);
            }
        }
    }
}
