//! Whole validation of a producer's batch: framing, format, CRC and every
//! record, in one pass over the bytes (each record is hashed as it is
//! decoded), so a broker never stores a batch that a consumer could not read
//! or would read wrongly.

use bytes::Bytes;

use crate::batch::compression::Compression;
use crate::batch::header::{self, BatchRef, HEADER_LEN, PRODUCER_PART};
use crate::batch::record::{MAX_DECOMPRESSED_BYTES, RecordIter};
use crate::batch::record_batch::RecordBatch;
use crate::error::BatchError;

/// The record-level rules, as one value (see [`RecordBatch::validate_producer`]).
#[derive(Clone, Copy, Debug)]
pub struct RecordRules {
    /// Largest records section a compressed batch may decompress to.
    pub max_decompressed_bytes: usize,
}

impl Default for RecordRules {
    fn default() -> Self {
        RecordRules {
            max_decompressed_bytes: MAX_DECOMPRESSED_BYTES,
        }
    }
}

/// Walks the records of a (decompressed) section and checks each: offset
/// delta `i` for record `i`, attributes 0, lengths in bounds, header keys,
/// nothing after the last; timestamps: record 0 at `first_timestamp` (deltas
/// count from it), none above `max_timestamp`, which some record reaches.
/// `hash` sees each record's bytes as they are decoded.
fn check_records(b: &BatchRef<'_>, section: &[u8], mut hash: impl FnMut(&[u8])) -> Result<(), BatchError> {
    let count = b.record_count();
    let (first, max) = (b.first_timestamp_ms(), b.max_timestamp_ms());
    let mut iter = RecordIter::new(section, count, b.base_offset(), first);
    let mut seen_max = i64::MIN;
    let mut at = 0;
    for i in 0..count {
        if iter.rest().is_empty() {
            return Err(BatchError::RecordCount {
                declared: count,
                found: i,
            });
        }
        let r = iter.next().unwrap_or(Err(BatchError::MalformedRecords {
            reason: "record iterator ended early",
        }))?;
        let end = section.len() - iter.rest().len();
        hash(&section[at..end]);
        at = end;
        if i == 0 && r.timestamp_ms != first {
            return Err(BatchError::Timestamps {
                reason: format!(
                    "record 0 has timestamp delta {} but deltas count from first_timestamp {first}",
                    r.timestamp_ms.wrapping_sub(first)
                ),
            });
        }
        if r.timestamp_ms > max {
            return Err(BatchError::Timestamps {
                reason: format!(
                    "record {i} has timestamp {} above the header's max_timestamp {max}",
                    r.timestamp_ms
                ),
            });
        }
        seen_max = seen_max.max(r.timestamp_ms);
    }
    if seen_max != max {
        return Err(BatchError::Timestamps {
            reason: format!("max_timestamp is {max} but the largest record timestamp is {seen_max}"),
        });
    }
    Ok(())
}

impl RecordBatch {
    /// Validates a producer's batch completely: framing, format version,
    /// codec, CRC and every record (see `check_records`), in one pass over
    /// the uncompressed bytes (a compressed section is hashed, then
    /// decompressed once and walked). Control batches are not producers'
    /// and are refused.
    ///
    /// # Errors
    /// The first rule broken, as a [`BatchError`] that names it; a CRC
    /// mismatch wins over a record error (the bytes were damaged, not
    /// malformed by the producer).
    pub fn validate_producer(bytes: Bytes, rules: &RecordRules) -> Result<Self, BatchError> {
        let b = BatchRef::trusted(&bytes)?;
        if b.is_control() {
            return Err(BatchError::MalformedRecords {
                reason: "a control batch cannot come from a producer",
            });
        }
        if let Some(p) = b.producer()
            && (p.producer_epoch < 0 || p.base_sequence < 0)
        {
            return Err(BatchError::MalformedRecords {
                reason: "a batch with a producer id needs a non-negative producer epoch and base sequence",
            });
        }
        let mut payload = crc32fast::Hasher::new();
        payload.update(&bytes[PRODUCER_PART..HEADER_LEN]);
        let section = b.records_section();
        let records = match b.compression() {
            Compression::None => check_records(&b, section, |chunk| payload.update(chunk)).inspect_err(|_| {
                // Hash what was not reached, to tell damage from malformation.
                payload = header::payload_crc(&bytes);
            }),
            codec => {
                payload.update(section);
                codec
                    .decompress(section, rules.max_decompressed_bytes)
                    .and_then(|raw| check_records(&b, &raw, |_| {}))
            }
        };
        let expected = header::combine(&bytes[..PRODUCER_PART], &payload);
        let stored = header::u32_at(&bytes, header::CRC);
        if expected != stored {
            return Err(BatchError::CrcMismatch {
                stored,
                computed: expected,
            });
        }
        records?;
        Ok(RecordBatch::from_parts(bytes, payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::header::{HeaderFields, compute_crc, write_header};
    use crate::batch::record::{NewRecord, encode_record};
    use crate::{BatchBuilder, Offset};

    const NOW: i64 = 1_800_000_000_000;

    fn record(out: &mut Vec<u8>, ts_delta: i64, offset_delta: i64) {
        let r = NewRecord {
            timestamp_ms: 0,
            key: Some(b"k"),
            value: Some(b"value"),
            headers: &[],
        };
        encode_record(out, &r, ts_delta, offset_delta);
    }

    /// A batch with this records section and header, its CRC right.
    fn batch(section: &[u8], count: u32, first: i64, max: i64, compression: Compression) -> Bytes {
        let mut out = vec![0u8; HEADER_LEN + section.len()];
        let fields = HeaderFields {
            compression,
            control: false,
            record_count: count,
            first_timestamp_ms: first,
            max_timestamp_ms: max,
            producer: None,
        };
        write_header(&mut out, &fields, section.len());
        out[HEADER_LEN..].copy_from_slice(section);
        let crc = compute_crc(&out);
        out[header::CRC..header::CRC + 4].copy_from_slice(&crc.to_le_bytes());
        Bytes::from(out)
    }

    fn check(b: Bytes) -> Result<RecordBatch, BatchError> {
        RecordBatch::validate_producer(b, &RecordRules::default())
    }

    fn records(deltas: &[(i64, i64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(ts, off) in deltas {
            record(&mut out, ts, off);
        }
        out
    }

    #[test]
    fn a_well_formed_batch_passes_and_its_crc_state_stamps_correctly() {
        for compression in [Compression::None, Compression::Snappy] {
            let mut b = BatchBuilder::new(compression);
            for i in 0..10 {
                b.push(&NewRecord {
                    timestamp_ms: NOW + i,
                    key: None,
                    value: Some(b"v"),
                    headers: &[crate::Header { key: "h", value: None }],
                });
            }
            let valid = check(Bytes::from(b.build().unwrap())).expect("valid");
            let stamped = valid.stamp(Offset(5), &crate::Stamp::default());
            crate::BatchRef::validate(stamped.bytes()).expect("stamped CRC");
        }
    }

    #[test]
    fn every_malformed_batch_is_refused_with_what_is_wrong() {
        let ok = records(&[(0, 0), (1, 1), (2, 2)]);
        let cases: Vec<(&str, Bytes, &str)> = vec![
            (
                "count 5 over random bytes",
                batch(
                    &[0x9f, 0x13, 0x77, 0x01, 0xfe, 0x42, 0x00, 0x88],
                    5,
                    NOW,
                    NOW,
                    Compression::None,
                ),
                "malformed records",
            ),
            (
                "count 5 over zeros",
                batch(&[0u8; 40], 5, NOW, NOW, Compression::None),
                "malformed records",
            ),
            (
                "truncated varint",
                batch(&[0x80, 0x80, 0x80], 1, NOW, NOW, Compression::None),
                "truncated varint",
            ),
            (
                "count 5 but 3 records",
                batch(&ok, 5, NOW, NOW + 2, Compression::None),
                "record count is 5 but the records section holds 3",
            ),
            (
                "count 1 but 3 records",
                batch(&ok, 1, NOW, NOW, Compression::None),
                "bytes follow the last record",
            ),
            (
                "offset delta 1000",
                batch(&records(&[(0, 0), (1, 1000)]), 2, NOW, NOW + 1, Compression::None),
                "record 1 has offset delta 1000",
            ),
            (
                "two records with delta 0",
                batch(&records(&[(0, 0), (0, 0)]), 2, NOW, NOW, Compression::None),
                "record 1 has offset delta 0",
            ),
            (
                "a record 30 years ahead of the header's max",
                batch(
                    &records(&[(0, 0), (30 * 365 * 86_400_000, 1)]),
                    2,
                    NOW,
                    NOW,
                    Compression::None,
                ),
                "above the header's max_timestamp",
            ),
            (
                "max timestamp no record reaches",
                batch(&records(&[(0, 0)]), 1, NOW, NOW + 5, Compression::None),
                "max_timestamp is",
            ),
            (
                "first record not at first_timestamp",
                batch(&records(&[(7, 0)]), 1, NOW, NOW + 7, Compression::None),
                "deltas count from first_timestamp",
            ),
            (
                "snappy section that does not decompress",
                batch(&[0x05, 0xff, 0xff, 0xff], 1, NOW, NOW, Compression::Snappy),
                "snappy",
            ),
            (
                "snappy section claiming 4 GiB",
                batch(&[0xff, 0xff, 0xff, 0xff, 0x0f], 1, NOW, NOW, Compression::Snappy),
                "decompresses to",
            ),
        ];
        for (i, (what, bytes, expected)) in cases.into_iter().enumerate() {
            let e = check(bytes).map(|_| ()).expect_err(what);
            assert!(e.to_string().contains(expected), "#{i} {what}: {e}");
        }
        // A record with attributes set, a null header key.
        let mut attrs = records(&[(0, 0)]);
        attrs[1] = 1;
        let e = check(batch(&attrs, 1, NOW, NOW, Compression::None)).expect_err("attributes");
        assert!(e.to_string().contains("attributes must be 0"), "{e}");
        let mut null_key = Vec::new();
        crate::batch::varint::put_varlong(&mut null_key, 8);
        // attributes, ts delta, offset delta, null key, empty value, one
        // header whose key is null (-1) and value null.
        null_key.extend_from_slice(&[0, 0, 0, 1, 0, 2, 1, 1]);
        let e = check(batch(&null_key, 1, NOW, NOW, Compression::None)).expect_err("null header key");
        assert!(e.to_string().contains("null header key"), "{e}");
    }

    #[test]
    fn a_damaged_batch_is_a_crc_mismatch_even_when_its_records_are_broken_too() {
        let mut damaged = batch(&records(&[(0, 0), (1, 1)]), 2, NOW, NOW + 1, Compression::None).to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        assert!(matches!(
            check(Bytes::from(damaged)),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn a_producer_id_needs_an_epoch_and_a_sequence() {
        let good = batch(&records(&[(0, 0)]), 1, NOW, NOW, Compression::None).to_vec();
        for (epoch, seq) in [(-1i16, 0i32), (0, -1), (-5, -5)] {
            let mut bad = good.clone();
            crate::set_producer(
                &mut bad,
                crate::ProducerInfo {
                    producer_id: 3,
                    producer_epoch: epoch,
                    base_sequence: seq,
                },
            )
            .unwrap();
            let e = check(Bytes::from(bad)).expect_err("negative epoch or sequence");
            assert!(e.to_string().contains("producer epoch"), "{e}");
        }
        let mut ok = good.clone();
        crate::set_producer(
            &mut ok,
            crate::ProducerInfo {
                producer_id: 3,
                producer_epoch: 0,
                base_sequence: 7,
            },
        )
        .unwrap();
        assert!(check(Bytes::from(ok)).is_ok());
    }
}
