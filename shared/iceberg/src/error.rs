//! The adapter's errors, each classified for the committer's protocol.

use streamload_table::ports::PortError;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// A route or catalog setting the table cannot work with: stops start-up, one line.
    #[error("{0}")]
    Config(String),
    /// The catalog or storage answered with an error.
    #[error("{context}: {source}")]
    Iceberg {
        context: &'static str,
        #[source]
        source: Box<iceberg::Error>,
    },
    /// A staged object could not be read as Parquet of the route's schema.
    #[error("staged object {key}: {message}")]
    Staged { key: String, message: String },
}

impl TableError {
    pub fn iceberg(context: &'static str) -> impl FnOnce(iceberg::Error) -> TableError {
        move |source| TableError::Iceberg {
            context,
            source: Box::new(source),
        }
    }

    /// What the protocol may do after this error, for a call that changes nothing in the
    /// catalog (a load, a write of unreferenced data files).
    pub fn before_commit(self) -> PortError {
        match self {
            TableError::Config(m) => PortError::Permanent(m),
            TableError::Staged { .. } => PortError::Permanent(self.to_string()),
            TableError::Iceberg { ref source, .. } => match source.kind() {
                iceberg::ErrorKind::TableNotFound
                | iceberg::ErrorKind::NamespaceNotFound
                | iceberg::ErrorKind::FeatureUnsupported
                | iceberg::ErrorKind::DataInvalid => PortError::Permanent(self.to_string()),
                _ => PortError::Retryable(self.to_string()),
            },
        }
    }

    /// What the protocol may do after this error of a commit: a conflict was not applied;
    /// anything else may have been (the catalog's answer is the only proof).
    pub fn of_commit(self) -> PortError {
        match &self {
            TableError::Iceberg { source, .. }
                if source.kind() == iceberg::ErrorKind::CatalogCommitConflicts =>
            {
                PortError::Conflict(self.to_string())
            }
            _ => PortError::Unknown(self.to_string()),
        }
    }
}
