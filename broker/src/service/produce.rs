//! Produce: append each batch to its partition, then wait for the
//! acknowledgement level. One result per batch, so one bad partition does not
//! fail the others.

use std::time::Duration;

use strand_proto::v1::{Acks, PartitionBatch, PartitionProduceResult, ProduceRequest, ProduceResponse};
use strand_storage::{AppendInfo, BatchRef, StorageError};

use crate::error::{BrokerError, Result};
use crate::partition::Partition;
use crate::state::BrokerState;

fn append_one(state: &BrokerState, b: &PartitionBatch, now_ms: i64) -> Result<(std::sync::Arc<Partition>, AppendInfo)> {
    let partition = state.partition(&b.topic, b.partition)?;
    let batch = BatchRef::validate(&b.batch).map_err(|source| StorageError::InvalidBatch { source })?;
    if batch.is_control() {
        return Err(BrokerError::InvalidRequest {
            reason: "control batches are written by the broker, not by producers".into(),
        });
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
    let info = partition.append(&b.batch)?;
    Ok((partition, info))
}

/// Handles one produce request.
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
    let mut results = Vec::with_capacity(req.batches.len());
    let mut waits = Vec::new();
    for (i, b) in req.batches.iter().enumerate() {
        let mut r = PartitionProduceResult {
            topic: b.topic.clone(),
            partition: b.partition,
            ..Default::default()
        };
        match append_one(state, b, now) {
            Ok((partition, info)) => {
                r.base_offset = info.base_offset;
                r.log_append_time_ms = info.append_time_ms;
                if acks == Acks::All {
                    waits.push((i, partition, info.last_offset + 1));
                }
            }
            Err(e) => {
                tracing::debug!(topic = %b.topic, partition = b.partition, error = %e, "produce refused");
                r.error = Some(e.to_proto());
            }
        }
        results.push(r);
    }
    let outcomes = futures::future::join_all(
        waits
            .into_iter()
            .map(|(i, p, end)| async move { (i, p.wait_durable(end, timeout).await) }),
    )
    .await;
    for (i, outcome) in outcomes {
        if let Err(e) = outcome {
            results[i].error = Some(e.to_proto());
        }
    }
    Ok(ProduceResponse { results })
}
