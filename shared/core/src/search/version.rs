//! Index versions: the route's `newest_by` value mapped, order-preserving, into the 64-bit
//! external versions OpenSearch and Elasticsearch compare (0 to 2^63 − 1).
//!
//! The version is not a source position: Kinesis sequence numbers (up to 56 decimal digits)
//! do not fit, and neither they nor Kafka offsets order events across shards or partitions.
//! It is the value PostgreSQL's merge compares, so both sinks agree on what "newest" is. NULL
//! maps to 0, below every value, as PostgreSQL's merge takes NULL as lower than anything.

use crate::route::{ColumnType, Value};

/// The highest external version the engines accept (a signed long).
pub const MAX_VERSION: u64 = i64::MAX as u64;
/// Microseconds from the Unix epoch to 0001-01-01T00:00:00Z, the earliest timestamp a route
/// reads: a timestamp's version is its distance from there, plus one.
const MIN_TIMESTAMP_US: i64 = -62_135_596_800_000_000;
/// Days from 1970-01-01 back to 0001-01-01.
const MIN_DATE_DAYS: i64 = -719_162;
/// The offset of a `numeric(p ≤ 18, s)` unscaled value: |unscaled| < 10^18.
const NUMERIC_OFFSET: i128 = 1_000_000_000_000_000_000;
/// The largest precision a numeric version can have.
pub const MAX_NUMERIC_PRECISION: u8 = 18;

/// How a route's `newest_by` column becomes a version, decided at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionOf {
    /// `integer`, `bigint`: the value plus one (a negative value cannot be a version).
    Integer,
    /// `timestamptz`: microseconds since 0001-01-01, plus one.
    Timestamp,
    /// `date`: days since 0001-01-01, plus one.
    Date,
    /// `numeric(p ≤ 18, s)`: the unscaled value plus 10^18.
    Numeric,
}

impl VersionOf {
    /// The mapping for a column of `ty`, or why none keeps the order in 63 bits.
    pub fn for_column(ty: ColumnType) -> Result<Self, &'static str> {
        match ty {
            ColumnType::Integer | ColumnType::Bigint => Ok(VersionOf::Integer),
            ColumnType::Timestamptz { .. } => Ok(VersionOf::Timestamp),
            ColumnType::Date => Ok(VersionOf::Date),
            ColumnType::Numeric {
                precision: Some(p), ..
            } if p <= MAX_NUMERIC_PRECISION => Ok(VersionOf::Numeric),
            ColumnType::Numeric { .. } => Err("numeric without a precision of at most 18"),
            ColumnType::Text => Err("text"),
            ColumnType::Double => Err("double"),
            ColumnType::Uuid => Err("uuid"),
            ColumnType::Boolean => Err("boolean"),
            ColumnType::Jsonb => Err("jsonb"),
        }
    }

    /// The version of `value`, or why it has none (a negative integer).
    pub fn version(self, value: &Value) -> Result<u64, &'static str> {
        let v: i128 = match (self, value) {
            (_, Value::Null) => return Ok(0),
            (VersionOf::Integer, Value::Int(n)) if *n < 0 => {
                return Err("the newest_by value is negative, and index versions cannot be")
            }
            (VersionOf::Integer, Value::Int(n)) => i128::from(*n) + 1,
            (VersionOf::Timestamp, Value::Timestamp(us)) => {
                i128::from(*us) - i128::from(MIN_TIMESTAMP_US) + 1
            }
            (VersionOf::Date, Value::Date(days)) => {
                i128::from(*days) - i128::from(MIN_DATE_DAYS) + 1
            }
            (
                VersionOf::Numeric,
                Value::Numeric {
                    unscaled: Some(u), ..
                },
            ) => u + NUMERIC_OFFSET,
            _ => return Err("the newest_by value is not of its column's type"),
        };
        match u64::try_from(v) {
            Ok(v) if v <= MAX_VERSION => Ok(v),
            _ => Err("the newest_by value is out of the index's version range"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_keep_the_order_of_their_values_and_null_is_lowest() {
        let ordered = |of: VersionOf, values: &[Value]| {
            let v: Vec<u64> = values.iter().map(|x| of.version(x).unwrap()).collect();
            assert!(v.windows(2).all(|w| w[0] < w[1]), "{of:?}: {v:?}");
            assert!(v.iter().all(|&x| x <= MAX_VERSION));
        };
        ordered(
            VersionOf::Integer,
            &[
                Value::Null,
                Value::Int(0),
                Value::Int(1),
                Value::Int(i64::MAX - 1),
            ],
        );
        ordered(
            VersionOf::Timestamp,
            &[
                Value::Null,
                Value::Timestamp(MIN_TIMESTAMP_US),
                Value::Timestamp(-1),
                Value::Timestamp(0),
                Value::Timestamp(1_733_300_000_000_000),
                Value::Timestamp(253_402_300_799_999_999), // 9999-12-31T23:59:59.999999Z
            ],
        );
        ordered(
            VersionOf::Date,
            &[
                Value::Null,
                Value::Date(-719_162),
                Value::Date(0),
                Value::Date(2_932_896),
            ],
        );
        let num = |u: i128| Value::Numeric {
            text: "x".into(),
            unscaled: Some(u),
        };
        ordered(
            VersionOf::Numeric,
            &[
                Value::Null,
                num(-999_999_999_999_999_999),
                num(-1),
                num(0),
                num(999_999_999_999_999_999),
            ],
        );
    }

    #[test]
    fn values_without_a_version_say_why() {
        assert!(VersionOf::Integer.version(&Value::Int(-1)).is_err());
        assert!(VersionOf::Integer.version(&Value::Int(i64::MAX)).is_err());
        assert!(VersionOf::Timestamp.version(&Value::Int(5)).is_err());
    }

    #[test]
    fn only_types_that_fit_63_bits_in_order_have_a_mapping() {
        use ColumnType as T;
        for ty in [
            T::Integer,
            T::Bigint,
            T::Timestamptz { unit: None },
            T::Date,
        ] {
            assert!(VersionOf::for_column(ty).is_ok(), "{ty:?}");
        }
        assert_eq!(
            VersionOf::for_column(T::Numeric {
                precision: Some(18),
                scale: Some(2)
            }),
            Ok(VersionOf::Numeric)
        );
        for ty in [
            T::Numeric {
                precision: Some(19),
                scale: None,
            },
            T::Numeric {
                precision: None,
                scale: None,
            },
            T::Text,
            T::Double,
            T::Uuid,
        ] {
            assert!(VersionOf::for_column(ty).is_err(), "{ty:?}");
        }
    }
}
