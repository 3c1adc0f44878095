//! A test-only durability journal. With `STRAND_TEST_FSYNC_JOURNAL=<file>`
//! in the environment, every successful `fdatasync` of a segment appends
//! `<segment path>\t<bytes durable>` to that file. A fault test can then
//! simulate a power loss: kill every broker, and cut each segment to some
//! length at or above the last one its journal records (what was never
//! synced may be lost; what was synced may not).
//!
//! Off unless the variable is set (then one check of a once-initialized
//! cell per sync).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use parking_lot::Mutex;

/// The environment variable naming the journal file.
pub const JOURNAL_ENV: &str = "STRAND_TEST_FSYNC_JOURNAL";

static JOURNAL: OnceLock<Option<Mutex<File>>> = OnceLock::new();

/// Records that the first `len` bytes of `path` are durable.
pub(crate) fn synced(path: &Path, len: u64) {
    let journal = JOURNAL.get_or_init(|| {
        let p = std::env::var_os(JOURNAL_ENV)?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
            .map(Mutex::new)
    });
    if let Some(j) = journal {
        let mut f = j.lock();
        // Best effort: the journal is test instrumentation, not data.
        let _ = writeln!(f, "{}\t{len}", path.display());
    }
}
