//! What opening a log found: the segment listing and the recovery report.

use std::path::{Path, PathBuf};

use crate::coordinates::Offset;
use crate::error::{Result, StorageError};

/// A torn or corrupt tail cut from the active segment on open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    /// The segment file.
    pub file: PathBuf,
    /// Byte position of the first removed byte.
    pub position: u64,
    /// Number of non-zero bytes removed.
    pub bytes: u64,
    /// Why the first removed batch was rejected.
    pub reason: String,
}

/// What [`crate::PartitionLog::open`] repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments opened.
    pub segments: usize,
    /// The tail cut from the active segment, if any.
    pub truncated: Option<Truncation>,
    /// Sealed segments whose index was missing or damaged and was rebuilt.
    pub rebuilt_indexes: Vec<PathBuf>,
}

/// Base offsets of the segments in `dir`, ascending (from `*.log` names).
pub(crate) fn segment_bases(dir: &Path) -> Result<Vec<Offset>> {
    offsets_named(dir, ".log")
}

/// The offsets that name files `<offset><suffix>` in `dir`, ascending.
pub(crate) fn offsets_named(dir: &Path, suffix: &str) -> Result<Vec<Offset>> {
    let rd = std::fs::read_dir(dir).map_err(|e| StorageError::io("read dir", dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| StorageError::io("read dir", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(o) = name.strip_suffix(suffix).and_then(|stem| stem.parse::<u64>().ok()) {
            out.push(Offset(o));
        }
    }
    out.sort_unstable();
    Ok(out)
}
