//! Round trips of the record-batch format (DESIGN.md, "Storage").

use proptest::prelude::*;
use strand_storage::{BatchBuilder, BatchError, BatchRef, Compression, DecodedRecords, Header, NewRecord, Offset};

#[derive(Debug, Clone)]
struct Rec {
    ts: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn rec() -> impl Strategy<Value = Rec> {
    (
        any::<i64>(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        proptest::collection::vec(
            (
                "[a-z]{0,8}",
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            ),
            0..3,
        ),
    )
        .prop_map(|(ts, key, value, headers)| Rec {
            ts,
            key,
            value,
            headers,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn random_batches_round_trip(
        recs in proptest::collection::vec(rec(), 1..40),
        snappy in any::<bool>(),
        producer in proptest::option::of((0i64..i64::MAX, any::<i16>(), any::<i32>())),
    ) {
        let codec = if snappy { Compression::Snappy } else { Compression::None };
        let producer = producer.map(|(producer_id, producer_epoch, base_sequence)| strand_storage::ProducerInfo { producer_id, producer_epoch, base_sequence });
        let mut b = BatchBuilder::new(codec);
        b.set_producer(producer);
        for r in &recs {
            let headers: Vec<Header<'_>> = r.headers.iter().map(|(k, v)| Header { key: k, value: v.as_deref() }).collect();
            b.push(&NewRecord { timestamp_ms: r.ts, key: r.key.as_deref(), value: r.value.as_deref(), headers: &headers });
        }
        let bytes = b.build().unwrap();
        let batch = BatchRef::validate(&bytes).unwrap();
        prop_assert_eq!(batch.record_count() as usize, recs.len());
        prop_assert_eq!(batch.compression(), codec);
        prop_assert_eq!(batch.producer(), producer);
        prop_assert!(!batch.is_control());
        prop_assert_eq!(batch.max_timestamp_ms(), recs.iter().map(|r| r.ts).max().unwrap());
        let decoded = DecodedRecords::new(&batch).unwrap();
        let mut n = 0;
        for (i, (got, want)) in decoded.iter().zip(&recs).enumerate() {
            let got = got.unwrap();
            prop_assert_eq!(got.offset, Offset(i as u64));
            prop_assert_eq!(got.timestamp_ms, want.ts);
            prop_assert_eq!(got.key, want.key.as_deref());
            prop_assert_eq!(got.value, want.value.as_deref());
            let hs: Vec<(String, Option<Vec<u8>>)> = got.headers().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect();
            prop_assert_eq!(&hs, &want.headers);
            n += 1;
        }
        prop_assert_eq!(n, recs.len());
    }
}

#[test]
fn snappy_shrinks_repetitive_records() {
    let value = vec![b'x'; 100];
    let mut plain = BatchBuilder::new(Compression::None);
    let mut snappy = BatchBuilder::new(Compression::Snappy);
    for b in [&mut plain, &mut snappy] {
        for _ in 0..100 {
            b.push(&NewRecord {
                timestamp_ms: 1,
                key: None,
                value: Some(&value),
                headers: &[],
            });
        }
    }
    let (p, s) = (plain.build().unwrap(), snappy.build().unwrap());
    assert!(s.len() * 4 < p.len(), "snappy {} vs plain {}", s.len(), p.len());
}

#[test]
fn every_single_bit_flip_in_a_batch_is_rejected() {
    let mut b = BatchBuilder::new(Compression::Snappy);
    for i in 0..5u8 {
        b.push(&NewRecord {
            timestamp_ms: 7,
            key: Some(&[i]),
            value: Some(b"payload"),
            headers: &[],
        });
    }
    let good = b.build().unwrap();
    for bit in 0..good.len() * 8 {
        let mut bad = good.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(BatchRef::validate(&bad).is_err(), "flip of bit {bit} was accepted");
    }
}

#[test]
fn malformed_batches_get_typed_errors() {
    let good = {
        let mut b = BatchBuilder::new(Compression::None);
        b.push(&NewRecord {
            timestamp_ms: 1,
            key: None,
            value: Some(b"v"),
            headers: &[],
        });
        b.build().unwrap()
    };
    assert!(matches!(
        BatchRef::validate(&good[..10]),
        Err(BatchError::TooShort { .. })
    ));
    let mut longer = good.clone();
    longer.push(0);
    assert!(matches!(
        BatchRef::validate(&longer),
        Err(BatchError::LengthMismatch { .. })
    ));
    let mut crc = good.clone();
    let last = crc.len() - 1;
    crc[last] ^= 0xff;
    assert!(matches!(BatchRef::validate(&crc), Err(BatchError::CrcMismatch { .. })));
    assert!(matches!(
        BatchBuilder::new(Compression::None).build(),
        Err(BatchError::Empty)
    ));
}
