//! `strand produce TOPIC`: one record per stdin line, or one from --value.

use super::target::Target;
use std::io::BufRead;
use std::process::ExitCode;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use strand_client::{Acks, Compression, ProducerRecord};

/// Acknowledgement level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AcksArg {
    /// Durable on a majority of replicas.
    All,
    /// Stored by the leader.
    Leader,
    /// Fire and forget.
    None,
}

impl From<AcksArg> for Acks {
    fn from(a: AcksArg) -> Self {
        match a {
            AcksArg::All => Acks::All,
            AcksArg::Leader => Acks::Leader,
            AcksArg::None => Acks::None,
        }
    }
}

/// Compression codec.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CompressionArg {
    /// None.
    None,
    /// Snappy.
    Snappy,
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Self {
        match c {
            CompressionArg::None => Compression::None,
            CompressionArg::Snappy => Compression::Snappy,
        }
    }
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to write to.
    topic: String,
    /// Split each line at the first SEP into key and value.
    #[arg(long)]
    key_separator: Option<String>,
    /// Key of the single record given with --value.
    #[arg(long, requires = "value")]
    key: Option<String>,
    /// Produce this one record instead of reading stdin.
    #[arg(long)]
    value: Option<String>,
    /// Partition to write to (default: by key, or sticky without one).
    #[arg(long)]
    partition: Option<u32>,
    /// Acknowledgement level.
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    acks: AcksArg,
    /// Batch compression.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    compression: CompressionArg,
    /// Turn the idempotent producer off: a retry after a lost answer may
    /// then store a batch twice (on by default, except with --acks none).
    #[arg(long)]
    no_idempotence: bool,
    /// A stable producer key: a producer started again with the same key
    /// fences this one (its later batches are refused).
    #[arg(long, conflicts_with = "no_idempotence")]
    producer_key: Option<String>,
    /// A header for every record, `key=value` (repeatable).
    #[arg(long = "header", value_parser = super::parse_key_value)]
    headers: Vec<(String, String)>,
    /// Delayed delivery: share-group members get the records only this
    /// many ms from now (stored now, in order; ordinary consumers see them
    /// at once).
    #[arg(long, conflicts_with = "deliver_at")]
    delay_ms: Option<u64>,
    /// Delayed delivery at this instant: ms since the Unix epoch, or an
    /// RFC 3339 time such as 2026-12-24T18:00:00Z.
    #[arg(long, value_parser = parse_instant)]
    deliver_at: Option<std::time::SystemTime>,
}

/// An instant as ms since the Unix epoch or RFC 3339.
fn parse_instant(s: &str) -> Result<std::time::SystemTime, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
    }
    humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{s:?} is neither ms since the Unix epoch nor an RFC 3339 time: {e}"))
}

fn record(args: &ProduceArgs, key: Option<String>, value: String) -> ProducerRecord {
    let mut r = ProducerRecord::new(args.topic.as_str(), Bytes::from(value));
    if let Some(k) = key {
        r = r.key(Bytes::from(k));
    }
    if let Some(p) = args.partition {
        r = r.partition(p);
    }
    for (k, v) in &args.headers {
        r = r.header(k.clone(), Bytes::from(v.clone()));
    }
    if let Some(ms) = args.delay_ms {
        r = r.deliver_after(std::time::Duration::from_millis(ms));
    }
    if let Some(at) = args.deliver_at {
        r = r.deliver_at(at);
    }
    r
}

pub async fn run(target: &Target, args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let mut builder = target
        .producer()
        .acks(args.acks.into())
        .compression(args.compression.into());
    if args.no_idempotence {
        builder = builder.enable_idempotence(false);
    }
    if let Some(key) = &args.producer_key {
        builder = builder.producer_id_key(key.clone());
    }
    let producer = builder.build().await?;
    let mut deliveries = Vec::new();
    let mut first_error = None;
    let mut total = 0usize;
    let records: Box<dyn Iterator<Item = std::io::Result<(Option<String>, String)>>> = match args.value.clone() {
        Some(v) => Box::new(std::iter::once(Ok((args.key.clone(), v)))),
        None => Box::new(std::io::stdin().lock().lines().map(|line| {
            line.map(
                |line| match args.key_separator.as_deref().and_then(|sep| line.split_once(sep)) {
                    Some((k, v)) => (Some(k.to_string()), v.to_string()),
                    None => (None, line),
                },
            )
        })),
    };
    for r in records {
        let (key, value) = r?;
        total += 1;
        match producer.send(record(&args, key, value)).await {
            Ok(d) => deliveries.push(d),
            Err(e) => {
                // A record the producer refused up front (unknown topic or
                // partition): stop reading, report what was acknowledged.
                first_error = Some(e);
                break;
            }
        }
    }
    let mut acked = 0usize;
    for d in deliveries {
        match d.await {
            Ok(_) => acked += 1,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    producer.close().await?;
    println!("{acked} of {total} records acknowledged");
    match first_error {
        None => Ok(ExitCode::SUCCESS),
        Some(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
