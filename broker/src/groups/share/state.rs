//! One share-partition: which records of one topic partition a share group
//! has handed out, to whom, how often, and which are done (KIP-932's
//! share-partition state).
//!
//! Pure and deterministic. The coordinator writes every change as a
//! [`ShareOp`] to the group's `__consumer_offsets` partition before it
//! applies it here, and a new coordinator rebuilds the same state by
//! applying the stored ops in log order. Lock expiry and delayed records
//! coming due depend only on the clock, so they are not written: a rebuilt
//! state reaches them by itself.
//!
//! Invariants:
//! - every offset in `[start, end)` is in exactly one of `records` and
//!   `delayed`; an offset below `start` that is in neither is done;
//! - a record's delivery count never decreases; it grows by one on every
//!   acquisition;
//! - a record is acquired by at most one member at a time, until its lock's
//!   deadline;
//! - `end - start` (the in-flight window) only grows by acquisitions, which
//!   stop at the window limit, so memory per partition is bounded; a
//!   delayed record leaves the window (it costs one index entry) until due.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a member says of a record it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckKind {
    /// Processed: never deliver again.
    Accept,
    /// Not processed: deliver again now, to anyone.
    Release,
    /// Cannot be processed: never deliver again; copy to the dead-letter
    /// topic.
    Reject,
    /// Still working on it: extend the lock.
    Renew,
}

/// A stored outcome of records `first..=last`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckEntry {
    /// First offset.
    pub first: u64,
    /// Last offset (inclusive).
    pub last: u64,
    /// What became of them.
    pub outcome: Outcome,
}

/// What a stored acknowledgement did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Accepted: done.
    Accepted,
    /// Rejected by a member, or out of deliveries: done, copied to the
    /// dead-letter topic.
    Archived,
    /// Released: available again.
    Released,
    /// Lock extended to `deadline_ms`.
    Renewed {
        /// New lock deadline, ms since the Unix epoch.
        deadline_ms: i64,
    },
}

/// One stored change of a share-partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ShareOp {
    /// The share-partition starts (or restarts) at `start`: everything
    /// before is done, nothing after has been read.
    Init {
        /// Share-partition start offset.
        start: u64,
    },
    /// `member` acquired `ranges` until `deadline_ms`; the records read up
    /// to `end` that are not due yet went to the delayed index.
    Acquire {
        /// Member id.
        member: String,
        /// Lock deadline, ms since the Unix epoch.
        deadline_ms: i64,
        /// Acquired offsets, as inclusive ranges.
        ranges: Vec<(u64, u64)>,
        /// Records not deliverable before a time: (offset, deliver at ms).
        delayed: Vec<(u64, i64)>,
        /// Every record below this offset has been read.
        end: u64,
    },
    /// Outcomes of records `member` held (or, for `Archived` out of
    /// deliveries, records nobody holds: `member` is empty).
    Ack {
        /// Member id.
        member: String,
        /// Outcomes.
        entries: Vec<AckEntry>,
    },
}

/// Where a record stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordState {
    /// Anyone may acquire it.
    Available,
    /// Locked to `member` until `deadline_ms` (after that, available).
    Acquired {
        /// Member id.
        member: String,
        /// Lock deadline, ms since the Unix epoch.
        deadline_ms: i64,
    },
    /// Accepted or archived; kept only until the start offset passes it.
    Done,
}

/// One record of the in-flight window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// Where it stands.
    pub state: RecordState,
    /// How often it was acquired.
    pub delivery_count: u32,
}

impl InFlight {
    /// Whether anyone may acquire it at `now_ms` (an expired lock counts).
    pub fn available(&self, now_ms: i64) -> bool {
        match &self.state {
            RecordState::Available => true,
            RecordState::Acquired { deadline_ms, .. } => *deadline_ms <= now_ms,
            RecordState::Done => false,
        }
    }

    /// Whether `member` holds it at `now_ms`.
    pub fn held_by(&self, member: &str, now_ms: i64) -> bool {
        matches!(&self.state, RecordState::Acquired { member: m, deadline_ms } if m == member && *deadline_ms > now_ms)
    }
}

/// Counts for `describe` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShareCounts {
    /// Records read and not done (available, acquired, or waiting for the
    /// dead-letter copy).
    pub in_flight: u64,
    /// Locked to a member now.
    pub acquired: u64,
    /// Deliverable now.
    pub available: u64,
    /// Waiting for their delivery time.
    pub delayed: u64,
    /// Archived since the share-partition started: rejected or out of
    /// deliveries.
    pub archived: u64,
    /// Acquisitions after the first (redeliveries) since it started.
    pub redelivered: u64,
}

/// The state of one share-partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharePartition {
    /// Share-partition start offset: below it, everything not in
    /// `records` or `delayed` is done.
    pub start: u64,
    /// Every record below it has been read.
    pub end: u64,
    /// The in-flight window (and delayed records that came due).
    pub records: BTreeMap<u64, InFlight>,
    /// Records not deliverable before a time: offset → deliver at (ms).
    pub delayed: BTreeMap<u64, i64>,
    /// Archived records, counted since the share-partition started.
    pub archived: u64,
    /// Redeliveries, counted since the share-partition started.
    pub redelivered: u64,
}

/// `offsets` (ascending) as inclusive ranges.
pub fn ranges(offsets: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &o in offsets {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == o => *last = o,
            _ => out.push((o, o)),
        }
    }
    out
}

impl SharePartition {
    /// A share-partition starting at `start`.
    pub fn starting_at(start: u64) -> Self {
        SharePartition {
            start,
            end: start,
            ..Default::default()
        }
    }

    /// Applies a stored change (in log order).
    pub fn apply(&mut self, op: &ShareOp) {
        match op {
            ShareOp::Init { start } => *self = SharePartition::starting_at(*start),
            ShareOp::Acquire {
                member,
                deadline_ms,
                ranges,
                delayed,
                end,
            } => {
                for &(o, at) in delayed {
                    if o >= self.end {
                        self.delayed.insert(o, at);
                    }
                }
                for &(first, last) in ranges {
                    for o in first..=last {
                        self.delayed.remove(&o);
                        let r = self.records.entry(o).or_insert(InFlight {
                            state: RecordState::Available,
                            delivery_count: 0,
                        });
                        if r.delivery_count > 0 {
                            self.redelivered += 1;
                        }
                        r.delivery_count += 1;
                        r.state = RecordState::Acquired {
                            member: member.clone(),
                            deadline_ms: *deadline_ms,
                        };
                    }
                }
                // Read but neither acquired nor delayed (the coordinator
                // never stores that, but the invariant must not rest on it).
                for o in self.end..*end {
                    if !self.delayed.contains_key(&o) {
                        self.records.entry(o).or_insert(InFlight {
                            state: RecordState::Available,
                            delivery_count: 0,
                        });
                    }
                }
                self.end = self.end.max(*end);
            }
            ShareOp::Ack { entries, .. } => {
                for e in entries {
                    for o in e.first..=e.last {
                        let Some(r) = self.records.get_mut(&o) else {
                            continue;
                        };
                        match e.outcome {
                            Outcome::Accepted => r.state = RecordState::Done,
                            Outcome::Archived => {
                                r.state = RecordState::Done;
                                self.archived += 1;
                            }
                            Outcome::Released => r.state = RecordState::Available,
                            Outcome::Renewed { deadline_ms: d } => {
                                if let RecordState::Acquired { deadline_ms, .. } = &mut r.state {
                                    *deadline_ms = d;
                                }
                            }
                        }
                        if r.state == RecordState::Done && o < self.start {
                            self.records.remove(&o);
                        }
                    }
                }
            }
        }
        self.advance();
    }

    /// Moves the start offset past done and delayed records.
    fn advance(&mut self) {
        while self.start < self.end {
            if self.delayed.contains_key(&self.start) {
                self.start += 1;
                continue;
            }
            match self.records.get(&self.start) {
                Some(r) if r.state == RecordState::Done => {
                    self.records.remove(&self.start);
                    self.start += 1;
                }
                _ => break,
            }
        }
    }

    /// Moves delayed records whose time has come into the window as
    /// available (clock-driven, so not stored: a rebuilt state does the
    /// same).
    pub fn release_due(&mut self, now_ms: i64) {
        let due: Vec<u64> = self
            .delayed
            .iter()
            .filter(|(_, at)| **at <= now_ms)
            .map(|(o, _)| *o)
            .collect();
        for o in due {
            self.delayed.remove(&o);
            self.records.insert(
                o,
                InFlight {
                    state: RecordState::Available,
                    delivery_count: 0,
                },
            );
        }
    }

    /// Up to `max` offsets anyone may acquire at `now_ms` with fewer than
    /// `limit` deliveries, lowest first.
    pub fn acquirable(&self, now_ms: i64, limit: u32, max: usize) -> Vec<u64> {
        self.records
            .iter()
            .filter(|(_, r)| r.available(now_ms) && r.delivery_count < limit)
            .map(|(o, _)| *o)
            .take(max)
            .collect()
    }

    /// Records no member holds that are out of deliveries (to archive).
    pub fn exhausted(&self, now_ms: i64, limit: u32) -> Vec<u64> {
        self.records
            .iter()
            .filter(|(_, r)| r.available(now_ms) && r.delivery_count >= limit)
            .map(|(o, _)| *o)
            .collect()
    }

    /// How many new records the window still has room for.
    pub fn room(&self, max_window: u64) -> u64 {
        max_window.saturating_sub(self.end.saturating_sub(self.start))
    }

    /// Whether the record at `offset` is done (accepted or archived): done
    /// in the window, or below the start and neither in the window nor
    /// delayed.
    pub fn is_done(&self, offset: u64) -> bool {
        match self.records.get(&offset) {
            Some(r) => r.state == RecordState::Done,
            None => offset < self.start && !self.delayed.contains_key(&offset),
        }
    }

    /// Offsets `member` holds at `now_ms`.
    pub fn held_by(&self, member: &str, now_ms: i64) -> Vec<u64> {
        self.records
            .iter()
            .filter(|(_, r)| r.held_by(member, now_ms))
            .map(|(o, _)| *o)
            .collect()
    }

    /// Counts at `now_ms`.
    pub fn counts(&self, now_ms: i64) -> ShareCounts {
        let mut c = ShareCounts {
            delayed: self.delayed.len() as u64,
            archived: self.archived,
            redelivered: self.redelivered,
            ..Default::default()
        };
        for r in self.records.values() {
            match &r.state {
                RecordState::Done => continue,
                RecordState::Acquired { deadline_ms, .. } if *deadline_ms > now_ms => c.acquired += 1,
                _ => c.available += 1,
            }
            c.in_flight += 1;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquire(member: &str, deadline_ms: i64, ranges: &[(u64, u64)], delayed: &[(u64, i64)], end: u64) -> ShareOp {
        ShareOp::Acquire {
            member: member.into(),
            deadline_ms,
            ranges: ranges.to_vec(),
            delayed: delayed.to_vec(),
            end,
        }
    }

    fn ack(member: &str, first: u64, last: u64, outcome: Outcome) -> ShareOp {
        ShareOp::Ack {
            member: member.into(),
            entries: vec![AckEntry { first, last, outcome }],
        }
    }

    #[test]
    fn accepted_records_move_the_start_and_leave_the_window() {
        let mut s = SharePartition::default();
        s.apply(&ShareOp::Init { start: 10 });
        s.apply(&acquire("a", 1_000, &[(10, 14)], &[], 15));
        assert_eq!(s.held_by("a", 500), vec![10, 11, 12, 13, 14]);
        s.apply(&ack("a", 11, 12, Outcome::Accepted));
        assert_eq!(s.start, 10, "10 is still held");
        s.apply(&ack("a", 10, 10, Outcome::Accepted));
        assert_eq!(s.start, 13);
        assert_eq!(s.records.keys().copied().collect::<Vec<_>>(), vec![13, 14]);
    }

    #[test]
    fn an_expired_lock_makes_a_record_available_again_and_counts_grow() {
        let mut s = SharePartition::starting_at(0);
        s.apply(&acquire("a", 1_000, &[(0, 1)], &[], 2));
        assert!(s.acquirable(999, 5, 10).is_empty());
        assert_eq!(s.acquirable(1_000, 5, 10), vec![0, 1]);
        s.apply(&acquire("b", 2_000, &[(0, 0)], &[], 2));
        assert_eq!(s.records[&0].delivery_count, 2);
        assert!(s.records[&0].held_by("b", 1_500));
        assert!(!s.records[&0].held_by("a", 500), "a lost it");
        assert_eq!(s.redelivered, 1);
    }

    #[test]
    fn out_of_deliveries_records_are_not_acquirable_but_exhausted() {
        let mut s = SharePartition::starting_at(0);
        for i in 0..3 {
            s.apply(&acquire("a", i * 10 + 5, &[(0, 0)], &[], 1));
        }
        assert_eq!(s.records[&0].delivery_count, 3);
        assert!(s.acquirable(100, 3, 10).is_empty());
        assert_eq!(s.exhausted(100, 3), vec![0]);
        assert!(s.exhausted(24, 3).is_empty(), "still locked");
        s.apply(&ack("", 0, 0, Outcome::Archived));
        assert_eq!((s.start, s.archived), (1, 1));
    }

    #[test]
    fn delayed_records_leave_the_window_and_come_back_when_due() {
        let mut s = SharePartition::starting_at(0);
        s.apply(&acquire("a", 1_000, &[(0, 0), (2, 2)], &[(1, 5_000)], 3));
        s.apply(&ack("a", 0, 0, Outcome::Accepted));
        s.apply(&ack("a", 2, 2, Outcome::Accepted));
        assert_eq!(s.start, 3, "the delayed record does not hold the start");
        assert!(s.records.is_empty());
        s.release_due(4_999);
        assert!(s.acquirable(4_999, 5, 10).is_empty());
        s.release_due(5_000);
        assert_eq!(s.acquirable(5_000, 5, 10), vec![1]);
        s.apply(&acquire("b", 9_000, &[(1, 1)], &[], 3));
        s.apply(&ack("b", 1, 1, Outcome::Accepted));
        assert!(s.records.is_empty() && s.delayed.is_empty());
    }

    #[test]
    fn replay_of_an_acquisition_of_a_due_record_takes_it_from_the_index() {
        // The coordinator that acquired it had moved it out of the index;
        // a rebuilt state still has it there.
        let mut s = SharePartition::starting_at(0);
        s.apply(&acquire("a", 1_000, &[], &[(0, 50)], 1));
        s.apply(&acquire("a", 1_000, &[(0, 0)], &[], 1));
        assert!(s.delayed.is_empty());
        assert_eq!(s.records[&0].delivery_count, 1);
    }

    #[test]
    fn release_and_renew() {
        let mut s = SharePartition::starting_at(0);
        s.apply(&acquire("a", 1_000, &[(0, 1)], &[], 2));
        s.apply(&ack("a", 0, 0, Outcome::Released));
        s.apply(&ack("a", 1, 1, Outcome::Renewed { deadline_ms: 9_000 }));
        assert_eq!(s.acquirable(2_000, 5, 10), vec![0]);
        assert!(s.records[&1].held_by("a", 8_999));
        let c = s.counts(2_000);
        assert_eq!((c.in_flight, c.acquired, c.available), (2, 1, 1));
    }

    #[test]
    fn done_records_are_those_accepted_or_archived_or_below_the_start() {
        let mut s = SharePartition::starting_at(10);
        s.apply(&acquire("a", 1_000, &[(10, 12)], &[(13, 9_000)], 14));
        s.apply(&ack("a", 11, 11, Outcome::Accepted));
        assert!(s.is_done(5), "below the start");
        assert!(s.is_done(11), "accepted, still in the window");
        assert!(!s.is_done(10) && !s.is_done(12), "held");
        assert!(!s.is_done(13), "delayed");
        assert!(!s.is_done(14), "never read");
        s.apply(&ack("a", 10, 10, Outcome::Accepted));
        assert_eq!(s.start, 12);
        assert!(s.is_done(10) && s.is_done(11), "below the start now");
    }

    #[test]
    fn the_window_limits_reading() {
        let mut s = SharePartition::starting_at(0);
        s.apply(&acquire("a", 1_000, &[(0, 99)], &[], 100));
        assert_eq!(s.room(150), 50);
        assert_eq!(s.room(80), 0);
    }

    #[test]
    fn ops_round_trip_as_json() {
        for op in [
            ShareOp::Init { start: 3 },
            acquire("m", 7, &[(1, 2)], &[(5, 9)], 6),
            ack("m", 1, 2, Outcome::Renewed { deadline_ms: 8 }),
        ] {
            let back: ShareOp = serde_json::from_slice(&serde_json::to_vec(&op).unwrap()).unwrap();
            assert_eq!(back, op);
        }
        assert_eq!(ranges(&[1, 2, 3, 5, 7, 8]), vec![(1, 3), (5, 5), (7, 8)]);
    }
}
