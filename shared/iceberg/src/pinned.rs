//! An append made on the table version it was checked against, never on a newer one.
//!
//! `Transaction::commit` reloads the table and re-applies its actions on whatever version is
//! current, and retries a conflict the same way. For the committer that would be wrong: it
//! checked the snapshot log of *its* base (its own commit id, the commits it took objects over
//! from); an append re-based on a version it has not checked could append twice. So the
//! transaction is given this catalog, whose `load_table` answers the pinned base — the append's
//! requirement then asks the catalog for exactly that snapshot on the main branch (Iceberg's
//! `assert-ref-snapshot-id`, enforced with the catalog's compare-and-swap) — and which sends one
//! commit at most: a conflict comes back to the protocol, which loads and checks again.

use async_trait::async_trait;
use iceberg::table::Table;
use iceberg::{
    Catalog, Error, ErrorKind, Namespace, NamespaceIdent, Result, TableCommit, TableCreation,
    TableIdent,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// The inner catalog with its `load_table` pinned to `base` and a single commit allowed.
#[derive(Debug)]
pub struct PinnedCatalog<'a> {
    inner: &'a dyn Catalog,
    base: Table,
    sent: AtomicBool,
    /// Whether the one commit sent came back as a conflict (else its outcome is unknown).
    first_conflicted: AtomicBool,
}

impl<'a> PinnedCatalog<'a> {
    pub fn new(inner: &'a dyn Catalog, base: Table) -> Self {
        PinnedCatalog {
            inner,
            base,
            sent: AtomicBool::new(false),
            first_conflicted: AtomicBool::new(false),
        }
    }
}

/// The error of a second commit through one pinned catalog: not retryable, so the
/// transaction's own retry loop stops and the first answer's kind reaches the protocol.
fn already_sent(conflicted: bool) -> Error {
    let kind = if conflicted {
        ErrorKind::CatalogCommitConflicts
    } else {
        ErrorKind::Unexpected
    };
    Error::new(kind, "the pinned base was already committed against once").with_retryable(false)
}

#[async_trait]
impl Catalog for PinnedCatalog<'_> {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> Result<Vec<NamespaceIdent>> {
        self.inner.list_namespaces(parent).await
    }
    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<Namespace> {
        self.inner.create_namespace(namespace, properties).await
    }
    async fn get_namespace(&self, namespace: &NamespaceIdent) -> Result<Namespace> {
        self.inner.get_namespace(namespace).await
    }
    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> Result<bool> {
        self.inner.namespace_exists(namespace).await
    }
    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<()> {
        self.inner.update_namespace(namespace, properties).await
    }
    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> Result<()> {
        self.inner.drop_namespace(namespace).await
    }
    async fn list_tables(&self, namespace: &NamespaceIdent) -> Result<Vec<TableIdent>> {
        self.inner.list_tables(namespace).await
    }
    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> Result<Table> {
        self.inner.create_table(namespace, creation).await
    }
    async fn load_table(&self, table: &TableIdent) -> Result<Table> {
        if table == self.base.identifier() {
            return Ok(self.base.clone());
        }
        self.inner.load_table(table).await
    }
    async fn drop_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.drop_table(table).await
    }
    async fn purge_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.purge_table(table).await
    }
    async fn table_exists(&self, table: &TableIdent) -> Result<bool> {
        self.inner.table_exists(table).await
    }
    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> Result<()> {
        self.inner.rename_table(src, dest).await
    }
    async fn register_table(&self, table: &TableIdent, metadata_location: String) -> Result<Table> {
        self.inner.register_table(table, metadata_location).await
    }
    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        if self.sent.swap(true, Ordering::SeqCst) {
            return Err(already_sent(self.first_conflicted.load(Ordering::SeqCst)));
        }
        let answer = self.inner.update_table(commit).await;
        if let Err(e) = &answer {
            let conflict = e.kind() == ErrorKind::CatalogCommitConflicts;
            self.first_conflicted.store(conflict, Ordering::SeqCst);
        }
        answer
    }
}
