//! Idempotent producers against a real broker (issue "Idempotent producer,
//! on by default"): a retried batch is answered with its original offsets
//! and stored once, also after a broker restart; every sequence error has
//! its stable reason; a restarted producer with the same key fences the old
//! one; an expired producer is renumbered by the client without losing or
//! doubling a record.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use strand_client::{Admin, Consumer, OffsetReset, Producer, ProducerRecord};
use strand_proto::v1::strand_client::StrandClient;
use strand_proto::v1::{
    ErrorCode, FetchPartition, FetchRequest, InitProducerIdRequest, PartitionBatch, ProduceRequest,
};
use strand_storage::{ProducerInfo, set_producer};
use tonic::transport::Channel;

use crate::harness::{TestBroker, batch};

/// A batch of `n` records numbered `(id, epoch, seq)`.
fn numbered(tag: &str, n: usize, id: i64, epoch: i16, seq: i32) -> Bytes {
    let values: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    let records: Vec<(&str, &str)> = values.iter().map(|v| ("k", v.as_str())).collect();
    let mut bytes = batch(&records, strand_storage::now_ms()).to_vec();
    set_producer(
        &mut bytes,
        ProducerInfo {
            producer_id: id,
            producer_epoch: epoch,
            base_sequence: seq,
        },
    )
    .expect("one batch");
    Bytes::from(bytes)
}

/// Produces one batch to `t`/0; the base offset or the error's reason.
async fn produce(raw: &mut StrandClient<Channel>, bytes: Bytes) -> Result<u64, ErrorCode> {
    let r = raw
        .produce(ProduceRequest {
            batches: vec![PartitionBatch {
                topic: "t".into(),
                partition: 0,
                batch: bytes,
                topic_id: String::new(),
            }],
            ..Default::default()
        })
        .await
        .expect("request answered")
        .into_inner();
    let result = &r.results[0];
    match &result.error {
        Some(e) if e.code != ErrorCode::None as i32 => Err(ErrorCode::try_from(e.code).expect("known code")),
        _ => Ok(result.base_offset),
    }
}

async fn init(raw: &mut StrandClient<Channel>, key: &str, current: Option<(i64, i16)>) -> (i64, i16) {
    let r = raw
        .init_producer_id(InitProducerIdRequest {
            producer_id_key: key.into(),
            producer_id: current.map_or(0, |c| c.0),
            producer_epoch: current.map_or(0, |c| i32::from(c.1)),
        })
        .await
        .expect("id given")
        .into_inner();
    (r.producer_id, r.producer_epoch as i16)
}

/// Records stored in `t`/0, as values.
async fn stored(raw: &mut StrandClient<Channel>) -> Vec<String> {
    let r = raw
        .fetch(FetchRequest {
            partitions: vec![FetchPartition {
                topic: "t".into(),
                partition: 0,
                offset: 0,
                max_bytes: 1 << 20,
                topic_id: String::new(),
            }],
            ..Default::default()
        })
        .await
        .expect("fetch")
        .into_inner();
    let mut out = Vec::new();
    for p in r.partitions {
        for b in strand_storage::batches(&p.records) {
            let b = b.expect("valid");
            for rec in strand_storage::DecodedRecords::new(&b).expect("decodes").iter() {
                let rec = rec.expect("record");
                out.push(String::from_utf8_lossy(rec.value.unwrap_or_default()).into_owned());
            }
        }
    }
    out
}

#[tokio::test]
async fn retries_are_answered_with_the_stored_offsets_and_sequence_errors_have_reasons() {
    let b = TestBroker::start().await;
    let admin = Admin::connect(b.addr()).await.unwrap();
    admin.create_topic("t", 1, 1, BTreeMap::new()).await.unwrap();
    let mut raw = b.raw().await;
    let (id, epoch) = init(&mut raw, "", None).await;
    assert!(id > 0);
    assert_eq!(epoch, 0);
    let (other, _) = init(&mut raw, "", None).await;
    assert_ne!(other, id, "every producer gets its own id");

    assert_eq!(produce(&mut raw, numbered("a", 3, id, 0, 0)).await, Ok(0));
    assert_eq!(produce(&mut raw, numbered("a", 3, id, 0, 0)).await, Ok(0), "a retry");
    assert_eq!(produce(&mut raw, numbered("b", 2, id, 0, 3)).await, Ok(3));
    assert_eq!(
        produce(&mut raw, numbered("c", 1, id, 0, 9)).await,
        Err(ErrorCode::OutOfOrderSequence)
    );
    assert_eq!(
        produce(&mut raw, numbered("d", 1, 999_999, 0, 4)).await,
        Err(ErrorCode::UnknownProducerId)
    );
    // The next epoch of the same id (after an error it cannot repair).
    let bumped = init(&mut raw, "", Some((id, epoch))).await;
    assert_eq!(bumped, (id, 1));
    assert_eq!(produce(&mut raw, numbered("e", 1, id, 1, 0)).await, Ok(5));
    assert_eq!(
        produce(&mut raw, numbered("f", 1, id, 0, 5)).await,
        Err(ErrorCode::ProducerFenced)
    );
    assert_eq!(stored(&mut raw).await, ["a-0", "a-1", "a-2", "b-0", "b-1", "e-0"]);

    // A batch with a producer id but a negative sequence is malformed.
    assert_eq!(
        produce(&mut raw, numbered("g", 1, id, 1, -3)).await,
        Err(ErrorCode::CorruptBatch)
    );

    let d = admin.describe_topic("t").await.unwrap();
    assert_eq!(
        d.partitions[0].active_producers, 1,
        "describe shows the producers it remembers"
    );

    // Producer state is rebuilt from the log after a restart.
    let b = b.restart().await;
    let mut raw = b.raw().await;
    assert_eq!(
        produce(&mut raw, numbered("e", 1, id, 1, 0)).await,
        Ok(5),
        "a retry after restart"
    );
    assert_eq!(produce(&mut raw, numbered("h", 1, id, 1, 1)).await, Ok(6));
    assert_eq!(stored(&mut raw).await.len(), 7);
    b.stop().await;
}

#[tokio::test]
async fn a_producer_started_again_with_its_key_fences_the_old_one() {
    let b = TestBroker::start().await;
    let admin = Admin::connect(b.addr()).await.unwrap();
    admin.create_topic("t", 1, 1, BTreeMap::new()).await.unwrap();
    let mut raw = b.raw().await;
    let first = init(&mut raw, "orders", None).await;
    let second = init(&mut raw, "orders", None).await;
    assert_eq!(second, (first.0, first.1 + 1), "same id, next epoch");
    let zombie = raw
        .init_producer_id(InitProducerIdRequest {
            producer_id_key: "orders".into(),
            producer_id: first.0,
            producer_epoch: i32::from(first.1),
        })
        .await
        .expect_err("the old incarnation cannot take a newer epoch");
    assert_eq!(crate::harness::reason(&zombie), "PRODUCER_FENCED");

    let send = |p: Producer, v: &'static str| async move {
        p.send(ProducerRecord::new("t", v).partition(0))
            .await
            .expect("accepted")
            .await
    };
    let old = Producer::builder(b.addr())
        .producer_id_key("app")
        .build()
        .await
        .unwrap();
    send(old.clone(), "old-1").await.expect("stored");
    let new = Producer::builder(b.addr())
        .producer_id_key("app")
        .build()
        .await
        .unwrap();
    send(new.clone(), "new-1").await.expect("stored");
    let err = send(old.clone(), "old-2").await.expect_err("fenced");
    assert_eq!(err.code(), Some(ErrorCode::ProducerFenced), "{err}");
    let err = send(old.clone(), "old-3").await.expect_err("still fenced");
    assert_eq!(err.code(), Some(ErrorCode::ProducerFenced), "{err}");
    let m = send(new.clone(), "new-2").await.expect("the new one goes on");
    assert_eq!(m.offset, Some(2));
    assert_eq!(stored(&mut raw).await, ["old-1", "new-1", "new-2"]);
    b.stop().await;
}

/// The partition forgets a producer idle past `producer.id.expiration.ms`;
/// the client's next batch is refused as UNKNOWN_PRODUCER_ID, renumbered
/// under the next epoch and stored once.
#[tokio::test]
async fn an_expired_producer_is_renumbered_and_loses_nothing() {
    let b = TestBroker::start().await;
    let admin = Admin::connect(b.addr()).await.unwrap();
    let configs = BTreeMap::from([("producer.id.expiration.ms".to_string(), "500".to_string())]);
    admin.create_topic("t", 1, 1, configs).await.unwrap();
    let mut raw = b.raw().await;
    let (id, _) = init(&mut raw, "", None).await;
    assert_eq!(produce(&mut raw, numbered("a", 1, id, 0, 0)).await, Ok(0));

    let p = Producer::builder(b.addr()).build().await.unwrap();
    for v in ["x-0", "x-1"] {
        p.send(ProducerRecord::new("t", v).partition(0))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // Time is what expires a producer: nothing to wait on but the clock.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        produce(&mut raw, numbered("b", 1, id, 0, 1)).await,
        Err(ErrorCode::UnknownProducerId),
        "expired"
    );
    let meta = p
        .send(ProducerRecord::new("t", "x-2").partition(0))
        .await
        .unwrap()
        .await
        .expect("renumbered under a newer epoch and stored");
    assert_eq!(meta.offset, Some(3));
    p.close().await.unwrap();
    assert_eq!(stored(&mut raw).await, ["a-0", "x-0", "x-1", "x-2"]);
    b.stop().await;
}

/// Many small batches, five in flight per partition: every record once, in
/// the order sent, per partition.
#[tokio::test]
async fn five_batches_in_flight_keep_each_partition_in_order() {
    let b = TestBroker::start().await;
    let admin = Admin::connect(b.addr()).await.unwrap();
    admin.create_topic("t", 3, 1, BTreeMap::new()).await.unwrap();
    let p = Producer::builder(b.addr())
        .batch_bytes(200)
        .linger(Duration::ZERO)
        .build()
        .await
        .unwrap();
    let mut deliveries = Vec::new();
    for i in 0..3_000u32 {
        let part = i % 3;
        let value = format!("{part}:{i:06}");
        deliveries.push(p.send(ProducerRecord::new("t", value).partition(part)).await.unwrap());
    }
    for d in deliveries {
        d.await.expect("stored");
    }
    p.close().await.unwrap();
    let mut c = Consumer::builder(b.addr())
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .await
        .unwrap();
    c.assign("t", &[0, 1, 2]).await.unwrap();
    let mut seen: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.values().map(Vec::len).sum::<usize>() < 3_000 {
        assert!(tokio::time::Instant::now() < deadline, "read {:?}", seen.keys());
        for r in c.poll().await.unwrap() {
            let v = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            seen.entry(r.partition).or_default().push(v);
        }
    }
    for (part, values) in &seen {
        assert_eq!(values.len(), 1_000, "partition {part}: each record once");
        let mut sorted = values.clone();
        sorted.sort();
        assert_eq!(values, &sorted, "partition {part} in send order");
    }
}
