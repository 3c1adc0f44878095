//! Directory durability. Creating, renaming or removing a file changes its
//! directory, and that change is durable only once the directory itself is
//! fsynced: without it, a power loss can lose a new segment or bring back one
//! that truncation or retention removed (after which the log would refuse to
//! open, its segments no longer contiguous).

use std::path::Path;

use crate::error::{Result, StorageError};

/// Fsyncs the directory `dir` (its entries: names created, renamed, removed).
///
/// # Errors
/// [`StorageError::Io`] when it cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> Result<()> {
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

/// Replaces the file at `path` with `bytes` so that a crash leaves either
/// the old contents or the new, never a mix or nothing: the bytes go to a
/// temporary sibling, which is fsynced, renamed over `path`, and then the
/// directory is fsynced (state files: `node.json`, `raft-state.json`).
///
/// # Errors
/// [`StorageError::Io`] naming the step that failed.
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let mut f = std::fs::File::create(&tmp).map_err(|e| StorageError::io("create", &tmp, e))?;
    f.write_all(bytes).map_err(|e| StorageError::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| StorageError::io("fsync", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| StorageError::io("rename", path, e))?;
    sync_dir(parent(path))
}

/// Renames `from` to `to` (a file or a directory) and fsyncs both parent
/// directories, so a crash never brings back the old name.
///
/// # Errors
/// [`StorageError::Io`] naming the step that failed.
pub fn rename_durably(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| StorageError::io("rename", from, e))?;
    sync_dir(parent(to))?;
    if parent(from) != parent(to) {
        sync_dir(parent(from))?;
    }
    Ok(())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synced() -> Vec<std::path::PathBuf> {
        SYNCED.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }

    #[test]
    fn a_replaced_file_is_whole_and_its_directory_synced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        synced();
        replace_file(&path, b"one").unwrap();
        replace_file(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!dir.path().join("state.json.tmp").exists(), "no temporary left behind");
        assert_eq!(synced(), vec![dir.path().to_path_buf(); 2]);
    }

    #[test]
    fn a_rename_syncs_both_directories() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("x"), b"1").unwrap();
        synced();
        rename_durably(&a.join("x"), &b.join("y")).unwrap();
        assert_eq!(std::fs::read(b.join("y")).unwrap(), b"1");
        assert_eq!(synced(), vec![b.clone(), a.clone()]);
        rename_durably(&a, &dir.path().join("c")).unwrap();
        assert_eq!(synced(), vec![dir.path().to_path_buf()], "same parent: synced once");
    }
}
