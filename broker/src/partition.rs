//! One partition replica hosted by this broker: its segment log (which is
//! also its Raft log) and the Raft group's published state.
//!
//! Invariants: consumers read only below the high watermark (the offset after
//! the last committed entry), so a record is visible only once a majority
//! stored it; the log's lock is held for one read or one bookkeeping step,
//! never across an `.await`; writes happen only in the node's replication
//! loop, never here.

use std::sync::{Arc, RwLock, RwLockReadGuard};

use bytes::Bytes;
use strand_cluster::{GroupHandle, GroupStatus};
use strand_storage::PartitionLog;
use tokio::sync::watch;

use crate::error::Result;

/// A hosted partition replica.
pub struct Partition {
    topic: Arc<str>,
    id: u32,
    group: u64,
    replicas: Vec<u64>,
    log: Arc<RwLock<PartitionLog>>,
    handle: Arc<GroupHandle>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Partition({}-{}, group {})", self.topic, self.id, self.group)
    }
}

/// Offsets and sizes of a partition at one moment.
#[derive(Clone, Copy, Debug)]
pub struct PartitionState {
    /// First stored offset.
    pub log_start_offset: u64,
    /// End of what consumers may read.
    pub high_watermark: u64,
    /// End of what this replica stored.
    pub log_end_offset: u64,
    /// Bytes of log.
    pub size_bytes: u64,
    /// Segment count.
    pub segments: u32,
}

impl Partition {
    /// Wraps a replica whose group is running in the node's loop.
    pub fn new(
        topic: Arc<str>,
        id: u32,
        group: u64,
        replicas: Vec<u64>,
        log: Arc<RwLock<PartitionLog>>,
        handle: Arc<GroupHandle>,
    ) -> Self {
        Partition {
            topic,
            id,
            group,
            replicas,
            log,
            handle,
        }
    }

    /// Topic name.
    pub fn topic(&self) -> &Arc<str> {
        &self.topic
    }

    /// Partition number.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Raft group id.
    pub fn group(&self) -> u64 {
        self.group
    }

    /// Replica node ids, preferred leader first.
    pub fn replicas(&self) -> &[u64] {
        &self.replicas
    }

    /// The log (shared with the replication loop).
    pub fn log(&self) -> &Arc<RwLock<PartitionLog>> {
        &self.log
    }

    fn read_log(&self) -> RwLockReadGuard<'_, PartitionLog> {
        // A poisoned lock means a panic mid-call elsewhere; the log keeps its
        // own invariants per call, so keep serving.
        self.log.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Leadership and progress of the group.
    pub fn status(&self) -> GroupStatus {
        self.handle.status.borrow().clone()
    }

    /// Leader changes this replica has seen.
    pub fn leader_changes(&self) -> u64 {
        self.handle.leader_changes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// High watermark: the offset after the last committed record.
    pub fn high_watermark(&self) -> u64 {
        *self.handle.high_watermark.borrow()
    }

    /// Whole batches from `offset` below the high watermark (see
    /// [`PartitionLog::read_bounded`]); empty when nothing is visible yet.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Bytes> {
        let hw = self.high_watermark();
        Ok(self.read_log().read_bounded(offset, max_bytes, hw)?)
    }

    /// First visible offset with a timestamp at or after `ts_ms`.
    pub fn lookup_by_timestamp(&self, ts_ms: i64) -> Result<Option<u64>> {
        let hw = self.high_watermark();
        Ok(self.read_log().lookup_by_timestamp_bounded(ts_ms, hw)?)
    }

    /// Current offsets and sizes.
    pub fn state(&self) -> PartitionState {
        let log = self.read_log();
        PartitionState {
            log_start_offset: log.earliest(),
            high_watermark: self.high_watermark().min(log.latest()),
            log_end_offset: log.latest(),
            size_bytes: log.size_bytes(),
            segments: log.segment_count() as u32,
        }
    }

    /// A receiver that changes whenever the high watermark moves.
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.handle.high_watermark.subscribe()
    }

    /// Applies retention to committed segments (blocking file deletes); the
    /// Raft view records what it removes, and a follower that later needs it
    /// is sent a snapshot.
    pub fn apply_retention(&self, now_ms: i64) -> Result<strand_storage::RetentionReport> {
        let hw = self.high_watermark();
        self.handle.log.compact(now_ms, hw).map_err(crate::state::cluster_error)
    }

    /// Syncs the log (graceful shutdown).
    pub fn flush(&self) -> Result<()> {
        let mut log = self.log.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if log.failure().is_none() {
            log.flush()?;
        }
        Ok(())
    }
}
