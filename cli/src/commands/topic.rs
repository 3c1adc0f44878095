//! `strand topic create|list|describe|delete`.

use super::target::Target;
use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Subcommand;

use super::listing::PartitionFilter;
use super::{OutputFormat, parse_key_value};

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name: letters, digits, '.', '_' and '-'.
        name: String,
        /// Number of partitions.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Replicas per partition.
        #[arg(long, default_value_t = 1)]
        replication_factor: u32,
        /// Topic setting, Kafka-style (retention.ms, retention.bytes,
        /// segment.bytes, segment.ms, max.message.bytes, producer.id.expiration.ms);
        /// repeatable.
        #[arg(long = "config", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topics (with their ids).
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Show a topic's totals, and its partitions and offsets (of a topic of
    /// more than 100 partitions, only those that need attention unless
    /// `--all` or `--partition`).
    Describe {
        /// Topic name.
        name: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        #[command(flatten)]
        filter: PartitionFilter,
    },
    /// Add partitions to a topic (keys map to partitions by count, so keyed
    /// records go elsewhere from then on).
    AddPartitions {
        /// Topic name.
        name: String,
        /// The new partition count.
        #[arg(long)]
        partitions: u32,
    },
    /// Move a partition's replicas to other brokers (for example onto a
    /// broker that joined with --join).
    Reassign {
        /// Topic name.
        name: String,
        /// Partition.
        #[arg(long)]
        partition: u32,
        /// The new replicas, preferred leader first: `4,2,3`.
        #[arg(long, value_delimiter = ',', required = true)]
        replicas: Vec<u64>,
        /// Wait until the move is done.
        #[arg(long)]
        wait: bool,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
}

pub async fn run(target: &Target, cmd: TopicCommand) -> anyhow::Result<ExitCode> {
    let admin = target.admin().await?;
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let configs: BTreeMap<String, String> = configs.into_iter().collect();
            let t = admin
                .create_topic(&name, partitions, replication_factor, configs)
                .await?;
            println!("created topic {} with {} partitions", t.name, t.partitions.len());
        }
        TopicCommand::AddPartitions { name, partitions } => {
            let t = admin.create_partitions(&name, partitions).await?;
            println!("topic {} now has {} partitions", t.name, t.partitions.len());
        }
        TopicCommand::Reassign {
            name,
            partition,
            replicas,
            wait,
        } => {
            admin.reassign_partition(&name, partition, &replicas).await?;
            if wait {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
                loop {
                    let d = admin.describe_topic(&name).await?;
                    let p = d
                        .partitions
                        .get(partition as usize)
                        .ok_or_else(|| anyhow::anyhow!("partition {partition} vanished"))?;
                    if p.moving_to.is_empty() && p.replicas == replicas {
                        break;
                    }
                    anyhow::ensure!(
                        std::time::Instant::now() < deadline,
                        "the move did not finish in 10 minutes"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                println!("{name}-{partition} replicas {replicas:?}");
            } else {
                println!("{name}-{partition} moving to {replicas:?} (see topic describe)");
            }
        }
        TopicCommand::List { format } => {
            let topics = admin.list_topics().await?;
            match format {
                OutputFormat::Json => {
                    let v: Vec<serde_json::Value> = topics
                        .iter()
                        .map(|t| {
                            serde_json::json!({
                                "name": t.name, "topic_id": t.topic_id, "partitions": t.partitions,
                                "replication_factor": t.replication_factor,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::Value::Array(v));
                }
                OutputFormat::Text => {
                    for t in topics {
                        println!(
                            "{}\tpartitions={}\treplication_factor={}\tid={}",
                            t.name, t.partitions, t.replication_factor, t.topic_id
                        );
                    }
                }
            }
        }
        TopicCommand::Describe { name, format, filter } => {
            let t = admin.describe_topic(&name).await?;
            match format {
                OutputFormat::Json => println!("{}", describe_json(&t, &filter)),
                OutputFormat::Text => print!("{}", describe_text(&t, &filter)),
            }
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await?;
            println!("deleted topic {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The text form of `topic describe`. A replica's `!` is exactly the JSON
/// form's `in_sync: false`: both read the flag the broker computed once.
fn describe_text(t: &strand_client::proto::TopicDescription, filter: &PartitionFilter) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "topic {}  id {}  replication_factor={}",
        t.name, t.topic_id, t.replication_factor
    );
    let totals = Totals::of(t);
    let _ = writeln!(
        out,
        "  partitions {}  without a leader {}  under-replicated {}  records {}  size_bytes {}  producers {}",
        t.partitions.len(),
        totals.leaderless,
        totals.under_replicated,
        totals.records,
        totals.size_bytes,
        totals.producers
    );
    let mut configs: Vec<_> = t.configs.iter().collect();
    configs.sort();
    for (k, v) in configs {
        let _ = writeln!(out, "  config {k}={v}");
    }
    let _ = writeln!(
        out,
        "  {:>9}  {:>6}  {:>10}  {:>14}  {:>14}  {:>14}  {:>12}  {:>9}  replica lag in entries (! = out of sync)",
        "partition", "leader", "replicas", "log_start", "high_watermark", "log_end", "size_bytes", "producers"
    );
    let rows: Vec<(u32, bool)> = t.partitions.iter().map(|p| (p.partition, needs_attention(p))).collect();
    let selection = filter.select(&rows);
    for p in selection.shown.iter().map(|&i| &t.partitions[i]) {
        let replicas = p.replicas.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        let lag = p
            .replica_lag
            .iter()
            .map(|r| format!("{}:{}{}", r.node_id, r.lag, if r.in_sync { "" } else { "!" }))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            "  {:>9}  {:>6}  {:>10}  {:>14}  {:>14}  {:>14}  {:>12}  {:>9}  {lag}",
            p.partition,
            p.leader,
            replicas,
            p.log_start_offset,
            p.high_watermark,
            p.log_end_offset,
            p.size_bytes,
            p.active_producers
        );
    }
    if selection.hidden > 0 {
        let _ = writeln!(
            out,
            "  ({} healthy partitions not listed: --partition N or --all)",
            selection.hidden
        );
    }
    out
}

/// A partition without a leader, or with a replica out of sync.
fn needs_attention(p: &strand_client::proto::PartitionDescription) -> bool {
    p.leader == 0 || p.replica_lag.iter().any(|r| !r.in_sync)
}

/// A topic's totals over its partitions.
#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    leaderless: usize,
    under_replicated: usize,
    records: u64,
    size_bytes: u64,
    producers: u64,
}

impl Totals {
    fn of(t: &strand_client::proto::TopicDescription) -> Self {
        let mut s = Totals::default();
        for p in &t.partitions {
            s.leaderless += usize::from(p.leader == 0);
            s.under_replicated += usize::from(p.replica_lag.iter().any(|r| !r.in_sync));
            s.records += p.high_watermark.saturating_sub(p.log_start_offset);
            s.size_bytes += p.size_bytes;
            s.producers += u64::from(p.active_producers);
        }
        s
    }
}

fn describe_json(t: &strand_client::proto::TopicDescription, filter: &PartitionFilter) -> serde_json::Value {
    let configs: BTreeMap<_, _> = t.configs.iter().collect();
    let totals = Totals::of(t);
    serde_json::json!({
        "name": t.name,
        "topic_id": t.topic_id,
        "replication_factor": t.replication_factor,
        "configs": configs,
        "summary": {
            "partitions": t.partitions.len(),
            "without_leader": totals.leaderless,
            "under_replicated": totals.under_replicated,
            "records": totals.records,
            "size_bytes": totals.size_bytes,
            "active_producers": totals.producers,
        },
        "partitions": t.partitions.iter().filter(|p| filter.wants(p.partition)).map(|p| serde_json::json!({
            "partition": p.partition,
            "leader": p.leader,
            "replicas": p.replicas,
            "log_start_offset": p.log_start_offset,
            "high_watermark": p.high_watermark,
            "log_end_offset": p.log_end_offset,
            "size_bytes": p.size_bytes,
            "segments": p.segments,
            "active_producers": p.active_producers,
            "replica_lag": p.replica_lag.iter().map(|r| serde_json::json!({
                "node_id": r.node_id, "lag": r.lag, "in_sync": r.in_sync,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strand_client::proto::{PartitionDescription, ReplicaLag, TopicDescription};

    #[test]
    fn text_and_json_agree_on_which_replicas_are_in_sync() {
        let t = TopicDescription {
            name: "t".into(),
            replication_factor: 3,
            partitions: vec![PartitionDescription {
                partition: 0,
                leader: 1,
                replicas: vec![1, 2, 3],
                replica_lag: vec![
                    ReplicaLag {
                        node_id: 2,
                        lag: 0,
                        in_sync: true,
                    },
                    // Lag 3 but out of sync (not heard from): the flag, not
                    // the number, decides.
                    ReplicaLag {
                        node_id: 3,
                        lag: 3,
                        in_sync: false,
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = describe_text(&t, &PartitionFilter::default());
        assert!(text.contains(" 2:0 3:3!"), "{text}");
        let json = describe_json(&t, &PartitionFilter::default());
        let lags = &json["partitions"][0]["replica_lag"];
        assert_eq!(lags[0]["in_sync"], true);
        assert_eq!(lags[1]["in_sync"], false);
    }
}
