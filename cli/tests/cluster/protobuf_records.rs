//! Protobuf-native records on three brokers, as a client generated from the
//! .proto would send them: the broker picks partitions, so what happens
//! when the chosen partition is led elsewhere matters.

use std::time::Duration;

use bytes::Bytes;
use strand_client::partition_for_key;
use strand_client::proto::{
    Acks, ErrorCode, ProduceRequest, ProduceResponse, Record, TopicRecords, strand_client::StrandClient,
};

use super::create;
use crate::support::Cluster;

fn records(topic: &str, records: Vec<Record>) -> ProduceRequest {
    ProduceRequest {
        acks: Acks::All as i32,
        timeout_ms: 10_000,
        records: vec![TopicRecords {
            topic: topic.into(),
            records,
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn send(addr: &str, req: ProduceRequest) -> ProduceResponse {
    let mut c = StrandClient::connect(format!("http://{addr}")).await.expect("connect");
    c.produce(req).await.expect("answered per record").into_inner()
}

/// Keyless records go to a partition the receiving broker leads; keyed
/// records whose partition is led elsewhere are refused with NOT_LEADER
/// naming the leader, and stored once sent there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_records_stay_on_the_broker_and_keyed_ones_name_their_leader() {
    let c = Cluster::start(3);
    c.wait_ready().await;
    const PARTITIONS: u32 = 6;
    create(&c, "anywhere", PARTITIONS).await;
    let mut leaders = Vec::new();
    for p in 0..PARTITIONS {
        leaders.push(c.leader("anywhere", p).await);
    }

    for broker in 1..=3u64 {
        if !leaders.contains(&broker) {
            continue;
        }
        let keyless = (0..5)
            .map(|i| Record {
                value: Some(Bytes::from(format!("from {broker}: {i}"))),
                ..Default::default()
            })
            .collect();
        let answer = send(&c.addr(broker), records("anywhere", keyless)).await;
        for r in &answer.record_results {
            assert!(r.error.is_none(), "keyless record sent to broker {broker}: {r:?}");
            assert_eq!(
                leaders[r.partition as usize], broker,
                "on a partition broker {broker} leads"
            );
        }
    }

    let keyed: Vec<Record> = (0..30)
        .map(|i| Record {
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(format!("v{i}"))),
            ..Default::default()
        })
        .collect();
    let answer = send(&c.addr(1), records("anywhere", keyed.clone())).await;
    let mut elsewhere: Vec<(String, Record)> = Vec::new();
    for (r, res) in keyed.into_iter().zip(&answer.record_results) {
        let key = r.key.clone().unwrap_or_default();
        assert_eq!(res.partition, partition_for_key(&key, PARTITIONS));
        if leaders[res.partition as usize] == 1 {
            assert!(res.error.is_none(), "{res:?}");
            continue;
        }
        let e = res.error.as_ref().expect("refused on a broker that does not lead it");
        assert_eq!(e.code, ErrorCode::NotLeader as i32, "{e:?}");
        assert_eq!(
            e.leader_addr,
            c.addr(leaders[res.partition as usize]),
            "names the leader"
        );
        elsewhere.push((e.leader_addr.clone(), r));
    }
    assert!(!elsewhere.is_empty(), "30 keys over 6 partitions on 3 brokers");
    for (leader, r) in elsewhere {
        let answer = tokio::time::timeout(Duration::from_secs(30), send(&leader, records("anywhere", vec![r])))
            .await
            .expect("answered");
        assert!(
            answer.record_results[0].error.is_none(),
            "{:?}",
            answer.record_results[0]
        );
    }
}

/// A fetch with `leader_only` is answered only by the partition's leader:
/// a follower says NOT_LEADER and names it (without the flag a follower
/// answers from its own copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_only_fetch_is_refused_by_a_follower_that_names_the_leader() {
    use strand_client::proto::{FetchPartition, FetchRequest, RecordFormat};
    let c = Cluster::start(3);
    c.wait_ready().await;
    create(&c, "reads", 1).await;
    let leader = c.leader("reads", 0).await;
    let r = send(
        &c.addr(leader),
        records(
            "reads",
            vec![Record {
                value: Some(Bytes::from_static(b"one")),
                partition: Some(0),
                ..Default::default()
            }],
        ),
    )
    .await;
    assert!(r.record_results.iter().all(|r| r.error.is_none()), "{r:?}");
    let follower = (1..=3).find(|&i| i != leader).expect("a follower");
    let fetch = |leader_only| FetchRequest {
        partitions: vec![FetchPartition {
            topic: "reads".into(),
            partition: 0,
            offset: 0,
            ..Default::default()
        }],
        max_wait_ms: 2_000,
        record_format: RecordFormat::Protobuf as i32,
        leader_only,
        ..Default::default()
    };
    let mut f = StrandClient::connect(format!("http://{}", c.addr(follower)))
        .await
        .expect("connect");
    let refused = f.fetch(fetch(true)).await.expect("answered").into_inner();
    let e = refused.partitions[0].error.clone().expect("refused");
    assert_eq!(e.code, ErrorCode::NotLeader as i32, "{e:?}");
    assert_eq!(e.leader_addr, c.addr(leader));
    // The follower's own copy, once it has the record.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let a = f.fetch(fetch(false)).await.expect("answered").into_inner();
        if a.partitions[0].decoded_records.len() == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the follower never served its copy: {a:?}"
        );
    }
    let mut l = StrandClient::connect(format!("http://{}", c.addr(leader)))
        .await
        .expect("connect");
    let served = l.fetch(fetch(true)).await.expect("answered").into_inner();
    assert_eq!(served.partitions[0].decoded_records.len(), 1);
}
