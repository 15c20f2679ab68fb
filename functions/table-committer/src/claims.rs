//! The committer's claims on staged objects, in the loaders' dedup table: one item per staged
//! object, `pk` = `tc:<route>:<staged key>` (the loaders' keys start `ev:`, `rt:`, `dl:` and
//! `lease:`, so none collides), `commit_state` (`committing` | `committed`), `commit_id`,
//! `lease_until` and `taken_at` (epoch ms), `expires_at` (epoch s, the table's TTL attribute).
//!
//! Every write is conditional and asks for the item that refused it: a write whose answer was
//! lost and which the SDK retried recognises its own earlier attempt in that item.

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;
use streamload_table::ports::{ClaimRecord, ClaimState, CommitClaims, PortError, TakeAnswer};

const PK: &str = "pk";
const STATE: &str = "commit_state";
const COMMIT: &str = "commit_id";
const LEASE: &str = "lease_until";
const TAKEN: &str = "taken_at";
const EXPIRES: &str = "expires_at";

/// The claim-key prefix of the committer's claims.
pub const CLAIM_PREFIX: &str = "tc:";

/// The committer's claims of one route.
#[derive(Debug, Clone)]
pub struct DynamoCommitClaims {
    client: Client,
    table: String,
    route: String,
    /// How long a claim is kept (the loaders' `DEDUP_TTL_SECONDS`): a committed claim must
    /// outlive every notification or sweep that may name its object again.
    ttl_seconds: i64,
}

impl DynamoCommitClaims {
    pub fn new(client: Client, table: &str, route: &str, ttl_seconds: i64) -> Self {
        DynamoCommitClaims {
            client,
            table: table.into(),
            route: route.into(),
            ttl_seconds,
        }
    }

    fn pk(&self, key: &str) -> AttributeValue {
        AttributeValue::S(format!("{CLAIM_PREFIX}{}:{key}", self.route))
    }

    fn item(
        &self,
        key: &str,
        commit: &str,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (PK.into(), self.pk(key)),
            (STATE.into(), AttributeValue::S("committing".into())),
            (COMMIT.into(), AttributeValue::S(commit.into())),
            (LEASE.into(), AttributeValue::N(lease_until_ms.to_string())),
            (TAKEN.into(), AttributeValue::N(now_ms.to_string())),
            (
                EXPIRES.into(),
                AttributeValue::N((now_ms / 1000 + self.ttl_seconds).to_string()),
            ),
        ])
    }

    async fn put(
        &self,
        item: HashMap<String, AttributeValue>,
        condition: &str,
        values: HashMap<String, AttributeValue>,
        commit: &str,
    ) -> Result<TakeAnswer, PortError> {
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .expression_attribute_names("#pk", PK)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if !values.is_empty() {
            request = request
                .expression_attribute_names("#c", COMMIT)
                .expression_attribute_names("#s", STATE)
                .set_expression_attribute_values(Some(values));
        }
        match request.send().await {
            Ok(_) => Ok(TakeAnswer::Taken),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(refused)) => {
                    let old = refused.item().map(record).transpose()?.flatten();
                    match old {
                        // Our own earlier attempt, whose answer was lost.
                        Some(r) if r.commit == commit && r.state == ClaimState::Committing => {
                            Ok(TakeAnswer::Taken)
                        }
                        Some(r) => Ok(TakeAnswer::Held(r)),
                        None => Err(PortError::Retryable("claim refused without an item".into())),
                    }
                }
                _ => Err(sdk_error("PutItem", &e)),
            },
        }
    }
}

impl CommitClaims for DynamoCommitClaims {
    async fn read(&self, key: &str) -> Result<Option<ClaimRecord>, PortError> {
        let answer = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, self.pk(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", &e))?;
        Ok(answer.item().map(record).transpose()?.flatten())
    }

    async fn take(
        &self,
        key: &str,
        commit: &str,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> Result<TakeAnswer, PortError> {
        let item = self.item(key, commit, lease_until_ms, now_ms);
        self.put(item, "attribute_not_exists(#pk)", HashMap::new(), commit)
            .await
    }

    async fn take_over(
        &self,
        key: &str,
        from: &str,
        commit: &str,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> Result<TakeAnswer, PortError> {
        let item = self.item(key, commit, lease_until_ms, now_ms);
        let values = HashMap::from([
            (":from".to_string(), AttributeValue::S(from.into())),
            (
                ":committing".to_string(),
                AttributeValue::S("committing".into()),
            ),
        ]);
        self.put(
            item,
            "attribute_exists(#pk) AND #c = :from AND #s = :committing",
            values,
            commit,
        )
        .await
    }

    async fn mark_committed(
        &self,
        key: &str,
        holder: &str,
        appended_by: &str,
    ) -> Result<(), PortError> {
        let answer = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, self.pk(key))
            .update_expression("SET #s = :committed, #c = :by")
            .condition_expression("#c = :holder AND #s = :committing")
            .expression_attribute_names("#s", STATE)
            .expression_attribute_names("#c", COMMIT)
            .expression_attribute_values(":committed", AttributeValue::S("committed".into()))
            .expression_attribute_values(":committing", AttributeValue::S("committing".into()))
            .expression_attribute_values(":by", AttributeValue::S(appended_by.into()))
            .expression_attribute_values(":holder", AttributeValue::S(holder.into()))
            .send()
            .await;
        match answer {
            Ok(_) => Ok(()),
            // Already marked (a retry), or no longer the holder's: nothing to record.
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_error("UpdateItem", &e)),
        }
    }
}

fn record(item: &HashMap<String, AttributeValue>) -> Result<Option<ClaimRecord>, PortError> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let number = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<i64>().ok())
    };
    let (Some(state), Some(commit)) = (text(STATE), text(COMMIT)) else {
        return Err(PortError::Permanent(
            "a commit claim without commit_state or commit_id".into(),
        ));
    };
    let state = match state.as_str() {
        "committing" => ClaimState::Committing,
        "committed" => ClaimState::Committed,
        _ => {
            return Err(PortError::Permanent(
                "a commit claim with an unknown commit_state".into(),
            ))
        }
    };
    Ok(Some(ClaimRecord {
        state,
        commit,
        lease_until_ms: number(LEASE).unwrap_or(0),
        taken_at_ms: number(TAKEN).unwrap_or(0),
    }))
}

/// After the SDK's own retries: throttling and server errors may be tried again later; a
/// transport failure may have been applied; the rest will not change.
fn sdk_error<E, R>(operation: &str, e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> PortError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error,
{
    use aws_sdk_dynamodb::error::SdkError;
    match e {
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("unknown");
            PortError::Retryable(format!("{operation}: {code}"))
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            PortError::Unknown(format!("{operation}: no answer"))
        }
        _ => PortError::Retryable(format!("{operation}: could not be sent")),
    }
}
