//! Dedup claims in DynamoDB: one item per `event_id`, written with conditional PutItem.
//!
//! Item: `pk` (the claim key: `ev:<event_id>` or `dl:<unit>:<position>:<digest>`),
//! `claim_owner`, `lease_until` (epoch ms), `object_key`, `expires_at` (epoch s, the table's
//! TTL attribute). Every conditional write asks for the item it was refused by
//! (`ReturnValuesOnConditionCheckFailure = ALL_OLD`): a duplicate costs no second round trip,
//! and a write whose answer was lost, retried by the SDK, recognises its own earlier attempt
//! in the item that refuses the retry.

use crate::error::classify_sdk_error;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;
use streamload_core::error::PortError;
use streamload_core::ports::{Claim, ClaimAttempt, DedupStore};

const PK: &str = "pk";
const OWNER: &str = "claim_owner";
const LEASE: &str = "lease_until";
const OBJECT: &str = "object_key";
const EXPIRES: &str = "expires_at";

#[derive(Clone)]
pub struct DynamoDedup {
    client: Client,
    table: String,
}

impl DynamoDedup {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

fn item_of(claim: &Claim) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(claim.key.clone())),
        (OWNER.to_owned(), AttributeValue::S(claim.owner.clone())),
        (
            LEASE.to_owned(),
            AttributeValue::N(claim.lease_until_ms.to_string()),
        ),
        (
            OBJECT.to_owned(),
            AttributeValue::S(claim.object_key.clone()),
        ),
        (
            EXPIRES.to_owned(),
            AttributeValue::N(claim.expires_at_s.to_string()),
        ),
    ])
}

fn claim_of(item: &HashMap<String, AttributeValue>) -> Result<Claim, PortError> {
    let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let n = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    match (s(PK), s(OWNER), n(LEASE), s(OBJECT), n(EXPIRES)) {
        (Some(key), Some(owner), Some(lease_until_ms), Some(object_key), Some(expires_at_s)) => {
            Ok(Claim {
                key,
                owner,
                lease_until_ms,
                object_key,
                expires_at_s,
            })
        }
        _ => Err(PortError::permanent(
            "dedup item is missing claim attributes",
        )),
    }
}

impl DedupStore for DynamoDedup {
    async fn try_claim(&self, claim: &Claim, now_s: i64) -> Result<ClaimAttempt, PortError> {
        let r = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item_of(claim)))
            .condition_expression("attribute_not_exists(#pk) OR #exp < :now")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#exp", EXPIRES)
            .expression_attribute_values(":now", AttributeValue::N(now_s.to_string()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match r {
            Ok(_) => Ok(ClaimAttempt::Claimed),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(c)) => match c.item() {
                    Some(item) => Ok(ClaimAttempt::Held(claim_of(item)?)),
                    None => Err(PortError::retryable(
                        "claim refused without the holder's item",
                    )),
                },
                _ => Err(classify_sdk_error("dynamodb PutItem", &e)),
            },
        }
    }

    async fn take_over(&self, claim: &Claim, previous: &Claim) -> Result<ClaimAttempt, PortError> {
        let r = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item_of(claim)))
            .condition_expression("#owner = :owner AND #lease = :lease")
            .expression_attribute_names("#owner", OWNER)
            .expression_attribute_names("#lease", LEASE)
            .expression_attribute_values(":owner", AttributeValue::S(previous.owner.clone()))
            .expression_attribute_values(
                ":lease",
                AttributeValue::N(previous.lease_until_ms.to_string()),
            )
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match r {
            Ok(_) => Ok(ClaimAttempt::Claimed),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(c)) => match c.item() {
                    Some(item) => Ok(ClaimAttempt::Held(claim_of(item)?)),
                    None => Ok(ClaimAttempt::Absent),
                },
                _ => Err(classify_sdk_error("dynamodb PutItem", &e)),
            },
        }
    }

    async fn read(&self, key: &str) -> Result<Option<Claim>, PortError> {
        let r = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify_sdk_error("dynamodb GetItem", &e))?;
        r.item().map(claim_of).transpose()
    }

    async fn release(&self, key: &str, owner: &str) -> Result<(), PortError> {
        let r = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(key.to_owned()))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", OWNER)
            .expression_attribute_values(":owner", AttributeValue::S(owner.to_owned()))
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(DeleteItemError::ConditionalCheckFailedException(_)) => Ok(()),
                _ => Err(classify_sdk_error("dynamodb DeleteItem", &e)),
            },
        }
    }
}
