//! A replicated partition log seen as a Raft log: entry `i` is the stored
//! batch whose header says `raft_index = i` (control batches included, which
//! take a Raft index but no offset). Lookups binary-search segments by the
//! Raft index of their first batch, then the offset index, then walk headers;
//! none of them checks a CRC except [`PartitionLog::raft_entry`] and
//! [`PartitionLog::raft_entries`], which hand bytes to a peer.

use bytes::Bytes;

use super::{AppendInfo, PartitionLog};
use crate::batch::header::{self, BatchRef, PRODUCER_PART};
use crate::coordinates::{Offset, RaftIndex, Term};
use crate::error::{Result, StorageError};
use crate::segment::{BatchInfo, Segment};

impl PartitionLog {
    /// Appends a batch as a Raft leader does when it proposes: validates it,
    /// assigns the next offsets and stamps `stamp` (term, Raft index, append
    /// time) into the header. Returns the stored bytes' location like
    /// [`PartitionLog::append_stamped`]. The Raft index must follow the last
    /// stored one.
    ///
    /// # Errors
    /// `UnexpectedRaftIndex` if `stamp.raft_index` does not follow the log;
    /// otherwise as `append_stamped`.
    pub fn append_entry(&mut self, batch: &[u8], stamp: header::Stamp) -> Result<AppendInfo> {
        self.check_writable()?;
        self.check_size(batch)?;
        let expected = self.last_raft_index()?.map_or(stamp.raft_index, RaftIndex::next);
        if stamp.raft_index != expected {
            return Err(StorageError::UnexpectedRaftIndex {
                expected,
                got: stamp.raft_index,
            });
        }
        let (b, payload) = BatchRef::validate_with(batch).map_err(|source| StorageError::InvalidBatch { source })?;
        let base = self.latest();
        let prefix = header::stamped_prefix(batch, &payload, base, &stamp);
        let info = BatchInfo {
            base,
            next: base.plus(u64::from(b.record_count())),
            len: batch.len() as u64,
            max_timestamp_ms: b.max_timestamp_ms(),
            append_ms: stamp.append_time_ms,
            term: stamp.term,
            raft_index: stamp.raft_index,
            producer: b.producer(),
        };
        self.write(&prefix, &batch[PRODUCER_PART..], &info, stamp.append_time_ms)?;
        Ok(AppendInfo {
            base_offset: base,
            last_offset: Offset(info.next.0.saturating_sub(1)),
            append_time_ms: stamp.append_time_ms,
        })
    }

    /// Raft index of the first stored batch (`None` if the log is empty).
    pub fn first_raft_index(&self) -> Result<Option<RaftIndex>> {
        for seg in &self.segments {
            if let Some(info) = seg.first_batch()? {
                return Ok(Some(info.raft_index));
            }
        }
        Ok(None)
    }

    /// Raft index of the last stored batch (`None` if the log is empty).
    pub fn last_raft_index(&self) -> Result<Option<RaftIndex>> {
        for seg in self.segments.iter().rev() {
            if seg.is_empty() {
                continue;
            }
            let info = seg.last_batch()?;
            return Ok(info.map(|i| i.raft_index));
        }
        Ok(None)
    }

    fn segment_for_raft_index(&self, raft_index: RaftIndex) -> Result<Option<&Segment>> {
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
    pub fn raft_entry(&self, raft_index: RaftIndex) -> Result<Option<(Bytes, Term)>> {
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
    pub fn raft_term(&self, raft_index: RaftIndex) -> Result<Option<Term>> {
        let Some(seg) = self.segment_for_raft_index(raft_index)? else {
            return Ok(None);
        };
        Ok(seg.find_raft_index(raft_index)?.map(|(_, info)| info.term))
    }

    /// Raft entries `[low, high)` as stored batches with their terms, stopping
    /// once `max_bytes` is reached (at least one entry is returned).
    pub fn raft_entries(&self, low: RaftIndex, high: RaftIndex, max_bytes: u64) -> Result<Vec<(Bytes, Term)>> {
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
                idx = idx.next();
            }
        }
        Ok(out)
    }

    /// Raft entries `from..=last` as one contiguous slice of a segment map:
    /// whole stored batches, CRC-checked, at least one and then more while
    /// they fit in `max_bytes` (a read stops at a segment's end; call again
    /// from the next index). This is what a follower far behind is streamed:
    /// no copy, no per-entry allocation.
    ///
    /// # Errors
    /// `RaftIndexOutOfRange` if `from` is not stored; `Corrupt` if a batch
    /// fails its check.
    pub fn read_raft_range(&self, from: RaftIndex, last: RaftIndex, max_bytes: usize) -> Result<Bytes> {
        let not_stored = |log: &Self| -> Result<StorageError> {
            Ok(StorageError::RaftIndexOutOfRange {
                requested: from,
                first: log.first_raft_index()?.unwrap_or_default(),
                last: log.last_raft_index()?.unwrap_or_default(),
            })
        };
        let Some(seg) = self.segment_for_raft_index(from)? else {
            return Err(not_stored(self)?);
        };
        let Some((pos, _)) = seg.find_raft_index(from)? else {
            return Err(not_stored(self)?);
        };
        seg.read_raft(pos, max_bytes, last)
    }

    /// Removes Raft entries from `raft_index` on (a conflicting suffix). The
    /// removed bytes are zeroed and synced before this returns.
    ///
    /// # Errors
    /// `RaftIndexOutOfRange` if the entry is not stored.
    pub fn truncate_from_raft_index(&mut self, raft_index: RaftIndex) -> Result<()> {
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
            let first = self.first_raft_index()?.unwrap_or_default();
            return Err(StorageError::RaftIndexOutOfRange {
                requested: raft_index,
                first,
                last: last.unwrap_or_default(),
            });
        };
        seg.truncate_at(pos, info.base)?;
        let latest = self.latest();
        self.synced_offset = self.synced_offset.min(latest);
        tracing::info!(dir = %self.dir.display(), %raft_index, "truncated log at Raft index");
        // The removed batches leave the producers' state with them.
        self.load_producers()
    }
}
