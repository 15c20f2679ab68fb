//! The pure core of the table committer: what it decides, apart from the Iceberg library and
//! every outside system, so each decision is unit-tested on its own.
//!
//! The committer (docs/design/table-committer.md, **being built**: nothing runs it yet) appends
//! the loaders' staged Parquet objects to one Apache Iceberg table per route, exactly once.
//! This crate holds the three decisions that protocol rests on:
//! * [`partition`]: Iceberg's `day` and `hour` transforms of the event time, and the hour a
//!   staged object's key names;
//! * [`plan`]: which staged objects go into which data file of a commit (per partition, up to a
//!   target size), with file names derived from the commit id so a retried commit writes the
//!   same paths;
//! * [`reconcile`]: what to do with a staged object whose claim another commit holds or held —
//!   skip, leave, mark committed, take over, or report — never re-appending blind.

pub mod commit;
pub mod memory;
pub mod partition;
pub mod plan;
pub mod ports;
pub mod reconcile;
