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
//! requested offset, control batches skipped, within a byte budget counted
//! on the decoded records (compressed batches grow when decoded), so an
//! answer stays under the message limit. Keys, values and header values
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

use crate::controller::TopicState;
use crate::data_path::produce::{ProduceBatch, writable_topic};
use crate::error::{BrokerError, Result};
use crate::node::Node;
use crate::topic::{TopicUuid, requested_topic_id};

/// Where one request record went.
#[derive(Clone, Copy, Debug)]
pub(super) enum Placement {
    /// Record `position` of built batch `batch`.
    InBatch { batch: usize, position: u32 },
    /// Its topic entry was refused before any batch was built
    /// (`topic_errors`).
    Refused { topic: usize },
}

/// The batches built from a request's protobuf records.
#[derive(Debug, Default)]
pub(super) struct BuiltRecords {
    /// One per topic and partition, in order of first appearance.
    pub batches: Vec<ProduceBatch>,
    /// One per request record, in request order.
    pub placements: Vec<Placement>,
    /// Per request topic entry: why none of its records was built.
    pub topic_errors: Vec<Option<BrokerError>>,
}

/// The partition keyless records of one topic go to in this request: one
/// this broker leads (where they can be stored without a hop), else any;
/// round-robin across requests.
fn keyless_partition(node: &Node, topic: &TopicState, round_robin: &AtomicU32) -> u32 {
    let turn = round_robin.fetch_add(1, Ordering::Relaxed);
    let me = node.id();
    let led: Vec<u32> = node
        .hosted(topic)
        .iter()
        .enumerate()
        .filter(|(_, local)| local.as_ref().is_some_and(|p| p.leader() == Some(me)))
        .map(|(p, _)| p as u32)
        .collect();
    match led.len() {
        0 => turn % topic.meta.partitions.max(1),
        n => led[turn as usize % n],
    }
}

/// Builds one batch per topic and partition from `topics` (entries naming
/// the same topic are one topic). `round_robin` spreads keyless records
/// across requests.
pub(super) fn build_batches(node: &Node, topics: Vec<pb::TopicRecords>, round_robin: &AtomicU32) -> BuiltRecords {
    let now = strand_storage::now_ms();
    let mut built = BuiltRecords::default();
    // Per topic name: its id, partitions and keyless choice.
    let mut resolved: HashMap<&str, (TopicUuid, u32, u32)> = HashMap::new();
    // Records per (topic, partition) batch, in request order.
    let mut pending: Vec<(usize, u32, Vec<&pb::Record>)> = Vec::new();
    let mut slot: HashMap<(&str, u32), usize> = HashMap::new();
    let mut placements = Vec::new();
    for (t, entry) in topics.iter().enumerate() {
        let found = writable_topic(&entry.topic)
            .and_then(|()| requested_topic_id(&entry.topic, &entry.topic_id))
            .and_then(|requested| {
                let r = match resolved.get(entry.topic.as_str()) {
                    Some(r) => *r,
                    None => {
                        let state = node.topic(&entry.topic)?;
                        let keyless = keyless_partition(node, &state, round_robin);
                        (state.uuid(), state.meta.partitions, keyless)
                    }
                };
                match requested {
                    Some(want) if want != r.0 => Err(BrokerError::UnknownTopicId {
                        topic: entry.topic.clone(),
                        topic_id: want.to_string(),
                    }),
                    _ => Ok(r),
                }
            });
        let (_, partitions, keyless) = match found {
            Ok(r) => {
                resolved.entry(entry.topic.as_str()).or_insert(r);
                built.topic_errors.push(None);
                r
            }
            Err(e) => {
                placements.extend(entry.records.iter().map(|_| Placement::Refused { topic: t }));
                built.topic_errors.push(Some(e));
                continue;
            }
        };
        for r in &entry.records {
            let partition = match (r.partition, &r.key) {
                (Some(p), _) => p,
                (None, Some(key)) => partition_for_key(key, partitions),
                (None, None) => keyless,
            };
            let i = *slot.entry((entry.topic.as_str(), partition)).or_insert_with(|| {
                pending.push((t, partition, Vec::new()));
                pending.len() - 1
            });
            placements.push(Placement::InBatch {
                batch: i,
                position: pending[i].2.len() as u32,
            });
            pending[i].2.push(r);
        }
    }
    let mut builder = BatchBuilder::new(Compression::None);
    let mut headers: Vec<Header<'_>> = Vec::new();
    for (t, partition, records) in &pending {
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
        // Never empty: every pending batch got at least one record.
        let batch = builder.build().map(Bytes::from).unwrap_or_default();
        let topic = &topics[*t].topic;
        // The id resolved here: a topic deleted and created again before the
        // batch is proposed is refused (UNKNOWN_TOPIC_ID), not written to.
        built.batches.push(ProduceBatch {
            topic: topic.clone(),
            topic_id: resolved.get(topic.as_str()).map(|r| r.0),
            partition: *partition,
            batch,
        });
    }
    built.placements = placements;
    built
}

/// Decoded records of one answer, and where the next answer starts.
#[derive(Debug, Default)]
pub(super) struct Decoded {
    /// Records at or after the requested offset, in offset order.
    pub records: Vec<pb::Record>,
    /// The offset after the last record (or control batch) included.
    pub next_offset: Offset,
    /// Whether every record of the input was included (false: the budget
    /// ran out; ask again from `next_offset`).
    pub complete: bool,
}

/// Roughly the encoded size of a record in an answer.
fn answer_size(r: &strand_storage::RecordView<'_>) -> usize {
    let headers: usize = r
        .headers()
        .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len) + 8)
        .sum();
    r.key.map_or(0, <[u8]>::len) + r.value.map_or(0, <[u8]>::len) + headers + 24
}

/// The records of `records` (whole stored batches) at or after `from`, as
/// protobuf, within about `budget` bytes of answer (at least one record; a
/// single record larger than `max_record` is refused, since no answer could
/// carry it).
pub(super) fn decode_batches(records: &Bytes, from: Offset, budget: usize, max_record: usize) -> Result<Decoded> {
    let mut out = Decoded {
        next_offset: from,
        complete: true,
        ..Default::default()
    };
    let mut used = 0usize;
    let mut rest: &[u8] = records;
    while !rest.is_empty() {
        let len = framed_len(rest)
            .filter(|&l| l <= rest.len())
            .ok_or(undecodable(BatchError::TooShort { len: rest.len() }))?;
        let (one, tail) = rest.split_at(len);
        rest = tail;
        let batch = BatchRef::trusted(one).map_err(undecodable)?;
        if batch.is_control() || batch.next_offset() <= from {
            out.next_offset = out.next_offset.max(batch.next_offset());
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
            let size = answer_size(&r);
            if size > max_record {
                return Err(BrokerError::Storage(strand_storage::StorageError::RecordTooLarge {
                    size,
                    max: u32::try_from(max_record).unwrap_or(u32::MAX),
                }));
            }
            if !out.records.is_empty() && used + size > budget {
                out.complete = false;
                return Ok(out);
            }
            used += size;
            out.records.push(pb::Record {
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
            out.next_offset = r.offset.next();
        }
        out.next_offset = out.next_offset.max(batch.next_offset());
    }
    Ok(out)
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
