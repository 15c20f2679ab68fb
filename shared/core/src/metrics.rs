//! What one batch did, as one structured log line and as CloudWatch embedded-metric-format
//! (EMF) metrics. Counts and durations only: never payload text.

use serde_json::{json, Map, Value};

/// EMF accepts at most 100 values per metric in one document.
pub const EMF_MAX_VALUES: usize = 100;

/// CloudWatch namespace of streamload's own metrics.
pub const METRICS_NAMESPACE: &str = "streamload";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchSummary {
    pub received: usize,
    pub loaded: usize,
    pub duplicates: usize,
    pub poison: usize,
    pub failed: usize,
    pub duration_ms: u64,
    /// Milliseconds from `created_at` to load, one value per loaded record.
    pub latency_from_created_ms: Vec<i64>,
    /// Milliseconds from the source's arrival timestamp to load.
    pub latency_from_arrival_ms: Vec<i64>,
}

/// Up to `EMF_MAX_VALUES` evenly spaced order statistics, so CloudWatch percentiles of the
/// sample track those of the whole batch.
fn quantile_sample(values: &[i64]) -> Vec<i64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    if sorted.len() <= EMF_MAX_VALUES {
        return sorted;
    }
    (0..EMF_MAX_VALUES)
        .map(|i| sorted[i * (sorted.len() - 1) / (EMF_MAX_VALUES - 1)])
        .collect()
}

impl BatchSummary {
    /// One EMF document for the batch, dimensioned by function name.
    pub fn emf(&self, function_name: &str, timestamp_ms: i64) -> Value {
        let metric = |name: &str, unit: &str| json!({"Name": name, "Unit": unit});
        let mut doc = Map::new();
        doc.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": METRICS_NAMESPACE,
                    "Dimensions": [["FunctionName"]],
                    "Metrics": [
                        metric("RecordsReceived", "Count"),
                        metric("RecordsLoaded", "Count"),
                        metric("RecordsDuplicate", "Count"),
                        metric("RecordsPoison", "Count"),
                        metric("RecordsFailed", "Count"),
                        metric("BatchDuration", "Milliseconds"),
                        metric("EndToEndLatencyFromCreated", "Milliseconds"),
                        metric("EndToEndLatencyFromArrival", "Milliseconds"),
                    ],
                }],
            }),
        );
        doc.insert("FunctionName".into(), function_name.into());
        doc.insert("RecordsReceived".into(), self.received.into());
        doc.insert("RecordsLoaded".into(), self.loaded.into());
        doc.insert("RecordsDuplicate".into(), self.duplicates.into());
        doc.insert("RecordsPoison".into(), self.poison.into());
        doc.insert("RecordsFailed".into(), self.failed.into());
        doc.insert("BatchDuration".into(), self.duration_ms.into());
        doc.insert(
            "EndToEndLatencyFromCreated".into(),
            quantile_sample(&self.latency_from_created_ms).into(),
        );
        doc.insert(
            "EndToEndLatencyFromArrival".into(),
            quantile_sample(&self.latency_from_arrival_ms).into(),
        );
        Value::Object(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_document_declares_every_metric_it_carries() {
        let s = BatchSummary {
            received: 5,
            loaded: 3,
            duplicates: 1,
            poison: 1,
            failed: 0,
            duration_ms: 12,
            latency_from_created_ms: (0..1000).collect(),
            latency_from_arrival_ms: vec![5],
        };
        let doc = s.emf("kinesis-loader", 1);
        let declared = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap();
        for m in declared {
            let name = m["Name"].as_str().unwrap();
            assert!(doc.get(name).is_some(), "{name} declared but missing");
        }
        assert_eq!(doc["RecordsLoaded"], 3);
        let sample = doc["EndToEndLatencyFromCreated"].as_array().unwrap();
        assert_eq!(sample.len(), EMF_MAX_VALUES);
        assert_eq!(sample[0], 0);
        assert_eq!(sample[EMF_MAX_VALUES - 1], 999);
    }
}
