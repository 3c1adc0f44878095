//! Durability of a partition log: `flush` (fsync now) and the group-commit
//! handle [`SyncPoint`], which lets the replication loop fsync many logs in
//! parallel without holding their locks.
//!
//! Invariant: once an fsync fails, the log accepts no more writes. The
//! kernel may have dropped the dirty pages, so a retry that succeeds could
//! acknowledge data that is not on disk (the "fsyncgate" lesson).

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::PartitionLog;
use crate::coordinates::Offset;
use crate::error::{Result, StorageError};

/// A handle to sync appended bytes without holding the log: take it with
/// [`PartitionLog::sync_point`], call [`SyncPoint::sync`] on any thread, then
/// report the outcome with [`PartitionLog::mark_synced`] or
/// [`PartitionLog::mark_failed`]. One sync covers every batch appended before
/// the point was taken (group commit).
#[derive(Clone, Debug)]
pub struct SyncPoint {
    file: Arc<File>,
    path: PathBuf,
    offset: Offset,
    /// Bytes of the segment written when the point was taken.
    len: u64,
}

impl SyncPoint {
    /// Every offset below this one is durable once [`SyncPoint::sync`] succeeds.
    pub fn offset(&self) -> Offset {
        self.offset
    }

    /// `fdatasync` of the active segment file. Blocks; never call it on an
    /// async runtime's worker thread.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| StorageError::io("fdatasync", &self.path, e))?;
        crate::journal::synced(&self.path, self.len);
        Ok(())
    }
}

impl PartitionLog {
    /// Forces every appended byte to disk (`fdatasync` of the active segment).
    /// A failure is fatal for this log: see [`PartitionLog::mark_failed`].
    pub fn flush(&mut self) -> Result<()> {
        self.check_writable()?;
        #[cfg(test)]
        if std::mem::take(&mut self.fail_next_sync) {
            return Err(self.fail(StorageError::io(
                "fdatasync",
                &self.dir,
                std::io::Error::from_raw_os_error(libc::EIO),
            )));
        }
        if let Err(e) = self.active().sync() {
            return Err(self.fail(e));
        }
        self.synced_offset = self.latest();
        self.last_sync = Instant::now();
        Ok(())
    }

    /// A handle for syncing outside the owner's lock (group commit).
    pub fn sync_point(&self) -> SyncPoint {
        let active = self.active();
        SyncPoint {
            file: active.file_handle(),
            path: active.log_path().to_path_buf(),
            offset: active.next_offset(),
            len: active.size(),
        }
    }

    /// Records that `point` was synced successfully.
    pub fn mark_synced(&mut self, point: &SyncPoint) {
        self.synced_offset = self.synced_offset.max(point.offset.min(self.latest()));
        self.last_sync = Instant::now();
    }

    /// Records a failed fsync: the log stops accepting writes for good. After a
    /// failed fsync the kernel may have dropped the dirty pages, so retrying
    /// and carrying on could acknowledge data that is not on disk.
    pub fn mark_failed(&mut self, error: &StorageError) {
        self.fail_reason(error.to_string());
    }

    pub(super) fn fail(&mut self, e: StorageError) -> StorageError {
        self.fail_reason(e.to_string());
        e
    }

    fn fail_reason(&mut self, reason: String) {
        tracing::error!(dir = %self.dir.display(), %reason, "fsync failed: partition stops accepting writes");
        self.failed.get_or_insert(reason);
    }
}
