//! Lost disks with real brokers (issue "Safe recovery from lost or damaged
//! disks"): a broker whose data directory was wiped says so, recovers every
//! replica before it votes, and never helps a lagging replica win, so
//! acknowledged records are unavailable for a while rather than lost.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strand_client::proto::admin_client::AdminClient;
use strand_client::proto::{ClusterStatusRequest, DescribeTopicRequest};
use strand_client::{Producer, ProducerRecord};

use super::{converge, create, drain};
use crate::support::Cluster;

async fn produce(c: &Cluster, from: u64, n: u64) {
    let p = Producer::builder(c.bootstrap()).build().await.expect("producer");
    let mut ds = Vec::new();
    for i in from..from + n {
        ds.push(
            p.send(ProducerRecord::new("disks", Bytes::from(format!("r{i}"))))
                .await
                .expect("send"),
        );
    }
    for d in ds {
        d.await.expect("acknowledged");
    }
    p.close().await.expect("close");
}

/// The partition's leader as broker `id` reports it (0: none).
async fn leader_seen_by(c: &Cluster, id: u64) -> Option<u64> {
    let mut a = AdminClient::connect(format!("http://{}", c.addr(id))).await.ok()?;
    let t = a
        .describe_topic(DescribeTopicRequest { name: "disks".into() })
        .await
        .ok()?
        .into_inner();
    Some(t.partitions[0].leader)
}

/// The scenario: follower C lags (paused); leader L and follower A
/// acknowledge records; A's disk is wiped and it restarts; L dies; C
/// resumes. A must not vote for C: the partition (and the controller) stay
/// without a leader until L returns, then every acknowledged record is
/// there and the three replicas are identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_broker_recovers_before_it_votes_and_no_acknowledged_record_is_lost() {
    let mut c = Cluster::start(3);
    c.wait_ready().await;
    create(&c, "disks", 1).await;
    produce(&c, 0, 1_000).await;
    converge(&c, "disks", 1).await;
    let l = c.leader("disks", 0).await;
    let a = (1..=3).find(|&i| i != l).expect("a follower");
    let lagging = (1..=3).find(|&i| i != l && i != a).expect("the other follower");
    c.pause(lagging);
    produce(&c, 1_000, 2_000).await;
    c.kill(a);
    std::fs::remove_dir_all(c.data_dir(a)).expect("wipe");
    c.restart(a);
    // The wiped broker learned it replaces a lost disk (from L) and said so.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(c.log_path(a)).unwrap_or_default();
        if log.contains("its disk was lost or replaced") {
            break;
        }
        assert!(Instant::now() < deadline, "broker {a} never said its disk was lost");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.kill(l);
    c.resume(lagging);
    // Unavailable, not short: no leader for several election timeouts, and
    // the wiped broker's controller replica is reported recovering.
    let watch_until = Instant::now() + Duration::from_secs(4);
    let mut saw_recovering = false;
    while Instant::now() < watch_until {
        for id in [a, lagging] {
            if let Some(leader) = leader_seen_by(&c, id).await {
                assert!(
                    leader == 0 || leader == l,
                    "broker {leader} leads without the acknowledged records"
                );
            }
        }
        if let Ok(mut admin) = AdminClient::connect(format!("http://{}", c.addr(lagging))).await
            && let Ok(s) = admin.cluster_status(ClusterStatusRequest {}).await
        {
            saw_recovering |= s
                .into_inner()
                .brokers
                .iter()
                .any(|b| b.node_id == a && b.controller_recovering);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        saw_recovering,
        "cluster status shows broker {a}'s controller replica recovering"
    );
    // The broker with the data returns: everything acknowledged is there.
    c.restart(l);
    c.wait_ready().await;
    converge(&c, "disks", 1).await;
    let values: BTreeSet<String> = drain(&c, "disks", 1)
        .await
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    for i in 0..3_000u64 {
        assert!(values.contains(&format!("r{i}")), "acknowledged record r{i} lost");
    }
    let log = std::fs::read_to_string(c.log_path(a)).expect("log");
    assert!(log.contains("replica recovered"), "broker {a} recovered its replicas");
}
