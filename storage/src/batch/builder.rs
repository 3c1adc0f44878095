//! Building a record batch from records, as a producer does.

use crate::batch::compression::Compression;
use crate::batch::header::{self, HEADER_LEN, HeaderFields, ProducerInfo};
use crate::batch::record::{NewRecord, encode_record};
use crate::error::BatchError;

/// Accumulates records and encodes them into one batch.
///
/// The builder keeps its buffers across [`BatchBuilder::build`] calls, so a
/// long-lived builder allocates only when a batch outgrows earlier ones.
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
    records: Vec<u8>,
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
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(r.timestamp_ms);
        let ts_delta = r.timestamp_ms.wrapping_sub(self.first_timestamp_ms);
        encode_record(&mut self.records, r, ts_delta, i64::from(self.count));
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
        HEADER_LEN + self.records.len()
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
        let section: &[u8] = match self.compression {
            Compression::None => &self.records,
            codec => {
                codec.compress(&self.records, &mut self.compressed)?;
                &self.compressed
            }
        };
        let mut out = vec![0u8; HEADER_LEN + section.len()];
        let fields = HeaderFields {
            compression: self.compression,
            control: false,
            record_count: self.count,
            first_timestamp_ms: self.first_timestamp_ms,
            max_timestamp_ms: self.max_timestamp_ms,
            producer: self.producer,
        };
        header::write_header(&mut out, &fields, section.len());
        out[HEADER_LEN..].copy_from_slice(section);
        let crc = header::compute_crc(&out);
        out[header::CRC..header::CRC + 4].copy_from_slice(&crc.to_le_bytes());
        self.records.clear();
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
