//! Sparse indexes of a segment: offset → file position and timestamp →
//! offset, each a memory-mapped file of fixed-width little-endian entries.
//!
//! Lookups are free functions over the entry bytes so they can be tested
//! without files.

pub(crate) mod file;

/// Offset-index entry: `u32` offset relative to the segment base, `u32` byte
/// position in the segment file.
pub(crate) const OFFSET_ENTRY: usize = 8;
/// Time-index entry: `i64` running maximum record timestamp, `u32` relative
/// offset of the batch at which that maximum was reached.
pub(crate) const TIME_ENTRY: usize = 12;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_le_bytes(x)
}

pub(crate) fn offset_entry(rel: u32, pos: u32) -> [u8; OFFSET_ENTRY] {
    let mut e = [0u8; OFFSET_ENTRY];
    e[..4].copy_from_slice(&rel.to_le_bytes());
    e[4..].copy_from_slice(&pos.to_le_bytes());
    e
}

pub(crate) fn time_entry(ts: i64, rel: u32) -> [u8; TIME_ENTRY] {
    let mut e = [0u8; TIME_ENTRY];
    e[..8].copy_from_slice(&ts.to_le_bytes());
    e[8..].copy_from_slice(&rel.to_le_bytes());
    e
}

/// `(relative offset, position)` of offset-index entry `i`.
pub(crate) fn read_offset_entry(entries: &[u8], i: usize) -> (u32, u32) {
    let at = i * OFFSET_ENTRY;
    (u32_at(entries, at), u32_at(entries, at + 4))
}

/// `(timestamp, relative offset)` of time-index entry `i`.
pub(crate) fn read_time_entry(entries: &[u8], i: usize) -> (i64, u32) {
    let at = i * TIME_ENTRY;
    (i64_at(entries, at), u32_at(entries, at + 8))
}

/// The last entry whose relative offset is `<= rel`: where a scan for `rel`
/// may start. `None` if every entry is past it (or there are none).
pub(crate) fn lookup_offset(entries: &[u8], rel: u32) -> Option<(u32, u32)> {
    let n = entries.len() / OFFSET_ENTRY;
    let i = partition_point(n, |i| read_offset_entry(entries, i).0 <= rel);
    (i > 0).then(|| read_offset_entry(entries, i - 1))
}

/// The last entry whose running-max timestamp is `< ts`: every record up to
/// and including that entry's batch is older than `ts`, so a scan for the
/// first record at or after `ts` may start at that batch.
pub(crate) fn lookup_time(entries: &[u8], ts: i64) -> Option<(i64, u32)> {
    let n = entries.len() / TIME_ENTRY;
    let i = partition_point(n, |i| read_time_entry(entries, i).0 < ts);
    (i > 0).then(|| read_time_entry(entries, i - 1))
}

/// Number of leading entries in `0..n` for which `pred` holds (`pred` must be
/// true for a prefix and false after it).
fn partition_point(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Whether the offset-index entries are strictly increasing in both fields
/// and point inside a log of `log_size` bytes.
pub(crate) fn offset_entries_are_sane(entries: &[u8], log_size: u64) -> bool {
    let n = entries.len() / OFFSET_ENTRY;
    let mut prev: Option<(u32, u32)> = None;
    for i in 0..n {
        let (rel, pos) = read_offset_entry(entries, i);
        if u64::from(pos) >= log_size {
            return false;
        }
        match prev {
            None if rel != 0 || pos != 0 => return false,
            Some((pr, pp)) if rel <= pr || pos <= pp => return false,
            _ => {}
        }
        prev = Some((rel, pos));
    }
    true
}

/// Whether the time-index entries are non-decreasing in both fields and name
/// offsets below `next_rel`.
pub(crate) fn time_entries_are_sane(entries: &[u8], next_rel: u64) -> bool {
    let n = entries.len() / TIME_ENTRY;
    let mut prev: Option<(i64, u32)> = None;
    for i in 0..n {
        let (ts, rel) = read_time_entry(entries, i);
        if u64::from(rel) >= next_rel {
            return false;
        }
        if let Some((pt, pr)) = prev
            && (ts <= pt || rel <= pr)
        {
            return false;
        }
        prev = Some((ts, rel));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(list: &[(u32, u32)]) -> Vec<u8> {
        list.iter().flat_map(|&(r, p)| offset_entry(r, p)).collect()
    }

    #[test]
    fn offset_lookup_finds_the_last_entry_at_or_below() {
        let e = offsets(&[(0, 0), (10, 4096), (25, 8192)]);
        let cases = [
            (0, Some((0, 0))),
            (9, Some((0, 0))),
            (10, Some((10, 4096))),
            (24, Some((10, 4096))),
            (99, Some((25, 8192))),
        ];
        for (i, (rel, want)) in cases.into_iter().enumerate() {
            assert_eq!(lookup_offset(&e, rel), want, "#{i}: rel {rel}");
        }
        assert_eq!(lookup_offset(&[], 5), None, "empty index");
    }

    #[test]
    fn time_lookup_finds_the_last_entry_strictly_older() {
        let e: Vec<u8> = [(100i64, 0u32), (200, 5), (300, 9)]
            .iter()
            .flat_map(|&(t, r)| time_entry(t, r))
            .collect();
        let cases = [
            (50, None),
            (100, None),
            (101, Some((100, 0))),
            (300, Some((200, 5))),
            (301, Some((300, 9))),
        ];
        for (i, (ts, want)) in cases.into_iter().enumerate() {
            assert_eq!(lookup_time(&e, ts), want, "#{i}: ts {ts}");
        }
    }

    #[test]
    fn sanity_checks_reject_disorder_and_out_of_bounds() {
        assert!(offset_entries_are_sane(&offsets(&[(0, 0), (3, 100)]), 200));
        assert!(
            !offset_entries_are_sane(&offsets(&[(0, 0), (3, 100)]), 100),
            "position past the log"
        );
        assert!(
            !offset_entries_are_sane(&offsets(&[(0, 0), (3, 100), (3, 150)]), 200),
            "repeated offset"
        );
        assert!(
            !offset_entries_are_sane(&offsets(&[(1, 0)]), 200),
            "first entry must be the segment start"
        );
    }
}
