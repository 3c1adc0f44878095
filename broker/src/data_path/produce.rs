//! Produce: check each batch once, propose it to its partition's Raft group
//! (the leader stamps offsets) and wait for the acknowledgement level. One
//! result per batch, so one bad partition does not fail the others.

use std::time::Duration;

use bytes::Bytes;
use strand_cluster::Ack;
use strand_storage::{AppendInfo, BatchRef, Offset, RecordBatch, RecordRules, StorageError};
use tracing::Instrument;

use crate::error::{BrokerError, Result};
use crate::node::Node;
use crate::topic::TopicUuid;

/// When the producer wants its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// Once stored and fsynced on a majority of replicas.
    All,
    /// Once stored and fsynced on the leader.
    Leader,
    /// At once; the batch is proposed in the background.
    None,
}

/// One batch of a produce request.
#[derive(Clone, Debug)]
pub struct ProduceBatch {
    /// Topic.
    pub topic: String,
    /// The topic's id, if the producer named it.
    pub topic_id: Option<TopicUuid>,
    /// Partition.
    pub partition: u32,
    /// The producer's batch, unchecked.
    pub batch: Bytes,
}

/// Checks one producer batch against the partition and topic, once: not a
/// control batch, `max.message.bytes`, then framing, CRC and every record in
/// one pass (`RecordBatch::validate_producer`: a batch that a consumer could
/// not read, or would read wrongly, is `CORRUPT_BATCH` naming what is wrong),
/// and its max timestamp not too far ahead. The result vouches for the bytes
/// from here on.
fn check_batch(node: &Node, b: &ProduceBatch, now_ms: i64) -> Result<RecordBatch> {
    if BatchRef::trusted(&b.batch).is_ok_and(|v| v.is_control()) {
        return Err(BrokerError::InvalidRequest {
            reason: "control batches are written by the broker, not by producers".into(),
        });
    }
    let max = node
        .with_topic(&b.topic, |t| {
            t.meta
                .configs
                .get("max.message.bytes")
                .and_then(|v| v.parse::<u32>().ok())
        })?
        .unwrap_or(node.config().log.max_batch_bytes);
    if b.batch.len() > max as usize {
        return Err(StorageError::RecordTooLarge {
            size: b.batch.len(),
            max,
        }
        .into());
    }
    let batch = RecordBatch::validate_producer(b.batch.clone(), &RecordRules::default())
        .map_err(|source| StorageError::InvalidBatch { source })?;
    let view = batch.view();
    let max_future = node.config().limits.max_future_timestamp_ms;
    let ts = view.max_timestamp_ms();
    if ts > now_ms.saturating_add(max_future as i64) {
        return Err(BrokerError::InvalidTimestamp {
            timestamp_ms: ts,
            now_ms,
            max_future_ms: max_future,
        });
    }
    Ok(batch)
}

/// Refuses producing to an internal topic (`__…`), whether or not it
/// exists yet.
pub fn writable_topic(topic: &str) -> Result<()> {
    if topic.starts_with("__") {
        return Err(BrokerError::InvalidTopic {
            name: topic.to_string(),
            reason: "internal topics are written by the broker only",
        });
    }
    Ok(())
}

/// Proposes one batch to its partition's leader (here) and resolves at the
/// acknowledgement level.
async fn produce_one(node: &Node, b: &ProduceBatch, acks: Acks, now_ms: i64) -> Result<AppendInfo> {
    writable_topic(&b.topic)?;
    let partition = node.partition_as(&b.topic, b.topic_id, b.partition)?;
    let batch = check_batch(node, b, now_ms)?;
    let ack = match acks {
        Acks::All => Ack::All,
        Acks::Leader | Acks::None => Ack::Leader,
    };
    if acks == Acks::None {
        // Fire and forget: the proposal goes ahead without us.
        let (raft, group) = (node.raft().clone(), partition.raft_group());
        tokio::spawn(async move { raft.propose(group, batch, ack).await });
        return Ok(AppendInfo {
            base_offset: Offset::ZERO,
            last_offset: Offset::ZERO,
            append_time_ms: now_ms,
        });
    }
    node.raft()
        .propose(partition.raft_group(), batch, ack)
        .await
        .map_err(|e| node.not_leader(&b.topic, b.partition, e))
}

/// Produces every batch concurrently, each answered on its own within
/// `timeout`.
pub async fn produce(node: &Node, batches: &[ProduceBatch], acks: Acks, timeout: Duration) -> Vec<Result<AppendInfo>> {
    let now = strand_storage::now_ms();
    futures::future::join_all(batches.iter().map(|b| {
        let span = tracing::debug_span!("produce", node = %node.id(), topic = %b.topic, partition = b.partition);
        async move {
            match tokio::time::timeout(timeout, produce_one(node, b, acks, now)).await {
                Ok(r) => r,
                Err(_) => Err(BrokerError::Timeout {
                    what: "the acknowledgement level",
                    waited_ms: timeout.as_millis() as u64,
                }),
            }
        }
        .instrument(span)
    }))
    .await
}
