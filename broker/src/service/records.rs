//! Protobuf-native records (`strand.v1.Record`) and the batch format, both
//! ways, for clients generated from the .proto alone.
//!
//! Producing: the broker chooses each record's partition exactly as the Rust
//! client does (the explicit partition, else Kafka's murmur2 of the key, else
//! one partition per request and topic, round-robin across requests), builds
//! one uncompressed batch per topic and partition in one pass, and the batch
//! then takes the very path of a producer's batch (`data_path::produce`):
//! the same validation, the same offsets. A record's offset is its batch's
//! base offset plus its position in the batch.
//!
//! Fetching: the stored batches are decoded into records at or after the
//! requested offset, control batches skipped. Keys, values and header values
//! of uncompressed batches are slices of the fetched bytes (no copy);
//! compressed batches are decompressed once each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use strand_proto::partitioner::partition_for_key;
use strand_proto::v1 as pb;
use strand_storage::{
    BatchBuilder, BatchError, BatchRef, Compression, DecodedRecords, Header, NewRecord, Offset, framed_len,
};

use crate::data_path::produce::{ProduceBatch, writable_topic};
use crate::error::{BrokerError, Result};
use crate::node::Node;
use crate::topic::requested_topic_id;

/// Where one request record went.
#[derive(Clone, Copy, Debug)]
pub(super) enum Placement {
    /// Record `position` of built batch `batch`.
    InBatch { batch: usize, position: u32 },
    /// Its topic was refused before any batch was built (`topic_errors`).
    Refused { topic: usize },
}

/// The batches built from a request's protobuf records.
#[derive(Debug, Default)]
pub(super) struct BuiltRecords {
    /// One per topic and partition, in order of first appearance.
    pub batches: Vec<ProduceBatch>,
    /// One per request record, in request order.
    pub placements: Vec<Placement>,
    /// Per request topic: why none of its records was built.
    pub topic_errors: Vec<Option<BrokerError>>,
}

/// Builds one batch per topic and partition from `topics`. `round_robin`
/// spreads keyless records across requests.
pub(super) fn build_batches(node: &Node, topics: Vec<pb::TopicRecords>, round_robin: &AtomicU32) -> BuiltRecords {
    let now = strand_storage::now_ms();
    let mut built = BuiltRecords::default();
    let mut builder = BatchBuilder::new(Compression::None);
    for (t, topic) in topics.into_iter().enumerate() {
        let (topic_id, partitions) = match writable_topic(&topic.topic)
            .and_then(|()| requested_topic_id(&topic.topic, &topic.topic_id))
            .and_then(|id| node.topic(&topic.topic).map(|s| (id, s.meta.partitions)))
        {
            Ok(found) => found,
            Err(e) => {
                built
                    .placements
                    .extend(topic.records.iter().map(|_| Placement::Refused { topic: t }));
                built.topic_errors.push(Some(e));
                continue;
            }
        };
        built.topic_errors.push(None);
        let keyless = round_robin.fetch_add(1, Ordering::Relaxed) % partitions.max(1);
        let target = |r: &pb::Record| match (r.partition, &r.key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => keyless,
        };
        // Records of one partition keep their request order in its batch.
        let mut by_partition: Vec<(u32, Vec<&pb::Record>)> = Vec::new();
        let mut slot: HashMap<u32, usize> = HashMap::new();
        let mut positions = Vec::with_capacity(topic.records.len());
        for r in &topic.records {
            let p = target(r);
            let i = *slot.entry(p).or_insert_with(|| {
                by_partition.push((p, Vec::new()));
                by_partition.len() - 1
            });
            positions.push((i, by_partition[i].1.len() as u32));
            by_partition[i].1.push(r);
        }
        let first_batch = built.batches.len();
        let mut headers: Vec<Header<'_>> = Vec::new();
        for (partition, records) in &by_partition {
            for r in records {
                headers.clear();
                headers.extend(r.headers.iter().map(|h| Header {
                    key: &h.key,
                    value: h.value.as_deref(),
                }));
                builder.push(&NewRecord {
                    timestamp_ms: if r.timestamp_ms == 0 { now } else { r.timestamp_ms },
                    key: r.key.as_deref(),
                    value: r.value.as_deref(),
                    headers: &headers,
                });
            }
            // Never empty: every partition here got at least one record.
            let batch = builder.build().map(Bytes::from).unwrap_or_default();
            built.batches.push(ProduceBatch {
                topic: topic.topic.clone(),
                topic_id,
                partition: *partition,
                batch,
            });
        }
        built
            .placements
            .extend(positions.into_iter().map(|(i, position)| Placement::InBatch {
                batch: first_batch + i,
                position,
            }));
    }
    built
}

/// The records of `records` (whole stored batches) at or after `from`, as
/// protobuf, and the offset after the last batch.
pub(super) fn decode_batches(records: &Bytes, from: Offset) -> Result<(Vec<pb::Record>, Offset)> {
    let mut out = Vec::new();
    let mut next = from;
    let mut rest: &[u8] = records;
    while !rest.is_empty() {
        let len = framed_len(rest)
            .filter(|&l| l <= rest.len())
            .ok_or(undecodable(BatchError::TooShort { len: rest.len() }))?;
        let (one, tail) = rest.split_at(len);
        rest = tail;
        let batch = BatchRef::trusted(one).map_err(undecodable)?;
        next = next.max(batch.next_offset());
        if batch.is_control() || batch.next_offset() <= from {
            continue;
        }
        let decoded = DecodedRecords::new(&batch).map_err(undecodable)?;
        let borrowed = batch.compression() == Compression::None;
        // Uncompressed: slices of the fetched bytes. Compressed: copies out
        // of the one decompressed buffer.
        let bytes_of = |b: &[u8]| {
            if borrowed {
                records.slice_ref(b)
            } else {
                Bytes::copy_from_slice(b)
            }
        };
        for r in decoded.iter() {
            let r = r.map_err(undecodable)?;
            if r.offset < from {
                continue;
            }
            out.push(pb::Record {
                offset: r.offset.get(),
                timestamp_ms: r.timestamp_ms,
                key: r.key.map(bytes_of),
                value: r.value.map(bytes_of),
                headers: r
                    .headers()
                    .map(|h| pb::RecordHeader {
                        key: h.key.to_string(),
                        value: h.value.map(bytes_of),
                    })
                    .collect(),
                partition: None,
            });
        }
    }
    Ok((out, next))
}

/// The offset after the last of the whole batches in `records` (`from` when
/// there are none).
pub(super) fn next_offset(records: &[u8], from: Offset) -> Offset {
    let mut next = from;
    let mut rest = records;
    while let Some(len) = framed_len(rest).filter(|&l| l <= rest.len() && l > 0) {
        if let Ok(b) = BatchRef::trusted(&rest[..len]) {
            next = next.max(b.next_offset());
        }
        rest = &rest[len..];
    }
    next
}

fn undecodable(source: BatchError) -> BrokerError {
    BrokerError::UndecodableRecords { source }
}
