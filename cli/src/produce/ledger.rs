//! Where a run's counters start. Runs into the same stream and route continue the revisions
//! and record counters of the runs before them, kept in a small file per stream and route
//! (the ledger). Without it every run would start at revision 1: a second run's identities
//! (key and revision) would be the first run's, which the loader drops as duplicates, and
//! its revisions would never be newer than those already in the table.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{CliError, Target};

/// The highest counters earlier runs used: a run's `newest_by` revisions are numbered above
/// `revision`, and its per-record counters (numeric identity parts, a keep-first route's
/// own keys) above `record`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    pub revision: u64,
    pub record: u64,
}

impl Counters {
    pub fn is_zero(&self) -> bool {
        *self == Counters::default()
    }
}

/// The ledger file's content: the counters, and what they are for (for a reader).
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    target: String,
    route: String,
    #[serde(flatten)]
    used: Counters,
}

/// The ledger of one stream and route.
#[derive(Debug, Clone)]
pub struct Ledger {
    path: PathBuf,
    target: String,
    route: String,
}

impl Ledger {
    /// Where ledgers are kept, relative to the working directory (beside `init`'s env files).
    pub const DIR: &'static str = ".streamload/produce";

    /// The ledger of `route` on `target`, in `dir`.
    pub fn new(dir: &Path, target: &Target, route: &str) -> Self {
        let target = target.to_string();
        let name: String = format!("{target}.{route}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Self {
            path: dir.join(format!("{name}.json")),
            target,
            route: route.to_owned(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The counters earlier runs used (zero when no run wrote the ledger yet).
    pub fn read(&self) -> Result<Counters, CliError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Counters::default()),
            Err(e) => return Err(e.into()),
        };
        let entry: Entry = serde_json::from_str(&text).map_err(|e| {
            CliError::Usage(format!(
                "{} is not a produce ledger ({e}); delete it to number revisions from 1 again (only with an empty table)",
                self.path.display()
            ))
        })?;
        Ok(entry.used)
    }

    /// Records `used`: written whole to a new file and renamed over the old one, so an
    /// interrupted run leaves the previous ledger or this one, never half of either.
    pub fn write(&self, used: &Counters) -> Result<(), CliError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let entry = Entry {
            target: self.target.clone(),
            route: self.route.clone(),
            used: *used,
        };
        let text = serde_json::to_string_pretty(&entry)
            .map_err(|e| CliError::Usage(format!("produce ledger: {e}")))?;
        let tmp = self
            .path
            .with_extension(format!("json.{}", std::process::id()));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ledger_reads_back_what_was_written_and_starts_at_zero() {
        // Given a ledger no run has written
        let dir = std::env::temp_dir().join(format!("ledger-{}", std::process::id()));
        let ledger = Ledger::new(&dir, &Target::Kinesis("s/1".into()), "orders");
        let _ = std::fs::remove_file(ledger.path());
        // Then it reads as zero, and its file name is plain
        assert!(ledger.read().unwrap().is_zero());
        let name = ledger
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(name, "kinesis___s_1.orders.json");
        // When counters are written, they read back
        let used = Counters {
            revision: 20,
            record: 120,
        };
        ledger.write(&used).unwrap();
        assert_eq!(ledger.read().unwrap(), used);
        // And a file that is not a ledger is one line naming it
        std::fs::write(ledger.path(), "nope").unwrap();
        let err = ledger.read().unwrap_err().to_string();
        assert!(err.contains("not a produce ledger"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
