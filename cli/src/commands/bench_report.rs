//! What every `strand bench` prints: one JSON line of throughput, latency
//! percentiles (HDR histogram) and the client's own CPU, and a progress
//! line on stderr while it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// An empty latency histogram in microseconds.
pub fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    // Microseconds, 1 µs .. 1 h, 3 significant digits.
    Ok(Histogram::new_with_bounds(1, 3_600_000_000, 3)?)
}

/// CPU time (user + system) this process has used so far, from
/// `/proc/self/stat`; `None` where that file does not exist (not Linux).
pub fn process_cpu() -> Option<Duration> {
    /// Linux reports these times in USER_HZ ticks, 100 a second on every
    /// architecture it supports (part of its user-space ABI).
    const USER_HZ: u64 = 100;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

/// What the benchmark's own process spent: the client's cost next to its
/// throughput (`client_cores`: CPU seconds per second of the run).
fn client_cpu(records: u64, elapsed: Duration, since: Option<Duration>) -> serde_json::Value {
    let (Some(start), Some(end)) = (since, process_cpu()) else {
        return serde_json::Value::Null;
    };
    let cpu = end.saturating_sub(start).as_secs_f64();
    let secs = elapsed.as_secs_f64().max(1e-9);
    serde_json::json!({
        "cpu_s": (cpu * 100.0).round() / 100.0,
        "cores": (cpu / secs * 100.0).round() / 100.0,
        "cores_per_million_per_s": if records > 0 {
            ((cpu / secs) / (records as f64 / secs / 1e6) * 100.0).round() / 100.0
        } else {
            0.0
        },
    })
}

pub fn report(
    records: u64,
    bytes: u64,
    elapsed: Duration,
    h: &Histogram<u64>,
    cpu_since: Option<Duration>,
) -> serde_json::Value {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    serde_json::json!({
        "client": client_cpu(records, elapsed, cpu_since),
        "records": records,
        "msgs_per_sec": (records as f64 / secs).round(),
        "mb_per_sec": ((bytes as f64 / secs / 1e6) * 100.0).round() / 100.0,
        "p50_ms": ms(0.50),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "elapsed_s": (secs * 1000.0).round() / 1000.0,
    })
}

pub fn spawn_progress(label: &'static str, done: Arc<AtomicU64>, total: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = done.load(Ordering::Relaxed);
            eprintln!(
                "{label}: {now}/{total} records, {} records/s over the last second, {:.1} s",
                now - last,
                start.elapsed().as_secs_f64()
            );
            last = now;
            if now >= total {
                return;
            }
        }
    })
}
