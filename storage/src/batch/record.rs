//! One record inside a batch's records section: encoding and a borrowing
//! decoder.
//!
//! ```text
//! varlong length            bytes that follow in this record
//! u8      attributes        reserved, 0
//! varlong timestamp_delta   from the batch's first_timestamp
//! varlong offset_delta      from the batch's base_offset
//! varlong key_length        -1: null key
//! bytes   key
//! varlong value_length      -1: null value
//! bytes   value
//! varlong header_count
//!   varlong key_length, utf-8 key, varlong value_length (-1: null), value
//! ```

use std::borrow::Cow;

use crate::batch::header::BatchRef;
use crate::batch::varint::{get_varlong, put_varlong, varlong_len};
use crate::coordinates::Offset;
use crate::error::BatchError;

/// A record header: a string key and an optional byte value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// Header name.
    pub key: &'a str,
    /// Header value; `None` is a null value.
    pub value: Option<&'a [u8]>,
}

/// A record as the producer hands it to [`crate::BatchBuilder`].
#[derive(Clone, Copy, Debug)]
pub struct NewRecord<'a> {
    /// Create time, ms since the epoch.
    pub timestamp_ms: i64,
    /// Partitioning key; `None` is a null key.
    pub key: Option<&'a [u8]>,
    /// Payload; `None` is a null value (a tombstone, for compacted topics).
    pub value: Option<&'a [u8]>,
    /// Application headers.
    pub headers: &'a [Header<'a>],
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
        None => put_varlong(out, -1),
    }
}

fn bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        Some(b) => varlong_len(b.len() as i64) + b.len(),
        None => 1,
    }
}

/// Appends one encoded record to `out`.
pub(crate) fn encode_record(out: &mut Vec<u8>, r: &NewRecord<'_>, timestamp_delta: i64, offset_delta: i64) {
    let mut body = 1 + varlong_len(timestamp_delta) + varlong_len(offset_delta);
    body += bytes_len(r.key) + bytes_len(r.value);
    body += varlong_len(r.headers.len() as i64);
    for h in r.headers {
        body += bytes_len(Some(h.key.as_bytes())) + bytes_len(h.value);
    }
    put_varlong(out, body as i64);
    out.push(0);
    put_varlong(out, timestamp_delta);
    put_varlong(out, offset_delta);
    put_bytes(out, r.key);
    put_bytes(out, r.value);
    put_varlong(out, r.headers.len() as i64);
    for h in r.headers {
        put_bytes(out, Some(h.key.as_bytes()));
        put_bytes(out, h.value);
    }
}

/// Upper bound of the encoded size of `r` (used for batch sizing).
pub fn encoded_len_estimate(r: &NewRecord<'_>) -> usize {
    let mut n = 10 + 1 + 10 + 5 + bytes_len(r.key) + bytes_len(r.value) + 5;
    for h in r.headers {
        n += bytes_len(Some(h.key.as_bytes())) + bytes_len(h.value);
    }
    n
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], BatchError> {
    if buf.len() < n {
        return Err(BatchError::MalformedRecords {
            reason: "field longer than its record",
        });
    }
    let (a, b) = buf.split_at(n);
    *buf = b;
    Ok(a)
}

fn get_bytes<'a>(buf: &mut &'a [u8]) -> Result<Option<&'a [u8]>, BatchError> {
    let len = get_varlong(buf)?;
    match len {
        -1 => Ok(None),
        n if n < -1 => Err(BatchError::MalformedRecords {
            reason: "negative length",
        }),
        n => take(buf, n as usize).map(Some),
    }
}

/// A decoded record, borrowing from the batch (or its decompressed section).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Absolute offset in the partition.
    pub offset: Offset,
    /// Create time, ms since the epoch.
    pub timestamp_ms: i64,
    /// Key, if not null.
    pub key: Option<&'a [u8]>,
    /// Value, if not null.
    pub value: Option<&'a [u8]>,
    headers_raw: &'a [u8],
    header_count: usize,
}

impl<'a> RecordView<'a> {
    /// The record's headers in the order the producer added them.
    pub fn headers(&self) -> impl Iterator<Item = Header<'a>> + 'a {
        let mut raw = self.headers_raw;
        // Validated while decoding the record, so these reads cannot fail.
        (0..self.header_count).filter_map(move |_| {
            let key = get_bytes(&mut raw).ok()??;
            let value = get_bytes(&mut raw).ok()?;
            Some(Header {
                key: std::str::from_utf8(key).ok()?,
                value,
            })
        })
    }
}

/// The records of one batch, decompressed if needed.
///
/// Decoding is strict, so that no malformed batch is ever read wrongly:
/// record `i` must have offset delta `i` and attributes 0, every length must
/// stay inside its record, header keys are UTF-8 and not null, and no byte
/// may follow the last of `record_count` records.
#[derive(Debug)]
pub struct DecodedRecords<'a> {
    data: Cow<'a, [u8]>,
    base_offset: Offset,
    first_timestamp_ms: i64,
    count: u32,
}

impl<'a> DecodedRecords<'a> {
    /// Decodes the records section of `batch`. Uncompressed batches are
    /// borrowed; compressed ones are decompressed once into one buffer.
    pub fn new(batch: &BatchRef<'a>) -> Result<Self, BatchError> {
        Ok(DecodedRecords {
            data: batch
                .compression()
                .decompress(batch.records_section(), MAX_DECOMPRESSED_BYTES)?,
            base_offset: batch.base_offset(),
            first_timestamp_ms: batch.first_timestamp_ms(),
            count: batch.record_count(),
        })
    }

    /// Iterates the records; each item fails if that record is malformed.
    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter::new(&self.data, self.count, self.base_offset, self.first_timestamp_ms)
    }
}

/// Largest records section a batch may decompress to (a bound on what one
/// hostile batch can make a broker or consumer allocate).
pub const MAX_DECOMPRESSED_BYTES: usize = 256 << 20;

/// Iterator over the records of a [`DecodedRecords`].
pub struct RecordIter<'a> {
    rest: &'a [u8],
    remaining: u32,
    index: u32,
    base_offset: Offset,
    first_timestamp_ms: i64,
}

impl<'a> RecordIter<'a> {
    pub(crate) fn new(section: &'a [u8], count: u32, base_offset: Offset, first_timestamp_ms: i64) -> Self {
        RecordIter {
            rest: section,
            remaining: count,
            index: 0,
            base_offset,
            first_timestamp_ms,
        }
    }

    /// Bytes not decoded yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    fn decode_one(&mut self) -> Result<RecordView<'a>, BatchError> {
        let len = get_varlong(&mut self.rest)?;
        if len < 0 {
            return Err(BatchError::MalformedRecords {
                reason: "negative record length",
            });
        }
        let mut body = take(&mut self.rest, len as usize)?;
        if take(&mut body, 1)? != [0] {
            return Err(BatchError::MalformedRecords {
                reason: "record attributes must be 0",
            });
        }
        let ts_delta = get_varlong(&mut body)?;
        let off_delta = get_varlong(&mut body)?;
        if off_delta != i64::from(self.index) {
            return Err(BatchError::OffsetDelta {
                record: self.index,
                delta: off_delta,
            });
        }
        let key = get_bytes(&mut body)?;
        let value = get_bytes(&mut body)?;
        let header_count = get_varlong(&mut body)?;
        if header_count < 0 {
            return Err(BatchError::MalformedRecords {
                reason: "negative header count",
            });
        }
        let headers_raw = body;
        for _ in 0..header_count {
            let k = get_bytes(&mut body)?.ok_or(BatchError::MalformedRecords {
                reason: "null header key",
            })?;
            std::str::from_utf8(k).map_err(|_| BatchError::MalformedRecords {
                reason: "header key is not utf-8",
            })?;
            get_bytes(&mut body)?;
        }
        if !body.is_empty() {
            return Err(BatchError::MalformedRecords {
                reason: "trailing bytes in record",
            });
        }
        Ok(RecordView {
            offset: self.base_offset.plus(off_delta as u64),
            timestamp_ms: self.first_timestamp_ms.wrapping_add(ts_delta),
            key,
            value,
            headers_raw,
            header_count: header_count as usize,
        })
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordView<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let mut r = self.decode_one();
        self.index += 1;
        if r.is_ok() && self.remaining == 0 && !self.rest.is_empty() {
            r = Err(BatchError::MalformedRecords {
                reason: "bytes follow the last record the count announces",
            });
        }
        if r.is_err() {
            self.remaining = 0;
        }
        Some(r)
    }
}
