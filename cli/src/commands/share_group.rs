//! `strand consume --share-group` (a member of a queue) and
//! `strand share-group list|describe`.

use super::target::Target;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Subcommand;
use strand_client::{AcknowledgeType, OffsetReset};

use super::OutputFormat;
use super::consume::{AckArg, ConsumeArgs, json};

#[derive(Debug, Subcommand)]
pub enum ShareGroupCommand {
    /// Every share group.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Members, and per partition the share-partition start offset and the
    /// records in flight, acquired, available, delayed and archived.
    Describe {
        /// Group id.
        group: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

/// Reads as a member of a share group, printing and acknowledging each
/// record, until `--max-messages` or `--timeout-ms` of silence.
pub async fn consume(target: &Target, args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let Some(group) = args.share_group.clone() else {
        anyhow::bail!("--share-group is required");
    };
    let kind = match args.ack {
        AckArg::Accept => AcknowledgeType::Accept,
        AckArg::Release => AcknowledgeType::Release,
        AckArg::Reject => AcknowledgeType::Reject,
    };
    let mut builder = target.share_consumer(group).offset_reset(if args.from_beginning {
        OffsetReset::Earliest
    } else {
        OffsetReset::Latest
    });
    if let Some(m) = args.max_messages {
        builder = builder.max_records(u32::try_from(m.clamp(1, 500)).unwrap_or(500));
    }
    if let Some(ms) = args.timeout_ms {
        builder = builder.max_wait(Duration::from_millis(ms.clamp(1, 500)));
    }
    let mut consumer = builder.build().await?;
    consumer.subscribe(&[args.topic.as_str()]);
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let mut last_record = Instant::now();
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    loop {
        if args.max_messages.is_some_and(|m| printed >= m) || idle_limit.is_some_and(|l| last_record.elapsed() >= l) {
            break;
        }
        let records = consumer.poll().await?;
        if !records.is_empty() {
            last_record = Instant::now();
        }
        let mut out = stdout.lock();
        for r in &records {
            if args.max_messages.is_some_and(|m| printed >= m) {
                // Not printed: released by close, delivered to others.
                break;
            }
            match args.format {
                OutputFormat::Json => {
                    let mut v = json(&r.record);
                    v["delivery_count"] = r.delivery_count.into();
                    writeln!(out, "{v}")?;
                }
                OutputFormat::Text => {
                    out.write_all(r.record.value.as_deref().unwrap_or_default())?;
                    out.write_all(b"\n")?;
                }
            }
            printed += 1;
            consumer.acknowledge(r, kind);
        }
        out.flush()?;
    }
    let mut refused = consumer.take_acknowledgement_failures();
    refused.extend(consumer.close().await?);
    for f in &refused {
        eprintln!(
            "acknowledgement of {}-{} offsets {}..={} refused: {}",
            f.topic, f.partition, f.first_offset, f.last_offset, f.error
        );
    }
    eprintln!("consumed {printed} records");
    Ok(if refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn run(target: &Target, cmd: ShareGroupCommand) -> anyhow::Result<ExitCode> {
    let admin = target.admin().await?;
    match cmd {
        ShareGroupCommand::List { format } => {
            let groups = admin.list_share_groups().await?;
            match format {
                OutputFormat::Json => println!("{}", serde_json::json!(groups)),
                OutputFormat::Text => {
                    for g in groups {
                        println!("{g}");
                    }
                }
            }
        }
        ShareGroupCommand::Describe { group, format } => {
            let d = admin.describe_share_group(&group).await?;
            match format {
                OutputFormat::Json => {
                    let v = serde_json::json!({
                        "group": d.group, "coordinator": d.coordinator,
                        "delivery_count_limit": d.delivery_count_limit,
                        "members": d.members.iter().map(|m| serde_json::json!({
                            "member_id": m.member_id, "topics": m.topics, "acquired": m.acquired,
                        })).collect::<Vec<_>>(),
                        "partitions": d.partitions.iter().map(|p| serde_json::json!({
                            "topic": p.topic, "partition": p.partition, "start_offset": p.start_offset,
                            "end_offset": p.end_offset, "high_watermark": p.high_watermark,
                            "in_flight": p.in_flight, "acquired": p.acquired, "available": p.available,
                            "delayed": p.delayed, "archived": p.archived, "redelivered": p.redelivered,
                        })).collect::<Vec<_>>(),
                    });
                    println!("{v}");
                }
                OutputFormat::Text => {
                    println!(
                        "share group {}  coordinator {}  delivery limit {}",
                        d.group, d.coordinator, d.delivery_count_limit
                    );
                    for m in &d.members {
                        println!(
                            "  member {}  topics [{}]  holds {}",
                            m.member_id,
                            m.topics.join(","),
                            m.acquired
                        );
                    }
                    println!(
                        "  {:<24} {:>9} {:>12} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9}",
                        "TOPIC",
                        "PARTITION",
                        "START",
                        "LOG-END",
                        "IN-FLIGHT",
                        "ACQUIRED",
                        "AVAILABLE",
                        "DELAYED",
                        "ARCHIVED"
                    );
                    for p in &d.partitions {
                        println!(
                            "  {:<24} {:>9} {:>12} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9}",
                            p.topic,
                            p.partition,
                            p.start_offset,
                            p.high_watermark,
                            p.in_flight,
                            p.acquired,
                            p.available,
                            p.delayed,
                            p.archived
                        );
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
