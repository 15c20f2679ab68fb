//! The pure core of the table committer: what it decides, apart from the Iceberg library and
//! every outside system, so each decision is tested on its own.
//!
//! The committer (`functions/table-committer`; docs/exactly-once.md, "The table committer")
//! appends the loaders' staged Parquet objects to one Apache Iceberg table per route, exactly
//! once:
//! * [`commit`]: the protocol of one invocation — claim or take over each staged object, then
//!   append them once, every attempt re-checking the base it is built on;
//! * [`ports`]: the claims and the table it talks to, as two narrow traits;
//! * [`reconcile`]: what to do with a staged object whose claim another commit holds or held —
//!   skip, leave, mark committed, take over, or report — never re-appending blind;
//! * [`memory`]: in-memory ports with scripted faults, for the crash-point tests.
//!
//! Partitioning and file sizes are the Iceberg writers' (`shared/iceberg`): rows are split by
//! the table's partition spec as they are read, so a staged object whose rows span hours needs
//! no plan of its own.

pub mod commit;
pub mod memory;
pub mod ports;
pub mod reconcile;
