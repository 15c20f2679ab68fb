//! `[route.iceberg]`: the Apache Iceberg table the table committer appends the route's staged
//! objects to (docs/configuration.md, "The lake as an Iceberg table"). Plain settings checked
//! at start-up; the loaders ignore them, the committer (`functions/table-committer`) acts on
//! them. No Iceberg library here: the loaders' build never grows because of it.

use serde::Deserialize;

/// Default size of the data files a commit writes: Iceberg's own default target
/// (`write.target-file-size-bytes`, 512 MiB) is for batch engines; 128 MiB keeps a committer's
/// memory bounded while still merging thousands of staged objects into one file.
pub const DEFAULT_TARGET_FILE_MB: u32 = 128;

/// The namespace a route's table is created in when the route names none.
pub const DEFAULT_NAMESPACE: &str = "streamload";

/// `[route.iceberg]` as written in the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcebergSpec {
    /// Default `streamload`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Default: the route's name.
    #[serde(default)]
    pub table: Option<String>,
    /// `"day"` (default) or `"hour"`, over the route's event time.
    #[serde(default)]
    pub partition: Option<String>,
    /// Target data-file size in MiB (default [`DEFAULT_TARGET_FILE_MB`]).
    #[serde(default)]
    pub target_file_mb: Option<u32>,
    /// `"per-hour"` (default): the loaders stage one object per batch, unit and event-time
    /// hour, as for a lake read directly. `"per-batch"`: one object per batch and unit, in the
    /// folder of the hour it was loaded — for a route whose readers read the table (fewer
    /// PUTs and claims' objects; the committer partitions by each row's event time anyway).
    #[serde(default)]
    pub staging: Option<String>,
}

/// Iceberg's partition transforms the committer offers over the event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionBy {
    Day,
    Hour,
}

/// A route's table, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcebergPlan {
    pub namespace: String,
    pub table: String,
    pub partition: PartitionBy,
    /// The column the partition transform reads: the route's `event_time` column, or the
    /// lineage column `ingested_at` when the route has none.
    pub partition_column: String,
    pub target_file_bytes: u64,
    /// `staging = "per-batch"`.
    pub per_batch: bool,
}

impl IcebergPlan {
    /// Checks `[route.iceberg]`; each problem is one line naming the setting.
    ///
    /// ```
    /// use streamload_core::route::iceberg::{IcebergPlan, IcebergSpec, PartitionBy};
    /// let plan = IcebergPlan::compile("orders", &IcebergSpec::default(), Some("placed_at")).unwrap();
    /// assert_eq!((plan.namespace.as_str(), plan.table.as_str()), ("streamload", "orders"));
    /// assert_eq!((plan.partition, plan.partition_column.as_str()), (PartitionBy::Day, "placed_at"));
    /// let bad = IcebergSpec { table: Some("Orders-2".into()), ..Default::default() };
    /// assert!(IcebergPlan::compile("orders", &bad, None).unwrap_err()[0].contains("iceberg.table"));
    /// ```
    pub fn compile(
        route: &str,
        spec: &IcebergSpec,
        event_time_column: Option<&str>,
    ) -> Result<IcebergPlan, Vec<String>> {
        let mut problems = Vec::new();
        let namespace = spec
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
        let table = spec.table.clone().unwrap_or_else(|| route.to_string());
        for (setting, name) in [("namespace", &namespace), ("table", &table)] {
            if !is_table_name(name) {
                problems.push(format!(
                    "iceberg.{setting} {name:?} must be 1 to 255 lowercase letters, digits and _, starting with a letter or digit (the names S3 Tables and Glue accept)"
                ));
            }
        }
        let partition = match spec.partition.as_deref() {
            None | Some("day") => PartitionBy::Day,
            Some("hour") => PartitionBy::Hour,
            Some(other) => {
                problems.push(format!(
                    "iceberg.partition {other:?} is not \"day\" or \"hour\""
                ));
                PartitionBy::Day
            }
        };
        let per_batch = match spec.staging.as_deref() {
            None | Some("per-hour") => false,
            Some("per-batch") => true,
            Some(other) => {
                problems.push(format!(
                    "iceberg.staging {other:?} is not \"per-hour\" or \"per-batch\""
                ));
                false
            }
        };
        let mb = spec.target_file_mb.unwrap_or(DEFAULT_TARGET_FILE_MB);
        if !(1..=1024).contains(&mb) {
            problems.push(format!(
                "iceberg.target_file_mb {mb} must be between 1 and 1024"
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(IcebergPlan {
            namespace,
            table,
            partition,
            partition_column: event_time_column.unwrap_or("ingested_at").to_string(),
            target_file_bytes: u64::from(mb) * 1024 * 1024,
            per_batch,
        })
    }
}

fn is_table_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.starts_with('_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_is_per_hour_unless_per_batch_is_asked_and_nothing_else_is_accepted() {
        let plan = |staging: Option<&str>| {
            let spec = IcebergSpec {
                staging: staging.map(str::to_string),
                ..Default::default()
            };
            IcebergPlan::compile("orders", &spec, None)
        };
        assert!(!plan(None).unwrap().per_batch);
        assert!(!plan(Some("per-hour")).unwrap().per_batch);
        assert!(plan(Some("per-batch")).unwrap().per_batch);
        let e = plan(Some("weekly")).unwrap_err();
        assert_eq!(
            e,
            ["iceberg.staging \"weekly\" is not \"per-hour\" or \"per-batch\""]
        );
    }
}
