//! The fixed-width batch header: field positions, validation and stamping.
//!
//! Layout (all integers little-endian; see the crate docs for the full table):
//!
//! ```text
//!  0  u64 base_offset        set by the leader at append
//!  8  u32 batch_length       bytes after this field (total = 12 + batch_length)
//! 12  u32 crc                CRC-32 of bytes [0, 12) followed by [16, end)
//! 16  u64 raft_term          set by the leader at append
//! 24  u64 raft_index         set by the leader at append (0: not replicated)
//! 32  i64 append_time_ms     set by the leader at append (retention clock)
//! 40  u8  magic              format version, currently 1
//! 41  u16 attributes         bits 0-2: compression codec; bit 5: control
//! 43  u32 record_count       at least 1; 0 exactly for a control batch
//! 47  i64 first_timestamp_ms
//! 55  i64 max_timestamp_ms
//! 63  i64 producer_id        -1: none
//! 71  i16 producer_epoch     -1: none
//! 73  i32 base_sequence      -1: none
//! 77  ... records section (possibly compressed); a control batch's payload
//! ```
//!
//! The CRC covers every byte but its own, so a flipped bit anywhere in a
//! stored batch is detected. The fields the leader sets (offset, term, Raft
//! index, append time) sit in front of everything the producer wrote, so the
//! broker re-stamps a batch by hashing the 36 leader-owned bytes and combining
//! that with the CRC of the producer's part, which it computed once while
//! validating: one pass over the payload, no copy.
//!
//! A control batch carries no records and takes no offset (its next offset is
//! its base offset): it is how a Raft entry without records (a leader's no-op,
//! a configuration change) lives in the same log as the data.

use crate::batch::compression::Compression;
use crate::coordinates::{Offset, RaftIndex, Term};
use crate::error::BatchError;

/// Size of the fixed header that precedes the records section.
pub const HEADER_LEN: usize = 77;
/// Bytes before `batch_length` counts: base offset + the length field itself.
pub const LENGTH_PREFIX: usize = 12;
/// The only batch format version this build reads and writes.
pub const MAGIC: u8 = 1;

pub(crate) const BASE_OFFSET: usize = 0;
pub(crate) const BATCH_LENGTH: usize = 8;
pub(crate) const CRC: usize = 12;
pub(crate) const TERM: usize = 16;
pub(crate) const RAFT_INDEX: usize = 24;
pub(crate) const APPEND_TIME: usize = 32;
/// End of the leader-owned prefix; the producer's bytes start here.
pub(crate) const PRODUCER_PART: usize = 40;
pub(crate) const MAGIC_POS: usize = 40;
pub(crate) const ATTRIBUTES: usize = 41;
pub(crate) const RECORD_COUNT: usize = 43;
pub(crate) const FIRST_TIMESTAMP: usize = 47;
pub(crate) const MAX_TIMESTAMP: usize = 55;
pub(crate) const PRODUCER_ID: usize = 63;
pub(crate) const PRODUCER_EPOCH: usize = 71;
pub(crate) const BASE_SEQUENCE: usize = 73;

const CODEC_MASK: u16 = 0b111;
pub(crate) const CONTROL_BIT: u16 = 1 << 5;

pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}
pub(crate) fn i64_at(b: &[u8], at: usize) -> i64 {
    u64_at(b, at) as i64
}

/// Total length of the batch that starts at `buf[0]`, read from its length
/// field, or `None` when fewer than [`LENGTH_PREFIX`] bytes are available.
/// Nothing is validated: use [`BatchRef::validate`] before trusting it.
pub fn framed_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < LENGTH_PREFIX {
        return None;
    }
    Some(LENGTH_PREFIX + u32_at(buf, BATCH_LENGTH) as usize)
}

/// The producer fields of the batch header at `buf[0..]` (at least
/// [`HEADER_LEN`] bytes), if a producer id is set.
pub(crate) fn producer_at(buf: &[u8]) -> Option<ProducerInfo> {
    let id = i64_at(buf, PRODUCER_ID);
    (id >= 0).then(|| ProducerInfo {
        producer_id: id,
        producer_epoch: u16_at(buf, PRODUCER_EPOCH) as i16,
        base_sequence: u32_at(buf, BASE_SEQUENCE) as i32,
    })
}

/// Writes an idempotent producer's identity and base sequence into a built
/// batch (`buf` is one whole batch, as [`crate::BatchBuilder::build`] made
/// it) and recomputes its CRC: how a producer numbers a batch when it sends
/// it, and numbers it again under a new epoch.
///
/// # Errors
/// [`BatchError`] when `buf` is not one well-framed batch.
pub fn set_producer(buf: &mut [u8], p: ProducerInfo) -> Result<(), BatchError> {
    BatchRef::trusted(buf)?;
    buf[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&p.producer_id.to_le_bytes());
    buf[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&p.producer_epoch.to_le_bytes());
    buf[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&p.base_sequence.to_le_bytes());
    let crc = compute_crc(buf);
    buf[CRC..CRC + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// CRC of the producer-owned part, `[40, end)`.
pub(crate) fn payload_crc(buf: &[u8]) -> crc32fast::Hasher {
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[PRODUCER_PART..]);
    h
}

/// The CRC of a batch whose leader-owned prefix is `prefix` (40 bytes, CRC
/// field ignored) and whose producer part hashes to `payload`.
pub(crate) fn combine(prefix: &[u8], payload: &crc32fast::Hasher) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&prefix[..CRC]);
    h.update(&prefix[TERM..PRODUCER_PART]);
    h.combine(payload);
    h.finalize()
}

/// Computes the CRC a batch should carry. `buf` is one whole batch.
pub(crate) fn compute_crc(buf: &[u8]) -> u32 {
    combine(&buf[..PRODUCER_PART], &payload_crc(buf))
}

/// A validated, borrowed view of one record batch.
///
/// Constructing one checks framing, format version, codec and CRC, so every
/// accessor can read its field without further checks.
#[derive(Clone, Copy, Debug)]
pub struct BatchRef<'a> {
    buf: &'a [u8],
}

impl<'a> BatchRef<'a> {
    /// Checks that `buf` is exactly one well-formed batch (length field, magic,
    /// record count, codec, CRC) and returns a view of it. Nothing is copied.
    pub fn validate(buf: &'a [u8]) -> Result<Self, BatchError> {
        Self::validate_with(buf).map(|(b, _)| b)
    }

    /// Like [`BatchRef::validate`], and also returns the CRC state of the
    /// producer-owned part so the caller can re-stamp the batch cheaply.
    pub(crate) fn validate_with(buf: &'a [u8]) -> Result<(Self, crc32fast::Hasher), BatchError> {
        let b = Self::trusted(buf)?;
        let payload = payload_crc(buf);
        let expected = combine(&buf[..PRODUCER_PART], &payload);
        let stored = u32_at(buf, CRC);
        if expected != stored {
            return Err(BatchError::CrcMismatch {
                stored,
                computed: expected,
            });
        }
        Ok((b, payload))
    }

    /// A view of bytes that were validated before (with their CRC) when they
    /// entered the system, such as a Raft entry this node proposed or checked
    /// on receipt: framing, magic, record count and codec are checked (a few
    /// header reads, so no accessor can panic), the CRC is not.
    pub fn trusted(buf: &'a [u8]) -> Result<Self, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::TooShort { len: buf.len() });
        }
        let declared = LENGTH_PREFIX + u32_at(buf, BATCH_LENGTH) as usize;
        if declared != buf.len() {
            return Err(BatchError::LengthMismatch {
                declared,
                actual: buf.len(),
            });
        }
        if buf[MAGIC_POS] != MAGIC {
            return Err(BatchError::UnsupportedMagic { magic: buf[MAGIC_POS] });
        }
        let count = u32_at(buf, RECORD_COUNT);
        let control = u16_at(buf, ATTRIBUTES) & CONTROL_BIT != 0;
        if control != (count == 0) {
            return Err(BatchError::Empty);
        }
        Compression::from_attributes(u16_at(buf, ATTRIBUTES) & CODEC_MASK)?;
        Ok(BatchRef { buf })
    }

    /// The whole batch, header included, exactly as stored.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
    /// Offset of the first record.
    pub fn base_offset(&self) -> Offset {
        Offset(u64_at(self.buf, BASE_OFFSET))
    }
    /// Offset of the last record (for a control batch, which has none, the
    /// offset before its base).
    pub fn last_offset(&self) -> Offset {
        Offset(self.next_offset().0.saturating_sub(1))
    }
    /// The offset after this batch.
    pub fn next_offset(&self) -> Offset {
        self.base_offset().plus(u64::from(self.record_count()))
    }
    /// Whether this is a control batch (a Raft entry without records).
    pub fn is_control(&self) -> bool {
        u16_at(self.buf, ATTRIBUTES) & CONTROL_BIT != 0
    }
    /// Raft index of the entry this batch is (0 when not replicated).
    pub fn raft_index(&self) -> RaftIndex {
        RaftIndex(u64_at(self.buf, RAFT_INDEX))
    }
    /// Number of records: at least one, or zero for a control batch.
    pub fn record_count(&self) -> u32 {
        u32_at(self.buf, RECORD_COUNT)
    }
    /// Raft term of the leader that appended the batch.
    pub fn term(&self) -> Term {
        Term(u64_at(self.buf, TERM))
    }
    /// Wall-clock time (ms since the epoch) at which the leader appended it.
    pub fn append_time_ms(&self) -> i64 {
        i64_at(self.buf, APPEND_TIME)
    }
    /// Timestamp of the first record (set by the producer).
    pub fn first_timestamp_ms(&self) -> i64 {
        i64_at(self.buf, FIRST_TIMESTAMP)
    }
    /// Largest record timestamp in the batch (set by the producer).
    pub fn max_timestamp_ms(&self) -> i64 {
        i64_at(self.buf, MAX_TIMESTAMP)
    }
    /// Codec of the records section.
    pub fn compression(&self) -> Compression {
        // Checked in `validate`.
        Compression::from_attributes(u16_at(self.buf, ATTRIBUTES) & CODEC_MASK).unwrap_or(Compression::None)
    }
    /// Idempotent-producer identity, if the producer set one.
    pub fn producer(&self) -> Option<ProducerInfo> {
        producer_at(self.buf)
    }
    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    /// Never true for a validated batch; present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// The records section as stored (compressed if the codec says so).
    pub fn records_section(&self) -> &'a [u8] {
        &self.buf[HEADER_LEN..]
    }
}

/// Producer identity and sequence carried by a batch (for idempotence).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerInfo {
    /// Id assigned to the producer.
    pub producer_id: i64,
    /// Epoch of that id.
    pub producer_epoch: i16,
    /// Sequence number of the batch's first record.
    pub base_sequence: i32,
}

/// What the leader stamps into a batch at append.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    /// Raft term of the leader (0 on a single broker).
    pub term: Term,
    /// Raft index of the entry (0 on a single broker).
    pub raft_index: RaftIndex,
    /// Append time, ms since the epoch.
    pub append_time_ms: i64,
}

/// The 40 leader-owned header bytes for a batch whose producer part hashes to
/// `payload`: offset, length, CRC, term, Raft index and append time.
pub(crate) fn stamped_prefix(
    original: &[u8],
    payload: &crc32fast::Hasher,
    base_offset: Offset,
    stamp: &Stamp,
) -> [u8; PRODUCER_PART] {
    let (term, append_time_ms) = (stamp.term, stamp.append_time_ms);
    let mut p = [0u8; PRODUCER_PART];
    p[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.0.to_le_bytes());
    p[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&original[BATCH_LENGTH..BATCH_LENGTH + 4]);
    p[TERM..TERM + 8].copy_from_slice(&term.0.to_le_bytes());
    p[RAFT_INDEX..RAFT_INDEX + 8].copy_from_slice(&stamp.raft_index.0.to_le_bytes());
    p[APPEND_TIME..APPEND_TIME + 8].copy_from_slice(&append_time_ms.to_le_bytes());
    let crc = combine(&p, payload);
    p[CRC..CRC + 4].copy_from_slice(&crc.to_le_bytes());
    p
}

/// Header fields as plain values, for building a batch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeaderFields {
    pub compression: Compression,
    pub control: bool,
    pub record_count: u32,
    pub first_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub producer: Option<ProducerInfo>,
}

/// Writes a header for `records_len` bytes of records into `out[..HEADER_LEN]`;
/// the CRC is filled in by the caller once the records are in place.
pub(crate) fn write_header(out: &mut [u8], f: &HeaderFields, records_len: usize) {
    let batch_length = (HEADER_LEN - LENGTH_PREFIX + records_len) as u32;
    out[..HEADER_LEN].fill(0);
    out[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&batch_length.to_le_bytes());
    out[MAGIC_POS] = MAGIC;
    let attributes = f.compression.attribute_bits() | if f.control { CONTROL_BIT } else { 0 };
    out[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_le_bytes());
    out[RECORD_COUNT..RECORD_COUNT + 4].copy_from_slice(&f.record_count.to_le_bytes());
    out[FIRST_TIMESTAMP..FIRST_TIMESTAMP + 8].copy_from_slice(&f.first_timestamp_ms.to_le_bytes());
    out[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&f.max_timestamp_ms.to_le_bytes());
    let (id, epoch, seq) = match f.producer {
        Some(p) => (p.producer_id, p.producer_epoch, p.base_sequence),
        None => (-1, -1, -1),
    };
    out[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&id.to_le_bytes());
    out[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&epoch.to_le_bytes());
    out[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&seq.to_le_bytes());
}
