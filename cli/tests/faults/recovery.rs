//! Nemeses of what runs after a fault: a follower far behind catching up
//! while the workload writes, a partition moved to a new broker and back,
//! and a producer of malformed batches next to the workload.

use std::time::{Duration, Instant};

use strand_client::Admin;
use tokio::sync::watch;

use super::workload::{malformed_producer, write_backlog};
use super::{TOPIC, fault_duration, run};
use crate::support::Cluster;

/// The producer process number of the backlog writer in histories.
const BACKLOG_PROCESS: u64 = 90;

/// Waits until every replica of `partition` is in sync with its leader
/// (lag within Raft's append window); panics after `bound`. Returns the
/// seconds it took.
pub(super) async fn wait_in_sync(a: &Admin, partition: u32, bound: Duration, what: &str) -> f64 {
    let start = Instant::now();
    loop {
        let in_sync = a.describe_topic(TOPIC).await.is_ok_and(|t| {
            t.partitions.iter().any(|p| {
                p.partition == partition
                    && p.replica_lag.len() == p.replicas.len()
                    && p.replica_lag.iter().all(|l| l.in_sync && l.lag <= 64)
            })
        });
        if in_sync {
            return start.elapsed().as_secs_f64();
        }
        assert!(
            start.elapsed() < bound,
            "{what}: partition {partition} not in sync within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every broker in `ids` was admitted and answers (a
/// reassignment to a broker the cluster does not know yet is refused).
pub(super) async fn wait_joined(a: &Admin, ids: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !a
        .cluster_status()
        .await
        .is_ok_and(|s| ids.iter().all(|j| s.brokers.iter().any(|b| b.node_id == *j && b.up)))
    {
        assert!(Instant::now() < deadline, "brokers {ids:?} did not join");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reassigns `partition` to `target` (retrying while the controller moves)
/// and waits until the move finished; the seconds it took.
pub(super) async fn move_partition(a: &Admin, partition: u32, target: &[u64], what: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match a.reassign_partition(TOPIC, partition, target).await {
            Ok(()) => break,
            Err(e) if e.is_retriable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("move {what}: {e}"),
        }
    }
    let started = Instant::now();
    loop {
        if let Ok(t) = a.describe_topic(TOPIC).await {
            let p = &t.partitions[partition as usize];
            if p.moving_to.is_empty() && p.replicas == target {
                return started.elapsed().as_secs_f64();
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "move {what} did not finish: {p:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The short profile builds 100 MiB of backlog, the long one (nemeses of 30 s
/// or more) 1 GiB.
fn backlog_bytes() -> u64 {
    if fault_duration() >= Duration::from_secs(30) {
        1 << 30
    } else {
        100 << 20
    }
}

/// A follower is down while a backlog builds up on its partition (the
/// workload keeps writing meanwhile); it returns and must catch up, streaming
/// the leader's log, within the bound, with nothing lost or diverging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the fault suite, run by .ci/run"]
async fn a_follower_far_behind_catches_up_under_load() {
    run("catch-up", "", |mut c, until, rec| async move {
        let leader = c.leader(TOPIC, 0).await;
        let follower = (1..=3).find(|&i| i != leader).expect("a follower");
        c.kill(follower);
        let bytes = backlog_bytes();
        let started = Instant::now();
        write_backlog(c.endpoint(), BACKLOG_PROCESS, 0, bytes, (1 << 20) - 1024, &rec).await;
        let written_s = started.elapsed().as_secs_f64();
        c.restart(follower);
        let a = c.endpoint().admin().await.expect("admin");
        // The bound: a minute for 100 MiB, two for 1 GiB, while the
        // workload goes on writing.
        let bound = Duration::from_secs(if bytes > 100 << 20 { 120 } else { 60 });
        let took = wait_in_sync(&a, 0, bound, "catch-up").await;
        let mib = bytes as f64 / f64::from(1 << 20);
        eprintln!(
            "catch-up: {mib:.0} MiB written in {written_s:.1} s while broker {follower} was down; it caught up in {took:.1} s ({:.0} MiB/s) under load",
            mib / took
        );
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        c
    })
    .await;
}

/// Partition 0 moves from one of its brokers to a broker that joins the
/// cluster, then back to its original brokers, while the workload writes:
/// each move finishes and no record is lost or diverges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the fault suite, run by .ci/run"]
async fn a_partition_moved_to_a_new_broker_and_back_under_load() {
    run("move-and-back", "", |mut c, until, _| async move {
        let newcomer = c.add_joining();
        let a = c.endpoint().admin().await.expect("admin");
        wait_joined(&a, &[newcomer]).await;
        let original = a.describe_topic(TOPIC).await.expect("describe").partitions[0]
            .replicas
            .clone();
        let leaving = original[original.len() - 1];
        let away: Vec<u64> = original
            .iter()
            .map(|&r| if r == leaving { newcomer } else { r })
            .collect();
        for (target, what) in [(&away, "to the new broker"), (&original, "back")] {
            let took = move_partition(&a, 0, target, what).await;
            eprintln!("move-and-back: moved {what} ({target:?}) in {took:.1} s");
        }
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        c
    })
    .await;
}

/// A producer of malformed batches (valid CRC, broken records) runs next to
/// the workload for the whole fault: every batch is refused with
/// `CORRUPT_BATCH`, and the consumers never stall on or misread one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the fault suite, run by .ci/run"]
async fn a_producer_of_malformed_batches_next_to_the_workload() {
    run("malformed-producer", "", |c: Cluster, until, _| async move {
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(malformed_producer(c.addr(1), c.security(), stop));
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = stop_tx.send(true);
        let sent = task.await.expect("malformed producer");
        assert!(sent > 0, "no malformed batch was sent");
        eprintln!("malformed-producer: {sent} rounds of malformed batches, all refused");
        c
    })
    .await;
}
