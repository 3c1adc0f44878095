//! Walking the batches of a segment's bytes: header reads (no CRC) for
//! lookups, full validation for recovery and reads, and the contiguity check
//! every walk makes (each batch starts where the previous one ended).

use crate::batch::header::{self, BatchRef, HEADER_LEN};
use crate::batch::{ProducerInfo, framed_len};
use crate::coordinates::{Offset, RaftIndex, Term};
use crate::error::Result;

/// What the log needs to know about a batch it stores.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchInfo {
    pub base: Offset,
    pub next: Offset,
    pub len: u64,
    pub max_timestamp_ms: i64,
    pub append_ms: i64,
    pub term: Term,
    pub raft_index: RaftIndex,
    /// The idempotent producer that wrote it, if any.
    pub producer: Option<ProducerInfo>,
}

impl BatchInfo {
    pub(crate) fn of(b: &BatchRef<'_>) -> Self {
        BatchInfo {
            base: b.base_offset(),
            next: b.next_offset(),
            len: b.len() as u64,
            max_timestamp_ms: b.max_timestamp_ms(),
            append_ms: b.append_time_ms(),
            term: b.term(),
            raft_index: b.raft_index(),
            producer: b.producer(),
        }
    }
}

/// Reads the header of the batch at `pos` without checking its CRC.
pub(super) fn header_at(buf: &[u8], pos: u64, limit: u64) -> std::result::Result<BatchInfo, String> {
    let p = pos as usize;
    let avail = limit.saturating_sub(pos) as usize;
    if avail < HEADER_LEN {
        return Err(format!("{avail} bytes left, less than a batch header"));
    }
    let b = &buf[p..p + avail];
    let len = framed_len(b).unwrap_or(0);
    if len < HEADER_LEN || len > avail {
        return Err(format!("batch length {len} does not fit in the {avail} bytes left"));
    }
    let count = header::u32_at(b, header::RECORD_COUNT);
    let control = header::u16_at(b, header::ATTRIBUTES) & header::CONTROL_BIT != 0;
    if control != (count == 0) {
        return Err("record count does not match the control flag".into());
    }
    let base = header::u64_at(b, header::BASE_OFFSET);
    Ok(BatchInfo {
        base: Offset(base),
        next: Offset(base.saturating_add(u64::from(count))),
        len: len as u64,
        max_timestamp_ms: header::i64_at(b, header::MAX_TIMESTAMP),
        append_ms: header::i64_at(b, header::APPEND_TIME),
        term: Term(header::u64_at(b, header::TERM)),
        raft_index: RaftIndex(header::u64_at(b, header::RAFT_INDEX)),
        producer: header::producer_at(b),
    })
}

/// Validates the batch at `pos` fully (framing and CRC).
pub(super) fn validated_at(buf: &[u8], pos: u64, limit: u64) -> std::result::Result<BatchInfo, String> {
    let info = header_at(buf, pos, limit)?;
    let p = pos as usize;
    BatchRef::validate(&buf[p..p + info.len as usize]).map_err(|e| e.to_string())?;
    Ok(info)
}

/// Result of walking batches from some position.
pub(super) struct Walk {
    /// Position after the last good batch.
    pub end: u64,
    /// Offset after the last good batch.
    pub next_offset: Offset,
    /// Where and why the walk stopped early.
    pub error: Option<(u64, String)>,
}

/// Walks batches in `buf[from..limit]`, expecting contiguous offsets from
/// `expected`, calling `visit(position, info)` for each good one.
pub(super) fn walk(
    buf: &[u8],
    from: u64,
    limit: u64,
    expected: Offset,
    verify_crc: bool,
    mut visit: impl FnMut(u64, &BatchInfo) -> Result<()>,
) -> Result<Walk> {
    let (mut pos, mut next) = (from, expected);
    while pos < limit {
        let r = if verify_crc {
            validated_at(buf, pos, limit)
        } else {
            header_at(buf, pos, limit)
        };
        let info = match r {
            Ok(i) if i.base == next => i,
            Ok(i) => {
                let reason = format!("batch starts at offset {} but {next} was expected", i.base);
                return Ok(Walk {
                    end: pos,
                    next_offset: next,
                    error: Some((pos, reason)),
                });
            }
            Err(reason) => {
                return Ok(Walk {
                    end: pos,
                    next_offset: next,
                    error: Some((pos, reason)),
                });
            }
        };
        visit(pos, &info)?;
        pos += info.len;
        next = info.next;
    }
    Ok(Walk {
        end: pos,
        next_offset: next,
        error: None,
    })
}

/// The first position in `from..until` where a whole valid batch (framing
/// and CRC, within `buf[..limit]`) starts whose base offset is at least
/// `after`: proof that damage at `from` is not a torn tail (a torn write
/// leaves nothing valid behind it). Every byte position is a candidate, so
/// the base offset filters cheaply before the header and CRC are checked.
pub(super) fn valid_batch_after(buf: &[u8], from: u64, until: u64, limit: u64, after: Offset) -> Option<u64> {
    let limit = limit.min(buf.len() as u64);
    let mut pos = from;
    while pos < until && pos + HEADER_LEN as u64 <= limit {
        let p = pos as usize;
        let base = u64::from_le_bytes(buf[p..p + 8].try_into().unwrap_or_default());
        // Offsets only grow (and not by 2^40 within one segment): anything
        // else cannot be a later batch of this segment.
        if base >= after.get() && base - after.get() < (1 << 40) && validated_at(buf, pos, limit).is_ok() {
            return Some(pos);
        }
        pos += 1;
    }
    None
}
