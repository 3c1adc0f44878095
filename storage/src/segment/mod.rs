//! One segment of a partition: `<base_offset:020>.log` with its sparse
//! `.index` (offset → position) and `.timeindex` (timestamp → offset).
//!
//! Invariants:
//! - bytes `[0, size)` of the log file are whole, valid batches with
//!   contiguous offsets starting at `base_offset`; bytes from `size` to the
//!   end of the file are zero (reserved, not yet written);
//! - the log is written only with `pwrite` and only inside reserved space, and
//!   read only through a read-only map, so readers hold `Bytes` slices of the
//!   map that stay valid while the log grows, rolls or deletes the segment;
//! - a sealed segment's files are synced and shrunk to their exact sizes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::Mmap;

mod open;
mod scan;

pub(crate) use scan::BatchInfo;
use scan::{header_at, validated_at, walk};

use crate::batch::DecodedRecords;
use crate::batch::header::BatchRef;
use crate::config::LogConfig;
use crate::coordinates::{Offset, RaftIndex};
use crate::error::{Result, StorageError};
use crate::index::file::IndexFile;
use crate::index::{self, OFFSET_ENTRY, TIME_ENTRY};
use crate::prealloc;

struct MapOwner(Mmap);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn map_read_only(file: &File, path: &Path) -> Result<Bytes> {
    let len = file.metadata().map_err(|e| StorageError::io("stat", path, e))?.len();
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: Strand's segment files are written only by this process with
    // pwrite (never truncated below a live reader's range while mapped), so
    // the mapped bytes below `size` never change under a reader.
    let map = unsafe { Mmap::map(file) }.map_err(|e| StorageError::io("mmap", path, e))?;
    Ok(Bytes::from_owner(MapOwner(map)))
}

/// File names of the segment starting at `base`.
pub(crate) fn segment_paths(dir: &Path, base: Offset) -> [PathBuf; 3] {
    let base = base.0;
    [
        dir.join(format!("{base:020}.log")),
        dir.join(format!("{base:020}.index")),
        dir.join(format!("{base:020}.timeindex")),
    ]
}

pub(crate) struct Segment {
    base_offset: Offset,
    log_path: PathBuf,
    file: Arc<File>,
    map: Bytes,
    size: u64,
    capacity: u64,
    next_offset: Offset,
    offset_index: IndexFile,
    time_index: IndexFile,
    bytes_since_index: u64,
    last_index_rel: u32,
    max_timestamp_ms: i64,
    last_time_entry_ms: i64,
    first_append_ms: Option<i64>,
    max_append_ms: i64,
    sealed: bool,
    index_interval: u64,
    grow_step: u64,
}

impl Segment {
    pub(super) fn open_files(dir: &Path, base: Offset, cfg: &LogConfig, create: bool) -> Result<Self> {
        let [log_path, idx_path, tidx_path] = segment_paths(dir, base);
        // A new segment must not reuse an existing file: that would mean two
        // segments with one base offset, one overwriting the other.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(create)
            .open(&log_path)
            .map_err(|e| StorageError::io("open segment", &log_path, e))?;
        let capacity = file
            .metadata()
            .map_err(|e| StorageError::io("stat", &log_path, e))?
            .len();
        let map = map_read_only(&file, &log_path)?;
        // Index files grow 64 KiB at a time (8,192 offset entries).
        let index_step = (cfg.index_max_bytes / 16).clamp(4096, 64 * 1024);
        Ok(Segment {
            base_offset: base,
            offset_index: IndexFile::open(&idx_path, OFFSET_ENTRY, cfg.index_max_bytes, index_step)?,
            time_index: IndexFile::open(&tidx_path, TIME_ENTRY, cfg.index_max_bytes, index_step)?,
            log_path,
            file: Arc::new(file),
            map,
            size: 0,
            capacity,
            next_offset: base,
            bytes_since_index: 0,
            last_index_rel: 0,
            max_timestamp_ms: i64::MIN,
            last_time_entry_ms: i64::MIN,
            first_append_ms: None,
            max_append_ms: i64::MIN,
            sealed: false,
            index_interval: u64::from(cfg.index_interval_bytes),
            grow_step: cfg.preallocate_bytes,
        })
    }

    /// Creates a new, empty active segment starting at `base`.
    pub(crate) fn create(dir: &Path, base: Offset, cfg: &LogConfig) -> Result<Self> {
        let mut s = Self::open_files(dir, base, cfg, true)?;
        s.offset_index.set_entries(0);
        s.time_index.set_entries(0);
        // A page of each file now, so the first appends write into space
        // already reserved and mapped. A new partition's segment is made on
        // a blocking thread, its first entries are appended on the
        // replication loop: growing three files there for each of thousands
        // of new partitions (fallocate and mmap, a few ms each under load)
        // was what bounded how fast a large topic elected its leaders.
        // Best effort: on a full disk the segment is still made (a failure
        // here would leave its files behind, and the next roll would find
        // its name taken), and the first append then fails cleanly with
        // `DiskFull`, nothing written, as it always did.
        let _ = s
            .reserve_log(1)
            .and_then(|()| s.offset_index.reserve_one())
            .and_then(|()| s.time_index.reserve_one());
        // The three new names must survive a power loss with the data.
        crate::dir::sync_dir(dir)?;
        Ok(s)
    }

    /// Records `info` (a batch at `pos`) in the indexes and running maxima.
    pub(super) fn index_batch(&mut self, pos: u64, info: &BatchInfo) -> Result<()> {
        // Control batches carry no records and a synthetic append time: they
        // neither start a segment's age clock nor move its timestamps.
        if info.next > info.base {
            self.first_append_ms.get_or_insert(info.append_ms);
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(info.max_timestamp_ms);
        self.max_append_ms = self.max_append_ms.max(info.append_ms);
        let rel = info.base.since(self.base_offset) as u32;
        let first = self.offset_index.entries() == 0;
        // Control batches share their offset with the next batch; index only
        // strictly increasing offsets.
        let advances = first || self.last_index_rel < rel;
        if first || (self.bytes_since_index >= self.index_interval && advances) {
            self.last_index_rel = rel;
            self.offset_index.push(&index::offset_entry(rel, pos as u32))?;
            if self.max_timestamp_ms > self.last_time_entry_ms {
                self.time_index.push(&index::time_entry(self.max_timestamp_ms, rel))?;
                self.last_time_entry_ms = self.max_timestamp_ms;
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += info.len;
        Ok(())
    }

    /// Whether a batch of `len` bytes fits under `segment_bytes`, and the
    /// indexes have room for one more entry.
    pub(crate) fn has_room_for(&self, len: u64, segment_bytes: u64) -> bool {
        self.size + len <= segment_bytes && !self.offset_index.is_full() && !self.time_index.is_full()
    }

    /// Makes the log file hold at least `end` bytes (growing it in steps,
    /// see [`prealloc::grown_size`]) and maps what it holds.
    fn reserve_log(&mut self, end: u64) -> Result<()> {
        if end > self.capacity {
            let target = prealloc::grown_size(self.capacity, end, self.grow_step);
            prealloc::reserve(&self.file, &self.log_path, target)?;
            self.capacity = target;
            self.map = map_read_only(&self.file, &self.log_path)?;
        }
        Ok(())
    }

    /// Appends one stamped batch: `prefix` (the leader-owned header bytes)
    /// then `rest`. Space is reserved first, so a full disk fails here with
    /// nothing written.
    pub(crate) fn append(&mut self, prefix: &[u8], rest: &[u8], info: &BatchInfo) -> Result<()> {
        debug_assert!(!self.sealed);
        self.offset_index.reserve_one()?;
        self.time_index.reserve_one()?;
        let end = self.size + info.len;
        self.reserve_log(end)?;
        self.file
            .write_all_at(prefix, self.size)
            .and_then(|()| self.file.write_all_at(rest, self.size + prefix.len() as u64))
            .map_err(|e| StorageError::io("write", &self.log_path, e))?;
        self.index_batch(self.size, info)?;
        self.size = end;
        self.next_offset = info.next;
        Ok(())
    }

    /// Syncs the log and indexes and shrinks all three files to their sizes.
    pub(crate) fn seal(&mut self) -> Result<()> {
        self.sync()?;
        self.file
            .set_len(self.size)
            .map_err(|e| StorageError::io("truncate segment", &self.log_path, e))?;
        self.capacity = self.size;
        self.map = map_read_only(&self.file, &self.log_path)?;
        self.offset_index.seal()?;
        self.time_index.seal()?;
        self.sealed = true;
        Ok(())
    }

    /// `fdatasync` of the log file plus an `msync` of the indexes.
    pub(crate) fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| StorageError::io("fdatasync", &self.log_path, e))?;
        crate::journal::synced(&self.log_path, self.size);
        self.offset_index.sync()?;
        self.time_index.sync()
    }

    pub(crate) fn file_handle(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    /// Position of the batch containing `offset`, or `None` if the segment
    /// ends at or before it.
    pub(crate) fn find_position(&self, offset: Offset) -> Result<Option<(u64, BatchInfo)>> {
        if offset < self.base_offset || offset >= self.next_offset {
            return Ok(None);
        }
        let rel = offset.since(self.base_offset) as u32;
        let (mut expected, mut pos) = index::lookup_offset(self.offset_index.valid(), rel)
            .map_or((self.base_offset, 0), |(r, p)| {
                (self.base_offset.plus(u64::from(r)), u64::from(p))
            });
        while pos < self.size {
            let info = header_at(&self.map, pos, self.size).map_err(|reason| self.corrupt(pos, reason))?;
            // Offsets must continue exactly; anything else is damage, and
            // skipping the batch would silently lose its records.
            if info.base != expected {
                return Err(self.corrupt(
                    pos,
                    format!("batch starts at offset {} but {expected} was expected", info.base),
                ));
            }
            if offset < info.next {
                return Ok(Some((pos, info)));
            }
            expected = info.next;
            pos += info.len;
        }
        Ok(None)
    }

    /// Calls `visit` with every batch from the one holding `from` (or the
    /// first, when `from` is at or below the segment's base) to the end:
    /// header reads, no CRC.
    pub(crate) fn for_each_batch(&self, from: Offset, mut visit: impl FnMut(&BatchInfo)) -> Result<()> {
        let start = if from <= self.base_offset {
            Some(0)
        } else {
            self.find_position(from)?.map(|(p, _)| p)
        };
        let Some(mut pos) = start else {
            return Ok(());
        };
        while pos < self.size {
            let info = header_at(&self.map, pos, self.size).map_err(|reason| self.corrupt(pos, reason))?;
            visit(&info);
            pos += info.len;
        }
        Ok(())
    }

    /// Position of the batch whose Raft index is `raft_index`, if this
    /// segment holds it. Binary search over the offset index (reading each
    /// probed batch's Raft index from its header), then a header walk.
    pub(crate) fn find_raft_index(&self, raft_index: RaftIndex) -> Result<Option<(u64, BatchInfo)>> {
        let entries = self.offset_index.valid();
        let n = self.offset_index.entries();
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let pos = u64::from(index::read_offset_entry(entries, mid).1);
            let info = header_at(&self.map, pos, self.size).map_err(|reason| self.corrupt(pos, reason))?;
            if info.raft_index <= raft_index {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut pos = lo
            .checked_sub(1)
            .map_or(0, |i| u64::from(index::read_offset_entry(entries, i).1));
        while pos < self.size {
            let info = header_at(&self.map, pos, self.size).map_err(|reason| self.corrupt(pos, reason))?;
            if info.raft_index == raft_index {
                return Ok(Some((pos, info)));
            }
            if info.raft_index > raft_index {
                return Ok(None);
            }
            pos += info.len;
        }
        Ok(None)
    }

    /// The last batch's header, if the segment is not empty (index lookup of
    /// the last entry, then a header walk).
    pub(crate) fn last_batch(&self) -> Result<Option<BatchInfo>> {
        if self.size == 0 {
            return Ok(None);
        }
        let n = self.offset_index.entries();
        let mut pos = n.checked_sub(1).map_or(0, |i| {
            u64::from(index::read_offset_entry(self.offset_index.valid(), i).1)
        });
        let mut last = None;
        while pos < self.size {
            let info = header_at(&self.map, pos, self.size).map_err(|reason| self.corrupt(pos, reason))?;
            pos += info.len;
            last = Some(info);
        }
        Ok(last)
    }

    /// The first batch's header, if the segment is not empty.
    pub(crate) fn first_batch(&self) -> Result<Option<BatchInfo>> {
        if self.size == 0 {
            return Ok(None);
        }
        header_at(&self.map, 0, self.size)
            .map(Some)
            .map_err(|reason| self.corrupt(0, reason))
    }

    /// The batch at `pos`, CRC-checked, as a slice of the map.
    pub(crate) fn batch_at(&self, pos: u64) -> Result<(Bytes, BatchInfo)> {
        let info = validated_at(&self.map, pos, self.size).map_err(|reason| self.corrupt(pos, reason))?;
        Ok((self.map.slice(pos as usize..(pos + info.len) as usize), info))
    }

    fn corrupt(&self, position: u64, reason: String) -> StorageError {
        StorageError::Corrupt {
            file: self.log_path.clone(),
            position,
            reason,
        }
    }

    /// Whole batches from `pos`: at least one (if any is below `upper`), then
    /// more while the total stays within `max_bytes` and each batch ends at or
    /// below `upper`. Every returned batch has passed its CRC check; the bytes
    /// are a slice of the map, not a copy.
    pub(crate) fn read(&self, pos: u64, max_bytes: usize, upper: Offset) -> Result<Bytes> {
        let mut end = pos;
        while end < self.size {
            let info = validated_at(&self.map, end, self.size).map_err(|reason| self.corrupt(end, reason))?;
            if info.next > upper || (end > pos && (end - pos + info.len) as usize > max_bytes) {
                break;
            }
            end += info.len;
        }
        Ok(self.map.slice(pos as usize..end as usize))
    }

    /// Whole batches from `pos` whose Raft index is at most `last`: at least
    /// one (if any qualifies), then more while the total stays within
    /// `max_bytes`. CRC-checked, a slice of the map.
    pub(crate) fn read_raft(&self, pos: u64, max_bytes: usize, last: RaftIndex) -> Result<Bytes> {
        let mut end = pos;
        while end < self.size {
            let info = validated_at(&self.map, end, self.size).map_err(|reason| self.corrupt(end, reason))?;
            if info.raft_index > last || (end > pos && (end - pos + info.len) as usize > max_bytes) {
                break;
            }
            end += info.len;
        }
        Ok(self.map.slice(pos as usize..end as usize))
    }

    /// First offset in this segment whose record timestamp is `>= ts`.
    pub(crate) fn lookup_timestamp(&self, ts: i64, upper: Offset) -> Result<Option<Offset>> {
        if self.max_timestamp_ms < ts {
            return Ok(None);
        }
        let start = index::lookup_time(self.time_index.valid(), ts)
            .map_or(self.base_offset, |(_, rel)| self.base_offset.plus(u64::from(rel)));
        let Some((mut pos, _)) = self.find_position(start)? else {
            return Ok(None);
        };
        while pos < self.size {
            let info = validated_at(&self.map, pos, self.size).map_err(|reason| self.corrupt(pos, reason))?;
            if info.base >= upper {
                return Ok(None);
            }
            if info.max_timestamp_ms >= ts {
                let p = pos as usize;
                let batch = BatchRef::validate(&self.map[p..p + info.len as usize])
                    .map_err(|e| self.corrupt(pos, e.to_string()))?;
                let records = DecodedRecords::new(&batch).map_err(|e| self.corrupt(pos, e.to_string()))?;
                for r in records.iter() {
                    let r = r.map_err(|e| self.corrupt(pos, e.to_string()))?;
                    if r.timestamp_ms >= ts && r.offset < upper {
                        return Ok(Some(r.offset));
                    }
                }
            }
            pos += info.len;
        }
        Ok(None)
    }

    /// Removes every batch from `offset` on; `offset` must start a batch.
    /// The freed bytes are zeroed and synced before this returns, so a crash
    /// cannot bring the removed batches back.
    pub(crate) fn truncate_from(&mut self, offset: Offset) -> Result<()> {
        // Whatever is left becomes the active segment again.
        self.sealed = false;
        if offset >= self.next_offset {
            return Ok(());
        }
        let (pos, info) = match self.find_position(offset)? {
            Some(found) => found,
            None => return Ok(()),
        };
        if info.base != offset {
            return Err(StorageError::NotBatchBoundary {
                offset,
                batch_base: info.base,
            });
        }
        self.truncate_at(pos, offset)
    }

    /// Removes every batch from byte `pos` on; `pos` starts a batch whose base
    /// offset is `offset`. Zeroed and synced before returning.
    pub(crate) fn truncate_at(&mut self, pos: u64, offset: Offset) -> Result<()> {
        self.sealed = false;
        if pos >= self.size {
            return Ok(());
        }
        prealloc::zero_range(&self.file, &self.log_path, pos, self.size)?;
        self.file
            .sync_data()
            .map_err(|e| StorageError::io("fdatasync", &self.log_path, e))?;
        crate::journal::synced(&self.log_path, pos);
        let rel = offset.since(self.base_offset);
        let oi = self.offset_index.valid();
        let keep_oi = (0..self.offset_index.entries())
            .take_while(|&i| u64::from(index::read_offset_entry(oi, i).1) < pos)
            .count();
        let ti = self.time_index.valid();
        let keep_ti = (0..self.time_index.entries())
            .take_while(|&i| u64::from(index::read_time_entry(ti, i).1) < rel)
            .count();
        self.offset_index.set_entries(keep_oi);
        self.last_index_rel = keep_oi
            .checked_sub(1)
            .map_or(0, |i| index::read_offset_entry(self.offset_index.valid(), i).0);
        self.time_index.set_entries(keep_ti);
        self.last_time_entry_ms = keep_ti
            .checked_sub(1)
            .map_or(i64::MIN, |i| index::read_time_entry(self.time_index.valid(), i).0);
        self.max_timestamp_ms = self.last_time_entry_ms;
        self.max_append_ms = i64::MIN;
        let from = keep_oi.checked_sub(1).map_or(0, |i| {
            u64::from(index::read_offset_entry(self.offset_index.valid(), i).1)
        });
        self.size = pos;
        self.next_offset = offset;
        self.bytes_since_index = 0;
        let map = self.map.clone();
        let mut last_append = i64::MIN;
        let mut since = 0;
        let mut max_ts = self.max_timestamp_ms;
        walk(
            &map,
            from,
            pos,
            self.base_offset.plus(u64::from(
                keep_oi
                    .checked_sub(1)
                    .map_or(0, |i| index::read_offset_entry(self.offset_index.valid(), i).0),
            )),
            false,
            |_, info| {
                max_ts = max_ts.max(info.max_timestamp_ms);
                last_append = last_append.max(info.append_ms);
                since += info.len;
                Ok(())
            },
        )?;
        self.max_timestamp_ms = max_ts;
        self.max_append_ms = last_append;
        self.bytes_since_index = since;
        if pos == 0 {
            self.first_append_ms = None;
        }
        Ok(())
    }

    /// Deletes the segment's three files.
    pub(crate) fn delete(self, dir: &Path) -> Result<()> {
        for p in segment_paths(dir, self.base_offset) {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("remove segment file", &p, e)),
            }
        }
        // A removed segment that came back after a power loss would break
        // the log's contiguity.
        crate::dir::sync_dir(dir)
    }

    pub(crate) fn base_offset(&self) -> Offset {
        self.base_offset
    }
    pub(crate) fn next_offset(&self) -> Offset {
        self.next_offset
    }
    pub(crate) fn size(&self) -> u64 {
        self.size
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0
    }
    pub(crate) fn max_append_ms(&self) -> i64 {
        self.max_append_ms
    }
    pub(crate) fn first_append_ms(&self) -> Option<i64> {
        self.first_append_ms
    }
    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }
}
