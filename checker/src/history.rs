//! A history: every operation the workload invoked and how it ended, what
//! consumers read and committed, what the log holds after healing, what each
//! replica stores, and which broker claimed leadership in which term. Written
//! as JSON lines, one event per line, so a failed run can be kept and
//! re-checked.

use std::io::{BufRead, Write};
use std::sync::Arc;

use parking_lot::Mutex;

use serde::{Deserialize, Serialize};

/// One recorded event. `time_ms` is milliseconds since the run started
/// (one monotonic clock for the whole history).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A producer process starts sending the record `id` (a retry of an id
    /// is another invoke of the same id).
    Invoke {
        /// Producer process.
        process: u64,
        /// When.
        time_ms: u64,
        /// Unique value of the record.
        id: String,
        /// Its key.
        key: String,
        /// Sent by an idempotent producer: its own retries never store it
        /// twice (only another invoke of the id may).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        idempotent: bool,
    },
    /// The send was acknowledged at this partition and offset.
    Ok {
        /// Producer process.
        process: u64,
        /// When.
        time_ms: u64,
        /// The record.
        id: String,
        /// Partition.
        partition: u32,
        /// Offset.
        offset: u64,
    },
    /// The send definitely failed (the broker refused it).
    Fail {
        /// Producer process.
        process: u64,
        /// When.
        time_ms: u64,
        /// The record.
        id: String,
        /// Why.
        error: String,
    },
    /// The outcome is unknown (timeout, lost connection).
    Unknown {
        /// Producer process.
        process: u64,
        /// When.
        time_ms: u64,
        /// The record.
        id: String,
        /// Why.
        error: String,
    },
    /// A consumer was assigned a partition (an assignment lasts until the
    /// matching revoke).
    Assigned {
        /// Consumer process.
        consumer: u64,
        /// When.
        time_ms: u64,
        /// Partition.
        partition: u32,
    },
    /// A consumer gave a partition up (revoked or lost).
    Revoked {
        /// Consumer process.
        consumer: u64,
        /// When.
        time_ms: u64,
        /// Partition.
        partition: u32,
    },
    /// A consumer processed a record.
    Poll {
        /// Consumer process.
        consumer: u64,
        /// When.
        time_ms: u64,
        /// Partition.
        partition: u32,
        /// Offset.
        offset: u64,
        /// The record's id.
        id: String,
    },
    /// A group commit that the coordinator acknowledged.
    Commit {
        /// Consumer process (0: an operator's reset).
        consumer: u64,
        /// When.
        time_ms: u64,
        /// Group.
        group: String,
        /// Partition.
        partition: u32,
        /// The committed offset (next to consume).
        offset: u64,
        /// An explicit reset (may go backwards).
        reset: bool,
    },
    /// After healing: the record at this offset of the final log.
    Read {
        /// Partition.
        partition: u32,
        /// Offset.
        offset: u64,
        /// The record's id.
        id: String,
        /// Its key.
        key: String,
    },
    /// After healing: a partition's first retained offset. Records
    /// acknowledged below it were removed by retention: expired, not lost.
    LogStart {
        /// Partition.
        partition: u32,
        /// Its log start offset.
        offset: u64,
    },
    /// A replica's stored batch below the high watermark.
    Replica {
        /// Broker.
        node: u64,
        /// Partition.
        partition: u32,
        /// Base offset of the batch.
        offset: u64,
        /// Raft term stamped into it.
        term: u64,
        /// Its CRC.
        crc: u32,
    },
    /// A share-group member was handed a record.
    ShareAcquired {
        /// Member process.
        consumer: u64,
        /// When.
        time_ms: u64,
        /// Partition.
        partition: u32,
        /// Offset.
        offset: u64,
        /// The delivery count the coordinator gave (1 the first time).
        delivery_count: u32,
    },
    /// A share-group member accepted a record: `confirmed` when the
    /// coordinator answered that it took effect, otherwise the outcome is
    /// unknown (the answer was lost, or a resend was refused because the
    /// first send had taken effect).
    ShareAcked {
        /// Member process.
        consumer: u64,
        /// When.
        time_ms: u64,
        /// Partition.
        partition: u32,
        /// Offset.
        offset: u64,
        /// The coordinator confirmed it.
        confirmed: bool,
    },
    /// After healing: a record found in the dead-letter topic, archived by
    /// the share group (out of deliveries).
    ShareArchived {
        /// Partition of the original record.
        partition: u32,
        /// Its offset.
        offset: u64,
    },
    /// After healing and draining the share group: its start offset of a
    /// partition. Every record of the final log below it must have been
    /// accepted or archived.
    ShareEnd {
        /// Partition.
        partition: u32,
        /// The share-partition start offset.
        start_offset: u64,
    },
    /// A broker said it leads a partition's Raft group in a term.
    Leader {
        /// Broker.
        node: u64,
        /// Raft group.
        group: u64,
        /// Term.
        term: u64,
    },
}

/// A history being recorded by several tasks at once.
#[derive(Clone, Debug)]
pub struct Recorder {
    start: std::time::Instant,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            start: std::time::Instant::now(),
            events: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl Recorder {
    /// Milliseconds since the recorder was made.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Appends one event.
    pub fn record(&self, e: Event) {
        self.events.lock().push(e);
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().clone()
    }
}

/// Writes events as JSON lines.
///
/// # Errors
/// The writer's I/O errors.
pub fn write_jsonl(events: &[Event], mut w: impl Write) -> std::io::Result<()> {
    for e in events {
        serde_json::to_writer(&mut w, e)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Reads JSON lines written by [`write_jsonl`].
///
/// # Errors
/// I/O errors, or a line that is not an event (named by its number).
pub fn read_jsonl(r: impl BufRead) -> std::io::Result<Vec<Event>> {
    let mut out = Vec::new();
    for (i, line) in r.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let e = serde_json::from_str(&line)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("line {}: {e}", i + 1)))?;
        out.push(e);
    }
    Ok(out)
}
