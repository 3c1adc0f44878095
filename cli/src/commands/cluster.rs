//! `strand cluster status`.

use super::target::Target;
use std::process::ExitCode;

use std::collections::BTreeMap;

use clap::Subcommand;
use strand_client::proto::PartitionStatus;

use super::OutputFormat;
use super::listing::PartitionFilter;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Brokers, controller, per-topic totals, and partition leaders and
    /// lagging replicas (of more than 100 partitions, only those that need
    /// attention unless `--all`, `--topic` or `--partition`).
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        /// Only this topic's partitions.
        #[arg(long)]
        topic: Option<String>,
        #[command(flatten)]
        filter: PartitionFilter,
    },
    /// Spread replicas evenly over the brokers (after a broker joined): one
    /// replica moves per partition, from the most to the least loaded broker.
    Rebalance {
        /// Print the moves without making them.
        #[arg(long)]
        dry_run: bool,
        /// Wait until every move is done.
        #[arg(long)]
        wait: bool,
    },
}

pub async fn run(target: &Target, cmd: ClusterCommand) -> anyhow::Result<ExitCode> {
    let (format, topic, filter) = match cmd {
        ClusterCommand::Status { format, topic, filter } => (format, topic, filter),
        ClusterCommand::Rebalance { dry_run, wait } => return rebalance(target, dry_run, wait).await,
    };
    let s = target.admin().await?.cluster_status().await?;
    let in_scope = |p: &&PartitionStatus| topic.as_ref().is_none_or(|t| *t == p.topic) && filter.wants(p.partition);
    let partitions: Vec<&PartitionStatus> = s.partitions.iter().filter(in_scope).collect();
    match format {
        OutputFormat::Json => {
            let v = serde_json::json!({
                "cluster_id": s.cluster_id,
                "controller_id": s.controller_id,
                "under_replicated": s.under_replicated,
                "brokers": s.brokers.iter().map(|b| serde_json::json!({
                    "node_id": b.node_id, "addr": b.addr, "up": b.up,
                    "controller_recovering": b.controller_recovering,
                })).collect::<Vec<_>>(),
                "topics": topic_totals(&s.partitions).iter().map(|(t, n)| serde_json::json!({
                    "topic": t, "partitions": n.partitions, "without_leader": n.leaderless,
                    "under_replicated": n.under_replicated,
                })).collect::<Vec<_>>(),
                "partitions": partitions.iter().map(|p| serde_json::json!({
                    "topic": p.topic, "partition": p.partition, "leader": p.leader,
                    "replicas": p.replicas, "lagging": p.lagging, "recovering": p.recovering,
                    "failed": p.failed, "high_watermark": p.high_watermark,
                })).collect::<Vec<_>>(),
            });
            println!("{v}");
        }
        OutputFormat::Text => {
            println!("cluster {}  controller {}", s.cluster_id, s.controller_id);
            for b in &s.brokers {
                println!(
                    "  broker {:>3}  {:<24} {}{}",
                    b.node_id,
                    b.addr,
                    if b.up { "up" } else { "DOWN" },
                    if b.controller_recovering {
                        "  (controller replica recovering)"
                    } else {
                        ""
                    }
                );
            }
            println!("  under-replicated partitions: {}", s.under_replicated);
            for (t, n) in topic_totals(&s.partitions) {
                if topic.as_ref().is_none_or(|want| *want == t) {
                    println!(
                        "  topic {t}: partitions {}  without a leader {}  under-replicated {}",
                        n.partitions, n.leaderless, n.under_replicated
                    );
                }
            }
            let rows: Vec<(u32, bool)> = partitions.iter().map(|p| (p.partition, needs_attention(p))).collect();
            let selection = filter.select(&rows);
            for p in selection.shown.iter().map(|&i| partitions[i]) {
                let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
                let mut extra = String::new();
                if !p.recovering.is_empty() {
                    extra.push_str(&format!("  recovering [{}]", list(&p.recovering)));
                }
                if !p.failed.is_empty() {
                    extra.push_str(&format!("  FAILED [{}]", list(&p.failed)));
                }
                println!(
                    "  {}-{}  leader {}  replicas [{}]  lagging [{}]  high_watermark {}{extra}",
                    p.topic,
                    p.partition,
                    p.leader,
                    list(&p.replicas),
                    list(&p.lagging),
                    p.high_watermark
                );
            }
            if selection.hidden > 0 {
                println!(
                    "  ({} healthy partitions not listed: --topic, --partition N or --all)",
                    selection.hidden
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A partition without a leader or with a lagging replica.
fn needs_attention(p: &PartitionStatus) -> bool {
    p.leader == 0 || !p.lagging.is_empty()
}

/// One topic's totals in a cluster status.
#[derive(Debug, Default)]
struct TopicTotals {
    partitions: usize,
    leaderless: usize,
    under_replicated: usize,
}

fn topic_totals(partitions: &[PartitionStatus]) -> BTreeMap<&str, TopicTotals> {
    let mut out: BTreeMap<&str, TopicTotals> = BTreeMap::new();
    for p in partitions {
        let t = out.entry(p.topic.as_str()).or_default();
        t.partitions += 1;
        t.leaderless += usize::from(p.leader == 0);
        t.under_replicated += usize::from(!p.lagging.is_empty());
    }
    out
}

async fn rebalance(target: &Target, dry_run: bool, wait: bool) -> anyhow::Result<ExitCode> {
    let admin = target.admin().await?;
    let moves = admin.plan_rebalance().await?;
    if moves.is_empty() {
        println!("replicas are already spread evenly");
        return Ok(ExitCode::SUCCESS);
    }
    for m in &moves {
        println!("{}-{}: {:?} -> {:?}", m.topic, m.partition, m.from, m.to);
        if !dry_run {
            admin.reassign_partition(&m.topic, m.partition, &m.to).await?;
        }
    }
    if dry_run || !wait {
        println!(
            "{} move(s){}",
            moves.len(),
            if dry_run { " planned" } else { " started" }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1800);
    for m in &moves {
        loop {
            let d = admin.describe_topic(&m.topic).await?;
            if d.partitions
                .get(m.partition as usize)
                .is_some_and(|p| p.moving_to.is_empty() && p.replicas == m.to)
            {
                break;
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "moves did not finish in 30 minutes"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    println!("{} move(s) done", moves.len());
    Ok(ExitCode::SUCCESS)
}
