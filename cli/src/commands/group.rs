//! `strand group list|describe|reset-offsets|delete`.

use super::target::Target;
use std::process::ExitCode;

use clap::{ArgGroup, Subcommand};
use strand_client::ResetTo;

use super::OutputFormat;

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Every consumer group with its state and member count.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// State, generation, members and their partitions, and per partition
    /// the committed offset, log end offset and lag.
    Describe {
        /// Group id.
        group: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Move a group's committed offsets of a topic (replay or skip).
    /// Refused while the group has members, unless --force.
    #[command(group(ArgGroup::new("to").required(true).args(["to_earliest", "to_latest", "to_offset", "to_timestamp"])))]
    ResetOffsets {
        /// Group id.
        group: String,
        /// Topic whose partitions move.
        #[arg(long)]
        topic: String,
        /// Each partition's first stored offset.
        #[arg(long)]
        to_earliest: bool,
        /// Each partition's end.
        #[arg(long)]
        to_latest: bool,
        /// This offset in every partition.
        #[arg(long)]
        to_offset: Option<u64>,
        /// The first record at or after this time (ms since the epoch).
        #[arg(long)]
        to_timestamp: Option<i64>,
        /// Reset even with active members: they are fenced and rejoin from
        /// the new offsets.
        #[arg(long)]
        force: bool,
    },
    /// Delete a group without members, with its committed offsets.
    Delete {
        /// Group id.
        group: String,
    },
}

pub async fn run(target: &Target, cmd: GroupCommand) -> anyhow::Result<ExitCode> {
    let admin = target.admin().await?;
    match cmd {
        GroupCommand::List { format } => {
            let groups = admin.list_groups().await?;
            match format {
                OutputFormat::Json => {
                    let v: Vec<_> = groups
                        .iter()
                        .map(|g| {
                            serde_json::json!({
                                "group": g.group, "state": g.state, "members": g.members,
                                "coordinator": g.coordinator,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::Value::Array(v));
                }
                OutputFormat::Text => {
                    for g in &groups {
                        println!("{:<32} {:<12} {} member(s)", g.group, g.state, g.members);
                    }
                }
            }
        }
        GroupCommand::Describe { group, format } => {
            let d = admin.describe_group(&group).await?;
            let tps = |list: &[strand_client::proto::TopicPartitions]| {
                list.iter()
                    .flat_map(|tp| tp.partitions.iter().map(move |p| format!("{}-{p}", tp.topic)))
                    .collect::<Vec<_>>()
            };
            match format {
                OutputFormat::Json => {
                    let v = serde_json::json!({
                        "group": d.group, "state": d.state, "epoch": d.epoch, "assignor": d.assignor,
                        "coordinator": d.coordinator,
                        "members": d.members.iter().map(|m| serde_json::json!({
                            "member_id": m.member_id, "instance_id": m.instance_id, "client_id": m.client_id,
                            "epoch": m.member_epoch, "topics": m.topics, "assignment": tps(&m.assignment),
                        })).collect::<Vec<_>>(),
                        "offsets": d.offsets.iter().map(|o| serde_json::json!({
                            "topic": o.topic, "partition": o.partition, "committed": o.committed,
                            "log_end_offset": o.log_end_offset, "lag": o.lag, "member_id": o.member_id,
                            "out_of_range": o.out_of_range,
                        })).collect::<Vec<_>>(),
                    });
                    println!("{v}");
                }
                OutputFormat::Text => {
                    println!(
                        "group {}  state {}  epoch {}  assignor {}  coordinator {}",
                        d.group, d.state, d.epoch, d.assignor, d.coordinator
                    );
                    for m in &d.members {
                        println!(
                            "  member {}{}  client {}  partitions [{}]",
                            m.member_id,
                            if m.instance_id.is_empty() {
                                String::new()
                            } else {
                                format!(" (instance {})", m.instance_id)
                            },
                            m.client_id,
                            tps(&m.assignment).join(",")
                        );
                    }
                    println!(
                        "  {:<24} {:>9} {:>12} {:>14} {:>10}  MEMBER",
                        "TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG"
                    );
                    let show = |n: i64| if n < 0 { "-".to_string() } else { n.to_string() };
                    for o in &d.offsets {
                        println!(
                            "  {:<24} {:>9} {:>12} {:>14} {:>10}  {}",
                            o.topic,
                            o.partition,
                            show(o.committed),
                            show(o.log_end_offset),
                            // Never "0" for an offset past the log end: a
                            // consumer resuming there starts by its reset
                            // policy, which is what an operator must know.
                            if o.out_of_range {
                                "OUT-OF-RANGE".to_string()
                            } else {
                                show(o.lag)
                            },
                            if o.member_id.is_empty() { "-" } else { &o.member_id }
                        );
                    }
                }
            }
        }
        GroupCommand::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            to_timestamp,
            force,
        } => {
            let to = match (to_earliest, to_latest, to_offset, to_timestamp) {
                (true, ..) => ResetTo::Earliest,
                (_, true, ..) => ResetTo::Latest,
                (_, _, Some(o), _) => ResetTo::Offset(o),
                (_, _, _, Some(ts)) => ResetTo::Timestamp(ts),
                _ => anyhow::bail!("one of --to-earliest, --to-latest, --to-offset, --to-timestamp is required"),
            };
            let set = admin.reset_group_offsets(&group, &topic, to, force).await?;
            for (p, o) in set {
                println!("{topic}-{p} -> {o}");
            }
        }
        GroupCommand::Delete { group } => {
            admin.delete_group(&group).await?;
            println!("deleted group {group}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
