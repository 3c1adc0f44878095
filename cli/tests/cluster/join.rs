//! A broker with an empty data directory joins a running cluster
//! (`strand broker --join`) and takes over a partition's replica
//! (`topic reassign`): the move keeps every acknowledged record, ends with a
//! byte-identical log on the new broker, and the new broker votes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strand_client::{Producer, ProducerRecord};

use super::{admin, create, drain, replica_bytes};
use crate::support::Cluster;

async fn produce(c: &Cluster, from: usize, n: usize) {
    let p = Producer::builder(c.bootstrap()).build().await.expect("producer");
    let mut ds = Vec::new();
    for i in from..from + n {
        let r = ProducerRecord::new("moves", Bytes::from(format!("v{i}"))).key(Bytes::from(format!("k{i}")));
        ds.push(p.send(r).await.expect("send"));
    }
    for d in ds {
        d.await.expect("acknowledged");
    }
    p.close().await.expect("close");
}

fn values(records: &[strand_client::ConsumerRecord]) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_empty_broker_joins_and_takes_over_a_replica() {
    let mut c = Cluster::start(3);
    c.wait_ready().await;
    create(&c, "moves", 2).await;
    // More partitions on the first three brokers, for the rebalance below.
    create(&c, "spread", 6).await;
    produce(&c, 0, 2_000).await;

    let new = c.add_joining();
    assert_eq!(new, 4);
    c.wait_ready().await;
    let a = admin(&c).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !a
        .metadata()
        .await
        .expect("metadata")
        .brokers
        .iter()
        .any(|b| b.node_id == 4)
    {
        assert!(Instant::now() < deadline, "broker 4 not listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Replace partition 0's leader (the hardest case: it hands leadership
    // over before it leaves) with the new broker.
    let leader = c.leader("moves", 0).await;
    let before = a.describe_topic("moves").await.expect("describe").partitions[0]
        .replicas
        .clone();
    let target: Vec<u64> = before.iter().map(|&r| if r == leader { 4 } else { r }).collect();
    assert_eq!(
        a.reassign_partition("moves", 0, &[1, 1]).await.unwrap_err().reason(),
        "INVALID_REQUEST"
    );
    assert_eq!(
        a.reassign_partition("moves", 0, &[9, 2, 3]).await.unwrap_err().reason(),
        "INVALID_REQUEST",
        "an unknown broker"
    );
    a.reassign_partition("moves", 0, &target).await.expect("reassign");
    // Writes go on during the move.
    produce(&c, 2_000, 500).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = a.describe_topic("moves").await.expect("describe").partitions[0].clone();
        if p.replicas == target && p.moving_to.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "move not done: {p:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Nothing acknowledged was lost; the new replica holds the same bytes.
    let all = drain(&c, "moves", 2).await;
    let want: BTreeSet<String> = (0..2_500).map(|i| format!("v{i}")).collect();
    assert_eq!(values(&all), want);
    let hw = a
        .list_offsets("moves", 0, strand_client::OffsetSpec::Latest)
        .await
        .expect("offsets")
        .offset;
    let keeper = *target.iter().find(|&&r| r != 4).expect("an original replica stays");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mine = replica_bytes(&c.data_dir(4).join("moves-0"), hw);
        let theirs = replica_bytes(&c.data_dir(keeper).join("moves-0"), hw);
        if !mine.is_empty() && mine == theirs {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "broker 4's replica differs from broker {keeper}'s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The broker that left deletes its replica.
    let gone = c.data_dir(leader).join("moves-0");
    let deadline = Instant::now() + Duration::from_secs(30);
    while gone.exists() {
        assert!(Instant::now() < deadline, "broker {leader} kept its replica");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The new broker votes: with one more original replica of partition 0
    // gone, it and the last one still commit.
    let other = *target
        .iter()
        .find(|&&r| r != 4 && r != keeper)
        .expect("a third replica");
    c.kill(other);
    produce(&c, 2_500, 200).await;
    let all = drain(&c, "moves", 2).await;
    assert_eq!(values(&all).len(), 2_700);
    // And it restarts with its data (keeping --join).
    c.restart(4);
    c.wait_ready().await;

    // A rebalance spreads the rest over the four brokers: the killed one
    // comes back first so every move can complete.
    c.restart(other);
    c.wait_ready().await;
    let moves = a.plan_rebalance().await.expect("plan");
    assert!(
        moves.iter().all(|m| m.to.contains(&4)),
        "every move goes to the new broker: {moves:?}"
    );
    assert!(moves.len() >= 4, "broker 4 gets its share: {moves:?}");
    for m in &moves {
        a.reassign_partition(&m.topic, m.partition, &m.to)
            .await
            .expect("reassign");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = a.plan_rebalance().await.expect("plan");
        let moving = a
            .describe_topic("moves")
            .await
            .expect("describe")
            .partitions
            .iter()
            .any(|p| !p.moving_to.is_empty());
        if left.is_empty() && !moving {
            break;
        }
        assert!(Instant::now() < deadline, "rebalance did not settle: {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = drain(&c, "moves", 2).await;
    assert_eq!(values(&all).len(), 2_700, "nothing lost by the rebalance");
}
