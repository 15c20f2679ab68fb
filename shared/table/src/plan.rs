//! The merge plan of one commit: the staged objects it took, grouped by partition and packed
//! into data files of about a target size, each named from the commit id.
//!
//! Names derived from the commit (`<commit>-<n>.parquet` under the partition's folder) make a
//! retried commit write the same paths, which Iceberg's duplicate check then recognises; and
//! the plan is deterministic (objects in key order), so the same claimed set always gives the
//! same files.

use crate::partition::PartitionValue;
use std::collections::BTreeMap;

/// A staged object the commit holds the claim of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub key: String,
    /// Its size in bytes (from the listing or the notification).
    pub bytes: u64,
    /// The partition its key names; `None`: its rows are partitioned one by one (per-batch
    /// staging), so it goes to the files of every partition its rows fall in.
    pub partition: Option<PartitionValue>,
}

/// One data file to write: the staged objects whose rows (of `partition`) it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFilePlan {
    /// `None`: the rows of per-batch staged objects, split by partition while they are read.
    pub partition: Option<PartitionValue>,
    /// `<commit>-<n>.parquet`, `n` counting from 0 in plan order.
    pub name: String,
    pub objects: Vec<String>,
    /// The staged bytes it is made from (Parquet to Parquet: a fair estimate of its size).
    pub staged_bytes: u64,
}

/// Packs `staged` into data files of at most about `target_bytes` each, per partition: objects
/// in key order fill a file until the next one would pass the target (an object larger than
/// the target gets a file of its own; objects are never split).
///
/// ```
/// use streamload_table::partition::Transform;
/// use streamload_table::plan::{plan, Staged};
/// let staged = |key: &str, bytes| Staged {
///     key: key.into(), bytes, partition: Transform::Day.of_staged_key(key),
/// };
/// let files = plan("c7", &[
///     staged("o/dt=2024-03-01/hour=10/a.parquet", 60),
///     staged("o/dt=2024-03-01/hour=11/b.parquet", 60),
///     staged("o/dt=2024-03-02/hour=00/c.parquet", 10),
/// ], 100);
/// let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
/// assert_eq!(names, ["c7-0.parquet", "c7-1.parquet", "c7-2.parquet"]);
/// assert_eq!(files[2].objects, ["o/dt=2024-03-02/hour=00/c.parquet"]);
/// ```
pub fn plan(commit: &str, staged: &[Staged], target_bytes: u64) -> Vec<DataFilePlan> {
    let mut by_partition: BTreeMap<Option<PartitionValue>, Vec<&Staged>> = BTreeMap::new();
    for object in staged {
        by_partition
            .entry(object.partition)
            .or_default()
            .push(object);
    }
    let mut files: Vec<DataFilePlan> = Vec::new();
    for (partition, mut objects) in by_partition {
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        objects.dedup_by(|a, b| a.key == b.key);
        let mut current: Option<DataFilePlan> = None;
        for object in objects {
            let full = current.as_ref().is_some_and(|f| {
                !f.objects.is_empty() && f.staged_bytes + object.bytes > target_bytes
            });
            if full {
                files.extend(current.take());
            }
            let file = current.get_or_insert_with(|| DataFilePlan {
                partition,
                name: String::new(),
                objects: Vec::new(),
                staged_bytes: 0,
            });
            file.objects.push(object.key.clone());
            file.staged_bytes += object.bytes;
        }
        files.extend(current);
    }
    for (n, file) in files.iter_mut().enumerate() {
        file.name = format!("{commit}-{n}.parquet");
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::Transform;

    fn staged(key: &str, bytes: u64) -> Staged {
        Staged {
            key: key.into(),
            bytes,
            partition: Transform::Hour.of_staged_key(key),
        }
    }

    #[test]
    fn every_staged_object_is_in_exactly_one_file_of_its_partition() {
        // Given 30 small objects over three hours, one twice (a notification sent again)
        let mut objects: Vec<Staged> = (0..30)
            .map(|n| {
                staged(
                    &format!("o/dt=2024-03-01/hour={:02}/u-{n:02}.parquet", n % 3),
                    7,
                )
            })
            .collect();
        objects.push(objects[4].clone());
        // When planned at a 50-byte target
        let files = plan("c1", &objects, 50);
        // Then each object is in one file, files hold one partition each and stay within the
        // target, and the names count from 0
        let mut seen: Vec<&String> = files.iter().flat_map(|f| &f.objects).collect();
        seen.sort();
        let mut expected: Vec<&String> = objects[..30].iter().map(|o| &o.key).collect();
        expected.sort();
        assert_eq!(seen, expected);
        for file in &files {
            assert!(file.staged_bytes <= 50, "{file:?}");
            assert!(file
                .objects
                .iter()
                .all(|k| Transform::Hour.of_staged_key(k) == file.partition));
        }
        assert_eq!(files.len(), 6); // 10 objects of 7 bytes per hour: 7 + 3
        assert_eq!(files[5].name, "c1-5.parquet");
    }

    #[test]
    fn the_same_claimed_set_in_any_order_gives_the_same_files() {
        let a = staged("o/dt=2024-03-01/hour=01/a.parquet", 40);
        let b = staged("o/dt=2024-03-01/hour=01/b.parquet", 40);
        let c = staged("o/x/per-batch.parquet", 5);
        let forward = plan("c2", &[a.clone(), b.clone(), c.clone()], 60);
        let backward = plan("c2", &[c, b, a], 60);
        assert_eq!(forward, backward);
        // A per-batch object (no partition in its key) gets a file of its own group
        assert!(forward
            .iter()
            .any(|f| f.partition.is_none() && f.objects == ["o/x/per-batch.parquet"]));
    }

    #[test]
    fn an_object_larger_than_the_target_gets_a_file_of_its_own() {
        let files = plan(
            "c3",
            &[
                staged("o/dt=2024-03-01/hour=01/a.parquet", 10),
                staged("o/dt=2024-03-01/hour=01/b.parquet", 500),
                staged("o/dt=2024-03-01/hour=01/c.parquet", 10),
            ],
            100,
        );
        let sizes: Vec<u64> = files.iter().map(|f| f.staged_bytes).collect();
        assert_eq!(sizes, vec![10, 500, 10]);
    }
}
