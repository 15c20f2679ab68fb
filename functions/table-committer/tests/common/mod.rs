//! Helpers of the committer's real-stack tests: a stack whose route stages orders for a
//! table, the committer's settings for it, and pyiceberg's view of the table.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use streamload_table::ports::{PortError, StagedObject, TableLog};
use streamload_tests::TestStack;
use table_committer::notification::SqsEvent;
use table_committer::CommitterConfig;

pub const ROUTE: &str = r#"
[[route]]
name = "orders"
source = "kinesis:orders"
key = ["order_id"]
identity = ["/order_id", "/revision"]
event_time = "/placed_at"
lake_prefix = "orders/"

[route.iceberg]
table = "orders"
partition = "day"

[[route.column]]
name = "order_id"
from = "/order_id"
type = "text"
required = true

[[route.column]]
name = "revision"
from = "/revision"
type = "bigint"
required = true

[[route.column]]
name = "amount"
from = "/amount"
type = "numeric"
precision = 12
scale = 2

[[route.column]]
name = "placed_at"
from = "/placed_at"
type = "timestamptz"
required = true
"#;

pub fn order(id: &str, revision: i64, placed_at: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "order_id": id, "revision": revision, "amount": "12.50", "placed_at": placed_at
    }))
    .unwrap()
}

/// A stack whose only route stages orders for a table (no database table, no index).
pub async fn lake_stack(tag: &str) -> TestStack {
    let mut stack = TestStack::new(tag, false).await;
    stack.use_routes(ROUTE);
    stack.config.database = streamload_runtime::DatabaseSource::Unset;
    stack
}

pub fn committer_config(stack: &TestStack) -> CommitterConfig {
    committer_config_with(stack, &stack.database_url)
}

/// The committer's settings with the SQL catalog at `catalog_url` (a relay, say).
pub fn committer_config_with(stack: &TestStack, catalog_url: &str) -> CommitterConfig {
    let routes = match &stack.config.routes {
        streamload_runtime::RoutesSource::File(p) => p.clone(),
        other => panic!("{other:?}"),
    };
    let vars = [
        ("STREAMLOAD_CONFIG", routes),
        ("DEDUP_TABLE", stack.name.clone()),
        ("OUTPUT_BUCKET", stack.name.clone()),
        ("STREAMLOAD_CATALOG", "sql".into()),
        ("STREAMLOAD_CATALOG_URI", catalog_url.to_string()),
        (
            "STREAMLOAD_WAREHOUSE",
            format!("s3://{}/warehouse", stack.name),
        ),
    ];
    CommitterConfig::from_lookup(|k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(k).ok())
    })
    .expect("committer config")
}

/// One SQS message per key, each an S3 notification as S3 sends it (keys URL-encoded).
pub fn notifications(bucket: &str, keys: &[String]) -> SqsEvent {
    let records: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let encoded = key.replace('=', "%3D");
            let body = json!({"Records": [{
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": bucket}, "object": {"key": encoded, "size": 1000}}
            }]});
            json!({"messageId": format!("m-{i}"), "body": body.to_string()})
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

pub async fn staged_keys(stack: &TestStack) -> Vec<String> {
    stack
        .object_keys()
        .await
        .into_iter()
        .filter(|k| k.starts_with("orders/") && k.ends_with(".parquet"))
        .collect()
}

/// pyiceberg's view of the table.
pub fn read_back(stack: &TestStack) -> Value {
    read_with(&[stack.database_url.as_str(), "streamload", "orders"])
}

/// pyiceberg's view of the table whose current metadata file is `location`.
pub fn read_metadata(location: &str) -> Value {
    read_with(&[&format!("metadata:{location}"), "-", "-"])
}

fn read_with(args: &[&str]) -> Value {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new(format!("{root}/.venv/bin/python"))
        .arg(format!("{root}/scripts/iceberg-read.py"))
        .args(args)
        .arg("order_id,revision,amount,placed_at")
        .output()
        .expect("pyiceberg runs");
    assert!(
        out.status.success(),
        "pyiceberg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

pub fn identities(view: &Value) -> Vec<String> {
    let mut ids: Vec<String> = view["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}#{}", r[0].as_str().unwrap(), r[1].as_str().unwrap()))
        .collect();
    ids.sort();
    ids
}

type Hook = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A table port that counts appends and can run another committer's work just before the
/// next one: what happens between a committer's base and its append.
pub struct Hooked<T> {
    pub inner: T,
    appends: AtomicUsize,
    before_append: Mutex<Option<Hook>>,
}

impl<T> Hooked<T> {
    pub fn new(inner: T) -> Self {
        Hooked {
            inner,
            appends: AtomicUsize::new(0),
            before_append: Mutex::new(None),
        }
    }
    pub fn before_next_append(&self, hook: impl Future<Output = ()> + Send + 'static) {
        *self.before_append.lock().unwrap() = Some(Box::pin(hook));
    }
    /// Append calls made (sent to the catalog).
    pub fn appends(&self) -> usize {
        self.appends.load(Ordering::SeqCst)
    }
}

impl<T: TableLog + Sync> TableLog for Hooked<T>
where
    T::Base: Sync,
    T::Written: Sync,
{
    type Base = T::Base;
    type Written = T::Written;
    async fn load(&self) -> Result<T::Base, PortError> {
        self.inner.load().await
    }
    fn commits(&self, base: &T::Base) -> BTreeSet<String> {
        self.inner.commits(base)
    }
    async fn write(
        &self,
        base: &T::Base,
        write_id: &str,
        objects: &[StagedObject],
    ) -> Result<T::Written, PortError> {
        self.inner.write(base, write_id, objects).await
    }
    async fn append(
        &self,
        base: &T::Base,
        commit: &str,
        written: &T::Written,
    ) -> Result<(), PortError> {
        let hook = self.before_append.lock().unwrap().take();
        if let Some(hook) = hook {
            hook.await;
        }
        self.appends.fetch_add(1, Ordering::SeqCst);
        self.inner.append(base, commit, written).await
    }
}

/// The staged objects of `keys` as the protocol takes them.
pub fn objects(keys: &[String]) -> Vec<StagedObject> {
    keys.iter()
        .map(|k| StagedObject {
            key: k.clone(),
            bytes: 1000,
        })
        .collect()
}

/// Stages `orders` (id, revision, placed_at) with the real loader in one batch per call.
pub async fn stage(
    stack: &TestStack,
    batch_id: &str,
    orders: &[(&str, i64, &str)],
    first_seq: u64,
) {
    let p = stack.pipeline().await;
    let records: Vec<(u64, Vec<u8>)> = orders
        .iter()
        .enumerate()
        .map(|(i, (id, rev, at))| (first_seq + i as u64, order(id, *rev, at)))
        .collect();
    let r = p
        .process(
            &streamload_tests::kinesis_batch(&records),
            &streamload_tests::invocation(batch_id, std::time::Duration::from_secs(30)),
        )
        .await;
    assert!(
        r.outcomes
            .iter()
            .all(|o| *o == streamload_core::RecordOutcome::Loaded),
        "{:?}",
        r.outcomes
    );
}
