//! `strand bench share-consume`: workers of one share group acquire and
//! accept records from the beginning of a topic; one JSON line of
//! throughput, poll-latency percentiles and the client's CPU.

use super::target::Target;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use strand_client::{AcknowledgeType, OffsetReset};

use super::bench_report::{new_histogram, process_cpu, report, spawn_progress};

#[derive(Debug, Args)]
pub struct ShareConsumeBench {
    /// Topic to read from the beginning (a new share group each run).
    #[arg(long)]
    topic: String,
    /// Records to accept in all.
    #[arg(long)]
    records: u64,
    /// Members of the share group, each on its own task.
    #[arg(long, default_value_t = 1)]
    workers: u64,
    /// Most records one poll acquires.
    #[arg(long, default_value_t = 500)]
    max_records: u32,
}

pub async fn run(target: &Target, b: ShareConsumeBench) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(b.workers > 0, "--workers must be at least 1");
    let group = format!("bench-{:016x}", rand_id());
    let done = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let mut members = Vec::new();
    for _ in 0..b.workers {
        let mut c = target
            .share_consumer(group.clone())
            .offset_reset(OffsetReset::Earliest)
            .max_records(b.max_records)
            .max_wait(Duration::from_millis(100))
            .build()
            .await?;
        c.subscribe(&[b.topic.as_str()]);
        members.push(c);
    }
    let progress = spawn_progress("share-consume", Arc::clone(&done), b.records);
    let cpu_start = process_cpu();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut c in members {
        let (done, bytes, total) = (Arc::clone(&done), Arc::clone(&bytes), b.records);
        tasks.push(tokio::spawn(async move {
            let mut h = new_histogram()?;
            let mut idle = Instant::now();
            while done.load(Ordering::Relaxed) < total {
                let t = Instant::now();
                // Acceptances of the last poll travel with this one.
                let records = c.poll().await?;
                if records.is_empty() {
                    anyhow::ensure!(
                        idle.elapsed() < Duration::from_secs(10),
                        "nothing to acquire for 10 s at {} of {total}",
                        done.load(Ordering::Relaxed)
                    );
                    continue;
                }
                idle = Instant::now();
                let _ = h.record((t.elapsed().as_micros() as u64).max(1));
                let mut n = 0;
                for r in &records {
                    n += r.record.value.as_ref().map_or(0, |v| v.len() as u64);
                    c.acknowledge(r, AcknowledgeType::Accept);
                }
                bytes.fetch_add(n, Ordering::Relaxed);
                done.fetch_add(records.len() as u64, Ordering::Relaxed);
            }
            let refused = c.close().await?;
            anyhow::ensure!(refused.is_empty(), "{} acceptances refused", refused.len());
            Ok::<_, anyhow::Error>(h)
        }));
    }
    let mut h = new_histogram()?;
    for t in tasks {
        h.add(t.await??)?;
    }
    let elapsed = start.elapsed();
    progress.abort();
    let mut line = report(
        done.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed),
        elapsed,
        &h,
        cpu_start,
    );
    line["workers"] = b.workers.into();
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}

fn rand_id() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ u64::from(std::process::id()).rotate_left(32)
}
