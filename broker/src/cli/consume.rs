//! `strand consume TOPIC`: print records from a position until a count is
//! reached or nothing arrives for a while.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use strand_client::{Consumer, ConsumerRecord, Offset, OffsetReset};

use super::OutputFormat;

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Read only this partition (default: all).
    #[arg(long)]
    partition: Option<u32>,
    /// Start at the earliest stored offset (default: the end).
    #[arg(long, conflicts_with_all = ["offset", "from_timestamp"])]
    from_beginning: bool,
    /// Start at this offset (with --partition, or in every partition).
    #[arg(long, conflicts_with = "from_timestamp")]
    offset: Option<u64>,
    /// Start at the first record stamped at or after this time (ms since the epoch).
    #[arg(long)]
    from_timestamp: Option<i64>,
    /// Stop after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Stop when nothing arrived for this long (ms); default: run until interrupted.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Output format: the value per line, or one JSON object per record.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,
}

fn text(b: &Option<bytes::Bytes>) -> serde_json::Value {
    match b {
        Some(b) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
        None => serde_json::Value::Null,
    }
}

fn json(r: &ConsumerRecord) -> serde_json::Value {
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

pub async fn run(bootstrap: &str, args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let reset = if args.from_beginning {
        OffsetReset::Earliest
    } else {
        OffsetReset::Latest
    };
    let mut builder = Consumer::builder(bootstrap).auto_offset_reset(reset);
    if let Some(ms) = args.timeout_ms {
        // Long polls no longer than the idle limit, so it is honoured promptly.
        builder = builder.max_wait(Duration::from_millis(ms.clamp(1, 500)));
    }
    let mut consumer = builder.build().await?;
    match args.partition {
        Some(p) => consumer.assign(&args.topic, &[p]).await?,
        None => consumer.assign_all(&args.topic).await?,
    }
    let start = match (args.from_beginning, args.offset, args.from_timestamp) {
        (true, _, _) => Some(Offset::Beginning),
        (_, Some(o), _) => Some(Offset::At(o)),
        (_, _, Some(ts)) => Some(Offset::Timestamp(ts)),
        _ => None,
    };
    if let Some(start) = start {
        for (topic, p) in consumer.assignment() {
            consumer.seek(&topic, p, start).await?;
        }
    }
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let mut last_record = Instant::now();
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
        if !records.is_empty() {
            last_record = Instant::now();
        }
        let mut out = stdout.lock();
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
        }
        out.flush()?;
    }
    eprintln!("consumed {printed} records");
    Ok(ExitCode::SUCCESS)
}
