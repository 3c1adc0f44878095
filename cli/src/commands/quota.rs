//! `strand quota set|list`: client quotas (byte rates of produce and
//! fetch, request rate) per principal or for everyone without their own.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use strand_client::proto::QuotaEntry;

use super::target::Target;

#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Set a principal's quota (rates left out are unlimited; none removes it).
    Set(SetArgs),
    /// List every quota.
    List,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// `User:<name>` or `ANONYMOUS`.
    #[arg(long, required_unless_present = "default", conflicts_with = "default")]
    principal: Option<String>,
    /// The quota of every principal without its own.
    #[arg(long)]
    default: bool,
    /// Bytes produced per second.
    #[arg(long)]
    produce_bytes_per_sec: Option<u64>,
    /// Bytes fetched per second.
    #[arg(long)]
    fetch_bytes_per_sec: Option<u64>,
    /// Requests per second.
    #[arg(long)]
    requests_per_sec: Option<u64>,
}

fn rate(v: u64) -> String {
    if v == 0 { "unlimited".into() } else { v.to_string() }
}

pub async fn run(target: &Target, cmd: QuotaCommand) -> anyhow::Result<ExitCode> {
    let admin = target.admin().await?;
    match cmd {
        QuotaCommand::Set(a) => {
            let entity = a.principal.unwrap_or_else(|| "<default>".into());
            let q = QuotaEntry {
                entity: entity.clone(),
                produce_bytes_per_sec: a.produce_bytes_per_sec.unwrap_or(0),
                fetch_bytes_per_sec: a.fetch_bytes_per_sec.unwrap_or(0),
                requests_per_sec: a.requests_per_sec.unwrap_or(0),
            };
            let removed = q.produce_bytes_per_sec == 0 && q.fetch_bytes_per_sec == 0 && q.requests_per_sec == 0;
            admin.alter_quota(q).await?;
            println!("{} the quota of {entity}", if removed { "removed" } else { "set" });
        }
        QuotaCommand::List => {
            println!(
                "{:<24} {:>14} {:>14} {:>12}",
                "ENTITY", "PRODUCE B/S", "FETCH B/S", "REQUESTS/S"
            );
            for q in admin.describe_quotas().await? {
                println!(
                    "{:<24} {:>14} {:>14} {:>12}",
                    q.entity,
                    rate(q.produce_bytes_per_sec),
                    rate(q.fetch_bytes_per_sec),
                    rate(q.requests_per_sec)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
