//! What the coordinator writes to `__consumer_offsets`, and how a new
//! coordinator rebuilds its groups from it.
//!
//! One record per fact, its value JSON, its key the group id (so the topic
//! reads well with `strand consume`). A group lives in partition
//! `fnv1a(group) % partitions` of the topic.
//!
//! Invariants: the coordinator serializes its writes per partition and
//! checks them before writing, so replaying the records in log order gives
//! the state it acknowledged; a committed offset only decreases through an
//! explicit reset record. A committed offset belongs to the topic id it was
//! committed for: an offset of a deleted topic is never handed to a reader
//! of a topic created later under the same name, and the coordinator writes
//! a [`GroupRecord::TopicDeleted`] tombstone for it once it sees the delete.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use strand_storage::{BatchBuilder, Compression, DecodedRecords, NewRecord, Offset, RecordBatch, batches};

use super::share::state::{ShareOp, SharePartition};
use crate::error::{BrokerError, Result};
use crate::topic::TopicUuid;

/// The internal topic holding group offsets and epochs.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The offsets partition of a group.
pub fn partition_for(group: &str, partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in group.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(partitions.max(1))) as u32
}

/// A committed offset (the next offset to consume), the id of the topic
/// it was committed for (`None`: committed before topics had ids) and the
/// committer's free text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The next offset to consume.
    pub offset: Offset,
    /// The topic's id.
    pub topic_id: Option<TopicUuid>,
    /// Free text stored with the offset (at most [`MAX_COMMIT_METADATA`]
    /// bytes).
    pub metadata: String,
}

/// Largest metadata a commit may store with an offset (Kafka's
/// `offset.metadata.max.bytes`).
pub const MAX_COMMIT_METADATA: usize = 4096;

impl Committed {
    /// Whether `self` and `other` were committed for the same topic (an
    /// offset without an id could be either).
    pub fn same_topic(&self, other: &Committed) -> bool {
        self.topic_id.is_none() || other.topic_id.is_none() || self.topic_id == other.topic_id
    }
}

/// One stored fact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GroupRecord {
    /// A committed offset (the next offset to consume).
    Offset {
        /// Group id.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// Offset.
        offset: Offset,
        /// Written by an operator's reset (may go backwards).
        #[serde(default)]
        reset: bool,
        /// The id of the topic it was committed for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic_id: Option<TopicUuid>,
        /// The committer's free text.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        metadata: String,
    },
    /// The topic `topic_id` was deleted: the group's offsets for it (and
    /// those without an id, which can only be older) are gone.
    TopicDeleted {
        /// Group id.
        group: String,
        /// Topic name.
        topic: String,
        /// The deleted topic's id.
        topic_id: TopicUuid,
    },
    /// The group's epoch and how long its members may live without a
    /// heartbeat (a new coordinator waits that long before assigning).
    Epoch {
        /// Group id.
        group: String,
        /// Group epoch.
        epoch: i32,
        /// Largest member session timeout (ms).
        session_timeout_ms: u64,
        /// Members at that epoch.
        members: u32,
    },
    /// The consumer group was deleted: forget its offsets and epochs
    /// before (not the state of a share group of the same id).
    Deleted {
        /// Group id.
        group: String,
    },
    /// A change of a share group's state of one topic partition
    /// ([`crate::groups::share`]).
    Share {
        /// Group id.
        group: String,
        /// Topic.
        topic: String,
        /// The topic's id: a change for another id starts the state over.
        topic_id: TopicUuid,
        /// Partition.
        partition: u32,
        /// The change.
        op: ShareOp,
    },
}

impl GroupRecord {
    /// The group it belongs to.
    pub fn group(&self) -> &str {
        match self {
            GroupRecord::Offset { group, .. }
            | GroupRecord::Epoch { group, .. }
            | GroupRecord::TopicDeleted { group, .. }
            | GroupRecord::Deleted { group }
            | GroupRecord::Share { group, .. } => group,
        }
    }
}

fn invalid(source: strand_storage::BatchError) -> BrokerError {
    strand_storage::StorageError::InvalidBatch { source }.into()
}

/// Encodes records as one batch.
/// `records` as batches of at most about `max_bytes` each, in order (a
/// commit of tens of thousands of offsets does not fit one batch; each
/// batch is written on its own, so a failure part way leaves the earlier
/// ones committed — at-least-once, as every commit is).
pub fn encode_all(records: &[GroupRecord], max_bytes: usize) -> Result<Vec<RecordBatch>> {
    let now = strand_storage::now_ms();
    // Half the limit for keys and values leaves room for per-record framing.
    let budget = (max_bytes / 2).max(1);
    let finish = |mut b: BatchBuilder| -> Result<RecordBatch> {
        let bytes = b.build().map_err(invalid)?;
        RecordBatch::validate(Bytes::from(bytes)).map_err(invalid)
    };
    let mut out = Vec::new();
    let mut b = BatchBuilder::new(Compression::None);
    let (mut size, mut n) = (0, 0);
    for r in records {
        let v = serde_json::to_vec(r).map_err(|e| BrokerError::InvalidRequest {
            reason: format!("cannot encode group record: {e}"),
        })?;
        let len = v.len() + r.group().len();
        if n > 0 && size + len > budget {
            out.push(finish(std::mem::replace(&mut b, BatchBuilder::new(Compression::None)))?);
            (size, n) = (0, 0);
        }
        b.push(&NewRecord {
            timestamp_ms: now,
            key: Some(r.group().as_bytes()),
            value: Some(&v),
            headers: &[],
        });
        size += len;
        n += 1;
    }
    if n > 0 || out.is_empty() {
        out.push(finish(b)?);
    }
    Ok(out)
}

/// `records` as one batch.
#[cfg(test)]
pub fn encode(records: &[GroupRecord]) -> Result<RecordBatch> {
    let now = strand_storage::now_ms();
    let values = records
        .iter()
        .map(|r| {
            serde_json::to_vec(r).map_err(|e| BrokerError::InvalidRequest {
                reason: format!("cannot encode group record: {e}"),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut b = BatchBuilder::new(Compression::None);
    for (r, v) in records.iter().zip(&values) {
        b.push(&NewRecord {
            timestamp_ms: now,
            key: Some(r.group().as_bytes()),
            value: Some(v),
            headers: &[],
        });
    }
    let bytes = b.build().map_err(invalid)?;
    RecordBatch::validate(Bytes::from(bytes)).map_err(invalid)
}

/// What a coordinator knows of a group after reading the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredGroup {
    /// Committed offsets.
    pub offsets: BTreeMap<(String, u32), Committed>,
    /// Last epoch written.
    pub epoch: i32,
    /// Session timeout of the last epoch (ms).
    pub session_timeout_ms: u64,
    /// Members at the last epoch.
    pub members: u32,
    /// Share-group state per topic partition.
    pub shares: BTreeMap<(String, u32), StoredShare>,
}

/// A share group's state of one topic partition, and the topic id it
/// belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredShare {
    /// The topic's id.
    pub topic_id: TopicUuid,
    /// The state.
    pub state: SharePartition,
}

/// Folds stored records into groups, in log order.
pub fn fold(groups: &mut BTreeMap<String, StoredGroup>, record: GroupRecord) {
    match record {
        GroupRecord::Offset {
            group,
            topic,
            partition,
            offset,
            topic_id,
            metadata,
            ..
        } => {
            groups.entry(group).or_default().offsets.insert(
                (topic, partition),
                Committed {
                    offset,
                    topic_id,
                    metadata,
                },
            );
        }
        GroupRecord::TopicDeleted { group, topic, topic_id } => {
            if let Some(g) = groups.get_mut(&group) {
                forget_topic(&mut g.offsets, &topic, topic_id);
            }
        }
        GroupRecord::Epoch {
            group,
            epoch,
            session_timeout_ms,
            members,
        } => {
            let g = groups.entry(group).or_default();
            g.epoch = g.epoch.max(epoch);
            g.session_timeout_ms = session_timeout_ms;
            g.members = members;
        }
        GroupRecord::Deleted { group } => {
            // A consumer group's delete: a share group of the same id keeps
            // its state (memory does the same).
            let shares = groups.remove(&group).map(|g| g.shares).unwrap_or_default();
            if !shares.is_empty() {
                groups.insert(
                    group,
                    StoredGroup {
                        shares,
                        ..StoredGroup::default()
                    },
                );
            }
        }
        GroupRecord::Share {
            group,
            topic,
            topic_id,
            partition,
            op,
        } => {
            let shares = &mut groups.entry(group).or_default().shares;
            let s = shares.entry((topic, partition)).or_insert_with(|| StoredShare {
                topic_id,
                state: SharePartition::default(),
            });
            if s.topic_id != topic_id {
                // The topic was deleted and created again.
                *s = StoredShare {
                    topic_id,
                    state: SharePartition::default(),
                };
            }
            s.state.apply(&op);
        }
    }
}

/// Removes the offsets of `topic` committed for the deleted id `topic_id`
/// (or without an id).
pub fn forget_topic(offsets: &mut BTreeMap<(String, u32), Committed>, topic: &str, topic_id: TopicUuid) {
    offsets.retain(|(t, _), c| t != topic || c.topic_id.is_some_and(|id| id != topic_id));
}

/// Folds every record of a buffer of whole batches; a record that does not
/// decode is skipped with a warning (it cannot be repaired by stopping).
pub fn fold_batches(groups: &mut BTreeMap<String, StoredGroup>, buf: &[u8]) -> Result<Offset> {
    let mut next = None;
    for batch in batches(buf) {
        let batch = batch.map_err(invalid)?;
        next = Some(batch.next_offset());
        if batch.is_control() {
            continue;
        }
        let decoded = DecodedRecords::new(&batch).map_err(invalid)?;
        for r in decoded.iter() {
            let r = r.map_err(invalid)?;
            match r.value.map(serde_json::from_slice::<GroupRecord>) {
                Some(Ok(rec)) => fold(groups, rec),
                other => tracing::warn!(offset = %r.offset, ?other, "skipping an unreadable group record"),
            }
        }
    }
    Ok(next.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_stored_before_metadata_existed_still_read_and_new_ones_keep_it() {
        let old = r#"{"type":"offset","group":"g","topic":"t","partition":0,"offset":7,"reset":false}"#;
        let r: GroupRecord = serde_json::from_str(old).expect("an old record reads");
        let GroupRecord::Offset { offset, metadata, .. } = &r else {
            panic!("not an offset: {r:?}");
        };
        assert_eq!((*offset, metadata.as_str()), (Offset(7), ""));
        let plain = serde_json::to_string(&r).expect("encode");
        assert!(!plain.contains("metadata"), "empty metadata is not written: {plain}");

        let with = GroupRecord::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
            offset: Offset(8),
            reset: false,
            topic_id: None,
            metadata: "worker-3".into(),
        };
        let back: GroupRecord = serde_json::from_str(&serde_json::to_string(&with).expect("encode")).expect("decode");
        assert_eq!(back, with);
        let mut groups = BTreeMap::new();
        fold(&mut groups, back);
        assert_eq!(groups["g"].offsets[&("t".to_string(), 0)].metadata, "worker-3");
    }

    fn offset(group: &str, p: u32, offset: u64, reset: bool) -> GroupRecord {
        GroupRecord::Offset {
            group: group.into(),
            topic: "t".into(),
            partition: p,
            offset: Offset(offset),
            reset,
            topic_id: None,
            metadata: String::new(),
        }
    }

    #[test]
    fn records_round_trip_through_a_batch_and_fold_in_order() {
        let records = vec![
            offset("a", 0, 5, false),
            GroupRecord::Epoch {
                group: "a".into(),
                epoch: 3,
                session_timeout_ms: 10_000,
                members: 2,
            },
            offset("a", 0, 9, false),
            offset("b", 1, 4, false),
            GroupRecord::Deleted { group: "b".into() },
            offset("a", 0, 2, true),
        ];
        let batch = encode(&records).unwrap();
        let stamp = strand_storage::Stamp {
            term: strand_storage::Term(1),
            raft_index: strand_storage::RaftIndex(1),
            append_time_ms: 0,
        };
        let batch = batch.stamp(Offset(0), &stamp);
        let mut groups = BTreeMap::new();
        assert_eq!(
            fold_batches(&mut groups, batch.bytes()).unwrap(),
            Offset(records.len() as u64)
        );
        assert_eq!(groups.len(), 1, "b was deleted");
        let a = &groups["a"];
        assert_eq!(
            a.offsets[&("t".to_string(), 0)].offset,
            Offset(2),
            "the reset is the last word"
        );
        assert_eq!((a.epoch, a.session_timeout_ms, a.members), (3, 10_000, 2));
    }

    #[test]
    fn a_commit_of_twenty_thousand_offsets_splits_into_batches_under_the_limit() {
        let records: Vec<GroupRecord> = (0..20_000)
            .map(|p| offset("consumers", p, u64::from(p), false))
            .collect();
        let max = 1 << 20;
        let batches = encode_all(&records, max).unwrap();
        assert!(batches.len() > 1, "one batch would be over 1 MiB");
        let mut groups = BTreeMap::new();
        let mut at = Offset(0);
        for (i, b) in batches.iter().enumerate() {
            assert!(b.len() <= max, "batch {i}: {} bytes", b.len());
            let stamp = strand_storage::Stamp {
                term: strand_storage::Term(1),
                raft_index: strand_storage::RaftIndex(i as u64 + 1),
                append_time_ms: 0,
            };
            let stamped = b.clone().stamp(at, &stamp);
            at = fold_batches(&mut groups, stamped.bytes()).unwrap();
        }
        assert_eq!(at, Offset(20_000), "every record, once, in order");
        assert_eq!(groups["consumers"].offsets.len(), 20_000);
        assert_eq!(encode_all(&records[..3], max).unwrap().len(), 1);
    }

    #[test]
    fn a_share_groups_state_is_rebuilt_from_its_records_and_outlives_a_consumer_group_delete() {
        use crate::groups::share::state::{AckEntry, Outcome};
        let (id, recreated) = (TopicUuid::random(), TopicUuid::random());
        let share = |topic_id, op| GroupRecord::Share {
            group: "g".into(),
            topic: "t".into(),
            topic_id,
            partition: 0,
            op,
        };
        let mut groups = BTreeMap::new();
        for r in [
            share(id, ShareOp::Init { start: 5 }),
            share(
                id,
                ShareOp::Acquire {
                    member: "m".into(),
                    deadline_ms: 100,
                    ranges: vec![(5, 9)],
                    delayed: vec![],
                    end: 10,
                },
            ),
            offset("g", 0, 3, false),
            share(
                id,
                ShareOp::Ack {
                    member: "m".into(),
                    entries: vec![AckEntry {
                        first: 5,
                        last: 6,
                        outcome: Outcome::Accepted,
                    }],
                },
            ),
            // `strand group delete g` of the consumer group named g.
            GroupRecord::Deleted { group: "g".into() },
        ] {
            fold(
                &mut groups,
                serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap(),
            );
        }
        let g = &groups["g"];
        assert!(g.offsets.is_empty(), "the consumer group's offsets are gone");
        let s = &g.shares[&("t".to_string(), 0)];
        assert_eq!((s.topic_id, s.state.start, s.state.end), (id, 7, 10));
        assert_eq!(s.state.records[&7].delivery_count, 1);
        // A record for the recreated topic starts the state over.
        fold(&mut groups, share(recreated, ShareOp::Init { start: 0 }));
        let s = &groups["g"].shares[&("t".to_string(), 0)];
        assert_eq!((s.topic_id, s.state.start, s.state.records.len()), (recreated, 0, 0));
    }

    #[test]
    fn groups_spread_over_partitions_stably() {
        assert_eq!(partition_for("orders", 8), partition_for("orders", 8));
        let used: std::collections::BTreeSet<u32> = (0..100).map(|i| partition_for(&format!("g{i}"), 8)).collect();
        assert_eq!(used.len(), 8);
        assert_eq!(partition_for("x", 0), 0);
    }

    #[test]
    fn a_deleted_topics_offsets_are_forgotten_and_a_new_topics_are_kept() {
        let (old, new) = (TopicUuid::random(), TopicUuid::random());
        let commit = |p: u32, offset: u64, topic_id: Option<TopicUuid>| GroupRecord::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: p,
            offset: Offset(offset),
            reset: false,
            topic_id,
            metadata: String::new(),
        };
        let mut groups = BTreeMap::new();
        for r in [
            commit(0, 10, Some(old)),
            commit(1, 7, None),
            // The new topic's first commit lands before the tombstone.
            commit(2, 3, Some(new)),
            GroupRecord::TopicDeleted {
                group: "g".into(),
                topic: "t".into(),
                topic_id: old,
            },
        ] {
            let json = serde_json::to_vec(&r).unwrap();
            fold(&mut groups, serde_json::from_slice(&json).unwrap());
        }
        let kept: Vec<_> = groups["g"]
            .offsets
            .iter()
            .map(|(k, c)| (k.1, c.offset.0, c.topic_id))
            .collect();
        assert_eq!(kept, vec![(2, 3, Some(new))]);
    }
}
