//! Fetch and Subscribe: serve whole batches below the high watermark,
//! straight from the segment maps. A fetch with nothing to return waits until
//! any of its partitions' high watermark moves (not on a timer), up to its
//! `max_wait_ms`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strand_proto::v1::{FetchRequest, FetchResponse, PartitionData, SubscribeRequest};
use tokio::sync::{mpsc, watch};

use crate::error::{BrokerError, Result};
use crate::partition::Partition;
use crate::state::BrokerState;

/// Per-partition read size when the request does not say.
const DEFAULT_PARTITION_MAX_BYTES: usize = 1 << 20;

fn data(topic: &str, partition: u32) -> PartitionData {
    PartitionData {
        topic: topic.to_string(),
        partition,
        ..Default::default()
    }
}

fn read_into(p: &Partition, offset: u64, max_bytes: usize, out: &mut PartitionData) -> Result<()> {
    let state = p.state();
    out.high_watermark = state.high_watermark;
    out.log_start_offset = state.log_start_offset;
    out.records = p.read(offset, max_bytes)?;
    Ok(())
}

/// Handles one fetch, long-polling when nothing is visible yet.
pub async fn fetch(state: &BrokerState, req: FetchRequest) -> Result<FetchResponse> {
    let limits = &state.config.limits;
    let max_wait = Duration::from_millis(u64::from(req.max_wait_ms).min(limits.max_fetch_wait_ms));
    // Keep the encoded response under the message limit even when the last
    // partition read returns one whole batch past the budget.
    let cap = limits.max_message_bytes / 2;
    let total = match req.max_bytes {
        0 => cap,
        n => (n as usize).min(cap),
    };
    let deadline = tokio::time::Instant::now() + max_wait;
    let resolved: Vec<Result<Arc<Partition>>> = req
        .partitions
        .iter()
        .map(|fp| state.partition(&fp.topic, fp.partition))
        .collect();
    let mut shutdown = state.shutdown_signal();
    loop {
        let mut out = Vec::with_capacity(req.partitions.len());
        let mut watchers: Vec<watch::Receiver<u64>> = Vec::new();
        let mut budget = total;
        let mut ready = false;
        for (fp, p) in req.partitions.iter().zip(&resolved) {
            let mut d = data(&fp.topic, fp.partition);
            match p {
                Err(e) => {
                    d.error = Some(e.to_proto());
                    ready = true;
                }
                Ok(p) => {
                    // Subscribe before reading so a move in between is not missed.
                    watchers.push(p.watch_high_watermark());
                    if budget > 0 {
                        let want = match fp.max_bytes {
                            0 => DEFAULT_PARTITION_MAX_BYTES,
                            n => n as usize,
                        }
                        .min(budget);
                        match read_into(p, fp.offset, want, &mut d) {
                            Ok(()) => {
                                budget = budget.saturating_sub(d.records.len());
                                if !d.records.is_empty() {
                                    let m = &state.metrics;
                                    crate::metrics::Metrics::add(&m.fetch_requests, &fp.topic, 1);
                                    crate::metrics::Metrics::add(&m.fetch_bytes, &fp.topic, d.records.len() as u64);
                                }
                                ready |= !d.records.is_empty();
                            }
                            Err(e) => {
                                d.error = Some(e.to_proto());
                                ready = true;
                            }
                        }
                    }
                }
            }
            out.push(d);
        }
        if ready || watchers.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(FetchResponse { partitions: out });
        }
        let any_moved = futures::future::select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
        tokio::select! {
            _ = any_moved => {}
            () = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.wait_for(|s| *s) => return Err(BrokerError::ShuttingDown),
        }
    }
}

/// Offset after the last batch in `records` (which holds whole batches).
fn next_offset_after(records: &Bytes) -> Option<u64> {
    strand_storage::batches(records)
        .filter_map(|b| b.ok())
        .last()
        .map(|b| b.next_offset())
}

/// Starts a subscription: a task pushes batches as they become visible until
/// the client goes away or the broker stops.
pub fn subscribe(
    state: &BrokerState,
    req: SubscribeRequest,
) -> Result<mpsc::Receiver<std::result::Result<PartitionData, tonic::Status>>> {
    let partition = state.partition(&req.topic, req.partition)?;
    // Fail fast on a bad start offset rather than in the stream.
    let st = partition.state();
    if req.offset < st.log_start_offset || req.offset > st.log_end_offset {
        return Err(BrokerError::Storage(strand_storage::StorageError::OffsetOutOfRange {
            requested: req.offset,
            earliest: st.log_start_offset,
            latest: st.log_end_offset,
        }));
    }
    let max_bytes = match req.max_bytes {
        0 => DEFAULT_PARTITION_MAX_BYTES,
        n => (n as usize).min(state.config.limits.max_message_bytes / 2),
    };
    // A small buffer: a slow subscriber back-pressures the task, which then
    // holds at most this many responses.
    let (tx, rx) = mpsc::channel(4);
    let mut shutdown = state.shutdown_signal();
    tokio::spawn(async move {
        let mut offset = req.offset;
        let mut hw = partition.watch_high_watermark();
        loop {
            hw.borrow_and_update();
            let mut d = data(&req.topic, req.partition);
            if let Err(e) = read_into(&partition, offset, max_bytes, &mut d) {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
            if let Some(next) = next_offset_after(&d.records) {
                offset = next;
                if tx.send(Ok(d)).await.is_err() {
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
