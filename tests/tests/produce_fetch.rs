//! The user's contract of a single broker through the real client:
//! keyed partitioning, ordering, replay by offset and time, restart,
//! long-polling (issue "A broker that serves gRPC produce/fetch…").

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strand_client::{
    Admin, Consumer, ConsumerRecord, Offset, OffsetReset, Producer, ProducerRecord, partition_for_key,
};

use crate::harness::TestBroker;

async fn consumer(b: &TestBroker) -> Consumer {
    Consumer::builder(b.addr())
        .auto_offset_reset(OffsetReset::Earliest)
        .max_wait(Duration::from_millis(200))
        .build()
        .await
        .expect("consumer")
}

/// Reads until `n` records arrived (or panics after 60 s).
async fn read_n(c: &mut Consumer, n: usize) -> Vec<ConsumerRecord> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        assert!(Instant::now() < deadline, "only {} of {n} records arrived", out.len());
        out.extend(c.poll().await.expect("poll"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_land_on_their_murmur2_partition_in_order() {
    let b = TestBroker::start().await;
    let admin = Admin::connect(b.addr()).await.unwrap();
    admin.create_topic("events", 8, 1, BTreeMap::new()).await.unwrap();
    let producer = Producer::builder(b.addr()).build().await.unwrap();
    const N: usize = 100_000;
    const KEYS: usize = 500;
    let mut deliveries = Vec::with_capacity(N);
    for i in 0..N {
        let key = format!("key-{}", i % KEYS);
        let r = ProducerRecord::new("events", Bytes::from(format!("{i}"))).key(Bytes::from(key));
        deliveries.push(producer.send(r).await.unwrap());
    }
    for d in deliveries {
        d.await.expect("acknowledged");
    }
    producer.close().await.unwrap();

    let mut c = consumer(&b).await;
    c.assign_all("events").await.unwrap();
    let records = read_n(&mut c, N).await;
    assert_eq!(records.len(), N, "no duplicates");
    let mut last_seq: HashMap<Bytes, usize> = HashMap::new();
    let mut seen = vec![false; N];
    for r in &records {
        let key = r.key.clone().expect("keyed");
        assert_eq!(
            r.partition,
            partition_for_key(&key, 8),
            "key {key:?} on its murmur2 partition"
        );
        let seq: usize = std::str::from_utf8(r.value.as_ref().unwrap()).unwrap().parse().unwrap();
        assert!(!seen[seq], "record {seq} read twice");
        seen[seq] = true;
        if let Some(prev) = last_seq.insert(key.clone(), seq) {
            assert!(prev < seq, "key {key:?}: {seq} after {prev}");
        }
    }
    assert!(seen.iter().all(|&s| s), "every record was read");
    b.stop().await;
}

async fn produce_numbered(b: &TestBroker, topic: &str, n: usize, ts: impl Fn(usize) -> i64) -> Vec<u64> {
    let producer = Producer::builder(b.addr())
        .linger(Duration::from_millis(1))
        .build()
        .await
        .unwrap();
    let mut offsets = Vec::new();
    for i in 0..n {
        let r = ProducerRecord::new(topic, Bytes::from(format!("{i}")))
            .partition(0)
            .timestamp_ms(ts(i));
        offsets.push(producer.send_and_wait(r).await.unwrap().offset.expect("offset"));
    }
    producer.close().await.unwrap();
    offsets
}

#[tokio::test]
async fn replay_from_an_offset_returns_exactly_the_records_from_it() {
    let b = TestBroker::start().await;
    Admin::connect(b.addr())
        .await
        .unwrap()
        .create_topic("r", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let offsets = produce_numbered(&b, "r", 300, |i| 1_000 + i as i64).await;
    assert_eq!(offsets, (0..300).collect::<Vec<u64>>());
    let mut c = consumer(&b).await;
    c.assign("r", &[0]).await.unwrap();
    for start in [0u64, 1, 137, 299] {
        c.seek("r", 0, Offset::At(start)).await.unwrap();
        let got = read_n(&mut c, 300 - start as usize).await;
        let offs: Vec<u64> = got.iter().map(|r| r.offset).collect();
        assert_eq!(offs, (start..300).collect::<Vec<_>>(), "replay from {start}");
    }
    c.seek("r", 0, Offset::End).await.unwrap();
    assert_eq!(c.position("r", 0), Some(300));
    b.stop().await;
}

#[tokio::test]
async fn replay_by_timestamp_starts_at_the_first_record_at_or_after_it() {
    let b = TestBroker::start().await;
    Admin::connect(b.addr())
        .await
        .unwrap()
        .create_topic("t", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let base = strand_storage::now_ms() - 60_000;
    produce_numbered(&b, "t", 100, |i| base + 10 * i as i64).await;
    let mut c = consumer(&b).await;
    c.assign("t", &[0]).await.unwrap();
    c.seek("t", 0, Offset::Timestamp(base + 455)).await.unwrap();
    let got = read_n(&mut c, 54).await;
    assert_eq!(got[0].offset, 46, "first record stamped >= base+455 is #46 (base+460)");
    assert_eq!(got[0].timestamp_ms, base + 460);
    c.seek("t", 0, Offset::Timestamp(base + 10_000)).await.unwrap();
    assert_eq!(
        c.position("t", 0),
        Some(100),
        "a time after every record positions at the end"
    );
    b.stop().await;
}

#[tokio::test]
async fn a_restarted_broker_serves_everything_it_acknowledged() {
    let b = TestBroker::start().await;
    let admin = Admin::connect(b.addr()).await.unwrap();
    admin.create_topic("keep", 2, 1, BTreeMap::new()).await.unwrap();
    let producer = Producer::builder(b.addr()).build().await.unwrap();
    for i in 0..2_000 {
        let r = ProducerRecord::new("keep", Bytes::from(format!("v{i}"))).key(Bytes::from(format!("k{}", i % 7)));
        producer.send_and_wait(r).await.unwrap();
    }
    producer.close().await.unwrap();
    let b = b.restart().await;
    let admin = Admin::connect(b.addr()).await.unwrap();
    let t = admin.describe_topic("keep").await.unwrap();
    assert_eq!(t.partitions.len(), 2, "topic metadata survived");
    let total: u64 = t.partitions.iter().map(|p| p.high_watermark).sum();
    assert_eq!(total, 2_000);
    let mut c = consumer(&b).await;
    c.assign_all("keep").await.unwrap();
    assert_eq!(read_n(&mut c, 2_000).await.len(), 2_000);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_polling_consumer_is_woken_by_new_data_not_by_its_timer() {
    let b = TestBroker::start().await;
    Admin::connect(b.addr())
        .await
        .unwrap()
        .create_topic("lp", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let producer = Producer::builder(b.addr())
        .linger(Duration::from_millis(0))
        .build()
        .await
        .unwrap();
    let mut c = Consumer::builder(b.addr())
        .auto_offset_reset(OffsetReset::Latest)
        .max_wait(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    c.assign("lp", &[0]).await.unwrap();
    let mut latencies = Vec::new();
    for i in 0..20 {
        let poll = tokio::spawn(async move {
            let records = c.poll().await.expect("poll");
            (c, records, Instant::now())
        });
        // Let the fetch reach the broker and park.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = ProducerRecord::new("lp", Bytes::from(format!("{i}"))).partition(0);
        producer.send_and_wait(r).await.unwrap();
        let acked = Instant::now();
        let (back, records, received) = poll.await.unwrap();
        c = back;
        assert_eq!(records.len(), 1, "round {i}");
        latencies.push(received.saturating_duration_since(acked));
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    // The poll waits up to 5 s; data must end it almost at once.
    assert!(
        median < Duration::from_millis(50),
        "median wake-up after the ack: {median:?} ({latencies:?})"
    );
    producer.close().await.unwrap();
    b.stop().await;
}

#[tokio::test]
async fn subscribe_pushes_batches_as_they_become_visible() {
    use strand_proto::v1::SubscribeRequest;
    let b = TestBroker::start().await;
    Admin::connect(b.addr())
        .await
        .unwrap()
        .create_topic("s", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    produce_numbered(&b, "s", 5, |_| strand_storage::now_ms()).await;
    let mut stream = b
        .raw()
        .await
        .subscribe(SubscribeRequest {
            topic: "s".into(),
            partition: 0,
            offset: 2,
            max_bytes: 0,
            topic_id: String::new(),
            record_format: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().expect("data");
    assert!(!first.records.is_empty());
    produce_numbered(&b, "s", 3, |_| strand_storage::now_ms()).await;
    let mut next = 0;
    for batch in strand_storage::batches(&first.records) {
        next = batch.unwrap().next_offset().get();
    }
    while next < 8 {
        let more = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .unwrap()
            .unwrap()
            .expect("data");
        for batch in strand_storage::batches(&more.records) {
            next = batch.unwrap().next_offset().get();
        }
    }
    assert_eq!(next, 8);
    b.stop().await;
}
