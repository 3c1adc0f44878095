//! Nemeses of lost and damaged disks (issue "Safe recovery from lost or
//! damaged disks"): a follower's data directory wiped and the leader killed,
//! damage in an active segment and then the leader killed, damage after
//! retention ran, a partition moved away and back onto its original brokers,
//! and the same faults for the controller group. The checker's verdict is
//! the suite's (nothing acknowledged lost, no divergence, no split brain);
//! the controller nemeses also check that every topic created while the
//! fault ran is known to every broker afterwards.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strand_client::Admin;
use strand_client::proto::ListTopicsRequest;
use strand_client::proto::admin_client::AdminClient;

use super::recovery::{move_partition, wait_in_sync, wait_joined};
use super::workload::write_backlog;
use super::{PARTITIONS, TOPIC, run};
use crate::support::Cluster;

async fn admin(c: &Cluster) -> Admin {
    c.endpoint().admin().await.expect("admin")
}

/// Waits until every partition of the workload's topic has every replica
/// in sync and no replica (nor any controller replica) is recovering.
async fn wait_whole(c: &Cluster, what: &str) {
    let a = admin(c).await;
    for p in 0..PARTITIONS {
        wait_in_sync(&a, p, Duration::from_secs(90), what).await;
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let whole = a.cluster_status().await.is_ok_and(|s| {
            s.partitions
                .iter()
                .all(|p| p.recovering.is_empty() && p.failed.is_empty())
                && s.brokers.iter().all(|b| b.up && !b.controller_recovering)
        });
        if whole {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: replicas still recovering after 90 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Restarts the damaged follower `f` and kills the leader `l` while it
/// recovers; restarts `l` and waits until everything is whole again.
async fn restart_then_kill_the_leader(c: &mut Cluster, f: u64, l: u64, what: &str) {
    c.restart(f);
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.kill(l);
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.restart(l);
    wait_whole(c, what).await;
}

/// The segment files of a log directory, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect()
        })
        .unwrap_or_default();
    logs.sort();
    logs
}

/// Flips a byte a third of the way into the data of `segment`, so that
/// valid batches follow the damage (it is not a torn tail).
fn damage(segment: &Path) {
    let mut bytes = std::fs::read(segment).expect("read segment");
    let end = bytes.iter().rposition(|&b| b != 0).expect("a segment with data");
    bytes[end / 3] ^= 0x5a;
    std::fs::write(segment, bytes).expect("damage segment");
}

/// Every broker (asked itself) knows every topic in `names`.
async fn assert_topics_everywhere(c: &Cluster, names: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in 1..=c.nodes.len() as u64 {
        loop {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", c.addr(id))).expect("uri");
            let known = match c.security().channel(endpoint).await.map(AdminClient::new) {
                Ok(mut a) => a.list_topics(ListTopicsRequest {}).await.is_ok_and(|t| {
                    let t = t.into_inner();
                    names.iter().all(|n| t.topics.iter().any(|x| x.name == *n))
                }),
                Err(_) => false,
            };
            if known {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "broker {id} does not know every topic created during the fault ({names:?})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The scenario of the issue, as a nemesis: follower C is paused (it lags);
/// leader L and follower A acknowledge records; A's whole data directory is
/// wiped and it restarts; L is killed; C resumes. A must not vote for C, so
/// the partition stays without a leader until L returns: unavailable, never
/// short. Repeated while the fault lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the fault suite, run by .ci/run"]
async fn a_follower_wiped_then_the_leader_killed() {
    run("wipe-kill-leader", "", |mut c, until, _| async move {
        let mut rounds = 0;
        while rounds == 0 || Instant::now() < until {
            let l = c.leader(TOPIC, 0).await;
            let a = (1..=3).find(|&i| i != l).expect("a follower");
            let lagging = (1..=3).find(|&i| i != l && i != a).expect("the other follower");
            c.pause(lagging);
            tokio::time::sleep(Duration::from_secs(1)).await;
            c.kill(a);
            std::fs::remove_dir_all(c.data_dir(a)).expect("wipe");
            c.restart(a);
            tokio::time::sleep(Duration::from_secs(1)).await;
            c.kill(l);
            c.resume(lagging);
            tokio::time::sleep(Duration::from_secs(3)).await;
            c.restart(l);
            wait_whole(&c, "wipe-kill-leader").await;
            rounds += 1;
        }
        eprintln!("wipe-kill-leader: {rounds} round(s) of wipe, leader kill and recovery");
        c
    })
    .await;
}

/// A follower's active segment of partition 0 is damaged in the middle
/// (valid batches follow: not a torn tail); it restarts (its log is moved
/// aside and it recovers without voting) and the leader is killed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the fault suite, run by .ci/run"]
async fn damage_in_the_active_segment_then_the_leader_killed() {
    run("active-damage-kill-leader", "", |mut c, until, _| async move {
        let mut rounds = 0;
        while rounds == 0 || Instant::now() < until {
            let l = c.leader(TOPIC, 0).await;
            let f = (1..=3).find(|&i| i != l).expect("a follower");
            c.kill(f);
            let dir = c.data_dir(f).join(format!("{TOPIC}-0"));
            let active = segments(&dir).pop().expect("an active segment");
            damage(&active);
            restart_then_kill_the_leader(&mut c, f, l, "active-damage-kill-leader").await;
            rounds += 1;
        }
        eprintln!("active-damage-kill-leader: {rounds} round(s)");
        c
    })
    .await;
}

/// Retention removes the start of partition 0 while a follower is down (a
/// backlog is written to make sure it does); the follower's oldest segment
/// is damaged, it restarts with an empty log that its leader can no longer
/// fill from the start, so it recovers from a snapshot (the retained log's
/// start) and the stream; the leader is killed while it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the fault suite, run by .ci/run"]
async fn damage_after_retention_ran() {
    let retention = "retention_check_interval_ms = 500\n[log]\nsegment_bytes = 65536\nmax_batch_bytes = 65536\nretention_bytes = 262144\n";
    run("retention-damage", retention, |mut c, until, rec| async move {
        let mut rounds = 0;
        let mut log_start = 0;
        while rounds == 0 || Instant::now() < until {
            let l = c.leader(TOPIC, 0).await;
            let f = (1..=3).find(|&i| i != l).expect("a follower");
            c.kill(f);
            // The brokers take batches of at most 64 KiB here.
            write_backlog(c.endpoint(), 90 + rounds, 0, 1 << 20, 48 << 10, &rec).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let oldest = segments(&c.data_dir(f).join(format!("{TOPIC}-0")))
                .into_iter()
                .next()
                .expect("a segment");
            damage(&oldest);
            restart_then_kill_the_leader(&mut c, f, l, "retention-damage").await;
            log_start = admin(&c)
                .await
                .list_offsets(TOPIC, 0, strand_client::OffsetSpec::Earliest)
                .await
                .expect("log start")
                .offset;
            rounds += 1;
        }
        assert!(log_start > 0, "retention never ran on partition 0");
        eprintln!("retention-damage: {rounds} round(s); partition 0 starts at offset {log_start}");
        c
    })
    .await;
}

/// Partition 0 moves from its three brokers to three brokers that join,
/// then back onto the original three, under load. The replicas created on
/// the way back are fresh copies of a group that moved: they must not vote
/// (in the configuration the group was created with) before the group's
/// leader brought them up to date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the fault suite, run by .ci/run"]
async fn a_partition_moved_away_and_back_onto_its_original_brokers() {
    run("move-away-and-back", "", |mut c, until, _| async move {
        let joined: Vec<u64> = (0..3).map(|_| c.add_joining()).collect();
        let a = admin(&c).await;
        wait_joined(&a, &joined).await;
        let original = a.describe_topic(TOPIC).await.expect("describe").partitions[0]
            .replicas
            .clone();
        let away = move_partition(&a, 0, &joined, "away").await;
        let back = move_partition(&a, 0, &original, "back").await;
        eprintln!("move-away-and-back: {original:?} -> {joined:?} in {away:.1} s, back in {back:.1} s");
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        c
    })
    .await;
}

/// The controller group's version of the wipe: a controller follower is
/// paused while topics are created (committed by the controller's leader
/// and the other follower), that other follower's disk is wiped, the
/// controller's leader is killed and the paused one resumes. The metadata
/// must come back whole: every topic created is known to every broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the fault suite, run by .ci/run"]
async fn a_controller_follower_wiped_then_the_controller_leader_killed() {
    run("controller-wipe", "", |mut c, until, _| async move {
        let mut created = Vec::new();
        let mut rounds = 0u32;
        while rounds == 0 || Instant::now() < until {
            let l = c.controller().await;
            let a = (1..=3).find(|&i| i != l).expect("a controller follower");
            let lagging = (1..=3).find(|&i| i != l && i != a).expect("the other follower");
            c.pause(lagging);
            let name = format!("created-during-wipe-{rounds}");
            let admin = c.admin_of(&c.addr(l)).await.expect("admin");
            admin
                .create_topic(&name, 1, 1, Default::default())
                .await
                .expect("create while a controller follower is paused");
            created.push(name);
            c.kill(a);
            std::fs::remove_dir_all(c.data_dir(a)).expect("wipe");
            c.restart(a);
            tokio::time::sleep(Duration::from_secs(1)).await;
            c.kill(l);
            c.resume(lagging);
            tokio::time::sleep(Duration::from_secs(3)).await;
            c.restart(l);
            wait_whole(&c, "controller-wipe").await;
            assert_topics_everywhere(&c, &created).await;
            rounds += 1;
        }
        eprintln!(
            "controller-wipe: {rounds} round(s); {} topics created meanwhile, all known",
            created.len()
        );
        c
    })
    .await;
}

/// A controller follower's log is damaged in its active segment; it
/// restarts (log moved aside, recovering) and the controller's leader is
/// killed at once. The metadata comes back whole on every broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the fault suite, run by .ci/run"]
async fn damage_in_the_controller_log_then_the_controller_leader_killed() {
    run("controller-damage", "", |mut c, until, _| async move {
        let mut created = Vec::new();
        let mut rounds = 0u32;
        while rounds == 0 || Instant::now() < until {
            let l = c.controller().await;
            let name = format!("created-before-damage-{rounds}");
            c.admin_of(&c.addr(l))
                .await
                .expect("admin")
                .create_topic(&name, 1, 1, Default::default())
                .await
                .expect("create");
            created.push(name);
            let f = (1..=3).find(|&i| i != l).expect("a controller follower");
            c.kill(f);
            let active = segments(&c.data_dir(f).join("__controller-0"))
                .pop()
                .expect("a controller segment");
            damage(&active);
            restart_then_kill_the_leader(&mut c, f, l, "controller-damage").await;
            assert_topics_everywhere(&c, &created).await;
            rounds += 1;
        }
        eprintln!("controller-damage: {rounds} round(s)");
        c
    })
    .await;
}
