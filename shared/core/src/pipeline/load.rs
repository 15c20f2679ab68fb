//! Steps 4 to 7 for the records this invocation holds the claims of: encode the Parquet
//! objects, upsert the rows, write each object create-only, and take out the rows a sink
//! refused (they become poison).

use super::*;

/// The Parquet object of `members` (all of one route: objects are planned per route), or the
/// commit marker of a route without a lake.
pub(super) fn encode_members(
    routes: &Routes,
    work: &Work<'_>,
    members: &[usize],
    ingested_at_us: i64,
) -> Result<Vec<u8>, EncodeError> {
    let Some(route) = members
        .iter()
        .find_map(|&i| work.slots[i].event.as_ref().map(|e| routes.get(e.route)))
    else {
        return Ok(Vec::new());
    };
    let position = |i: usize| &work.batch.records[i].position;
    if !route.lake {
        let texts: Vec<String> = members.iter().map(|&i| position(i).to_string()).collect();
        let lines: Vec<MarkerLine<'_>> = members
            .iter()
            .zip(&texts)
            .filter_map(|(&i, text)| {
                work.slots[i].event.as_ref().map(|e| MarkerLine {
                    source_unit: &work.batch.records[i].unit.label,
                    source_position: text,
                    claim_key: &e.claim_key,
                })
            })
            .collect();
        return Ok(encode_markers(&lines));
    }
    // A KPL user record's lineage names its place in the aggregate too (`<seq>.<sub>`), text
    // made only for objects holding such records; a record of its own borrows its sequence
    // number or offset.
    let sub_positions: Vec<Option<String>> = if members
        .iter()
        .any(|&i| position(i).sub_sequence().is_some())
    {
        members
            .iter()
            .map(|&i| position(i).sub_sequence().map(|_| position(i).to_string()))
            .collect()
    } else {
        Vec::new()
    };
    let rows: Vec<ParquetRow<'_>> = members
        .iter()
        .enumerate()
        .filter_map(|(m, &i)| {
            let r = &work.batch.records[i];
            let sub_position = sub_positions.get(m).and_then(Option::as_deref);
            work.slots[i].event.as_ref().map(|event| ParquetRow {
                values: &event.values,
                source_unit: &r.unit.label,
                source_position: sub_position.unwrap_or(r.position.as_str()),
                source_key: r.key.as_deref(),
                source_headers: r.headers_json.as_deref(),
            })
        })
        .collect();
    encode_parquet(route, &rows, ingested_at_us)
}

/// Finds, by bisection, each member that `encode` refuses on its own, with the reason.
/// `k` refused members among `n` cost about `2k·log2(n/k)` encodings; none on the happy path,
/// where the caller's first encoding succeeded.
pub fn isolate_refusals<E, F>(members: &[usize], encode: &F, refused: &mut Vec<(usize, String)>)
where
    E: std::fmt::Display,
    F: Fn(&[usize]) -> Result<Vec<u8>, E>,
{
    match encode(members) {
        Ok(_) => {}
        Err(e) if members.len() == 1 => refused.push((
            members[0],
            format!("the Parquet encoder refused the row: {e}"),
        )),
        Err(_) if members.is_empty() => {}
        Err(_) => {
            let (left, right) = members.split_at(members.len() / 2);
            isolate_refusals(left, encode, refused);
            isolate_refusals(right, encode, refused);
        }
    }
}

/// Object writes in flight at once. Late data writes one object per hour its events span
/// (100 objects for 1,000 events over two days are common); a write takes tens of ms, so
/// four at a time made such a batch wait for 25 round trips. S3 takes thousands of writes a
/// second per prefix, far above this.
pub const OBJECT_WRITE_CONCURRENCY: usize = 16;

pub(super) enum ObjectResult {
    Written,
    NotWritten,
    Unknown,
}

impl<D, R, O, Q> Pipeline<D, R, O, Q>
where
    D: DedupStore,
    R: RowSink,
    O: ObjectSink,
    Q: DeadLetters,
{
    /// Steps 4 and 5 for every event this invocation holds the claim of. Returns the
    /// records a sink refused: their claims are released, and they are poison now.
    pub(super) async fn load_claimed(&self, work: &mut Work<'_>) -> Vec<usize> {
        let claimed: Vec<usize> = work
            .claimed()
            .into_iter()
            .filter(|&i| work.slots[i].event.is_some())
            .collect();
        // Records whose object is tainted cannot be completed in this invocation.
        let (mut blocked, claimed): (Vec<usize>, Vec<usize>) =
            claimed.into_iter().partition(|&i| {
                work.slots[i]
                    .object_key
                    .as_ref()
                    .is_some_and(|k| work.tainted.contains(k))
            });
        blocked.extend(work.unknown());
        self.give_up(work, &blocked, FailureCause::Dedup).await;
        if claimed.is_empty() {
            return Vec::new();
        }
        let cutoff = work.cutoff_ms(&self.settings);
        let until = work.until(&self.settings);
        if until.passed() {
            self.give_up(work, &claimed, FailureCause::Deadline).await;
            return Vec::new();
        }

        let mut by_object: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for &i in &claimed {
            if let Some(k) = &work.slots[i].object_key {
                by_object.entry(k.clone()).or_default().push(i);
            }
        }

        // Encode first: a value the Parquet encoder cannot write is found before its row
        // reaches the database, so no event is ever in PostgreSQL and missing from the lake.
        let mark = PhaseMark::now();
        let ingested_at_us = work.now_ms() * 1000;
        let mut refused: Vec<(usize, String)> = Vec::new();
        let mut bodies: BTreeMap<String, Result<Vec<u8>, EncodeError>> = BTreeMap::new();
        for (key, members) in &mut by_object {
            let encode = |subset: &[usize]| {
                encode_members(&self.settings.routes, work, subset, ingested_at_us)
            };
            let body = match encode(members) {
                Ok(body) => Ok(body),
                Err(_) => {
                    let mut bad = Vec::new();
                    isolate_refusals(members, &encode, &mut bad);
                    members.retain(|i| !bad.iter().any(|(b, _)| b == i));
                    refused.extend(bad);
                    encode(members)
                }
            };
            bodies.insert(key.clone(), body);
        }
        // An object that still does not encode once its refused rows are out (the encoder
        // fails on the rows together, never alone) cannot be written in this invocation: its
        // rows stay out of the database too, so no event is in PostgreSQL and not in the lake.
        let unencodable: Vec<String> = bodies
            .iter()
            .filter(|(_, body)| body.is_err())
            .map(|(key, _)| key.clone())
            .collect();
        let mut not_loaded = Vec::new();
        for key in unencodable {
            tracing::error!("parquet encoding failed for an object's rows together; failing them");
            bodies.remove(&key);
            not_loaded.extend(by_object.remove(&key).unwrap_or_default());
        }
        self.give_up(work, &not_loaded, FailureCause::ObjectStore)
            .await;
        let encoder_refused: HashSet<usize> = refused.iter().map(|(i, _)| *i).collect();
        let not_loaded: HashSet<usize> = not_loaded.into_iter().collect();
        let to_load: Vec<usize> = claimed
            .iter()
            .copied()
            .filter(|i| !encoder_refused.contains(i) && !not_loaded.contains(i))
            .collect();

        let mark = work.phases.add(Phase::Encode, mark);
        // Rows of routes with a table; a route without one writes its index and lake only.
        let routes = &self.settings.routes;
        let to_table: Vec<usize> = to_load
            .iter()
            .copied()
            .filter(|&i| {
                work.slots[i]
                    .event
                    .as_ref()
                    .is_some_and(|e| routes.get(e.route).has_table())
            })
            .collect();
        let rows: Vec<Row<'_>> = to_table
            .iter()
            .filter_map(|&i| work.slots[i].event.as_ref())
            .map(|e| Row {
                route: routes.get(e.route),
                values: &e.values,
                unavailable: &e.unavailable,
            })
            .collect();
        let upsert_until = Until::fenced(work.clock, cutoff + 200, work.fence);
        let upserted = if rows.is_empty() {
            Ok(Upserted::default())
        } else {
            bounded(upsert_until, self.rows.upsert(&rows, cutoff)).await
        };
        drop(rows);
        // Rows whose event the table does not hold (another event of the key won): their
        // documents are left to the invocation whose event the table kept.
        let mut superseded: HashSet<usize> = HashSet::new();
        match upserted {
            Ok(upserted) => {
                refused.extend(
                    upserted
                        .refused
                        .into_iter()
                        .filter_map(|r| to_table.get(r.index).map(|&i| (i, r.reason))),
                );
                superseded.extend(
                    upserted
                        .superseded
                        .into_iter()
                        .filter_map(|r| to_table.get(r).copied()),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, rows = to_load.len(), "database upsert failed");
                self.give_up(work, &claimed, FailureCause::Database).await;
                return Vec::new();
            }
        }

        // 4b. The search documents of the rows the database took and holds; a document the index
        // refuses is a refused row like the database's, and an object holding a document not
        // known written is not written (its records are redelivered).
        let mark = if self.search.is_some() {
            let mark = work.phases.add(Phase::Database, mark);
            let db_refused: HashSet<usize> = refused.iter().map(|(i, _)| *i).collect();
            let routes = &self.settings.routes;
            let members: Vec<usize> = to_load
                .iter()
                .copied()
                .filter(|i| !db_refused.contains(i) && !superseded.contains(i))
                .filter(|&i| {
                    work.slots[i]
                        .event
                        .as_ref()
                        .is_some_and(|e| routes.get(e.route).search.is_some())
                })
                .collect();
            let result = self.write_documents(work, &members, until).await;
            refused.extend(result.refused);
            if !result.failed.is_empty() {
                let failed: HashSet<usize> = result.failed.into_iter().collect();
                let refused_now: HashSet<usize> = refused.iter().map(|(i, _)| *i).collect();
                let mut not_written = Vec::new();
                by_object.retain(|_, members| {
                    let keep = !members.iter().any(|i| failed.contains(i));
                    if !keep {
                        not_written
                            .extend(members.iter().copied().filter(|i| !refused_now.contains(i)));
                    }
                    keep
                });
                self.give_up(work, &not_written, FailureCause::SearchIndex)
                    .await;
            }
            work.phases.add(Phase::Index, mark)
        } else {
            mark
        };

        // Refused rows leave their objects: release their event claims (a claim naming an
        // object that lacks the event would make it look loaded), and re-encode the object
        // without them. A release that cannot be confirmed holds the object back.
        let refused_set: HashSet<usize> = refused.iter().map(|(i, _)| *i).collect();
        let cleanup = work.cleanup(&self.settings);
        let owner = work.inv.attempt_id.as_str();
        let w = &*work;
        let releases: Vec<(usize, bool)> = stream::iter(&refused)
            .map(|(i, _)| async move {
                let released = match &w.slots[*i].claim_key {
                    Some(key) => in_budget(self.settings.in_budget_retry, cleanup, || {
                        self.dedup.release(key, owner)
                    })
                    .await
                    .is_ok(),
                    None => true,
                };
                (*i, released && !w.in_doubt(*i))
            })
            .buffer_unordered(self.settings.claim_concurrency.max(1))
            .collect()
            .await;
        for (i, released) in releases {
            if !released {
                if let Some(k) = &work.slots[i].object_key {
                    work.tainted.insert(k.clone());
                }
            }
        }
        for (key, members) in &mut by_object {
            let before = members.len();
            members.retain(|i| !refused_set.contains(i));
            if members.len() != before && !work.tainted.contains(key) {
                let body = encode_members(&self.settings.routes, work, members, ingested_at_us);
                bodies.insert(key.clone(), body);
            }
        }
        for (i, reason) in &refused {
            tracing::warn!(position = %work.batch.records[*i].position, reason = %reason, "a sink refused the row; dead-lettering it");
            let slot = &mut work.slots[*i];
            slot.poison = Some(Poison {
                kind: PoisonKind::Refused,
                reason: reason.clone(),
            });
            slot.event = None;
            // Its event claim is given back: it waits for a poison claim of its own.
            slot.progress = Progress::Pending;
        }

        let mark = work.phases.add(Phase::Database, mark);
        if until.passed() {
            let all: Vec<usize> = by_object.into_values().flatten().collect();
            self.give_up(work, &all, FailureCause::Deadline).await;
            return refused.into_iter().map(|(i, _)| i).collect();
        }
        let mut held_back = Vec::new();
        let mut to_write = Vec::new();
        for (key, members) in by_object {
            if members.is_empty() {
                continue;
            }
            match (work.tainted.contains(&key), bodies.remove(&key)) {
                (false, Some(Ok(body))) => to_write.push((key, members, body)),
                (true, _) => held_back.push((members, FailureCause::Dedup)),
                (false, _) => {
                    tracing::error!("parquet encoding failed for the rows left in an object");
                    held_back.push((members, FailureCause::ObjectStore));
                }
            }
        }
        for (members, cause) in held_back {
            self.give_up(work, &members, cause).await;
        }
        let written: Vec<(Vec<usize>, ObjectResult)> = stream::iter(to_write)
            .map(|(key, members, body)| async move {
                let r = self.write_object(&key, body, until, cleanup).await;
                (members, r)
            })
            .buffer_unordered(OBJECT_WRITE_CONCURRENCY)
            .collect()
            .await;
        for (members, result) in written {
            match result {
                ObjectResult::Written => {
                    for i in members {
                        work.finish(i, RecordOutcome::Loaded);
                    }
                }
                ObjectResult::NotWritten => {
                    self.give_up(work, &members, FailureCause::ObjectStore)
                        .await
                }
                ObjectResult::Unknown => {
                    // Keep the claims: the object may still appear, and the lease decides.
                    for i in members {
                        work.fail(i, FailureCause::ObjectStore);
                    }
                }
            }
        }
        work.phases.add(Phase::Objects, mark);
        refused.into_iter().map(|(i, _)| i).collect()
    }

    /// Writes one object by `until`; after an error, checks by `cleanup` whether it exists.
    pub(super) async fn write_object(
        &self,
        key: &str,
        body: Vec<u8>,
        until: Until<'_>,
        cleanup: Until<'_>,
    ) -> ObjectResult {
        let body = bytes::Bytes::from(body);
        let put = in_budget(self.settings.in_budget_retry, until, || {
            self.objects.put_new(key, body.clone(), content_type(key))
        })
        .await;
        match put {
            Ok(_) => ObjectResult::Written,
            Err(e) => {
                tracing::warn!(error = %e, "object write failed");
                match in_budget(self.settings.in_budget_retry, cleanup, || {
                    self.objects.exists(key)
                })
                .await
                {
                    Ok(true) => ObjectResult::Written,
                    Ok(false) if !e.ambiguous => ObjectResult::NotWritten,
                    _ => ObjectResult::Unknown,
                }
            }
        }
    }
}
