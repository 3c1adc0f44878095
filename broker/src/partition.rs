//! One partition replica hosted by this broker: its segment log (which is
//! also its Raft log) and the Raft group's published state.
//!
//! Invariants: consumers read only below the high watermark (the offset after
//! the last committed entry), so a record is visible only once a majority
//! stored it; the log's lock is held for one read or one bookkeeping step,
//! never across an `.await`; writes happen only in the node's replication
//! loop, never here.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{RwLock, RwLockReadGuard};
use strand_cluster::{NodeId, RaftGroupId, ReplicaHandle, ReplicaProgress, ReplicaStatus};
use strand_storage::{Offset, PartitionLog};
use tokio::sync::watch;

use crate::error::Result;

/// A replica more than this many Raft entries behind its leader is out of
/// sync (and so is one that has not answered within two election timeouts).
pub const MAX_IN_SYNC_LAG: u64 = 1_000;

/// Whether a follower, as its leader sees it, is in sync. The one rule for
/// `cluster status`, `topic describe` and the under-replication metrics.
pub fn in_sync(leader_last_index: strand_storage::RaftIndex, r: &ReplicaProgress) -> bool {
    r.active && leader_last_index.since(r.matched) <= MAX_IN_SYNC_LAG
}

/// A hosted partition replica.
pub struct Partition {
    topic: Arc<str>,
    id: u32,
    group: RaftGroupId,
    replicas: Vec<NodeId>,
    log: Arc<RwLock<PartitionLog>>,
    handle: Arc<ReplicaHandle>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Partition({}-{}, group {})", self.topic, self.id, self.group)
    }
}

/// Offsets and sizes of a partition replica at one moment.
#[derive(Clone, Copy, Debug)]
pub struct PartitionOffsets {
    /// First stored offset.
    pub log_start_offset: Offset,
    /// End of what consumers may read.
    pub high_watermark: Offset,
    /// End of what this replica stored.
    pub log_end_offset: Offset,
    /// Bytes of log.
    pub size_bytes: u64,
    /// Segment count.
    pub segments: u32,
    /// Idempotent producers this replica's log knows and has not expired.
    pub active_producers: u32,
}

impl Partition {
    /// Wraps a replica whose group is running in the node's loop.
    pub fn new(
        topic: Arc<str>,
        id: u32,
        replicas: Vec<NodeId>,
        log: Arc<RwLock<PartitionLog>>,
        handle: Arc<ReplicaHandle>,
    ) -> Self {
        Partition {
            topic,
            id,
            group: handle.group,
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
    pub fn raft_group(&self) -> RaftGroupId {
        self.group
    }

    /// Replica node ids, preferred leader first.
    pub fn replicas(&self) -> &[NodeId] {
        &self.replicas
    }

    /// The log (shared with the replication loop).
    pub fn log(&self) -> &Arc<RwLock<PartitionLog>> {
        &self.log
    }

    fn read_log(&self) -> RwLockReadGuard<'_, PartitionLog> {
        self.log.read()
    }

    /// Leadership and progress of the group.
    pub fn status(&self) -> ReplicaStatus {
        self.handle.status.borrow().clone()
    }

    /// The group's leader, if known (without copying the whole status:
    /// periodic checks read this for every hosted partition).
    pub fn leader(&self) -> Option<NodeId> {
        self.handle.status.borrow().leader
    }

    /// Whether this replica leads its group.
    pub fn is_leader(&self) -> bool {
        self.handle.status.borrow().is_leader
    }

    /// Whether this replica waits for a term floor (see `admin::term_floor`).
    pub fn awaiting_term(&self) -> bool {
        self.handle.status.borrow().awaiting_term
    }

    /// A receiver that changes whenever leadership or progress does.
    pub fn watch_status(&self) -> watch::Receiver<ReplicaStatus> {
        self.handle.status.subscribe()
    }

    /// Leader changes this replica has seen.
    pub fn leader_changes(&self) -> u64 {
        self.handle.leader_changes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// High watermark: the offset after the last committed record.
    pub fn high_watermark(&self) -> Offset {
        *self.handle.high_watermark.borrow()
    }

    /// Whole batches from `offset` below the high watermark (see
    /// [`PartitionLog::read_bounded`]); empty when nothing is visible yet.
    pub fn read(&self, offset: Offset, max_bytes: usize) -> Result<Bytes> {
        let hw = self.high_watermark();
        Ok(self.read_log().read_bounded(offset, max_bytes, hw)?)
    }

    /// First visible offset with a timestamp at or after `ts_ms`.
    pub fn lookup_by_timestamp(&self, ts_ms: i64) -> Result<Option<Offset>> {
        let hw = self.high_watermark();
        Ok(self.read_log().lookup_by_timestamp_bounded(ts_ms, hw)?)
    }

    /// Current offsets and sizes.
    pub fn offsets(&self) -> PartitionOffsets {
        let log = self.read_log();
        PartitionOffsets {
            log_start_offset: log.earliest(),
            high_watermark: self.high_watermark().min(log.latest()),
            log_end_offset: log.latest(),
            size_bytes: log.size_bytes(),
            segments: log.segment_count() as u32,
            active_producers: log.producers().active(strand_storage::now_ms()) as u32,
        }
    }

    /// A receiver that changes whenever the high watermark moves.
    pub fn watch_high_watermark(&self) -> watch::Receiver<Offset> {
        self.handle.high_watermark.subscribe()
    }

    /// Whether this replica leads and some replica is out of sync.
    pub fn under_replicated(&self) -> bool {
        let status = self.status();
        status.is_leader && status.replicas.iter().any(|r| !in_sync(status.last_index, r))
    }

    /// Applies retention to committed segments (blocking file deletes); the
    /// Raft view records what it removes, and a follower that later needs it
    /// is sent a snapshot.
    pub fn apply_retention(&self, now_ms: i64) -> Result<strand_storage::RetentionReport> {
        let hw = self.high_watermark();
        Ok(self.handle.log.compact(now_ms, hw)?)
    }

    /// Syncs the log (graceful shutdown).
    pub fn flush(&self) -> Result<()> {
        let mut log = self.log.write();
        if log.failure().is_none() {
            log.flush()?;
        }
        Ok(())
    }
}
