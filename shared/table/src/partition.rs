//! Iceberg's `day` and `hour` partition transforms over a timestamp (the route's event time),
//! as the spec defines them: whole days or hours since 1970-01-01T00:00 UTC, rounding toward
//! negative infinity (an instant before the epoch is in day −1, not day 0).

/// Microseconds in an hour.
const HOUR_US: i64 = 3_600_000_000;

/// How a route's table is partitioned by its event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transform {
    Day,
    Hour,
}

/// A partition's value: the transform's result (days or hours since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionValue {
    pub transform: Transform,
    pub value: i64,
}

impl Transform {
    /// The partition of an event time in microseconds since the epoch (UTC).
    ///
    /// ```
    /// use streamload_table::partition::Transform;
    /// // 2024-03-01T10:34:56Z
    /// let t = 1_709_289_296_000_000;
    /// assert_eq!(Transform::Day.apply(t).value, 19_783);
    /// assert_eq!(Transform::Hour.apply(t).value, 19_783 * 24 + 10);
    /// ```
    pub fn apply(self, event_time_us: i64) -> PartitionValue {
        let hours = event_time_us.div_euclid(HOUR_US);
        PartitionValue {
            transform: self,
            value: match self {
                Transform::Hour => hours,
                Transform::Day => hours.div_euclid(24),
            },
        }
    }

    /// The partition of a staged object whose key names its event-time hour
    /// (`…/dt=YYYY-MM-DD/hour=HH/…`, the loaders' per-hour staging); `None` for a key that names
    /// none (per-batch staging, a commit marker): its rows are partitioned one by one.
    pub fn of_staged_key(self, key: &str) -> Option<PartitionValue> {
        let date = key.split('/').find_map(|part| part.strip_prefix("dt="))?;
        let hour: i64 = key
            .split('/')
            .find_map(|part| part.strip_prefix("hour="))?
            .parse()
            .ok()
            .filter(|h| (0..24).contains(h))?;
        let days = days_from_civil(date)?;
        Some(self.apply((days * 24 + hour) * HOUR_US))
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date, or `None` if it is not one.
fn days_from_civil(date: &str) -> Option<i64> {
    let date = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    Some((date - epoch).num_days())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_before_the_epoch_round_down_as_the_spec_says() {
        // 1969-12-31T23:59:59.999999Z is in day −1 and hour −1, not 0
        assert_eq!(Transform::Day.apply(-1).value, -1);
        assert_eq!(Transform::Hour.apply(-1).value, -1);
        assert_eq!(Transform::Day.apply(0).value, 0);
        assert_eq!(Transform::Hour.apply(HOUR_US - 1).value, 0);
        assert_eq!(Transform::Hour.apply(HOUR_US).value, 1);
    }

    #[test]
    fn a_staged_keys_hour_gives_the_same_partition_as_its_rows() {
        // Given a row's event time and the key the loaders stage it under
        let t = 1_709_289_296_000_000; // 2024-03-01T10:34:56Z
        let key = "orders/dt=2024-03-01/hour=10/orders_shardId-1-5-9-req-1.parquet";
        // Then both transforms agree between the key and the row
        for transform in [Transform::Day, Transform::Hour] {
            assert_eq!(transform.of_staged_key(key), Some(transform.apply(t)));
        }
        // And a leap day and a date before the epoch are placed right
        assert_eq!(
            Transform::Day.of_staged_key("x/dt=2024-02-29/hour=00/a.parquet"),
            Some(Transform::Day.apply(1_709_164_800_000_000))
        );
        assert_eq!(
            Transform::Day
                .of_staged_key("x/dt=1969-12-31/hour=23/a.parquet")
                .map(|p| p.value),
            Some(-1)
        );
    }

    #[test]
    fn a_key_naming_no_hour_or_an_impossible_one_has_no_partition() {
        for key in [
            "orders/_markers/u-1-2-r.jsonl",
            "orders/dt=2024-02-30/hour=01/a.parquet",
            "orders/dt=2024-03-01/hour=24/a.parquet",
            "orders/dt=2024-03-01/a.parquet",
        ] {
            assert_eq!(Transform::Hour.of_staged_key(key), None, "{key}");
        }
    }
}
