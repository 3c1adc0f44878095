//! Leaders killed one after another while a topic of 1,000 partitions sits
//! idle beside the suite's workload (issue "Ten thousand partitions"): its
//! groups quiesce (no ticks, no heartbeats), so only the node-level
//! heartbeat notices a dead leader. After every kill each of the 1,000
//! partitions must have a live leader again; at the end every partition
//! takes a write, and every record acknowledged on it (before, during and
//! after the faults) is read back exactly once. The suite's checker judges
//! the main workload as for every nemesis.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strand_client::{Admin, OffsetReset, ProducerRecord};

use super::{PARTITIONS, TOPIC, run};
use crate::support::{Cluster, Endpoint};

const WIDE: &str = "wide";
const WIDE_PARTITIONS: u32 = 1_000;

/// Writes one record (`round-p`) to every partition; the acknowledged
/// (partition, offset, value) of each.
async fn write_round(ep: Endpoint, round: u32) -> Vec<(u32, u64, String)> {
    let p = ep
        .producer()
        .request_timeout(Duration::from_secs(5))
        .build()
        .await
        .expect("wide producer");
    let mut pending = Vec::new();
    for part in 0..WIDE_PARTITIONS {
        let value = format!("{round}-{part}");
        let r = ProducerRecord::new(WIDE, Bytes::from(value.clone())).partition(part);
        pending.push((part, value, p.send(r).await.expect("send")));
    }
    let mut acked = Vec::new();
    for (part, value, ack) in pending {
        let m = ack
            .await
            .unwrap_or_else(|e| panic!("{WIDE}-{part}: round {round} not acknowledged: {e}"));
        acked.push((part, m.offset.expect("acks=all answers with the offset"), value));
    }
    p.close().await.expect("close");
    acked
}

/// Waits until every partition of the wide topic has a leader other than
/// `dead` (or any leader, with `None`).
async fn every_partition_led(a: &Admin, dead: Option<u64>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let led = a.describe_topic(WIDE).await.is_ok_and(|d| {
            d.partitions.len() == WIDE_PARTITIONS as usize
                && d.partitions.iter().all(|p| p.leader != 0 && Some(p.leader) != dead)
        });
        if led {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{WIDE}: partitions without a live leader {within:?} after broker {dead:?} went down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the fault suite, run by .ci/run"]
async fn kill_leaders_beside_a_thousand_idle_partitions() {
    run("kill-leader-wide", "", |mut c: Cluster, until, _| async move {
        let a = c.endpoint().admin().await.expect("admin");
        a.create_topic(WIDE, WIDE_PARTITIONS, 3, BTreeMap::new())
            .await
            .expect("create the wide topic");
        every_partition_led(&a, None, Duration::from_secs(120)).await;
        let mut acked = write_round(c.endpoint(), 0).await;
        // Idle long enough for the groups to quiesce before the kills.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut p = 0;
        while p < 2 || Instant::now() < until {
            let leader = c.leader(TOPIC, p % PARTITIONS).await;
            c.kill(leader);
            every_partition_led(&a, Some(leader), Duration::from_secs(30)).await;
            c.restart(leader);
            c.wait_ready().await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            p += 1;
        }
        acked.extend(write_round(c.endpoint(), 1).await);
        // Every acknowledged record, exactly once, where it was acknowledged.
        let mut reader = c
            .endpoint()
            .consumer()
            .auto_offset_reset(OffsetReset::Earliest)
            .max_wait(Duration::from_millis(200))
            .build()
            .await
            .expect("wide reader");
        reader.assign_all(WIDE).await.expect("assign");
        let wanted: BTreeSet<(u32, u64, String)> = acked.iter().cloned().collect();
        let mut read: Vec<(u32, u64, String)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while read.len() < wanted.len() {
            assert!(
                Instant::now() < deadline,
                "{WIDE}: read {} of {}",
                read.len(),
                wanted.len()
            );
            for r in reader.poll().await.expect("poll") {
                let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
                read.push((r.partition, r.offset, value));
            }
        }
        let distinct: BTreeSet<(u32, u64, String)> = read.iter().cloned().collect();
        assert_eq!(distinct.len(), read.len(), "{WIDE}: a record was read twice");
        assert_eq!(distinct, wanted, "{WIDE}: what was read is what was acknowledged");
        c
    })
    .await;
}
