//! `strand bench produce|consume|share-consume`: load generators that end with one JSON
//! line of throughput and acknowledgement-latency percentiles (HDR histogram).

use super::target::Target;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use strand_client::{DeliveryFuture, Offset, OffsetReset, ProducerRecord};

use super::bench_report::{new_histogram, process_cpu, report, spawn_progress};
use super::produce::{AcksArg, CompressionArg};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce records as fast as allowed and measure acknowledgements.
    Produce(ProduceBench),
    /// Read records from the beginning and measure throughput.
    Consume(ConsumeBench),
    /// Share-group workers accept records and measure throughput.
    ShareConsume(super::bench_share::ShareConsumeBench),
}

#[derive(Debug, Args)]
pub struct ProduceBench {
    /// Topic (created if missing).
    #[arg(long)]
    topic: String,
    /// Records to send in total.
    #[arg(long)]
    records: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Distinct keys (0: no keys, sticky partitioning).
    #[arg(long, default_value_t = 0)]
    keys: u64,
    /// Concurrent producers.
    #[arg(long, default_value_t = 1)]
    producers: u64,
    /// Acknowledgement level.
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    acks: AcksArg,
    /// Batch compression.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    compression: CompressionArg,
    /// Partitions, when the topic is created here.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Replication factor, when the topic is created here.
    #[arg(long, default_value_t = 1)]
    replication_factor: u32,
    /// Target records per second over all producers (default: unlimited).
    #[arg(long)]
    rate: Option<u64>,
    /// Producer linger (ms): how long a batch waits for more records.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Producer batch size (bytes).
    #[arg(long, default_value_t = 256 * 1024)]
    batch_bytes: usize,
    /// Turn the idempotent producer off (to measure what it costs).
    #[arg(long)]
    no_idempotence: bool,
    /// Batches per partition in flight with idempotence (1 to 5).
    #[arg(long, default_value_t = 5)]
    max_in_flight: usize,
}

#[derive(Debug, Args)]
pub struct ConsumeBench {
    /// Topic to read from the beginning.
    #[arg(long)]
    topic: String,
    /// Records to read.
    #[arg(long)]
    records: u64,
}

pub async fn run(target: &Target, cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Produce(b) => produce(target, b).await,
        BenchCommand::Consume(b) => consume(target, b).await,
        BenchCommand::ShareConsume(b) => super::bench_share::run(target, b).await,
    }
}

async fn produce(target: &Target, b: ProduceBench) -> anyhow::Result<ExitCode> {
    let admin = target.admin().await?;
    if admin.describe_topic(&b.topic).await.is_err() {
        admin
            .create_topic(&b.topic, b.partitions, b.replication_factor, BTreeMap::new())
            .await?;
    }
    let value = Bytes::from(vec![b'x'; b.record_size]);
    let done = Arc::new(AtomicU64::new(0));
    let progress = spawn_progress("produce", Arc::clone(&done), b.records);
    let cpu_start = process_cpu();
    let start = Instant::now();
    let per_producer = b.records.div_ceil(b.producers.max(1));
    let mut tasks = Vec::new();
    for n in 0..b.producers.max(1) {
        let from = n * per_producer;
        let to = ((n + 1) * per_producer).min(b.records);
        let producer = target
            .producer()
            .acks(b.acks.into())
            .compression(b.compression.into())
            .linger(Duration::from_millis(b.linger_ms))
            .batch_bytes(b.batch_bytes)
            .enable_idempotence(!b.no_idempotence && b.acks != AcksArg::None)
            .max_in_flight_per_partition(b.max_in_flight)
            .build()
            .await?;
        let topic: Arc<str> = Arc::from(b.topic.as_str());
        let value = value.clone();
        let done = Arc::clone(&done);
        let keys = b.keys;
        let interval = b
            .rate
            .map(|r| Duration::from_secs_f64(b.producers.max(1) as f64 / r.max(1) as f64));
        // Records of a partition are acknowledged in order, and a batch's
        // records all at once: a second task awaits the delivery futures in
        // sending order, so it wakes about once per batch, not per record.
        let (acks_tx, acks_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<(Instant, DeliveryFuture)>>();
        // At full speed the futures go to the drain task in chunks (one
        // channel operation per chunk, not per record); at a fixed rate one
        // by one, so a record's acknowledgement is seen when it happens.
        let chunk = if interval.is_some() { 1 } else { ACK_CHUNK };
        let drain = tokio::spawn(drain_acks(acks_rx, done));
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let mut sent = t0;
            let mut pending = Vec::with_capacity(chunk);
            for (n, i) in (from..to).enumerate() {
                if let Some(iv) = interval {
                    let due = t0 + iv.mul_f64(n as f64);
                    tokio::time::sleep_until(due.into()).await;
                    // Behind schedule (the producer held the loop back), a
                    // record's latency counts from when it was due, so a
                    // stall is not hidden (no coordinated omission). Within
                    // the timer's granularity it counts from now: tokio
                    // wakes up to a millisecond late, which is the
                    // benchmark's delay, not the broker's.
                    let now = Instant::now();
                    sent = if now > due + TIMER_SLACK { due } else { now };
                } else if n % SENT_CLOCK_EVERY == 0 {
                    // At full speed records are microseconds apart: reading
                    // the clock for every one would cost more than sending it.
                    sent = Instant::now();
                }
                let mut r = ProducerRecord::new(Arc::clone(&topic), value.clone());
                if keys > 0 {
                    r = r.key(Bytes::from(format!("key-{}", i % keys)));
                }
                let d = producer.send(r).await?;
                pending.push((sent, d));
                if pending.len() >= chunk {
                    let full = std::mem::replace(&mut pending, Vec::with_capacity(chunk));
                    acks_tx
                        .send(full)
                        .map_err(|_| anyhow::anyhow!("the acknowledgement task ended early"))?;
                }
            }
            if !pending.is_empty() {
                acks_tx
                    .send(pending)
                    .map_err(|_| anyhow::anyhow!("the acknowledgement task ended early"))?;
            }
            drop(acks_tx);
            let drained = drain.await??;
            producer.close().await?;
            anyhow::Ok(drained)
        }));
    }
    let mut h = new_histogram()?;
    let mut failures = 0;
    for t in tasks {
        let (ph, pf) = t.await??;
        h.add(ph)?;
        failures += pf;
    }
    let elapsed = start.elapsed();
    progress.abort();
    let acked = b.records - failures;
    println!(
        "{}",
        report(acked, acked * b.record_size as u64, elapsed, &h, cpu_start)
    );
    if failures > 0 {
        eprintln!("error: {failures} records were not acknowledged");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// How late the rate timer may wake before a record counts as behind
/// schedule (tokio's timer has a resolution of one millisecond).
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// At full speed the send time is read once per this many records.
const SENT_CLOCK_EVERY: usize = 8;

/// Delivery futures handed to the drain task at once at full speed.
const ACK_CHUNK: usize = 64;

/// Settled futures counted against one clock reading while draining.
const ACK_CLOCK_EVERY: u32 = 32;

/// Awaits the delivery futures in sending order and records each one's
/// latency. The clock is read at every chunk, after every wait and every
/// [`ACK_CLOCK_EVERY`] records otherwise, so a batch's records, which are
/// settled together, share a reading.
async fn drain_acks(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<(Instant, DeliveryFuture)>>,
    done: Arc<AtomicU64>,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let mut h = new_histogram()?;
    let mut failures = 0u64;
    let mut now = Instant::now();
    let mut uses;
    while let Some(chunk) = rx.recv().await {
        let records = chunk.len() as u64;
        // The chunk may have waited in the channel: read the clock afresh.
        uses = ACK_CLOCK_EVERY;
        for (sent, d) in chunk {
            if !d.is_settled() {
                uses = ACK_CLOCK_EVERY;
            }
            let res = d.await;
            if uses >= ACK_CLOCK_EVERY {
                now = Instant::now();
                uses = 0;
            }
            uses += 1;
            match res {
                Ok(_) => {
                    let _ = h.record((now.saturating_duration_since(sent).as_micros() as u64).max(1));
                }
                Err(e) => {
                    if failures == 0 {
                        eprintln!("first failure: {e}");
                    }
                    failures += 1;
                }
            }
        }
        // Progress per chunk: the counter is shared with the reporter task.
        done.fetch_add(records, Ordering::Relaxed);
    }
    Ok((h, failures))
}

async fn consume(target: &Target, b: ConsumeBench) -> anyhow::Result<ExitCode> {
    let mut consumer = target
        .consumer()
        .auto_offset_reset(OffsetReset::Earliest)
        .build()
        .await?;
    consumer.assign_all(&b.topic).await?;
    for (topic, p) in consumer.assignment() {
        consumer.seek(&topic, p, Offset::Beginning).await?;
    }
    let done = Arc::new(AtomicU64::new(0));
    let progress = spawn_progress("consume", Arc::clone(&done), b.records);
    let mut h = new_histogram()?;
    let cpu_start = process_cpu();
    let start = Instant::now();
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut idle = Instant::now();
    while n < b.records {
        let t = Instant::now();
        let records = consumer.poll().await?;
        if records.is_empty() {
            anyhow::ensure!(
                idle.elapsed() < Duration::from_secs(10),
                "only {n} of {} records arrived",
                b.records
            );
            continue;
        }
        idle = Instant::now();
        // Poll latency: how long one fetch round trip with data took.
        let _ = h.record((t.elapsed().as_micros() as u64).max(1));
        for r in &records {
            bytes += r.value.as_ref().map_or(0, |v| v.len() as u64);
        }
        n += records.len() as u64;
        done.store(n, Ordering::Relaxed);
    }
    progress.abort();
    println!("{}", report(n, bytes, start.elapsed(), &h, cpu_start));
    Ok(ExitCode::SUCCESS)
}
