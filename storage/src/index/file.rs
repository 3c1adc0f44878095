//! A file of fixed-width entries, reserved in steps and memory-mapped.
//!
//! Invariant: the first `entries` slots hold valid entries; every slot after
//! them up to the file's length is zero. The file is only written through the
//! map, and only within reserved space. No descriptor is kept open: the map
//! outlives it, and the file is opened again only to grow or shrink (rare),
//! so a broker of ten thousand partitions holds one descriptor per segment,
//! not three.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use memmap2::MmapMut;

use crate::error::{Result, StorageError};
use crate::prealloc;

pub(crate) struct IndexFile {
    path: PathBuf,
    map: Option<MmapMut>,
    entry_len: usize,
    entries: usize,
    max_bytes: u64,
    grow_step: u64,
    /// The map holds writes not yet synced: `sync` of a clean map is skipped
    /// (on ext4 an `msync` of one still costs a device flush).
    dirty: AtomicBool,
}

impl IndexFile {
    /// Opens (creating if missing) the index at `path`. The caller decides how
    /// many slots are valid with [`IndexFile::set_entries`].
    pub(crate) fn open(path: &Path, entry_len: usize, max_bytes: u64, grow_step: u64) -> Result<Self> {
        let mut idx = IndexFile {
            path: path.to_path_buf(),
            map: None,
            entry_len,
            entries: 0,
            max_bytes: max_bytes - max_bytes % entry_len as u64,
            grow_step,
            dirty: AtomicBool::new(false),
        };
        idx.remap()?;
        Ok(idx)
    }

    fn file(&self) -> Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(|e| StorageError::io("open index", &self.path, e))
    }

    fn remap(&mut self) -> Result<()> {
        let file = self.file()?;
        let len = file
            .metadata()
            .map_err(|e| StorageError::io("stat index", &self.path, e))?
            .len();
        self.map = if len == 0 {
            None
        } else {
            // SAFETY: the file is owned by this struct and only ever written
            // through this map; other processes do not touch Strand's files.
            Some(unsafe { MmapMut::map_mut(&file) }.map_err(|e| StorageError::io("mmap index", &self.path, e))?)
        };
        Ok(())
    }

    /// Every slot of the file, valid or not.
    pub(crate) fn raw(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// The valid entries.
    pub(crate) fn valid(&self) -> &[u8] {
        &self.raw()[..self.entries * self.entry_len]
    }

    pub(crate) fn entries(&self) -> usize {
        self.entries
    }

    /// Declares the first `n` slots valid and zeroes the rest of the slots
    /// that were in use.
    pub(crate) fn set_entries(&mut self, n: usize) {
        let capacity = self.raw().len() / self.entry_len;
        let n = n.min(capacity);
        if let Some(map) = self.map.as_mut() {
            let end = map.len() - map.len() % self.entry_len;
            // Zero everything after the valid slots, so stale entries never
            // come back after a crash.
            let from = n * self.entry_len;
            if map[from..end].iter().any(|&b| b != 0) {
                map[from..end].fill(0);
                *self.dirty.get_mut() = true;
            }
        }
        self.entries = n;
    }

    pub(crate) fn is_full(&self) -> bool {
        ((self.entries + 1) * self.entry_len) as u64 > self.max_bytes
    }

    /// Makes sure the file has room for one more entry, reserving a step of
    /// space if not. Called before the log is written, so a full disk fails an
    /// append before any of its bytes land.
    pub(crate) fn reserve_one(&mut self) -> Result<()> {
        let need = (self.entries + 1) * self.entry_len;
        if need > self.raw().len() {
            let target = prealloc::grown_size(self.raw().len() as u64, need as u64, self.grow_step)
                .min(self.max_bytes)
                .max(need as u64);
            prealloc::reserve(&self.file()?, &self.path, target)?;
            self.remap()?;
        }
        Ok(())
    }

    /// Appends one entry, reserving more file space first if needed.
    pub(crate) fn push(&mut self, entry: &[u8]) -> Result<()> {
        debug_assert_eq!(entry.len(), self.entry_len);
        self.reserve_one()?;
        let at = self.entries * self.entry_len;
        if let Some(map) = self.map.as_mut() {
            map[at..at + self.entry_len].copy_from_slice(entry);
            *self.dirty.get_mut() = true;
        }
        self.entries += 1;
        Ok(())
    }

    /// Writes dirty pages of the map to disk.
    pub(crate) fn sync(&self) -> Result<()> {
        if let Some(map) = &self.map
            && self.dirty.swap(false, Ordering::AcqRel)
        {
            map.flush().map_err(|e| {
                self.dirty.store(true, Ordering::Release);
                StorageError::io("msync index", &self.path, e)
            })?;
        }
        Ok(())
    }

    /// Syncs and shrinks the file to its valid entries (for a sealed segment).
    pub(crate) fn seal(&mut self) -> Result<()> {
        self.sync()?;
        self.map = None;
        self.file()?
            .set_len((self.entries * self.entry_len) as u64)
            .map_err(|e| StorageError::io("truncate index", &self.path, e))?;
        self.remap()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::IndexFile;

    /// Every write through the map marks it for the next sync, and a sync
    /// clears the mark: a clean index is never msynced, a written one always.
    #[test]
    fn writes_mark_the_map_for_the_next_sync() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = IndexFile::open(&dir.path().join("i.index"), 8, 4096, 4096).unwrap();
        let dirty = |i: &IndexFile| i.dirty.load(Ordering::Acquire);
        assert!(!dirty(&idx), "a new index has nothing to sync");
        idx.push(&[1u8; 8]).unwrap();
        idx.push(&[2u8; 8]).unwrap();
        assert!(dirty(&idx), "a pushed entry must be synced");
        idx.sync().unwrap();
        assert!(!dirty(&idx));
        idx.sync().unwrap();
        assert!(!dirty(&idx), "a clean map stays clean");
        idx.set_entries(1);
        assert!(dirty(&idx), "zeroing a dropped entry must be synced too");
        idx.sync().unwrap();
        idx.set_entries(1);
        assert!(!dirty(&idx), "nothing zeroed, nothing to sync");
        assert_eq!(idx.valid(), &[1u8; 8]);
    }
}
