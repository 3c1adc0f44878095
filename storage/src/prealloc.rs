//! Reserving file space before it is written or mapped.
//!
//! Every byte Strand later writes through `pwrite` or a mutable map is first
//! reserved with `fallocate`, so running out of disk is an `ENOSPC` from this
//! call (a clean append error) and never a `SIGBUS` from touching a map.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Result, StorageError};

/// Smallest reservation: one page.
const PAGE: u64 = 4096;

/// The size to grow a file of `current` bytes to so that it holds `need`:
/// steps start at one page and double with the file, up to `max_step`, so an
/// empty or nearly empty partition costs a few pages of disk, not a full step
/// per file, while a busy one still reserves `max_step` at a time.
pub(crate) fn grown_size(current: u64, need: u64, max_step: u64) -> u64 {
    let step = current.clamp(PAGE, max_step.max(PAGE));
    let target = need.max(current.saturating_add(step));
    target.div_ceil(PAGE).saturating_mul(PAGE)
}

/// Extends `file` to at least `len` bytes with blocks reserved on disk.
pub(crate) fn reserve(file: &File, path: &Path, len: u64) -> Result<()> {
    let current = file.metadata().map_err(|e| StorageError::io("stat", path, e))?.len();
    if current >= len {
        return Ok(());
    }
    let fd = file.as_raw_fd();
    let off = current as libc::off_t;
    let add = (len - current) as libc::off_t;
    // SAFETY: fd is an open file descriptor owned by `file` for the whole call.
    let rc = unsafe { libc::fallocate(fd, 0, off, add) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
        // File systems without fallocate: glibc's posix_fallocate writes
        // zeros, which reserves the blocks just the same (only slower).
        // SAFETY: as above.
        let rc = unsafe { libc::posix_fallocate(fd, off, add) };
        if rc == 0 {
            return Ok(());
        }
        return Err(StorageError::io(
            "posix_fallocate",
            path,
            std::io::Error::from_raw_os_error(rc),
        ));
    }
    Err(StorageError::io("fallocate", path, err))
}

/// Writes zeros over `[from, to)` (used when truncating, so no stale batch
/// can be mistaken for data after a crash).
pub(crate) fn zero_range(file: &File, path: &Path, from: u64, to: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    const CHUNK: usize = 64 * 1024;
    let zeros = [0u8; CHUNK];
    let mut pos = from;
    while pos < to {
        let n = ((to - pos) as usize).min(CHUNK);
        file.write_all_at(&zeros[..n], pos)
            .map_err(|e| StorageError::io("write zeros", path, e))?;
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::grown_size;

    #[test]
    fn growth_starts_at_a_page_and_doubles_up_to_the_step() {
        let step = 1 << 20;
        assert_eq!(grown_size(0, 100, step), 4096);
        assert_eq!(grown_size(4096, 4097, step), 8192);
        assert_eq!(grown_size(8192, 8200, step), 16384);
        assert_eq!(grown_size(1 << 20, (1 << 20) + 1, step), 2 << 20);
        assert_eq!(grown_size(8 << 20, (8 << 20) + 1, step), 9 << 20);
        // A batch larger than the step gets all it needs, page-aligned.
        assert_eq!(grown_size(4096, 3 << 20, step), 3 << 20);
        assert_eq!(grown_size(0, 5000, step), 8192);
    }
}
