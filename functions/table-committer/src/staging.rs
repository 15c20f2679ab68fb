//! The staged objects the committer reads must outlive every claim that names them: a
//! loader's claim names its object for `DEDUP_TTL_SECONDS`, and DynamoDB deletes expired items
//! only some time after their TTL (AWS gives no bound; typically within days, so two days are
//! allowed). A lifecycle rule that expires the lake's objects sooner would let a redelivered
//! record's claim point at nothing, and an object expired before its commit would never reach
//! the table. Checked at start-up against the bucket's actual lifecycle configuration, which
//! catches a rule added outside the stack too.

use aws_sdk_s3::Client;

/// The TTL deletion lag allowed for: DynamoDB deletes expired items "typically within a few
/// days" of their TTL.
pub const TTL_DELETION_LAG_SECONDS: i64 = 2 * 86_400;

/// A lifecycle rule as the check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryRule {
    pub id: String,
    /// The rule's prefix filter (`""`: the whole bucket).
    pub prefix: String,
    pub days: i64,
}

/// The first rule that expires objects under one of `lake_prefixes` sooner than the claims
/// naming them may live, as one line naming the rule.
///
/// ```
/// use table_committer::staging::{too_early, ExpiryRule};
/// let rule = ExpiryRule { id: "tidy".into(), prefix: "orders/".into(), days: 7 };
/// let e = too_early(&[rule], &["orders/".to_string()], 604_800).unwrap_err();
/// assert!(e.contains("lifecycle rule \"tidy\""));
/// let ok = ExpiryRule { id: "tidy".into(), prefix: "orders/".into(), days: 9 };
/// assert!(too_early(&[ok], &["orders/".to_string()], 604_800).is_ok());
/// ```
pub fn too_early(
    rules: &[ExpiryRule],
    lake_prefixes: &[String],
    dedup_ttl_seconds: i64,
) -> Result<(), String> {
    let needed = dedup_ttl_seconds + TTL_DELETION_LAG_SECONDS;
    for rule in rules {
        let overlaps = lake_prefixes
            .iter()
            .any(|p| p.starts_with(&rule.prefix) || rule.prefix.starts_with(p.as_str()));
        if overlaps && rule.days * 86_400 < needed {
            return Err(format!(
                "lifecycle rule {:?} of the loaders' bucket expires objects under {:?} after {} days, before the claims naming them end (DEDUP_TTL_SECONDS + 2 days of TTL deletion lag = {} days): lengthen it or give the lake another prefix",
                rule.id,
                rule.prefix,
                rule.days,
                (needed + 86_399) / 86_400
            ));
        }
    }
    Ok(())
}

/// The enabled expiration rules of `bucket` (none when it has no lifecycle configuration).
pub async fn expiry_rules(s3: &Client, bucket: &str) -> Result<Vec<ExpiryRule>, String> {
    let answer = match s3
        .get_bucket_lifecycle_configuration()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(a) => a,
        Err(e) => {
            let code = e
                .as_service_error()
                .and_then(aws_smithy_types::error::metadata::ProvideErrorMetadata::code)
                .unwrap_or("no answer");
            if code == "NoSuchLifecycleConfiguration" {
                return Ok(Vec::new());
            }
            return Err(format!(
                "reading the lifecycle configuration of bucket {bucket:?}: {code}"
            ));
        }
    };
    let mut rules = Vec::new();
    for r in answer.rules() {
        if r.status().as_str() != "Enabled" {
            continue;
        }
        let Some(days) = r.expiration().and_then(|e| e.days()) else {
            continue;
        };
        #[allow(deprecated)]
        let legacy = r.prefix().map(str::to_string);
        let filter = r.filter();
        let prefix = filter
            .and_then(|f| f.prefix().map(str::to_string))
            .or_else(|| {
                filter
                    .and_then(|f| f.and())
                    .and_then(|a| a.prefix().map(str::to_string))
            })
            .or(legacy)
            .unwrap_or_default();
        rules.push(ExpiryRule {
            id: r.id().unwrap_or("(no id)").to_string(),
            prefix,
            days: i64::from(days),
        });
    }
    Ok(rules)
}
