//! Directory durability. Creating, renaming or removing a file changes its
//! directory, and that change is durable only once the directory itself is
//! fsynced: without it, a power loss can lose a new segment or bring back one
//! that truncation or retention removed (after which the log would refuse to
//! open, its segments no longer contiguous).

use std::path::Path;

use crate::error::{Result, StorageError};

/// Fsyncs the directory `dir` (its entries: names created, renamed, removed).
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io("fsync dir", dir, e))?;
    #[cfg(test)]
    SYNCED.with(|s| s.borrow_mut().push(dir.to_path_buf()));
    Ok(())
}

#[cfg(test)]
thread_local! {
    /// Directories this thread fsynced (what the storage's unit tests check).
    pub(crate) static SYNCED: std::cell::RefCell<Vec<std::path::PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}
