//! `--set COLUMN=GEN`: parsing a generator that replaces a column's own, checking that its
//! values fit the column, and making them.

use streamload_core::route::{ColumnSource, ColumnType, Route};

use super::shape::Gen;
use super::values::{decimal_json, decimal_text, decimals_of, time_json, unscaled_at};
use super::{Rng, RouteShape};
use crate::CliError;

/// The generators `--set COLUMN=GEN` takes, for its error messages.
pub const SET_VOCABULARY: &str = "const:<json>, range:<lo>..<hi>, choice:a|b|c, seq, uuid, now";

/// A generator named with `--set COLUMN=GEN`.
#[derive(Debug, Clone)]
pub(super) enum Override {
    Const(serde_json::Value),
    /// Inclusive bounds, unscaled at `scale` decimals.
    Range {
        lo: i128,
        hi: i128,
        scale: u32,
    },
    Choice(Vec<serde_json::Value>),
    Seq,
    Uuid,
    Now,
}

/// Parses one `--set COLUMN=GEN` of `route`.
pub(super) fn parse_set(
    route: &Route,
    gens: &[Gen],
    spec: &str,
) -> Result<(usize, Override), CliError> {
    let bad = |what: String| CliError::Usage(format!("--set {spec}: {what}"));
    let (column, gen) = spec
        .split_once('=')
        .ok_or_else(|| bad("expected COLUMN=GEN".into()))?;
    let i = route
        .columns
        .iter()
        .position(|c| c.name == column)
        .ok_or_else(|| bad(format!("route {:?} has no column {column:?}", route.name)))?;
    let c = &route.columns[i];
    match (&c.source, &gens[i]) {
        (ColumnSource::Meta(_), _) | (_, Gen::Skip) => {
            return Err(bad(format!(
                "column {column:?} comes from the stream's metadata, not from the record"
            )))
        }
        (_, Gen::Key(_)) => {
            return Err(bad(format!(
                "column {column:?} is part of the key; its values come from the --keys pool"
            )))
        }
        (_, Gen::Revision) => {
            return Err(bad(format!(
                "column {column:?} is the newest_by column; its values are increasing revisions per key"
            )))
        }
        _ => {}
    }
    let ty = c.ty;
    let type_name = ty.sql_type();
    // A value the column takes, or why not.
    let fits = |v: &serde_json::Value| -> Result<(), CliError> {
        let raw = v.to_string();
        streamload_core::route::value::convert(ty, &raw, &bytes::Bytes::from(raw.clone()))
            .map(|_| ())
            .map_err(|why| bad(format!("{raw} {why} (column {column:?} is {type_name})")))
    };
    let (name, arg) = gen.split_once(':').unwrap_or((gen, ""));
    let kind = |allowed: bool| {
        if allowed {
            Ok(())
        } else {
            Err(bad(format!(
                "{name} does not apply to column {column:?} ({type_name})"
            )))
        }
    };
    let o = match name {
        "const" => {
            let v: serde_json::Value = serde_json::from_str(arg)
                .map_err(|e| bad(format!("const:{arg} is not JSON ({e})")))?;
            fits(&v)?;
            Override::Const(v)
        }
        "range" => {
            use ColumnType as T;
            kind(matches!(
                ty,
                T::Integer | T::Bigint | T::Double | T::Numeric { .. }
            ))?;
            let (lo, hi) = arg
                .split_once("..")
                .ok_or_else(|| bad("expected range:<lo>..<hi>".into()))?;
            let scale = match ty {
                T::Integer | T::Bigint => 0,
                T::Numeric {
                    precision: Some(_),
                    scale,
                } => u32::from(scale.unwrap_or(0)),
                _ => decimals_of(lo).max(decimals_of(hi)),
            };
            let parse = |t: &str| {
                unscaled_at(t.trim(), scale).ok_or_else(|| {
                    bad(format!(
                        "{t:?} is not a number with at most {scale} decimals (column {column:?} is {type_name})"
                    ))
                })
            };
            let (lo, hi) = (parse(lo)?, parse(hi)?);
            if lo > hi {
                return Err(bad("the range's low end is above its high end".into()));
            }
            for v in [lo, hi] {
                fits(&decimal_text(v, scale).into())?;
            }
            Override::Range { lo, hi, scale }
        }
        "choice" => {
            let options: Vec<serde_json::Value> = arg
                .split('|')
                .map(|o| serde_json::from_str(o).unwrap_or_else(|_| o.into()))
                .collect();
            if arg.is_empty() {
                return Err(bad("expected choice:a|b|c".into()));
            }
            for o in &options {
                fits(o)?;
            }
            Override::Choice(options)
        }
        "seq" if arg.is_empty() => {
            use ColumnType as T;
            kind(matches!(
                ty,
                T::Text | T::Integer | T::Bigint | T::Double | T::Numeric { .. }
            ))?;
            Override::Seq
        }
        "uuid" if arg.is_empty() => {
            kind(matches!(ty, ColumnType::Text | ColumnType::Uuid))?;
            Override::Uuid
        }
        "now" if arg.is_empty() => {
            kind(matches!(
                ty,
                ColumnType::Timestamptz { .. } | ColumnType::Date
            ))?;
            Override::Now
        }
        _ => {
            return Err(bad(format!(
                "unknown generator {gen:?} (use {SET_VOCABULARY})"
            )))
        }
    };
    Ok((i, o))
}

impl RouteShape {
    pub(super) fn set_value(&mut self, o: &Override, i: usize, rng: &mut Rng) -> serde_json::Value {
        let ty = self.route.columns[i].ty;
        match o {
            Override::Const(v) => v.clone(),
            Override::Range { lo, hi, scale } => {
                let width = (hi - lo) as u128 + 1;
                let r = ((u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64())) % width;
                let v = lo + r as i128;
                match ty {
                    ColumnType::Double => decimal_text(v, *scale)
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map_or(serde_json::Value::Null, serde_json::Value::Number),
                    _ => decimal_json(v, *scale),
                }
            }
            Override::Choice(options) => options[rng.below(options.len() as u64) as usize].clone(),
            Override::Seq => {
                self.seqs[i] += 1;
                match ty {
                    ColumnType::Text => self.seqs[i].to_string().into(),
                    _ => self.numeric_count(ty, self.seqs[i], self.max_count),
                }
            }
            Override::Uuid => rng.uuid().into(),
            Override::Now => match ty {
                ColumnType::Date => chrono::Utc::now().format("%Y-%m-%d").to_string().into(),
                ColumnType::Timestamptz { unit } => {
                    time_json(unit, chrono::Utc::now().timestamp_micros())
                }
                _ => serde_json::Value::Null,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::produce::test_routes::{doc, sensor_route, shape};

    #[test]
    fn set_replaces_a_columns_generator_and_a_bad_one_is_named() {
        let text = sensor_route("text", None);
        // Given overrides of four columns
        let mut s = shape(
            &text,
            "sensors",
            10,
            &[
                "note=choice:low|high",
                "humidity=range:10..20",
                "ok=const:true",
                "count=seq",
                "batch=uuid",
                "seen=now",
            ],
        )
        .unwrap();
        let mut rng = Rng::from_seed(6);
        for n in 1..=500 {
            let (_, _, rec) = s.record(&mut rng).unwrap();
            let d = doc(&rec);
            // Then each is always present and made by its generator
            assert!(matches!(d["note"].as_str(), Some("low" | "high")), "{d}");
            let h: f64 = d["reading"]["humidity"].as_str().unwrap().parse().unwrap();
            assert!((10.0..=20.0).contains(&h), "{h}");
            assert_eq!(d["ok"], true);
            assert_eq!(d["count"], n);
            assert_eq!(d["batch"].as_str().map(str::len), Some(36));
            assert!(d["seen"].is_string());
        }
        // And a bad column or generator is one line naming it
        let err = |set: &str| {
            shape(&text, "sensors", 10, &[set])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(
            err("nope=seq").contains("no column \"nope\""),
            "{}",
            err("nope=seq")
        );
        assert!(err("note=bogus").contains("unknown generator \"bogus\""));
        assert!(
            err("humidity=range:1..1000").contains("humidity"),
            "{}",
            err("humidity=range:1..1000")
        );
        assert!(err("humidity=range:1..2.345").contains("humidity"));
        assert!(err("count=const:\"x\"").contains("count"));
        assert!(err("device=seq").contains("key"));
        assert!(err("pk=const:\"x\"").contains("metadata"));
        assert!(err("ok=now").contains("\"ok\""));
        for set in ["nope=seq", "note=bogus", "count=const:\"x\""] {
            assert_eq!(err(set).lines().count(), 1, "{}", err(set));
        }
    }
}
