//! The fault suite (see `tests/FAULTS.md`): real brokers on loopback under a
//! nemesis, producers, a consumer group and a share group recording a
//! history, then a drain of every partition and of the share group, a dump
//! of every replica and the leadership claims from the brokers' logs, all
//! checked by `strand-checker`.
//!
//! `STRAND_FAULT_SECONDS` sets how long each nemesis runs (default 8, the
//! short profile CI runs; use minutes for a long run). Every run writes its
//! history to `$TMPDIR/strand-history-<nemesis>.jsonl`; a failed one keeps
//! its brokers' logs in `$TMPDIR/strand-failed-<pid>/`.

mod disks;
mod native;
mod nemeses;
mod recovery;
mod recreate;
mod rotation;
mod share;
mod wide;
mod workload;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use strand_checker::{Event, Recorder, check, write_jsonl};
use strand_client::OffsetReset;
use strand_storage::{LogConfig, PartitionLog, batches};

use crate::support::Cluster;
use workload::start_workload;

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
    let a = c.endpoint().admin().await.expect("admin");
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

/// Heals (every broker running), drains every partition up to its high
/// watermark, dumps every replica, collects leadership claims, checks.
async fn heal_and_check(mut c: Cluster, rec: Recorder, name: &str) {
    let brokers = c.nodes.len() as u64;
    for id in 1..=brokers {
        if !c.is_running(id) {
            c.restart(id);
        }
    }
    c.wait_ready().await;
    let a = c.endpoint().admin().await.expect("admin");
    let mut ends = Vec::new();
    for p in 0..PARTITIONS {
        let deadline = Instant::now() + Duration::from_secs(60);
        let start = loop {
            match a.list_offsets(TOPIC, p, strand_client::OffsetSpec::Earliest).await {
                Ok(o) => break o.offset,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no start offset for {p}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        rec.record(Event::LogStart {
            partition: p,
            offset: start,
        });
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
        let mut d = c
            .endpoint()
            .consumer()
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
    share::drain(&c, &rec, &ends).await;
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
    for id in 1..=brokers {
        c.stop(id);
    }
    for node in 1..=brokers {
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
    assert!(report.idempotent_sends > 0, "{name}: no idempotent producer ran");
    assert!(report.share_deliveries > 0, "{name}: no share-group member ran");
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
    F: FnOnce(Cluster, Instant, Recorder) -> Fut,
    Fut: std::future::Future<Output = Cluster>,
{
    let _serial = SERIAL.lock().await;
    run_on(Cluster::start_journaled(3, extra), name, nemesis).await;
}

/// Like `run`, with each broker in its own network namespace so that links
/// can be cut; skipped (saying so) where namespaces cannot be made.
async fn run_in_mesh<F, Fut>(name: &str, nemesis: F)
where
    F: FnOnce(Cluster, Instant, Recorder) -> Fut,
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
    F: FnOnce(Cluster, Instant, Recorder) -> Fut,
    Fut: std::future::Future<Output = Cluster>,
{
    let c = setup(c).await;
    let rec = Recorder::default();
    let w = start_workload(&c, &rec);
    // Let the group form and the first records flow before faults start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let until = Instant::now() + fault_duration();
    let c = nemesis(c, until, rec.clone()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.finish().await;
    heal_and_check(c, rec, name).await;
}
