//! The nine nemeses of the first fault suite: crashes, pauses, restarts, a
//! flipped bit, power loss, network partitions, a full disk, flaky links.

use std::time::{Duration, Instant};

use super::{PARTITIONS, SERIAL, TOPIC, fault_duration, run, run_in_mesh, run_on};
use crate::support::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the fault suite, run by .ci/run"]
async fn kill_the_leader_repeatedly() {
    run("kill-leader", "", |mut c, until, _| async move {
        let mut p = 0;
        while Instant::now() < until {
            let leader = c.leader(TOPIC, p % PARTITIONS).await;
            c.kill(leader);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            c.restart(leader);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            p += 1;
        }
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the fault suite, run by .ci/run"]
async fn pause_the_leader_past_the_election_timeout() {
    run("pause-leader", "", |c, until, _| async move {
        let mut p = 0;
        while Instant::now() < until {
            let leader = c.leader(TOPIC, p % PARTITIONS).await;
            c.pause(leader);
            tokio::time::sleep(Duration::from_secs(3)).await;
            c.resume(leader);
            tokio::time::sleep(Duration::from_secs(1)).await;
            p += 1;
        }
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the fault suite, run by .ci/run"]
async fn rolling_restarts() {
    run("rolling-restart", "", |mut c, until, _| async move {
        let mut rounds = 0;
        while rounds < 3 || Instant::now() < until {
            for id in 1..=3 {
                c.stop(id);
                c.restart(id);
                c.wait_ready().await;
            }
            rounds += 1;
        }
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the fault suite, run by .ci/run"]
async fn a_follower_with_a_flipped_bit_then_the_leader_killed() {
    let small_segments = "[log]\nsegment_bytes = 65536\nmax_batch_bytes = 65536\n";
    run("bitflip-kill-leader", small_segments, |mut c, until, _| async move {
        // Wait until partition 0 has a sealed segment to damage.
        let deadline = Instant::now() + Duration::from_secs(60);
        let leader = c.leader(TOPIC, 0).await;
        let follower = (1..=3).find(|&i| i != leader).expect("a follower");
        let dir = c.data_dir(follower).join(format!("{TOPIC}-0"));
        while std::fs::read_dir(&dir).map_or(0, |d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .count()
        }) < 2
        {
            assert!(Instant::now() < deadline, "no sealed segment");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        c.kill(follower);
        let first = dir.join(format!("{:020}.log", 0));
        let mut bytes = std::fs::read(&first).expect("sealed segment");
        bytes[200] ^= 0x20;
        std::fs::write(&first, bytes).expect("flip a bit");
        c.restart(follower);
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The damaged replica must not win an election with its log.
        let leader = c.leader(TOPIC, 0).await;
        c.kill(leader);
        tokio::time::sleep(Duration::from_secs(2)).await;
        c.restart(leader);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        c
    })
    .await;
}

/// Every broker loses power at once: each segment keeps at least what its
/// broker fsynced, and a random part of what it had not.
fn power_loss(c: &mut Cluster, seed: &mut u64) {
    for id in 1..=3 {
        c.kill(id);
    }
    let (mut journaled, mut cut_files, mut cut_bytes) = (0usize, 0usize, 0u64);
    for id in 1..=3u64 {
        let mut durable: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        for line in std::fs::read_to_string(c.journal_path(id)).unwrap_or_default().lines() {
            if let Some((path, len)) = line.rsplit_once('\t')
                && let Ok(len) = len.parse::<u64>()
            {
                durable.insert(path.to_string(), len);
            }
        }
        journaled += durable.len();
        let Ok(dirs) = std::fs::read_dir(c.data_dir(id)) else {
            continue;
        };
        for dir in dirs.filter_map(|d| d.ok()).filter(|d| d.path().is_dir()) {
            let Ok(files) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            for f in files.filter_map(|f| f.ok()) {
                let path = f.path();
                if path.extension().is_none_or(|e| e != "log") {
                    continue;
                }
                let len = f.metadata().map_or(0, |m| m.len());
                let keep = durable.get(&path.display().to_string()).copied().unwrap_or(0);
                if keep >= len {
                    continue;
                }
                // xorshift: reproducible from the printed seed.
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                let cut = keep + *seed % (len - keep + 1);
                if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path)
                    && file.set_len(cut).is_ok()
                {
                    cut_files += 1;
                    cut_bytes += len - cut;
                }
            }
        }
    }
    eprintln!("power loss: {journaled} segments with a durable length, {cut_files} cut, {cut_bytes} bytes lost");
    assert!(journaled > 0, "the brokers recorded no fsync: is the journal hook on?");
    for id in 1..=3 {
        c.restart(id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the fault suite, run by .ci/run"]
async fn coordinated_power_loss() {
    run("power-loss", "", |mut c, until, _| async move {
        let mut seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        eprintln!("power-loss seed {seed}");
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_secs(2)).await;
            power_loss(&mut c, &mut seed);
            c.wait_ready().await;
        }
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the fault suite, run by .ci/run"]
async fn isolate_the_leader() {
    run_in_mesh("isolate-leader", |c, until, _| async move {
        while Instant::now() < until {
            let leader = c.leader(TOPIC, 0).await as usize;
            let mesh = c.mesh().expect("mesh");
            for other in (1..=3).filter(|&o| o != leader) {
                mesh.cut(leader, other);
            }
            // 30 s in a long run; most of the run in the short profile.
            let isolation = (fault_duration() * 3 / 4).clamp(Duration::from_secs(6), Duration::from_secs(30));
            tokio::time::sleep(isolation).await;
            mesh.heal_all();
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the fault suite, run by .ci/run"]
async fn bridge_partition() {
    run_in_mesh("bridge", |c, until, _| async move {
        // 1 and 3 cannot talk; 2 sees both.
        let mesh = c.mesh().expect("mesh");
        mesh.cut(1, 3);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        mesh.heal_all();
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the fault suite, run by .ci/run"]
async fn disk_full_on_one_follower() {
    // Segments grow 64 KiB at a time, so the workload reaches the end of the
    // small disk within seconds whatever its pace (with 1 MiB steps it took
    // a minute on a loaded machine).
    run(
        "disk-full",
        "[log]\npreallocate_bytes = 65536\n",
        |mut c, until, _| async move {
            // Broker 3 moves to a disk with 512 KiB free, which the workload soon
            // fills.
            c.kill(3);
            if !c.mount_small_disk(3, 512) {
                eprintln!("disk-full: SKIPPED the full disk: mounting a tmpfs needs root");
                c.restart(3);
                return c;
            }
            c.restart(3);
            // The disk fills: broker 3's replicas stop on ENOSPC while the other
            // two go on acknowledging.
            let deadline = until.max(Instant::now()) + Duration::from_secs(60);
            loop {
                let log = std::fs::read_to_string(c.log_path(3)).unwrap_or_default();
                if log.contains("replica stopped: storage failure") {
                    break;
                }
                assert!(Instant::now() < deadline, "disk-full: broker 3's disk never filled");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            while Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // Space returns; the broker, whose replicas stopped on ENOSPC (as a
            // Kafka broker takes a full log directory offline), is restarted.
            c.grow_disk(3, "1g");
            c.restart(3);
            c.wait_ready().await;
            // It catches up with the others.
            let a = c.endpoint().admin().await.expect("admin");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let lagging: Vec<_> = match a.describe_topic(TOPIC).await {
                    Ok(t) => t
                        .partitions
                        .iter()
                        .flat_map(|p| {
                            p.replica_lag
                                .iter()
                                .filter(|l| !l.in_sync)
                                .map(move |l| (p.partition, l.node_id))
                        })
                        .collect(),
                    Err(_) => vec![(u32::MAX, 0)],
                };
                if lagging.is_empty() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "disk-full: replicas still behind: {lagging:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            c
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the fault suite, run by .ci/run"]
async fn flaky_links() {
    let _serial = SERIAL.lock().await;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64);
    eprintln!("flaky-links seed {seed}");
    run_on(
        Cluster::start_proxied(3, "", seed),
        "flaky-links",
        |c, until, _| async move {
            for p in c.proxies() {
                p.set_flaky(true);
            }
            while Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            for p in c.proxies() {
                p.set_flaky(false);
            }
            c
        },
    )
    .await;
}
