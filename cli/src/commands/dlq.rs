//! `strand dlq replay TOPIC.dlq`: send dead letters back to the topic they
//! came from (read from their `strand.dlq.topic` header), with their key,
//! value and original headers.
//!
//! Progress is committed as the consumer group `strand-dlq-replay` (or
//! `--group`), so running it again replays only dead letters added since.

use super::target::Target;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use strand_client::OffsetReset;
use strand_client::dlq;

#[derive(Debug, Args)]
pub struct DlqReplayArgs {
    /// The dead-letter topic, e.g. `orders.dlq`.
    topic: String,
    /// Consumer group that records replay progress.
    #[arg(long, default_value = "strand-dlq-replay")]
    group: String,
    /// Stop when nothing arrived for this long (ms).
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
}

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Re-produce dead letters to their original topic.
    Replay(DlqReplayArgs),
}

pub async fn run(target: &Target, cmd: DlqCommand) -> anyhow::Result<ExitCode> {
    let DlqCommand::Replay(args) = cmd;
    let producer = target.producer().build().await?;
    let mut consumer = target
        .consumer()
        .group(args.group.clone())
        .auto_commit(None)
        .auto_offset_reset(OffsetReset::Earliest)
        .max_wait(Duration::from_millis(args.timeout_ms.clamp(1, 500)))
        .client_id("strand-dlq-replay")
        .build()
        .await?;
    consumer.subscribe(&[args.topic.as_str()]).await?;
    let idle = Duration::from_millis(args.timeout_ms);
    // The first assignment waits for the group's initial rebalance delay.
    let mut last = Instant::now() + Duration::from_secs(5);
    let mut replayed = 0u64;
    while Instant::now() < last + idle {
        let records = consumer.poll().await?;
        if records.is_empty() {
            continue;
        }
        last = Instant::now();
        let mut deliveries = Vec::with_capacity(records.len());
        for r in &records {
            deliveries.push(producer.send(dlq::restore(r)?).await?);
        }
        for d in deliveries {
            d.await?;
        }
        replayed += records.len() as u64;
        // Commit only after the replayed records are acknowledged.
        consumer.commit().await?;
    }
    producer.close().await?;
    consumer.close().await?;
    eprintln!("replayed {replayed} dead letters from {}", args.topic);
    Ok(ExitCode::SUCCESS)
}
