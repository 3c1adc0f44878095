//! Moving partition replicas between brokers (`topic reassign`, and brokers
//! that join a running cluster).
//!
//! The controller records the target (`MetadataCommand::Reassign`); every broker
//! then hosts the partition on its current and its target replicas. The
//! partition's leader moves its Raft group one single-server change at a
//! time: add each new broker as a learner, promote it once it has (nearly,
//! see [`CAUGHT_UP_LAG`]) every entry, remove each old broker (handing leadership to a target replica
//! first if it is itself leaving), and finally reports the move done
//! (`MetadataCommand::FinishReassign`); brokers no longer hosting the partition
//! then stop and delete their replica.
//!
//! Invariants: a change is proposed only when the previous one is applied
//! (raft-rs refuses otherwise), a new replica votes only once it holds the
//! leader's whole log (it is recovering until then), and the metadata's replica list changes only once
//! the group's configuration equals it.

use strand_cluster::{NodeId, ReplicaChange};
use strand_storage::RaftIndex;

use super::Admin;
use super::request::MetadataRequest;
use crate::error::Result;

/// One step of the leader's work on a moving partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Propose this change.
    Change(ReplicaChange),
    /// Hand leadership to this target replica (the leader is leaving).
    Transfer(NodeId),
    /// The group has exactly the target: record the move done.
    Finish,
    /// Wait (a learner is catching up).
    Wait,
}

/// How far behind the leader's last index a new replica may be and still
/// count as caught up (promoted, or handed leadership). Under steady
/// writes a replica is always a round trip's worth of entries behind at the
/// instant of the check, so "exactly caught up" could wait forever; a few
/// dozen entries are one round trip's worth, and a promoted replica still
/// takes part in no election until it holds the whole log (it is
/// recovering until then).
pub const CAUGHT_UP_LAG: u64 = 64;

/// What the leader `me` should do next to move a group with `voters` and
/// `learners` (and per-node matched index, `last` the leader's last index)
/// to `target`.
pub fn next_step(
    me: NodeId,
    target: &[NodeId],
    voters: &[NodeId],
    learners: &[NodeId],
    matched: &[(NodeId, RaftIndex)],
    last: RaftIndex,
) -> Step {
    let caught_up = |n: NodeId| {
        matched
            .iter()
            .any(|(id, m)| *id == n && m.get().saturating_add(CAUGHT_UP_LAG) >= last.get())
    };
    if let Some(n) = target.iter().find(|n| !voters.contains(n) && !learners.contains(n)) {
        return Step::Change(ReplicaChange::AddLearner(*n));
    }
    if let Some(n) = learners.iter().find(|n| !target.contains(n)) {
        return Step::Change(ReplicaChange::Remove(*n));
    }
    if let Some(n) = learners.iter().find(|n| target.contains(n)) {
        return if caught_up(*n) {
            Step::Change(ReplicaChange::Promote(*n))
        } else {
            Step::Wait
        };
    }
    if let Some(n) = voters.iter().find(|n| !target.contains(n)) {
        if *n == me {
            return match target.iter().find(|t| caught_up(**t)) {
                Some(t) => Step::Transfer(*t),
                None => Step::Wait,
            };
        }
        return Step::Change(ReplicaChange::Remove(*n));
    }
    Step::Finish
}

impl Admin {
    /// Drives every moving partition this broker leads one step (called
    /// periodically).
    pub async fn drive_reassignments(&self) {
        let node = &self.node;
        // Only the moving partitions are copied out (this runs three times
        // a second; the whole metadata holds every partition's assignment).
        let moving: Vec<(String, u32, Vec<NodeId>)> = node.with_metadata(|m| {
            m.topics
                .values()
                .flat_map(|t| {
                    t.moving
                        .iter()
                        .map(|(&p, target)| (t.meta.name.clone(), p, target.clone()))
                })
                .collect()
        });
        for (name, p, target) in moving {
            let Ok(part) = node.partition(&name, p) else {
                continue;
            };
            let st = part.status();
            if !st.is_leader {
                continue;
            }
            let matched: Vec<(NodeId, RaftIndex)> = st.replicas.iter().map(|r| (r.node, r.matched)).collect();
            let step = next_step(node.id(), &target, &st.voters, &st.learners, &matched, st.last_index);
            tracing::debug!(topic = %name, partition = p, ?step, ?target, voters = ?st.voters, learners = ?st.learners, "moving replicas");
            let r: Result<()> = match step {
                Step::Change(c) => node
                    .raft()
                    .change_replicas(part.raft_group(), c)
                    .await
                    .map_err(Into::into),
                Step::Transfer(to) => node.raft().transfer_leader(part.raft_group(), to).map_err(Into::into),
                Step::Wait => Ok(()),
                Step::Finish => {
                    self.submit(MetadataRequest::FinishReassign {
                        name: name.clone(),
                        partition: p,
                        replicas: target.clone(),
                    })
                    .await
                }
            };
            if let Err(e) = r {
                tracing::debug!(topic = %name, partition = p, error = %e, "replica move step not taken; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(ids: &[u64]) -> Vec<NodeId> {
        ids.iter().copied().map(NodeId).collect()
    }

    fn m(pairs: &[(u64, u64)]) -> Vec<(NodeId, RaftIndex)> {
        pairs.iter().map(|&(n, i)| (NodeId(n), RaftIndex(i))).collect()
    }

    #[test]
    fn a_move_adds_promotes_then_removes_one_at_a_time() {
        // [1,2,3] -> [4,2,3], led by 1.
        let t = n(&[4, 2, 3]);
        let all_matched = m(&[(1, 10), (2, 10), (3, 10), (4, 10)]);
        let last = RaftIndex(10);
        assert_eq!(
            next_step(NodeId(1), &t, &n(&[1, 2, 3]), &[], &all_matched, last),
            Step::Change(ReplicaChange::AddLearner(NodeId(4)))
        );
        assert_eq!(
            next_step(
                NodeId(1),
                &t,
                &n(&[1, 2, 3]),
                &n(&[4]),
                &m(&[(4, 3)]),
                RaftIndex(3 + CAUGHT_UP_LAG + 7)
            ),
            Step::Wait,
            "catching up"
        );
        assert_eq!(
            next_step(NodeId(1), &t, &n(&[1, 2, 3]), &n(&[4]), &all_matched, last),
            Step::Change(ReplicaChange::Promote(NodeId(4)))
        );
        // Under steady writes a learner is a few entries behind at any
        // instant: close enough. Far behind is not.
        assert_eq!(
            next_step(NodeId(1), &t, &n(&[1, 2, 3]), &n(&[4]), &m(&[(4, 5)]), RaftIndex(12)),
            Step::Change(ReplicaChange::Promote(NodeId(4)))
        );
        assert_eq!(
            next_step(
                NodeId(1),
                &t,
                &n(&[1, 2, 3]),
                &n(&[4]),
                &m(&[(4, 5)]),
                RaftIndex(5 + CAUGHT_UP_LAG + 1)
            ),
            Step::Wait
        );
        // The leader itself leaves: it hands over first.
        assert_eq!(
            next_step(NodeId(1), &t, &n(&[1, 2, 3, 4]), &[], &all_matched, last),
            Step::Transfer(NodeId(4))
        );
        assert_eq!(
            next_step(NodeId(2), &t, &n(&[1, 2, 3, 4]), &[], &all_matched, last),
            Step::Change(ReplicaChange::Remove(NodeId(1)))
        );
        assert_eq!(
            next_step(NodeId(2), &t, &n(&[2, 3, 4]), &[], &all_matched, last),
            Step::Finish
        );
        // A learner that is no longer wanted goes.
        assert_eq!(
            next_step(NodeId(2), &n(&[2, 3]), &n(&[2, 3]), &n(&[5]), &all_matched, last),
            Step::Change(ReplicaChange::Remove(NodeId(5)))
        );
    }
}
