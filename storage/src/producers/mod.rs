//! Idempotent producers' state in one partition: per producer id, its epoch
//! and the sequence ranges and offsets of its last five batches.
//!
//! Invariant: the state is a deterministic function of the log. It changes
//! only by folding stored batches in log order ([`ProducerStates::apply`]),
//! never by validation, so every replica that holds the same log has the
//! same state — and a new leader, or a broker restarted from disk, judges a
//! retried batch exactly as the old leader would have. Expiry is part of the
//! function too: a producer whose last batch was appended more than
//! `expiration_ms` before the batch being judged counts as unknown (its
//! entry may still be present; dropping it later changes no answer).
//!
//! Checking ([`ProducerStates::check`]) follows Kafka's idempotent producer
//! (KIP-98, KIP-360): a batch equal to one of the last five is a duplicate
//! (answered with the original offsets, nothing written); a newer epoch must
//! start at sequence 0; an older epoch is fenced; otherwise the batch must
//! continue the sequence exactly.
//!
//! [`snapshot`] stores the state beside the segment it precedes, so opening a
//! log reads the newest snapshot and folds only the batches after it.

pub(crate) mod snapshot;

use std::collections::{HashMap, VecDeque};

use crate::batch::ProducerInfo;
use crate::coordinates::{Offset, RaftIndex};
use crate::error::SequenceError;

/// Batches remembered per producer (as Kafka's
/// `max.in.flight.requests.per.connection` limit for idempotence).
pub const REMEMBERED_BATCHES: usize = 5;

/// One stored batch of an idempotent producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequencedBatch {
    /// Sequence of its first record.
    pub first_seq: i32,
    /// Sequence of its last record.
    pub last_seq: i32,
    /// Offset of its first record.
    pub base_offset: Offset,
    /// Offset of its last record.
    pub last_offset: Offset,
    /// The Raft entry it is (0 on an unreplicated log).
    pub raft_index: RaftIndex,
    /// The leader's append time.
    pub append_ms: i64,
}

/// What a partition knows of one producer id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    /// The newest epoch stored for it.
    pub epoch: i16,
    /// Its last batches in that epoch, oldest first (at most
    /// [`REMEMBERED_BATCHES`]).
    pub batches: VecDeque<SequencedBatch>,
    /// Append time of its last stored batch.
    pub last_append_ms: i64,
}

impl ProducerEntry {
    /// Folds one stored batch of this producer in. An entry that had
    /// expired by the batch's append time starts over, so dropping expired
    /// entries early or late never changes the state a batch leads to.
    fn fold(&mut self, epoch: i16, batch: SequencedBatch, append_ms: i64, expiration_ms: i64) {
        if epoch != self.epoch || expired(self, append_ms, expiration_ms) {
            self.epoch = epoch;
            self.batches.clear();
        }
        if self.batches.len() == REMEMBERED_BATCHES {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
        self.last_append_ms = self.last_append_ms.max(append_ms);
    }

    fn new(epoch: i16, append_ms: i64) -> Self {
        ProducerEntry {
            epoch,
            batches: VecDeque::with_capacity(REMEMBERED_BATCHES),
            last_append_ms: append_ms,
        }
    }

    fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }
}

/// A stored (or about to be stored) batch as the state sees it.
#[derive(Clone, Copy, Debug)]
pub struct ProducerAppend {
    /// The producer's identity and base sequence.
    pub producer: ProducerInfo,
    /// Records in the batch.
    pub record_count: u32,
    /// Its first offset.
    pub base_offset: Offset,
    /// Its Raft index.
    pub raft_index: RaftIndex,
    /// The leader's append time.
    pub append_ms: i64,
}

impl ProducerAppend {
    fn sequenced(&self) -> SequencedBatch {
        let count = self.record_count.max(1);
        SequencedBatch {
            first_seq: self.producer.base_sequence,
            last_seq: next_sequence(self.producer.base_sequence, count - 1),
            base_offset: self.base_offset,
            last_offset: self.base_offset.plus(u64::from(count - 1)),
            raft_index: self.raft_index,
            append_ms: self.append_ms,
        }
    }
}

/// `seq + n` in the sequence space, which wraps from `i32::MAX` to 0 (as
/// Kafka's).
pub fn next_sequence(seq: i32, n: u32) -> i32 {
    let space = i64::from(i32::MAX) + 1;
    ((i64::from(seq) + i64::from(n)) % space) as i32
}

/// How a batch relates to its producer's stored state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not an idempotent batch, or the next one in sequence: append it.
    Append,
    /// The same batch is stored already: answer with it, write nothing.
    Duplicate(SequencedBatch),
}

/// Every producer's state in one partition (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerStates {
    entries: HashMap<i64, ProducerEntry>,
    expiration_ms: i64,
}

/// Kafka's default `producer.id.expiration.ms`: one day.
pub const DEFAULT_EXPIRATION_MS: i64 = 24 * 3600 * 1000;

impl Default for ProducerStates {
    fn default() -> Self {
        ProducerStates {
            entries: HashMap::new(),
            expiration_ms: DEFAULT_EXPIRATION_MS,
        }
    }
}

impl ProducerStates {
    /// The state of no producer (expiring after a day).
    pub fn new() -> Self {
        ProducerStates::default()
    }

    /// How long a producer that wrote nothing stays known (ms).
    pub fn expiration_ms(&self) -> i64 {
        self.expiration_ms
    }

    /// Sets [`ProducerStates::expiration_ms`] (a topic's config).
    pub fn set_expiration_ms(&mut self, ms: i64) {
        self.expiration_ms = ms.max(1);
    }

    /// Folds one stored batch in.
    pub fn apply(&mut self, b: &ProducerAppend) {
        let p = b.producer;
        let exp = self.expiration_ms;
        self.entries
            .entry(p.producer_id)
            .or_insert_with(|| ProducerEntry::new(p.producer_epoch, b.append_ms))
            .fold(p.producer_epoch, b.sequenced(), b.append_ms, exp);
    }

    /// The stored entry of `producer_id`, expired or not.
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.entries.get(&producer_id)
    }

    /// Producers whose last batch is no older than the expiration at
    /// `now_ms`.
    pub fn active(&self, now_ms: i64) -> usize {
        self.entries
            .values()
            .filter(|e| !expired(e, now_ms, self.expiration_ms))
            .count()
    }

    /// Every entry, expired or not, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.entries.iter().map(|(&id, e)| (id, e))
    }

    /// Number of entries, expired or not.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no producer has an entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops entries that expired by `now_ms`, the latest append time
    /// (unobservable: an expired entry counts as unknown, and the next batch
    /// of its producer would start it over).
    pub fn remove_expired(&mut self, now_ms: i64) {
        let exp = self.expiration_ms;
        self.entries.retain(|_, e| !expired(e, now_ms, exp));
    }

    /// Judges a batch of `producer` with `record_count` records that would
    /// be appended at `now_ms`, given `entry` (the producer's state, see
    /// [`ProducerStates::entry_with`]).
    ///
    /// # Errors
    /// [`SequenceError`]: fenced epoch, out-of-order sequence, unknown
    /// producer.
    pub fn check(
        &self,
        entry: Option<&ProducerEntry>,
        producer: ProducerInfo,
        record_count: u32,
        now_ms: i64,
    ) -> Result<SequenceCheck, SequenceError> {
        let expiration_ms = self.expiration_ms;
        let ProducerInfo {
            producer_id,
            producer_epoch: epoch,
            base_sequence: seq,
        } = producer;
        let entry = entry.filter(|e| !expired(e, now_ms, expiration_ms));
        let Some(e) = entry else {
            return if seq == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::UnknownProducerId { producer_id })
            };
        };
        if epoch < e.epoch {
            return Err(SequenceError::ProducerFenced {
                producer_id,
                epoch,
                current: e.epoch,
            });
        }
        if epoch > e.epoch {
            return if seq == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::OutOfOrderSequence {
                    producer_id,
                    expected: 0,
                    got: seq,
                })
            };
        }
        let last_seq = next_sequence(seq, record_count.max(1) - 1);
        if let Some(b) = e.batches.iter().find(|b| b.first_seq == seq && b.last_seq == last_seq) {
            return Ok(SequenceCheck::Duplicate(*b));
        }
        let expected = e.last_seq().map_or(0, |l| next_sequence(l, 1));
        if seq != expected {
            return Err(SequenceError::OutOfOrderSequence {
                producer_id,
                expected,
                got: seq,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// `producer_id`'s entry after folding `later` (batches after the
    /// stored log, such as a leader's proposals not yet written) into a copy
    /// of the stored one.
    pub fn entry_with(
        &self,
        producer_id: i64,
        later: impl IntoIterator<Item = ProducerAppend>,
    ) -> Option<ProducerEntry> {
        let mut entry = self.entries.get(&producer_id).cloned();
        for b in later {
            if b.producer.producer_id != producer_id {
                continue;
            }
            let p = b.producer;
            entry
                .get_or_insert_with(|| ProducerEntry::new(p.producer_epoch, b.append_ms))
                .fold(p.producer_epoch, b.sequenced(), b.append_ms, self.expiration_ms);
        }
        entry
    }

    pub(crate) fn insert(&mut self, producer_id: i64, entry: ProducerEntry) {
        self.entries.insert(producer_id, entry);
    }
}

fn expired(e: &ProducerEntry, now_ms: i64, expiration_ms: i64) -> bool {
    e.last_append_ms.saturating_add(expiration_ms) < now_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 3600 * 1000;

    fn info(id: i64, epoch: i16, seq: i32) -> ProducerInfo {
        ProducerInfo {
            producer_id: id,
            producer_epoch: epoch,
            base_sequence: seq,
        }
    }

    fn stored(s: &mut ProducerStates, p: ProducerInfo, count: u32, base: u64, at: i64) {
        s.apply(&ProducerAppend {
            producer: p,
            record_count: count,
            base_offset: Offset(base),
            raft_index: RaftIndex(base + 1),
            append_ms: at,
        });
    }

    fn check(s: &ProducerStates, p: ProducerInfo, count: u32, now: i64) -> Result<SequenceCheck, SequenceError> {
        s.check(s.get(p.producer_id), p, count, now)
    }

    #[test]
    fn a_new_producer_starts_at_sequence_zero() {
        let s = ProducerStates::new();
        assert_eq!(check(&s, info(7, 0, 0), 3, 0), Ok(SequenceCheck::Append));
        assert_eq!(
            check(&s, info(7, 0, 5), 3, 0),
            Err(SequenceError::UnknownProducerId { producer_id: 7 })
        );
    }

    #[test]
    fn the_next_batch_continues_the_sequence_and_a_gap_is_out_of_order() {
        let mut s = ProducerStates::new();
        stored(&mut s, info(7, 0, 0), 3, 0, 10);
        assert_eq!(check(&s, info(7, 0, 3), 2, 11), Ok(SequenceCheck::Append));
        assert_eq!(
            check(&s, info(7, 0, 4), 2, 11),
            Err(SequenceError::OutOfOrderSequence {
                producer_id: 7,
                expected: 3,
                got: 4
            })
        );
    }

    #[test]
    fn each_of_the_last_five_batches_is_a_duplicate_with_its_offsets() {
        let mut s = ProducerStates::new();
        for i in 0..7u32 {
            stored(&mut s, info(7, 0, (i * 2) as i32), 2, u64::from(i) * 10, 10);
        }
        for i in 2..7u32 {
            let got = check(&s, info(7, 0, (i * 2) as i32), 2, 11);
            let Ok(SequenceCheck::Duplicate(b)) = got else {
                panic!("batch {i}: {got:?}");
            };
            assert_eq!(b.base_offset, Offset(u64::from(i) * 10));
            assert_eq!(b.last_offset, Offset(u64::from(i) * 10 + 1));
        }
        // Older than the last five: no longer known, so out of order.
        assert!(matches!(
            check(&s, info(7, 0, 0), 2, 11),
            Err(SequenceError::OutOfOrderSequence { .. })
        ));
    }

    #[test]
    fn an_old_epoch_is_fenced_and_a_new_one_starts_at_zero() {
        let mut s = ProducerStates::new();
        stored(&mut s, info(7, 1, 0), 3, 0, 10);
        assert_eq!(
            check(&s, info(7, 0, 3), 1, 11),
            Err(SequenceError::ProducerFenced {
                producer_id: 7,
                epoch: 0,
                current: 1
            })
        );
        assert_eq!(check(&s, info(7, 2, 0), 1, 11), Ok(SequenceCheck::Append));
        assert!(matches!(
            check(&s, info(7, 2, 3), 1, 11),
            Err(SequenceError::OutOfOrderSequence { expected: 0, .. })
        ));
        stored(&mut s, info(7, 2, 0), 1, 3, 12);
        assert_eq!(s.get(7).map(|e| (e.epoch, e.batches.len())), Some((2, 1)));
    }

    #[test]
    fn a_producer_idle_past_the_expiration_is_unknown() {
        let mut s = ProducerStates::new();
        stored(&mut s, info(7, 0, 0), 3, 0, 1_000);
        assert_eq!(check(&s, info(7, 0, 3), 1, 1_000 + DAY), Ok(SequenceCheck::Append));
        assert_eq!(
            check(&s, info(7, 0, 3), 1, 1_001 + DAY),
            Err(SequenceError::UnknownProducerId { producer_id: 7 })
        );
        assert_eq!(check(&s, info(7, 0, 0), 1, 1_001 + DAY), Ok(SequenceCheck::Append));
        assert_eq!(s.active(1_001 + DAY), 0);
        // The next batch of an expired producer starts its entry over.
        stored(&mut s, info(7, 0, 0), 1, 3, 1_001 + DAY);
        assert_eq!(s.get(7).map(|e| e.batches.len()), Some(1));
        s.remove_expired(2_002 + 2 * DAY);
        assert!(s.is_empty());
    }

    #[test]
    fn sequences_wrap_from_the_largest_to_zero() {
        let mut s = ProducerStates::new();
        stored(&mut s, info(7, 0, 0), 1, 0, 10);
        s.entries.get_mut(&7).unwrap().batches.back_mut().unwrap().last_seq = i32::MAX - 1;
        assert_eq!(check(&s, info(7, 0, i32::MAX), 3, 11), Ok(SequenceCheck::Append));
        stored(&mut s, info(7, 0, i32::MAX), 3, 1, 11);
        assert_eq!(s.get(7).unwrap().batches.back().unwrap().last_seq, 1);
        assert_eq!(check(&s, info(7, 0, 2), 1, 12), Ok(SequenceCheck::Append));
    }

    #[test]
    fn proposals_after_the_stored_log_count_as_stored() {
        let mut s = ProducerStates::new();
        stored(&mut s, info(7, 0, 0), 2, 0, 10);
        let later = [ProducerAppend {
            producer: info(7, 0, 2),
            record_count: 2,
            base_offset: Offset(2),
            raft_index: RaftIndex(9),
            append_ms: 11,
        }];
        let e = s.entry_with(7, later);
        let got = s.check(e.as_ref(), info(7, 0, 2), 2, 12);
        assert!(matches!(got, Ok(SequenceCheck::Duplicate(b)) if b.raft_index == RaftIndex(9)));
        let got = s.check(e.as_ref(), info(7, 0, 4), 1, 12);
        assert_eq!(got, Ok(SequenceCheck::Append));
    }
}
