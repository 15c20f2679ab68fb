//! The table committer's Iceberg adapter (docs/design/table-committer.md): a route's
//! `[route.iceberg]` table in its catalog, behind the committer's [`TableLog`] port.
//!
//! * [`catalog`]: which catalog (SQL in PostgreSQL, Amazon S3 Tables) and the S3 storage;
//! * [`schema`]: the route's columns as the table's schema (stable field ids) and partition
//!   spec (day or hour of the event time);
//! * [`table`]: load, the snapshot log's commit ids, staged objects → data files, the append;
//! * [`pinned`]: why an append is never re-based on a version its checks did not see.
//!
//! This crate brings arrow/parquet 58 (the Iceberg crates' versions) beside the workspace's
//! 60; only the committer's binary and the tools link it.
//!
//! [`TableLog`]: streamload_table::ports::TableLog

pub mod catalog;
mod error;
pub mod pinned;
pub mod schema;
pub mod table;

pub use catalog::{connect, storage_props, CatalogSettings, SQL_CATALOG_NAME};
pub use error::TableError;
pub use iceberg::Catalog;
pub use table::{CallDeadlines, IcebergTable, COMMIT_ID_PROPERTY};
