//! The table committer (docs/exactly-once.md, "The table committer"): a Lambda function fed by
//! S3 notifications of the loaders' new staged objects through SQS; for each route with a
//! `[route.iceberg]` table it claims the objects, merges them into data files and appends them
//! to the table once ([`streamload_table::commit`]). It answers with the messages to retry
//! (`batchItemFailures`): those naming an object still held by a commit that may land, or
//! whose commit failed.

pub mod audit;
pub mod claims;
pub mod notification;
pub mod staging;

use claims::DynamoCommitClaims;
use notification::{created_objects, route_of, SqsEvent};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use streamload_core::route::Routes;
use streamload_iceberg::{CallDeadlines, CatalogSettings, IcebergTable, TableError};
use streamload_table::commit::{commit_staged, Clock, Outcome, Settings};
use streamload_table::ports::StagedObject;

/// Start-up failures: one line naming the variable, route or setting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Routes(#[from] streamload_runtime::StartError),
    #[error("{0}")]
    Table(#[from] TableError),
}

/// The committer's settings from its environment.
#[derive(Debug, Clone)]
pub struct CommitterConfig {
    pub routes: streamload_runtime::config::RoutesSource,
    pub dedup_table: String,
    pub output_bucket: String,
    pub dedup_ttl_seconds: i64,
    pub catalog: CatalogSettings,
    pub settings: Settings,
    /// How long a catalog call or a data-file write may take (`CATALOG_CALL_TIMEOUT_SECONDS`).
    pub deadlines: CallDeadlines,
    /// `STREAMLOAD_TABLE_NAMESPACE`: the one namespace (Glue database) this deployment may
    /// write, when its role is limited to one; every route's table must be in it.
    pub namespace: Option<String>,
}

impl CommitterConfig {
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, StartError> {
        let required = |name: &str| {
            var(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| StartError::Config(format!("{name} is not set")))
        };
        let number = |name: &str, default: i64| -> Result<i64, StartError> {
            match var(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| StartError::Config(format!("{name} {v:?} is not a whole number"))),
            }
        };
        let lease = number("COMMIT_LEASE_SECONDS", 120)?;
        if !(10..=900).contains(&lease) {
            return Err(StartError::Config(format!(
                "COMMIT_LEASE_SECONDS {lease} must be between 10 and 900"
            )));
        }
        // 20 s, or half a shorter lease: a call given up on leaves time to retry within it.
        let call_timeout = number("CATALOG_CALL_TIMEOUT_SECONDS", 20.min(lease / 2))?;
        if !(1..lease).contains(&call_timeout) {
            return Err(StartError::Config(format!(
                "CATALOG_CALL_TIMEOUT_SECONDS {call_timeout} must be at least 1 and below COMMIT_LEASE_SECONDS ({lease})"
            )));
        }
        let retention_hours = number("SNAPSHOT_RETENTION_HOURS", 120)?;
        if retention_hours < 1 {
            return Err(StartError::Config(
                "SNAPSHOT_RETENTION_HOURS must be at least 1".into(),
            ));
        }
        let routes = streamload_runtime::config::routes_source(var("STREAMLOAD_CONFIG"))
            .map_err(|e| StartError::Config(e.to_string()))?;
        if matches!(routes, streamload_runtime::config::RoutesSource::Builtin) {
            return Err(StartError::Config(
                "STREAMLOAD_CONFIG is not set (the committer reads the loaders' routes file)"
                    .into(),
            ));
        }
        Ok(CommitterConfig {
            routes,
            dedup_table: required("DEDUP_TABLE")?,
            output_bucket: required("OUTPUT_BUCKET")?,
            dedup_ttl_seconds: number("DEDUP_TTL_SECONDS", 604_800)?,
            catalog: CatalogSettings::from_env(&var)?,
            settings: Settings {
                lease: Duration::from_secs(lease.unsigned_abs()),
                retention: Duration::from_secs(retention_hours.unsigned_abs() * 3600),
                ..Settings::default()
            },
            deadlines: CallDeadlines {
                catalog: Duration::from_secs(call_timeout.unsigned_abs()),
                ..CallDeadlines::default()
            },
            namespace: var("STREAMLOAD_TABLE_NAMESPACE").filter(|v| !v.trim().is_empty()),
        })
    }
}

/// The wall clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// One route with a table: where its staged objects are, its table, its claims.
#[derive(Debug)]
struct RouteTable {
    name: String,
    table: IcebergTable,
    claims: DynamoCommitClaims,
}

/// The committer, started: every route's table opened (created or evolved).
#[derive(Debug)]
pub struct Committer {
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefixes: Vec<(usize, String)>,
    tables: Vec<RouteTable>,
    settings: Settings,
}

/// The answer to the SQS mapping: the messages to deliver again.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct BatchResponse {
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<ItemFailure>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ItemFailure {
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

impl Committer {
    /// Opens the tables of the routes that have one.
    pub async fn start(
        config: &CommitterConfig,
        sdk: &aws_config::SdkConfig,
    ) -> Result<Committer, StartError> {
        let routes = streamload_runtime::read_route_file(&config.routes, sdk).await?;
        Committer::with_routes(config, sdk, &routes).await
    }

    pub async fn with_routes(
        config: &CommitterConfig,
        sdk: &aws_config::SdkConfig,
        routes: &Routes,
    ) -> Result<Committer, StartError> {
        outside_namespace(routes, config.namespace.as_deref()).map_err(StartError::Config)?;
        let catalog = streamload_iceberg::connect(
            &config.catalog,
            streamload_iceberg::storage_props(|k| std::env::var(k).ok()),
        )
        .await?;
        let dynamodb = streamload_aws::dynamodb_client(sdk);
        let s3 = streamload_aws::s3_client(sdk);
        let lake_prefixes: Vec<String> = routes
            .iter()
            .filter(|r| r.iceberg.is_some())
            .map(|r| r.lake_prefix.clone())
            .collect();
        let rules = staging::expiry_rules(&s3, &config.output_bucket)
            .await
            .map_err(StartError::Config)?;
        staging::too_early(&rules, &lake_prefixes, config.dedup_ttl_seconds)
            .map_err(StartError::Config)?;
        let mut tables = Vec::new();
        let mut prefixes = Vec::new();
        for route in routes.iter().filter(|r| r.iceberg.is_some()) {
            let table = IcebergTable::open(catalog.clone(), route, &config.output_bucket)
                .await
                .map_err(|e| StartError::Config(format!("route {:?}: {e}", route.name)))?
                .with_deadlines(config.deadlines);
            prefixes.push((tables.len(), route.lake_prefix.clone()));
            tables.push(RouteTable {
                name: route.name.clone(),
                table,
                claims: DynamoCommitClaims::new(
                    dynamodb.clone(),
                    &config.dedup_table,
                    &route.name,
                    config.dedup_ttl_seconds,
                ),
            });
        }
        if tables.is_empty() {
            return Err(StartError::Config(
                "no route has a [route.iceberg] table: nothing to commit".into(),
            ));
        }
        Ok(Committer {
            s3,
            bucket: config.output_bucket.clone(),
            prefixes,
            tables,
            settings: config.settings,
        })
    }

    /// Commits what one SQS batch names; `request_id` (unique per invocation) makes the
    /// commit ids.
    pub async fn handle(
        &self,
        event: &SqsEvent,
        request_id: &str,
        clock: &dyn Clock,
    ) -> BatchResponse {
        let mut per_table: BTreeMap<usize, Vec<StagedObject>> = BTreeMap::new();
        let mut created: HashMap<String, i64> = HashMap::new();
        let mut messages: Vec<(&str, Vec<(usize, String)>)> = Vec::new();
        let mut failed: HashSet<&str> = HashSet::new();
        for m in &event.records {
            match created_objects(&m.body) {
                Err(why) => {
                    tracing::warn!(message_id = %m.message_id, why = %why, "message is not a notification");
                    failed.insert(&m.message_id);
                }
                Ok(objects) => {
                    let mut named = Vec::new();
                    for o in objects.into_iter().filter(|o| o.bucket == self.bucket) {
                        if let Some(t) = route_of(&o.key, &self.prefixes) {
                            named.push((t, o.key.clone()));
                            if let Some(ms) = o.created_ms {
                                created.insert(o.key.clone(), ms);
                            }
                            per_table.entry(t).or_default().push(StagedObject {
                                key: o.key,
                                bytes: o.size,
                            });
                        }
                    }
                    messages.push((&m.message_id, named));
                }
            }
        }
        let mut done: HashSet<(usize, String)> = HashSet::new();
        for (t, objects) in per_table {
            let route = &self.tables[t];
            let commit = format!("{request_id}-{t}");
            let started = std::time::Instant::now();
            match commit_staged(
                &route.claims,
                &route.table,
                clock,
                self.settings,
                &commit,
                &objects,
            )
            .await
            {
                Ok(report) => {
                    let count =
                        |f: fn(&Outcome) -> bool| report.outcomes.values().filter(|o| f(o)).count();
                    let behind_ms = behind_ms(&report, &created, clock);
                    tracing::info!(
                        route = %route.name,
                        commit = %report.commit,
                        objects = report.outcomes.len(),
                        appended = report.appended(),
                        behind_ms = behind_ms.unwrap_or(0),
                        already_in_table = count(|o| matches!(o, Outcome::AlreadyInTable { .. })),
                        left = count(|o| *o == Outcome::Left),
                        attempts = report.attempts,
                        millis = started.elapsed().as_millis() as u64,
                        "committed"
                    );
                    for (key, outcome) in report.outcomes {
                        match outcome {
                            o if o.is_done() => {
                                done.insert((t, key));
                            }
                            Outcome::Report { commit: held_by } => tracing::error!(
                                route = %route.name,
                                held_by = %held_by,
                                "a staged object's commit is older than the snapshot retention and not in the log: an operator must decide (docs/operations.md)"
                            ),
                            _ => {}
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(route = %route.name, commit = %commit, error = %e, "commit failed")
                }
            }
        }
        for (id, named) in messages {
            if named.iter().any(|n| !done.contains(n)) {
                failed.insert(id);
            }
        }
        let mut batch_item_failures: Vec<ItemFailure> = failed
            .into_iter()
            .map(|id| ItemFailure {
                item_identifier: id.to_string(),
            })
            .collect();
        batch_item_failures.sort_by(|a, b| a.item_identifier.cmp(&b.item_identifier));
        BatchResponse {
            batch_item_failures,
        }
    }

    /// The safety net for a notification that never came (a bucket whose notification
    /// configuration was replaced, a queue purged): lists the staging of the last `hours`
    /// event-time hours of every route and commits what no commit holds yet. Objects already
    /// committed cost one claim read each.
    pub async fn sweep(&self, hours: u32, request_id: &str, clock: &dyn Clock) -> SweepReport {
        let mut report = SweepReport::default();
        let now = chrono::DateTime::from_timestamp_millis(clock.now_ms()).unwrap_or_default();
        for (t, prefix) in &self.prefixes {
            let route = &self.tables[*t];
            let mut objects = Vec::new();
            let mut created: HashMap<String, i64> = HashMap::new();
            for back in 0..=i64::from(hours) {
                let hour = now - chrono::Duration::hours(back);
                let folder = format!("{prefix}{}/", hour.format("dt=%Y-%m-%d/hour=%H"));
                match self.list(&folder).await {
                    Ok(found) => {
                        for (object, modified) in found {
                            if let Some(ms) = modified {
                                created.insert(object.key.clone(), ms);
                            }
                            objects.push(object);
                        }
                    }
                    Err(why) => {
                        tracing::error!(route = %route.name, why = %why, "sweep listing failed");
                        report.failed_listings += 1;
                    }
                }
            }
            report.listed += objects.len();
            for (n, chunk) in objects.chunks(MAX_OBJECTS_PER_COMMIT).enumerate() {
                let commit = format!("{request_id}-sweep-{t}-{n}");
                match commit_staged(
                    &route.claims,
                    &route.table,
                    clock,
                    self.settings,
                    &commit,
                    chunk,
                )
                .await
                {
                    Ok(r) => {
                        report.appended += r.appended();
                        report.behind_ms = report.behind_ms.max(behind_ms(&r, &created, clock));
                        report.left += r.outcomes.values().filter(|o| !o.is_done()).count();
                    }
                    Err(e) => {
                        tracing::error!(route = %route.name, commit = %commit, error = %e, "sweep commit failed");
                        report.left += chunk.len();
                    }
                }
            }
        }
        tracing::info!(
            listed = report.listed,
            appended = report.appended,
            behind_ms = report.behind_ms.unwrap_or(0),
            left = report.left,
            "swept"
        );
        report
    }

    /// The Parquet objects under `folder`, each with its last-modified time (ms).
    async fn list(&self, folder: &str) -> Result<Vec<(StagedObject, Option<i64>)>, String> {
        let mut out = Vec::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(folder)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                format!(
                    "ListObjectsV2: {}",
                    streamload_aws::classify_sdk_error("ListObjectsV2", &e)
                )
            })?;
            for o in page.contents() {
                if let Some(key) = o.key().filter(|k| k.ends_with(".parquet")) {
                    let modified = o.last_modified().and_then(|t| t.to_millis().ok());
                    out.push((
                        StagedObject {
                            key: key.to_string(),
                            bytes: o.size().unwrap_or(0).max(0) as u64,
                        },
                        modified,
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// A route whose table is outside the one namespace the deployment may write, as one line.
fn outside_namespace(routes: &Routes, allowed: Option<&str>) -> Result<(), String> {
    let Some(allowed) = allowed else {
        return Ok(());
    };
    for route in routes.iter() {
        if let Some(plan) = route.iceberg.as_ref().filter(|p| p.namespace != allowed) {
            return Err(format!(
                "route {:?}: [route.iceberg] namespace {:?} is not STREAMLOAD_TABLE_NAMESPACE {allowed:?} (the one namespace this deployment may write)",
                route.name, plan.namespace
            ));
        }
    }
    Ok(())
}

/// How far the table was behind the oldest object this commit appended when the append was
/// confirmed: now minus the object's creation (S3's notification time, or its last-modified
/// time for the sweep). The loaders write the staged object right after PostgreSQL's commit
/// (docs/exactly-once.md, step 6), so this is, within that step, the table's lag behind
/// PostgreSQL for those events. `None` when nothing was
/// appended or no creation time is known.
fn behind_ms(
    report: &streamload_table::commit::Report,
    created: &HashMap<String, i64>,
    clock: &dyn Clock,
) -> Option<u64> {
    report
        .outcomes
        .iter()
        .filter(|(_, o)| **o == Outcome::Appended)
        .filter_map(|(key, _)| created.get(key))
        .min()
        .map(|oldest| u64::try_from(clock.now_ms() - oldest).unwrap_or(0))
}

/// What one invocation of the committer is: a batch of the SQS mapping (S3 notifications), or
/// the schedule's sweep (`{"streamload_sweep": {"hours": N}}`, the template's `Sweep` input).
#[derive(Debug)]
pub enum Invocation {
    Notifications(SqsEvent),
    Sweep { hours: u32 },
}

impl Invocation {
    /// Reads an invocation's payload; anything else is an error naming what was expected.
    ///
    /// ```
    /// use table_committer::Invocation;
    /// let sweep = serde_json::json!({"streamload_sweep": {"hours": 3}});
    /// assert!(matches!(Invocation::parse(sweep), Ok(Invocation::Sweep { hours: 3 })));
    /// let batch = serde_json::json!({"Records": [{"messageId": "m-1", "body": "{}"}]});
    /// assert!(matches!(Invocation::parse(batch), Ok(Invocation::Notifications(_))));
    /// ```
    pub fn parse(payload: serde_json::Value) -> Result<Self, String> {
        if let Some(sweep) = payload.get("streamload_sweep") {
            let hours = sweep
                .get("hours")
                .and_then(serde_json::Value::as_u64)
                .and_then(|h| u32::try_from(h).ok())
                .filter(|h| (1..=MAX_SWEEP_HOURS).contains(h))
                .ok_or_else(|| {
                    format!(
                        "streamload_sweep.hours must be a whole number from 1 to {MAX_SWEEP_HOURS}"
                    )
                })?;
            return Ok(Invocation::Sweep { hours });
        }
        serde_json::from_value(payload)
            .map(Invocation::Notifications)
            .map_err(|e| format!("neither an SQS batch nor a streamload_sweep: {e}"))
    }
}

/// The longest look-back of a sweep: a week of event-time hours (each costs a listing per
/// route).
pub const MAX_SWEEP_HOURS: u32 = 168;

impl Committer {
    /// Runs one invocation; the answer is the mapping's partial-batch response, or the
    /// sweep's report.
    pub async fn invoke(
        &self,
        invocation: Invocation,
        request_id: &str,
        clock: &dyn Clock,
    ) -> serde_json::Value {
        match invocation {
            Invocation::Notifications(event) => {
                serde_json::to_value(self.handle(&event, request_id, clock).await)
            }
            Invocation::Sweep { hours } => {
                serde_json::to_value(self.sweep(hours, request_id, clock).await)
            }
        }
        .unwrap_or_default()
    }
}

/// Staged objects one commit takes at most: each costs a claim read and a claim write, and
/// its rows pass through the committer's memory on their way to the data files.
pub const MAX_OBJECTS_PER_COMMIT: usize = 1000;

/// What a sweep found and did.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct SweepReport {
    pub listed: usize,
    pub appended: usize,
    /// Objects still held by a commit that may land, or whose commit failed: the next sweep
    /// (or their notification) takes them.
    pub left: usize,
    pub failed_listings: usize,
    /// How far behind the oldest object it appended the table was (ms): see [`behind_ms`].
    pub behind_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    const BASE: [(&str, &str); 5] = [
        ("STREAMLOAD_CONFIG", "/var/task/routes.toml"),
        ("DEDUP_TABLE", "claims"),
        ("OUTPUT_BUCKET", "lake"),
        ("STREAMLOAD_CATALOG", "glue"),
        ("STREAMLOAD_WAREHOUSE", "s3://lake/warehouse"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<_> = extra.to_vec();
        v.extend(BASE);
        v
    }

    #[test]
    fn defaults_are_a_two_minute_lease_and_twenty_second_catalog_calls() {
        // Given only the required settings
        let config = CommitterConfig::from_lookup(lookup(&BASE)).expect("valid");
        // Then the lease, retention and call deadlines are the documented defaults
        assert_eq!(config.settings.lease, Duration::from_secs(120));
        assert_eq!(config.settings.retention, Duration::from_secs(120 * 3600));
        assert_eq!(config.deadlines.catalog, Duration::from_secs(20));
        // and a short lease shortens the default deadline instead of refusing to start
        let short = with(&[("COMMIT_LEASE_SECONDS", "20")]);
        let config = CommitterConfig::from_lookup(lookup(&short)).expect("valid");
        assert_eq!(config.deadlines.catalog, Duration::from_secs(10));
        assert_eq!(
            config.catalog,
            CatalogSettings::Glue {
                warehouse: "s3://lake/warehouse".into(),
                catalog_id: None
            }
        );
    }

    #[test]
    fn a_route_outside_the_deployments_namespace_is_refused_naming_it() {
        // Given routes whose table is in namespace "streamload" (the default)
        let routes = streamload_runtime::parse_routes(
            "[[route]]\nname = \"orders\"\nsource = \"kinesis:orders\"\nkey = [\"id\"]\nlake_prefix = \"orders/\"\n[route.iceberg]\ntable = \"orders\"\n[[route.column]]\nname = \"id\"\nfrom = \"/id\"\ntype = \"text\"\nrequired = true\n",
            "test",
        )
        .expect("routes");
        // Then another allowed namespace refuses them in one line; the same or none passes
        let e = outside_namespace(&routes, Some("analytics")).unwrap_err();
        assert_eq!(
            e,
            "route \"orders\": [route.iceberg] namespace \"streamload\" is not STREAMLOAD_TABLE_NAMESPACE \"analytics\" (the one namespace this deployment may write)"
        );
        assert_eq!(outside_namespace(&routes, Some("streamload")), Ok(()));
        assert_eq!(outside_namespace(&routes, None), Ok(()));
    }

    #[test]
    fn a_sweep_without_sensible_hours_or_an_unknown_payload_is_refused_saying_why() {
        for bad in [
            serde_json::json!({"streamload_sweep": {}}),
            serde_json::json!({"streamload_sweep": {"hours": 0}}),
            serde_json::json!({"streamload_sweep": {"hours": 1000}}),
        ] {
            let e = Invocation::parse(bad).unwrap_err();
            assert!(e.starts_with("streamload_sweep.hours must be"), "{e}");
        }
        let e = Invocation::parse(serde_json::json!({"Records": "x"})).unwrap_err();
        assert!(
            e.starts_with("neither an SQS batch nor a streamload_sweep"),
            "{e}"
        );
    }

    #[test]
    fn each_bad_setting_is_one_line_naming_its_variable() {
        let cases: [(&[(&str, &str)], &str); 5] = [
            (&[("COMMIT_LEASE_SECONDS", "5")], "COMMIT_LEASE_SECONDS 5"),
            (&[("COMMIT_LEASE_SECONDS", "two")], "COMMIT_LEASE_SECONDS \"two\""),
            (
                &[("CATALOG_CALL_TIMEOUT_SECONDS", "0")],
                "CATALOG_CALL_TIMEOUT_SECONDS 0",
            ),
            (
                &[
                    ("COMMIT_LEASE_SECONDS", "30"),
                    ("CATALOG_CALL_TIMEOUT_SECONDS", "30"),
                ],
                "CATALOG_CALL_TIMEOUT_SECONDS 30 must be at least 1 and below COMMIT_LEASE_SECONDS (30)",
            ),
            (
                &[("SNAPSHOT_RETENTION_HOURS", "0")],
                "SNAPSHOT_RETENTION_HOURS",
            ),
        ];
        for (extra, expected) in cases {
            let vars = with(extra);
            let e = CommitterConfig::from_lookup(lookup(&vars))
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
