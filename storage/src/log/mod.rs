//! `PartitionLog`: the ordered segments of one partition.
//!
//! This module holds opening, appending, reading and truncating by offset;
//! the rest of the log's surface lives beside it: [`raft_index`] (entries by
//! Raft index, for a replicated log), [`retention`] (deleting old segments,
//! restarting at a snapshot) and [`sync`] (fsync and group commit).
//!
//! Invariants: there is always at least one segment; the last one is the
//! active segment and the only one written; segments are contiguous (each
//! starts at the previous one's next offset); every sealed segment is synced.
//! A `PartitionLog` has a single owner; callers that share one across threads
//! wrap it in a lock (reads take `&self`, writes `&mut self`).

mod producers;
mod raft_index;
mod retention;
mod sync;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use retention::RetentionReport;
pub use sync::SyncPoint;

use crate::batch::header::{self, BatchRef, PRODUCER_PART};
use crate::clock::now_ms;
use crate::config::{FsyncPolicy, LogConfig};
use crate::coordinates::{Offset, Term};
use crate::error::{Result, StorageError};
use crate::recovery::RecoveryReport;
use crate::segment::{BatchInfo, Segment};

/// Where an appended batch landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the batch's first record.
    pub base_offset: Offset,
    /// Offset of its last record.
    pub last_offset: Offset,
    /// The append time stamped into the batch (ms since the epoch).
    pub append_time_ms: i64,
}

/// Where a batch lies on disk (see [`PartitionLog::locate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLocation {
    /// Base offset of the segment (its file name).
    pub segment_base_offset: Offset,
    /// Byte position of the batch in the segment file.
    pub position: u64,
    /// The batch's first offset.
    pub base_offset: Offset,
    /// The offset after the batch.
    pub next_offset: Offset,
}

/// The log of one partition.
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    segments: Vec<Segment>,
    synced_offset: Offset,
    last_sync: Instant,
    last_append_ms: i64,
    failed: Option<String>,
    report: RecoveryReport,
    /// Idempotent producers' state of every stored batch (see
    /// [`crate::ProducerStates`]).
    producers: crate::ProducerStates,
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
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(|e| StorageError::io("create dir", &dir, e))?;
            if let Some(parent) = dir.parent() {
                crate::dir::sync_dir(parent)?;
            }
        }
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
            segments.push(Segment::create(&dir, Offset::ZERO, &config)?);
        }
        report.segments = segments.len();
        let latest = segments.last().map_or(Offset::ZERO, Segment::next_offset);
        let last_append_ms = segments.iter().map(Segment::max_append_ms).max().unwrap_or(i64::MIN);
        let mut log = PartitionLog {
            dir,
            config,
            segments,
            synced_offset: latest,
            last_sync: Instant::now(),
            last_append_ms,
            failed: None,
            report,
            producers: crate::ProducerStates::new(),
            #[cfg(test)]
            fail_next_sync: false,
        };
        log.load_producers()?;
        Ok(log)
    }

    /// What opening the log found and repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The latest append time of a stored batch (ms; `i64::MIN` when none).
    pub fn last_append_ms(&self) -> i64 {
        self.last_append_ms
    }

    /// The log's settings.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replaces the settings that may change at run time (retention, roll
    /// thresholds, fsync policy); takes effect from the next append.
    pub fn set_config(&mut self, config: LogConfig) -> Result<()> {
        config.validate()?;
        self.producers
            .set_expiration_ms(config.producer_id_expiration_ms as i64);
        self.config = config;
        Ok(())
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// First offset still stored.
    pub fn earliest(&self) -> Offset {
        self.segments.first().map_or(Offset::ZERO, Segment::base_offset)
    }

    /// Log end offset: the offset the next record will get.
    pub fn latest(&self) -> Offset {
        self.active().next_offset()
    }

    /// Offsets below this one are known to be on disk (fsynced).
    pub fn durable_offset(&self) -> Offset {
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
        self.append_stamped(batch, Term::ZERO, now_ms())
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
    pub fn append_stamped(&mut self, batch: &[u8], term: Term, now_ms: i64) -> Result<AppendInfo> {
        self.check_writable()?;
        self.check_size(batch)?;
        let (b, payload) = BatchRef::validate_with(batch).map_err(|source| StorageError::InvalidBatch { source })?;
        let base = self.latest();
        let append_ms = now_ms.max(self.last_append_ms);
        let stamp = header::Stamp {
            term,
            raft_index: crate::RaftIndex::ZERO,
            append_time_ms: append_ms,
        };
        let prefix = header::stamped_prefix(batch, &payload, base, &stamp);
        let info = BatchInfo {
            base,
            next: base.plus(u64::from(b.record_count())),
            len: batch.len() as u64,
            max_timestamp_ms: b.max_timestamp_ms(),
            append_ms,
            term,
            raft_index: crate::RaftIndex::ZERO,
            producer: b.producer(),
        };
        self.write(&prefix, &batch[PRODUCER_PART..], &info, now_ms)?;
        Ok(AppendInfo {
            base_offset: base,
            last_offset: Offset(info.next.0.saturating_sub(1)),
            append_time_ms: append_ms,
        })
    }

    /// Appends a batch a leader already stamped (a replica's copy), byte for
    /// byte. Its base offset must be the log end. The view says the bytes
    /// were validated already (with their CRC, when they reached this node):
    /// nothing is hashed again here.
    ///
    /// # Errors
    /// `UnexpectedOffset` if it does not continue the log; as `append_stamped`.
    pub fn append_replicated(&mut self, b: BatchRef<'_>) -> Result<AppendInfo> {
        let batch = b.as_bytes();
        self.check_writable()?;
        self.check_size(batch)?;
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
            last_offset: Offset(info.next.0.saturating_sub(1)),
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
        self.fold_producer(info);
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
        tracing::debug!(dir = %self.dir.display(), base_offset = %next, "rolled segment");
        self.snapshot_producers(next);
        Ok(())
    }

    /// `OffsetOutOfRange` for `requested`, naming the readable range: from
    /// the earliest offset to `end` (the log end, or for a replicated log the
    /// high watermark, so a client resetting to it never sits above what
    /// is committed).
    fn out_of_range(&self, requested: Offset, end: Offset) -> StorageError {
        StorageError::OffsetOutOfRange {
            requested,
            earliest: self.earliest(),
            latest: end.min(self.latest()),
        }
    }

    /// Index of the segment that holds `offset` (the last with base ≤ offset).
    fn segment_for(&self, offset: Offset) -> usize {
        self.segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1)
    }

    /// Whole batches starting with the one that contains `offset`, up to
    /// `max_bytes` (at least one batch). See [`PartitionLog::read_bounded`].
    pub fn read(&self, offset: Offset, max_bytes: usize) -> Result<Bytes> {
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
    /// equal to `latest()` is an empty answer), naming `[earliest, upper]` as
    /// the readable range; `Corrupt` if a stored batch fails validation.
    pub fn read_bounded(&self, offset: Offset, max_bytes: usize, upper: Offset) -> Result<Bytes> {
        if offset < self.earliest() || offset > self.latest() {
            return Err(self.out_of_range(offset, upper));
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
    pub fn locate(&self, offset: Offset) -> Result<Option<BatchLocation>> {
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
    pub fn lookup_by_timestamp(&self, ts_ms: i64) -> Result<Option<Offset>> {
        self.lookup_by_timestamp_bounded(ts_ms, self.latest())
    }

    /// [`PartitionLog::lookup_by_timestamp`] among offsets below `upper`.
    pub fn lookup_by_timestamp_bounded(&self, ts_ms: i64, upper: Offset) -> Result<Option<Offset>> {
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
    pub fn truncate_from(&mut self, offset: Offset) -> Result<()> {
        if offset < self.earliest() || offset > self.latest() {
            return Err(self.out_of_range(offset, self.latest()));
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
        tracing::info!(dir = %self.dir.display(), %offset, "truncated log");
        self.load_producers()
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
    fn creating_and_removing_segments_syncs_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 1024,
            max_batch_bytes: 512,
            ..LogConfig::default()
        };
        let mut log = PartitionLog::open(dir.path(), cfg).unwrap();
        let synced =
            |log: &PartitionLog| crate::dir::SYNCED.with(|s| s.borrow().iter().filter(|d| *d == log.dir()).count());
        let at_open = synced(&log);
        assert!(at_open >= 1, "the first segment's names are durable");
        log.append(&one_record()).unwrap();
        log.roll().unwrap();
        assert!(
            synced(&log) > at_open,
            "a roll creates a segment (and a producer snapshot): the directory is synced"
        );
        log.append(&one_record()).unwrap();
        log.truncate_from(Offset(0)).unwrap();
        assert!(
            synced(&log) >= at_open + 2,
            "truncation removed a segment: the directory is synced"
        );
        log.reset_to(Offset(10)).unwrap();
        assert!(synced(&log) >= at_open + 3, "a reset removes and creates segments");
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
        assert_eq!(log.durable_offset(), Offset::ZERO);
        // Reads of what is there still work.
        assert!(!log.read(Offset::ZERO, 100).unwrap().is_empty());
    }
}
