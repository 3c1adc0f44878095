//! Command-line parsing and dispatch. Flags become validated settings in
//! two steps: clap parses, each command builds its config and validates it.

mod acl;
mod bench;
mod bench_report;
mod bench_share;
mod broker;
mod cert;
mod cluster;
mod consume;
mod dlq;
mod group;
mod listing;
mod produce;
mod quota;
mod share_group;
mod target;
mod topic;
mod user;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Strand: a distributed, partitioned commit log.
#[derive(Debug, Parser)]
#[command(name = "strand", version, about, propagate_version = true)]
pub struct Cli {
    /// Brokers to contact, `HOST:PORT[,HOST:PORT…]`; any reachable one will do.
    /// [default: the client config's, else 127.0.0.1:9292]
    #[arg(long, global = true, env = "STRAND_BOOTSTRAP")]
    pub bootstrap: Option<String>,
    /// TLS to the brokers.
    #[command(flatten)]
    pub connect: target::ConnectArgs,
    /// Log output format (level from RUST_LOG).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// Output format of describe/consume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable.
    Text,
    /// JSON.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a broker.
    Broker(broker::BrokerArgs),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Produce records from stdin (one per line) or from --value.
    Produce(produce::ProduceArgs),
    /// Consume records and print them.
    Consume(consume::ConsumeArgs),
    /// Load generators.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Cluster-wide status.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Consumer groups: list, describe (with lag), reset offsets, delete.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Share groups (queues): list, describe (records in flight, acquired,
    /// available, delayed, archived).
    #[command(subcommand)]
    ShareGroup(share_group::ShareGroupCommand),
    /// Dead-letter topics.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Access control lists: who may do what.
    #[command(subcommand)]
    Acl(acl::AclCommand),
    /// Users who log in with a password (SCRAM-SHA-256).
    #[command(subcommand)]
    User(user::UserCommand),
    /// Client quotas: produce and fetch byte rates, request rates.
    #[command(subcommand)]
    Quota(quota::QuotaCommand),
    /// Development certificates: a CA, broker and client certificates.
    #[command(subcommand)]
    Cert(cert::CertCommand),
}

pub fn init_logging(cli: &Cli) {
    let default = match cli.command {
        Command::Broker(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let command = match cli.command {
        Command::Broker(args) => return rt.block_on(broker::run(args)),
        Command::Cert(cmd) => return cert::run(cmd),
        client => client,
    };
    let target = &target::Target::new(cli.bootstrap, &cli.connect)?;
    match command {
        Command::Topic(cmd) => rt.block_on(topic::run(target, cmd)),
        Command::Produce(args) => rt.block_on(produce::run(target, args)),
        Command::Consume(args) if args.share_group.is_some() => rt.block_on(share_group::consume(target, args)),
        Command::Consume(args) => rt.block_on(consume::run(target, args)),
        Command::Bench(cmd) => rt.block_on(bench::run(target, cmd)),
        Command::Cluster(cmd) => rt.block_on(cluster::run(target, cmd)),
        Command::Group(cmd) => rt.block_on(group::run(target, cmd)),
        Command::ShareGroup(cmd) => rt.block_on(share_group::run(target, cmd)),
        Command::Dlq(cmd) => rt.block_on(dlq::run(target, cmd)),
        Command::Acl(cmd) => rt.block_on(acl::run(target, cmd)),
        Command::Quota(cmd) => rt.block_on(quota::run(target, cmd)),
        Command::User(cmd) => rt.block_on(user::run(target, cmd)),
        // Answered before the target was built.
        Command::Broker(_) | Command::Cert(_) => Ok(ExitCode::SUCCESS),
    }
}

/// `REASON: message` for errors that carry a stable reason, else the chain.
pub fn describe_error(e: &anyhow::Error) -> String {
    if let Some(ce) = e.downcast_ref::<strand_client::ClientError>() {
        return ce.to_string();
    }
    if let Some(be) = e.downcast_ref::<strand_broker::BrokerError>() {
        return format!("{}: {be}", be.code().as_str_name());
    }
    format!("{e:#}")
}

/// Parses `key=value`.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}
