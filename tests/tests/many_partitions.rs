//! A topic of 10,000 partitions on one broker: every record is consumed by
//! a plain consumer of all partitions and by a group of three (fetch
//! sessions, offset commits split into batches, quiet idle partitions).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strand_client::{Admin, Consumer, OffsetReset, Producer, ProducerRecord};

use crate::harness::TestBroker;

const TOPIC: &str = "wide";

/// What each group member read: (partition, offset) by member.
type SeenBy = HashMap<String, BTreeSet<(u32, u64)>>;
const PARTITIONS: u32 = 10_000;
const RECORDS: u32 = 20_000;
const DEADLINE: Duration = Duration::from_secs(240);

async fn wait_for_leaders(admin: &Admin) {
    let start = Instant::now();
    loop {
        let d = admin.describe_topic(TOPIC).await.expect("describe");
        if d.partitions.len() == PARTITIONS as usize && d.partitions.iter().all(|p| p.leader != 0) {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "partitions still without a leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_of_a_ten_thousand_partition_topic_is_consumed_plainly_and_by_a_group_of_three() {
    let b = TestBroker::start().await;
    let admin = Admin::connect(b.addr()).await.expect("admin");
    admin
        .create_topic(TOPIC, PARTITIONS, 1, Default::default())
        .await
        .expect("create");
    wait_for_leaders(&admin).await;

    let p = Producer::builder(b.addr()).build().await.expect("producer");
    let mut acks = Vec::new();
    for i in 0..RECORDS {
        let r = ProducerRecord::new(TOPIC, Bytes::from(format!("v{i}"))).key(Bytes::from(format!("k{i}")));
        acks.push(p.send(r).await.expect("send"));
    }
    let mut written = BTreeSet::new();
    for a in acks {
        let m = a.await.expect("acknowledged");
        written.insert((m.partition, m.offset.expect("acks=all answers with the offset")));
    }
    p.close().await.expect("close");
    assert_eq!(written.len(), RECORDS as usize);
    let used: BTreeSet<u32> = written.iter().map(|(p, _)| *p).collect();
    assert!(used.len() > 8_000, "keys spread over the partitions: {}", used.len());

    // Plainly: one consumer of every partition.
    let mut c = Consumer::builder(b.addr())
        .auto_offset_reset(OffsetReset::Earliest)
        .max_wait(Duration::from_millis(200))
        .build()
        .await
        .expect("consumer");
    c.assign_all(TOPIC).await.expect("assign");
    let mut seen = BTreeSet::new();
    let start = Instant::now();
    while seen.len() < written.len() {
        for r in c.poll().await.expect("poll") {
            seen.insert((r.partition, r.offset));
        }
        assert!(
            start.elapsed() < DEADLINE,
            "plain consumer saw {} of {}",
            seen.len(),
            written.len()
        );
    }
    assert_eq!(seen, written);

    // A group of three, committing as it goes.
    let seen: Arc<Mutex<SeenBy>> = Arc::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut members = Vec::new();
    for m in 0..3 {
        let (addr, seen, mut stopped) = (b.addr(), Arc::clone(&seen), stopped.clone());
        members.push(tokio::spawn(async move {
            let name = format!("m{m}");
            let mut c = Consumer::builder(addr)
                .group("wide-readers")
                .client_id(name.clone())
                .auto_offset_reset(OffsetReset::Earliest)
                .max_wait(Duration::from_millis(200))
                .build()
                .await
                .expect("member");
            c.subscribe(&[TOPIC]).await.expect("subscribe");
            while !*stopped.borrow_and_update() {
                let records = c.poll().await.expect("poll");
                if records.is_empty() {
                    continue;
                }
                seen.lock()
                    .expect("lock")
                    .entry(name.clone())
                    .or_default()
                    .extend(records.iter().map(|r| (r.partition, r.offset)));
                c.commit().await.expect("commit");
            }
            c.close().await.expect("close");
        }));
    }
    let start = Instant::now();
    loop {
        let union: BTreeSet<(u32, u64)> = seen.lock().expect("lock").values().flatten().copied().collect();
        if union.len() == written.len() {
            assert_eq!(union, written);
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the group saw {} of {}",
            union.len(),
            written.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.send(true).expect("stop");
    for m in members {
        m.await.expect("member ran");
    }
    let per_member: Vec<usize> = seen.lock().expect("lock").values().map(BTreeSet::len).collect();
    assert_eq!(per_member.len(), 3, "every member consumed: {per_member:?}");
}
