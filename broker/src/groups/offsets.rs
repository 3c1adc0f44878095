//! Committed offsets: commits by members (or by a consumer outside any
//! membership), fetches, an operator's resets, and deleting a group.
//!
//! Each write is planned from the shard's memory ([`plan_commit`],
//! [`plan_reset`], [`check_delete`]: pure, tested below), written to the
//! offsets partition with `acks=all`, and only then applied to memory.
//! Offsets never go backwards except through a reset.
//!
//! Offsets belong to topic ids: a commit is checked against the topic's id
//! ([`GroupCoordinator::resolve`]: `UNKNOWN_TOPIC_ID` when the committer
//! names another) and stored with it; offsets of a deleted topic are never
//! answered, and [`GroupCoordinator::forget_deleted_topics`] writes their
//! tombstones.

use std::collections::{BTreeMap, BTreeSet};

use std::sync::Arc;

use super::GroupCoordinator;
use super::assignor::TopicPartition;
use super::membership::{Group, MemberError};
use super::shard::Shard;
use super::store::{Committed, GroupRecord, forget_topic};
use crate::controller::MetadataState;
use crate::error::{BrokerError, Result};
use crate::topic::TopicUuid;

/// A commit.
#[derive(Clone, Debug)]
pub struct CommitRequest {
    /// Group.
    pub group: String,
    /// Member id; empty with epoch -1 for a consumer outside any membership.
    pub member_id: String,
    /// The member's epoch.
    pub member_epoch: i32,
    /// Next offset to consume, per partition, with the topic id the
    /// committer knows the topic by (if it sent one).
    pub offsets: Vec<(TopicPartition, Committed)>,
}

/// A member's refusal as the wire reason it maps to.
pub(crate) fn member_error(e: MemberError) -> BrokerError {
    match e {
        MemberError::Fenced(reason) => BrokerError::Fenced { reason },
        MemberError::StaleEpoch { sent, current } => BrokerError::RebalanceInProgress { sent, current },
    }
}

/// The records a commit writes: the offsets that move forward. Refused for
/// a member that is unknown, fenced or behind, for partitions it does not
/// hold, and for a consumer outside the membership while the group has
/// members.
pub fn plan_commit(groups: &BTreeMap<String, Group>, req: &CommitRequest) -> Result<Vec<GroupRecord>> {
    let group = groups.get(&req.group);
    if req.member_id.is_empty() && req.member_epoch < 0 {
        if let Some(g) = group
            && !g.members.is_empty()
        {
            return Err(BrokerError::Fenced {
                reason: format!(
                    "group {:?} has {} active member(s): only they may commit",
                    req.group,
                    g.members.len()
                ),
            });
        }
    } else {
        let Some(g) = group else {
            return Err(BrokerError::Fenced {
                reason: format!("group {:?} has no member {}", req.group, req.member_id),
            });
        };
        g.check_commit(&req.member_id, req.member_epoch, req.offsets.iter().map(|(tp, _)| tp))
            .map_err(member_error)?;
    }
    Ok(req
        .offsets
        .iter()
        .filter(|(tp, new)| match group.and_then(|g| g.offsets.get(tp)) {
            // Forward only within one topic; the first commit for a topic
            // created again under the name replaces the old topic's offset.
            // The same offset again writes only new metadata.
            Some(old) if old.same_topic(new) => {
                old.offset < new.offset || (old.offset == new.offset && old.metadata != new.metadata)
            }
            _ => true,
        })
        .map(|(tp, c)| GroupRecord::Offset {
            group: req.group.clone(),
            topic: tp.0.clone(),
            partition: tp.1,
            offset: c.offset,
            reset: false,
            topic_id: c.topic_id,
            metadata: c.metadata.clone(),
        })
        .collect())
}

/// Checks the topic id each offset names against the topic by that name in
/// `meta`, and fills in the id where the caller sent none: an offset is
/// stored for the topic it was meant for or not at all.
pub fn resolve(meta: &MetadataState, offsets: &mut [(TopicPartition, Committed)]) -> Result<()> {
    for (tp, c) in offsets.iter_mut() {
        let current = meta.topics.get(&tp.0).map(|t| t.uuid());
        match (c.topic_id, current) {
            (Some(sent), Some(id)) if sent != id => {
                return Err(BrokerError::UnknownTopicId {
                    topic: tp.0.clone(),
                    topic_id: sent.to_string(),
                });
            }
            (Some(sent), None) => {
                return Err(BrokerError::UnknownTopicId {
                    topic: tp.0.clone(),
                    topic_id: sent.to_string(),
                });
            }
            (None, current) => c.topic_id = current,
            _ => {}
        }
    }
    Ok(())
}

/// Whether a stored offset may be answered: not one of a deleted topic.
pub fn visible(meta: &MetadataState, c: &Committed) -> bool {
    c.topic_id.is_none_or(|id| !meta.deleted.contains(&id))
}

/// The tombstones a group's offsets of deleted topics need.
pub fn plan_forget(meta: &MetadataState, g: &Group) -> Vec<GroupRecord> {
    let gone: BTreeSet<(String, TopicUuid)> = g
        .offsets
        .iter()
        .filter_map(|((topic, _), c)| Some((topic.clone(), c.topic_id?)))
        .filter(|(_, id)| meta.deleted.contains(id))
        .collect();
    gone.into_iter()
        .map(|(topic, topic_id)| GroupRecord::TopicDeleted {
            group: g.name.clone(),
            topic,
            topic_id,
        })
        .collect()
}

/// Applies written offset records to memory (creating the group if needed).
pub fn apply_offsets(groups: &mut BTreeMap<String, Group>, group: &str, records: &[GroupRecord]) {
    let g = groups
        .entry(group.to_string())
        .or_insert_with(|| Group::new(group.to_string()));
    for r in records {
        match r {
            GroupRecord::Offset {
                topic,
                partition,
                offset,
                topic_id,
                metadata,
                ..
            } => {
                g.offsets.insert(
                    (topic.clone(), *partition),
                    Committed {
                        offset: *offset,
                        topic_id: *topic_id,
                        metadata: metadata.clone(),
                    },
                );
            }
            GroupRecord::TopicDeleted { topic, topic_id, .. } => forget_topic(&mut g.offsets, topic, *topic_id),
            _ => {}
        }
    }
}

/// The records a reset writes: with `force`, an epoch record after fencing
/// every member first; refused while members remain otherwise.
pub fn plan_reset(
    groups: &mut BTreeMap<String, Group>,
    group: &str,
    force: bool,
    offsets: &[(TopicPartition, Committed)],
) -> Result<Vec<GroupRecord>> {
    let mut records = Vec::new();
    if let Some(g) = groups.get_mut(group)
        && !g.members.is_empty()
    {
        if !force {
            return Err(BrokerError::GroupNotEmpty {
                group: group.into(),
                members: g.members.len(),
            });
        }
        g.fence_all();
        tracing::warn!(group, "offsets reset with --force: members fenced");
        records.push(GroupCoordinator::epoch_record(g));
    }
    records.extend(offsets.iter().map(|(tp, c)| GroupRecord::Offset {
        group: group.into(),
        topic: tp.0.clone(),
        partition: tp.1,
        offset: c.offset,
        reset: true,
        topic_id: c.topic_id,
        metadata: c.metadata.clone(),
    }));
    Ok(records)
}

/// A group may be deleted when it exists and has no members.
pub fn check_delete(groups: &BTreeMap<String, Group>, group: &str) -> Result<()> {
    match groups.get(group) {
        None => Err(BrokerError::UnknownGroup { group: group.into() }),
        Some(g) if !g.members.is_empty() => Err(BrokerError::GroupNotEmpty {
            group: group.into(),
            members: g.members.len(),
        }),
        Some(_) => Ok(()),
    }
}

impl GroupCoordinator {
    /// Commits offsets; answers with the committed offsets of the partitions
    /// asked about.
    pub async fn commit(&self, mut req: CommitRequest) -> Result<BTreeMap<TopicPartition, Committed>> {
        let shard = self.shard(&req.group).await?;
        self.node.with_metadata(|m| resolve(m, &mut req.offsets))?;
        let _write = shard.write.lock().await;
        let changed = plan_commit(&shard.groups(), &req)?;
        if !changed.is_empty() {
            self.write(&shard, &req.group, &changed).await?;
        }
        let mut groups = shard.groups();
        apply_offsets(&mut groups, &req.group, &changed);
        let g = &groups[&req.group];
        Ok(req
            .offsets
            .iter()
            .filter_map(|(tp, _)| g.offsets.get(tp).map(|o| (tp.clone(), o.clone())))
            .collect())
    }

    /// Committed offsets of a group (all of them when `wanted` is empty),
    /// each with the topic id it belongs to; never a deleted topic's.
    pub async fn fetch_offsets(
        &self,
        group: &str,
        wanted: &BTreeSet<TopicPartition>,
    ) -> Result<BTreeMap<TopicPartition, Committed>> {
        let shard = self.shard(group).await?;
        let groups = shard.groups();
        Ok(self.node.with_metadata(|meta| {
            groups
                .get(group)
                .map(|g| {
                    g.offsets
                        .iter()
                        .filter(|(tp, c)| (wanted.is_empty() || wanted.contains(*tp)) && visible(meta, c))
                        .map(|(tp, c)| (tp.clone(), c.clone()))
                        .collect()
                })
                .unwrap_or_default()
        }))
    }

    /// Sets offsets (an operator's rewind or skip). Refused while the group
    /// has members unless `force`, which fences them.
    pub async fn reset(&self, group: &str, force: bool, offsets: &[(TopicPartition, Committed)]) -> Result<()> {
        let shard = self.shard(group).await?;
        let mut offsets = offsets.to_vec();
        self.node.with_metadata(|m| resolve(m, &mut offsets))?;
        let offsets = offsets.as_slice();
        let _write = shard.write.lock().await;
        let records = plan_reset(&mut shard.groups(), group, force, offsets)?;
        self.write(&shard, group, &records).await?;
        apply_offsets(&mut shard.groups(), group, &records);
        tracing::info!(group, partitions = offsets.len(), "offsets reset");
        Ok(())
    }

    /// Deletes a group with no members.
    pub async fn delete(&self, group: &str) -> Result<()> {
        let shard = self.shard(group).await?;
        let _write = shard.write.lock().await;
        check_delete(&shard.groups(), group)?;
        self.write(&shard, group, &[GroupRecord::Deleted { group: group.into() }])
            .await?;
        shard.groups().remove(group);
        tracing::info!(group, "group deleted");
        Ok(())
    }

    /// Writes the tombstones of every deleted topic's offsets still held by
    /// a group of `shard` (called by the coordinator's upkeep; a no-op
    /// when there are none). Deletion is idempotent, so a write that fails
    /// is simply tried again at the next upkeep.
    pub(super) async fn forget_deleted_topics(&self, shard: &Arc<Shard>) -> Result<usize> {
        let meta = self.node.metadata();
        let _write = shard.write.lock().await;
        let planned: Vec<(String, Vec<GroupRecord>)> = shard
            .groups()
            .values()
            .map(|g| (g.name.clone(), plan_forget(&meta, g)))
            .filter(|(_, r)| !r.is_empty())
            .collect();
        let mut forgotten = 0;
        for (group, records) in planned {
            self.write(shard, &group, &records).await?;
            apply_offsets(&mut shard.groups(), &group, &records);
            forgotten += records.len();
            tracing::info!(group = %group, topics = records.len(), "forgot the offsets of deleted topics");
        }
        Ok(forgotten)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use strand_storage::Offset;

    use super::*;
    use crate::groups::membership::Heartbeat;

    fn tp(p: u32) -> TopicPartition {
        ("t".to_string(), p)
    }

    fn at(o: u64) -> Committed {
        Committed {
            offset: Offset(o),
            topic_id: None,
            metadata: String::new(),
        }
    }

    fn commit(member: &str, epoch: i32, offsets: &[(u32, u64)]) -> CommitRequest {
        CommitRequest {
            group: "g".into(),
            member_id: member.into(),
            member_epoch: epoch,
            offsets: offsets.iter().map(|&(p, o)| (tp(p), at(o))).collect(),
        }
    }

    /// A group with one member holding both partitions of `t`.
    fn group_with_member() -> (BTreeMap<String, Group>, String, i32) {
        let mut g = Group::new("g".into());
        let counts: BTreeMap<String, u32> = [("t".to_string(), 2)].into();
        let now = Instant::now();
        let hb = Heartbeat {
            client_id: "c".into(),
            topics: ["t".to_string()].into(),
            session_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        let first = g
            .heartbeat(now, hb.clone(), || "m1".into(), Duration::ZERO, &counts)
            .expect("join");
        let again = Heartbeat {
            member_id: first.member_id.clone(),
            epoch: first.epoch,
            ..hb
        };
        let answer = g
            .heartbeat(now, again, || unreachable!(), Duration::ZERO, &counts)
            .expect("hb");
        assert_eq!(answer.assignment.len(), 2, "the only member gets both partitions");
        (BTreeMap::from([("g".to_string(), g)]), answer.member_id, answer.epoch)
    }

    #[test]
    fn a_commit_writes_only_offsets_that_move_forward_and_only_for_a_holder() {
        let (mut groups, member, epoch) = group_with_member();
        let records = plan_commit(&groups, &commit(&member, epoch, &[(0, 5), (1, 3)])).expect("allowed");
        assert_eq!(records.len(), 2);
        apply_offsets(&mut groups, "g", &records);
        let again = plan_commit(&groups, &commit(&member, epoch, &[(0, 4), (1, 3)])).expect("allowed");
        assert!(again.is_empty(), "backwards or equal offsets write nothing: {again:?}");
        let cases = [
            (commit("stranger", epoch, &[(0, 9)]), "FENCED"),
            (commit(&member, epoch - 1, &[(0, 9)]), "REBALANCE_IN_PROGRESS"),
            (commit("", -1, &[(0, 9)]), "FENCED"),
        ];
        for (i, (req, reason)) in cases.into_iter().enumerate() {
            let got = plan_commit(&groups, &req)
                .map(|_| ())
                .map_err(|e| e.code().as_str_name());
            assert_eq!(got, Err(reason), "#{i}");
        }
        // Outside any membership, a group without members takes commits.
        let empty: BTreeMap<String, Group> = BTreeMap::new();
        assert_eq!(
            plan_commit(&empty, &commit("", -1, &[(0, 1)])).expect("allowed").len(),
            1
        );
    }

    #[test]
    fn a_reset_needs_force_while_members_remain_and_may_go_backwards() {
        let (mut groups, _, _) = group_with_member();
        apply_offsets(
            &mut groups,
            "g",
            &plan_commit(&BTreeMap::new(), &commit("", -1, &[(0, 50)])).expect("plan"),
        );
        let back = [(tp(0), at(10))];
        let refused = plan_reset(&mut groups, "g", false, &back).map_err(|e| e.code().as_str_name());
        assert_eq!(refused.map(|_| ()), Err("GROUP_NOT_EMPTY"));
        let records = plan_reset(&mut groups, "g", true, &back).expect("forced");
        assert!(
            matches!(records[0], GroupRecord::Epoch { .. }),
            "the fence is recorded first"
        );
        apply_offsets(&mut groups, "g", &records);
        assert_eq!(groups["g"].offsets[&tp(0)].offset, Offset(10));
        assert!(groups["g"].members.is_empty(), "members fenced");
        assert_eq!(check_delete(&groups, "g").map_err(|e| e.code().as_str_name()), Ok(()));
        assert_eq!(
            check_delete(&groups, "nope").map_err(|e| e.code().as_str_name()),
            Err("UNKNOWN_GROUP")
        );
    }

    #[test]
    fn offsets_belong_to_a_topic_id() {
        use crate::controller::{MetadataCommand, TopicState};
        use crate::topic::TopicMeta;
        let topic = |id: u64| TopicState {
            meta: TopicMeta {
                name: "t".into(),
                partitions: 2,
                replication_factor: 1,
                configs: BTreeMap::new(),
            },
            id,
            uuid: Some(TopicUuid::random()),
            assignment: vec![vec![strand_cluster::NodeId(1)]; 2],
            origin: Vec::new(),
            moving: BTreeMap::new(),
        };
        let mut meta = MetadataState::default();
        meta.apply(&MetadataCommand::CreateTopic { topic: topic(1) });
        let old = meta.topics["t"].uuid();
        // A commit without an id is stored for the topic that exists now.
        let mut offsets = vec![(tp(0), at(10))];
        resolve(&meta, &mut offsets).expect("resolved");
        assert_eq!(offsets[0].1.topic_id, Some(old));
        let mut groups = BTreeMap::new();
        let req = CommitRequest {
            group: "g".into(),
            member_id: String::new(),
            member_epoch: -1,
            offsets: offsets.clone(),
        };
        let planned = plan_commit(&groups, &req).expect("plan");
        apply_offsets(&mut groups, "g", &planned);
        assert!(visible(&meta, &groups["g"].offsets[&tp(0)]));
        assert!(plan_forget(&meta, &groups["g"]).is_empty(), "nothing deleted yet");
        // Deleted and created again: the old offset is hidden, a commit
        // naming the old id is refused, and one for the new id replaces it
        // even though it is lower.
        meta.apply(&MetadataCommand::DeleteTopic {
            name: "t".into(),
            id: 1,
        });
        meta.apply(&MetadataCommand::CreateTopic { topic: topic(2) });
        let new = meta.topics["t"].uuid();
        assert!(!visible(&meta, &groups["g"].offsets[&tp(0)]));
        let mut stale = vec![(
            tp(0),
            Committed {
                offset: Offset(12),
                topic_id: Some(old),
                metadata: String::new(),
            },
        )];
        assert_eq!(
            resolve(&meta, &mut stale).map_err(|e| e.code().as_str_name()),
            Err("UNKNOWN_TOPIC_ID")
        );
        let mut fresh = vec![(
            tp(0),
            Committed {
                offset: Offset(2),
                topic_id: Some(new),
                metadata: String::new(),
            },
        )];
        resolve(&meta, &mut fresh).expect("the new id");
        let req = CommitRequest { offsets: fresh, ..req };
        assert_eq!(
            plan_commit(&groups, &req).expect("plan").len(),
            1,
            "replaces the old topic's 10"
        );
        // The tombstone forgets exactly the old topic's offsets.
        let forget = plan_forget(&meta, &groups["g"]);
        assert_eq!(forget.len(), 1);
        apply_offsets(&mut groups, "g", &forget);
        assert!(groups["g"].offsets.is_empty());
    }
}
