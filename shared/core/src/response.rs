//! The partial-batch failure response (`FunctionResponseTypes: [ReportBatchItemFailures]`).
//!
//! Lambda treats an empty list as full success and an empty or misspelt identifier as full
//! failure, so the key names are fixed here once and tested as JSON.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchItemFailures {
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<ItemFailure>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemFailure {
    /// A Kinesis sequence number (string) or the Kafka identifier (see `kafka::failure_identifier`).
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: serde_json::Value,
}

impl BatchItemFailures {
    pub fn is_full_success(&self) -> bool {
        self.batch_item_failures.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_with_the_exact_key_names_lambda_reads() {
        let r = BatchItemFailures {
            batch_item_failures: vec![ItemFailure {
                item_identifier: "123".into(),
            }],
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"batchItemFailures":[{"itemIdentifier":"123"}]}"#
        );
        assert_eq!(
            serde_json::to_string(&BatchItemFailures::default()).unwrap(),
            r#"{"batchItemFailures":[]}"#
        );
    }
}
