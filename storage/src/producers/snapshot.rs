//! Producer-state snapshots: `<offset:020>.producers` beside the segments,
//! holding the state of every batch below `offset` (written when the segment
//! that starts at `offset` is created), and the same bytes inside a Raft
//! snapshot.
//!
//! Layout (little-endian): `b"STRP"`, version `1`, `u64` offset, `u32`
//! producer count, then per producer `i64` id, `i16` epoch, `i64` last
//! append time, `u8` batch count and per batch `i32` first and last
//! sequence, `u64` base and last offset, `u64` Raft index, `i64` append
//! time; a CRC-32 of
//! everything before it ends the file. A snapshot that fails to decode is
//! ignored (the log folds the batches again from an older one): it is a
//! cache of what the log holds, never the only copy.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use super::{ProducerEntry, ProducerStates, REMEMBERED_BATCHES, SequencedBatch};
use crate::coordinates::{Offset, RaftIndex};
use crate::error::{Result, StorageError};

const MAGIC: &[u8; 4] = b"STRP";
const VERSION: u8 = 1;
const SUFFIX: &str = ".producers";

/// Path of the snapshot taken at `offset`.
pub(crate) fn path(dir: &Path, offset: Offset) -> PathBuf {
    dir.join(format!("{:020}{SUFFIX}", offset.get()))
}

/// Offsets of the snapshots in `dir`, ascending.
pub(crate) fn list(dir: &Path) -> Result<Vec<Offset>> {
    crate::recovery::offsets_named(dir, SUFFIX)
}

/// Writes the snapshot of `states` at `offset`, durably.
pub(crate) fn write(dir: &Path, offset: Offset, states: &ProducerStates) -> Result<()> {
    crate::dir::replace_file(&path(dir, offset), &encode(offset, states))
}

/// Removes the snapshot at `offset` (missing is fine).
pub(crate) fn remove(dir: &Path, offset: Offset) -> Result<()> {
    let p = path(dir, offset);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("remove", &p, e)),
    }
}

/// Reads the snapshot at `offset`; `None` (and a warning) when it is missing
/// or does not decode.
pub(crate) fn read(dir: &Path, offset: Offset) -> Option<ProducerStates> {
    let p = path(dir, offset);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(file = %p.display(), error = %e, "producer snapshot unreadable; folding the log instead");
            return None;
        }
    };
    match decode(&bytes) {
        Ok((at, states)) if at == offset => Some(states),
        Ok((at, _)) => {
            tracing::warn!(file = %p.display(), %at, "producer snapshot names another offset; ignored");
            None
        }
        Err(reason) => {
            tracing::warn!(file = %p.display(), reason, "producer snapshot damaged; folding the log instead");
            None
        }
    }
}

/// The snapshot's bytes (also a Raft snapshot's producer part).
pub fn encode(offset: Offset, states: &ProducerStates) -> Vec<u8> {
    let mut out = Vec::with_capacity(17 + states.len() * (19 + REMEMBERED_BATCHES * 40));
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&offset.get().to_le_bytes());
    let mut ids: Vec<i64> = states.iter().map(|(id, _)| id).collect();
    // Sorted, so equal states encode to equal bytes.
    ids.sort_unstable();
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        let Some(e) = states.get(id) else { continue };
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&e.epoch.to_le_bytes());
        out.extend_from_slice(&e.last_append_ms.to_le_bytes());
        out.push(e.batches.len() as u8);
        for b in &e.batches {
            out.extend_from_slice(&b.first_seq.to_le_bytes());
            out.extend_from_slice(&b.last_seq.to_le_bytes());
            out.extend_from_slice(&b.base_offset.get().to_le_bytes());
            out.extend_from_slice(&b.last_offset.get().to_le_bytes());
            out.extend_from_slice(&b.raft_index.get().to_le_bytes());
            out.extend_from_slice(&b.append_ms.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes [`encode`]'s bytes: the offset and the state.
///
/// # Errors
/// What is wrong with the bytes.
pub fn decode(bytes: &[u8]) -> std::result::Result<(Offset, ProducerStates), &'static str> {
    if bytes.len() < 4 + 1 + 8 + 4 + 4 {
        return Err("too short");
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes(crc.try_into().map_err(|_| "too short")?);
    if crc32fast::hash(body) != stored {
        return Err("CRC mismatch");
    }
    let mut r = Reader { buf: body, pos: 0 };
    if r.take(4)? != MAGIC {
        return Err("not a producer snapshot");
    }
    if r.take(1)?[0] != VERSION {
        return Err("unknown version");
    }
    let offset = Offset(r.u64()?);
    let count = r.u32()?;
    let mut states = ProducerStates::new();
    for _ in 0..count {
        let id = r.i64()?;
        let epoch = i16::from_le_bytes(r.take(2)?.try_into().map_err(|_| "short")?);
        let last_append_ms = r.i64()?;
        let n = r.take(1)?[0] as usize;
        if n == 0 || n > REMEMBERED_BATCHES {
            return Err("batch count out of range");
        }
        let mut batches = VecDeque::with_capacity(REMEMBERED_BATCHES);
        for _ in 0..n {
            batches.push_back(SequencedBatch {
                first_seq: r.u32()? as i32,
                last_seq: r.u32()? as i32,
                base_offset: Offset(r.u64()?),
                last_offset: Offset(r.u64()?),
                raft_index: RaftIndex(r.u64()?),
                append_ms: r.i64()?,
            });
        }
        states.insert(
            id,
            ProducerEntry {
                epoch,
                batches,
                last_append_ms,
            },
        );
    }
    if r.pos != body.len() {
        return Err("trailing bytes");
    }
    Ok((offset, states))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], &'static str> {
        let end = self.pos.checked_add(n).ok_or("too long")?;
        let s = self.buf.get(self.pos..end).ok_or("truncated")?;
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> std::result::Result<u32, &'static str> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| "short")?))
    }
    fn u64(&mut self) -> std::result::Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| "short")?))
    }
    fn i64(&mut self) -> std::result::Result<i64, &'static str> {
        Ok(self.u64()? as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProducerInfo;
    use crate::producers::ProducerAppend;

    fn some_states() -> ProducerStates {
        let mut s = ProducerStates::new();
        for (id, epoch, n) in [(3i64, 0i16, 7u64), (9, 4, 2)] {
            for i in 0..n {
                s.apply(&ProducerAppend {
                    producer: ProducerInfo {
                        producer_id: id,
                        producer_epoch: epoch,
                        base_sequence: (i * 3) as i32,
                    },
                    record_count: 3,
                    base_offset: Offset(i * 100),
                    raft_index: RaftIndex(i + 1),
                    append_ms: 1_000 + i as i64,
                });
            }
        }
        s
    }

    #[test]
    fn a_snapshot_decodes_to_the_state_it_was_made_of() {
        let s = some_states();
        let bytes = encode(Offset(42), &s);
        assert_eq!(decode(&bytes), Ok((Offset(42), s.clone())));
        // Deterministic bytes for equal states.
        assert_eq!(bytes, encode(Offset(42), &s.clone()));
    }

    #[test]
    fn every_damaged_byte_is_refused() {
        let bytes = encode(Offset(42), &some_states());
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad).is_err(), "flip at {i} accepted");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&[]).is_err());
    }
}
