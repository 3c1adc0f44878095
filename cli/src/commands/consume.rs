//! `strand consume TOPIC`: print records from a position until a count is
//! reached or nothing arrives for a while.

use super::target::Target;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use strand_client::{ConsumerRecord, Offset, OffsetReset};

use super::OutputFormat;

/// How `consume --share-group` acknowledges what it printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AckArg {
    /// Done: never delivered again.
    Accept,
    /// Delivered again (to any member) at once.
    Release,
    /// Never delivered again; copied to `<topic>.dlq`.
    Reject,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    pub(super) topic: String,
    /// Join this consumer group: partitions are shared with the group's
    /// other members, reading starts at the group's committed offsets, and
    /// what is printed is committed.
    #[arg(long, conflicts_with_all = ["partition", "offset", "from_timestamp", "share_group"])]
    group: Option<String>,
    /// Join this share group (a queue): records are shared out one by one
    /// among its members and each printed record is acknowledged with
    /// --ack. With --from-beginning, partitions the group never read start
    /// at their first offset (default: their end).
    #[arg(long, conflicts_with_all = ["partition", "offset", "from_timestamp"])]
    pub(super) share_group: Option<String>,
    /// With --share-group: how each printed record is acknowledged.
    #[arg(long, value_enum, default_value_t = AckArg::Accept, requires = "share_group")]
    pub(super) ack: AckArg,
    /// Static membership id (with --group): restarted within the session
    /// timeout, it gets the same partitions back without a rebalance.
    #[arg(long, requires = "group")]
    instance_id: Option<String>,
    /// Read only this partition (default: all).
    #[arg(long)]
    partition: Option<u32>,
    /// Start at the earliest stored offset (default: the end).
    #[arg(long, conflicts_with_all = ["offset", "from_timestamp"])]
    pub(super) from_beginning: bool,
    /// Start at this offset (with --partition, or in every partition).
    #[arg(long, conflicts_with = "from_timestamp")]
    offset: Option<u64>,
    /// Start at the first record stamped at or after this time (ms since the epoch).
    #[arg(long)]
    from_timestamp: Option<i64>,
    /// Stop after this many records.
    #[arg(long)]
    pub(super) max_messages: Option<u64>,
    /// Stop when nothing arrived for this long (ms); default: run until interrupted.
    #[arg(long)]
    pub(super) timeout_ms: Option<u64>,
    /// Output format: the value per line, or one JSON object per record.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub(super) format: OutputFormat,
}

fn text(b: &Option<bytes::Bytes>) -> serde_json::Value {
    match b {
        Some(b) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
        None => serde_json::Value::Null,
    }
}

pub(super) fn json(r: &ConsumerRecord) -> serde_json::Value {
    serde_json::json!({
        "topic": &*r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": r.timestamp_ms,
        "key": text(&r.key),
        "value": text(&r.value),
        "headers": r.headers.iter().map(|(k, v)| serde_json::json!({"key": k, "value": text(v)})).collect::<Vec<_>>(),
    })
}

pub async fn run(target: &Target, args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let reset = if args.from_beginning {
        OffsetReset::Earliest
    } else {
        OffsetReset::Latest
    };
    let mut builder = target.consumer().auto_offset_reset(reset);
    if let Some(ms) = args.timeout_ms {
        // Long polls no longer than the idle limit, so it is honoured promptly.
        builder = builder.max_wait(Duration::from_millis(ms.clamp(1, 500)));
    }
    if let Some(g) = &args.group {
        // Commits are explicit: exactly what was printed, never records a
        // poll returned beyond --max-messages.
        builder = builder.group(g.clone()).auto_commit(None).client_id("strand-cli");
        if let Some(id) = &args.instance_id {
            builder = builder.group_instance_id(id.clone());
        }
    }
    let mut consumer = builder.build().await?;
    match (&args.group, args.partition) {
        (Some(_), _) => consumer.subscribe(&[args.topic.as_str()]).await?,
        (None, Some(p)) => consumer.assign(&args.topic, &[p]).await?,
        (None, None) => consumer.assign_all(&args.topic).await?,
    }
    let start = match (args.from_beginning, args.offset, args.from_timestamp) {
        (true, _, _) => Some(Offset::Beginning),
        (_, Some(o), _) => Some(Offset::At(o)),
        (_, _, Some(ts)) => Some(Offset::Timestamp(ts)),
        _ => None,
    };
    if let Some(start) = start.filter(|_| args.group.is_none()) {
        for (topic, p) in consumer.assignment() {
            consumer.seek(&topic, p, start).await?;
        }
    }
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let mut last_record = Instant::now();
    let started = Instant::now();
    let mut assigned_once = false;
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    loop {
        if args.max_messages.is_some_and(|m| printed >= m) {
            break;
        }
        if idle_limit.is_some_and(|l| last_record.elapsed() >= l) {
            break;
        }
        let records = consumer.poll().await?;
        if args.group.is_some() && !assigned_once {
            // The idle limit starts with the first assignment (the group
            // waits for its initial rebalance delay), within reason.
            assigned_once = !consumer.assignment().is_empty() || started.elapsed() > Duration::from_secs(15);
            last_record = Instant::now();
        }
        if !records.is_empty() {
            last_record = Instant::now();
        }
        let mut out = stdout.lock();
        let mut printed_to: BTreeMap<(Arc<str>, u32), u64> = BTreeMap::new();
        for r in records {
            if args.max_messages.is_some_and(|m| printed >= m) {
                break;
            }
            match args.format {
                OutputFormat::Json => writeln!(out, "{}", json(&r))?,
                OutputFormat::Text => {
                    let v = r.value.as_deref().unwrap_or_default();
                    out.write_all(v)?;
                    out.write_all(b"\n")?;
                }
            }
            printed += 1;
            printed_to.insert((r.topic.clone(), r.partition), r.offset + 1);
        }
        out.flush()?;
        drop(out);
        if args.group.is_some() && !printed_to.is_empty() {
            let offsets: Vec<(&str, u32, u64)> = printed_to.iter().map(|((t, p), o)| (&**t, *p, *o)).collect();
            consumer.commit_offsets(&offsets).await?;
        }
    }
    if args.group.is_some() {
        consumer.close().await?;
    }
    eprintln!("consumed {printed} records");
    Ok(ExitCode::SUCCESS)
}
