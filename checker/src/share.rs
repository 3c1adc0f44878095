//! Share-group checks: what a queue on the log promises its workers.
//!
//! - a record whose acceptance the coordinator confirmed is never handed
//!   out again (`ShareRedelivered`);
//! - each delivery of a record has a higher delivery count than the one
//!   before (`ShareCountRegress`): the coordinator stores each acquisition
//!   before answering, so no failover forgets one;
//! - once the group was drained (a `ShareEnd` per partition), every record
//!   of the final log was accepted (confirmed or not) or archived, and the
//!   group's start offset reached the end of the log (`ShareLost`).

use std::collections::{BTreeMap, BTreeSet};

use crate::history::Event;
use crate::report::{Kind, Report};

/// Runs the share-group checks (nothing to check without share events).
pub(crate) fn check_shares(r: &mut Report, events: &[Event]) {
    // (partition, offset) -> position of the first confirmed acceptance.
    let mut confirmed: BTreeMap<(u32, u64), usize> = BTreeMap::new();
    let mut accepted: BTreeSet<(u32, u64)> = BTreeSet::new();
    let mut archived: BTreeSet<(u32, u64)> = BTreeSet::new();
    let mut ends: BTreeMap<u32, u64> = BTreeMap::new();
    let mut log: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for (seq, e) in events.iter().enumerate() {
        match e {
            Event::ShareAcked {
                partition,
                offset,
                confirmed: c,
                ..
            } => {
                accepted.insert((*partition, *offset));
                if *c {
                    confirmed.entry((*partition, *offset)).or_insert(seq);
                }
            }
            Event::ShareArchived { partition, offset } => {
                archived.insert((*partition, *offset));
            }
            Event::ShareEnd {
                partition,
                start_offset,
            } => {
                ends.insert(*partition, *start_offset);
            }
            Event::Read { partition, offset, .. } => {
                log.entry(*partition).or_default().insert(*offset);
            }
            _ => {}
        }
    }
    let mut last_count: BTreeMap<(u32, u64), u32> = BTreeMap::new();
    for (seq, e) in events.iter().enumerate() {
        let Event::ShareAcquired {
            consumer,
            partition,
            offset,
            delivery_count,
            ..
        } = e
        else {
            continue;
        };
        let at = (*partition, *offset);
        r.share_deliveries += 1;
        if *delivery_count > 1 {
            r.share_redeliveries += 1;
        }
        if let Some(acked) = confirmed.get(&at)
            && *acked < seq
        {
            r.flag(Kind::ShareRedelivered, || {
                format!("{partition}@{offset} handed to member {consumer} (delivery {delivery_count}) after its acceptance was confirmed")
            });
        }
        if let Some(before) = last_count.insert(at, *delivery_count)
            && *delivery_count <= before
        {
            r.flag(Kind::ShareCountRegress, || {
                format!("{partition}@{offset} delivered with count {delivery_count} after count {before}")
            });
        }
    }
    r.share_archived = archived.len();
    for (partition, start) in &ends {
        let offsets = log.get(partition).cloned().unwrap_or_default();
        if let Some(last) = offsets.last()
            && *start <= *last
        {
            r.flag(Kind::ShareLost, || {
                format!(
                    "partition {partition}: the share group stopped at {start}, the log ends at {}",
                    last + 1
                )
            });
        }
        for o in offsets.iter().filter(|o| **o < *start) {
            let at = (*partition, *o);
            if !accepted.contains(&at) && !archived.contains(&at) {
                r.flag(Kind::ShareLost, || {
                    format!("{partition}@{o} is behind the share group's start but was never accepted nor archived")
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check;

    fn read(partition: u32, offset: u64) -> Event {
        Event::Read {
            partition,
            offset,
            id: format!("r{offset}"),
            key: String::new(),
        }
    }

    fn acquired(consumer: u64, offset: u64, delivery_count: u32) -> Event {
        Event::ShareAcquired {
            consumer,
            time_ms: 0,
            partition: 0,
            offset,
            delivery_count,
        }
    }

    fn acked(consumer: u64, offset: u64, confirmed: bool) -> Event {
        Event::ShareAcked {
            consumer,
            time_ms: 0,
            partition: 0,
            offset,
            confirmed,
        }
    }

    /// Two records: one accepted at once, one redelivered after a lock
    /// ran out, then accepted; the group drained to the end.
    fn clean() -> Vec<Event> {
        vec![
            acquired(1, 0, 1),
            acquired(1, 1, 1),
            acked(1, 0, true),
            acquired(2, 1, 2),
            acked(2, 1, true),
            read(0, 0),
            read(0, 1),
            Event::ShareEnd {
                partition: 0,
                start_offset: 2,
            },
        ]
    }

    fn only(h: &[Event], kind: Kind) {
        let r = check(h);
        for k in Kind::ALL {
            assert_eq!(r.count(k) > 0, k == kind, "{k:?}: {r}");
        }
    }

    #[test]
    fn a_clean_share_history_passes() {
        let r = check(&clean());
        assert!(r.is_valid(), "{r}");
        assert_eq!((r.share_deliveries, r.share_redeliveries), (3, 1));
    }

    #[test]
    fn a_delivery_after_a_confirmed_acceptance_is_flagged() {
        let mut h = clean();
        h.push(acquired(3, 0, 2));
        only(&h, Kind::ShareRedelivered);
        // After an acceptance of unknown outcome it is fine.
        let mut h = clean();
        h.insert(2, acked(1, 1, false));
        assert!(check(&h).is_valid());
    }

    #[test]
    fn a_delivery_count_that_does_not_grow_is_flagged() {
        let mut h = clean();
        h.insert(3, acquired(3, 1, 1));
        only(&h, Kind::ShareCountRegress);
    }

    #[test]
    fn a_record_never_accepted_nor_archived_is_lost() {
        let mut h: Vec<Event> = clean()
            .into_iter()
            .filter(|e| !matches!(e, Event::ShareAcked { offset: 1, .. }))
            .collect();
        only(&h, Kind::ShareLost);
        h.push(Event::ShareArchived {
            partition: 0,
            offset: 1,
        });
        assert!(check(&h).is_valid());
        // A group that stopped short of the log's end.
        let mut h = clean();
        h.push(read(0, 2));
        only(&h, Kind::ShareLost);
    }
}
