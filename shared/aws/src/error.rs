//! Mapping SDK errors onto the core's classification.

use aws_sdk_dynamodb::error::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use streamload_core::error::PortError;
use streamload_core::{Classify, ErrorClass};

/// Errors of this crate that are not a port call's answer (start-up, secrets).
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("secret {arn}: {message}")]
    Secret { arn: String, message: String },
}

impl Classify for AwsError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Permanent
    }
}

/// Error codes that mean "try again later" (the SDK path and the direct PutItem client).
pub(crate) const RETRYABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TransactionConflictException",
    "InternalServerError",
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
    "ConditionalRequestConflict",
    "KMS.ThrottlingException",
];

/// Classifies an SDK error after the SDK's own retries: service errors by code and status,
/// transport failures as ambiguous (the request may have been applied).
pub fn classify_sdk_error<E, R>(operation: &str, err: &SdkError<E, R>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error,
    R: std::fmt::Debug,
{
    match err {
        SdkError::ConstructionFailure(_) => {
            PortError::permanent(format!("{operation}: request could not be built"))
        }
        SdkError::TimeoutError(_) => PortError::ambiguous(format!("{operation}: timed out")),
        SdkError::DispatchFailure(f) => {
            if f.is_io() || f.is_timeout() || f.is_other() {
                PortError::ambiguous(format!("{operation}: connection failed"))
            } else {
                PortError::retryable(format!("{operation}: dispatch failed"))
            }
        }
        SdkError::ResponseError(_) => {
            PortError::ambiguous(format!("{operation}: unreadable response"))
        }
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("Unknown");
            let msg = format!("{operation}: {code}");
            if RETRYABLE_CODES.contains(&code) {
                PortError::retryable(msg)
            } else {
                PortError::permanent(msg)
            }
        }
        _ => PortError::retryable(format!("{operation}: unexpected SDK error")),
    }
}
