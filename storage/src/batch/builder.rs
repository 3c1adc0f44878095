//! Building a record batch from records, as a producer does.

use crate::batch::compression::Compression;
use crate::batch::header::{self, HEADER_LEN, HeaderFields, ProducerInfo};
use crate::batch::record::{NewRecord, encode_record};
use crate::error::BatchError;

/// Accumulates records and encodes them into one batch.
///
/// Records are encoded behind room left for the header, so an uncompressed
/// batch is finished in place: [`BatchBuilder::build`] fills in the header
/// and hands the buffer over, without copying the records, and the builder
/// starts its next batch in a new buffer of the same capacity.
///
/// ```
/// use strand_storage::{BatchBuilder, BatchRef, Compression, DecodedRecords, NewRecord};
///
/// let mut b = BatchBuilder::new(Compression::Snappy);
/// b.push(&NewRecord { timestamp_ms: 1_700_000_000_000, key: Some(b"k"), value: Some(b"v"), headers: &[] });
/// let bytes = b.build().unwrap();
/// let batch = BatchRef::validate(&bytes).unwrap();
/// let records = DecodedRecords::new(&batch).unwrap();
/// let first = records.iter().next().unwrap().unwrap();
/// assert_eq!(first.value, Some(&b"v"[..]));
/// ```
#[derive(Debug, Default)]
pub struct BatchBuilder {
    compression: Compression,
    /// `HEADER_LEN` bytes for the header (once a record was pushed), then
    /// the encoded records.
    buf: Vec<u8>,
    compressed: Vec<u8>,
    count: u32,
    first_timestamp_ms: i64,
    max_timestamp_ms: i64,
    producer: Option<ProducerInfo>,
}

impl BatchBuilder {
    /// An empty builder whose batches use `compression`.
    pub fn new(compression: Compression) -> Self {
        BatchBuilder {
            compression,
            ..Default::default()
        }
    }

    /// Marks the next batch with an idempotent producer's identity.
    pub fn set_producer(&mut self, producer: Option<ProducerInfo>) {
        self.producer = producer;
    }

    /// Adds one record; its offset delta is its position in the batch.
    pub fn push(&mut self, r: &NewRecord<'_>) {
        if self.count == 0 {
            self.first_timestamp_ms = r.timestamp_ms;
            self.max_timestamp_ms = r.timestamp_ms;
            self.buf.clear();
            self.buf.resize(HEADER_LEN, 0);
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(r.timestamp_ms);
        let ts_delta = r.timestamp_ms.wrapping_sub(self.first_timestamp_ms);
        encode_record(&mut self.buf, r, ts_delta, i64::from(self.count));
        self.count += 1;
    }

    /// Number of records added since the last build.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Whether no record was added since the last build.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the batch if built now without compression.
    pub fn uncompressed_size(&self) -> usize {
        self.buf.len().max(HEADER_LEN)
    }

    /// Encodes the records added so far into one batch (offset, term and
    /// append time zero: the leader stamps them) and resets the builder.
    ///
    /// # Errors
    /// [`BatchError::Empty`] if no record was added; a compression failure.
    pub fn build(&mut self) -> Result<Vec<u8>, BatchError> {
        if self.count == 0 {
            return Err(BatchError::Empty);
        }
        let mut out = match self.compression {
            Compression::None => {
                let capacity = self.buf.capacity();
                std::mem::replace(&mut self.buf, Vec::with_capacity(capacity))
            }
            codec => {
                codec.compress(&self.buf[HEADER_LEN..], &mut self.compressed)?;
                let mut out = Vec::with_capacity(HEADER_LEN + self.compressed.len());
                out.resize(HEADER_LEN, 0);
                out.extend_from_slice(&self.compressed);
                self.buf.clear();
                out
            }
        };
        let fields = HeaderFields {
            compression: self.compression,
            control: false,
            record_count: self.count,
            first_timestamp_ms: self.first_timestamp_ms,
            max_timestamp_ms: self.max_timestamp_ms,
            producer: self.producer,
        };
        let section_len = out.len() - HEADER_LEN;
        header::write_header(&mut out, &fields, section_len);
        let crc = header::compute_crc(&out);
        out[header::CRC..header::CRC + 4].copy_from_slice(&crc.to_le_bytes());
        self.count = 0;
        Ok(out)
    }
}

/// A control batch: no records, takes no offset, carries `payload` (for
/// example a Raft configuration change; empty for a leader's no-op).
pub fn control_batch(payload: &[u8], timestamp_ms: i64) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN + payload.len()];
    let fields = HeaderFields {
        compression: crate::Compression::None,
        control: true,
        record_count: 0,
        first_timestamp_ms: timestamp_ms,
        max_timestamp_ms: timestamp_ms,
        producer: None,
    };
    header::write_header(&mut out, &fields, payload.len());
    out[HEADER_LEN..].copy_from_slice(payload);
    let crc = header::compute_crc(&out);
    out[header::CRC..header::CRC + 4].copy_from_slice(&crc.to_le_bytes());
    out
}
