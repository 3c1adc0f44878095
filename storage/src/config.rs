//! Per-partition log settings.

use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};

/// When appended bytes are forced to disk with `fdatasync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// After every append, before `append` returns.
    Always,
    /// At the first append after this many milliseconds since the last sync,
    /// and whenever [`crate::PartitionLog::flush`] is called.
    IntervalMs(u64),
    /// Only on [`crate::PartitionLog::flush`], segment roll and close: the
    /// caller (a group-committing broker, or replication) owns durability.
    Never,
}

/// Settings of one partition log. Every field has a default; see each doc.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Roll the active segment when the next batch would take it past this
    /// size. Default 1 GiB.
    pub segment_bytes: u64,
    /// Roll a non-empty active segment once its first batch is this old (ms).
    /// Default 7 days; `None` rolls by size only.
    pub segment_ms: Option<u64>,
    /// Bytes of log between two offset-index entries. Default 4 KiB.
    pub index_interval_bytes: u32,
    /// Largest size of one index file; a full index rolls the segment.
    /// Default 10 MiB.
    pub index_max_bytes: u64,
    /// Largest step a log file grows by. Space is reserved with `fallocate`
    /// before it is written or mapped, so a full disk fails an append
    /// cleanly; steps start at one page and double with the file up to this
    /// size, so an empty partition holds a few pages, not a full step.
    /// Default 1 MiB.
    pub preallocate_bytes: u64,
    /// Largest accepted batch. Default 1 MiB.
    pub max_batch_bytes: u32,
    /// Delete sealed segments whose newest batch was appended longer ago than
    /// this (ms, measured by append time, never by record timestamps).
    /// Default 7 days; `None` keeps data forever.
    pub retention_ms: Option<u64>,
    /// Delete the oldest sealed segments while the log stays at least this
    /// large. Default `None` (no size limit).
    pub retention_bytes: Option<u64>,
    /// Durability of appends. Default `IntervalMs(1000)`.
    pub fsync: FsyncPolicy,
    /// CRC-check every sealed segment when the log opens, so a damaged
    /// segment is found at startup rather than on first read. Costs one read
    /// of the whole log per open. Default `true`.
    pub verify_sealed_on_open: bool,
    /// An idempotent producer that wrote nothing here for this long (ms, by
    /// append time) is forgotten: its next batch must start a new sequence.
    /// Default 1 day (Kafka's `producer.id.expiration.ms`).
    pub producer_id_expiration_ms: u64,
}

const DAY_MS: u64 = 24 * 3600 * 1000;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(7 * DAY_MS),
            index_interval_bytes: 4096,
            index_max_bytes: 10 << 20,
            preallocate_bytes: 1 << 20,
            max_batch_bytes: 1 << 20,
            retention_ms: Some(7 * DAY_MS),
            retention_bytes: None,
            fsync: FsyncPolicy::IntervalMs(1000),
            verify_sealed_on_open: true,
            producer_id_expiration_ms: DAY_MS,
        }
    }
}

impl LogConfig {
    /// Checks that the settings are consistent.
    ///
    /// # Errors
    /// [`StorageError::InvalidConfig`] naming the offending key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &'static str, reason: String| Err(StorageError::InvalidConfig { key, reason });
        if self.segment_bytes < 1024 || self.segment_bytes > u64::from(u32::MAX) {
            return bad(
                "segment_bytes",
                format!("{} is outside [1024, 4 GiB)", self.segment_bytes),
            );
        }
        if u64::from(self.max_batch_bytes) > self.segment_bytes {
            return bad(
                "max_batch_bytes",
                format!(
                    "{} is larger than segment_bytes {}",
                    self.max_batch_bytes, self.segment_bytes
                ),
            );
        }
        if (self.max_batch_bytes as usize) < crate::batch::HEADER_LEN {
            return bad("max_batch_bytes", "smaller than a batch header".into());
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes", "must be positive".into());
        }
        if self.index_max_bytes < 64 {
            return bad("index_max_bytes", format!("{} is below 64", self.index_max_bytes));
        }
        if self.preallocate_bytes < 4096 {
            return bad("preallocate_bytes", format!("{} is below 4096", self.preallocate_bytes));
        }
        if self.segment_ms == Some(0) {
            return bad("segment_ms", "must be positive".into());
        }
        if self.producer_id_expiration_ms == 0 || self.producer_id_expiration_ms > i64::MAX as u64 {
            return bad("producer_id_expiration_ms", "must be positive".into());
        }
        if let FsyncPolicy::IntervalMs(0) = self.fsync {
            return bad("fsync", "interval must be positive; use `always`".into());
        }
        Ok(())
    }
}
