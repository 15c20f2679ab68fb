//! In-memory adapters of the ports, and a fault-injecting wrapper for any adapter.
//!
//! They exist for tests: the in-memory stores let the pipeline's unit tests run in
//! milliseconds, and [`Faulty`] turns a real or in-memory adapter into one that errors or
//! "crashes" (never returns, as if the sandbox died) around the real call.

use crate::error::PortError;
use crate::ports::{
    Claim, ClaimAttempt, DeadLetters, DedupStore, HolderLease, Letter, LetterResult, ObjectSink,
    PutOutcome, Refusal, Renewal, Revocation, Row, RowSink, Upserted,
};
use crate::route::{Merge, Route, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Dedup claims in a map, with the same conditions as the DynamoDB adapter.
#[derive(Default, Clone)]
pub struct MemoryDedup {
    pub claims: Arc<Mutex<BTreeMap<String, Claim>>>,
    /// Holder leases by owner.
    pub leases: Arc<Mutex<BTreeMap<String, HolderLease>>>,
    /// Every write, claims and leases alike.
    pub writes: Arc<AtomicUsize>,
    /// Lease writes (renewals and revocations) by owner.
    pub lease_writes: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl DedupStore for MemoryDedup {
    fn try_claim(
        &self,
        claim: &Claim,
        now_s: i64,
    ) -> impl Future<Output = Result<ClaimAttempt, PortError>> + Send {
        self.writes.fetch_add(1, Ordering::SeqCst);
        let mut claims = lock(&self.claims);
        let r = match claims.get(&claim.key) {
            Some(old) if old.expires_at_s >= now_s => ClaimAttempt::Held(old.clone()),
            _ => {
                claims.insert(claim.key.clone(), claim.clone());
                ClaimAttempt::Claimed
            }
        };
        std::future::ready(Ok(r))
    }

    fn take_over(
        &self,
        claim: &Claim,
        previous: &Claim,
    ) -> impl Future<Output = Result<ClaimAttempt, PortError>> + Send {
        self.writes.fetch_add(1, Ordering::SeqCst);
        let mut claims = lock(&self.claims);
        // DynamoDB's condition: the holder and its lease unchanged (`#owner = :owner AND
        // #lease = :lease`), nothing else compared.
        let r = match claims.get(&claim.key) {
            Some(current)
                if current.owner == previous.owner
                    && current.lease_until_ms == previous.lease_until_ms =>
            {
                claims.insert(claim.key.clone(), claim.clone());
                ClaimAttempt::Claimed
            }
            Some(current) => ClaimAttempt::Held(current.clone()),
            None => ClaimAttempt::Absent,
        };
        std::future::ready(Ok(r))
    }

    fn read(
        &self,
        event_id: &str,
    ) -> impl Future<Output = Result<Option<Claim>, PortError>> + Send {
        std::future::ready(Ok(lock(&self.claims).get(event_id).cloned()))
    }

    fn release(
        &self,
        event_id: &str,
        owner: &str,
    ) -> impl Future<Output = Result<(), PortError>> + Send {
        self.writes.fetch_add(1, Ordering::SeqCst);
        let mut claims = lock(&self.claims);
        if claims.get(event_id).is_some_and(|c| c.owner == owner) {
            claims.remove(event_id);
        }
        std::future::ready(Ok(()))
    }

    fn renew_lease(
        &self,
        owner: &str,
        alive_until_ms: i64,
        _expires_at_s: i64,
    ) -> impl Future<Output = Result<Renewal, PortError>> + Send {
        self.writes.fetch_add(1, Ordering::SeqCst);
        *lock(&self.lease_writes)
            .entry(owner.to_owned())
            .or_default() += 1;
        let mut leases = lock(&self.leases);
        let r = match leases.get(owner) {
            Some(l) if l.revoked => Renewal::Revoked,
            Some(l) if l.alive_until_ms >= alive_until_ms => Renewal::Renewed,
            _ => {
                leases.insert(
                    owner.to_owned(),
                    HolderLease {
                        owner: owner.to_owned(),
                        alive_until_ms,
                        revoked: false,
                    },
                );
                Renewal::Renewed
            }
        };
        std::future::ready(Ok(r))
    }

    fn read_lease(
        &self,
        owner: &str,
    ) -> impl Future<Output = Result<Option<HolderLease>, PortError>> + Send {
        std::future::ready(Ok(lock(&self.leases).get(owner).cloned()))
    }

    fn revoke_lease(
        &self,
        owner: &str,
        seen: Option<&HolderLease>,
        _expires_at_s: i64,
    ) -> impl Future<Output = Result<Revocation, PortError>> + Send {
        self.writes.fetch_add(1, Ordering::SeqCst);
        let mut leases = lock(&self.leases);
        let current = leases.get(owner).cloned();
        let r = match (&current, seen) {
            (Some(c), _) if c.revoked => Revocation::Revoked,
            (None, None) => {
                leases.insert(
                    owner.to_owned(),
                    HolderLease {
                        owner: owner.to_owned(),
                        alive_until_ms: 0,
                        revoked: true,
                    },
                );
                Revocation::Revoked
            }
            (Some(c), Some(s)) if c.alive_until_ms == s.alive_until_ms => {
                leases.insert(
                    owner.to_owned(),
                    HolderLease {
                        revoked: true,
                        ..c.clone()
                    },
                );
                Revocation::Revoked
            }
            _ => Revocation::Changed(current),
        };
        std::future::ready(Ok(r))
    }
}

/// A stored row: its values (table columns only, in route order) and how often it was
/// written.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    pub values: Vec<Value>,
    pub writes: u32,
}

/// Rows by table and key, merged as the real upsert merges them (keep-first or newest-by,
/// the same event always rewriting its own row). Rows whose `user_id` column is in
/// `refused_users` are refused, as a CHECK constraint on the real table would refuse them.
#[derive(Default, Clone)]
pub struct MemoryRows {
    pub rows: Arc<Mutex<BTreeMap<(String, String), StoredRow>>>,
    pub refused_users: Arc<Mutex<BTreeSet<String>>>,
}

impl MemoryRows {
    /// The stored rows of `table` by key text.
    pub fn table(&self, table: &str) -> BTreeMap<String, StoredRow> {
        lock(&self.rows)
            .iter()
            .filter(|((t, _), _)| t == table)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect()
    }
}

fn key_text(route: &Route, values: &[Value]) -> String {
    route
        .key
        .iter()
        .map(|&i| values[i].identity_text().into_owned())
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

impl RowSink for MemoryRows {
    fn upsert(
        &self,
        rows: &[Row<'_>],
        _until_ms: i64,
    ) -> impl Future<Output = Result<Upserted, PortError>> + Send {
        let refused_users = lock(&self.refused_users).clone();
        let mut stored = lock(&self.rows);
        let mut refusals = Vec::new();
        for (index, r) in rows.iter().enumerate() {
            let user = r
                .route
                .columns
                .iter()
                .position(|c| c.name == "user_id")
                .map(|i| r.values[i].identity_text().into_owned());
            if user.is_some_and(|u| refused_users.contains(&u)) {
                refusals.push(Refusal {
                    index,
                    reason: "SQLSTATE 23514 (constraint memory_check)".into(),
                });
                continue;
            }
            let values: Vec<Value> = r
                .route
                .table_columns()
                .map(|(i, _)| r.values[i].clone())
                .collect();
            let slot = (r.route.table_name(), key_text(r.route, r.values));
            let table_index = |col: usize| r.route.table_columns().position(|(i, _)| i == col);
            let replace = match stored.get(&slot) {
                None => true,
                Some(old) => {
                    let same_event = r
                        .route
                        .identity
                        .iter()
                        .all(|&i| table_index(i).is_some_and(|t| old.values[t] == values[t]));
                    let newer = match r.route.merge {
                        Merge::KeepFirst => false,
                        Merge::NewestBy(col) => table_index(col).is_some_and(|t| {
                            compare(&values[t], &old.values[t]) == Some(std::cmp::Ordering::Greater)
                        }),
                    };
                    same_event || newer
                }
            };
            if replace {
                // A change's unavailable columns keep what the row holds, as in PostgreSQL.
                let mut values = values;
                if let Some(old) = stored.get(&slot) {
                    for &i in r.unavailable {
                        if let Some(t) = table_index(i) {
                            values[t] = old.values[t].clone();
                        }
                    }
                }
                let writes = stored.get(&slot).map_or(0, |e| e.writes);
                stored.insert(
                    slot,
                    StoredRow {
                        values,
                        writes: writes + 1,
                    },
                );
            }
        }
        // Superseded: a row of a route with an index whose event the table does not hold.
        let superseded = rows
            .iter()
            .enumerate()
            .filter(|(index, r)| {
                r.route.search.is_some() && !refusals.iter().any(|f| f.index == *index)
            })
            .filter(|(_, r)| {
                let slot = (r.route.table_name(), key_text(r.route, r.values));
                let table_index = |col: usize| r.route.table_columns().position(|(i, _)| i == col);
                stored.get(&slot).is_none_or(|held| {
                    !r.route
                        .identity
                        .iter()
                        .all(|&i| table_index(i).is_some_and(|t| held.values[t] == r.values[i]))
                })
            })
            .map(|(index, _)| index)
            .collect();
        std::future::ready(Ok(Upserted {
            refused: refusals,
            superseded,
        }))
    }
}

/// SQL ordering of two values of one column (NULL is lower than anything, as `newest_by`
/// treats it).
fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    use Value as V;
    match (a, b) {
        (V::Null, V::Null) => Some(std::cmp::Ordering::Equal),
        (_, V::Null) => Some(std::cmp::Ordering::Greater),
        (V::Null, _) => Some(std::cmp::Ordering::Less),
        (V::Int(x), V::Int(y)) => Some(x.cmp(y)),
        (V::Double(x), V::Double(y)) => x.partial_cmp(y),
        (V::Timestamp(x), V::Timestamp(y)) => Some(x.cmp(y)),
        (V::Date(x), V::Date(y)) => Some(x.cmp(y)),
        (V::Text(x), V::Text(y)) => Some(x.cmp(y)),
        (V::Numeric { text: x, .. }, V::Numeric { text: y, .. }) => {
            x.parse::<f64>().ok()?.partial_cmp(&y.parse::<f64>().ok()?)
        }
        _ => None,
    }
}

/// Objects by key.
#[derive(Default, Clone)]
pub struct MemoryObjects {
    pub objects: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl ObjectSink for MemoryObjects {
    fn put_new(
        &self,
        key: &str,
        body: bytes::Bytes,
        _content_type: &str,
    ) -> impl Future<Output = Result<PutOutcome, PortError>> + Send {
        let mut objects = lock(&self.objects);
        let r = if objects.contains_key(key) {
            PutOutcome::AlreadyExists
        } else {
            objects.insert(key.to_owned(), body.to_vec());
            PutOutcome::Created
        };
        std::future::ready(Ok(r))
    }

    fn exists(&self, key: &str) -> impl Future<Output = Result<bool, PortError>> + Send {
        std::future::ready(Ok(lock(&self.objects).contains_key(key)))
    }
}

/// Dead-letter bodies in order of sending.
#[derive(Clone)]
pub struct MemoryDeadLetters {
    pub sent: Arc<Mutex<Vec<String>>>,
    pub max_body_bytes: usize,
    pub max_batch_len: usize,
    /// Requests answered, as SQS would count them.
    pub requests: Arc<AtomicUsize>,
    /// The next this many letters are refused retryably (as SQS's own fault), one per
    /// request, each the first of its batch; the batch's others are sent.
    pub refuse_retryably: Arc<AtomicUsize>,
    /// As `refuse_retryably`, but refused for good (as a sender fault).
    pub refuse_for_good: Arc<AtomicUsize>,
}

impl Default for MemoryDeadLetters {
    fn default() -> Self {
        Self {
            sent: Arc::default(),
            max_body_bytes: 256 * 1024,
            max_batch_len: 10,
            requests: Arc::default(),
            refuse_retryably: Arc::default(),
            refuse_for_good: Arc::default(),
        }
    }
}

fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl DeadLetters for MemoryDeadLetters {
    fn send_batch(
        &self,
        letters: &[Letter],
    ) -> impl Future<Output = Result<Vec<LetterResult>, PortError>> + Send {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let answer = if letters.len() > self.max_batch_len
            || letters.iter().map(|l| l.body.len()).sum::<usize>() > self.max_body_bytes
        {
            // As SQS refuses a batch over its limits: the pipeline must never send one.
            Err(PortError::permanent(
                "dead-letter batch over the queue's limits",
            ))
        } else {
            let mut sent = lock(&self.sent);
            let answers = letters
                .iter()
                .enumerate()
                .map(|(n, letter)| {
                    if n == 0 && take_one(&self.refuse_retryably) {
                        return Err(PortError::retryable("injected letter refusal"));
                    }
                    if n == 0 && take_one(&self.refuse_for_good) {
                        return Err(PortError::permanent("injected letter rejection"));
                    }
                    sent.push(letter.body.clone());
                    Ok(())
                })
                .collect();
            Ok(answers)
        };
        std::future::ready(answer)
    }

    fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    fn max_batch_len(&self) -> usize {
        self.max_batch_len
    }
}

/// Switches shared between a test and the [`Faulty`] adapters it built.
#[derive(Default, Debug)]
pub struct FaultSwitch {
    /// Every call fails (retryably) before reaching the real adapter.
    pub fail: AtomicBool,
    /// The next this-many calls fail before reaching the real adapter.
    pub fail_next: AtomicUsize,
    /// Calls reach the real adapter, then report an ambiguous error (the effect happened but
    /// the answer was lost).
    pub lose_answers: AtomicBool,
    /// The next this-many calls reach the real adapter, then report an ambiguous error.
    pub lose_next: AtomicUsize,
    /// The next call reaches the real adapter and then never returns: a crash right after
    /// the step. Later calls never return either.
    pub crash_after: AtomicBool,
    /// Reads (`read`, `exists`) fail before reaching the real adapter.
    pub fail_reads: AtomicBool,
    /// The next call never returns and never reaches the real adapter: a crash right
    /// before the step.
    pub crash_before: AtomicBool,
    /// Set once a crash has happened: from then on no call returns.
    pub crashed: AtomicBool,
    /// Claim releases fail (retryably) before reaching the real store.
    pub fail_releases: AtomicBool,
    /// Lease renewals fail (retryably) before reaching the real store. Lease calls see only
    /// this, the `lose_renewal_answers` switch and a crash: the other faults are the claims'.
    pub fail_renewals: AtomicBool,
    /// Lease renewals are applied, and their answers lost.
    pub lose_renewal_answers: AtomicBool,
    /// Every call (lease calls aside) waits this long (ms, tokio time) before it starts: a
    /// slow dependency.
    pub delay_ms: AtomicU64,
}

impl FaultSwitch {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    async fn before(&self) -> Result<(), PortError> {
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        if self.crash_before.load(Ordering::SeqCst) || self.crashed.load(Ordering::SeqCst) {
            self.crashed.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(PortError::retryable("injected outage"));
        }
        let take = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if take.is_ok() {
            return Err(PortError::retryable("injected failure"));
        }
        Ok(())
    }

    /// A crashed sandbox's lease calls never return, like all its calls.
    async fn lease_gate(&self) {
        if self.crashed.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }

    fn read_gate(&self) -> Result<(), PortError> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(PortError::retryable("injected read failure"));
        }
        Ok(())
    }

    async fn after<T>(&self, r: Result<T, PortError>) -> Result<T, PortError> {
        if self.crash_after.load(Ordering::SeqCst) || self.crashed.load(Ordering::SeqCst) {
            self.crashed.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        let lose_one = self
            .lose_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if lose_one || self.lose_answers.load(Ordering::SeqCst) {
            return Err(PortError::ambiguous("injected lost answer"));
        }
        r
    }
}

/// Wraps any adapter with the faults a [`FaultSwitch`] turns on.
#[derive(Clone)]
pub struct Faulty<T> {
    pub inner: T,
    pub switch: Arc<FaultSwitch>,
}

impl<T> Faulty<T> {
    pub fn new(inner: T, switch: Arc<FaultSwitch>) -> Self {
        Self { inner, switch }
    }
}

impl<T: DedupStore> DedupStore for Faulty<T> {
    async fn try_claim(&self, claim: &Claim, now_s: i64) -> Result<ClaimAttempt, PortError> {
        self.switch.before().await?;
        let r = self.inner.try_claim(claim, now_s).await;
        self.switch.after(r).await
    }

    async fn take_over(&self, claim: &Claim, previous: &Claim) -> Result<ClaimAttempt, PortError> {
        self.switch.before().await?;
        let r = self.inner.take_over(claim, previous).await;
        self.switch.after(r).await
    }

    async fn read(&self, key: &str) -> Result<Option<Claim>, PortError> {
        self.switch.before().await?;
        self.switch.read_gate()?;
        self.inner.read(key).await
    }

    async fn release(&self, key: &str, owner: &str) -> Result<(), PortError> {
        self.switch.before().await?;
        if self.switch.fail_releases.load(Ordering::SeqCst) {
            return Err(PortError::retryable("injected release failure"));
        }
        self.inner.release(key, owner).await
    }

    async fn renew_lease(
        &self,
        owner: &str,
        alive_until_ms: i64,
        expires_at_s: i64,
    ) -> Result<Renewal, PortError> {
        self.switch.lease_gate().await;
        if self.switch.fail_renewals.load(Ordering::SeqCst) {
            return Err(PortError::retryable("injected renewal failure"));
        }
        let r = self
            .inner
            .renew_lease(owner, alive_until_ms, expires_at_s)
            .await;
        self.switch.lease_gate().await;
        if self.switch.lose_renewal_answers.load(Ordering::SeqCst) {
            return Err(PortError::ambiguous("injected lost renewal answer"));
        }
        r
    }

    async fn read_lease(&self, owner: &str) -> Result<Option<HolderLease>, PortError> {
        self.switch.lease_gate().await;
        self.inner.read_lease(owner).await
    }

    async fn revoke_lease(
        &self,
        owner: &str,
        seen: Option<&HolderLease>,
        expires_at_s: i64,
    ) -> Result<Revocation, PortError> {
        self.switch.lease_gate().await;
        self.inner.revoke_lease(owner, seen, expires_at_s).await
    }
}

impl<T: RowSink> RowSink for Faulty<T> {
    async fn upsert(&self, rows: &[Row<'_>], until_ms: i64) -> Result<Upserted, PortError> {
        self.switch.before().await?;
        let r = self.inner.upsert(rows, until_ms).await;
        self.switch.after(r).await
    }
}

impl<T: ObjectSink> ObjectSink for Faulty<T> {
    async fn put_new(
        &self,
        key: &str,
        body: bytes::Bytes,
        content_type: &str,
    ) -> Result<PutOutcome, PortError> {
        self.switch.before().await?;
        let r = self.inner.put_new(key, body, content_type).await;
        self.switch.after(r).await
    }

    async fn exists(&self, key: &str) -> Result<bool, PortError> {
        self.switch.before().await?;
        self.switch.read_gate()?;
        self.inner.exists(key).await
    }
}

impl<T: DeadLetters> DeadLetters for Faulty<T> {
    async fn send_batch(&self, letters: &[Letter]) -> Result<Vec<LetterResult>, PortError> {
        self.switch.before().await?;
        let r = self.inner.send_batch(letters).await;
        self.switch.after(r).await
    }

    fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes()
    }

    fn max_batch_len(&self) -> usize {
        self.inner.max_batch_len()
    }
}

impl<T: crate::ports::SearchIndex> crate::ports::SearchIndex for Faulty<T> {
    async fn bulk(
        &self,
        body: bytes::Bytes,
        documents: usize,
    ) -> Result<Vec<crate::search::bulk::ItemOutcome>, PortError> {
        self.switch.before().await?;
        let r = self.inner.bulk(body, documents).await;
        self.switch.after(r).await
    }

    async fn prepare(
        &self,
        route: &str,
        plan: &crate::search::IndexPlan,
        create: bool,
    ) -> Result<(), PortError> {
        self.inner.prepare(route, plan, create).await
    }

    async fn document(
        &self,
        index: &str,
        id: &str,
    ) -> Result<Option<crate::ports::StoredDocument>, PortError> {
        self.switch.read_gate()?;
        self.inner.document(index, id).await
    }

    async fn list_documents(&self, index: &str) -> Result<Vec<(String, u64)>, PortError> {
        self.switch.read_gate()?;
        self.inner.list_documents(index).await
    }
}
