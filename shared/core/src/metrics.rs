//! What one batch did, as one structured log line and as CloudWatch embedded-metric-format
//! (EMF) metrics. Counts and durations only: never payload text.

use serde_json::{json, Map, Value};
use std::fmt;
use std::time::Instant;

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
    /// Records with nothing to load (a change route's tombstones).
    pub skipped: usize,
    pub duration_ms: u64,
    /// Milliseconds from `created_at` to load, one value per loaded record.
    pub latency_from_created_ms: Vec<i64>,
    /// Milliseconds from the source's arrival timestamp to load.
    pub latency_from_arrival_ms: Vec<i64>,
    /// Where the batch's time went, phase by phase.
    pub phases: PhaseTimes,
}

/// The steps of a batch, in the order the pipeline runs them (see [`crate::pipeline`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Decode, validate, map, collapse in-batch duplicates, plan objects.
    Decode,
    /// Dedup claims (conditional writes) and the existence checks of refused ones.
    Claims,
    /// Poison records: queue sends and their archives, refused rows included.
    DeadLetters,
    /// Parquet encoding of the claimed rows.
    Encode,
    /// The upsert transaction (and the release of claims of rows it refused).
    Database,
    /// Parquet object writes.
    Objects,
    /// Search index `_bulk` requests (routes with `[route.index]`).
    Index,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Decode,
        Phase::Claims,
        Phase::DeadLetters,
        Phase::Encode,
        Phase::Database,
        Phase::Objects,
        Phase::Index,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Decode => "decode",
            Phase::Claims => "claims",
            Phase::DeadLetters => "dead_letters",
            Phase::Encode => "encode",
            Phase::Database => "database",
            Phase::Objects => "objects",
            Phase::Index => "index",
        }
    }
}

/// CPU time of the whole process (every thread) so far, in µs, where the platform tells it
/// cheaply; `None` elsewhere.
pub fn process_cpu_us() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid, writable timespec; the clock id is a constant Linux knows.
        let ok = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) } == 0;
        ok.then(|| t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1_000)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// A moment to measure a phase from: wall clock and process CPU.
#[derive(Debug, Clone, Copy)]
pub struct PhaseMark {
    wall: Instant,
    cpu_us: Option<u64>,
}

impl PhaseMark {
    pub fn now() -> Self {
        Self {
            wall: Instant::now(),
            cpu_us: process_cpu_us(),
        }
    }
}

/// Wall time and process CPU time spent in each [`Phase`] of one batch. The process CPU
/// counts every thread (runtime workers, connection tasks): what the batch cost, not only
/// the pipeline's own code.
///
/// ```
/// use streamload_core::metrics::{Phase, PhaseMark, PhaseTimes};
/// let mut phases = PhaseTimes::default();
/// let mark = PhaseMark::now();
/// let mark = phases.add(Phase::Decode, mark);
/// phases.add(Phase::Claims, mark);
/// assert!(phases.to_string().starts_with("decode="));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhaseTimes {
    wall_us: [u64; 7],
    cpu_us: [u64; 7],
}

impl PhaseTimes {
    /// Adds the time since `since` to `phase`; returns the mark the next phase starts from.
    pub fn add(&mut self, phase: Phase, since: PhaseMark) -> PhaseMark {
        let now = PhaseMark::now();
        let i = phase as usize;
        self.wall_us[i] += now.wall.duration_since(since.wall).as_micros() as u64;
        if let (Some(a), Some(b)) = (since.cpu_us, now.cpu_us) {
            self.cpu_us[i] += b.saturating_sub(a);
        }
        now
    }

    pub fn wall_us(&self, phase: Phase) -> u64 {
        self.wall_us[phase as usize]
    }

    pub fn cpu_us(&self, phase: Phase) -> u64 {
        self.cpu_us[phase as usize]
    }
}

/// `decode=<wall ms>/<cpu ms> claims=… objects=…`, one `name=wall/cpu` pair per phase.
impl fmt::Display for PhaseTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, phase) in Phase::ALL.iter().enumerate() {
            let i = *phase as usize;
            if n > 0 {
                f.write_str(" ")?;
            }
            write!(
                f,
                "{}={:.1}/{:.1}",
                phase.name(),
                self.wall_us[i] as f64 / 1000.0,
                self.cpu_us[i] as f64 / 1000.0
            )?;
        }
        Ok(())
    }
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
                        metric("RecordsSkipped", "Count"),
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
        doc.insert("RecordsSkipped".into(), self.skipped.into());
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
            skipped: 0,
            duration_ms: 12,
            latency_from_created_ms: (0..1000).collect(),
            latency_from_arrival_ms: vec![5],
            phases: PhaseTimes::default(),
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

    #[test]
    fn phase_times_accumulate_per_phase_and_print_one_pair_each() {
        // Given two spells of work in the claims phase and one in decode
        let mut phases = PhaseTimes::default();
        let mark = PhaseMark::now();
        let spin = |n: u64| (0..n).fold(0u64, |a, b| a.wrapping_add(b * b));
        std::hint::black_box(spin(2_000_000));
        let mark = phases.add(Phase::Decode, mark);
        std::hint::black_box(spin(2_000_000));
        let mark = phases.add(Phase::Claims, mark);
        std::hint::black_box(spin(2_000_000));
        phases.add(Phase::Claims, mark);

        // Then each phase holds its own time, and the text names every phase once
        assert!(phases.wall_us(Phase::Decode) > 0);
        assert!(phases.wall_us(Phase::Claims) > 0);
        assert_eq!(phases.wall_us(Phase::Objects), 0);
        if process_cpu_us().is_some() {
            assert!(phases.cpu_us(Phase::Claims) > 0);
        }
        let text = phases.to_string();
        for phase in Phase::ALL {
            assert_eq!(
                text.matches(&format!("{}=", phase.name())).count(),
                1,
                "{text}"
            );
        }
    }
}
