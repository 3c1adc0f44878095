//! Fetch and Subscribe: serve whole batches below the high watermark,
//! straight from the segment maps. A fetch with nothing to return waits until
//! any of its partitions' high watermark moves (not on a timer), up to its
//! wait.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strand_storage::Offset;
use tokio::sync::mpsc;

use crate::error::{BrokerError, Result};
use crate::node::Node;
use crate::partition::Partition;
use crate::topic::TopicUuid;

/// Per-partition read size when the request does not say.
pub const DEFAULT_PARTITION_MAX_BYTES: usize = 1 << 20;

/// One partition of a fetch.
#[derive(Clone, Debug)]
pub struct FetchPartition {
    /// Topic.
    pub topic: String,
    /// The topic's id, if the client named it.
    pub topic_id: Option<TopicUuid>,
    /// Partition.
    pub partition: u32,
    /// First offset wanted.
    pub offset: Offset,
    /// Most bytes to read from it (at least one whole batch is returned).
    pub max_bytes: usize,
    /// Read only if this broker leads it (else `NOT_LEADER`).
    pub leader_only: bool,
}

/// What one partition read returned.
#[derive(Clone, Debug, Default)]
pub struct PartitionRead {
    /// Whole batches (possibly empty).
    pub records: Bytes,
    /// The partition's high watermark.
    pub high_watermark: Offset,
    /// Its first stored offset.
    pub log_start_offset: Offset,
}

fn read_from(p: &Partition, offset: Offset, max_bytes: usize) -> Result<PartitionRead> {
    let st = p.offsets();
    Ok(PartitionRead {
        records: p.read(offset, max_bytes)?,
        high_watermark: st.high_watermark,
        log_start_offset: st.log_start_offset,
    })
}

/// Reads every partition, long-polling up to `max_wait` while none has
/// anything visible; at most `total_bytes` in all (a partition past the
/// budget is answered empty). One result per partition, in `parts` order;
/// the budget is spent starting at `parts[first]` and wrapping around, so a
/// session of many partitions can rotate which ones are served first.
pub async fn fetch(
    node: &Node,
    parts: &[FetchPartition],
    first: usize,
    total_bytes: usize,
    max_wait: Duration,
) -> Result<Vec<Result<PartitionRead>>> {
    let deadline = tokio::time::Instant::now() + max_wait;
    // A partition that cannot be read here answers at once (with its error),
    // so the loop below runs once when any lookup failed.
    let mut resolved: Vec<Result<Arc<Partition>>> = parts
        .iter()
        .map(|fp| {
            let p = node.partition_as(&fp.topic, fp.topic_id, fp.partition)?;
            if fp.leader_only && !p.is_leader() {
                return Err(BrokerError::NotLeader {
                    topic: fp.topic.clone(),
                    partition: fp.partition,
                    leader_addr: p.leader().and_then(|l| node.addr_of(l)),
                });
            }
            Ok(p)
        })
        .collect();
    let mut shutdown = node.shutdown_signal();
    // One counter for every partition of the node: waiting on it costs the
    // same for one partition or ten thousand.
    let mut commits = node.raft().watch_commits();
    let n = parts.len();
    let first = if n == 0 { 0 } else { first % n };
    loop {
        commits.borrow_and_update();
        let mut out: Vec<Option<Result<PartitionRead>>> = (0..n).map(|_| None).collect();
        let mut budget = total_bytes;
        let mut ready = false;
        let mut readable = false;
        for i in (first..n).chain(0..first) {
            let (fp, p) = (&parts[i], &mut resolved[i]);
            let read = match p {
                Err(e) => {
                    ready = true;
                    Err(std::mem::replace(e, BrokerError::ShuttingDown))
                }
                Ok(p) => {
                    readable = true;
                    if budget == 0 {
                        let st = p.offsets();
                        Ok(PartitionRead {
                            records: Bytes::new(),
                            high_watermark: st.high_watermark,
                            log_start_offset: st.log_start_offset,
                        })
                    } else {
                        let r = read_from(p, fp.offset, fp.max_bytes.min(budget));
                        match &r {
                            Ok(read) => {
                                budget = budget.saturating_sub(read.records.len());
                                ready |= !read.records.is_empty();
                            }
                            Err(_) => ready = true,
                        }
                        r
                    }
                }
            };
            out[i] = Some(read);
        }
        if ready || !readable || tokio::time::Instant::now() >= deadline {
            return Ok(out
                .into_iter()
                .map(|r| r.unwrap_or(Err(BrokerError::ShuttingDown)))
                .collect());
        }
        // The counter was read before the partitions: a move in between
        // wakes this wait at once.
        tokio::select! {
            changed = commits.changed() => if changed.is_err() { return Err(BrokerError::ShuttingDown) },
            () = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.wait_for(|s| *s) => return Err(BrokerError::ShuttingDown),
        }
    }
}

/// Offset after the last batch in `records` (which holds whole batches that
/// were CRC-checked by the read).
fn next_offset_after(records: &Bytes) -> Option<Offset> {
    strand_storage::batches(records)
        .filter_map(|b| b.ok())
        .last()
        .map(|b| b.next_offset())
}

/// Starts a subscription to one partition from `offset`: a task pushes
/// batches as they become visible until the receiver is dropped or the
/// broker stops.
pub fn subscribe(
    node: &Node,
    topic: &str,
    topic_id: Option<TopicUuid>,
    partition: u32,
    offset: Offset,
    max_bytes: usize,
) -> Result<mpsc::Receiver<Result<PartitionRead>>> {
    let p = node.partition_as(topic, topic_id, partition)?;
    // Fail fast on a bad start offset rather than in the stream.
    let st = p.offsets();
    if offset < st.log_start_offset || offset > st.log_end_offset {
        return Err(BrokerError::Storage(strand_storage::StorageError::OffsetOutOfRange {
            requested: offset,
            earliest: st.log_start_offset,
            // The readable range ends at what is committed.
            latest: st.high_watermark,
        }));
    }
    // A small buffer: a slow subscriber back-pressures the task, which then
    // holds at most this many responses.
    let (tx, rx) = mpsc::channel(4);
    let mut shutdown = node.shutdown_signal();
    tokio::spawn(async move {
        let mut offset = offset;
        let mut hw = p.watch_high_watermark();
        loop {
            hw.borrow_and_update();
            let read = match read_from(&p, offset, max_bytes) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if let Some(next) = next_offset_after(&read.records) {
                offset = next;
                if tx.send(Ok(read)).await.is_err() {
                    return;
                }
                continue;
            }
            tokio::select! {
                changed = hw.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    });
    Ok(rx)
}
