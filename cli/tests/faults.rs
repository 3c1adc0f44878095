//! The fault suite (see `tests/FAULTS.md`): real brokers on loopback under a
//! nemesis, producers and a consumer group recording a history, then a
//! drain of every partition, a dump of every replica and the leadership
//! claims from the brokers' logs, all checked by `strand-checker`.
//!
//! `STRAND_FAULT_SECONDS` sets how long each nemesis runs (default 8, the
//! short profile CI runs; use minutes for a long run). Every run writes its
//! history to `$TMPDIR/strand-history-<nemesis>.jsonl`; a failed one keeps
//! its brokers' logs in `$TMPDIR/strand-failed-<pid>/`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::Cluster;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use strand_checker::{Event, Recorder, check, write_jsonl};
use strand_client::{Admin, Consumer, OffsetReset, Producer, ProducerRecord, RebalanceEvent};
use strand_storage::{LogConfig, PartitionLog, batches};
use tokio::sync::watch;

const TOPIC: &str = "jepsen";
const PARTITIONS: u32 = 3;
const GROUP: &str = "fault-readers";

/// One nemesis at a time: each runs three brokers and a workload, and two
/// cores do not stretch further.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn fault_duration() -> Duration {
    let secs = std::env::var("STRAND_FAULT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    Duration::from_secs(secs)
}

async fn setup(c: Cluster) -> Cluster {
    c.wait_ready().await;
    let a = Admin::connect(c.bootstrap()).await.expect("admin");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match a.create_topic(TOPIC, PARTITIONS, 3, BTreeMap::new()).await {
            Ok(_) => break,
            Err(e) if e.is_retriable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("create: {e}"),
        }
    }
    for p in 0..PARTITIONS {
        c.leader(TOPIC, p).await;
    }
    c
}

/// A producer process: keyed records whose values are unique ids, acks=all,
/// at most 32 in flight; a send with an unknown outcome is re-sent with the
/// same id.
async fn producer(bootstrap: String, process: u64, rec: Recorder, mut stop: watch::Receiver<bool>) {
    // Retries are the workload's, with the same id, so that every retried
    // send is in the history (the producer's own retries would be invisible).
    let p = Producer::builder(bootstrap)
        .request_timeout(Duration::from_secs(3))
        .delivery_timeout(Duration::from_secs(10))
        .retries(0)
        .build()
        .await
        .expect("producer");
    let mut inflight = FuturesUnordered::new();
    let mut retries: Vec<(String, String)> = Vec::new();
    let mut seq = 0u64;
    loop {
        if *stop.borrow_and_update() {
            // Sends still to retry stay unknown (as recorded); what is in
            // flight is settled below.
            break;
        }
        while inflight.len() < 32 && !*stop.borrow() {
            let (id, key) = match retries.pop() {
                Some(r) => r,
                None => {
                    seq += 1;
                    (format!("p{process}-{seq}"), format!("k{process}-{}", seq % 4))
                }
            };
            rec.record(Event::Invoke {
                process,
                time_ms: rec.now(),
                id: id.clone(),
                key: key.clone(),
            });
            let r = ProducerRecord::new(TOPIC, Bytes::from(id.clone())).key(Bytes::from(key.clone()));
            match p.send(r).await {
                Ok(d) => inflight.push(async move { (id, key, d.await) }),
                Err(e) => rec.record(Event::Fail {
                    process,
                    time_ms: rec.now(),
                    id,
                    error: e.to_string(),
                }),
            }
        }
        let Some((id, key, result)) = inflight.next().await else {
            continue;
        };
        if record_outcome(&rec, process, &id, result) && !*stop.borrow() {
            retries.push((id, key));
        }
    }
    while let Some((id, _, result)) = inflight.next().await {
        record_outcome(&rec, process, &id, result);
    }
    let _ = p.close().await;
}

/// Records how a send ended; true when its outcome is unknown (a retry with
/// the same id may follow).
fn record_outcome(
    rec: &Recorder,
    process: u64,
    id: &str,
    result: strand_client::Result<strand_client::RecordMetadata>,
) -> bool {
    let (id, time_ms) = (id.to_string(), rec.now());
    match result {
        Ok(meta) => {
            rec.record(Event::Ok {
                process,
                time_ms,
                id,
                partition: meta.partition,
                offset: meta.offset.unwrap_or(u64::MAX),
            });
            false
        }
        Err(e) if e.is_retriable() => {
            rec.record(Event::Unknown {
                process,
                time_ms,
                id,
                error: e.to_string(),
            });
            true
        }
        Err(e) => {
            rec.record(Event::Fail {
                process,
                time_ms,
                id,
                error: e.to_string(),
            });
            false
        }
    }
}

/// A group member: polls, records what it processed, commits after
/// processing.
async fn consumer(bootstrap: String, id: u64, rec: Recorder, mut stop: watch::Receiver<bool>) {
    let r2 = rec.clone();
    let mut c = Consumer::builder(bootstrap)
        .group(GROUP)
        .session_timeout(Duration::from_secs(3))
        .auto_commit(None)
        .auto_offset_reset(OffsetReset::Earliest)
        .max_wait(Duration::from_millis(200))
        .request_timeout(Duration::from_secs(3))
        .on_rebalance(move |e| {
            let (tps, assigned) = match e {
                RebalanceEvent::Assigned(t) => (t, true),
                RebalanceEvent::Revoked(t) | RebalanceEvent::Lost(t) => (t, false),
            };
            for (_, p) in tps {
                let time_ms = r2.now();
                r2.record(if assigned {
                    Event::Assigned {
                        consumer: id,
                        time_ms,
                        partition: *p,
                    }
                } else {
                    Event::Revoked {
                        consumer: id,
                        time_ms,
                        partition: *p,
                    }
                });
            }
        })
        .build()
        .await
        .expect("consumer");
    c.subscribe(&[TOPIC]).await.expect("subscribe");
    while !*stop.borrow_and_update() {
        let records = match c.poll().await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("consumer {id}: poll failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        for r in &records {
            rec.record(Event::Poll {
                consumer: id,
                time_ms: rec.now(),
                partition: r.partition,
                offset: r.offset,
                id: String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned(),
            });
        }
        if !records.is_empty()
            && let Err(e) = c.commit().await
        {
            eprintln!("consumer {id}: commit failed: {e}");
        }
    }
    let _ = c.close().await;
}

/// Watches the group's committed offsets as the coordinator reports them.
async fn commit_observer(bootstrap: String, rec: Recorder, mut stop: watch::Receiver<bool>) {
    let Ok(a) = Admin::connect(bootstrap).await else { return };
    while !*stop.borrow_and_update() {
        if let Ok(offsets) = a.group_offsets(GROUP).await {
            let time_ms = rec.now();
            for (_, partition, offset) in offsets {
                rec.record(Event::Commit {
                    consumer: 0,
                    time_ms,
                    group: GROUP.into(),
                    partition,
                    offset,
                    reset: false,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Workload {
    stop: watch::Sender<bool>,
    tasks: Vec<(String, tokio::task::JoinHandle<()>)>,
}

fn start_workload(c: &Cluster, rec: &Recorder) -> Workload {
    let (stop, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for p in 1..=2 {
        let t = tokio::spawn(producer(c.bootstrap(), p, rec.clone(), rx.clone()));
        tasks.push((format!("producer {p}"), t));
    }
    for id in 1..=2 {
        let t = tokio::spawn(consumer(c.bootstrap(), id, rec.clone(), rx.clone()));
        tasks.push((format!("consumer {id}"), t));
    }
    let t = tokio::spawn(commit_observer(c.bootstrap(), rec.clone(), rx));
    tasks.push(("commit observer".to_string(), t));
    Workload { stop, tasks }
}

impl Workload {
    async fn finish(self) {
        let _ = self.stop.send(true);
        for (name, t) in self.tasks {
            match tokio::time::timeout(Duration::from_secs(60), t).await {
                Ok(r) => r.unwrap_or_else(|e| panic!("{name} failed: {e}")),
                Err(_) => panic!("{name} did not stop within 60 s"),
            }
        }
    }
}

/// Heals (every broker running), drains every partition up to its high
/// watermark, dumps every replica, collects leadership claims, checks.
async fn heal_and_check(mut c: Cluster, rec: Recorder, name: &str) {
    for id in 1..=3 {
        if !c.is_running(id) {
            c.restart(id);
        }
    }
    c.wait_ready().await;
    let a = Admin::connect(c.bootstrap()).await.expect("admin");
    let mut ends = Vec::new();
    for p in 0..PARTITIONS {
        let deadline = Instant::now() + Duration::from_secs(60);
        let end = loop {
            match a.list_offsets(TOPIC, p, strand_client::OffsetSpec::Latest).await {
                Ok(o) => break o.offset,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no end offset for {p}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        ends.push(end);
        let mut d = Consumer::builder(c.bootstrap())
            .auto_offset_reset(OffsetReset::Earliest)
            .max_wait(Duration::from_millis(200))
            .build()
            .await
            .expect("drain consumer");
        d.assign(TOPIC, &[p]).await.expect("assign");
        let deadline = Instant::now() + Duration::from_secs(60);
        while d.position(TOPIC, p).unwrap_or(0) < end {
            assert!(Instant::now() < deadline, "partition {p} did not drain to {end}");
            for r in d.poll().await.expect("drain poll") {
                rec.record(Event::Read {
                    partition: p,
                    offset: r.offset,
                    id: String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned(),
                    key: String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
                });
            }
        }
    }
    // Let every replica reach the end, then stop the brokers and read their
    // files directly.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let caught_up = a
            .describe_topic(TOPIC)
            .await
            .is_ok_and(|t| t.partitions.iter().all(|p| p.replica_lag.iter().all(|l| l.lag == 0)));
        if caught_up || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in 1..=3 {
        c.stop(id);
    }
    for node in 1..=3u64 {
        for p in 0..PARTITIONS {
            dump_replica(
                &rec,
                node,
                p,
                &c.data_dir(node).join(format!("{TOPIC}-{p}")),
                ends[p as usize],
            );
        }
        for line in std::fs::read_to_string(c.log_path(node)).unwrap_or_default().lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let f = &v["fields"];
            if f["message"] == "raft role change"
                && f["role"] == "Leader"
                && let (Some(group), Some(term)) = (f["group"].as_u64(), f["term"].as_u64())
            {
                rec.record(Event::Leader { node, group, term });
            }
        }
    }
    let events = rec.events();
    let claims = events.iter().filter(|e| matches!(e, Event::Leader { .. })).count();
    let dumped = events.iter().filter(|e| matches!(e, Event::Replica { .. })).count();
    assert!(
        claims > 0 && dumped > 0,
        "{name}: no leadership claims ({claims}) or replica dumps ({dumped})"
    );
    let report = check(&events);
    let path = std::env::temp_dir().join(format!("strand-history-{name}.jsonl"));
    if let Ok(f) = std::fs::File::create(&path) {
        let _ = write_jsonl(&events, std::io::BufWriter::new(f));
    }
    eprintln!("{name} (history in {}): {report}", path.display());
    if !report.is_valid() {
        panic!("{name}: anomalies (history in {}):\n{report}", path.display());
    }
    assert!(report.acknowledged > 0, "{name}: nothing was acknowledged");
    assert!(
        report.duplicates <= report.retried_sends,
        "{name}: more duplicates than retried sends"
    );
}

/// Records `(offset, term, checksum)` of every record batch of a replica
/// below `upper`.
fn dump_replica(rec: &Recorder, node: u64, partition: u32, dir: &std::path::Path, upper: u64) {
    let Ok(log) = PartitionLog::open(dir, LogConfig::default()) else {
        return;
    };
    let mut next = log.earliest();
    let upper = strand_storage::Offset(upper);
    while next < upper.min(log.latest()) {
        let Ok(bytes) = log.read_bounded(next, 1 << 20, upper) else {
            break;
        };
        if bytes.is_empty() {
            break;
        }
        for b in batches(&bytes) {
            let Ok(b) = b else { break };
            next = b.next_offset();
            if b.is_control() {
                continue;
            }
            // FNV-1a of the stored bytes: replicas store identical batches.
            let mut h: u32 = 0x811c_9dc5;
            for x in b.as_bytes() {
                h ^= u32::from(*x);
                h = h.wrapping_mul(0x0100_0193);
            }
            rec.record(Event::Replica {
                node,
                partition,
                offset: b.base_offset().get(),
                term: b.term().get(),
                crc: h,
            });
        }
    }
}

/// Runs `nemesis` for the fault duration while the workload runs, on
/// loopback brokers.
async fn run<F, Fut>(name: &str, extra: &str, nemesis: F)
where
    F: FnOnce(Cluster, Instant) -> Fut,
    Fut: std::future::Future<Output = Cluster>,
{
    let _serial = SERIAL.lock().await;
    run_on(Cluster::start_journaled(3, extra), name, nemesis).await;
}

/// Like `run`, with each broker in its own network namespace so that links
/// can be cut; skipped (saying so) where namespaces cannot be made.
async fn run_in_mesh<F, Fut>(name: &str, nemesis: F)
where
    F: FnOnce(Cluster, Instant) -> Fut,
    Fut: std::future::Future<Output = Cluster>,
{
    let _serial = SERIAL.lock().await;
    if !crate::support::netns::Mesh::available() {
        eprintln!("{name}: SKIPPED: network namespaces need root and iproute2; link faults not tested here");
        return;
    }
    let mesh = crate::support::netns::Mesh::create(3).expect("network namespaces");
    run_on(Cluster::start_in_mesh(mesh, 3, ""), name, nemesis).await;
}

async fn run_on<F, Fut>(c: Cluster, name: &str, nemesis: F)
where
    F: FnOnce(Cluster, Instant) -> Fut,
    Fut: std::future::Future<Output = Cluster>,
{
    let c = setup(c).await;
    let rec = Recorder::default();
    let w = start_workload(&c, &rec);
    // Let the group form and the first records flow before faults start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let until = Instant::now() + fault_duration();
    let c = nemesis(c, until).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.finish().await;
    heal_and_check(c, rec, name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the fault suite, run by .ci/run"]
async fn kill_the_leader_repeatedly() {
    run("kill-leader", "", |mut c, until| async move {
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
    run("pause-leader", "", |c, until| async move {
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
    run("rolling-restart", "", |mut c, until| async move {
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
    run("bitflip-kill-leader", small_segments, |mut c, until| async move {
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
    run("power-loss", "", |mut c, until| async move {
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
    run_in_mesh("isolate-leader", |c, until| async move {
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
    run_in_mesh("bridge", |c, until| async move {
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
        |mut c, until| async move {
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
            let a = Admin::connect(c.bootstrap()).await.expect("admin");
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
        |c, until| async move {
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
