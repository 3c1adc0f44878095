//! Three real brokers replicating with Raft (issue "Multi-node cluster"):
//! failover under load with no acknowledged record lost, byte-identical
//! replicas, controller failover, follower catch-up.

mod disks;
mod groups;
mod identity;
mod join;
mod protobuf_records;
mod security;
mod share_groups;
mod topic_ids;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::Cluster;
use bytes::Bytes;
use strand_client::proto::{DescribeTopicRequest, admin_client::AdminClient};
use strand_client::{Admin, Consumer, ConsumerRecord, OffsetReset, Producer, ProducerRecord};
use strand_storage::{LogConfig, PartitionLog, batches};

async fn admin(c: &Cluster) -> Admin {
    Admin::connect_with(c.bootstrap(), c.security()).await.expect("admin")
}

async fn create(c: &Cluster, topic: &str, partitions: u32) {
    let a = admin(c).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match a.create_topic(topic, partitions, 3, BTreeMap::new()).await {
            Ok(_) => break,
            Err(e) if e.is_retriable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("create {topic}: {e}"),
        }
    }
    for p in 0..partitions {
        c.leader(topic, p).await;
    }
}

/// Reads every partition of `topic` from the beginning up to its high
/// watermark on the brokers.
async fn drain(c: &Cluster, topic: &str, partitions: u32) -> Vec<ConsumerRecord> {
    let a = admin(c).await;
    let mut out = Vec::new();
    for p in 0..partitions {
        let end = a
            .list_offsets(topic, p, strand_client::OffsetSpec::Latest)
            .await
            .expect("offsets")
            .offset;
        let mut consumer = Consumer::builder(c.bootstrap())
            .security(c.security())
            .auto_offset_reset(OffsetReset::Earliest)
            .max_wait(Duration::from_millis(200))
            .build()
            .await
            .expect("consumer");
        consumer.assign(topic, &[p]).await.expect("assign");
        let deadline = Instant::now() + Duration::from_secs(60);
        while consumer.position(topic, p).unwrap_or(0) < end {
            assert!(Instant::now() < deadline, "partition {p} did not drain to {end}");
            out.extend(consumer.poll().await.expect("poll"));
        }
    }
    out
}

/// The raw batches of one replica's partition log below `upper`, up to its
/// last record batch: Raft no-ops after it (an election after the test's
/// writes, which a replica stopped first never sees) are not compared.
fn replica_bytes(dir: &std::path::Path, upper: u64) -> Vec<u8> {
    let log = PartitionLog::open(dir, LogConfig::default()).expect("open replica log");
    let mut out = Vec::new();
    let mut data_end = 0;
    let mut next = log.earliest();
    let upper = strand_storage::Offset(upper);
    while next < upper.min(log.latest()) {
        let bytes = log.read_bounded(next, 1 << 20, upper).expect("read");
        if bytes.is_empty() {
            break;
        }
        let mut at = out.len();
        for b in batches(&bytes) {
            let b = b.expect("valid");
            next = b.next_offset();
            at += b.len();
            if !b.is_control() {
                data_end = at;
            }
        }
        out.extend_from_slice(&bytes);
    }
    out.truncate(data_end);
    out
}

/// Waits until every replica of every partition has the same log end.
async fn converge(c: &Cluster, topic: &str, partitions: u32) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    'outer: loop {
        assert!(Instant::now() < deadline, "replicas did not converge");
        let mut ends = vec![Vec::new(); partitions as usize];
        for id in 1..=3 {
            // Ask this very broker (the client's Admin would fail over to
            // another one and hide a replica that is not serving yet).
            let Ok(mut a) = AdminClient::connect(format!("http://{}", c.addr(id))).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue 'outer;
            };
            let Ok(t) = a.describe_topic(DescribeTopicRequest { name: topic.into() }).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue 'outer;
            };
            for p in &t.into_inner().partitions {
                ends[p.partition as usize].push((p.log_end_offset, p.high_watermark, p.size_bytes));
            }
        }
        // Every broker hosts every partition here (RF 3 of 3), so each must
        // report the same, non-empty, fully committed log.
        if ends
            .iter()
            .all(|e| e.len() == 3 && e.iter().all(|x| *x == e[0] && x.0 == x.1 && x.2 > 0))
        {
            return ends.iter().map(|e| e[0].0).collect();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 3 brokers, 6 partitions × RF 3, 200,000 keyed records with acks=all while
/// a partition leader is killed with SIGKILL and restarted every few
/// seconds: every acknowledged record is read back, each key in order, and
/// the three replicas of every partition are byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_record_is_lost_while_leaders_are_killed() {
    let mut c = Cluster::start(3);
    c.wait_ready().await;
    create(&c, "orders", 6).await;
    const N: u64 = 200_000;
    const KEYS: u64 = 1_000;
    let producer = Producer::builder(c.bootstrap())
        .delivery_timeout(Duration::from_secs(120))
        .request_timeout(Duration::from_secs(5))
        .build()
        .await
        .expect("producer");
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let (producer, done) = (producer.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let mut deliveries = Vec::with_capacity(N as usize);
            for i in 0..N {
                let r = ProducerRecord::new("orders", Bytes::from(i.to_string()))
                    .key(Bytes::from(format!("k{}", i % KEYS)));
                deliveries.push((i, producer.send(r).await.expect("send")));
                // About 20,000 records/s, so the run spans several kills.
                if i % 1_000 == 999 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            let mut acked = Vec::new();
            let mut failures: HashMap<String, usize> = HashMap::new();
            for (i, d) in deliveries {
                match d.await {
                    Ok(_) => acked.push(i),
                    Err(e) => *failures.entry(format!("{}: {e}", e.reason())).or_default() += 1,
                }
            }
            if !failures.is_empty() {
                eprintln!("delivery failures: {failures:?}");
            }
            done.store(true, Ordering::SeqCst);
            acked
        })
    };
    let mut kills = 0;
    let mut partition = 0;
    tokio::time::sleep(Duration::from_millis(500)).await;
    while !done.load(Ordering::SeqCst) {
        let leader = c.leader("orders", partition % 6).await;
        c.kill(leader);
        kills += 1;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        c.restart(leader);
        partition += 1;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let acked = sender.await.expect("sender");
    producer.close().await.expect("close");
    assert!(kills >= 1, "at least one leader was killed during the run");
    assert_eq!(
        acked.len() as u64,
        N,
        "with retries every record is eventually acknowledged"
    );

    let ends = converge(&c, "orders", 6).await;
    let records = drain(&c, "orders", 6).await;
    // Each offset holds one record; retries may store a record twice.
    let mut first_seen: HashMap<u64, (u32, u64)> = HashMap::new();
    let mut per_key: HashMap<Bytes, Vec<u64>> = HashMap::new();
    for r in &records {
        let i: u64 = std::str::from_utf8(r.value.as_ref().expect("value"))
            .expect("utf8")
            .parse()
            .expect("number");
        if first_seen.insert(i, (r.partition, r.offset)).is_none() {
            per_key.entry(r.key.clone().expect("key")).or_default().push(i);
        }
    }
    let lost: Vec<u64> = acked.iter().copied().filter(|i| !first_seen.contains_key(i)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged records lost, first {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    for (key, seq) in &per_key {
        assert!(seq.windows(2).all(|w| w[0] < w[1]), "key {key:?} out of order");
    }
    let duplicates = records.len() - first_seen.len();
    eprintln!(
        "{kills} leader kills, {} records stored, {duplicates} duplicates from retries",
        records.len()
    );

    for id in 1..=3 {
        c.stop(id);
    }
    for (p, &end) in ends.iter().enumerate() {
        let reference = replica_bytes(&c.data_dir(1).join(format!("orders-{p}")), end);
        for id in 2..=3 {
            let other = replica_bytes(&c.data_dir(id).join(format!("orders-{p}")), end);
            assert!(other == reference, "partition {p}: replica {id} differs from replica 1");
        }
    }
}

/// Losing the controller's leader: a new one is elected and topic changes
/// still work with two of three brokers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_can_be_created_and_deleted_with_two_of_three_brokers() {
    let mut c = Cluster::start(3);
    c.wait_ready().await;
    let controller = c.controller().await;
    c.kill(controller);
    let survivor = (1..=3).find(|&i| i != controller).expect("survivor");
    let a = Admin::connect(c.addr(survivor)).await.expect("admin");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match a.create_topic("after-failover", 2, 3, BTreeMap::new()).await {
            Ok(_) => break,
            Err(e) if e.is_retriable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("create with two brokers: {e}"),
        }
    }
    let new_controller = c.controller().await;
    assert_ne!(new_controller, controller);
    let producer = Producer::builder(c.addr(survivor)).build().await.expect("producer");
    for i in 0..100 {
        producer
            .send_and_wait(ProducerRecord::new("after-failover", Bytes::from(format!("{i}"))))
            .await
            .expect("acks=all with 2 of 3");
    }
    a.delete_topic("after-failover").await.expect("delete with two brokers");
    a.create_topic("kept", 1, 3, BTreeMap::new())
        .await
        .expect("create with two brokers");
    assert!(
        a.list_topics()
            .await
            .expect("list")
            .iter()
            .all(|t| t.name != "after-failover")
    );
    // The old controller comes back and learns the changes.
    c.restart(controller);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "restarted broker never saw the topic changes"
        );
        if let Ok(back) = Admin::connect(c.addr(controller)).await
            && let Ok(m) = back.metadata().await
            && m.controller_id != 0
            && m.topics.iter().all(|t| t.name != "after-failover")
            && m.topics.iter().any(|t| t.name == "kept")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A follower that was down while 100,000 records were written catches up
/// and ends byte-identical to the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_catches_up() {
    let mut c = Cluster::start(3);
    c.wait_ready().await;
    create(&c, "catchup", 1).await;
    let leader = c.leader("catchup", 0).await;
    let follower = (1..=3).find(|&i| i != leader).expect("follower");
    c.kill(follower);
    let producer = Producer::builder(c.bootstrap()).build().await.expect("producer");
    let mut deliveries = Vec::new();
    for i in 0..100_000u64 {
        deliveries.push(
            producer
                .send(ProducerRecord::new("catchup", Bytes::from(i.to_string())))
                .await
                .expect("send"),
        );
    }
    for d in deliveries {
        d.await.expect("acknowledged by the two others");
    }
    c.restart(follower);
    let ends = converge(&c, "catchup", 1).await;
    assert!(ends[0] >= 100_000);
    for id in 1..=3 {
        c.stop(id);
    }
    let reference = replica_bytes(&c.data_dir(leader).join("catchup-0"), ends[0]);
    assert_eq!(
        replica_bytes(&c.data_dir(follower).join("catchup-0"), ends[0]),
        reference
    );
}

/// A paused (SIGSTOP) leader is replaced; once resumed it follows the new
/// leader, and whatever it had not committed is gone from its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_replaced_and_rejoins_as_a_follower() {
    let mut c = Cluster::start(3);
    c.wait_ready().await;
    create(&c, "paused", 1).await;
    let producer = Producer::builder(c.bootstrap())
        .request_timeout(Duration::from_secs(3))
        .build()
        .await
        .expect("producer");
    let mut pending = Vec::new();
    for i in 0..1_000 {
        let r = ProducerRecord::new("paused", Bytes::from(format!("a{i}")));
        pending.push(producer.send(r).await.expect("send"));
    }
    for d in pending {
        d.await.expect("before");
    }
    let old = c.leader("paused", 0).await;
    c.pause(old);
    let mut pending = Vec::new();
    for i in 0..1_000 {
        let r = ProducerRecord::new("paused", Bytes::from(format!("b{i}")));
        pending.push(producer.send(r).await.expect("send"));
    }
    for d in pending {
        d.await.expect("during");
    }
    c.resume(old);
    let ends = converge(&c, "paused", 1).await;
    let records = drain(&c, "paused", 1).await;
    let values: std::collections::HashSet<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_ref().expect("value")).into_owned())
        .collect();
    for i in 0..1_000 {
        assert!(
            values.contains(&format!("a{i}")) && values.contains(&format!("b{i}")),
            "record {i} lost"
        );
    }
    for id in 1..=3 {
        c.stop(id);
    }
    let reference = replica_bytes(&c.data_dir(1).join("paused-0"), ends[0]);
    for id in 2..=3 {
        let mine = replica_bytes(&c.data_dir(id).join("paused-0"), ends[0]);
        let first_diff = mine.iter().zip(&reference).position(|(a, b)| a != b);
        assert!(
            mine == reference,
            "replica {id} differs from replica 1 below offset {}: {} vs {} bytes, first difference at byte {first_diff:?} (old leader {old})",
            ends[0],
            mine.len(),
            reference.len()
        );
    }
}

/// A data directory refuses to join another cluster.
#[tokio::test]
async fn a_peer_list_that_disagrees_with_the_data_dir_is_refused() {
    let mut c = Cluster::start(1);
    c.wait_ready().await;
    c.stop(1);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strand"))
        .args([
            "broker",
            "--node-id",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--peers",
            "1@127.0.0.1:1,2@127.0.0.1:2",
            "--data-dir",
        ])
        .arg(c.data_dir(1))
        .output()
        .expect("run");
    assert!(!out.status.success(), "must refuse to start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not to --peers"), "clear message: {err}");
}

/// `cluster status` names a down broker and counts the partitions it leaves
/// under-replicated; once it is back and caught up the count returns to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_reports_down_brokers_and_under_replicated_partitions() {
    let mut c = Cluster::start(3);
    c.wait_ready().await;
    create(&c, "status", 3).await;
    let status = |c: &Cluster, id: u64| {
        let addr = c.addr(id);
        async move { Admin::connect(addr).await.ok()?.cluster_status().await.ok() }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "never fully replicated");
        if let Some(s) = status(&c, 1).await
            && s.under_replicated == 0
            && s.brokers.iter().all(|b| b.up)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.kill(3);
    let s = status(&c, 1).await.expect("status");
    assert!(!s.brokers.iter().find(|b| b.node_id == 3).expect("broker 3").up);
    assert_eq!(s.under_replicated, 3, "every partition has a replica on broker 3");
    assert!(s.partitions.iter().all(|p| p.lagging.contains(&3)));
    c.restart(3);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "never recovered");
        if let Some(s) = status(&c, 2).await
            && s.under_replicated == 0
            && s.partitions.iter().all(|p| p.leader != 0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A follower whose sealed segment is damaged on disk moves the log aside,
/// re-fetches it from the others (voting in no election meanwhile) and ends
/// byte-identical (the NATS JetStream 2025 failure: a corrupt replica must
/// never win with a damaged log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_a_damaged_segment_refetches_its_log() {
    let mut c = Cluster::start_with(3, "[log]\nsegment_bytes = 131072\nmax_batch_bytes = 131072\n");
    c.wait_ready().await;
    create(&c, "repair", 1).await;
    let producer = Producer::builder(c.bootstrap())
        .batch_bytes(32 * 1024)
        .build()
        .await
        .expect("producer");
    let mut deliveries = Vec::new();
    for i in 0..20_000u64 {
        let value = format!("{i:0>100}");
        deliveries.push(
            producer
                .send(ProducerRecord::new("repair", Bytes::from(value)))
                .await
                .expect("send"),
        );
    }
    for d in deliveries {
        d.await.expect("acknowledged");
    }
    converge(&c, "repair", 1).await;
    let leader = c.leader("repair", 0).await;
    let follower = (1..=3).find(|&i| i != leader).expect("follower");
    c.stop(follower);
    let dir = c.data_dir(follower).join("repair-0");
    let first = dir.join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&first).expect("first segment");
    assert!(
        std::fs::read_dir(&dir).expect("dir").count() > 6,
        "several segments were written"
    );
    bytes[200] ^= 0x20;
    std::fs::write(&first, bytes).expect("damage");
    c.restart(follower);
    let ends = converge(&c, "repair", 1).await;
    for id in 1..=3 {
        c.stop(id);
    }
    let quarantined = std::fs::read_dir(c.data_dir(follower))
        .expect("data dir")
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("repair-0.corrupt-"));
    assert!(quarantined, "the damaged log is kept aside for an operator");
    let reference = replica_bytes(&c.data_dir(leader).join("repair-0"), ends[0]);
    assert_eq!(
        replica_bytes(&dir, ends[0]),
        reference,
        "the repaired replica is byte-identical"
    );
}

/// After its preferred leader comes back, a partition's leadership returns
/// to it, so leaders stay spread over the brokers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_returns_to_the_preferred_replica() {
    let mut c = Cluster::start(3);
    c.wait_ready().await;
    create(&c, "balanced", 3).await;
    let a = admin(&c).await;
    let preferred: Vec<u64> = a
        .describe_topic("balanced")
        .await
        .expect("describe")
        .partitions
        .iter()
        .map(|p| p.replicas[0])
        .collect();
    let victim = preferred[0];
    c.kill(victim);
    let moved = c.leader("balanced", 0).await;
    assert_ne!(moved, victim);
    c.restart(victim);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "leadership never returned to broker {victim}"
        );
        if c.leader("balanced", 0).await == victim {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every broker leads one of the three partitions again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut leaders = Vec::new();
        for p in 0..3 {
            leaders.push(c.leader("balanced", p).await);
        }
        leaders.sort_unstable();
        if leaders == [1, 2, 3] {
            break;
        }
        assert!(Instant::now() < deadline, "leaders not spread: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
