//! Retention: deleting whole sealed segments from the front of the log by
//! age or size, and restarting an emptied log at a later offset (a Raft
//! follower installing a snapshot).
//!
//! Invariant: the active segment is never deleted, and a replicated log
//! deletes only segments that end at or below the offset it is given (its
//! high watermark) *and* whose last Raft entry is at or below its commit
//! index (a segment may end with entries that take no offset: a leader's
//! no-op, a configuration change), so nothing uncommitted is ever removed.

use super::PartitionLog;
use crate::coordinates::{Offset, RaftIndex, Term};
use crate::error::Result;
use crate::segment::Segment;

/// What [`PartitionLog::apply_retention`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Number of segments deleted.
    pub deleted_segments: usize,
    /// Bytes of log deleted.
    pub deleted_bytes: u64,
    /// `(raft_index, term)` of the last batch deleted, for a replicated log
    /// (Raft must still answer the term of the entry before its first one).
    pub last_deleted: Option<(RaftIndex, Term)>,
}

impl PartitionLog {
    /// Deletes sealed segments past retention: by age of their newest append
    /// time (`retention_ms`, against `now_ms`), then the oldest while the log
    /// stays at least `retention_bytes`. The active segment is never deleted.
    /// Record timestamps play no part, so a record stamped in the future or
    /// the past cannot make data expire early.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<RetentionReport> {
        self.apply_retention_below(now_ms, Offset(u64::MAX), None)
    }

    /// [`PartitionLog::apply_retention`], deleting only segments that end at
    /// or below offset `upper` and, with `commit`, whose last Raft entry is at
    /// or below it (a replicated log passes its high watermark and commit
    /// index, so nothing uncommitted is ever deleted).
    pub fn apply_retention_below(
        &mut self,
        now_ms: i64,
        upper: Offset,
        commit: Option<RaftIndex>,
    ) -> Result<RetentionReport> {
        let plan = self.plan_retention(now_ms, upper, commit)?;
        self.delete_oldest_segments(plan.deleted_segments)?;
        Ok(plan)
    }

    /// What [`PartitionLog::apply_retention_below`] would delete, without
    /// deleting anything (a replicated log records the last deleted entry
    /// durably first, then deletes).
    pub fn plan_retention(&self, now_ms: i64, upper: Offset, commit: Option<RaftIndex>) -> Result<RetentionReport> {
        let mut report = RetentionReport::default();
        let mut total = self.size_bytes();
        for (i, seg) in self.segments.iter().enumerate() {
            if i + 1 == self.segments.len() || seg.next_offset() > upper {
                break;
            }
            let expired = self
                .config
                .retention_ms
                .is_some_and(|r| now_ms.saturating_sub(seg.max_append_ms()) > r as i64);
            let oversize = self
                .config
                .retention_bytes
                .is_some_and(|r| total.saturating_sub(seg.size()) >= r);
            if !expired && !oversize {
                break;
            }
            let last = seg.last_batch()?;
            if let (Some(commit), Some(last)) = (commit, &last)
                && last.raft_index > commit
            {
                break;
            }
            if let Some(last) = last {
                report.last_deleted = Some((last.raft_index, last.term));
            }
            total -= seg.size();
            report.deleted_segments += 1;
            report.deleted_bytes += seg.size();
        }
        Ok(report)
    }

    /// Deletes the `n` oldest sealed segments (never the active one).
    pub fn delete_oldest_segments(&mut self, n: usize) -> Result<()> {
        let n = n.min(self.segments.len().saturating_sub(1));
        if n == 0 {
            return Ok(());
        }
        // What the deleted segments contributed to the producers' state
        // lives on in the snapshot at the new first segment.
        self.ensure_producer_snapshot(self.segments[n].base_offset())?;
        for _ in 0..n {
            let seg = self.segments.remove(0);
            tracing::info!(file = %seg.log_path().display(), "retention deleted segment");
            seg.delete(&self.dir)?;
        }
        self.forget_producer_snapshots_below(self.earliest())
    }

    /// Drops every segment and starts an empty log whose next offset is
    /// `base_offset` (a Raft follower installing a snapshot: everything before
    /// the leader's retained log is gone, and the log resumes where the
    /// leader's starts).
    pub fn reset_to(&mut self, base_offset: Offset) -> Result<()> {
        self.reset_with_producers(base_offset, crate::ProducerStates::new())
    }

    /// [`PartitionLog::reset_to`], with the idempotent producers' state of
    /// everything before `base_offset` (what a Raft snapshot carries), stored
    /// as the snapshot of the new first segment.
    pub fn reset_with_producers(&mut self, base_offset: Offset, producers: crate::ProducerStates) -> Result<()> {
        while let Some(seg) = self.segments.pop() {
            seg.delete(&self.dir)?;
        }
        self.forget_producer_snapshots_below(Offset(u64::MAX))?;
        self.segments
            .push(Segment::create(&self.dir, base_offset, &self.config)?);
        self.synced_offset = base_offset;
        self.producers = producers;
        self.producers
            .set_expiration_ms(self.config.producer_id_expiration_ms as i64);
        crate::producers::snapshot::write(&self.dir, base_offset, &self.producers)?;
        tracing::info!(dir = %self.dir.display(), %base_offset, "log reset");
        Ok(())
    }
}
