//! The audit behind `streamload verify-table` and `streamload status --routes`: a route's
//! Iceberg table against the staged objects the table committer builds it from.
//!
//! * **Each identity once** in the table's current snapshot (the table is the log: every
//!   revision once, so the identity — not the key — is what must not repeat).
//! * **Nothing lost**: the identities of every staged object whose commit claim says
//!   `committed` are in the table.
//! * **Nothing extra**: every identity in the table comes from a staged object.
//! * **Lag**: the staged objects no commit has taken yet, and the oldest one's age.

use crate::claims::DynamoCommitClaims;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use streamload_core::route::Route;
use streamload_iceberg::IcebergTable;
use streamload_table::ports::{ClaimState, CommitClaims, TableLog};

/// What the audit of one route's table found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TableAudit {
    pub route: String,
    pub table: String,
    pub rows: usize,
    /// Identities in the table more than once, with their count.
    pub duplicated: Vec<(String, usize)>,
    pub staged_objects: usize,
    pub committed_objects: usize,
    /// Identities of committed staged objects the table lacks.
    pub missing: usize,
    /// Identities in the table no staged object holds.
    pub extra: usize,
    /// Staged objects no commit has appended yet, and the oldest one's age in seconds.
    pub pending_objects: usize,
    pub oldest_pending_seconds: Option<i64>,
    /// Seconds since the current snapshot was committed.
    pub last_commit_seconds: Option<i64>,
}

impl TableAudit {
    pub fn exactly_once(&self) -> bool {
        self.duplicated.is_empty() && self.missing == 0 && self.extra == 0
    }

    /// One line a person reads (no value of any event in it: counts only).
    pub fn line(&self) -> String {
        let lag = match self.oldest_pending_seconds {
            Some(s) => format!(
                "{} staged objects not yet in the table, the oldest {s} s old",
                self.pending_objects
            ),
            None => "nothing waiting".into(),
        };
        let last = self
            .last_commit_seconds
            .map(|s| format!("last commit {s} s ago"))
            .unwrap_or_else(|| "no snapshot yet".into());
        format!(
            "route {:?} table {}: {} rows, {} identities duplicated, {} missing, {} extra; {} of {} staged objects committed; {lag}; {last} — {}",
            self.route,
            self.table,
            self.rows,
            self.duplicated.len(),
            self.missing,
            self.extra,
            self.committed_objects,
            self.staged_objects,
            if self.exactly_once() { "exactly once" } else { "NOT exactly once" }
        )
    }
}

/// Audits `route`'s table. `identities_of_staged` may be skipped (`false`) for a status that
/// only wants the lag: then `missing` and `extra` are not computed.
pub async fn audit_table(
    sdk: &aws_config::SdkConfig,
    catalog: Arc<dyn streamload_iceberg::Catalog>,
    route: &Route,
    bucket: &str,
    dedup_table: &str,
    full: bool,
) -> Result<TableAudit, String> {
    let plan = route
        .iceberg
        .as_ref()
        .ok_or_else(|| format!("route {:?} has no [route.iceberg] table", route.name))?;
    let table = IcebergTable::existing(catalog, route, bucket)
        .await
        .map_err(|e| format!("route {:?}: {e}", route.name))?;
    let columns: Vec<String> = route
        .identity
        .iter()
        .map(|&i| route.columns[i].name.clone())
        .collect();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut audit = TableAudit {
        route: route.name.clone(),
        table: format!("{}.{}", plan.namespace, plan.table),
        ..TableAudit::default()
    };
    // One load of the table serves the whole audit.
    let base = table.load().await.map_err(|e| e.to_string())?;
    let (in_table, committed_at) = table
        .snapshot_identities(&base, &columns)
        .await
        .map_err(|e| e.to_string())?;
    audit.rows = in_table.len();
    audit.last_commit_seconds = committed_at.map(|t| (now_ms - t) / 1000);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for id in &in_table {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    audit.duplicated = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| (id.to_string(), *n))
        .collect();

    let s3 = streamload_aws::s3_client(sdk);
    let claims = DynamoCommitClaims::new(
        streamload_aws::dynamodb_client(sdk),
        dedup_table,
        &route.name,
        0,
    );
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(&route.lake_prefix)
        .into_paginator()
        .send();
    let mut staged_ids: HashSet<String> = HashSet::new();
    let mut committed_ids: HashSet<String> = HashSet::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| format!("listing s3://{bucket}/{}: {e}", route.lake_prefix))?;
        for o in page.contents() {
            let Some(key) = o.key() else { continue };
            if !key.ends_with(".parquet")
                || key.contains(streamload_core::object_key::MARKER_FOLDER)
            {
                continue;
            }
            audit.staged_objects += 1;
            let committed = matches!(
                claims.read(key).await.map_err(|e| e.to_string())?,
                Some(c) if c.state == ClaimState::Committed
            );
            if committed {
                audit.committed_objects += 1;
            } else {
                audit.pending_objects += 1;
                let age = o
                    .last_modified()
                    .map(|t| (now_ms - t.to_millis().unwrap_or(now_ms)) / 1000)
                    .unwrap_or(0);
                audit.oldest_pending_seconds =
                    Some(audit.oldest_pending_seconds.unwrap_or(0).max(age));
            }
            if full {
                let ids = table
                    .staged_identities(&base, key, &columns)
                    .await
                    .map_err(|e| e.to_string())?;
                if committed {
                    committed_ids.extend(ids.iter().cloned());
                }
                staged_ids.extend(ids);
            }
        }
    }
    if full {
        audit.missing = committed_ids
            .iter()
            .filter(|id| !counts.contains_key(id.as_str()))
            .count();
        audit.extra = counts
            .keys()
            .filter(|id| !staged_ids.contains(**id))
            .count();
    }
    Ok(audit)
}
