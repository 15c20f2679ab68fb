//! One route's Iceberg table as the committer's [`TableLog`] port: its base is a loaded
//! `Table`, its log the commit ids in the snapshot summaries, its writes the staged objects'
//! rows as partitioned data files, its append a pinned fast-append ([`crate::pinned`]).

use crate::error::TableError;
use crate::pinned::PinnedCatalog;
use crate::schema::{missing_columns, new_table_schema, partition_spec};
use arrow_array_58::{new_null_array, ArrayRef, RecordBatch};
use arrow_schema_58::SchemaRef as ArrowSchemaRef;
use iceberg::arrow::{schema_to_arrow_schema, RecordBatchPartitionSplitter};
use iceberg::spec::{DataFile, DataFileFormat};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::util::snapshot::ancestors_of;
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent};
use parquet_58::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet_58::basic::{Compression, ZstdLevel};
use parquet_58::file::properties::WriterProperties;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use streamload_core::route::iceberg::IcebergPlan;
use streamload_core::route::Route;
use streamload_table::ports::{PortError, StagedObject, TableLog};

/// The snapshot-summary property that records which commit made a snapshot.
pub const COMMIT_ID_PROPERTY: &str = "streamload.commit-id";
/// The snapshot-summary property with the number of staged objects a commit appended.
pub const STAGED_OBJECTS_PROPERTY: &str = "streamload.staged-objects";
/// The snapshot-summary property naming the route.
pub const ROUTE_PROPERTY: &str = "streamload.route";

/// Rows read from a staged object at a time.
const READ_BATCH_ROWS: usize = 8192;

/// How long one catalog call (loading the table, an append) may take before the committer
/// gives up on it: a catalog that never answers (a frozen connection, a black-holed request)
/// costs a retry in seconds, not the function's timeout. An append given up on is an
/// unknown outcome, which the protocol's next attempt settles from the snapshot log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallDeadlines {
    /// Loading the table, committing an append, and reading the log back after it.
    pub catalog: std::time::Duration,
    /// Writing data files: this much, plus [`CallDeadlines::write_per_mib`] for each MiB of
    /// staged Parquet read.
    pub write: std::time::Duration,
    pub write_per_mib: std::time::Duration,
}

impl Default for CallDeadlines {
    /// 20 s per catalog call (S3 Tables, Glue and a SQL catalog answer in well under a
    /// second); data files 30 s plus 1 s per MiB (the committer merges about 30 MB/s,
    /// BENCHMARKS.md §6).
    fn default() -> Self {
        CallDeadlines {
            catalog: std::time::Duration::from_secs(20),
            write: std::time::Duration::from_secs(30),
            write_per_mib: std::time::Duration::from_secs(1),
        }
    }
}

impl CallDeadlines {
    /// Every deadline `catalog` long (tests: a frozen catalog given up on in seconds).
    pub fn all(catalog: std::time::Duration) -> Self {
        CallDeadlines {
            catalog,
            write: catalog,
            write_per_mib: std::time::Duration::ZERO,
        }
    }

    fn write_of(&self, objects: &[StagedObject]) -> std::time::Duration {
        let mib: u64 = objects.iter().map(|o| o.bytes).sum::<u64>() / (1024 * 1024);
        self.write + self.write_per_mib * u32::try_from(mib).unwrap_or(u32::MAX)
    }
}

/// `call`, or a [`PortError`] made by `late` once `deadline` has passed.
async fn within<T>(
    deadline: std::time::Duration,
    call: impl std::future::Future<Output = Result<T, PortError>>,
    late: impl FnOnce(String) -> PortError,
) -> Result<T, PortError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(answer) => answer,
        Err(_) => Err(late(format!(
            "no answer within {} ms",
            deadline.as_millis()
        ))),
    }
}

/// A route's table in its catalog.
#[derive(Debug, Clone)]
pub struct IcebergTable {
    catalog: Arc<dyn Catalog>,
    ident: TableIdent,
    route: String,
    /// The loaders' bucket, which holds the staged objects.
    staged_bucket: String,
    target_file_bytes: u64,
    deadlines: CallDeadlines,
}

/// The route's `[route.iceberg]` plan and its table's identifier.
fn table_of(route: &Route) -> Result<(&IcebergPlan, TableIdent), TableError> {
    let plan = route.iceberg.as_ref().ok_or_else(|| {
        TableError::Config(format!("route {:?} has no [route.iceberg]", route.name))
    })?;
    let ident = TableIdent::new(
        NamespaceIdent::new(plan.namespace.clone()),
        plan.table.clone(),
    );
    Ok((plan, ident))
}

impl IcebergTable {
    fn new(
        catalog: Arc<dyn Catalog>,
        route: &Route,
        plan: &IcebergPlan,
        ident: TableIdent,
        staged_bucket: &str,
    ) -> Self {
        IcebergTable {
            catalog,
            ident,
            route: route.name.clone(),
            staged_bucket: staged_bucket.to_string(),
            target_file_bytes: plan.target_file_bytes,
            deadlines: CallDeadlines::default(),
        }
    }

    /// The same table with other call deadlines.
    pub fn with_deadlines(mut self, deadlines: CallDeadlines) -> Self {
        self.deadlines = deadlines;
        self
    }

    /// Opens the route's table, creating its namespace and table if absent and adding the
    /// columns the route gained since (a schema update; existing ids never change).
    pub async fn open(
        catalog: Arc<dyn Catalog>,
        route: &Route,
        staged_bucket: &str,
    ) -> Result<Self, TableError> {
        let (plan, ident) = table_of(route)?;
        let namespace = ident.namespace().clone();
        let staged = route.lake_schema();
        let exists = catalog
            .table_exists(&ident)
            .await
            .map_err(TableError::iceberg("looking the table up"))?;
        if !exists {
            if !catalog
                .namespace_exists(&namespace)
                .await
                .map_err(TableError::iceberg("looking the namespace up"))?
            {
                // Another committer may create it at the same moment: tolerate that.
                if let Err(e) = catalog.create_namespace(&namespace, HashMap::new()).await {
                    if !catalog.namespace_exists(&namespace).await.unwrap_or(false) {
                        return Err(TableError::iceberg("creating the namespace")(e));
                    }
                }
            }
            let schema = new_table_schema(&route.name, staged)?;
            let spec = partition_spec(&route.name, &schema, plan)?;
            let creation = TableCreation::builder()
                .name(plan.table.clone())
                .schema(schema)
                .partition_spec(spec)
                .properties([
                    ("write.format.default".to_string(), "parquet".to_string()),
                    (
                        "write.parquet.compression-codec".to_string(),
                        "zstd".to_string(),
                    ),
                ])
                .build();
            if let Err(e) = catalog.create_table(&namespace, creation).await {
                if !catalog.table_exists(&ident).await.unwrap_or(false) {
                    return Err(TableError::iceberg("creating the table")(e));
                }
            }
        }
        let table = catalog
            .load_table(&ident)
            .await
            .map_err(TableError::iceberg("loading the table"))?;
        let missing = missing_columns(&route.name, table.metadata().current_schema(), staged)?;
        if !missing.is_empty() {
            let tx = Transaction::new(&table);
            let mut update = tx.update_schema();
            for (name, ty) in missing {
                update = update.add_column(iceberg::transaction::AddColumn::optional(name, ty));
            }
            let tx = update
                .apply(tx)
                .map_err(TableError::iceberg("adding the route's new columns"))?;
            tx.commit(catalog.as_ref())
                .await
                .map_err(TableError::iceberg("adding the route's new columns"))?;
        }
        Ok(Self::new(catalog, route, plan, ident, staged_bucket))
    }

    pub fn ident(&self) -> &TableIdent {
        &self.ident
    }

    /// The route's table as it is, for audits: never created or changed.
    pub async fn existing(
        catalog: Arc<dyn Catalog>,
        route: &Route,
        staged_bucket: &str,
    ) -> Result<Self, TableError> {
        let (plan, ident) = table_of(route)?;
        catalog
            .load_table(&ident)
            .await
            .map_err(TableError::iceberg("loading the table"))?;
        Ok(Self::new(catalog, route, plan, ident, staged_bucket))
    }

    /// The identity (`columns`' values, as text, joined by U+001F) of every row of the current
    /// snapshot, and when that snapshot was committed (ms since the epoch).
    pub async fn snapshot_identities(
        &self,
        table: &Table,
        columns: &[String],
    ) -> Result<(Vec<String>, Option<i64>), TableError> {
        use futures::TryStreamExt;
        let committed_at = table
            .metadata()
            .current_snapshot()
            .map(|s| s.timestamp_ms());
        if committed_at.is_none() {
            return Ok((Vec::new(), None));
        }
        let scan = table
            .scan()
            .select(columns.iter().cloned())
            .build()
            .map_err(TableError::iceberg("planning the scan"))?;
        let batches: Vec<RecordBatch> = scan
            .to_arrow()
            .await
            .map_err(TableError::iceberg("scanning the table"))?
            .try_collect()
            .await
            .map_err(TableError::iceberg("reading the table"))?;
        let mut out = Vec::new();
        for batch in &batches {
            out.extend(
                identities_of(batch, columns).map_err(|m| TableError::Staged {
                    key: "(the table)".into(),
                    message: m,
                })?,
            );
        }
        Ok((out, committed_at))
    }

    /// The identities of a staged object's rows, formatted exactly as
    /// [`IcebergTable::snapshot_identities`] formats the table's (the object's columns put in
    /// the table's types first).
    pub async fn staged_identities(
        &self,
        table: &Table,
        key: &str,
        columns: &[String],
    ) -> Result<Vec<String>, TableError> {
        let target: ArrowSchemaRef = Arc::new(
            schema_to_arrow_schema(table.metadata().current_schema())
                .map_err(TableError::iceberg("the table's schema"))?,
        );
        let mut out = Vec::new();
        for batch in self.read_staged(table, key).await? {
            let staged = |message: String| TableError::Staged {
                key: key.to_string(),
                message,
            };
            let batch = conform(&batch, &target).map_err(staged)?;
            out.extend(identities_of(&batch, columns).map_err(staged)?);
        }
        Ok(out)
    }

    async fn read_staged(&self, base: &Table, key: &str) -> Result<Vec<RecordBatch>, TableError> {
        let staged = |message: String| TableError::Staged {
            key: key.to_string(),
            message,
        };
        let location = format!("s3://{}/{}", self.staged_bucket, key);
        let bytes = base
            .file_io()
            .new_input(&location)
            .map_err(TableError::iceberg("opening a staged object"))?
            .read()
            .await
            .map_err(TableError::iceberg("reading a staged object"))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| staged(e.to_string()))?
            .with_batch_size(READ_BATCH_ROWS)
            .build()
            .map_err(|e| staged(e.to_string()))?;
        reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| staged(e.to_string()))
    }
}

/// Each row's `columns` as text, joined by U+001F.
fn identities_of(batch: &RecordBatch, columns: &[String]) -> Result<Vec<String>, String> {
    use arrow_cast_58::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default();
    let formatters = columns
        .iter()
        .map(|c| {
            let array = batch
                .column_by_name(c)
                .ok_or_else(|| format!("no column {c:?}"))?;
            ArrayFormatter::try_new(array.as_ref(), &options).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((0..batch.num_rows())
        .map(|row| {
            formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect::<Vec<_>>()
                .join("\u{1f}")
        })
        .collect())
}

/// A staged batch in the table's column order and types (by name; a column the staged object
/// predates is null).
fn conform(batch: &RecordBatch, target: &ArrowSchemaRef) -> Result<RecordBatch, String> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for field in target.fields() {
        let column = match batch.column_by_name(field.name()) {
            Some(c) if c.data_type() == field.data_type() => c.clone(),
            Some(c) => arrow_cast_58::cast(c, field.data_type())
                .map_err(|e| format!("column {:?}: {e}", field.name()))?,
            None => new_null_array(field.data_type(), batch.num_rows()),
        };
        columns.push(column);
    }
    RecordBatch::try_new(target.clone(), columns).map_err(|e| e.to_string())
}

impl TableLog for IcebergTable {
    type Base = Table;
    type Written = Vec<DataFile>;

    async fn load(&self) -> Result<Table, PortError> {
        let load = async {
            self.catalog
                .load_table(&self.ident)
                .await
                .map_err(|e| TableError::iceberg("loading the table")(e).before_commit())
        };
        within(self.deadlines.catalog, load, |m| {
            PortError::Retryable(format!("loading the table: {m}"))
        })
        .await
    }

    fn commits(&self, base: &Table) -> BTreeSet<String> {
        let metadata = base.metadata_ref();
        let Some(current) = metadata.current_snapshot_id() else {
            return BTreeSet::new();
        };
        ancestors_of(&metadata, current)
            .filter_map(|s| {
                s.summary()
                    .additional_properties
                    .get(COMMIT_ID_PROPERTY)
                    .cloned()
            })
            .collect()
    }

    async fn write(
        &self,
        base: &Table,
        write_id: &str,
        objects: &[StagedObject],
    ) -> Result<Vec<DataFile>, PortError> {
        let write = async {
            self.write_files(base, write_id, objects)
                .await
                .map_err(TableError::before_commit)
        };
        // Files a write given up on leaves behind are never referenced (orphans).
        within(self.deadlines.write_of(objects), write, |m| {
            PortError::Retryable(format!("writing data files: {m}"))
        })
        .await
    }

    async fn append(
        &self,
        base: &Table,
        commit: &str,
        written: &Vec<DataFile>,
    ) -> Result<(), PortError> {
        let pinned = PinnedCatalog::new(self.catalog.as_ref(), base.clone());
        let tx = Transaction::new(base);
        let properties = HashMap::from([
            (COMMIT_ID_PROPERTY.to_string(), commit.to_string()),
            (ROUTE_PROPERTY.to_string(), self.route.clone()),
        ]);
        // No duplicate check: every data file's name carries its write id, unique to one
        // commit, and the check reads every manifest of the current snapshot on each append.
        let action = tx
            .fast_append()
            .with_check_duplicate(false)
            .set_snapshot_properties(properties)
            .add_data_files(written.iter().cloned());
        let tx = action
            .apply(tx)
            .map_err(|e| TableError::iceberg("building the append")(e).before_commit())?;
        let sent = async {
            tx.commit(&pinned)
                .await
                .map(|_| ())
                .map_err(|e| TableError::iceberg("committing the append")(e).of_commit())
        };
        // An append given up on may still land: its outcome is unknown, never "refused".
        within(self.deadlines.catalog, sent, |m| {
            PortError::Unknown(format!("committing the append: {m}"))
        })
        .await?;
        // Trust, then verify: iceberg-catalog-sql 0.10 ignores the result of its COMMIT
        // (`let _ = tx.commit()`), so a COMMIT lost on the way reads as a landed append. Only
        // the table's own log is proof; without it the outcome is unknown and the protocol's
        // next attempt decides (docs/exactly-once.md, "The table committer").
        let after = self.load().await.map_err(|e| {
            PortError::Unknown(format!("the append's answer could not be confirmed: {e}"))
        })?;
        if self.commits(&after).contains(commit) {
            Ok(())
        } else {
            Err(PortError::Unknown(
                "the catalog answered the append, but its snapshot log does not hold it".into(),
            ))
        }
    }
}

impl IcebergTable {
    async fn write_files(
        &self,
        base: &Table,
        write_id: &str,
        objects: &[StagedObject],
    ) -> Result<Vec<DataFile>, TableError> {
        let metadata = base.metadata();
        let schema = metadata.current_schema().clone();
        let target: ArrowSchemaRef = Arc::new(
            schema_to_arrow_schema(&schema).map_err(TableError::iceberg("the table's schema"))?,
        );
        let spec = metadata.default_partition_spec().clone();
        let splitter =
            RecordBatchPartitionSplitter::try_new_with_computed_values(schema.clone(), spec)
                .map_err(TableError::iceberg("the table's partition spec"))?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let rolling = RollingFileWriterBuilder::new(
            ParquetWriterBuilder::new(properties, schema),
            usize::try_from(self.target_file_bytes).unwrap_or(usize::MAX),
            base.file_io().clone(),
            DefaultLocationGenerator::new(metadata)
                .map_err(TableError::iceberg("the table's location"))?,
            DefaultFileNameGenerator::new(write_id.to_string(), None, DataFileFormat::Parquet),
        );
        let mut writer = FanoutWriter::new(DataFileWriterBuilder::new(rolling));
        let mut keys: Vec<&StagedObject> = objects.iter().collect();
        keys.sort();
        for object in keys {
            for batch in self.read_staged(base, &object.key).await? {
                let batch = conform(&batch, &target).map_err(|message| TableError::Staged {
                    key: object.key.clone(),
                    message,
                })?;
                let parts = splitter
                    .split(&batch)
                    .map_err(TableError::iceberg("partitioning rows"))?;
                for (partition, rows) in parts {
                    writer
                        .write(partition, rows)
                        .await
                        .map_err(TableError::iceberg("writing a data file"))?;
                }
            }
        }
        writer
            .close()
            .await
            .map_err(TableError::iceberg("closing the data files"))
    }
}
