//! [`RecordBatch`]: one batch's bytes, owned and validated once.
//!
//! A producer's batch is checked (framing, format, CRC) when it enters the
//! broker; from then on the type vouches for it, so stamping it with the
//! leader's fields, proposing it to Raft and appending it never hash or parse
//! the payload again. Header fields are read from fixed positions.

use bytes::Bytes;

use crate::batch::header::{self, BatchRef, PRODUCER_PART, Stamp};
use crate::coordinates::Offset;
use crate::error::BatchError;

/// An owned, validated record batch.
#[derive(Clone, Debug)]
pub struct RecordBatch {
    bytes: Bytes,
    /// CRC state of the producer-owned part (bytes 40..), kept so that
    /// re-stamping the leader's fields costs 40 bytes of hashing, not a pass
    /// over the payload.
    payload: crc32fast::Hasher,
}

impl RecordBatch {
    /// Validates `bytes` as exactly one batch: framing, format version,
    /// record count against the control bit, codec and CRC.
    ///
    /// # Errors
    /// The first check that fails, as a [`BatchError`].
    pub fn validate(bytes: Bytes) -> Result<Self, BatchError> {
        let (_, payload) = BatchRef::validate_with(&bytes)?;
        Ok(RecordBatch { bytes, payload })
    }

    pub(crate) fn from_parts(bytes: Bytes, payload: crc32fast::Hasher) -> Self {
        RecordBatch { bytes, payload }
    }

    /// A view for reading header fields and records (no checks: they were
    /// done when this value was made).
    pub fn view(&self) -> BatchRef<'_> {
        // The bytes passed `validate_with`, which `trusted` only repeats in
        // part; it cannot fail here.
        BatchRef::trusted(&self.bytes).unwrap_or_else(|_| unreachable!("a RecordBatch is validated"))
    }

    /// The batch's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The batch's bytes, by value.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true (a batch has a header); for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// A copy carrying the leader's fields: `base_offset` and `stamp` (term,
    /// Raft index, append time). The CRC is recomputed by combining the
    /// 40 new header bytes with the payload CRC computed at validation; the
    /// payload is copied once, into the new buffer.
    pub fn stamp(&self, base_offset: Offset, stamp: &Stamp) -> RecordBatch {
        let prefix = header::stamped_prefix(&self.bytes, &self.payload, base_offset, stamp);
        let mut out = Vec::with_capacity(self.bytes.len());
        out.extend_from_slice(&prefix);
        out.extend_from_slice(&self.bytes[PRODUCER_PART..]);
        RecordBatch {
            bytes: Bytes::from(out),
            payload: self.payload.clone(),
        }
    }
}

impl AsRef<[u8]> for RecordBatch {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinates::{RaftIndex, Term};
    use crate::{BatchBuilder, Compression, NewRecord};

    #[test]
    fn stamping_keeps_the_batch_valid_and_sets_the_leaders_fields() {
        let mut b = BatchBuilder::new(Compression::None);
        for i in 0..3u8 {
            b.push(&NewRecord {
                timestamp_ms: 10,
                key: None,
                value: Some(&[i]),
                headers: &[],
            });
        }
        let batch = RecordBatch::validate(Bytes::from(b.build().unwrap())).unwrap();
        let stamp = Stamp {
            term: Term(4),
            raft_index: RaftIndex(9),
            append_time_ms: 77,
        };
        let stamped = batch.stamp(Offset(100), &stamp);
        let again = BatchRef::validate(stamped.bytes()).expect("the recombined CRC is right");
        assert_eq!(
            (
                again.base_offset(),
                again.next_offset(),
                again.term(),
                again.raft_index(),
                again.append_time_ms()
            ),
            (Offset(100), Offset(103), Term(4), RaftIndex(9), 77)
        );
        let mut flipped = stamped.bytes().to_vec();
        flipped[90] ^= 1;
        assert!(matches!(
            RecordBatch::validate(Bytes::from(flipped)),
            Err(BatchError::CrcMismatch { .. })
        ));
    }
}
