//! Recovery benchmarks with real broker processes (issue "Replication that
//! heals at disk speed"): how fast a follower far behind catches up, idle
//! and while producers write, and how fast a partition moves to a new
//! broker.
//!
//! ```text
//! cargo build --release
//! cargo run --release -p benches --bin recovery -- [catch-up|catch-up-under-load|move|all] [--mib 1024] [--load-mib-per-s 20]
//! ```
//!
//! Uses `target/release/strand` (or `STRAND_BIN`); prints one JSON line per
//! scenario with the bytes moved, the seconds it took and the rate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use benches::{Cluster, admin, strand_bin};
use bytes::Bytes;
use strand_client::{Admin, Producer, ProducerRecord};

const TOPIC: &str = "recovery";
const RECORD_BYTES: usize = 1024;

async fn create_topic(a: &Admin) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match a.create_topic(TOPIC, 1, 3, Default::default()).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_retriable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The partition's leader and replica lags (entries), from its leader.
async fn partition_state(a: &Admin) -> Result<(u64, Vec<(u64, u64, bool)>, Vec<u64>, Vec<u64>)> {
    let d = a.describe_topic(TOPIC).await?;
    let p = d.partitions.first().context("no partition")?;
    Ok((
        p.leader,
        p.replica_lag.iter().map(|r| (r.node_id, r.lag, r.in_sync)).collect(),
        p.replicas.clone(),
        p.moving_to.clone(),
    ))
}

async fn leader(a: &Admin) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((l, _, _, _)) = partition_state(a).await
            && l != 0
        {
            return Ok(l);
        }
        if Instant::now() > deadline {
            bail!("no leader");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes `bytes` of 1 KiB records as fast as the cluster takes them (or
/// at `rate` bytes/s), acks=all; stops early when `stop` is set.
async fn produce(bootstrap: String, bytes: u64, rate: Option<u64>, stop: Arc<AtomicBool>) -> Result<u64> {
    let p = Producer::builder(bootstrap)
        .linger(Duration::from_millis(5))
        .batch_bytes(512 << 10)
        .build()
        .await?;
    let value = Bytes::from(vec![b'x'; RECORD_BYTES]);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut pending = Vec::new();
    while sent < bytes && !stop.load(Ordering::Relaxed) {
        pending.push(p.send(ProducerRecord::new(TOPIC, value.clone())).await?);
        sent += RECORD_BYTES as u64;
        if pending.len() >= 4096 {
            for d in pending.drain(..) {
                d.await?;
            }
        }
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    for d in pending {
        d.await?;
    }
    p.close().await?;
    Ok(sent)
}

/// Waits until every replica is in sync (lag within Raft's window); the
/// seconds it took and the largest lag seen.
async fn wait_in_sync(a: &Admin, limit: Duration, follower: u64) -> Result<f64> {
    let start = Instant::now();
    loop {
        if let Ok((_, lags, _, _)) = partition_state(a).await
            && lags.iter().any(|&(n, _, _)| n == follower)
            && lags.iter().all(|&(_, lag, in_sync)| in_sync && lag <= 64)
        {
            return Ok(start.elapsed().as_secs_f64());
        }
        if start.elapsed() > limit {
            bail!("replica {follower} not in sync after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn log_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                total += log_size(&p);
            } else if p.extension().is_some_and(|x| x == "log") {
                total += e.metadata().map_or(0, |m| m.len());
            }
        }
    }
    total
}

async fn catch_up(bin: PathBuf, mib: u64, load: Option<u64>) -> Result<serde_json::Value> {
    let mut c = Cluster::start(bin, 3)?;
    let a = admin(&c).await?;
    create_topic(&a).await?;
    let l = leader(&a).await?;
    let follower = (1..=3).find(|&i| i != l).context("follower")?;
    c.broker(follower).kill();
    let bytes = mib << 20;
    let started = Instant::now();
    produce(c.bootstrap(), bytes, None, Arc::default()).await?;
    let produce_s = started.elapsed().as_secs_f64();
    let stop = Arc::new(AtomicBool::new(false));
    let background = load.map(|rate| {
        let (bootstrap, stop) = (c.bootstrap(), Arc::clone(&stop));
        tokio::spawn(async move { produce(bootstrap, u64::MAX, Some(rate), stop).await })
    });
    if background.is_some() {
        // Let the load reach its rate before the follower returns.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let behind = log_size(&c.broker(l).dir) - log_size(&c.broker(follower).dir);
    c.restart(follower)?;
    let seconds = wait_in_sync(&a, Duration::from_secs(600), follower).await?;
    stop.store(true, Ordering::Relaxed);
    let written_during = match background {
        Some(t) => t.await??,
        None => 0,
    };
    Ok(serde_json::json!({
        "scenario": if load.is_some() { "catch-up-under-load" } else { "catch-up" },
        "behind_mib": behind as f64 / f64::from(1 << 20),
        "produce_seconds": produce_s,
        "catch_up_seconds": seconds,
        "catch_up_mib_per_s": behind as f64 / f64::from(1 << 20) / seconds,
        "load_mib_per_s": load.map(|r| r as f64 / f64::from(1 << 20)),
        "written_during_mib": written_during as f64 / f64::from(1 << 20),
    }))
}

async fn move_partition(bin: PathBuf, mib: u64) -> Result<serde_json::Value> {
    let mut c = Cluster::start(bin, 3)?;
    let a = admin(&c).await?;
    create_topic(&a).await?;
    leader(&a).await?;
    produce(c.bootstrap(), mib << 20, None, Arc::default()).await?;
    let new = c.join()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !a
        .cluster_status()
        .await
        .is_ok_and(|s| s.brokers.iter().any(|b| b.node_id == new && b.up))
    {
        if Instant::now() > deadline {
            bail!("broker {new} did not join within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (l, _, replicas, _) = partition_state(&a).await?;
    // Replace a follower by the new broker.
    let moved_away = *replicas.iter().find(|&&r| r != l).context("a follower")?;
    let target: Vec<u64> = replicas
        .iter()
        .map(|&r| if r == moved_away { new } else { r })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match a.reassign_partition(TOPIC, 0, &target).await {
            Ok(()) => break,
            Err(e) if e.is_retriable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    let started = Instant::now();
    loop {
        let (_, _, replicas, moving) = partition_state(&a).await?;
        if moving.is_empty() && replicas == target {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("move not done after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let moved = log_size(&c.broker(new).dir);
    Ok(serde_json::json!({
        "scenario": "move",
        "moved_mib": moved as f64 / f64::from(1 << 20),
        "move_seconds": seconds,
        "move_mib_per_s": moved as f64 / f64::from(1 << 20) / seconds,
    }))
}

fn arg(args: &[String], name: &str, default: u64) -> Result<u64> {
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(args.get(i + 1).context("missing value")?.parse()?),
        None => Ok(default),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().cloned().unwrap_or_else(|| "all".into());
    let mib = arg(&args, "--mib", 1024)?;
    let load = arg(&args, "--load-mib-per-s", 20)? << 20;
    let bin = strand_bin()?;
    let all = which == "all";
    if all || which == "catch-up" {
        println!("{}", catch_up(bin.clone(), mib, None).await?);
    }
    if all || which == "catch-up-under-load" {
        println!("{}", catch_up(bin.clone(), mib, Some(load)).await?);
    }
    if all || which == "move" {
        println!("{}", move_partition(bin.clone(), mib).await?);
    }
    Ok(())
}
