//! The PostgreSQL row sink: one transaction per batch — binary COPY of the batch into a
//! session temp table, then one `INSERT … SELECT … ON CONFLICT (event_id) DO UPDATE`.
//!
//! The connection is opened lazily and kept across invocations; a broken one is dropped and
//! reopened on the next attempt. Retries follow [`streamload_core::retry::SINK_RETRY`].

use std::error::Error as _;
use streamload_core::error::PortError;
use streamload_core::ports::{Row, RowSink};
use streamload_core::retry::{retry, SINK_RETRY};
use tokio::sync::Mutex;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, Config, NoTls};

/// A validated, quoted table name: `name` or `schema.name`, each part an SQL identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    quoted: String,
}

/// PostgreSQL truncates identifiers longer than 63 bytes; refuse them instead.
const MAX_IDENTIFIER_BYTES: usize = 63;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid table name {0:?}: use letters, digits and _ (optionally schema.table)")]
    TableName(String),
}

impl streamload_core::Classify for PgError {
    fn class(&self) -> streamload_core::ErrorClass {
        streamload_core::ErrorClass::Permanent
    }
}

impl TableName {
    pub fn parse(name: &str) -> Result<Self, PgError> {
        let parts: Vec<&str> = name.split('.').collect();
        let ok = (1..=2).contains(&parts.len())
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.len() <= MAX_IDENTIFIER_BYTES
                    && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !p.as_bytes()[0].is_ascii_digit()
            });
        if !ok {
            return Err(PgError::TableName(name.to_owned()));
        }
        let quoted = parts
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(".");
        Ok(Self { quoted })
    }

    pub fn quoted(&self) -> &str {
        &self.quoted
    }
}

const STAGE_DDL: &str = "CREATE TEMP TABLE IF NOT EXISTS streamload_stage (
    event_id text NOT NULL, user_id text NOT NULL, event_type text NOT NULL,
    payload jsonb, created_at timestamptz NOT NULL) ON COMMIT DELETE ROWS";
const STAGE_COPY: &str =
    "COPY streamload_stage (event_id, user_id, event_type, payload, created_at) FROM STDIN (FORMAT binary)";
const STAGE_TYPES: [Type; 5] = [
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::JSONB,
    Type::TIMESTAMPTZ,
];

/// jsonb in binary COPY: a version byte, then the JSON text.
#[derive(Debug)]
struct RawJsonb<'a>(&'a str);

impl ToSql for RawJsonb<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&[1]);
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }

    to_sql_checked!();
}

/// timestamptz in binary: microseconds since 2000-01-01 UTC.
#[derive(Debug)]
struct UnixMicros(i64);

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

impl ToSql for UnixMicros {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&(self.0 - PG_EPOCH_OFFSET_US).to_be_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }

    to_sql_checked!();
}

struct Session {
    client: Client,
    upsert_sql: String,
}

/// Rows into PostgreSQL.
pub struct PgRows {
    config: Config,
    table: TableName,
    session: Mutex<Option<Session>>,
}

impl PgRows {
    pub fn new(config: Config, table: TableName) -> Self {
        Self {
            config,
            table,
            session: Mutex::new(None),
        }
    }

    async fn connect(&self) -> Result<Session, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "postgres connection closed");
            }
        });
        client.batch_execute(STAGE_DDL).await?;
        let upsert_sql = format!(
            "INSERT INTO {t} (event_id, user_id, event_type, payload, created_at)
             SELECT event_id, user_id, event_type, payload, created_at FROM streamload_stage
             ON CONFLICT (event_id) DO UPDATE SET payload = EXCLUDED.payload, updated_at = now()",
            t = self.table.quoted()
        );
        Ok(Session { client, upsert_sql })
    }

    async fn upsert_once(&self, rows: &[Row<'_>]) -> Result<(), PortError> {
        let mut guard = self.session.lock().await;
        if guard.as_ref().is_some_and(|s| s.client.is_closed()) {
            *guard = None;
        }
        if guard.is_none() {
            *guard = Some(self.connect().await.map_err(|e| classify(&e))?);
        }
        let Some(session) = guard.as_mut() else {
            return Err(PortError::retryable("postgres: no session"));
        };
        let result = copy_and_upsert(session, rows).await;
        if let Err(e) = &result {
            if session.client.is_closed() || e.code().is_none() {
                *guard = None;
            }
        }
        result.map_err(|e| classify(&e))
    }
}

async fn copy_and_upsert(
    session: &mut Session,
    rows: &[Row<'_>],
) -> Result<(), tokio_postgres::Error> {
    let tx = session.client.transaction().await?;
    let sink = tx.copy_in(STAGE_COPY).await?;
    let writer = BinaryCopyInWriter::new(sink, &STAGE_TYPES);
    futures::pin_mut!(writer);
    for r in rows {
        let payload = r.payload.map(RawJsonb);
        let created = UnixMicros(r.created_at_us);
        writer
            .as_mut()
            .write(&[&r.event_id, &r.user_id, &r.event_type, &payload, &created])
            .await?;
    }
    writer.finish().await?;
    tx.execute(session.upsert_sql.as_str(), &[]).await?;
    tx.commit().await
}

/// Connection problems, contention and resource shortages are retryable; anything else
/// (a missing table, a permission) is permanent.
fn classify(e: &tokio_postgres::Error) -> PortError {
    // Server messages and their DETAIL lines can quote row values; log only the SQLSTATE and
    // the names of the objects involved, never payload text.
    let msg = match e.as_db_error() {
        Some(db) => format!(
            "postgres: SQLSTATE {} (table {:?}, column {:?}, constraint {:?})",
            db.code().code(),
            db.table().unwrap_or("-"),
            db.column().unwrap_or("-"),
            db.constraint().unwrap_or("-"),
        ),
        None if e.is_closed() => "postgres: connection closed".to_owned(),
        None => format!(
            "postgres: client or connection error ({})",
            e.source()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "no detail".into())
        ),
    };
    match e.code() {
        None => PortError::retryable(msg),
        Some(c)
            if c.code().starts_with("08")
                || c.code().starts_with("53")
                || c.code().starts_with("57P") =>
        {
            PortError::retryable(msg)
        }
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::LOCK_NOT_AVAILABLE =>
        {
            PortError::retryable(msg)
        }
        Some(_) => PortError::permanent(msg),
    }
}

impl RowSink for PgRows {
    async fn upsert(&self, rows: &[Row<'_>]) -> Result<(), PortError> {
        if rows.is_empty() {
            return Ok(());
        }
        retry(SINK_RETRY, || self.upsert_once(rows)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_identifiers_only() {
        assert_eq!(TableName::parse("events").unwrap().quoted(), "\"events\"");
        assert_eq!(
            TableName::parse("analytics.events_v2").unwrap().quoted(),
            "\"analytics\".\"events_v2\""
        );
        for bad in [
            "",
            "events; drop table x",
            "a.b.c",
            "1events",
            "ev\"ents",
            "a.",
            &"x".repeat(64),
        ] {
            assert!(TableName::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
