//! One partition as the broker serves it: its log, its high watermark and
//! the group-commit flusher that moves the high watermark.
//!
//! Invariants: the high watermark is the log's durable offset, so a consumer
//! never reads a record that an OS crash could take back, and an `acks=all`
//! producer is answered only once its batch is fsynced. The log's lock is held
//! only for an append, a read or a bookkeeping step, never across an fsync or
//! an `.await`; partitions share no lock, so appends to one never wait on
//! another.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use bytes::Bytes;
use strand_storage::{AppendInfo, PartitionLog, StorageError};
use tokio::sync::{Notify, watch};

use crate::error::{BrokerError, Result};

/// A served partition.
pub struct Partition {
    topic: Arc<str>,
    id: u32,
    log: RwLock<PartitionLog>,
    high_watermark: watch::Sender<u64>,
    appended: Notify,
    stopped: watch::Sender<bool>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Partition({}-{})", self.topic, self.id)
    }
}

/// Offsets and sizes of a partition at one moment.
#[derive(Clone, Copy, Debug)]
pub struct PartitionState {
    /// First stored offset.
    pub log_start_offset: u64,
    /// End of what consumers may read.
    pub high_watermark: u64,
    /// End of what was appended.
    pub log_end_offset: u64,
    /// Bytes of log.
    pub size_bytes: u64,
    /// Segment count.
    pub segments: u32,
}

impl Partition {
    /// Wraps an opened log and starts its flusher on the current runtime.
    pub fn start(topic: Arc<str>, id: u32, log: PartitionLog, min_fsync_interval: Duration) -> Arc<Self> {
        let hw = log.durable_offset();
        let p = Arc::new(Partition {
            topic,
            id,
            log: RwLock::new(log),
            high_watermark: watch::Sender::new(hw),
            appended: Notify::new(),
            stopped: watch::Sender::new(false),
        });
        tokio::spawn(Arc::clone(&p).flusher(min_fsync_interval));
        p
    }

    /// Topic name.
    pub fn topic(&self) -> &Arc<str> {
        &self.topic
    }

    /// Partition number.
    pub fn id(&self) -> u32 {
        self.id
    }

    // A poisoned lock means a panic mid-update; the log's own invariants are
    // re-established on every call, so keep serving rather than cascade.
    fn read_log(&self) -> RwLockReadGuard<'_, PartitionLog> {
        self.log.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_log(&self) -> RwLockWriteGuard<'_, PartitionLog> {
        self.log.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends a producer's batch; the flusher is woken to make it durable.
    pub fn append(&self, batch: &[u8]) -> Result<AppendInfo> {
        if *self.stopped.borrow() {
            return Err(BrokerError::ShuttingDown);
        }
        let info = self.write_log().append(batch)?;
        self.appended.notify_one();
        Ok(info)
    }

    /// Whole batches from `offset`, below the high watermark (see
    /// [`PartitionLog::read_bounded`]); empty when nothing is visible yet.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Bytes> {
        let hw = *self.high_watermark.borrow();
        Ok(self.read_log().read_bounded(offset, max_bytes, hw)?)
    }

    /// First visible offset with a timestamp at or after `ts_ms`.
    pub fn lookup_by_timestamp(&self, ts_ms: i64) -> Result<Option<u64>> {
        let hw = *self.high_watermark.borrow();
        Ok(self.read_log().lookup_by_timestamp_bounded(ts_ms, hw)?)
    }

    /// Current offsets and sizes.
    pub fn state(&self) -> PartitionState {
        let log = self.read_log();
        PartitionState {
            log_start_offset: log.earliest(),
            high_watermark: *self.high_watermark.borrow(),
            log_end_offset: log.latest(),
            size_bytes: log.size_bytes(),
            segments: log.segment_count() as u32,
        }
    }

    /// A receiver that changes whenever the high watermark moves.
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.high_watermark.subscribe()
    }

    /// Waits until every offset below `offset` is durable.
    pub async fn wait_durable(&self, offset: u64, timeout: Duration) -> Result<()> {
        let mut rx = self.high_watermark.subscribe();
        let wait = rx.wait_for(|&hw| hw >= offset);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(BrokerError::ShuttingDown),
            Err(_) => {
                if let Some(reason) = self.read_log().failure() {
                    return Err(BrokerError::Storage(StorageError::Failed {
                        dir: self.read_log().dir().to_path_buf(),
                        reason: reason.to_string(),
                    }));
                }
                Err(BrokerError::Timeout {
                    what: "the batch to be fsynced",
                    waited_ms: timeout.as_millis() as u64,
                })
            }
        }
    }

    /// Group commit: whenever appended bytes are not yet durable, take a sync
    /// point, fsync it off the runtime, then publish the new high watermark.
    /// Batches appended during one fsync are covered by the next.
    async fn flusher(self: Arc<Self>, min_interval: Duration) {
        let mut stopped = self.stopped.subscribe();
        loop {
            let point = {
                let log = self.read_log();
                (log.durable_offset() < log.latest() && log.failure().is_none()).then(|| log.sync_point())
            };
            let Some(point) = point else {
                tokio::select! {
                    () = self.appended.notified() => continue,
                    _ = stopped.wait_for(|s| *s) => return,
                }
            };
            let synced = {
                let point = point.clone();
                tokio::task::spawn_blocking(move || point.sync()).await
            };
            let hw = {
                let mut log = self.write_log();
                match synced {
                    Ok(Ok(())) => log.mark_synced(&point),
                    Ok(Err(e)) => log.mark_failed(&e),
                    Err(join) => {
                        let path = log.dir().to_path_buf();
                        log.mark_failed(&StorageError::Io {
                            op: "fdatasync task",
                            path,
                            source: std::io::Error::other(join.to_string()),
                        })
                    }
                }
                log.durable_offset()
            };
            self.high_watermark.send_if_modified(|cur| {
                let moved = hw > *cur;
                *cur = (*cur).max(hw);
                moved
            });
            if !min_interval.is_zero() {
                tokio::time::sleep(min_interval).await;
            }
        }
    }

    /// Applies retention (blocking file deletes; call from a blocking thread).
    pub fn apply_retention(&self, now_ms: i64) -> Result<strand_storage::RetentionReport> {
        Ok(self.write_log().apply_retention(now_ms)?)
    }

    /// Stops the flusher and syncs the log (graceful shutdown).
    pub fn shutdown(&self) -> Result<()> {
        self.stopped.send_replace(true);
        let mut log = self.write_log();
        if log.failure().is_none() {
            log.flush()?;
        }
        let hw = log.durable_offset();
        self.high_watermark.send_replace(hw);
        Ok(())
    }

    /// Stops serving and deletes the partition's files (topic deletion).
    pub fn delete(&self) -> Result<()> {
        self.stopped.send_replace(true);
        let log = self.write_log();
        let dir = log.dir().to_path_buf();
        std::fs::remove_dir_all(&dir).map_err(|source| BrokerError::Metadata {
            op: "delete partition",
            path: dir,
            source,
        })
    }
}
