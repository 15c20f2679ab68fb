//! Poison records into the dead-letter queue: each record's letter (its bytes stored first
//! when too large for the queue), sent ten to a request, then one archive per unit as the
//! proof a later delivery checks (docs/exactly-once.md, step 1).

use super::*;

/// Packs letters, in order, into batches of at most `max_len` letters whose bodies sum to at
/// most `max_bytes`. A letter over `max_bytes` on its own travels alone (the queue refuses it,
/// and only it).
pub(super) fn pack_letters(
    letters: Vec<(usize, Letter)>,
    max_len: usize,
    max_bytes: usize,
) -> Vec<Vec<(usize, Letter)>> {
    let mut batches: Vec<Vec<(usize, Letter)>> = Vec::new();
    let mut bytes = 0;
    for (i, letter) in letters {
        let len = letter.body.len();
        match batches.last_mut() {
            Some(batch) if batch.len() < max_len.max(1) && bytes + len <= max_bytes => {
                bytes += len;
                batch.push((i, letter));
            }
            _ => {
                bytes = len;
                batches.push(vec![(i, letter)]);
            }
        }
    }
    batches
}

/// Sends of one dead letter whose outcome is unknown (cut off, answered 5xx) after which the
/// invocation stops resending it: the letter may be queued already, and its claim is then
/// kept for the lease to decide (see `dead_letter_all`).
pub(super) const MAX_UNKNOWN_SENDS: u32 = 2;

impl<D, R, O, Q> Pipeline<D, R, O, Q>
where
    D: DedupStore,
    R: RowSink,
    O: ObjectSink,
    Q: DeadLetters,
{
    /// Sends each claimed poison record to the queue, then archives the messages sent, one
    /// object per unit: the archive is the proof a later delivery checks. A crash between the
    /// two sends them once more.
    ///
    /// An archive is written only when every claim naming it is either sent or released: a
    /// record whose letter did not go out gives its claim back first, and if that cannot be
    /// confirmed the archive is held back (its records were sent; without the archive a
    /// later delivery sends them again once the lease is over, rather than taking a claim
    /// whose letter never went out for done).
    ///
    /// Letters travel in batches (up to the queue's batch limits), so a batch with many poison
    /// records costs a request per ten of them rather than one each.
    pub(super) async fn dead_letter_all(&self, work: &mut Work<'_>, claimed: &[usize]) {
        let until = work.until(&self.settings);
        let cleanup = work.cleanup(&self.settings);
        // The archive is a commit marker: fenced like every write that vouches for records.
        let archive_until = work.cleanup_fenced(&self.settings);
        let owner = work.inv.attempt_id.as_str();
        let w = &*work;
        let concurrency = self.settings.claim_concurrency.max(1);

        // 1. Each record's letter; a record too big to travel inline is stored first.
        let prepared: Vec<(usize, Result<Letter, FailureCause>)> = stream::iter(claimed)
            .map(|&i| async move {
                let slot = &w.slots[i];
                let (Some(poison), Some(digest)) = (&slot.poison, &slot.digest) else {
                    return (i, Err(FailureCause::DeadLetterQueue));
                };
                if until.passed() {
                    return (i, Err(FailureCause::Deadline));
                }
                let record = &w.batch.records[i];
                match self.letter_of(record, poison, digest, until).await {
                    Ok(letter) => (i, Ok(letter)),
                    Err(e) => {
                        tracing::warn!(error = %e, position = %record.position, "dead-letter data write failed");
                        (i, Err(FailureCause::DeadLetterQueue))
                    }
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut ready = Vec::with_capacity(prepared.len());
        let mut failed = Vec::new();
        for (i, letter) in prepared {
            match letter {
                Ok(letter) => ready.push((i, letter)),
                Err(cause) => failed.push((i, cause)),
            }
        }
        ready.sort_by_key(|(i, _)| *i);

        // 2. Send.
        let mut sent: Vec<(usize, Letter)> = Vec::with_capacity(ready.len());
        // Letters whose last send has an unknown outcome: maybe queued. Their claims are kept
        // (a redelivery waits for the lease instead of sending them again at once) and their
        // archive is held back (it must not vouch for a letter that may not be queued).
        let mut maybe_sent: Vec<usize> = Vec::new();
        for (i, letter, result) in self.send_letters(ready, until).await {
            match result {
                Ok(()) => sent.push((i, letter)),
                Err(e) => {
                    let position = &w.batch.records[i].position;
                    tracing::warn!(error = %e, position = %position, "dead-letter send failed");
                    if e.ambiguous {
                        maybe_sent.push(i);
                    } else {
                        failed.push((i, FailureCause::DeadLetterQueue));
                    }
                }
            }
        }

        // 3. A record not dead-lettered gives its claim back, so a redelivery can claim it at
        // once; an archive named by a claim still held for an unsent letter is not written.
        let releases: Vec<(usize, bool)> = stream::iter(&failed)
            .map(|&(i, _)| async move {
                let released = match w.slots[i].claim_key.as_deref() {
                    Some(key) => self.release_confirmed(key, owner, cleanup).await,
                    None => true,
                };
                (i, released && !w.in_doubt(i))
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        // An archive named by a claim whose write is in an unknown state (it may have landed
        // and be released later, or never) is held back too: written, it would make that
        // record look dead-lettered on every redelivery while its letter was never sent.
        let held_back: HashSet<&str> = releases
            .iter()
            .filter(|(_, released)| !released)
            .filter_map(|&(i, _)| w.slots[i].object_key.as_deref())
            .chain(w.tainted.iter().map(String::as_str))
            .chain(
                maybe_sent
                    .iter()
                    .filter_map(|&i| w.slots[i].object_key.as_deref()),
            )
            .collect();

        // 4. Archive what was sent, one object per unit. Sent, the records are dead-lettered
        // whatever happens to the archive.
        sent.sort_by_key(|(i, _)| *i);
        let mut archives: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
        for (i, letter) in &sent {
            let Some(key) = w.slots[*i].object_key.as_deref() else {
                continue;
            };
            if held_back.contains(key) {
                continue;
            }
            let body = archives.entry(key).or_default();
            body.extend_from_slice(letter.body.as_bytes());
            body.push(b'\n');
        }
        stream::iter(archives)
            .for_each_concurrent(concurrency, |(key, body)| async move {
                let body = bytes::Bytes::from(body);
                let archived = in_budget(self.settings.in_budget_retry, archive_until, || {
                    self.objects
                        .put_new(key, body.clone(), "application/x-ndjson")
                })
                .await;
                if let Err(e) = archived {
                    tracing::warn!(error = %e, "dead-letter archive write failed");
                }
            })
            .await;

        let sent: Vec<usize> = sent.into_iter().map(|(i, _)| i).collect();
        for i in sent {
            let kind = work.slots[i].poison.as_ref().map(|p| p.kind);
            work.finish(
                i,
                match kind {
                    Some(kind) => RecordOutcome::DeadLettered(kind),
                    None => RecordOutcome::Failed(FailureCause::DeadLetterQueue),
                },
            );
        }
        for (i, cause) in failed {
            work.fail(i, cause);
        }
        for i in maybe_sent {
            work.fail(i, FailureCause::DeadLetterQueue);
        }
    }

    /// The letter of one poison record. A record whose letter would not fit the queue's limit
    /// is stored as an object first, and the letter names its key.
    pub(super) async fn letter_of(
        &self,
        record: &SourceRecord,
        poison: &Poison,
        digest: &str,
        until: Until<'_>,
    ) -> Result<Letter, PortError> {
        let inline = dead_letter::body(record, poison, digest, DeadLetterData::Inline);
        let body = if inline.len() <= self.dead_letters.max_body_bytes() {
            inline
        } else {
            let key = dead_letter_key(
                &self.settings.dead_letter_prefix,
                &record.unit.label,
                &record.position,
                digest,
            );
            let bytes = record.data.clone().unwrap_or_default();
            in_budget(self.settings.in_budget_retry, until, || {
                self.objects
                    .put_new(&key, bytes.clone(), "application/octet-stream")
            })
            .await?;
            dead_letter::body(record, poison, digest, DeadLetterData::InObject(&key))
        };
        Ok(Letter {
            body,
            dedup_id: digest.to_owned(),
        })
    }

    /// Sends `letters` packed into batches within the queue's limits, the batches side by
    /// side. A letter the queue refused retryably, or a batch whose request failed retryably,
    /// is sent again per the in-budget policy until `until`; each letter ends with its last
    /// result.
    pub(super) async fn send_letters(
        &self,
        letters: Vec<(usize, Letter)>,
        until: Until<'_>,
    ) -> Vec<(usize, Letter, LetterResult)> {
        let batches = pack_letters(
            letters,
            self.dead_letters.max_batch_len(),
            self.dead_letters.max_body_bytes(),
        );
        let policy = self.settings.in_budget_retry;
        stream::iter(batches)
            .map(|pending| async move {
                // Each letter with the number of its sends whose outcome is unknown.
                let mut pending: Vec<(usize, Letter, u32)> =
                    pending.into_iter().map(|(i, l)| (i, l, 0)).collect();
                let mut done = Vec::with_capacity(pending.len());
                let mut round = 1;
                while !pending.is_empty() {
                    let batch: Vec<Letter> = pending.iter().map(|(_, l, _)| l.clone()).collect();
                    let answers = match bounded(until, self.dead_letters.send_batch(&batch)).await {
                        Ok(answers) if answers.len() == batch.len() => answers,
                        Ok(_) => vec![
                            Err(PortError::ambiguous(
                                "dead-letter batch: answers do not match the letters"
                            ));
                            batch.len()
                        ],
                        Err(e) => vec![Err(e); batch.len()],
                    };
                    let pause = pause_before_retry(policy, round, until);
                    let mut again = Vec::new();
                    for ((i, letter, unknown), answer) in pending.into_iter().zip(answers) {
                        let unknown =
                            unknown + u32::from(answer.as_ref().is_err_and(|e| e.ambiguous));
                        match answer {
                            // A send of unknown outcome (cut off, answered 5xx) may have queued
                            // the letter: it is sent again at most `MAX_UNKNOWN_SENDS` times in
                            // all, so a slow queue costs a copy, not one per round and attempt.
                            Err(e)
                                if e.is_retryable()
                                    && pause.is_some()
                                    && unknown < MAX_UNKNOWN_SENDS =>
                            {
                                again.push((i, letter, unknown))
                            }
                            answer => done.push((i, letter, answer)),
                        }
                    }
                    let (false, Some(pause)) = (again.is_empty(), pause) else {
                        break;
                    };
                    tokio::time::sleep(pause).await;
                    round += 1;
                    pending = again;
                }
                done
            })
            .buffer_unordered(self.settings.claim_concurrency.max(1))
            .flat_map(stream::iter)
            .collect()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letters(sizes: &[usize]) -> Vec<(usize, Letter)> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let letter = Letter {
                    body: "x".repeat(len),
                    dedup_id: i.to_string(),
                };
                (i, letter)
            })
            .collect()
    }

    fn shape(batches: &[Vec<(usize, Letter)>]) -> Vec<Vec<usize>> {
        batches
            .iter()
            .map(|b| b.iter().map(|(i, _)| *i).collect())
            .collect()
    }

    #[test]
    fn letters_pack_in_order_within_the_count_and_the_bytes() {
        // Given 12 small letters and a limit of 5 per batch: 5 + 5 + 2, in order
        assert_eq!(
            shape(&pack_letters(letters(&[1; 12]), 5, 100)),
            vec![vec![0, 1, 2, 3, 4], vec![5, 6, 7, 8, 9], vec![10, 11]]
        );
        // Given letters of 60, 30, 20, 100 and 1 bytes and 100 bytes a batch
        assert_eq!(
            shape(&pack_letters(letters(&[60, 30, 20, 100, 1]), 10, 100)),
            vec![vec![0, 1], vec![2], vec![3], vec![4]]
        );
        // A letter over the byte limit travels alone
        assert_eq!(
            shape(&pack_letters(letters(&[1, 150, 1]), 10, 100)),
            vec![vec![0], vec![1], vec![2]]
        );
        assert!(pack_letters(Vec::new(), 10, 100).is_empty());
    }
}
