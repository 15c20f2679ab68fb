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
    /// A `[route.cdc]` route's `cdc_position` (128 bits), narrowed to what orders one key's
    /// changes — the index compares versions per document, that is per key: PostgreSQL, the
    /// change's LSN (a row's next change waits for the lock of the transaction before it, so
    /// its LSN is higher); MySQL, binlog file number (15 bits), pos (32 bits) and row (16
    /// bits). Plus one; a position outside that range has no version.
    ChangePosition(crate::cdc::CdcDialect),
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
            (
                VersionOf::ChangePosition(dialect),
                Value::Numeric {
                    unscaled: Some(u), ..
                },
            ) => change_version(dialect, *u)?,
            _ => return Err("the newest_by value is not of its column's type"),
        };
        match u64::try_from(v) {
            Ok(v) if v <= MAX_VERSION => Ok(v),
            _ => Err("the newest_by value is out of the index's version range"),
        }
    }
}

/// The 63-bit part of a change position that orders one key's changes (see
/// [`VersionOf::ChangePosition`]), plus one.
fn change_version(dialect: crate::cdc::CdcDialect, position: i128) -> Result<i128, &'static str> {
    const OUT: &str = "the change's source position is beyond the index's 63-bit versions";
    let position = u128::try_from(position).map_err(|_| OUT)?;
    let low = position & u128::from(u64::MAX);
    let narrowed = match dialect {
        crate::cdc::CdcDialect::Postgres => low,
        crate::cdc::CdcDialect::Mysql => {
            let file = position >> 64;
            // `low` is pos << 16 | row: pos must fit 32 bits, the file number 15.
            if low >= 1 << 48 || file >= 1 << 15 {
                return Err(OUT);
            }
            file << 48 | low
        }
    };
    i128::try_from(narrowed + 1).map_err(|_| OUT)
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

    #[test]
    fn change_positions_narrow_to_versions_that_keep_one_keys_order() {
        use crate::cdc::{CdcDialect, ChangePosition};
        let numeric = |p: ChangePosition| Value::Numeric {
            text: p.to_decimal_string().into(),
            unscaled: i128::try_from(p.as_u128()).ok(),
        };
        let pg = VersionOf::ChangePosition(CdcDialect::Postgres);
        // Given two changes of one PostgreSQL key: the later one has the higher LSN
        let earlier = numeric(ChangePosition::postgres(24_023_119, 24_023_128));
        let later = numeric(ChangePosition::postgres(24_023_160, 24_023_168));
        // Then their versions are the LSNs plus one, in the same order
        assert_eq!(pg.version(&earlier), Ok(24_023_129));
        assert!(pg.version(&earlier).unwrap() < pg.version(&later).unwrap());
        // MySQL: a binlog rollover at a smaller pos still orders after the old file
        let my = VersionOf::ChangePosition(CdcDialect::Mysql);
        let old = numeric(ChangePosition::mysql(9, 9_999, 0).unwrap());
        let new = numeric(ChangePosition::mysql(10, 4, 0).unwrap());
        let row1 = numeric(ChangePosition::mysql(10, 4, 1).unwrap());
        let (o, n, r) = (
            my.version(&old).unwrap(),
            my.version(&new).unwrap(),
            my.version(&row1).unwrap(),
        );
        assert!(o < n && n < r, "{o} {n} {r}");
        // and a position past the narrowed range has no version, saying so
        let far = numeric(ChangePosition::mysql(1 << 15, 4, 0).unwrap());
        assert!(my.version(&far).unwrap_err().contains("63-bit"));
        let wide = numeric(ChangePosition::mysql(1, 1 << 40, 0).unwrap());
        assert!(my.version(&wide).is_err());
    }
}
