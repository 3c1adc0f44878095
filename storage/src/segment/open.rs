//! Opening an existing segment: the active one is validated batch by batch
//! and a torn or corrupt tail is cut (unless valid data follows: that is
//! damage, not a torn write); a sealed one is verified and its indexes are
//! rebuilt when missing or inconsistent.

use std::path::Path;

use super::scan::{header_at, valid_batch_after, validated_at, walk};
use super::{Segment, segment_paths};
use crate::config::LogConfig;
use crate::coordinates::Offset;
use crate::error::{Result, StorageError};
use crate::index::{self, OFFSET_ENTRY, TIME_ENTRY};
use crate::prealloc;

/// What opening an active segment found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TailRepair {
    pub truncated_at: Option<u64>,
    pub bytes_truncated: u64,
    pub reason: Option<String>,
}

impl Segment {
    /// Opens the last segment of a log: validates every batch, cuts a torn or
    /// corrupt tail and rebuilds both indexes from the log.
    ///
    /// # Errors
    /// [`StorageError::Corrupt`] if a bad batch is followed by a valid one
    /// (found through the previous index, or by scanning the bytes after it):
    /// that is damage in the middle of the log, not a torn write, and
    /// truncating there would drop acknowledged data.
    pub(crate) fn open_active(dir: &Path, base: Offset, cfg: &LogConfig) -> Result<(Self, TailRepair)> {
        let mut s = Self::open_files(dir, base, cfg, false)?;
        let file_len = s.capacity;
        let old_positions: Vec<u64> = {
            let raw = s.offset_index.raw();
            (0..raw.len() / OFFSET_ENTRY)
                .map(|i| u64::from(index::read_offset_entry(raw, i).1))
                .filter(|&p| p > 0 && p < file_len)
                .collect()
        };
        s.offset_index.set_entries(0);
        s.time_index.set_entries(0);
        let map = s.map.clone();
        let walk = walk(&map, 0, file_len, base, true, |pos, info| s.index_batch(pos, info))?;
        let mut repair = TailRepair::default();
        if let Some((pos, reason)) = walk.error {
            let garbage = map[pos as usize..file_len as usize].iter().rposition(|&b| b != 0);
            if let Some(last_nonzero) = garbage {
                // A valid batch anywhere after the bad one means damage, not a
                // torn write: the old index points at some; a byte scan finds
                // those in the last index interval too.
                let end = pos + last_nonzero as u64 + 1;
                let later_batch = old_positions
                    .iter()
                    .copied()
                    .find(|&p| p > pos && validated_at(&map, p, file_len).is_ok())
                    .or_else(|| valid_batch_after(&map, pos + 1, end, file_len, walk.next_offset));
                if let Some(p) = later_batch {
                    return Err(StorageError::Corrupt {
                        file: s.log_path.clone(),
                        position: pos,
                        reason: format!("{reason}; a valid batch follows at byte {p}"),
                    });
                }
                let cut_to = pos + last_nonzero as u64 + 1;
                prealloc::zero_range(&s.file, &s.log_path, pos, cut_to)?;
                s.file
                    .sync_data()
                    .map_err(|e| StorageError::io("fdatasync", &s.log_path, e))?;
                crate::journal::synced(&s.log_path, pos);
                tracing::warn!(
                    file = %s.log_path.display(),
                    position = pos,
                    bytes = cut_to - pos,
                    reason = %reason,
                    "truncated a torn or corrupt tail while recovering the active segment"
                );
                repair = TailRepair {
                    truncated_at: Some(pos),
                    bytes_truncated: cut_to - pos,
                    reason: Some(reason),
                };
            }
        }
        s.size = walk.end;
        s.next_offset = walk.next_offset;
        Ok((s, repair))
    }

    /// Opens a sealed (non-last) segment. With `verify`, every batch's CRC is
    /// checked; damaged or missing indexes are rebuilt from the log.
    ///
    /// # Errors
    /// [`StorageError::Corrupt`] naming file and position if any batch is bad:
    /// a sealed segment is never truncated on open.
    pub(crate) fn open_sealed(dir: &Path, base: Offset, cfg: &LogConfig, verify: bool) -> Result<(Self, bool)> {
        let mut s = Self::open_files(dir, base, cfg, false)?;
        s.sealed = true;
        s.size = s.capacity;
        let map = s.map.clone();
        let size = s.size;
        let corrupt = |pos: u64, reason: String, path: &Path| StorageError::Corrupt {
            file: path.to_path_buf(),
            position: pos,
            reason,
        };
        let oi_len = s.offset_index.raw().len();
        let ti_len = s.time_index.raw().len();
        let mut index_ok = oi_len % OFFSET_ENTRY == 0 && ti_len % TIME_ENTRY == 0 && oi_len > 0;
        if index_ok {
            s.offset_index.set_entries(oi_len / OFFSET_ENTRY);
            s.time_index.set_entries(ti_len / TIME_ENTRY);
            index_ok = index::offset_entries_are_sane(s.offset_index.valid(), size);
        }
        let mut resume = (0u64, base);
        if index_ok {
            let (rel, pos) = index::read_offset_entry(s.offset_index.valid(), s.offset_index.entries() - 1);
            match header_at(&map, u64::from(pos), size) {
                Ok(info) if info.base == base.plus(u64::from(rel)) => resume = (u64::from(pos), info.base),
                _ => index_ok = false,
            }
        }
        let rebuild = !index_ok;
        if rebuild {
            s.offset_index.set_entries(0);
            s.time_index.set_entries(0);
            resume = (0, base);
        } else if let Some(last) = s.time_index.entries().checked_sub(1) {
            s.last_time_entry_ms = index::read_time_entry(s.time_index.valid(), last).0;
            s.max_timestamp_ms = s.last_time_entry_ms;
        }
        let (from, expected) = if verify { (0, base) } else { resume };
        let mut first_append = None;
        let w = walk(&map, from, size, expected, verify, |pos, info| {
            if first_append.is_none() && info.next > info.base {
                first_append = Some(info.append_ms);
            }
            if rebuild {
                s.index_batch(pos, info)
            } else {
                s.max_timestamp_ms = s.max_timestamp_ms.max(info.max_timestamp_ms);
                s.max_append_ms = s.max_append_ms.max(info.append_ms);
                Ok(())
            }
        })?;
        if let Some((pos, reason)) = w.error {
            return Err(corrupt(pos, reason, &s.log_path));
        }
        if size == 0 {
            return Err(corrupt(0, "sealed segment is empty".into(), &s.log_path));
        }
        if !rebuild && !index::time_entries_are_sane(s.time_index.valid(), w.next_offset.since(base)) {
            // Offsets index fine, time index not: rebuild both from the log.
            return Self::rebuild_sealed(dir, base, cfg);
        }
        s.next_offset = w.next_offset;
        s.first_append_ms = s.first_append_ms.or(first_append);
        if rebuild {
            tracing::warn!(file = %s.offset_index.path().display(), "rebuilt a missing or damaged index from the log");
            s.offset_index.seal()?;
            s.time_index.seal()?;
        }
        Ok((s, rebuild))
    }

    fn rebuild_sealed(dir: &Path, base: Offset, cfg: &LogConfig) -> Result<(Self, bool)> {
        let [_, idx, tidx] = segment_paths(dir, base);
        for p in [&idx, &tidx] {
            std::fs::remove_file(p).map_err(|e| StorageError::io("remove index", p, e))?;
        }
        Self::open_sealed(dir, base, cfg, false)
    }
}
