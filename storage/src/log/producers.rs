//! The log's side of idempotent producers' state: folding every stored
//! batch in, snapshots at segment starts, rebuilding after opening,
//! truncating or installing a Raft snapshot (see [`crate::ProducerStates`]).
//!
//! Invariant: `producers` is the fold of exactly the stored batches, from
//! the first offset ever written (through the snapshot of the first
//! segment) to the log end.

use super::PartitionLog;
use crate::coordinates::Offset;
use crate::error::Result;
use crate::producers::{ProducerAppend, ProducerStates, snapshot};
use crate::segment::BatchInfo;

fn fold(states: &mut ProducerStates, info: &BatchInfo) {
    let Some(producer) = info.producer else {
        return;
    };
    if info.next <= info.base {
        return;
    }
    states.apply(&ProducerAppend {
        producer,
        record_count: info.next.since(info.base) as u32,
        base_offset: info.base,
        raft_index: info.raft_index,
        append_ms: info.append_ms,
    });
}

impl PartitionLog {
    /// Idempotent producers' state of every stored batch.
    pub fn producers(&self) -> &ProducerStates {
        &self.producers
    }

    /// The producers' state of everything before [`PartitionLog::earliest`]
    /// and the stored batches after it, encoded: what a Raft snapshot of this
    /// log carries so that a follower that restarts from it judges retries
    /// as this log does. Empty state when no snapshot was taken there (a log
    /// written before producer snapshots existed).
    pub fn producer_snapshot_at_earliest(&self) -> Vec<u8> {
        let earliest = self.earliest();
        let states = snapshot::read(&self.dir, earliest).unwrap_or_else(|| {
            if earliest > Offset::ZERO {
                // Retention keeps a snapshot at the first segment
                // (`ensure_producer_snapshot`); only damage or a log from
                // before producer state gets here.
                tracing::error!(
                    dir = %self.dir.display(), %earliest,
                    "no producer snapshot at the log start: the Raft snapshot carries no producer state"
                );
            }
            ProducerStates::new()
        });
        snapshot::encode(earliest, &states)
    }

    /// Makes sure a snapshot at `at` (a segment's base) exists, folding the
    /// batches below it from the newest snapshot before it if needed:
    /// retention calls it before it deletes the segments below `at`, whose
    /// contribution to the state the snapshot then holds alone.
    ///
    /// # Errors
    /// I/O errors writing the snapshot (nothing is deleted then).
    pub(super) fn ensure_producer_snapshot(&self, at: Offset) -> Result<()> {
        if snapshot::read(&self.dir, at).is_some() {
            return Ok(());
        }
        let earliest = self.earliest();
        let snaps = snapshot::list(&self.dir)?;
        let mut from = earliest;
        let mut states = ProducerStates::new();
        for &o in snaps.iter().rev().filter(|&&o| o >= earliest && o < at) {
            if let Some(s) = snapshot::read(&self.dir, o) {
                states = s;
                from = o;
                break;
            }
        }
        states.set_expiration_ms(self.config.producer_id_expiration_ms as i64);
        for seg in self.segments[self.segment_for(from)..]
            .iter()
            .take_while(|seg| seg.base_offset() < at)
        {
            seg.for_each_batch(from, |info| fold(&mut states, info))?;
        }
        snapshot::write(&self.dir, at, &states)
    }

    pub(super) fn fold_producer(&mut self, info: &BatchInfo) {
        fold(&mut self.producers, info);
    }

    /// Stores the state of everything below `offset` (a new segment's base).
    /// A snapshot is a cache: failing to write one is logged, not fatal.
    pub(super) fn snapshot_producers(&mut self, offset: Offset) {
        self.producers.remove_expired(self.last_append_ms);
        if let Err(e) = snapshot::write(&self.dir, offset, &self.producers) {
            tracing::warn!(dir = %self.dir.display(), %offset, error = %e, "could not write a producer snapshot");
        }
    }

    /// Removes snapshots below `offset` (their segments are gone).
    pub(super) fn forget_producer_snapshots_below(&mut self, offset: Offset) -> Result<()> {
        let stale: Vec<Offset> = snapshot::list(&self.dir)?.into_iter().filter(|&o| o < offset).collect();
        self.remove_producer_snapshots(&stale)
    }

    /// Removes snapshots, durably: one that came back after a power loss
    /// could describe a log that was truncated and written again since.
    fn remove_producer_snapshots(&self, offsets: &[Offset]) -> Result<()> {
        for &o in offsets {
            snapshot::remove(&self.dir, o)?;
        }
        if !offsets.is_empty() {
            crate::dir::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Rebuilds the state from the newest usable snapshot and the batches
    /// after it (opening, truncation). Snapshots past the log end (of a
    /// truncated tail) are removed; one is written at the active segment's
    /// start if it is missing, so the next opening folds that segment only.
    pub(super) fn load_producers(&mut self) -> Result<()> {
        let (earliest, latest) = (self.earliest(), self.latest());
        let snaps = snapshot::list(&self.dir)?;
        let stale: Vec<Offset> = snaps.iter().copied().filter(|&o| o > latest).collect();
        self.remove_producer_snapshots(&stale)?;
        let mut from = earliest;
        let mut states = ProducerStates::new();
        for &o in snaps.iter().rev().filter(|&&o| o >= earliest && o <= latest) {
            if let Some(s) = snapshot::read(&self.dir, o) {
                states = s;
                from = o;
                break;
            }
        }
        states.set_expiration_ms(self.config.producer_id_expiration_ms as i64);
        let first = self.segment_for(from);
        let active = self.segments.len() - 1;
        for seg in &self.segments[first..active] {
            seg.for_each_batch(from, |info| fold(&mut states, info))?;
        }
        let active_base = self.segments[active].base_offset();
        if from < active_base && !snaps.contains(&active_base) {
            states.remove_expired(self.last_append_ms);
            if let Err(e) = snapshot::write(&self.dir, active_base, &states) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not write a producer snapshot");
            }
        }
        self.segments[active].for_each_batch(from, |info| fold(&mut states, info))?;
        self.producers = states;
        Ok(())
    }
}
