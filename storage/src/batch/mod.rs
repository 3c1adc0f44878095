//! The record batch: the unit Strand writes, replicates and serves.
//!
//! A batch is written once by the leader and the same bytes travel to
//! followers and consumers; [`BatchRef`] is a validated view of those bytes,
//! [`RecordBatch`] owns validated bytes, [`BatchBuilder`] makes new ones and
//! [`DecodedRecords`] reads their records.

pub(crate) mod builder;
pub(crate) mod compression;
pub(crate) mod header;
pub(crate) mod record;
pub(crate) mod record_batch;
pub(crate) mod validate;
pub(crate) mod varint;

pub use builder::{BatchBuilder, control_batch};
pub use compression::Compression;
pub use header::{BatchRef, HEADER_LEN, LENGTH_PREFIX, MAGIC, ProducerInfo, Stamp, framed_len, set_producer};
pub use record::{
    DecodedRecords, Header, MAX_DECOMPRESSED_BYTES, NewRecord, RecordIter, RecordView, encoded_len_estimate,
};
pub use record_batch::RecordBatch;
pub use validate::RecordRules;

/// Iterates the whole batches in `buf` (as returned by a fetch), validating
/// each. Stops at the first invalid batch with its error.
pub fn batches(buf: &[u8]) -> impl Iterator<Item = Result<BatchRef<'_>, crate::BatchError>> {
    let mut rest = buf;
    let mut failed = false;
    std::iter::from_fn(move || {
        if rest.is_empty() || failed {
            return None;
        }
        let Some(len) = framed_len(rest).filter(|&l| l <= rest.len()) else {
            failed = true;
            return Some(Err(crate::BatchError::TooShort { len: rest.len() }));
        };
        let (one, tail) = rest.split_at(len);
        rest = tail;
        let r = BatchRef::validate(one);
        failed = r.is_err();
        Some(r)
    })
}
