//! Many partitions per broker (issue "Ten thousand partitions per broker"):
//! for a topic of N partitions on one broker (RF 1) or three (RF 3), with
//! real broker processes: creation time (until every partition has a
//! leader), idle CPU, resident memory and disk of every broker, how long
//! `describe`, `cluster status`, `list topics` and `Metadata` take, keyed produce and
//! consume throughput across all partitions, how long a group of three
//! takes to join and split them, and how long a broker takes to stop
//! gracefully.
//!
//! ```text
//! cargo build --release
//! cargo run --release -p benches --bin partitions -- --brokers 1 --partitions 1000,5000,10000 --records 200000
//! ```
//!
//! Prints one JSON line per topic size.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use benches::{Cluster, admin, strand_bin};
use bytes::Bytes;
use strand_client::{Admin, Consumer, OffsetReset, Producer, ProducerRecord};

const TOPIC: &str = "wide";

/// CPU seconds (user + system) the process used so far.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).context("utime")?.parse::<f64>()? + f.get(12).context("stime")?.parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib / 1024.0)
}

/// Disk blocks used under `dir` (what `du` counts), MiB.
fn disk_mib(dir: &Path) -> f64 {
    use std::os::unix::fs::MetadataExt;
    fn walk(dir: &Path) -> u64 {
        let mut total = 0;
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                if let Ok(m) = std::fs::symlink_metadata(&p) {
                    total += m.blocks() * 512;
                    if m.is_dir() {
                        total += walk(&p);
                    }
                }
            }
        }
        total
    }
    walk(dir) as f64 / f64::from(1 << 20)
}

async fn all_led(a: &Admin, topic: &str, partitions: u32, limit: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if let Ok(d) = a.describe_topic(topic).await
            && d.partitions.len() == partitions as usize
            && d.partitions.iter().all(|p| p.leader != 0)
        {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("partitions without a leader after {limit:?}");
        }
        // Not more often: a `describe` of 10,000 partitions is work for the
        // broker that is busy creating them.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn timed<T>(f: impl std::future::Future<Output = strand_client::Result<T>>) -> Result<f64> {
    let start = Instant::now();
    f.await?;
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

async fn produce(bootstrap: String, records: u64) -> Result<f64> {
    let p = Producer::builder(bootstrap)
        .linger(Duration::from_millis(5))
        .build()
        .await?;
    let start = Instant::now();
    let mut pending = Vec::new();
    for i in 0..records {
        let r = ProducerRecord::new(TOPIC, Bytes::from(vec![b'x'; 100])).key(Bytes::from(format!("key-{i}")));
        pending.push(p.send(r).await?);
        if pending.len() >= 8192 {
            for d in pending.drain(..) {
                d.await?;
            }
        }
    }
    for d in pending {
        d.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    p.close().await?;
    Ok(records as f64 / secs)
}

async fn consume(bootstrap: String, records: u64) -> Result<f64> {
    let mut c = Consumer::builder(bootstrap)
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .await?;
    c.assign_all(TOPIC).await?;
    let start = Instant::now();
    let mut n = 0u64;
    while n < records {
        n += c.poll().await?.len() as u64;
        if start.elapsed() > Duration::from_secs(300) {
            bail!("consumed {n} of {records} in 300 s");
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Seconds until three members of a new group hold every partition
/// between them, each some.
async fn group_join(bootstrap: String, partitions: u32) -> Result<f64> {
    let held: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let mut members = Vec::new();
    for m in 0..3 {
        let (bootstrap, held, mut stopped) = (bootstrap.clone(), Arc::clone(&held), stopped.clone());
        members.push(tokio::spawn(async move {
            let mut c = Consumer::builder(bootstrap)
                .group("bench-group")
                .client_id(format!("m{m}"))
                .auto_offset_reset(OffsetReset::Latest)
                .max_wait(Duration::from_millis(100))
                .build()
                .await?;
            c.subscribe(&[TOPIC]).await?;
            while !*stopped.borrow_and_update() {
                c.poll().await?;
                held[m].store(c.assignment().len(), Ordering::Relaxed);
            }
            c.close().await?;
            anyhow::Ok(())
        }));
    }
    let joined = loop {
        let counts: Vec<usize> = held.iter().map(|h| h.load(Ordering::Relaxed)).collect();
        if counts.iter().all(|&n| n > 0) && counts.iter().sum::<usize>() == partitions as usize {
            break start.elapsed().as_secs_f64();
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("group not joined after 300 s: {counts:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = stop.send(true);
    for m in members {
        m.await??;
    }
    Ok(joined)
}

async fn scenario(brokers: u64, partitions: u32, records: u64) -> Result<(serde_json::Value, tempfile::TempDir)> {
    let mut c = Cluster::start(strand_bin()?, brokers)?;
    let a = admin(&c).await?;
    let rf = brokers.min(3) as u32;
    // First a topic of one partition on every broker, so that creation is
    // timed on a cluster that finished starting (every broker registered
    // its data directory and hosts replicas).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match a.create_topic("warm-up", 1, brokers as u32, BTreeMap::new()).await {
            Ok(_) => break,
            Err(e) if e.is_retriable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    all_led(&a, "warm-up", 1, Duration::from_secs(60)).await?;
    let created = Instant::now();
    a.create_topic(TOPIC, partitions, rf, BTreeMap::new()).await?;
    all_led(&a, TOPIC, partitions, Duration::from_secs(300)).await?;
    let create_s = created.elapsed().as_secs_f64();
    // Idle: groups quiesce after 2 s; measure 20 s after 10 s.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let pids: Vec<u32> = c.brokers.iter().filter_map(benches::Broker::pid).collect();
    let before: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p)).collect::<Result<_>>()?;
    let window = 20.0;
    tokio::time::sleep(Duration::from_secs_f64(window)).await;
    let idle_cpu_pct: Vec<f64> = pids
        .iter()
        .zip(&before)
        .map(|(p, b)| cpu_seconds(*p).map(|a| (a - b) / window * 100.0))
        .collect::<Result<_>>()?;
    let rss: Vec<f64> = pids.iter().map(|p| rss_mib(*p)).collect::<Result<_>>()?;
    let disk: Vec<f64> = (1..=brokers).map(|id| disk_mib(&c.broker(id).dir)).collect();
    let describe_ms = timed(a.describe_topic(TOPIC)).await?;
    let status_ms = timed(a.cluster_status()).await?;
    let list_ms = timed(a.list_topics()).await?;
    let metadata_ms = {
        let mut raw =
            strand_client::proto::strand_client::StrandClient::connect(format!("http://{}", c.brokers[0].addr))
                .await?
                .max_decoding_message_size(64 << 20);
        let start = Instant::now();
        raw.metadata(strand_client::proto::MetadataRequest {
            topics: vec![TOPIC.to_string()],
        })
        .await?;
        start.elapsed().as_secs_f64() * 1000.0
    };
    let produce_rps = produce(c.bootstrap(), records).await?;
    let consume_rps = consume(c.bootstrap(), records).await?;
    let join_s = group_join(c.bootstrap(), partitions).await?;
    // Last: a graceful stop of one broker (SIGTERM until it exits), which
    // syncs every log and Raft state it holds.
    let stop_s = c.brokers[0].stop()?.as_secs_f64();
    let report = serde_json::json!({
        "brokers": brokers,
        "replication_factor": rf,
        "partitions": partitions,
        "replicas_per_broker": u64::from(partitions) * u64::from(rf) / brokers,
        "create_s": create_s,
        "idle_cpu_pct_per_broker": idle_cpu_pct,
        "rss_mib_per_broker": rss,
        "disk_mib_per_broker": disk,
        "describe_ms": describe_ms,
        "cluster_status_ms": status_ms,
        "list_topics_ms": list_ms,
        "metadata_ms": metadata_ms,
        "keyed_produce_records_per_s": produce_rps,
        "consume_records_per_s": consume_rps,
        "group_of_three_join_s": join_s,
        "graceful_stop_s": stop_s,
    });
    Ok((report, c.into_data()))
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let brokers: u64 = arg(&args, "--brokers").map_or(Ok(1), |v| v.parse())?;
    let records: u64 = arg(&args, "--records").map_or(Ok(200_000), |v| v.parse())?;
    let sizes: Vec<u32> = arg(&args, "--partitions")
        .unwrap_or_else(|| "1000,5000,10000".into())
        .split(',')
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()?;
    // Each scenario's data is deleted only at the end: ext4 without a
    // journal skips inodes deleted in the last ~35 s when it allocates new
    // ones, so a creation right after deleting 10,000 partition
    // directories spends most of its time looking for free inodes.
    let mut kept = Vec::new();
    for n in sizes {
        let (report, data) = scenario(brokers, n, records).await?;
        println!("{report}");
        kept.push(data);
    }
    Ok(())
}
