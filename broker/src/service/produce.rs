//! Produce: propose each batch to its partition's Raft group (the leader
//! stamps offsets), then wait for the acknowledgement level. One result per batch, so one bad partition does not
//! fail the others.

use std::time::Duration;

use strand_cluster::Ack;
use strand_proto::v1::{Acks, PartitionBatch, PartitionProduceResult, ProduceRequest, ProduceResponse};
use strand_storage::{AppendInfo, BatchRef, StorageError};

use crate::error::{BrokerError, Result};
use crate::state::BrokerState;

/// Validates one batch and proposes it to its partition's Raft group; the
/// future resolves at the acknowledgement level.
async fn produce_one(state: &BrokerState, b: &PartitionBatch, acks: Acks, now_ms: i64) -> Result<AppendInfo> {
    if b.topic.starts_with("__") {
        return Err(BrokerError::InvalidTopic {
            name: b.topic.clone(),
            reason: "internal topics are written by the broker only",
        });
    }
    let partition = state.partition(&b.topic, b.partition)?;
    let batch = BatchRef::validate(&b.batch).map_err(|source| StorageError::InvalidBatch { source })?;
    if batch.is_control() {
        return Err(BrokerError::InvalidRequest {
            reason: "control batches are written by the broker, not by producers".into(),
        });
    }
    let max = state
        .topic(&b.topic)?
        .meta
        .configs
        .get("max.message.bytes")
        .and_then(|v| v.parse::<u32>().ok());
    let max = max.unwrap_or(state.config.log.max_batch_bytes);
    if b.batch.len() > max as usize {
        return Err(StorageError::RecordTooLarge {
            size: b.batch.len(),
            max,
        }
        .into());
    }
    let max_future = state.config.limits.max_future_timestamp_ms;
    let ts = batch.max_timestamp_ms();
    if ts > now_ms.saturating_add(max_future as i64) {
        return Err(BrokerError::InvalidTimestamp {
            timestamp_ms: ts,
            now_ms,
            max_future_ms: max_future,
        });
    }
    let ack = match acks {
        Acks::All => Ack::All,
        Acks::Leader | Acks::None => Ack::Leader,
    };
    if acks == Acks::None {
        // Fire and forget: the proposal goes ahead without us.
        let (node, group, batch) = (state.node.clone(), partition.group(), b.batch.clone());
        tokio::spawn(async move { node.propose(group, batch, ack).await });
        return Ok(AppendInfo {
            base_offset: 0,
            last_offset: 0,
            append_time_ms: now_ms,
        });
    }
    state
        .node
        .propose(partition.group(), b.batch.clone(), ack)
        .await
        .map_err(|e| state.not_leader(&b.topic, b.partition, e))
}

/// Handles one produce request: every batch is proposed concurrently, each
/// answered on its own, so one bad partition does not fail the others.
pub async fn produce(state: &BrokerState, req: ProduceRequest) -> Result<ProduceResponse> {
    let acks = Acks::try_from(req.acks).map_err(|_| BrokerError::InvalidRequest {
        reason: format!("unknown acks level {}", req.acks),
    })?;
    let limit = state.config.request_timeout();
    let timeout = match req.timeout_ms {
        0 => Duration::from_millis(state.config.limits.produce_timeout_ms),
        ms => Duration::from_millis(u64::from(ms)),
    }
    .min(limit);
    let now = strand_storage::now_ms();
    let outcomes = futures::future::join_all(req.batches.iter().map(|b| async move {
        match tokio::time::timeout(timeout, produce_one(state, b, acks, now)).await {
            Ok(r) => r,
            Err(_) => Err(BrokerError::Timeout {
                what: "the acknowledgement level",
                waited_ms: timeout.as_millis() as u64,
            }),
        }
    }))
    .await;
    let results = req
        .batches
        .iter()
        .zip(outcomes)
        .map(|(b, outcome)| {
            let mut r = PartitionProduceResult {
                topic: b.topic.clone(),
                partition: b.partition,
                ..Default::default()
            };
            match outcome {
                Ok(info) => {
                    r.base_offset = info.base_offset;
                    r.log_append_time_ms = info.append_time_ms;
                    let m = &state.metrics;
                    crate::metrics::Metrics::add(&m.produce_requests, &b.topic, 1);
                    if acks != Acks::None {
                        crate::metrics::Metrics::add(
                            &m.produce_records,
                            &b.topic,
                            info.last_offset - info.base_offset + 1,
                        );
                    }
                    crate::metrics::Metrics::add(&m.produce_bytes, &b.topic, b.batch.len() as u64);
                }
                Err(e) => {
                    tracing::debug!(topic = %b.topic, partition = b.partition, error = %e, "produce refused");
                    r.error = Some(e.to_proto());
                }
            }
            r
        })
        .collect();
    Ok(ProduceResponse { results })
}
