//! Consumer groups on three brokers: committed offsets live in the
//! replicated `__consumer_offsets` topic and survive killing the broker
//! that coordinates the group.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strand_client::proto::FindCoordinatorRequest;
use strand_client::proto::groups_client::GroupsClient;
use strand_client::{Consumer, ConsumerRecord, OffsetReset, Producer, ProducerRecord};

use super::{admin, create};
use crate::support::Cluster;

const GROUP_CONFIG: &str =
    "[groups]\ninitial_rebalance_delay_ms = 300\nheartbeat_interval_ms = 200\nmin_session_timeout_ms = 500\n";

async fn produce(c: &Cluster, from: usize, n: usize) {
    let p = Producer::builder(c.bootstrap()).build().await.expect("producer");
    let mut ds = Vec::new();
    for i in from..from + n {
        let r = ProducerRecord::new("ledger", Bytes::from(format!("v{i}"))).key(Bytes::from(format!("k{i}")));
        ds.push(p.send(r).await.expect("send"));
    }
    for d in ds {
        d.await.expect("acknowledged");
    }
    p.close().await.expect("close");
}

/// Joins the group, reads `n` records, commits them, leaves.
async fn consume_and_commit(c: &Cluster, n: usize) -> Vec<ConsumerRecord> {
    let mut consumer = Consumer::builder(c.bootstrap())
        .group("auditors")
        .session_timeout(Duration::from_secs(3))
        .auto_commit(None)
        .auto_offset_reset(OffsetReset::Earliest)
        .max_wait(Duration::from_millis(200))
        .build()
        .await
        .expect("consumer");
    consumer.subscribe(&["ledger"]).await.expect("subscribe");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < n {
        assert!(Instant::now() < deadline, "read {} of {n}", got.len());
        let records = consumer.poll().await.expect("poll");
        if records.is_empty() {
            continue;
        }
        got.extend(records);
        // Commit after processing; the coordinator may be moving: retry.
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            match consumer.commit().await {
                Ok(()) => break,
                Err(e) if Instant::now() < until => {
                    eprintln!("commit failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("commit: {e}"),
            }
        }
    }
    // Nothing beyond the n records arrives.
    let extra = consumer.poll().await.expect("poll");
    assert!(extra.is_empty(), "{} records beyond the expected {n}", extra.len());
    consumer.close().await.expect("close");
    got
}

async fn committed(c: &Cluster) -> BTreeMap<u32, u64> {
    let a = admin(c).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match a.group_offsets("auditors").await {
            Ok(o) => return o.into_iter().map(|(_, p, o)| (p, o)).collect(),
            Err(e) if Instant::now() < deadline => {
                eprintln!("group offsets: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("group offsets: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_killing_the_coordinator() {
    let mut c = Cluster::start_with(3, GROUP_CONFIG);
    c.wait_ready().await;
    create(&c, "ledger", 3).await;
    produce(&c, 0, 3_000).await;
    let first = consume_and_commit(&c, 3_000).await;
    assert_eq!(first.len(), 3_000);
    let before = committed(&c).await;
    assert_eq!(before.values().sum::<u64>(), 3_000, "{before:?}");

    let mut g = GroupsClient::connect(format!("http://{}", c.addr(1)))
        .await
        .expect("connect");
    let coordinator = g
        .find_coordinator(FindCoordinatorRequest {
            group: "auditors".into(),
        })
        .await
        .expect("find coordinator")
        .into_inner()
        .node_id;
    c.kill(coordinator);

    // Another broker takes over the offsets partition and serves the same
    // offsets.
    assert_eq!(committed(&c).await, before, "offsets after losing broker {coordinator}");
    // A member joining now resumes exactly there: the new records only.
    produce(&c, 3_000, 300).await;
    let second = consume_and_commit(&c, 300).await;
    let values: std::collections::BTreeSet<String> = second
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    let want: std::collections::BTreeSet<String> = (3_000..3_300).map(|i| format!("v{i}")).collect();
    assert_eq!(values, want, "neither replayed nor skipped");
    let after = committed(&c).await;
    assert_eq!(after.values().sum::<u64>(), 3_300);

    // The killed broker comes back and catches up; the offsets stay.
    c.restart(coordinator);
    c.wait_ready().await;
    assert_eq!(committed(&c).await, after);
}

/// A consumer told to stop stops within its session timeout whatever its
/// coordinator does: here the coordinator's broker is paused (it accepts
/// nothing and answers nothing), so the final commit and the leave hang
/// until their deadlines, and `close` gives up at the session timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_closes_within_its_session_timeout_while_its_coordinator_is_paused() {
    let c = Cluster::start_with(3, GROUP_CONFIG);
    c.wait_ready().await;
    create(&c, "ledger", 1).await;
    produce(&c, 0, 100).await;
    let session = Duration::from_secs(2);
    let mut consumer = Consumer::builder(c.bootstrap())
        .group("stoppers")
        .session_timeout(session)
        .auto_commit(Some(Duration::from_secs(60)))
        .auto_offset_reset(OffsetReset::Earliest)
        .request_timeout(Duration::from_secs(30))
        .max_wait(Duration::from_millis(100))
        .build()
        .await
        .expect("consumer");
    consumer.subscribe(&["ledger"]).await.expect("subscribe");
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got < 100 {
        assert!(Instant::now() < deadline, "read {got} of 100");
        got += consumer.poll().await.expect("poll").len();
    }
    let mut g = GroupsClient::connect(format!("http://{}", c.addr(1)))
        .await
        .expect("connect");
    let coordinator = g
        .find_coordinator(FindCoordinatorRequest {
            group: "stoppers".into(),
        })
        .await
        .expect("find coordinator")
        .into_inner()
        .node_id;
    c.pause(coordinator);
    // Bounded generously above the session timeout: without the bound the
    // commit alone would wait out its 30 s request timeout.
    let closed = tokio::time::timeout(session + Duration::from_secs(3), consumer.close()).await;
    c.resume(coordinator);
    let result = closed.expect("close returned within the session timeout");
    assert!(result.is_err(), "the paused coordinator cannot have answered");
}
