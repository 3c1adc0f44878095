//! `PartitionLog`: the ordered segments of one partition.
//!
//! Invariants: there is always at least one segment; the last one is the
//! active segment and the only one written; segments are contiguous (each
//! starts at the previous one's next offset); every sealed segment is synced.
//! A `PartitionLog` has a single owner; callers that share one across threads
//! wrap it in a lock (reads take `&self`, writes `&mut self`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::batch::header::{self, BatchRef, PRODUCER_PART};
use crate::config::{FsyncPolicy, LogConfig};
use crate::error::{Result, StorageError};
use crate::recovery::RecoveryReport;
use crate::segment::{BatchInfo, Segment};

/// Where an appended batch landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset of its last record.
    pub last_offset: u64,
    /// The append time stamped into the batch (ms since the epoch).
    pub append_time_ms: i64,
}

/// Where a batch lies on disk (see [`PartitionLog::locate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLocation {
    /// Base offset of the segment (its file name).
    pub segment_base_offset: u64,
    /// Byte position of the batch in the segment file.
    pub position: u64,
    /// The batch's first offset.
    pub base_offset: u64,
    /// The offset after the batch.
    pub next_offset: u64,
}

/// What [`PartitionLog::apply_retention`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Number of segments deleted.
    pub deleted_segments: usize,
    /// Bytes of log deleted.
    pub deleted_bytes: u64,
    /// `(raft_index, term)` of the last batch deleted, for a replicated log
    /// (Raft must still answer the term of the entry before its first one).
    pub last_deleted: Option<(u64, u64)>,
}

/// A handle to sync appended bytes without holding the log: take it with
/// [`PartitionLog::sync_point`], call [`SyncPoint::sync`] on any thread, then
/// report the outcome with [`PartitionLog::mark_synced`] or
/// [`PartitionLog::mark_failed`]. One sync covers every batch appended before
/// the point was taken (group commit).
#[derive(Clone, Debug)]
pub struct SyncPoint {
    file: Arc<File>,
    path: PathBuf,
    offset: u64,
    /// Bytes of the segment written when the point was taken.
    len: u64,
}

impl SyncPoint {
    /// Every offset below this one is durable once [`SyncPoint::sync`] succeeds.
    pub fn offset(&self) -> u64 {
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

/// A copy of a producer's `batch` stamped with `base_offset` and `stamp`,
/// ready to be proposed as a Raft entry (a Raft leader stamps a batch before
/// it replicates it, so every replica stores the same bytes). The CRC is
/// validated first and re-computed by combination, without a second pass.
///
/// # Errors
/// `InvalidBatch` if the CRC or framing is wrong.
pub fn stamp_batch(batch: &[u8], base_offset: u64, stamp: &header::Stamp) -> Result<Vec<u8>> {
    let (_, payload) = BatchRef::validate_with(batch).map_err(|source| StorageError::InvalidBatch { source })?;
    let prefix = header::stamped_prefix(batch, &payload, base_offset, stamp);
    let mut out = Vec::with_capacity(batch.len());
    out.extend_from_slice(&prefix);
    out.extend_from_slice(&batch[PRODUCER_PART..]);
    Ok(out)
}

/// Milliseconds since the Unix epoch by the system clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The log of one partition.
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    segments: Vec<Segment>,
    synced_offset: u64,
    last_sync: Instant,
    last_append_ms: i64,
    failed: Option<String>,
    report: RecoveryReport,
    #[cfg(test)]
    pub(crate) fail_next_sync: bool,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("earliest", &self.earliest())
            .field("latest", &self.latest())
            .field("segments", &self.segments.len())
            .finish()
    }
}

impl PartitionLog {
    /// Opens the log in `dir` (created if missing) and recovers it: sealed
    /// segments are verified (see [`LogConfig::verify_sealed_on_open`]), the
    /// active segment's torn tail is cut and its indexes rebuilt. What was
    /// repaired is in [`PartitionLog::recovery_report`] and logged at warn.
    ///
    /// # Errors
    /// [`StorageError::Corrupt`] if a sealed segment (or the middle of the
    /// active one) is damaged: the log refuses to open rather than serve
    /// garbage or silently drop data. I/O and config errors.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Self> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| StorageError::io("create dir", &dir, e))?;
        let bases = crate::recovery::segment_bases(&dir)?;
        let mut report = RecoveryReport::default();
        let mut segments = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            if i + 1 < bases.len() {
                let (seg, rebuilt) = Segment::open_sealed(&dir, base, &config, config.verify_sealed_on_open)?;
                if rebuilt {
                    report.rebuilt_indexes.push(seg.log_path().to_path_buf());
                }
                segments.push(seg);
            } else {
                let (seg, repair) = Segment::open_active(&dir, base, &config)?;
                if let Some(at) = repair.truncated_at {
                    report.truncated = Some(crate::recovery::Truncation {
                        file: seg.log_path().to_path_buf(),
                        position: at,
                        bytes: repair.bytes_truncated,
                        reason: repair.reason.unwrap_or_default(),
                    });
                }
                segments.push(seg);
            }
        }
        for pair in segments.windows(2) {
            if pair[0].next_offset() != pair[1].base_offset() {
                // The earlier segment's contents decide where it ends; the
                // later one's base is its file name.
                return Err(StorageError::Corrupt {
                    file: pair[0].log_path().to_path_buf(),
                    position: pair[0].size(),
                    reason: format!(
                        "segment ends at offset {} but the next segment file starts at {}",
                        pair[0].next_offset(),
                        pair[1].base_offset()
                    ),
                });
            }
        }
        if segments.is_empty() {
            segments.push(Segment::create(&dir, 0, &config)?);
        }
        report.segments = segments.len();
        let latest = segments.last().map_or(0, Segment::next_offset);
        let last_append_ms = segments.iter().map(Segment::max_append_ms).max().unwrap_or(i64::MIN);
        Ok(PartitionLog {
            dir,
            config,
            segments,
            synced_offset: latest,
            last_sync: Instant::now(),
            last_append_ms,
            failed: None,
            report,
            #[cfg(test)]
            fail_next_sync: false,
        })
    }

    /// What opening the log found and repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The log's settings.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replaces the settings that may change at run time (retention, roll
    /// thresholds, fsync policy); takes effect from the next append.
    pub fn set_config(&mut self, config: LogConfig) -> Result<()> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// First offset still stored.
    pub fn earliest(&self) -> u64 {
        self.segments.first().map_or(0, Segment::base_offset)
    }

    /// Log end offset: the offset the next record will get.
    pub fn latest(&self) -> u64 {
        self.active().next_offset()
    }

    /// Offsets below this one are known to be on disk (fsynced).
    pub fn durable_offset(&self) -> u64 {
        self.synced_offset
    }

    /// Total bytes of log across segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::size).sum()
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Why the log stopped accepting writes, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    fn active(&self) -> &Segment {
        // The constructor guarantees at least one segment.
        &self.segments[self.segments.len() - 1]
    }

    fn active_mut(&mut self) -> &mut Segment {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    fn check_writable(&self) -> Result<()> {
        match &self.failed {
            Some(reason) => Err(StorageError::Failed {
                dir: self.dir.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Appends a producer's batch with Raft term 0 at the system clock's time.
    /// See [`PartitionLog::append_stamped`].
    pub fn append(&mut self, batch: &[u8]) -> Result<AppendInfo> {
        self.append_stamped(batch, 0, now_ms())
    }

    /// Validates `batch` (framing, CRC, size), assigns it the next offsets,
    /// stamps `term` and the append time, and writes it to the active segment
    /// (rolling first if it is full or old). The append time is
    /// `max(now_ms, previous append time)`, so it never goes backwards even if
    /// the clock does. On return the bytes are readable; they are durable when
    /// the fsync policy says so (see [`PartitionLog::durable_offset`]).
    ///
    /// # Errors
    /// `RecordTooLarge`, `InvalidBatch` (nothing written); `DiskFull` or `Io`
    /// (nothing visible written); `Failed` after an earlier fsync failure.
    pub fn append_stamped(&mut self, batch: &[u8], term: u64, now_ms: i64) -> Result<AppendInfo> {
        self.check_writable()?;
        self.check_size(batch)?;
        let (b, payload) = BatchRef::validate_with(batch).map_err(|source| StorageError::InvalidBatch { source })?;
        let base = self.latest();
        let append_ms = now_ms.max(self.last_append_ms);
        let stamp = header::Stamp {
            term,
            raft_index: 0,
            append_time_ms: append_ms,
        };
        let prefix = header::stamped_prefix(batch, &payload, base, &stamp);
        let info = BatchInfo {
            base,
            next: base + u64::from(b.record_count()),
            len: batch.len() as u64,
            max_timestamp_ms: b.max_timestamp_ms(),
            append_ms,
            term,
            raft_index: 0,
        };
        self.write(&prefix, &batch[PRODUCER_PART..], &info, now_ms)?;
        Ok(AppendInfo {
            base_offset: base,
            last_offset: info.next.saturating_sub(1),
            append_time_ms: append_ms,
        })
    }

    /// Appends a batch as a Raft leader does when it proposes: validates it,
    /// assigns the next offsets and stamps `stamp` (term, Raft index, append
    /// time) into the header. Returns the stored bytes' location like
    /// [`PartitionLog::append_stamped`]. The Raft index must follow the last
    /// stored one.
    ///
    /// # Errors
    /// `UnexpectedOffset` (naming Raft indexes) if `stamp.raft_index` does not
    /// follow the log; otherwise as `append_stamped`.
    pub fn append_entry(&mut self, batch: &[u8], stamp: header::Stamp) -> Result<AppendInfo> {
        self.check_writable()?;
        self.check_size(batch)?;
        let expected = self.last_raft_index()?.map_or(stamp.raft_index, |i| i + 1);
        if stamp.raft_index != expected {
            return Err(StorageError::UnexpectedOffset {
                expected,
                got: stamp.raft_index,
            });
        }
        let (b, payload) = BatchRef::validate_with(batch).map_err(|source| StorageError::InvalidBatch { source })?;
        let base = self.latest();
        let prefix = header::stamped_prefix(batch, &payload, base, &stamp);
        let info = BatchInfo {
            base,
            next: base + u64::from(b.record_count()),
            len: batch.len() as u64,
            max_timestamp_ms: b.max_timestamp_ms(),
            append_ms: stamp.append_time_ms,
            term: stamp.term,
            raft_index: stamp.raft_index,
        };
        self.write(&prefix, &batch[PRODUCER_PART..], &info, stamp.append_time_ms)?;
        Ok(AppendInfo {
            base_offset: base,
            last_offset: info.next.saturating_sub(1),
            append_time_ms: stamp.append_time_ms,
        })
    }

    /// Raft index of the first stored batch (`None` if the log is empty).
    pub fn first_raft_index(&self) -> Result<Option<u64>> {
        for seg in &self.segments {
            if let Some(info) = seg.first_batch()? {
                return Ok(Some(info.raft_index));
            }
        }
        Ok(None)
    }

    /// Raft index of the last stored batch (`None` if the log is empty).
    pub fn last_raft_index(&self) -> Result<Option<u64>> {
        for seg in self.segments.iter().rev() {
            if seg.is_empty() {
                continue;
            }
            let info = seg.last_batch()?;
            return Ok(info.map(|i| i.raft_index));
        }
        Ok(None)
    }

    fn segment_for_raft_index(&self, raft_index: u64) -> Result<Option<&Segment>> {
        // Segments hold increasing Raft indexes: binary search for the last
        // one starting at or below `raft_index` (Raft asks for terms on every
        // append, so this must not walk every segment). Only the active
        // segment can be empty.
        let searchable = self.segments.len() - usize::from(self.active().is_empty());
        let mut failure = None;
        let n = self.segments[..searchable].partition_point(|s| match s.first_batch() {
            Ok(first) => first.is_none_or(|f| f.raft_index <= raft_index),
            Err(e) => {
                failure.get_or_insert(e);
                false
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(n.checked_sub(1).map(|i| &self.segments[i]))
    }

    /// The stored batch that is Raft entry `raft_index`, with its term.
    pub fn raft_entry(&self, raft_index: u64) -> Result<Option<(Bytes, u64)>> {
        let Some(seg) = self.segment_for_raft_index(raft_index)? else {
            return Ok(None);
        };
        match seg.find_raft_index(raft_index)? {
            Some((pos, _)) => {
                let (bytes, info) = seg.batch_at(pos)?;
                Ok(Some((bytes, info.term)))
            }
            None => Ok(None),
        }
    }

    /// Term of Raft entry `raft_index` (header read only, no CRC check).
    pub fn raft_term(&self, raft_index: u64) -> Result<Option<u64>> {
        let Some(seg) = self.segment_for_raft_index(raft_index)? else {
            return Ok(None);
        };
        Ok(seg.find_raft_index(raft_index)?.map(|(_, info)| info.term))
    }

    /// Raft entries `[low, high)` as stored batches with their terms, stopping
    /// once `max_bytes` is reached (at least one entry is returned).
    pub fn raft_entries(&self, low: u64, high: u64, max_bytes: u64) -> Result<Vec<(Bytes, u64)>> {
        let mut out = Vec::new();
        let mut total = 0u64;
        let mut idx = low;
        while idx < high {
            let Some(seg) = self.segment_for_raft_index(idx)? else {
                break;
            };
            let Some((mut pos, _)) = seg.find_raft_index(idx)? else {
                break;
            };
            // Walk this segment sequentially instead of searching per entry.
            while idx < high && pos < seg.size() {
                let (bytes, info) = seg.batch_at(pos)?;
                if info.raft_index != idx {
                    return Err(StorageError::Corrupt {
                        file: seg.log_path().to_path_buf(),
                        position: pos,
                        reason: format!("Raft index {} found where {idx} was expected", info.raft_index),
                    });
                }
                total += info.len;
                if !out.is_empty() && total > max_bytes {
                    return Ok(out);
                }
                out.push((bytes, info.term));
                pos += info.len;
                idx += 1;
            }
        }
        Ok(out)
    }

    /// Removes Raft entries from `raft_index` on (a conflicting suffix). The
    /// removed bytes are zeroed and synced before this returns.
    ///
    /// # Errors
    /// `OffsetOutOfRange` (in Raft indexes) if the entry is not stored.
    pub fn truncate_from_raft_index(&mut self, raft_index: u64) -> Result<()> {
        let last = self.last_raft_index()?;
        if last.is_none_or(|l| raft_index > l) {
            return Ok(());
        }
        // The segment holding the entry: the last one starting at or below it.
        let mut holder = 0;
        for (i, seg) in self.segments.iter().enumerate() {
            if seg.first_batch()?.is_some_and(|f| f.raft_index <= raft_index) {
                holder = i;
            }
        }
        // Newest first, so a crash part-way leaves a contiguous log.
        while self.segments.len() > holder + 1 {
            if let Some(seg) = self.segments.pop() {
                seg.delete(&self.dir)?;
            }
        }
        let seg = self.active_mut();
        let Some((pos, info)) = seg.find_raft_index(raft_index)? else {
            let earliest = self.first_raft_index()?.unwrap_or(0);
            return Err(StorageError::OffsetOutOfRange {
                requested: raft_index,
                earliest,
                latest: last.unwrap_or(0),
            });
        };
        seg.truncate_at(pos, info.base)?;
        let latest = self.latest();
        self.synced_offset = self.synced_offset.min(latest);
        tracing::info!(dir = %self.dir.display(), raft_index, "truncated log at Raft index");
        Ok(())
    }

    /// Appends a batch a leader already stamped (a replica's copy), byte for
    /// byte. Its base offset must be the log end.
    ///
    /// # Errors
    /// `UnexpectedOffset` if it does not continue the log; as `append_stamped`.
    pub fn append_replicated(&mut self, batch: &[u8]) -> Result<AppendInfo> {
        self.check_writable()?;
        self.check_size(batch)?;
        let b = BatchRef::validate(batch).map_err(|source| StorageError::InvalidBatch { source })?;
        if b.base_offset() != self.latest() {
            return Err(StorageError::UnexpectedOffset {
                expected: self.latest(),
                got: b.base_offset(),
            });
        }
        let info = BatchInfo::of(&b);
        self.write(&batch[..PRODUCER_PART], &batch[PRODUCER_PART..], &info, now_ms())?;
        self.last_append_ms = self.last_append_ms.max(info.append_ms);
        Ok(AppendInfo {
            base_offset: info.base,
            last_offset: info.next.saturating_sub(1),
            append_time_ms: info.append_ms,
        })
    }

    fn check_size(&self, batch: &[u8]) -> Result<()> {
        if batch.len() > self.config.max_batch_bytes as usize {
            return Err(StorageError::RecordTooLarge {
                size: batch.len(),
                max: self.config.max_batch_bytes,
            });
        }
        Ok(())
    }

    fn write(&mut self, prefix: &[u8], rest: &[u8], info: &BatchInfo, now_ms: i64) -> Result<()> {
        self.maybe_roll(info.len, now_ms)?;
        self.active_mut().append(prefix, rest, info)?;
        self.last_append_ms = self.last_append_ms.max(info.append_ms);
        match self.config.fsync {
            FsyncPolicy::Always => self.flush(),
            FsyncPolicy::IntervalMs(ms) if self.last_sync.elapsed() >= Duration::from_millis(ms) => self.flush(),
            _ => Ok(()),
        }
    }

    fn maybe_roll(&mut self, len: u64, now_ms: i64) -> Result<()> {
        let active = self.active();
        // A segment is named by its base offset: one that holds no offset yet
        // (empty, or control batches only) cannot roll, or the next segment
        // would get the same name.
        if active.next_offset() == active.base_offset() {
            return Ok(());
        }
        let too_old = match (self.config.segment_ms, active.first_append_ms()) {
            (Some(max_age), Some(first)) => now_ms.saturating_sub(first) >= max_age as i64,
            _ => false,
        };
        if too_old || !active.has_room_for(len, self.config.segment_bytes) {
            self.roll()?;
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at the log end.
    pub fn roll(&mut self) -> Result<()> {
        self.check_writable()?;
        if self.active().next_offset() == self.active().base_offset() {
            return Ok(());
        }
        if let Err(e) = self.active_mut().seal() {
            return Err(self.fail(e));
        }
        let next = self.latest();
        self.synced_offset = self.synced_offset.max(next);
        let seg = Segment::create(&self.dir, next, &self.config)?;
        self.segments.push(seg);
        tracing::debug!(dir = %self.dir.display(), base_offset = next, "rolled segment");
        Ok(())
    }

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

    fn fail(&mut self, e: StorageError) -> StorageError {
        self.fail_reason(e.to_string());
        e
    }

    fn fail_reason(&mut self, reason: String) {
        tracing::error!(dir = %self.dir.display(), %reason, "fsync failed: partition stops accepting writes");
        self.failed.get_or_insert(reason);
    }

    fn out_of_range(&self, requested: u64) -> StorageError {
        StorageError::OffsetOutOfRange {
            requested,
            earliest: self.earliest(),
            latest: self.latest(),
        }
    }

    /// Index of the segment that holds `offset` (the last with base ≤ offset).
    fn segment_for(&self, offset: u64) -> usize {
        self.segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1)
    }

    /// Whole batches starting with the one that contains `offset`, up to
    /// `max_bytes` (at least one batch). See [`PartitionLog::read_bounded`].
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Bytes> {
        self.read_bounded(offset, max_bytes, self.latest())
    }

    /// Like [`PartitionLog::read`], returning only batches that end at or
    /// below `upper` (the high watermark, for a replicated log).
    ///
    /// The bytes are a slice of the segment's memory map (no copy) and stay
    /// valid after the log moves on, rolls or deletes the segment. Every
    /// returned batch passed its CRC check. Reads stop at a segment's end; call
    /// again from the next offset. The first batch may start below `offset`.
    ///
    /// # Errors
    /// `OffsetOutOfRange` below `earliest()` or above `latest()` (an offset
    /// equal to `latest()` is an empty answer); `Corrupt` if a stored batch
    /// fails validation.
    pub fn read_bounded(&self, offset: u64, max_bytes: usize, upper: u64) -> Result<Bytes> {
        if offset < self.earliest() || offset > self.latest() {
            return Err(self.out_of_range(offset));
        }
        if offset >= upper {
            return Ok(Bytes::new());
        }
        for seg in &self.segments[self.segment_for(offset)..] {
            if let Some((pos, _)) = seg.find_position(offset)? {
                return seg.read(pos, max_bytes, upper);
            }
        }
        Ok(Bytes::new())
    }

    /// Where the batch holding `offset` starts: an index lookup plus a walk of
    /// batch headers (no CRC check, no copy). `None` at or past the log end or
    /// below the earliest offset.
    pub fn locate(&self, offset: u64) -> Result<Option<BatchLocation>> {
        if offset < self.earliest() {
            return Ok(None);
        }
        let seg = &self.segments[self.segment_for(offset)];
        Ok(seg.find_position(offset)?.map(|(position, info)| BatchLocation {
            segment_base_offset: seg.base_offset(),
            position,
            base_offset: info.base,
            next_offset: info.next,
        }))
    }

    /// The first offset whose record timestamp is `>= ts_ms`, or `None` if no
    /// stored record is that recent. Scans from the time index entry before
    /// `ts_ms` and decodes only the batch that holds the answer.
    pub fn lookup_by_timestamp(&self, ts_ms: i64) -> Result<Option<u64>> {
        self.lookup_by_timestamp_bounded(ts_ms, self.latest())
    }

    /// [`PartitionLog::lookup_by_timestamp`] among offsets below `upper`.
    pub fn lookup_by_timestamp_bounded(&self, ts_ms: i64, upper: u64) -> Result<Option<u64>> {
        for seg in &self.segments {
            if seg.base_offset() >= upper {
                break;
            }
            if let Some(o) = seg.lookup_timestamp(ts_ms, upper)? {
                return Ok(Some(o));
            }
        }
        Ok(None)
    }

    /// Removes every batch from `offset` on (Raft truncates a conflicting
    /// suffix this way). `offset` must be the first offset of a batch or the
    /// log end. Removed bytes are zeroed and synced before this returns.
    ///
    /// # Errors
    /// `OffsetOutOfRange` outside `[earliest, latest]`; `NotBatchBoundary`.
    pub fn truncate_from(&mut self, offset: u64) -> Result<()> {
        if offset < self.earliest() || offset > self.latest() {
            return Err(self.out_of_range(offset));
        }
        if offset == self.latest() {
            return Ok(());
        }
        let keep = self.segment_for(offset);
        let keep = if keep > 0 && self.segments[keep].base_offset() == offset {
            keep - 1
        } else {
            keep
        };
        let seg = &self.segments[keep];
        if let Some((_, info)) = seg.find_position(offset)?
            && info.base != offset
        {
            return Err(StorageError::NotBatchBoundary {
                offset,
                batch_base: info.base,
            });
        }
        // Newest first, so a crash part-way leaves a contiguous log.
        while self.segments.len() > keep + 1 {
            if let Some(seg) = self.segments.pop() {
                seg.delete(&self.dir)?;
            }
        }
        self.active_mut().truncate_from(offset)?;
        self.synced_offset = self.synced_offset.min(offset);
        tracing::info!(dir = %self.dir.display(), offset, "truncated log");
        Ok(())
    }

    /// Deletes sealed segments past retention: by age of their newest append
    /// time (`retention_ms`, against `now_ms`), then the oldest while the log
    /// stays at least `retention_bytes`. The active segment is never deleted.
    /// Record timestamps play no part, so a record stamped in the future or
    /// the past cannot make data expire early.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<RetentionReport> {
        self.apply_retention_below(now_ms, u64::MAX)
    }

    /// [`PartitionLog::apply_retention`], deleting only segments that end at
    /// or below offset `upper` (a replicated log passes its high watermark,
    /// so nothing uncommitted is ever deleted).
    pub fn apply_retention_below(&mut self, now_ms: i64, upper: u64) -> Result<RetentionReport> {
        let plan = self.plan_retention(now_ms, upper)?;
        self.delete_oldest_segments(plan.deleted_segments)?;
        Ok(plan)
    }

    /// What [`PartitionLog::apply_retention_below`] would delete, without
    /// deleting anything (a replicated log records the last deleted entry
    /// durably first, then deletes).
    pub fn plan_retention(&self, now_ms: i64, upper: u64) -> Result<RetentionReport> {
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
            if let Some(last) = seg.last_batch()? {
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
        for _ in 0..n.min(self.segments.len().saturating_sub(1)) {
            let seg = self.segments.remove(0);
            tracing::info!(file = %seg.log_path().display(), "retention deleted segment");
            seg.delete(&self.dir)?;
        }
        Ok(())
    }

    /// Drops every segment and starts an empty log whose next offset is
    /// `base_offset` (a Raft follower installing a snapshot: everything before
    /// the leader's retained log is gone, and the log resumes where the
    /// leader's starts).
    pub fn reset_to(&mut self, base_offset: u64) -> Result<()> {
        while let Some(seg) = self.segments.pop() {
            seg.delete(&self.dir)?;
        }
        self.segments
            .push(Segment::create(&self.dir, base_offset, &self.config)?);
        self.synced_offset = base_offset;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StorageError::io("fsync dir", &self.dir, e))?;
        tracing::info!(dir = %self.dir.display(), base_offset, "log reset");
        Ok(())
    }

    /// Syncs everything and closes the log.
    pub fn close(mut self) -> Result<()> {
        if self.failed.is_none() {
            self.flush()?;
        }
        Ok(())
    }

    /// Deletes the whole log directory (topic deletion).
    pub fn delete(self) -> Result<()> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).map_err(|e| StorageError::io("remove dir", &dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchBuilder, Compression, NewRecord};

    fn one_record() -> Vec<u8> {
        let mut b = BatchBuilder::new(Compression::None);
        b.push(&NewRecord {
            timestamp_ms: 1,
            key: None,
            value: Some(b"v"),
            headers: &[],
        });
        b.build().unwrap()
    }

    #[test]
    fn a_failed_fsync_stops_the_partition_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        log.append(&one_record()).unwrap();
        log.fail_next_sync = true;
        assert!(log.flush().is_err());
        assert!(log.failure().is_some());
        // No retry that could pretend the lost pages are durable.
        assert!(matches!(log.flush(), Err(StorageError::Failed { .. })));
        assert!(matches!(log.append(&one_record()), Err(StorageError::Failed { .. })));
        assert_eq!(log.durable_offset(), 0);
        // Reads of what is there still work.
        assert!(!log.read(0, 100).unwrap().is_empty());
    }
}
