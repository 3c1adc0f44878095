//! Committed offsets: commits by members (or by a consumer outside any
//! membership), fetches, an operator's resets, and deleting a group.
//!
//! Each write is planned from the shard's memory ([`plan_commit`],
//! [`plan_reset`], [`check_delete`]: pure, tested below), written to the
//! offsets partition with `acks=all`, and only then applied to memory.
//! Offsets never go backwards except through a reset.

use std::collections::{BTreeMap, BTreeSet};

use strand_storage::Offset;

use super::GroupCoordinator;
use super::assignor::TopicPartition;
use super::membership::{Group, MemberError};
use super::store::GroupRecord;
use crate::error::{BrokerError, Result};

/// A commit.
#[derive(Clone, Debug)]
pub struct CommitRequest {
    /// Group.
    pub group: String,
    /// Member id; empty with epoch -1 for a consumer outside any membership.
    pub member_id: String,
    /// The member's epoch.
    pub member_epoch: i32,
    /// Next offset to consume, per partition.
    pub offsets: Vec<(TopicPartition, Offset)>,
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
        .filter(|(tp, offset)| group.and_then(|g| g.offsets.get(tp)) < Some(offset))
        .map(|(tp, offset)| GroupRecord::Offset {
            group: req.group.clone(),
            topic: tp.0.clone(),
            partition: tp.1,
            offset: *offset,
            reset: false,
        })
        .collect())
}

/// Applies written offset records to memory (creating the group if needed).
pub fn apply_offsets(groups: &mut BTreeMap<String, Group>, group: &str, records: &[GroupRecord]) {
    let g = groups
        .entry(group.to_string())
        .or_insert_with(|| Group::new(group.to_string()));
    for r in records {
        if let GroupRecord::Offset {
            topic,
            partition,
            offset,
            ..
        } = r
        {
            g.offsets.insert((topic.clone(), *partition), *offset);
        }
    }
}

/// The records a reset writes: with `force`, an epoch record after fencing
/// every member first; refused while members remain otherwise.
pub fn plan_reset(
    groups: &mut BTreeMap<String, Group>,
    group: &str,
    force: bool,
    offsets: &[(TopicPartition, Offset)],
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
    records.extend(offsets.iter().map(|(tp, offset)| GroupRecord::Offset {
        group: group.into(),
        topic: tp.0.clone(),
        partition: tp.1,
        offset: *offset,
        reset: true,
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
    pub async fn commit(&self, req: CommitRequest) -> Result<BTreeMap<TopicPartition, Offset>> {
        let shard = self.shard(&req.group).await?;
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
            .filter_map(|(tp, _)| g.offsets.get(tp).map(|o| (tp.clone(), *o)))
            .collect())
    }

    /// Committed offsets of a group (all of them when `wanted` is empty).
    pub async fn fetch_offsets(
        &self,
        group: &str,
        wanted: &BTreeSet<TopicPartition>,
    ) -> Result<BTreeMap<TopicPartition, Offset>> {
        let shard = self.shard(group).await?;
        let groups = shard.groups();
        Ok(groups
            .get(group)
            .map(|g| {
                g.offsets
                    .iter()
                    .filter(|(tp, _)| wanted.is_empty() || wanted.contains(*tp))
                    .map(|(tp, o)| (tp.clone(), *o))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Sets offsets (an operator's rewind or skip). Refused while the group
    /// has members unless `force`, which fences them.
    pub async fn reset(&self, group: &str, force: bool, offsets: &[(TopicPartition, Offset)]) -> Result<()> {
        let shard = self.shard(group).await?;
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
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::groups::membership::Heartbeat;

    fn tp(p: u32) -> TopicPartition {
        ("t".to_string(), p)
    }

    fn commit(member: &str, epoch: i32, offsets: &[(u32, u64)]) -> CommitRequest {
        CommitRequest {
            group: "g".into(),
            member_id: member.into(),
            member_epoch: epoch,
            offsets: offsets.iter().map(|&(p, o)| (tp(p), Offset(o))).collect(),
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
        let back = [(tp(0), Offset(10))];
        let refused = plan_reset(&mut groups, "g", false, &back).map_err(|e| e.code().as_str_name());
        assert_eq!(refused.map(|_| ()), Err("GROUP_NOT_EMPTY"));
        let records = plan_reset(&mut groups, "g", true, &back).expect("forced");
        assert!(
            matches!(records[0], GroupRecord::Epoch { .. }),
            "the fence is recorded first"
        );
        apply_offsets(&mut groups, "g", &records);
        assert_eq!(groups["g"].offsets[&tp(0)], Offset(10));
        assert!(groups["g"].members.is_empty(), "members fenced");
        assert_eq!(check_delete(&groups, "g").map_err(|e| e.code().as_str_name()), Ok(()));
        assert_eq!(
            check_delete(&groups, "nope").map_err(|e| e.code().as_str_name()),
            Err("UNKNOWN_GROUP")
        );
    }
}
