//! `strand cluster status`.

use std::process::ExitCode;

use clap::Subcommand;
use strand_client::Admin;

use super::OutputFormat;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Brokers, controller, partition leaders and lagging replicas.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
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

pub async fn run(bootstrap: &str, cmd: ClusterCommand) -> anyhow::Result<ExitCode> {
    let format = match cmd {
        ClusterCommand::Status { format } => format,
        ClusterCommand::Rebalance { dry_run, wait } => return rebalance(bootstrap, dry_run, wait).await,
    };
    let s = Admin::connect(bootstrap).await?.cluster_status().await?;
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
                "partitions": s.partitions.iter().map(|p| serde_json::json!({
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
            for p in &s.partitions {
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
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn rebalance(bootstrap: &str, dry_run: bool, wait: bool) -> anyhow::Result<ExitCode> {
    let admin = Admin::connect(bootstrap).await?;
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
