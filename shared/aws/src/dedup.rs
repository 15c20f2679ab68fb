//! Dedup claims in DynamoDB: one item per `event_id`, written with conditional PutItem.
//!
//! Item: `pk` (the claim key: `ev:<event_id>` or `dl:<unit>:<position>:<digest>`),
//! `claim_owner`, `lease_until` (epoch ms), `object_key`, `expires_at` (epoch s, the table's
//! TTL attribute), `renewable` (1 when the owner keeps a holder lease). A holder lease is an
//! item of the same table: `pk` = `lease:<owner>`, `claim_owner`, `lease_until` (the holder's
//! fence), `revoked` (0 or 1), `expires_at`. Every conditional write asks for the item it was refused by
//! (`ReturnValuesOnConditionCheckFailure = ALL_OLD`): a duplicate costs no second round trip,
//! and a write whose answer was lost, retried by the SDK, recognises its own earlier attempt
//! in the item that refuses the retry.
//!
//! The two conditional writes go through [`PutItemClient`] (the hot call without the SDK's
//! orchestrator) when the endpoint allows it; the rare read and release use the SDK client.

use crate::error::classify_sdk_error;
use crate::put_item::{
    conditional_write_attempts, Answered, AttributeText, PutAnswer, PutItemClient,
};
use crate::SMALL_CALL_ATTEMPT_TIMEOUT;
use aws_config::retry::RetryConfig;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;
use std::sync::Arc;
use streamload_core::error::PortError;
use streamload_core::ports::{Claim, ClaimAttempt, DedupStore, HolderLease, Renewal, Revocation};
use streamload_core::retry::SINK_RETRY;

const PK: &str = "pk";
const OWNER: &str = "claim_owner";
const LEASE: &str = "lease_until";
const OBJECT: &str = "object_key";
const EXPIRES: &str = "expires_at";
const RENEWABLE: &str = "renewable";
const REVOKED: &str = "revoked";

/// The key prefix of holder leases; claim keys start `ev:` or `dl:`, so none collides.
const LEASE_KEY_PREFIX: &str = "lease:";

/// The longest a request body's text is besides its strings (table, key, owner, object key,
/// string values): names, conditions, punctuation and three numbers at their widest.
const BODY_FIXED_BYTES: usize = 480;

const CLAIM_CONDITION: &str = "attribute_not_exists(#pk) OR #exp < :now";
const TAKEOVER_CONDITION: &str = "#owner = :owner AND #lease = :lease";
/// A renewal creates the lease or moves it forward, never once revoked.
const RENEW_CONDITION: &str = "attribute_not_exists(#pk) OR (#rev = :zero AND #lease < :until)";
/// A revocation of a lease as read: unchanged and not revoked.
const REVOKE_CONDITION: &str = "#lease = :seen AND #rev = :zero";
/// A revocation of a lease that did not exist: a tombstone, so a creation in flight fails.
const TOMBSTONE_CONDITION: &str = "attribute_not_exists(#pk)";

#[derive(Clone)]
pub struct DynamoDedup {
    client: Client,
    table: String,
    /// The conditional writes' own sender; `None`: through the SDK client.
    direct: Option<Arc<PutItemClient>>,
}

impl DynamoDedup {
    /// Claims through the SDK `client` alone.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            direct: None,
        }
    }

    /// Sends the conditional writes through `direct` (see [`PutItemClient`]).
    pub fn with_direct_writes(mut self, direct: PutItemClient) -> Self {
        self.direct = Some(Arc::new(direct));
        self
    }

    /// Whether the conditional writes bypass the SDK.
    pub fn writes_directly(&self) -> bool {
        self.direct.is_some()
    }
}

/// One attribute value of a request body.
enum Attr<'a> {
    S(&'a str),
    N(i64),
}

/// Appends `text` as a JSON string (quoted and escaped).
fn push_json_str(out: &mut Vec<u8>, text: &str) -> Result<(), PortError> {
    serde_json::to_writer(&mut *out, text)
        .map_err(|_| PortError::permanent("dynamodb PutItem: request body"))
}

/// Appends `{"S":"…"}` or `{"N":"…"}`.
fn push_attr(out: &mut Vec<u8>, value: &Attr<'_>) -> Result<(), PortError> {
    match value {
        Attr::S(s) => {
            out.extend_from_slice(br#"{"S":"#);
            push_json_str(out, s)?;
        }
        Attr::N(n) => {
            out.extend_from_slice(br#"{"N":""#);
            // serde_json writes integers without an allocation.
            serde_json::to_writer(&mut *out, n)
                .map_err(|_| PortError::permanent("dynamodb PutItem: request body"))?;
            out.push(b'"');
        }
    }
    out.push(b'}');
    Ok(())
}

/// Appends `{"k":v,…}`, each value written by `value`.
fn push_object<V>(
    out: &mut Vec<u8>,
    entries: &[(&str, V)],
    value: impl Fn(&mut Vec<u8>, &V) -> Result<(), PortError>,
) -> Result<(), PortError> {
    out.push(b'{');
    for (n, (key, v)) in entries.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        push_json_str(out, key)?;
        out.push(b':');
        value(out, v)?;
    }
    out.push(b'}');
    Ok(())
}

/// A conditional `PutItem` request body (DynamoDB JSON 1.0), written straight from the claim:
/// no attribute maps are built for a request sent once per record. Names and conditions are
/// constants of this module; every text value is escaped by serde_json.
fn body_of(
    table: &str,
    claim: &Claim,
    condition: &'static str,
    names: [(&'static str, &'static str); 2],
    values: &[(&'static str, Attr<'_>)],
) -> Result<bytes::Bytes, PortError> {
    let value_text: usize = values
        .iter()
        .map(|(_, v)| match v {
            Attr::S(s) => s.len(),
            Attr::N(_) => 0,
        })
        .sum();
    // Sized once, so the body is never copied while it is written (escapes aside).
    let mut out = Vec::with_capacity(
        BODY_FIXED_BYTES
            + table.len()
            + claim.key.len()
            + claim.owner.len()
            + claim.object_key.len()
            + value_text,
    );
    out.extend_from_slice(br#"{"TableName":"#);
    push_json_str(&mut out, table)?;
    out.extend_from_slice(br#","Item":"#);
    let item = [
        (PK, Attr::S(&claim.key)),
        (OWNER, Attr::S(&claim.owner)),
        (LEASE, Attr::N(claim.lease_until_ms)),
        (OBJECT, Attr::S(&claim.object_key)),
        (EXPIRES, Attr::N(claim.expires_at_s)),
        (RENEWABLE, Attr::N(i64::from(claim.renewable))),
    ];
    push_object(&mut out, &item, push_attr)?;
    out.extend_from_slice(br#","ConditionExpression":"#);
    push_json_str(&mut out, condition)?;
    out.extend_from_slice(br#","ExpressionAttributeNames":"#);
    push_object(&mut out, &names, |o, name| push_json_str(o, name))?;
    out.extend_from_slice(br#","ExpressionAttributeValues":"#);
    push_object(&mut out, values, push_attr)?;
    out.extend_from_slice(br#","ReturnValuesOnConditionCheckFailure":"ALL_OLD"}"#);
    Ok(bytes::Bytes::from(out))
}

fn claim_of_text(item: &HashMap<String, AttributeText>) -> Result<Claim, PortError> {
    let s = |k: &str| match item.get(k) {
        Some(AttributeText::S(v)) => Some(v.clone()),
        _ => None,
    };
    let n = |k: &str| match item.get(k) {
        Some(AttributeText::N(v)) => v.parse::<i64>().ok(),
        _ => None,
    };
    match (s(PK), s(OWNER), n(LEASE), s(OBJECT), n(EXPIRES)) {
        (Some(key), Some(owner), Some(lease_until_ms), Some(object_key), Some(expires_at_s)) => {
            Ok(Claim {
                key,
                owner,
                lease_until_ms,
                object_key,
                expires_at_s,
                // Absent on claims written before holder leases existed.
                renewable: n(RENEWABLE) == Some(1),
            })
        }
        _ => Err(PortError::permanent(
            "dedup item is missing claim attributes",
        )),
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
        (
            RENEWABLE.to_owned(),
            AttributeValue::N(i64::from(claim.renewable).to_string()),
        ),
    ])
}

fn lease_key(owner: &str) -> String {
    format!("{LEASE_KEY_PREFIX}{owner}")
}

fn lease_item(
    owner: &str,
    alive_until_ms: i64,
    revoked: bool,
    expires_at_s: i64,
) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(lease_key(owner))),
        (OWNER.to_owned(), AttributeValue::S(owner.to_owned())),
        (
            LEASE.to_owned(),
            AttributeValue::N(alive_until_ms.to_string()),
        ),
        (
            REVOKED.to_owned(),
            AttributeValue::N(i64::from(revoked).to_string()),
        ),
        (
            EXPIRES.to_owned(),
            AttributeValue::N(expires_at_s.to_string()),
        ),
    ])
}

/// A holder lease from its item; `None` if it lacks the lease's attributes.
fn lease_of_text(item: &HashMap<String, AttributeText>) -> Result<HolderLease, PortError> {
    let n = |k: &str| match item.get(k) {
        Some(AttributeText::N(v)) => v.parse::<i64>().ok(),
        _ => None,
    };
    match (item.get(OWNER), n(LEASE), n(REVOKED)) {
        (Some(AttributeText::S(owner)), Some(alive_until_ms), Some(revoked)) => Ok(HolderLease {
            owner: owner.clone(),
            alive_until_ms,
            revoked: revoked != 0,
        }),
        _ => Err(PortError::permanent(
            "dedup item is missing holder lease attributes",
        )),
    }
}

/// A conditional PutItem through the SDK, with the SDK's own retries off and
/// [`conditional_write_attempts`] in their place: the SDK would report only its last
/// attempt's error, forgetting that an earlier one may have been applied.
async fn sdk_conditional_put(
    request: aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder,
) -> Result<Answered<PutAnswer>, PortError> {
    conditional_write_attempts(SINK_RETRY, SMALL_CALL_ATTEMPT_TIMEOUT, || {
        let request = request.clone();
        async move {
            let sent = request
                .customize()
                .config_override(
                    aws_sdk_dynamodb::config::Builder::default()
                        .retry_config(RetryConfig::disabled()),
                )
                .send()
                .await;
            match sent {
                Ok(_) => Ok(PutAnswer::Written),
                Err(e) => match e.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(c)) => {
                        Ok(PutAnswer::Refused(c.item().map(text_of)))
                    }
                    _ => Err(classify_put_error(&e)),
                },
            }
        }
    })
    .await
}

/// The SDK's classification, except that a 5xx answer to a write may follow its being
/// applied: ambiguous.
fn classify_put_error(
    e: &SdkError<PutItemError, aws_smithy_runtime_api::http::Response>,
) -> PortError {
    let server_error = matches!(e, SdkError::ServiceError(_))
        && e.raw_response()
            .is_some_and(|r| r.status().is_server_error());
    let classified = classify_sdk_error("dynamodb PutItem", e);
    if server_error {
        PortError::ambiguous(classified.message)
    } else {
        classified
    }
}

/// An SDK item as the direct client's text attributes (the claim's S and N values).
fn text_of(item: &HashMap<String, AttributeValue>) -> HashMap<String, AttributeText> {
    item.iter()
        .filter_map(|(k, v)| match v {
            AttributeValue::S(s) => Some((k.clone(), AttributeText::S(s.clone()))),
            AttributeValue::N(n) => Some((k.clone(), AttributeText::N(n.clone()))),
            _ => None,
        })
        .collect()
}

impl DedupStore for DynamoDedup {
    async fn try_claim(&self, claim: &Claim, now_s: i64) -> Result<ClaimAttempt, PortError> {
        let answer = if let Some(direct) = &self.direct {
            let body = body_of(
                &self.table,
                claim,
                CLAIM_CONDITION,
                [("#pk", PK), ("#exp", EXPIRES)],
                &[(":now", Attr::N(now_s))],
            )?;
            direct.put_answered(body).await?
        } else {
            let request = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item_of(claim)))
                .condition_expression(CLAIM_CONDITION)
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#exp", EXPIRES)
                .expression_attribute_values(":now", AttributeValue::N(now_s.to_string()))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
            // Boxed: the SDK's future is many times the direct one's, and the claim stream
            // copies this future whole for every record (see `sdk_conditional_put`).
            Box::pin(sdk_conditional_put(request)).await?
        };
        let after_lost_attempt = answer.after_lost_attempt;
        match answer.answer {
            PutAnswer::Written if after_lost_attempt => Ok(ClaimAttempt::MineAfterLostAttempt),
            PutAnswer::Written => Ok(ClaimAttempt::Claimed),
            PutAnswer::Refused(Some(item)) => {
                let held = claim_of_text(&item)?;
                let attempt = ClaimAttempt::Held(held);
                if after_lost_attempt && attempt.is_mine(claim) {
                    return Ok(ClaimAttempt::MineAfterLostAttempt);
                }
                // Refused by someone else after an attempt whose answer was lost: that attempt
                // may still be applied (once the holder releases its claim), so the call's
                // outcome is unknown, not "held by another".
                if after_lost_attempt && !attempt.is_mine(claim) {
                    return Err(PortError::ambiguous(
                        "dynamodb PutItem: refused by another holder after an attempt whose answer was lost (that attempt may still be applied)",
                    ));
                }
                Ok(attempt)
            }
            PutAnswer::Refused(None) => Err(PortError::retryable(
                "claim refused without the holder's item",
            )),
        }
    }

    async fn take_over(&self, claim: &Claim, previous: &Claim) -> Result<ClaimAttempt, PortError> {
        let answer = if let Some(direct) = &self.direct {
            let body = body_of(
                &self.table,
                claim,
                TAKEOVER_CONDITION,
                [("#owner", OWNER), ("#lease", LEASE)],
                &[
                    (":owner", Attr::S(&previous.owner)),
                    (":lease", Attr::N(previous.lease_until_ms)),
                ],
            )?;
            direct.put_answered(body).await?
        } else {
            let request = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item_of(claim)))
                .condition_expression(TAKEOVER_CONDITION)
                .expression_attribute_names("#owner", OWNER)
                .expression_attribute_names("#lease", LEASE)
                .expression_attribute_values(":owner", AttributeValue::S(previous.owner.clone()))
                .expression_attribute_values(
                    ":lease",
                    AttributeValue::N(previous.lease_until_ms.to_string()),
                )
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
            // Boxed: the SDK's future is many times the direct one's, and the claim stream
            // copies this future whole for every record (see `sdk_conditional_put`).
            Box::pin(sdk_conditional_put(request)).await?
        };
        match answer.answer {
            PutAnswer::Written => Ok(ClaimAttempt::Claimed),
            PutAnswer::Refused(Some(item)) => Ok(ClaimAttempt::Held(claim_of_text(&item)?)),
            PutAnswer::Refused(None) => Ok(ClaimAttempt::Absent),
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
        r.item()
            .map(|item| claim_of_text(&text_of(item)))
            .transpose()
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

    async fn renew_lease(
        &self,
        owner: &str,
        alive_until_ms: i64,
        expires_at_s: i64,
    ) -> Result<Renewal, PortError> {
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(lease_item(owner, alive_until_ms, false, expires_at_s)))
            .condition_expression(RENEW_CONDITION)
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#rev", REVOKED)
            .expression_attribute_names("#lease", LEASE)
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .expression_attribute_values(":until", AttributeValue::N(alive_until_ms.to_string()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match Box::pin(sdk_conditional_put(request)).await?.answer {
            PutAnswer::Written => Ok(Renewal::Renewed),
            PutAnswer::Refused(Some(item)) => {
                let held = lease_of_text(&item)?;
                Ok(if held.revoked {
                    Renewal::Revoked
                } else {
                    // Not revoked, so refused because it already reaches this far: a later
                    // renewal of ours was applied first.
                    Renewal::Renewed
                })
            }
            PutAnswer::Refused(None) => Err(PortError::retryable(
                "lease renewal refused without the lease's item",
            )),
        }
    }

    async fn read_lease(&self, owner: &str) -> Result<Option<HolderLease>, PortError> {
        let r = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(lease_key(owner)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify_sdk_error("dynamodb GetItem", &e))?;
        r.item()
            .map(|item| lease_of_text(&text_of(item)))
            .transpose()
    }

    async fn revoke_lease(
        &self,
        owner: &str,
        seen: Option<&HolderLease>,
        expires_at_s: i64,
    ) -> Result<Revocation, PortError> {
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        request = match seen {
            Some(lease) => request
                .set_item(Some(lease_item(
                    owner,
                    lease.alive_until_ms,
                    true,
                    expires_at_s,
                )))
                .condition_expression(REVOKE_CONDITION)
                .expression_attribute_names("#lease", LEASE)
                .expression_attribute_names("#rev", REVOKED)
                .expression_attribute_values(
                    ":seen",
                    AttributeValue::N(lease.alive_until_ms.to_string()),
                )
                .expression_attribute_values(":zero", AttributeValue::N("0".into())),
            None => request
                .set_item(Some(lease_item(owner, 0, true, expires_at_s)))
                .condition_expression(TOMBSTONE_CONDITION)
                .expression_attribute_names("#pk", PK),
        };
        match Box::pin(sdk_conditional_put(request)).await?.answer {
            PutAnswer::Written => Ok(Revocation::Revoked),
            PutAnswer::Refused(Some(item)) => {
                let now = lease_of_text(&item)?;
                Ok(if now.revoked {
                    Revocation::Revoked
                } else {
                    Revocation::Changed(Some(now))
                })
            }
            PutAnswer::Refused(None) => Ok(Revocation::Changed(None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_body_is_valid_json_holding_the_claim_exactly() {
        // Given a claim whose texts need escaping
        let claim = Claim {
            key: "ev:\"q\"\\\u{1}🦀".into(),
            owner: "req-1".into(),
            lease_until_ms: -5,
            object_key: "events/a.parquet".into(),
            expires_at_s: 1_900_000_000,
            renewable: true,
        };
        // When its takeover body is written
        let body = body_of(
            "dedup",
            &claim,
            TAKEOVER_CONDITION,
            [("#owner", OWNER), ("#lease", LEASE)],
            &[(":owner", Attr::S("old")), (":lease", Attr::N(42))],
        )
        .unwrap();
        // Then it parses as the request DynamoDB expects
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["TableName"], "dedup");
        assert_eq!(v["Item"]["pk"]["S"], claim.key.as_str());
        assert_eq!(v["Item"]["lease_until"]["N"], "-5");
        assert_eq!(v["Item"]["expires_at"]["N"], "1900000000");
        assert_eq!(v["ConditionExpression"], TAKEOVER_CONDITION);
        assert_eq!(v["ExpressionAttributeNames"]["#lease"], LEASE);
        assert_eq!(v["ExpressionAttributeValues"][":owner"]["S"], "old");
        assert_eq!(v["ExpressionAttributeValues"][":lease"]["N"], "42");
        assert_eq!(v["ReturnValuesOnConditionCheckFailure"], "ALL_OLD");
    }

    #[test]
    fn a_body_fits_the_room_reserved_for_it_beside_its_strings() {
        // Given a claim with empty strings and numbers at their widest
        let claim = Claim {
            key: String::new(),
            owner: String::new(),
            lease_until_ms: i64::MIN,
            object_key: String::new(),
            expires_at_s: i64::MIN,
            renewable: false,
        };
        // When both kinds of body are written
        let claim_body = body_of(
            "",
            &claim,
            CLAIM_CONDITION,
            [("#pk", PK), ("#exp", EXPIRES)],
            &[(":now", Attr::N(i64::MIN))],
        )
        .unwrap();
        let takeover_body = body_of(
            "",
            &claim,
            TAKEOVER_CONDITION,
            [("#owner", OWNER), ("#lease", LEASE)],
            &[(":owner", Attr::S("")), (":lease", Attr::N(i64::MIN))],
        )
        .unwrap();
        // Then neither outgrows the room reserved, so neither is copied while written
        assert!(claim_body.len() <= BODY_FIXED_BYTES, "{}", claim_body.len());
        assert!(
            takeover_body.len() <= BODY_FIXED_BYTES,
            "{}",
            takeover_body.len()
        );
        assert!(
            takeover_body.len() > BODY_FIXED_BYTES - 32,
            "room far too large"
        );
    }

    #[test]
    fn a_claim_write_future_stays_small() {
        // Given a store whose writes go through the SDK client (the direct one is chosen at
        // start-up; both branches are in the same future type)
        let sdk = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("eu-west-1"))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let store = DynamoDedup::new(Client::new(&sdk), "dedup");
        let claim = Claim {
            key: "ev:1".into(),
            owner: "req-1".into(),
            lease_until_ms: 1,
            object_key: "events/a.parquet".into(),
            expires_at_s: 1,
            renewable: false,
        };
        // When the claim futures are made (not run)
        let try_claim = store.try_claim(&claim, 1);
        let take_over = store.take_over(&claim, &claim);
        // Then each is small: the claim stream copies one per record, so the SDK's future and
        // the TLS handshake's, several kilobytes each, live behind boxes (4.3 KB inline, 0.8 KB
        // boxed, in a debug build)
        assert!(std::mem::size_of_val(&try_claim) < 1536);
        assert!(std::mem::size_of_val(&take_over) < 1536);
    }
}
