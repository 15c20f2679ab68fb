//! The PostgreSQL row sink: one transaction per batch — for each route in the batch, a binary
//! COPY into the route's session temp table, then one `INSERT … SELECT DISTINCT ON (key) …
//! ON CONFLICT (key) DO UPDATE … WHERE <merge rule>` (see [`sql`]). Start-up checks that each
//! route's table fits its columns ([`PgRows::check_routes`]).
//!
//! A row the database refuses for a reason of its own (SQLSTATE classes 22 and 23) does not
//! fail the batch: the batch is bisected under savepoints until each refused row stands
//! alone, and the rest commits (see [`upsert_isolating`]). Every call is bounded by the
//! caller's deadline: the server's `statement_timeout` for a lock held elsewhere, the
//! client's own timeout for a connection that went silent, TCP keepalives for a half-open one.
//!
//! The connection is opened lazily and kept across invocations; a broken one is dropped and
//! reopened on the next attempt. Retries follow [`streamload_core::retry::SINK_RETRY`].
//! Connections use TLS with full verification unless told otherwise ([`tls`]); credentials
//! that change (a rotated secret, an IAM token) come from a [`LoginSource`] at each connect,
//! and a refused login reads the secret again and retries once.

use std::error::Error as _;
use std::time::Duration;
use streamload_core::error::PortError;
use streamload_core::ports::{Refusal, Row, RowSink, Upserted};
use streamload_core::retry::SINK_RETRY;
use streamload_core::route::{RouteErrors, Routes};
use streamload_core::Classify;
use tokio::sync::Mutex;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

mod check;
pub mod options;
mod sql;
pub mod tls;

pub use options::{ConnectOptions, Login, LoginFuture, LoginSource, OptionsError};
use sql::Cell;
pub use sql::RouteSql;
pub use tls::{RootCerts, SslMode, TlsSettings};

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{0}")]
    Routes(#[from] RouteErrors),
    /// The database could not be reached (yet): worth trying again later.
    #[error("postgres: {0}")]
    Connect(String),
    /// The database answered and refused us for a reason waiting will not fix: its
    /// certificate, its host name, TLS itself, the login or the database name.
    #[error("postgres: {0}")]
    Refused(String),
}

impl streamload_core::Classify for PgError {
    fn class(&self) -> streamload_core::ErrorClass {
        match self {
            PgError::Routes(_) => streamload_core::ErrorClass::Permanent,
            PgError::Connect(_) => streamload_core::ErrorClass::Retryable,
            PgError::Refused(_) => streamload_core::ErrorClass::Permanent,
        }
    }
}

struct Session {
    client: Client,
    /// Per route (by index): its stage and statements, with text keys staged in the table's
    /// own type and collation (read from the catalogue when the session opened).
    statements: RouteStatements,
}

/// Each route's statements by the route's index; none for a route without a table.
struct RouteStatements(Vec<Option<RouteSql>>);

impl RouteStatements {
    fn get(&self, route: usize) -> Option<&RouteSql> {
        self.0.get(route).and_then(Option::as_ref)
    }

    fn iter(&self) -> impl Iterator<Item = &RouteSql> {
        self.0.iter().flatten()
    }
}

/// Longest wait for a connection (TCP, TLS, authentication): an RDS instance answers in
/// milliseconds, so a slower connect is a failover or a black hole.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// TCP keepalive: idle time before the first probe, the interval between probes and how
/// many may go unanswered. A half-open connection (the database failed over, a NAT entry
/// expired) is noticed in about 45 s instead of the kernel's two hours.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVE_RETRIES: u32 = 3;

/// TCP user timeout: how long data we sent may stay unacknowledged before the kernel drops
/// the connection. Keepalives only probe an idle connection; a connection whose peer vanished
/// while we were writing (a COPY into a failed-over instance) would otherwise retransmit for
/// the kernel's ~15 minutes. A statement the server is still working on has nothing of ours
/// unacknowledged, so a long statement is never cut by it.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(20);

/// SQLSTATE classes that belong to one row, not to the batch: 22 (data exception: a value its
/// column cannot hold, a jsonb text PostgreSQL will not store, a string too long) and 23
/// (integrity constraint violation: CHECK, NOT NULL, a unique index other than the conflict
/// target, a foreign key). Anything else fails the batch (see [`classify`]).
const ROW_SQLSTATE_CLASSES: [&str; 2] = ["22", "23"];

/// Whether `e` is a refusal of (one of) the rows rather than a failure of the call.
fn refuses_a_row(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| ROW_SQLSTATE_CLASSES.iter().any(|k| c.code().starts_with(k)))
}

/// Rows into PostgreSQL.
pub struct PgRows {
    options: ConnectOptions,
    routes: Routes,
    /// The start-up checks still have to run (the database was unreachable at start-up):
    /// the first connection runs them before any row is written.
    unchecked: std::sync::atomic::AtomicBool,
    session: Mutex<Option<Session>>,
    /// Refused rows are found by bisection only (the previous design, kept as the refused-row
    /// bench's baseline; see [`PgRows::bisecting`]).
    bisect_only: bool,
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub(crate) enum ConnectFailure {
    Db(tokio_postgres::Error),
    /// The login source (Secrets Manager, IAM signing) failed.
    Login(String),
}

/// SQLSTATEs of a refused login: 28P01 (wrong password) and 28000 (no pg_hba.conf entry,
/// or a refused IAM token, which RDS reports as a PAM failure).
fn refuses_the_login(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    })
}

impl PgRows {
    /// The sink over `options`, with a connect timeout, TCP keepalives and an
    /// `application_name` (the function's name) unless the connection string sets them.
    ///
    /// ```
    /// use streamload_core::route::Routes;
    /// use streamload_postgres::{ConnectOptions, PgRows};
    /// let options = ConnectOptions::parse("postgres://loader@db.example.com/app").unwrap();
    /// let rows = PgRows::new(options, &Routes::builtin("events", "events/").unwrap());
    /// // Nothing is opened until the first batch (or `check_routes`).
    /// # drop(rows);
    /// ```
    pub fn new(mut options: ConnectOptions, routes: &Routes) -> Self {
        let config = options.config_mut();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_RETRIES)
            .tcp_user_timeout(TCP_USER_TIMEOUT);
        if config.get_application_name().is_none() {
            let name = std::env::var("AWS_LAMBDA_FUNCTION_NAME")
                .unwrap_or_else(|_| "streamload".to_owned());
            config.application_name(&name);
        }
        Self {
            options,
            routes: routes.clone(),
            unchecked: std::sync::atomic::AtomicBool::new(false),
            session: Mutex::new(None),
            bisect_only: false,
        }
    }

    /// A connection with no session set-up (the start-up checks use it, then drop it). A
    /// refused login is tried once more with credentials read again (a rotated secret).
    async fn connect_plain(&self) -> Result<Client, ConnectFailure> {
        match self.open(false).await {
            Err(ConnectFailure::Db(e))
                if refuses_the_login(&e)
                    && self
                        .options
                        .login
                        .as_ref()
                        .is_some_and(|l| l.refreshes_after_refusal()) =>
            {
                tracing::warn!(
                    sqlstate = e.code().map(|c| c.code()).unwrap_or("-"),
                    "the database refused the login; reading the credentials again (rotated?)"
                );
                self.open(true).await
            }
            other => other,
        }
    }

    async fn open(&self, after_refusal: bool) -> Result<Client, ConnectFailure> {
        let connected = match &self.options.login {
            None => self.options.pg.connect(self.options.tls.clone()).await,
            Some(source) => {
                let login = source
                    .login(after_refusal)
                    .await
                    .map_err(ConnectFailure::Login)?;
                let mut config = self.options.pg.clone();
                config.user(&login.user).password(login.password.as_bytes());
                config.connect(self.options.tls.clone()).await
            }
        };
        let (client, connection) = connected.map_err(ConnectFailure::Db)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "postgres connection closed");
            }
        });
        Ok(client)
    }

    /// What a connect failure means, in words an operator can act on, and whether waiting
    /// can fix it (`false`: a certificate, TLS or login problem).
    pub(crate) fn explain(&self, failure: &ConnectFailure) -> (String, bool) {
        let e = match failure {
            ConnectFailure::Login(why) => return (format!("credentials: {why}"), true),
            ConnectFailure::Db(e) => e,
        };
        let host = self.options.host();
        let tls = self.options.tls_settings();
        if let Some(refusal) = tls::handshake_refusal(e) {
            let why = match refusal {
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. },
                ) => format!(
                    "TLS: the server's certificate does not name {host:?} (sslmode={}); connect by a name the certificate holds (the RDS endpoint, not an IP or alias), or use sslmode=verify-ca with your own CA in sslrootcert",
                    tls.mode
                ),
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                    | rustls::CertificateError::BadSignature,
                ) => format!(
                    "TLS: the server's certificate is not signed by {} (sslmode={}); set sslrootcert to the CA that signed it",
                    tls.root_certs, tls.mode
                ),
                rustls::Error::InvalidCertificate(c) => format!(
                    "TLS: the server's certificate was refused ({c:?}, sslmode={})",
                    tls.mode
                ),
                other => format!("TLS handshake with {host:?} failed: {other}"),
            };
            return (why, false);
        }
        let text = e.to_string();
        if text.contains("server does not support TLS") {
            return (
                format!("{host:?} does not accept TLS (sslmode={}). In AWS: connect to the RDS endpoint, which always offers TLS (keep sslmode=verify-full). Locally, against a plaintext server: add ?sslmode=disable to DATABASE_URL (the local stack's .stack/env does)", tls.mode),
                false,
            );
        }
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                && tls.mode == SslMode::Disable
            {
                return (
                    "SQLSTATE 28000: the server has no pg_hba.conf entry for this connection; it may accept only TLS (RDS: rds.force_ssl=1): use sslmode=verify-full".into(),
                    false,
                );
            }
            if refuses_the_login(e) {
                return (
                    format!(
                        "SQLSTATE {}: the server refused the login of user {:?}",
                        code.code(),
                        self.options.pg.get_user().unwrap_or("-")
                    ),
                    false,
                );
            }
            if *code == SqlState::INVALID_CATALOG_NAME {
                return (
                    format!(
                        "SQLSTATE 3D000: database {:?} does not exist",
                        self.options.pg.get_dbname().unwrap_or("-")
                    ),
                    false,
                );
            }
        }
        (describe(e), true)
    }

    /// The same sink finding refused rows by bisection under savepoints only (about
    /// `2k·log2(n/k)` COPY + merge rounds for `k` refused rows among `n`), as before the
    /// server-side isolation: the baseline of the refused-row bench. Not for production.
    pub fn bisecting(mut self) -> Self {
        self.bisect_only = true;
        self
    }

    /// Defers the start-up checks to the first connection (see [`PgRows::check_routes`]).
    pub fn check_on_first_connect(&self) {
        self.unchecked
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    async fn connect(&self) -> Result<Session, PortError> {
        let client = self.connect_plain().await.map_err(|f| match &f {
            ConnectFailure::Db(e) => classify(e),
            ConnectFailure::Login(why) => {
                PortError::retryable(format!("postgres: credentials: {why}"))
            }
        })?;
        if self.unchecked.load(std::sync::atomic::Ordering::SeqCst) {
            match check::check_all(&client, &self.routes).await {
                Ok(done) => {
                    for ddl in done {
                        tracing::info!(statement = %ddl, "schema migrated");
                    }
                    self.unchecked
                        .store(false, std::sync::atomic::Ordering::SeqCst);
                }
                Err(PgError::Routes(e)) => {
                    tracing::error!(error = %e, "a route does not fit its table");
                    return Err(PortError::permanent(format!("postgres: {e}")));
                }
                Err(e) => return Err(PortError::retryable(e.to_string())),
            }
        }
        self.session_from(client).await.map_err(|e| classify(&e))
    }

    async fn session_from(&self, client: Client) -> Result<Session, tokio_postgres::Error> {
        let mut statements = Vec::new();
        for route in self.routes.iter() {
            if !route.has_table() {
                statements.push(None);
                continue;
            }
            let key_types = key_stage_types(&client, route).await?;
            statements.push(Some(RouteSql::with_key_types(route, &key_types)));
        }
        let statements = RouteStatements(statements);
        let ddl: Vec<&str> = statements
            .iter()
            .map(|r| r.stage_ddl.as_str())
            .chain(std::iter::once(sql::REFUSALS_DDL))
            .collect();
        client.batch_execute(&ddl.join(";\n")).await?;
        Ok(Session { client, statements })
    }

    async fn upsert_once(&self, rows: &[Row<'_>], until_ms: i64) -> Result<Upserted, PortError> {
        let mut guard = self.session.lock().await;
        if guard.as_ref().is_some_and(|s| s.client.is_closed()) {
            *guard = None;
        }
        let left = |until_ms: i64| Duration::from_millis((until_ms - epoch_ms()).max(1) as u64);
        if guard.is_none() {
            let session = tokio::time::timeout(left(until_ms), self.connect())
                .await
                .map_err(|_| PortError::retryable("postgres: connect did not finish in time"))??;
            *guard = Some(session);
        }
        // The session is taken out of the sink while a transaction runs on it, and put back
        // only once the transaction ended with an answer. A caller that gives up on this call
        // (its own deadline, a crash of the task) drops the future, and with it the session:
        // a connection mid-transaction — silent, black-holed, or waiting on a lock — is never
        // handed to the next invocation.
        let Some(mut session) = guard.take() else {
            return Err(PortError::retryable("postgres: no session"));
        };
        // The server cancels a statement still running at `until_ms` (a lock held elsewhere);
        // the client gives up shortly after (a black-holed connection, where the server's
        // answer never arrives).
        let result = tokio::time::timeout(
            left(until_ms) + CLIENT_GRACE,
            upsert_isolating(&mut session, rows, until_ms, self.bisect_only),
        )
        .await;
        match result {
            Err(_) => Err(PortError::ambiguous(
                "postgres: no answer before the deadline (the commit may have happened)",
            )),
            Ok(Err(e)) => {
                if !session.client.is_closed() && e.code().is_some() {
                    *guard = Some(session);
                }
                Err(classify(&e))
            }
            Ok(Ok(refused)) => {
                *guard = Some(session);
                Ok(refused)
            }
        }
    }
}

/// How long the client waits past `until_ms` for the server's own statement timeout to answer.
/// Shorter than the pipeline's own margin past the cutoff (200 ms), so this call reports the
/// silent connection itself; if the pipeline gives up first, the session is dropped all the
/// same (see `upsert_once`).
pub const CLIENT_GRACE: Duration = Duration::from_millis(150);

fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The key columns of `route` whose table type or collation is not plain `text` (citext,
/// `char(n)`, `varchar(n)`, a domain, a nondeterministic collation), with the SQL type the
/// stage must hold them in so that it tells keys apart as the table's unique index does.
async fn key_stage_types(
    client: &Client,
    route: &streamload_core::route::Route,
) -> Result<std::collections::HashMap<usize, String>, tokio_postgres::Error> {
    use streamload_core::route::ColumnType;
    let text_keys: Vec<(usize, &str)> = route
        .key
        .iter()
        .filter(|&&i| route.columns[i].ty == ColumnType::Text)
        .map(|&i| (i, route.columns[i].name.as_str()))
        .collect();
    let mut types = std::collections::HashMap::new();
    if text_keys.is_empty() {
        return Ok(types);
    }
    let names: Vec<&str> = text_keys.iter().map(|(_, n)| *n).collect();
    // The type a key is compared in: the column's type without its length (a cast to
    // `char(4)` or `varchar(4)` would cut a value short), the base type of a domain, and the
    // column's collation where it is not the type's default.
    let rows = client
        .query(
            "SELECT a.attname::text, bn.nspname::text, bt.typname::text, \
                    CASE WHEN a.attcollation <> bt.typcollation \
                         THEN quote_ident(cn.nspname) || '.' || quote_ident(c.collname) END \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END \
             JOIN pg_namespace bn ON bn.oid = bt.typnamespace \
             LEFT JOIN pg_collation c ON c.oid = a.attcollation \
             LEFT JOIN pg_namespace cn ON cn.oid = c.collnamespace \
             WHERE a.attrelid = to_regclass($1) AND a.attname = ANY($2) AND NOT a.attisdropped",
            &[&route.quoted_table(), &names],
        )
        .await?;
    for row in rows {
        let (name, schema, ty, collation): (String, String, String, Option<String>) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        // text and varchar compare alike; only another type or a collation changes equality.
        let plain = schema == "pg_catalog" && (ty == "text" || ty == "varchar");
        if plain && collation.is_none() {
            continue;
        }
        if let Some(&(i, _)) = text_keys.iter().find(|(_, n)| *n == name) {
            let ty = format!(
                "{}.{}",
                streamload_core::route::quote(&schema),
                streamload_core::route::quote(&ty)
            );
            types.insert(
                i,
                match collation {
                    Some(c) => format!("{ty} COLLATE {c}"),
                    None => ty,
                },
            );
        }
    }
    Ok(types)
}

/// How long the server keeps a transaction of ours open while waiting for our next command:
/// a loader frozen mid-transaction (a sandbox paused, a process stopped) would otherwise hold
/// its row locks, and block the invocation that takes its claims over, for as long as the
/// frozen process lives — up to its function timeout. A live loader never waits this long
/// between the statements of one transaction; the lease grace (5 s) is the same order.
pub const IDLE_IN_TRANSACTION_MS: i64 = 5_000;

/// Sets the statement timeout to the time left before `until_ms`, and the idle-in-transaction
/// timeout ([`IDLE_IN_TRANSACTION_MS`]), for the transaction.
fn timeout_sql(until_ms: i64) -> String {
    format!(
        "SET LOCAL statement_timeout = {}; SET LOCAL idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_MS}",
        (until_ms - epoch_ms()).clamp(1, i64::from(i32::MAX))
    )
}

/// One transaction for the whole batch. When the database refuses a row for a reason of the
/// row's own — at a statement or at COMMIT (a deferred constraint) — the batch is loaded again
/// in one transaction that finds each refused row on the server ([`isolate_refusals`]); every
/// other row commits. The happy path costs nothing extra: one COPY, one upsert, one commit.
async fn upsert_isolating(
    session: &mut Session,
    rows: &[Row<'_>],
    until_ms: i64,
    bisect_only: bool,
) -> Result<Upserted, tokio_postgres::Error> {
    let Session { client, statements } = session;
    let first = {
        let tx = client.transaction().await?;
        tx.batch_execute(&timeout_sql(until_ms)).await?;
        match copy_and_upsert(&tx, statements, rows).await {
            // A deferred constraint (DEFERRABLE INITIALLY DEFERRED, common in ORM schemas)
            // refuses its row only at COMMIT: that is a refused row too.
            Ok(superseded) => match tx.commit().await {
                Ok(()) => Ok(Ok(superseded)),
                Err(e) if refuses_a_row(&e) => Ok(Err(e)),
                Err(e) => Err(e),
            },
            Err(e) if refuses_a_row(&e) => Ok(Err(e)),
            Err(e) => Err(e),
        }
    };
    if let Ok(superseded) = first? {
        return Ok(Upserted {
            refused: Vec::new(),
            superseded,
        });
    }
    if bisect_only {
        return bisect_refusals(client, statements, rows, until_ms).await;
    }
    isolate_refusals(client, statements, rows, until_ms).await
}

/// Loads `rows` in one transaction that sets every constraint IMMEDIATE (so a deferred one
/// refuses its own row, not the COMMIT) and, per route: COPYs its rows into the stage — a row
/// the COPY refuses is named by the line in the error's context, set aside, and the COPY made
/// again without it — then runs the route's isolation statement ([`RouteSql::isolate`]), which
/// merges every row it can and notes each refused one. A refusal COPY cannot place (no line in
/// the context) falls back to bisection under savepoints. Cost: one COPY and one server-side
/// statement per route, plus one COPY per row the COPY refuses — about a statement per chunk
/// of [`sql::ISOLATION_CHUNK_ROWS`] rows, and one per row in a chunk holding a refused row.
async fn isolate_refusals(
    client: &mut Client,
    statements: &RouteStatements,
    rows: &[Row<'_>],
    until_ms: i64,
) -> Result<Upserted, tokio_postgres::Error> {
    let mut client_tx = client.transaction().await?;
    client_tx
        .batch_execute(&format!(
            "{}; SET CONSTRAINTS ALL IMMEDIATE",
            timeout_sql(until_ms)
        ))
        .await?;
    let mut refused: Vec<Refusal> = Vec::new();
    let mut routes: Vec<usize> = rows.iter().map(|r| r.route.index).collect();
    routes.sort_unstable();
    routes.dedup();
    // Each route copied, with its rows (by index in `rows`) in stage order.
    let mut copied: Vec<(usize, Vec<usize>)> = Vec::new();
    for route in routes {
        let Some(sql) = statements.get(route) else {
            continue;
        };
        // This route's rows, by their index in `rows`; those the COPY refused are left out.
        let mut members: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].route.index == route)
            .collect();
        loop {
            let savepoint = client_tx.savepoint("streamload_copy").await?;
            let subset: Vec<Row<'_>> = members.iter().map(|&i| rows[i]).collect();
            match copy_rows(&savepoint, sql, &subset).await {
                Ok(()) => {
                    savepoint.commit().await?;
                    break;
                }
                Err(e) if refuses_a_row(&e) => {
                    let line = e.as_db_error().and_then(|d| d.where_()).and_then(copy_line);
                    savepoint.rollback().await?;
                    match line
                        .and_then(|l| l.checked_sub(1))
                        .filter(|&l| l < members.len())
                    {
                        Some(at) => {
                            let index = members.remove(at);
                            refused.push(Refusal {
                                index,
                                reason: format!("the database refused the row: {}", describe(&e)),
                            });
                        }
                        None => {
                            drop(client_tx);
                            return bisect_refusals(client, statements, rows, until_ms).await;
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        client_tx
            .batch_execute(&format!("{}; {}", sql.create_index, sql.isolate))
            .await?;
        copied.push((route, members));
    }
    // A row refused by a foreign key may name a row another route merged after it: those
    // are tried again, route by route, until a pass merges none of them.
    if copied.len() > 1 {
        let count = "SELECT count(*) FROM streamload_refusals";
        let mut before: i64 = client_tx.query_one(count, &[]).await?.get(0);
        while before > 0 {
            for (route, _) in &copied {
                if let Some(sql) = statements.get(*route) {
                    client_tx.batch_execute(&sql.retry_refused).await?;
                }
            }
            let after: i64 = client_tx.query_one(count, &[]).await?.get(0);
            if after == before {
                break;
            }
            before = after;
        }
    }
    // The rows whose event the table does not hold, by the same mapping as the refusals.
    let mut superseded = Vec::new();
    for (route, members) in &copied {
        if let Some(query) = statements.get(*route).and_then(|s| s.superseded.as_ref()) {
            for row in client_tx.query(query.as_str(), &[]).await? {
                let ord: i32 = row.get(0);
                if let Some(&index) = usize::try_from(ord).ok().and_then(|o| members.get(o)) {
                    superseded.push(index);
                }
            }
        }
    }
    let noted = client_tx
        .query(
            "SELECT route, ord, sqlstate, tbl, col, cons FROM streamload_refusals",
            &[],
        )
        .await?;
    for row in noted {
        let (route, ord): (i32, i32) = (row.get(0), row.get(1));
        let members = copied
            .iter()
            .find(|(r, _)| i32::try_from(*r).ok() == Some(route))
            .map(|(_, m)| m);
        let Some(&index) = members.and_then(|m| usize::try_from(ord).ok().and_then(|o| m.get(o)))
        else {
            continue;
        };
        let name = |v: Option<String>| v.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into());
        let (state, table, column, constraint): (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        ) = (row.get(2), row.get(3), row.get(4), row.get(5));
        refused.push(Refusal {
            index,
            reason: format!(
                "the database refused the row: SQLSTATE {} (table {:?}, column {:?}, constraint {:?})",
                name(state),
                name(table),
                name(column),
                name(constraint)
            ),
        });
    }
    let drops: Vec<&str> = copied
        .iter()
        .filter_map(|(r, _)| statements.get(*r).map(|s| s.drop_index.as_str()))
        .collect();
    client_tx.batch_execute(&drops.join("; ")).await?;
    client_tx.commit().await?;
    Ok(upserted(refused, superseded))
}

/// The answer of an upsert: refusals in row order, and the superseded rows that are not
/// refused, sorted.
fn upserted(mut refused: Vec<Refusal>, mut superseded: Vec<usize>) -> Upserted {
    refused.sort_by_key(|r| r.index);
    superseded.retain(|i| !refused.iter().any(|r| r.index == *i));
    superseded.sort_unstable();
    superseded.dedup();
    Upserted {
        refused,
        superseded,
    }
}

/// The row number in a COPY error's context (`COPY streamload_stage_x, line 3, column y`):
/// 1-based, counting the rows of that COPY.
fn copy_line(context: &str) -> Option<usize> {
    let rest = &context[context.find(", line ")? + ", line ".len()..];
    let digits: &str = &rest[..rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len())];
    digits.parse().ok()
}

/// The fallback of [`isolate_refusals`]: the batch bisected under savepoints until each
/// refused row stands alone (`k` refused rows among `n` cost about `2k·log2(n/k)` COPY +
/// merge rounds).
async fn bisect_refusals(
    client: &mut Client,
    statements: &RouteStatements,
    rows: &[Row<'_>],
    until_ms: i64,
) -> Result<Upserted, tokio_postgres::Error> {
    let mut tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "{}; SET CONSTRAINTS ALL IMMEDIATE",
        timeout_sql(until_ms)
    ))
    .await?;
    let mut refused = Vec::new();
    let mut superseded = Vec::new();
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    ranges.push(0..rows.len());
    while let Some(range) = ranges.pop() {
        let savepoint = tx.savepoint("streamload_rows").await?;
        match copy_and_upsert(&savepoint, statements, &rows[range.clone()]).await {
            Ok(in_range) => {
                superseded.extend(in_range.into_iter().map(|i| range.start + i));
                savepoint
                    .batch_execute(&truncate_stages(statements, &rows[range.clone()]))
                    .await?;
                savepoint.commit().await?;
            }
            Err(e) if refuses_a_row(&e) => {
                savepoint.rollback().await?;
                if range.len() == 1 {
                    refused.push(Refusal {
                        index: range.start,
                        reason: format!("the database refused the row: {}", describe(&e)),
                    });
                } else {
                    let mid = range.start + range.len() / 2;
                    ranges.push(mid..range.end);
                    ranges.push(range.start..mid);
                }
            }
            Err(e) => return Err(e),
        }
    }
    tx.commit().await?;
    Ok(upserted(refused, superseded))
}

/// COPYs `rows` (all of `sql`'s route) into the route's stage table.
async fn copy_rows(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &RouteSql,
    rows: &[Row<'_>],
) -> Result<(), tokio_postgres::Error> {
    let sink = tx.copy_in(&sql.copy).await?;
    let writer = BinaryCopyInWriter::new(sink, &sql.types);
    futures::pin_mut!(writer);
    let mut cells: Vec<Cell<'_>> = Vec::with_capacity(sql.columns.len() + 1);
    for (ord, r) in rows.iter().enumerate() {
        cells.clear();
        cells.extend(
            sql.columns
                .iter()
                .map(|&(i, ty)| Cell::Value(&r.values[i], ty)),
        );
        if sql.unavailable {
            cells.push(Cell::Unavailable((!r.unavailable.is_empty()).then(|| {
                let names: Vec<&str> = r
                    .unavailable
                    .iter()
                    .map(|&i| r.route.columns[i].name.as_str())
                    .collect();
                format!(",{},", names.join(","))
            })));
        }
        cells.push(Cell::Ord(ord as i32));
        let refs: Vec<&(dyn ToSql + Sync)> =
            cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        writer.as_mut().write(&refs).await?;
    }
    writer.finish().await?;
    Ok(())
}

/// For each route among `rows`: COPY its rows into its stage table, then merge them into
/// its table. Returns the rows (indices into `rows`) of routes with a search index whose
/// event the table does not hold afterwards.
async fn copy_and_upsert(
    tx: &tokio_postgres::Transaction<'_>,
    statements: &RouteStatements,
    rows: &[Row<'_>],
) -> Result<Vec<usize>, tokio_postgres::Error> {
    let mut superseded = Vec::new();
    let mut routes: Vec<usize> = rows.iter().map(|r| r.route.index).collect();
    routes.sort_unstable();
    routes.dedup();
    for route in routes {
        let Some(sql) = statements.get(route) else {
            continue;
        };
        // This route's rows by their index in `rows`, in stage order (the stage ordinal).
        let members: Vec<usize> = if rows.iter().all(|r| r.route.index == route) {
            copy_rows(tx, sql, rows).await?;
            (0..rows.len()).collect()
        } else {
            let members: Vec<usize> = (0..rows.len())
                .filter(|&i| rows[i].route.index == route)
                .collect();
            let subset: Vec<Row<'_>> = members.iter().map(|&i| rows[i]).collect();
            copy_rows(tx, sql, &subset).await?;
            members
        };
        let applied = tx.execute(&sql.upsert, &[]).await?;
        // Every staged row merged (one per key, each inserted or replacing its row): each is
        // the event its key now holds, and the question need not be asked — the live stream's
        // usual batch. Otherwise ask which rows the table did not keep.
        let all_applied = usize::try_from(applied).is_ok_and(|n| n == members.len());
        if let Some(query) = sql.superseded.as_ref().filter(|_| !all_applied) {
            for row in tx.query(query.as_str(), &[]).await? {
                let ord: i32 = row.get(0);
                if let Some(&index) = usize::try_from(ord).ok().and_then(|o| members.get(o)) {
                    superseded.push(index);
                }
            }
        }
    }
    Ok(superseded)
}

fn truncate_stages(statements: &RouteStatements, rows: &[Row<'_>]) -> String {
    let mut routes: Vec<usize> = rows.iter().map(|r| r.route.index).collect();
    routes.sort_unstable();
    routes.dedup();
    let stages: Vec<&str> = routes
        .iter()
        .filter_map(|&i| statements.get(i).map(|s| s.stage.as_str()))
        .collect();
    if stages.is_empty() {
        String::new()
    } else {
        format!("TRUNCATE {}", stages.join(", "))
    }
}

/// What went wrong, naming only the SQLSTATE and the objects involved: server messages and
/// their DETAIL lines can quote row values, so they are never used.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "SQLSTATE {} (table {:?}, column {:?}, constraint {:?})",
            db.code().code(),
            db.table().unwrap_or("-"),
            db.column().unwrap_or("-"),
            db.constraint().unwrap_or("-"),
        ),
        None if e.is_closed() => "connection closed".to_owned(),
        None => format!(
            "client or connection error ({})",
            e.source()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "no detail".into())
        ),
    }
}

/// Connection problems, contention, resource shortages and a cancelled statement (the
/// deadline's statement timeout) are retryable; anything else (a missing table, a
/// permission) is permanent. A refused row never reaches here: it is a [`Refusal`].
fn classify(e: &tokio_postgres::Error) -> PortError {
    let msg = format!("postgres: {}", describe(e));
    match e.code() {
        None => PortError::retryable(msg),
        Some(c)
            if c.code().starts_with("08")
                || c.code().starts_with("53")
                || c.code().starts_with("57") =>
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
    async fn upsert(&self, rows: &[Row<'_>], until_ms: i64) -> Result<Upserted, PortError> {
        if rows.is_empty() {
            return Ok(Upserted::default());
        }
        let mut attempt = 1;
        loop {
            match self.upsert_once(rows, until_ms).await {
                Ok(refused) => return Ok(refused),
                Err(e) if e.is_retryable() && attempt < SINK_RETRY.max_attempts => {
                    let pause = SINK_RETRY.backoff(attempt);
                    if epoch_ms() + pause.as_millis() as i64 >= until_ms {
                        return Err(e);
                    }
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
