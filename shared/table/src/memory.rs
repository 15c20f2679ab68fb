//! In-memory adapters of the committer's ports, for the protocol's crash-point tests: claims
//! with the dedup table's conditional writes, and a table with a snapshot log and the
//! catalog's compare-and-swap. Faults are scripted per call ([`Fault`]), and the contract suite
//! in the committer's tests holds the real adapters to the same answers.

use crate::commit::Clock;
use crate::ports::{
    ClaimRecord, ClaimState, CommitClaims, PortError, StagedObject, TableLog, TakeAnswer,
};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

/// A clock tests set and move.
#[derive(Debug, Default)]
pub struct FixedClock(AtomicI64);

impl FixedClock {
    pub fn at(ms: i64) -> Self {
        FixedClock(AtomicI64::new(ms))
    }
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Claims in a map, each write conditional as the DynamoDB adapter's are.
#[derive(Debug, Default)]
pub struct MemoryClaims {
    items: Mutex<HashMap<String, ClaimRecord>>,
}

impl MemoryClaims {
    pub fn get(&self, key: &str) -> Option<ClaimRecord> {
        self.items.lock().ok()?.get(key).cloned()
    }

    /// Another committer's take-over, done from a test hook (no runtime needed there).
    pub fn take_over_now(
        &self,
        key: &str,
        from: &str,
        commit: &str,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> bool {
        let Ok(mut items) = self.items.lock() else {
            return false;
        };
        match items.get(key) {
            Some(r) if r.commit == from && r.state == ClaimState::Committing => {
                items.insert(key.into(), committing(commit, lease_until_ms, now_ms));
                true
            }
            _ => false,
        }
    }
}

impl CommitClaims for MemoryClaims {
    async fn read(&self, key: &str) -> Result<Option<ClaimRecord>, PortError> {
        Ok(self.get(key))
    }

    async fn take(
        &self,
        key: &str,
        commit: &str,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> Result<TakeAnswer, PortError> {
        let mut items = lock(&self.items)?;
        if let Some(r) = items.get(key) {
            return Ok(TakeAnswer::Held(r.clone()));
        }
        items.insert(key.into(), committing(commit, lease_until_ms, now_ms));
        Ok(TakeAnswer::Taken)
    }

    async fn take_over(
        &self,
        key: &str,
        from: &str,
        commit: &str,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> Result<TakeAnswer, PortError> {
        if self.take_over_now(key, from, commit, lease_until_ms, now_ms) {
            return Ok(TakeAnswer::Taken);
        }
        match self.get(key) {
            Some(r) => Ok(TakeAnswer::Held(r)),
            None => Err(PortError::Permanent(format!(
                "no claim to take over: {key}"
            ))),
        }
    }

    async fn mark_committed(
        &self,
        key: &str,
        holder: &str,
        appended_by: &str,
    ) -> Result<(), PortError> {
        let mut items = lock(&self.items)?;
        if let Some(r) = items.get_mut(key) {
            if r.commit == holder && r.state == ClaimState::Committing {
                r.state = ClaimState::Committed;
                r.commit = appended_by.into();
            }
        }
        Ok(())
    }
}

fn committing(commit: &str, lease_until_ms: i64, now_ms: i64) -> ClaimRecord {
    ClaimRecord {
        state: ClaimState::Committing,
        commit: commit.into(),
        lease_until_ms,
        taken_at_ms: now_ms,
    }
}

/// A fault the memory table plays on its next call of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `append`: the snapshot lands, the answer is lost.
    LostAnswerAfterApply,
    /// `append`: fails before anything is applied (a retryable error).
    FailBeforeApply,
    /// `append`: another writer lands an unrelated snapshot first (the compare-and-swap fails).
    OtherWriterFirst,
    /// `write`: fails retryably.
    WriteFails,
}

/// A call of the memory table a test can hook ([`MemoryTable::before_next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Load,
    Write,
    Append,
}

type Hook = Box<dyn FnOnce() + Send>;

/// One snapshot: its commit id and the staged objects it appended.
#[derive(Debug, Clone)]
struct Snapshot {
    commit: String,
    objects: Vec<String>,
}

/// A table as a list of snapshots (the main branch's history) and a compare-and-swap on its
/// length.
#[derive(Default)]
pub struct MemoryTable {
    snapshots: Mutex<Vec<Snapshot>>,
    faults: Mutex<VecDeque<Fault>>,
    /// Data files written (write ids), referenced or not.
    writes: Mutex<Vec<String>>,
    hooks: Mutex<Vec<(Call, Hook)>>,
}

impl std::fmt::Debug for MemoryTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTable")
            .field("snapshots", &self.snapshots)
            .finish_non_exhaustive()
    }
}

/// A loaded version: the number of snapshots and the commit ids they carry.
#[derive(Debug, Clone)]
pub struct MemoryBase {
    version: usize,
    commits: BTreeSet<String>,
}

impl MemoryTable {
    /// Queues a fault for the next call it applies to.
    pub fn inject(&self, fault: Fault) {
        if let Ok(mut f) = self.faults.lock() {
            f.push_back(fault);
        }
    }

    /// Runs `hook` just before the next call of kind `call` does anything: what another
    /// committer does while this one is between two steps.
    pub fn before_next(&self, call: Call, hook: impl FnOnce() + Send + 'static) {
        if let Ok(mut h) = self.hooks.lock() {
            h.push((call, Box::new(hook)));
        }
    }

    fn run_hook(&self, call: Call) {
        let hook = self.hooks.lock().ok().and_then(|mut h| {
            let i = h.iter().position(|(c, _)| *c == call)?;
            Some(h.remove(i).1)
        });
        if let Some(hook) = hook {
            hook();
        }
    }

    /// How many snapshots of the current history appended `key`.
    pub fn times_in_table(&self, key: &str) -> usize {
        self.snapshots
            .lock()
            .map(|s| {
                s.iter()
                    .flat_map(|s| s.objects.iter())
                    .filter(|k| *k == key)
                    .count()
            })
            .unwrap_or(0)
    }

    /// Snapshots in the history.
    pub fn snapshot_count(&self) -> usize {
        self.snapshots.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Write ids of every data-file write, in order.
    pub fn writes(&self) -> Vec<String> {
        self.writes.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// Lands a snapshot directly, as another committer would.
    pub fn land(&self, commit: &str, objects: &[&str]) {
        if let Ok(mut s) = self.snapshots.lock() {
            s.push(Snapshot {
                commit: commit.into(),
                objects: objects.iter().map(|o| o.to_string()).collect(),
            });
        }
    }

    fn next_fault(&self, applies: impl Fn(Fault) -> bool) -> Option<Fault> {
        let mut faults = self.faults.lock().ok()?;
        let i = faults.iter().position(|f| applies(*f))?;
        faults.remove(i)
    }
}

/// The written files of a memory commit: which objects they hold.
#[derive(Debug, Clone)]
pub struct MemoryWritten {
    objects: Vec<String>,
}

impl TableLog for MemoryTable {
    type Base = MemoryBase;
    type Written = MemoryWritten;

    async fn load(&self) -> Result<MemoryBase, PortError> {
        self.run_hook(Call::Load);
        let s = lock(&self.snapshots)?;
        Ok(MemoryBase {
            version: s.len(),
            commits: s.iter().map(|s| s.commit.clone()).collect(),
        })
    }

    fn commits(&self, base: &MemoryBase) -> BTreeSet<String> {
        base.commits.clone()
    }

    async fn write(
        &self,
        _base: &MemoryBase,
        write_id: &str,
        objects: &[StagedObject],
    ) -> Result<MemoryWritten, PortError> {
        self.run_hook(Call::Write);
        if self.next_fault(|f| f == Fault::WriteFails).is_some() {
            return Err(PortError::Retryable("write failed".into()));
        }
        lock(&self.writes)?.push(write_id.into());
        Ok(MemoryWritten {
            objects: objects.iter().map(|o| o.key.clone()).collect(),
        })
    }

    async fn append(
        &self,
        base: &MemoryBase,
        commit: &str,
        written: &MemoryWritten,
    ) -> Result<(), PortError> {
        self.run_hook(Call::Append);
        let fault = self.next_fault(|f| f != Fault::WriteFails);
        if fault == Some(Fault::OtherWriterFirst) {
            self.land("other-writer", &[]);
        }
        if fault == Some(Fault::FailBeforeApply) {
            return Err(PortError::Retryable("refused before applying".into()));
        }
        let mut s = lock(&self.snapshots)?;
        if s.len() != base.version {
            return Err(PortError::Conflict("main moved since the base".into()));
        }
        s.push(Snapshot {
            commit: commit.into(),
            objects: written.objects.clone(),
        });
        if fault == Some(Fault::LostAnswerAfterApply) {
            return Err(PortError::Unknown("answer lost after the commit".into()));
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>, PortError> {
    m.lock()
        .map_err(|_| PortError::Permanent("poisoned lock".into()))
}
