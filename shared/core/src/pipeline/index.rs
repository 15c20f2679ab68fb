//! Step 4b: the search documents of the rows the database took, written after the database
//! and before the objects (the commit markers), so an object existing still means "in every
//! sink, or refused by one and dead-lettered".
//!
//! Every write is versioned (`newest_by`) or create-only (`keep-first`), so a request sent
//! again after a lost answer, a timeout or a crash changes nothing: the retry policy is
//! simply "send what is not known written again, within the budget". A document the index
//! refuses for a reason of its own is a refused row (dead-lettered naming the index); one it
//! refuses for now (429, 5xx, a blocked index) is sent again after a back-off; one still not
//! written when the rounds or the time run out fails its object's records, to be redelivered.

use super::*;
use crate::search::bulk::{encode, Doc, ItemOutcome, DEFAULT_MAX_REQUEST_BYTES};

/// `_bulk` requests in flight at once: a 10,000-record batch is two to a few requests.
const INDEX_REQUESTS_IN_FLIGHT: usize = 4;

/// One request's documents (record indices) and the index's answer.
type Answered = (Vec<usize>, Result<Vec<ItemOutcome>, PortError>);

/// What became of the documents of one batch.
#[derive(Default)]
pub(super) struct IndexResult {
    /// Refused by the index for a reason of the document's own, with the reason.
    pub refused: Vec<(usize, String)>,
    /// Not known written when the rounds or the time ran out.
    pub failed: Vec<usize>,
}

impl<D, R, O, Q> Pipeline<D, R, O, Q>
where
    D: DedupStore,
    R: RowSink,
    O: ObjectSink,
    Q: DeadLetters,
{
    /// Writes the documents of `members` (records whose route names an index) by `until`.
    pub(super) async fn write_documents(
        &self,
        work: &Work<'_>,
        members: &[usize],
        until: Until<'_>,
    ) -> IndexResult {
        let mut result = IndexResult::default();
        let Some(index) = &self.search else {
            return result;
        };
        let routes = &self.settings.routes;
        let doc = |i: usize| {
            let event = work.slots[i].event.as_ref()?;
            let plan = routes.get(event.route).search.as_ref()?;
            Some((plan, event.values.as_slice()))
        };
        // A document that would fail its whole request (an id too long, a version out of
        // range) is refused alone.
        let mut pending: Vec<usize> = Vec::with_capacity(members.len());
        for &i in members {
            if let Some((plan, values)) = doc(i) {
                match plan.check(values) {
                    Ok(()) => pending.push(i),
                    Err(why) => result.refused.push((i, why)),
                }
            }
        }
        let mut round = 1;
        while !pending.is_empty() {
            let docs: Vec<Doc<'_>> = pending
                .iter()
                .filter_map(|&i| doc(i).map(|(plan, values)| Doc { plan, values }))
                .collect();
            let requests = encode(&docs, DEFAULT_MAX_REQUEST_BYTES);
            drop(docs);
            let answers: Vec<Answered> = stream::iter(requests)
                .map(|r| {
                    let members: Vec<usize> = r.members.iter().map(|&m| pending[m]).collect();
                    let n = members.len();
                    async move {
                        let answer =
                            bounded(until, index.bulk_dyn(bytes::Bytes::from(r.body), n)).await;
                        (members, answer)
                    }
                })
                .buffer_unordered(INDEX_REQUESTS_IN_FLIGHT)
                .collect()
                .await;
            let mut again = Vec::new();
            let mut last_error = None;
            for (members, answer) in answers {
                match answer {
                    Ok(outcomes) => {
                        for (i, outcome) in members.into_iter().zip(outcomes) {
                            match outcome {
                                ItemOutcome::Written | ItemOutcome::AlreadyThere => {}
                                ItemOutcome::Refused(why) => result.refused.push((i, why)),
                                ItemOutcome::Retry(why) => {
                                    last_error = Some(why);
                                    again.push(i);
                                }
                            }
                        }
                    }
                    Err(e) if e.is_retryable() => {
                        last_error = Some(e.message);
                        again.extend(members);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, documents = members.len(), "search index request refused");
                        result.failed.extend(members);
                    }
                }
            }
            pending = again;
            if pending.is_empty() {
                break;
            }
            match pause_before_retry(self.settings.in_budget_retry, round, until) {
                Some(pause) => tokio::time::sleep(pause).await,
                None => {
                    tracing::warn!(
                        error = last_error.as_deref().unwrap_or(""),
                        documents = pending.len(),
                        "search index documents not written in time"
                    );
                    result.failed.append(&mut pending);
                }
            }
            round += 1;
        }
        result
    }
}
