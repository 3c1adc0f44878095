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
}

pub async fn run(bootstrap: &str, cmd: ClusterCommand) -> anyhow::Result<ExitCode> {
    let ClusterCommand::Status { format } = cmd;
    let s = Admin::connect(bootstrap).await?.cluster_status().await?;
    match format {
        OutputFormat::Json => {
            let v = serde_json::json!({
                "cluster_id": s.cluster_id,
                "controller_id": s.controller_id,
                "under_replicated": s.under_replicated,
                "brokers": s.brokers.iter().map(|b| serde_json::json!({
                    "node_id": b.node_id, "addr": b.addr, "up": b.up,
                })).collect::<Vec<_>>(),
                "partitions": s.partitions.iter().map(|p| serde_json::json!({
                    "topic": p.topic, "partition": p.partition, "leader": p.leader,
                    "replicas": p.replicas, "lagging": p.lagging, "high_watermark": p.high_watermark,
                })).collect::<Vec<_>>(),
            });
            println!("{v}");
        }
        OutputFormat::Text => {
            println!("cluster {}  controller {}", s.cluster_id, s.controller_id);
            for b in &s.brokers {
                println!(
                    "  broker {:>3}  {:<24} {}",
                    b.node_id,
                    b.addr,
                    if b.up { "up" } else { "DOWN" }
                );
            }
            println!("  under-replicated partitions: {}", s.under_replicated);
            for p in &s.partitions {
                let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
                println!(
                    "  {}-{}  leader {}  replicas [{}]  lagging [{}]  high_watermark {}",
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
