//! Naming, before any claim is written, the object each record's claim will name: the
//! Parquet object of an event (per route, unit and hour) or, for a route without a lake, its
//! commit marker (per route and unit), and the dead-letter archive of a poison record (per
//! unit).

use super::*;

/// The lowest and highest position among `members` (indices into `batch`): the range an
/// object's key names. `None` for no members.
pub(super) fn position_span<'b>(
    batch: &'b Batch,
    members: &[usize],
) -> Option<(&'b Position, &'b Position)> {
    let positions = members.iter().map(|&i| &batch.records[i].position);
    Some((positions.clone().min()?, positions.max()?))
}

impl<D, R, O, Q> Pipeline<D, R, O, Q>
where
    D: DedupStore,
    R: RowSink,
    O: ObjectSink,
    Q: DeadLetters,
{
    /// Names the object each winner will live in: one object per route, unit and UTC hour
    /// of the event time (or, for a route staging per batch for its Iceberg table, of this
    /// load), under the route's lake prefix, named by the first and last planned positions and
    /// this attempt.
    pub(super) fn plan_objects(&self, work: &mut Work<'_>, winners: &[usize]) {
        let routes = &self.settings.routes;
        let loaded_hour = hour_partition(work.now_ms() * 1000);
        // A route without a lake writes one commit marker per unit: no hour to split by.
        let mut groups: BTreeMap<(usize, &SourceUnit, Option<String>), Vec<usize>> =
            BTreeMap::new();
        for &i in winners {
            if let Some(e) = &work.slots[i].event {
                let unit = &work.batch.records[i].unit;
                let route = routes.get(e.route);
                let per_batch = route.iceberg.as_ref().is_some_and(|t| t.per_batch);
                let hour = route.lake.then(|| {
                    if per_batch {
                        loaded_hour.clone()
                    } else {
                        hour_partition(e.event_time_us)
                    }
                });
                groups.entry((e.route, unit, hour)).or_default().push(i);
            }
        }
        let mut keys: Vec<(usize, String)> = Vec::with_capacity(winners.len());
        for ((route, unit, hour), members) in groups {
            let Some((first, last)) = position_span(work.batch, &members) else {
                continue;
            };
            let prefix = &routes.get(route).lake_prefix;
            let attempt = &work.inv.attempt_id;
            let key = match hour {
                Some(hour) => data_object_key(prefix, &hour, &unit.label, first, last, attempt),
                None => marker_object_key(prefix, &unit.label, first, last, attempt),
            };
            keys.extend(members.into_iter().map(|i| (i, key.clone())));
        }
        for (i, key) in keys {
            work.slots[i].object_key = Some(key);
        }
        for &i in winners {
            let slot = &mut work.slots[i];
            if let Some(e) = &slot.event {
                slot.claim_key = Some(e.claim_key.clone());
            }
        }
    }

    /// A poison record is claimed like an event, and the dead-letter messages sent are
    /// archived as one object per unit, so a redelivered batch does not queue the same
    /// poison record again. Every claim names its unit's archive.
    pub(super) fn plan_dead_letters(&self, work: &mut Work<'_>, poisoned: &[usize]) {
        let mut by_unit: BTreeMap<&SourceUnit, Vec<usize>> = BTreeMap::new();
        for &i in poisoned {
            by_unit
                .entry(&work.batch.records[i].unit)
                .or_default()
                .push(i);
        }
        let mut keys: Vec<(usize, String)> = Vec::with_capacity(poisoned.len());
        for (unit, members) in by_unit {
            let Some((first, last)) = position_span(work.batch, &members) else {
                continue;
            };
            let key = dead_letter_archive_key(
                &self.settings.dead_letter_prefix,
                &unit.label,
                first,
                last,
                &work.inv.attempt_id,
            );
            keys.extend(members.into_iter().map(|i| (i, key.clone())));
        }
        for (i, key) in keys {
            let r = &work.batch.records[i];
            let digest = poison_digest(r);
            let slot = &mut work.slots[i];
            slot.claim_key = Some(poison_claim_key(r, &digest));
            slot.object_key = Some(key);
            slot.digest = Some(digest);
        }
    }
}
